//! The few Go library behaviours the parser must reproduce exactly: `strconv.Quote` (the dump and error
//! messages), `unicode.IsSpace`-based trimming, `strings.ToLower`, and `regexp.Split` with BuildKit's
//! whitespace class `[\t\v\f\r ]+`.
//!
//! `strconv.IsPrint` needs the Unicode general categories, which Rust's standard library does not expose:
//! the table below lists the non-ASCII ranges of categories L, M, N, P and S in Unicode 15.0.0 (the
//! version Go 1.21 and later is built with), generated from Debian's `unicode-data` package:
//!
//! ```text
//! cats = {cp: category for each line of /usr/share/unicode/UnicodeData.txt, expanding First/Last pairs}
//! GRAPHIC = ranges of cp >= 0x80 whose category starts with L, M, N, P or S
//! ```
//!
//! `shell/unicode.rs` holds the same classes for the word lexer but keeps them private to `shell`; the
//! test `graphic_table_matches_ucd` checks this copy against the UCD when the package is installed.

/// Go's `unicode.IsSpace`: the White_Space property, which is exactly what `char::is_whitespace` tests.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `unicode.IsSpace(rune(b))` applied to a single byte, as BuildKit's byte-wise scanners do: besides
/// ASCII whitespace it is true for 0x85 and 0xA0, which in UTF-8 are continuation bytes.
pub(crate) fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Go's `strings.TrimLeftFunc(s, unicode.IsSpace)`.
pub(crate) fn trim_left_space(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// Go's `strings.ToLower`: the simple (one rune to one rune) lower-case mapping. Rust's `to_lowercase`
/// uses the full mapping, which differs for U+0130 and for a final capital sigma.
pub(crate) fn to_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{130}' => 'i',
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]` (no newline, no Unicode spaces).
pub(crate) fn is_re_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `reWhitespace.Split(s, n)` for `n == -1` (`None`, all pieces) or `n > 0`: like Go, an empty input
/// gives one empty piece and a leading or trailing whitespace run gives an empty piece.
pub(crate) fn split_whitespace(s: &str, n: Option<usize>) -> Vec<&str> {
    if n == Some(0) {
        return Vec::new();
    }
    let mut pieces = Vec::new();
    let mut begin = 0;
    let mut rest = s.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        if !is_re_whitespace(c) {
            continue;
        }
        if n.is_some_and(|n| pieces.len() + 1 == n) {
            break;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = rest.peek() {
            if !is_re_whitespace(d) {
                break;
            }
            end = j + d.len_utf8();
            rest.next();
        }
        pieces.push(&s[begin..i]);
        begin = end;
    }
    pieces.push(&s[begin..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_is_simple_mapping() {
        assert_eq!(to_lower("RUN"), "run");
        assert_eq!(to_lower("ΣΑΣ"), "σασ");
        assert_eq!(to_lower("\u{130}"), "i");
    }

    #[test]
    fn split_like_go_regexp() {
        assert_eq!(split_whitespace("a  b\tc", None), ["a", "b", "c"]);
        assert_eq!(split_whitespace("a  b\tc", Some(2)), ["a", "b\tc"]);
        assert_eq!(split_whitespace("", None), [""]);
        assert_eq!(split_whitespace(" a ", None), ["", "a", ""]);
        assert_eq!(split_whitespace("a\u{a0}b\nc", None), ["a\u{a0}b\nc"]);
        assert_eq!(split_whitespace("abc", Some(2)), ["abc"]);
    }

    #[test]
    fn trims_unicode_space() {
        assert_eq!(trim_space("\u{85}\u{a0} x \u{3000}\n"), "x");
        assert_eq!(trim_left_space("\u{feff}x"), "\u{feff}x", "a BOM is not a space");
    }
}
