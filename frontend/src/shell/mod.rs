//! Word expansion: a port of BuildKit's `frontend/dockerfile/shell` lexer (`lex.go`).
//!
//! A [`Lexer`] expands one Dockerfile word against an [`Env`]: quotes, the escape token (`\` or the
//! backtick chosen by `# escape=`), `$v`, `${v}` and the modifiers `${v:-w}`, `${v-w}`, `${v:+w}`,
//! `${v+w}`, `${v:?msg}`, `${v?msg}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`.
//! [`Lexer::process_word`] gives the expanded string, [`Lexer::process_words`] splits it into words the way
//! BuildKit does (only unquoted, expanded or literal whitespace separates words). Both report which
//! variables the word read ([`Expansion::used`]) and which it referenced while they were unset
//! ([`Expansion::unset`]): cache keys and "why did this miss" explanations depend on exactly those.
//!
//! Behaviour matches BuildKit byte for byte, including its quirks (see the tests beside each part), with
//! two deliberate differences:
//! - Recent BuildKit (the `EnvGetter` lexer) shares one word buffer (`shellWord.wordsBuffer`) between a
//!   word and the default word nested in it, so `ProcessWords("a${X:-b}")` loses the `a`; here each level
//!   has its own buffer and gives `["ab"]`, as BuildKit did before that change. `ProcessWord` is unaffected.
//! - Substitutions nested more than [`MAX_NESTING`] deep are an error instead of unbounded recursion.
//!
//! Environment names are compared case-sensitively, as BuildKit does on Unix (`equal_env_unix.go`).

mod error;
mod lexer;
mod pattern;
mod unicode;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

pub use error::{go_quote, ExpandError, ExpandErrorKind};
pub use lexer::{Lexer, MAX_NESTING};

/// Where a [`Lexer`] looks variables up: BuildKit's `EnvGetter`. `None` means unset, which differs from
/// set to the empty string (`${v-w}`, `${v?}`).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// An ordered list of `(name, value)` pairs; a later pair overrides an earlier one (BuildKit's
/// `EnvsFromSlice`).
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
}

/// The result of [`Lexer::process_word`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, quotes and escapes removed (unless the lexer keeps them raw).
    pub value: String,
    /// Variables the word referenced that were set (BuildKit's `Matched`).
    pub used: BTreeSet<String>,
    /// Variables the word referenced that were unset (BuildKit's `Unmatched`), including positional and
    /// special parameters such as `1` or `@`, which a Dockerfile never sets.
    pub unset: BTreeSet<String>,
}

/// The result of [`Lexer::process_words`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Words {
    /// The expanded words; empty words are dropped (so `""` alone yields no word).
    pub words: Vec<String>,
    /// As [`Expansion::used`].
    pub used: BTreeSet<String>,
    /// As [`Expansion::unset`].
    pub unset: BTreeSet<String>,
}

#[cfg(test)]
mod tests;
