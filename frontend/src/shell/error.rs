//! Expansion errors, worded as BuildKit words them so that messages match `docker build`.

use super::unicode::is_print;

/// A word that could not be expanded. Displays as BuildKit does:
/// `failed to process "<word>": <reason>`, the word quoted like Go's `%q`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {kind}", go_quote(word))]
pub struct ExpandError {
    /// The whole word that was being expanded, as given.
    pub word: String,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// The reason an expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// A `${...}`, `${v/p/r}` part or nested word ran to the end of the input.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{x}`, `${:x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// The modifier as written, e.g. `:=` or `.`; U+FFFD stands for the end of input, as in Go.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` with `v` unset, or `${v:?msg}` with `v` unset or empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// A `#`, `%` or `/` pattern with an escape other than `\*`, `\?`, `\\`, `\}`, `\/`.
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    InvalidPattern { pattern: String, escaped: char },
    /// Not in BuildKit (Go stacks grow without bound): a guard against stack overflow on absurd input.
    #[error("syntax error: substitutions nested more than {0} deep")]
    TooDeep(usize),
}

/// Go's `strconv.Quote`: double-quoted, `\"` and `\\` escaped, printable runes kept, the rest escaped as
/// `\n`-style, `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{0}\u{7f}"), r#""\t\n\x00\x7f""#);
        assert_eq!(go_quote("한국어 é"), "\"한국어 é\"");
        assert_eq!(go_quote("\u{a0}\u{feff}\u{e0001}"), r#""\u00a0\ufeff\U000e0001""#);
    }

    #[test]
    fn displays_like_buildkit() {
        let err = ExpandError {
            word: "he${XXX:?}".into(),
            kind: ExpandErrorKind::Required { name: "XXX".into(), message: "is not allowed to be empty".into() },
        };
        assert_eq!(err.to_string(), r#"failed to process "he${XXX:?}": XXX: is not allowed to be empty"#);
        let err = ExpandError { word: "${a".into(), kind: ExpandErrorKind::MissingBrace };
        assert_eq!(err.to_string(), r#"failed to process "${a": syntax error: missing '}'"#);
        let kind = ExpandErrorKind::InvalidPattern { pattern: "\\x".into(), escaped: 'x' };
        assert_eq!(kind.to_string(), r"invalid pattern (\x) in substitution: invalid escape '\x'");
        assert_eq!(ExpandErrorKind::MissingSlash.to_string(), "syntax error: missing '/' in ${}");
    }
}
