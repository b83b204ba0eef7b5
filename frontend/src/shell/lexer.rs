//! The lexer proper: BuildKit's `Lex` and `shellWord`, function for function.

use std::collections::BTreeSet;

use super::error::{ExpandError, ExpandErrorKind};
use super::pattern;
use super::unicode::{is_digit, is_letter};
use super::{Env, Expansion, Words};

/// How deep `${a:-${b:-...}}` (or quotes inside them) may nest before expansion fails.
pub const MAX_NESTING: usize = 128;

/// Expands Dockerfile words: BuildKit's `shell.Lex`. Cheap to build; holds only options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer whose escape token is `escape` (`\`, or `` ` `` under `# escape=``).
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_process_quotes: false, skip_unset_env: false }
    }

    /// BuildKit's `RawQuotes`: keep quote characters in the output (they still group words).
    pub fn raw_quotes(self, yes: bool) -> Lexer {
        Lexer { raw_quotes: yes, ..self }
    }

    /// BuildKit's `RawEscapes`: keep escape tokens in the output (they still escape).
    pub fn raw_escapes(self, yes: bool) -> Lexer {
        Lexer { raw_escapes: yes, ..self }
    }

    /// BuildKit's `SkipProcessQuotes`: quotes are ordinary characters (used for heredoc bodies).
    pub fn skip_process_quotes(self, yes: bool) -> Lexer {
        Lexer { skip_process_quotes: yes, ..self }
    }

    /// BuildKit's `SkipUnsetEnv`: leave references to unset variables as written (`$v`, `${v:-w}`).
    pub fn skip_unset_env(self, yes: bool) -> Lexer {
        Lexer { skip_unset_env: yes, ..self }
    }

    /// The escape token.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` into one string (BuildKit's `ProcessWordWithMatches`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let (value, _, sw) = self.process(word, env)?;
        Ok(Expansion { value, used: sw.used, unset: sw.unset })
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Words, ExpandError> {
        let (_, words, sw) = self.process(word, env)?;
        Ok(Words { words, used: sw.used, unset: sw.unset })
    }

    fn process<'a>(
        &'a self,
        word: &str,
        env: &'a dyn Env,
    ) -> Result<(String, Vec<String>, ShellWord<'a>), ExpandError> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner drops a byte order mark at the very start of its input.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut sw = ShellWord {
            lex: self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            depth: 0,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((value, words)) => Ok((value, words, sw)),
            Err(kind) => Err(ExpandError { word: word.to_string(), kind }),
        }
    }
}

/// One expansion in progress (BuildKit's `shellWord`); `chars[pos]` is the scanner's `Peek`.
struct ShellWord<'a> {
    lex: &'a Lexer,
    env: &'a dyn Env,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    depth: usize,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

/// BuildKit's `wordsStruct`: splits on whitespace that reaches it through `add_char`.
#[derive(Default)]
struct Splitter {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Splitter {
    fn add_char(&mut self, ch: char) {
        // Go's unicode.IsSpace is the Unicode White_Space property, as is char::is_whitespace.
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// The modifier as BuildKit prints it: `:` if present, then the operator (U+FFFD for the end of input).
fn modifier_text(null_is_unset: bool, op: Option<char>) -> String {
    let op = rune_or_replacement(op);
    if null_is_unset {
        format!(":{op}")
    } else {
        op.to_string()
    }
}

/// Go's `string(r)` for a scanner rune, where the end of input (-1) prints as U+FFFD.
fn rune_or_replacement(ch: Option<char>) -> char {
    ch.unwrap_or('\u{fffd}')
}

/// POSIX special parameters (`$@`, `$#`, ...): a one-character name.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

type Kind = ExpandErrorKind;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed) or the end of input, with raw escapes on or off meanwhile.
    /// BuildKit's processPossibleHeredoc: `<<` keeps the blanks after it in its word, so `<< EOF` is one
    /// word that the parser recognises as a heredoc opener (BuildKit v0.22+).
    fn process_possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn process_stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), Kind> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on(stop);
        self.raw_escapes = saved;
        result
    }

    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Kind> {
        let mut result = String::new();
        let mut words = Splitter::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let expanded = self.process_dollar()?;
                result.push_str(&expanded);
                words.add_string(&expanded);
            } else if ch == '<' {
                let opener = self.process_possible_heredoc();
                result.push_str(&opener);
                words.add_raw_string(&opener);
            } else if quotes && (ch == '\'' || ch == '"') {
                let quoted = if ch == '\'' { self.process_single_quote()? } else { self.process_double_quote()? };
                result.push_str(&quoted);
                words.add_raw_string(&quoted);
            } else {
                self.pos += 1;
                let mut ch = ch;
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // The escape token escapes the next character; at the end of input it vanishes.
                    match self.next() {
                        None => break,
                        Some(escaped) => ch = escaped,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            return Err(Kind::UnexpectedEnd(stop));
        }
        Ok((result, words.finish()))
    }

    /// Everything between single quotes is literal; a single quote cannot be escaped inside.
    fn process_single_quote(&mut self) -> Result<String, Kind> {
        let mut result = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(Kind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// Double quotes: `$` expands, and the escape token escapes only `"`, `$` and itself.
    fn process_double_quote(&mut self) -> Result<String, Kind> {
        let mut result = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(Kind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let expanded = self.process_dollar()?;
                    result.push_str(&expanded);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // An escape token right before the end is dropped (the quote error follows).
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                                self.pos += 1;
                                ch = next;
                            }
                            // Any other escape token stays, followed by the character.
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, Kind> {
        if self.depth >= MAX_NESTING {
            return Err(Kind::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let result = self.dollar();
        self.depth -= 1;
        result
    }

    fn dollar(&mut self) -> Result<String, Kind> {
        self.pos += 1; // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            let value = self.get_env(&name);
            return Ok(self.or_unset(value, || format!("${name}")));
        }
        self.pos += 1; // the '{'
        match self.peek() {
            None => return Err(Kind::MissingBrace),
            Some('{' | '}' | ':') => return Err(Kind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            Some('}') => {
                let value = self.get_env(&name);
                Ok(self.or_unset(value, || format!("${{{name}}}")))
            }
            Some(':') => {
                let op = self.next();
                self.modifier(name, true, op)
            }
            op @ Some('+' | '-' | '?' | '#' | '%') => self.modifier(name, false, op),
            Some('/') => self.substitution(name),
            op => Err(Kind::UnsupportedModifier(rune_or_replacement(op).to_string())),
        }
    }

    /// The value of a set variable; for an unset one the reference as written (`SkipUnsetEnv`) or nothing.
    fn or_unset(&self, value: Option<String>, written: impl FnOnce() -> String) -> String {
        match value {
            Some(value) => value,
            None if self.lex.skip_unset_env => written(),
            None => String::new(),
        }
    }

    /// `${name<op>word}` and `${name:<op>word}`, after the operator. The word is processed before the
    /// variable is looked up, as BuildKit does (so names in an untaken default are reported too).
    fn modifier(&mut self, name: String, null_is_unset: bool, op: Option<char>) -> Result<String, Kind> {
        // Patterns keep their escapes so that `\*`, `\?` and `\}` reach the pattern compiler.
        let is_pattern = matches!(op, Some('#' | '%'));
        if null_is_unset && is_pattern {
            return Err(Kind::UnsupportedModifier(modifier_text(null_is_unset, op)));
        }
        let word = self.nested(Some('}'), is_pattern, Kind::MissingBrace)?;
        let value = self.get_env(&name);
        self.apply_modifier(name, value, null_is_unset, op, word)
    }

    // Kept out of `modifier` so that its locals are not on the stack while nested words recurse.
    #[inline(never)]
    fn apply_modifier(
        &self,
        name: String,
        value: Option<String>,
        null_is_unset: bool,
        op: Option<char>,
        word: String,
    ) -> Result<String, Kind> {
        if value.is_none() && self.lex.skip_unset_env {
            return Ok(format!("${{{name}{}{word}}}", modifier_text(null_is_unset, op)));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let null = !set || (null_is_unset && value.is_empty());
        match op {
            Some('-') => Ok(if null { word } else { value }),
            Some('+') => Ok(if null { String::new() } else { word }),
            Some('?') if null => {
                let message = match word.is_empty() {
                    false => word,
                    true if !set => "is not allowed to be unset".to_string(),
                    true => "is not allowed to be empty".to_string(),
                };
                Err(Kind::Required { name, message })
            }
            Some('?') => Ok(value),
            Some(c @ ('#' | '%')) => {
                // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                let (pattern, greedy) = match word.strip_prefix(c) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                if c == '%' {
                    pattern::trim_suffix(pattern, &value, greedy)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy)
                }
            }
            _ => Err(Kind::UnsupportedModifier(modifier_text(null_is_unset, op))),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, after the first `/`.
    fn substitution(&mut self, name: String) -> Result<String, Kind> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.nested(Some('/'), true, Kind::MissingSlash)?;
        let replacement = self.nested(Some('}'), true, Kind::MissingBrace)?;
        let value = self.get_env(&name);
        self.apply_substitution(name, value, pattern, replacement, all)
    }

    #[inline(never)]
    fn apply_substitution(
        &self,
        name: String,
        value: Option<String>,
        pattern: String,
        replacement: String,
        all: bool,
    ) -> Result<String, Kind> {
        match value {
            // BuildKit rebuilds the reference with a single slash even for `//`.
            None if self.lex.skip_unset_env => Ok(format!("${{{name}/{pattern}/{replacement}}}")),
            value => pattern::replace(&pattern, &value.unwrap_or_default(), &replacement, all),
        }
    }

    /// A nested word up to `stop`; any failure that ran into the end of input becomes `at_end`.
    fn nested(&mut self, stop: Option<char>, raw_escapes: bool, at_end: Kind) -> Result<String, Kind> {
        match self.process_stop_on(stop, raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(at_end),
            Err(err) => Err(err),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits (positional); or one special parameter.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| is_digit(c)) {
                    self.pos += 1;
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name);
        let seen = if value.is_some() { &mut self.used } else { &mut self.unset };
        if !seen.contains(name) {
            seen.insert(name.to_string());
        }
        value
    }
}
