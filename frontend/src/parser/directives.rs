//! Parser directives (`# syntax=`, `# escape=`, `# check=`) and the escape token they control: BuildKit's
//! `directives.go` and the `directives` state of `parser.go`.

use super::ast::Directive;
use crate::diag::Span;

/// The escape token when no `# escape=` directive says otherwise.
pub const DEFAULT_ESCAPE: char = '\\';

const VALID: [&str; 3] = ["syntax", "escape", "check"];

/// BuildKit's `DirectiveParser`: directives are recognised only in the run of lines at the very top that
/// all look like `#name=value` with a known name; the first other line (a blank line too) ends the run.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// Looks at one line (BuildKit's `ParseLine`). `Ok(Some((name, value)))` for a directive, with the
    /// name lower-cased; `Err` for a second directive of the same name.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) =
            line.strip_prefix('#').and_then(|rest| match_directive(super::go::trim_left_space(rest)))
        else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !VALID.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        self.seen.push(name.clone());
        Ok(Some((name, value.to_string())))
    }
}

/// Go's RE2 `\s`: `[\t\n\f\r ]` (no vertical tab).
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, matched by hand.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let name_end = s.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(s.len());
    let after = s[name_end..].trim_start_matches(is_re_space).strip_prefix('=')?;
    // `.` does not match a newline, so neither can the value.
    if after.contains('\n') {
        return None;
    }
    let value = after.trim_start_matches(is_re_space).trim_end_matches(is_re_space);
    if !value.is_empty() {
        return Some((&s[..name_end], value));
    }
    // Only whitespace after `=`: the lazy `(.+?)` still takes its last character.
    let last = after.chars().last()?;
    Some((&s[..name_end], &after[after.len() - last.len_utf8()..]))
}

/// The escape token and the directive parser, as `Parse` carries them from line to line.
#[derive(Debug)]
pub(crate) struct Directives {
    pub(crate) parser: DirectiveParser,
    pub(crate) escape: char,
    pub(crate) found: Vec<Directive>,
}

impl Directives {
    pub(crate) fn new() -> Directives {
        Directives { parser: DirectiveParser::default(), escape: DEFAULT_ESCAPE, found: Vec::new() }
    }

    /// BuildKit's `possibleParserDirective`: true when `line` (numbered `line_no`) was a directive.
    pub(crate) fn possible_directive(&mut self, line: &str, line_no: usize) -> Result<bool, String> {
        let Some((name, value)) = self.parser.parse_line(line)? else {
            return Ok(false);
        };
        if name == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => return Err(format!("invalid escape token '{value}' does not match ` or \\")),
            };
        }
        self.found.push(Directive { name, value, span: Span::line(line_no) });
        Ok(true)
    }

    /// BuildKit's `trimContinuationCharacter`: the regex ``([^E])E[ \t]*$|^E[ \t]*$`` for escape token E.
    /// Returns the line without its continuation token and whether the instruction ends here.
    pub(crate) fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(before) = trimmed.strip_suffix(self.escape) {
            // An escape token preceded by another escape token is escaped, not a continuation.
            if !before.ends_with(self.escape) {
                return (before, false);
            }
        }
        (line, true)
    }
}

/// BuildKit's `ParseDirective(key, source)`: the directive `key` from the top of a Dockerfile, the way
/// BuildKit reads `# check=` (and `# syntax=` in its plain form) before parsing. Unlike [`super::parse`]
/// it skips a UTF-8 BOM and a first `#!` line, and it does not trim leading whitespace from lines.
pub fn find_directive(source: &[u8], key: &str) -> Option<Directive> {
    let source = source.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(source);
    let mut line_no = 0;
    let mut rest = source;
    if rest.starts_with(b"#!") {
        line_no = 1;
        rest = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
    }
    let mut parser = DirectiveParser::default();
    // bufio.ScanLines: lines split at '\n', one trailing '\r' dropped, no empty last line.
    for line in rest.split_inclusive(|&b| b == b'\n') {
        line_no += 1;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parser.parse_line(&String::from_utf8_lossy(line)) {
            Ok(Some((name, value))) if name == key => {
                return Some(Directive { name, value, span: Span::line(line_no) });
            }
            Ok(Some(_)) => {}
            // A line that is not a directive ends them; so does a duplicate (ParseAll stops there).
            Ok(None) | Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(line: &str) -> Option<(String, String)> {
        DirectiveParser::default().parse_line(line).unwrap()
    }

    #[test]
    fn matches_buildkit_regex() {
        assert_eq!(directive("# escape=`"), Some(("escape".into(), "`".into())));
        assert_eq!(directive("#ESCAPE = \\  "), Some(("escape".into(), "\\".into())));
        assert_eq!(
            directive("#  syntax =  docker/dockerfile:1 x \t"),
            Some(("syntax".into(), "docker/dockerfile:1 x".into()))
        );
        assert_eq!(directive("# check=skip=all;error=true"), Some(("check".into(), "skip=all;error=true".into())));
        assert_eq!(directive("# escape= \t"), Some(("escape".into(), "\t".into())), "lazy value takes one space");
        assert_eq!(directive("# escape=\u{b}"), Some(("escape".into(), "\u{b}".into())), "\\v is not \\s in RE2");
        assert_eq!(directive("# escape="), None);
        assert_eq!(directive("# 1escape=x"), None);
        assert_eq!(directive("# unknown=x"), None);
        assert_eq!(directive("escape=x"), None);
    }

    #[test]
    fn the_first_other_line_ends_directives() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# syntax=a").unwrap().is_some());
        assert!(p.parse_line("# comment").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
    }

    #[test]
    fn duplicates_are_errors() {
        let mut p = DirectiveParser::default();
        p.parse_line("# escape=`").unwrap();
        assert_eq!(p.parse_line("# Escape=\\").unwrap_err(), "only one escape parser directive can be used");
    }

    #[test]
    fn continuation() {
        let d = Directives::new();
        assert_eq!(d.trim_continuation("a \\"), ("a ", false));
        assert_eq!(d.trim_continuation("a\\ \t"), ("a", false));
        assert_eq!(d.trim_continuation("\\"), ("", false));
        assert_eq!(d.trim_continuation("a\\\\"), ("a\\\\", true));
        assert_eq!(d.trim_continuation("a`"), ("a`", true));
        let mut d = Directives::new();
        assert!(d.possible_directive("# escape=`", 1).unwrap());
        assert_eq!(d.trim_continuation("a `"), ("a ", false));
        assert_eq!(d.trim_continuation("a \\"), ("a \\", true));
        assert_eq!(
            Directives::new().possible_directive("# escape=x", 1).unwrap_err(),
            "invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn find_directive_skips_bom_and_shebang() {
        let src = b"\xEF\xBB\xBF#!/usr/bin/env dockerfile\r\n# check=skip=all\r\n# syntax=x\nFROM a\n";
        let d = find_directive(src, "check").unwrap();
        assert_eq!((d.value.as_str(), d.span), ("skip=all", Span::line(2)));
        assert_eq!(find_directive(src, "syntax").unwrap().span, Span::line(3));
        assert_eq!(find_directive(src, "escape"), None);
        assert_eq!(find_directive(b"  # check=a\n", "check"), None, "no whitespace trimming");
        assert_eq!(find_directive(b"# check=a\n# check=b\n", "check").unwrap().value, "a");
    }
}
