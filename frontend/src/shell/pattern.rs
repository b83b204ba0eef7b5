//! The glob patterns of `${v#p}`, `${v%p}`, `${v/p/r}` and their doubled forms.
//!
//! BuildKit converts the pattern to a Go regular expression (`convertShellPatternToRegex`: `*` becomes `.*`
//! or `.*?`, `?` becomes `.`, everything else a literal) and uses Go's leftmost-first matching. Those
//! regexes only ever hold literals, "any rune but newline" and stars, so this module matches them directly:
//! the first match a backtracking engine would find, computed without backtracking (a table of which
//! positions can still complete the pattern), so that no input takes more than quadratic time.

use super::error::ExpandErrorKind;
use super::unicode::{is_digit, is_letter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Lit(char),
    /// `.`: any character except `\n` (Go's default, no `s` flag).
    Any,
    /// `.*` (greedy) or `.*?` (lazy); never crosses a `\n` either.
    Star,
}

#[derive(Debug)]
pub(crate) struct Pattern {
    atoms: Vec<Atom>,
    greedy: bool,
    anchored: bool,
}

impl Pattern {
    /// BuildKit's `convertShellPatternToRegex`, with its errors.
    pub(crate) fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Pattern, ExpandErrorKind> {
        let mut chars = pattern.chars().peekable();
        // Go's text/scanner drops a byte order mark at the very start of its input.
        if chars.peek() == Some(&'\u{feff}') {
            chars.next();
        }
        let mut atoms = Vec::new();
        while let Some(tok) = chars.next() {
            match tok {
                '*' => atoms.push(Atom::Star),
                '?' => atoms.push(Atom::Any),
                '\\' => {
                    // `\}` and `\/` escape the ${} syntax, not the pattern: the backslash is dropped.
                    if matches!(chars.peek(), Some('}') | Some('/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(c @ ('*' | '?' | '\\')) => atoms.push(Atom::Lit(c)),
                        other => {
                            return Err(ExpandErrorKind::InvalidPattern {
                                pattern: pattern.to_string(),
                                // Go formats its EOF rune (-1) with %c as U+FFFD.
                                escaped: other.unwrap_or('\u{fffd}'),
                            });
                        }
                    }
                }
                c => atoms.push(Atom::Lit(c)),
            }
        }
        Ok(Pattern { atoms, greedy, anchored })
    }

    /// Go's `FindStringIndex` from `from` on, in character positions: the leftmost start, and from there
    /// the end a backtracking matcher would reach first.
    fn find_at(&self, text: &[char], table: &Feasible, from: usize) -> Option<(usize, usize)> {
        let last_start = if self.anchored { 0 } else { text.len() };
        (from..=last_start).find(|&start| table.get(0, start)).map(|start| (start, self.walk(text, table, start)))
    }

    /// Follows the first successful path from `start`, which `table` guarantees exists.
    fn walk(&self, text: &[char], table: &Feasible, start: usize) -> usize {
        let mut pos = start;
        for (i, atom) in self.atoms.iter().enumerate() {
            match atom {
                Atom::Lit(_) | Atom::Any => pos += 1,
                Atom::Star => {
                    let limit = line_end(text, pos);
                    let mut candidates = pos..=limit;
                    let next = if self.greedy {
                        candidates.rev().find(|&j| table.get(i + 1, j))
                    } else {
                        candidates.find(|&j| table.get(i + 1, j))
                    };
                    // The table said atom i can finish from `pos`, so some candidate can; stay put otherwise.
                    pos = next.unwrap_or(pos);
                }
            }
        }
        pos
    }
}

/// The first `\n` at or after `pos`, or the end: a star can stretch up to there.
fn line_end(text: &[char], pos: usize) -> usize {
    text[pos..].iter().position(|&c| c == '\n').map_or(text.len(), |off| pos + off)
}

/// `get(i, p)`: can atoms `i..` match starting at text position `p` (to any end)?
struct Feasible {
    width: usize,
    cells: Vec<bool>,
}

impl Feasible {
    fn new(atoms: &[Atom], text: &[char]) -> Feasible {
        let width = text.len() + 1;
        let mut cells = vec![false; (atoms.len() + 1) * width];
        cells[atoms.len() * width..].fill(true);
        for (i, atom) in atoms.iter().enumerate().rev() {
            let (row, rest) = cells[i * width..].split_at_mut(width);
            let next = &rest[..width];
            for p in (0..width).rev() {
                row[p] = match atom {
                    Atom::Lit(c) => p < text.len() && text[p] == *c && next[p + 1],
                    Atom::Any => p < text.len() && text[p] != '\n' && next[p + 1],
                    Atom::Star => next[p] || (p < text.len() && text[p] != '\n' && row[p + 1]),
                };
            }
        }
        Feasible { width, cells }
    }

    fn get(&self, atom: usize, pos: usize) -> bool {
        self.cells[atom * self.width + pos]
    }
}

/// `${v#p}` / `${v##p}`: BuildKit's `trimPrefix`.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    let re = Pattern::compile(pattern, greedy, true)?;
    let text: Vec<char> = value.chars().collect();
    let table = Feasible::new(&re.atoms, &text);
    Ok(match re.find_at(&text, &table, 0) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: BuildKit's `trimSuffix`, a prefix trim of the reversed value with the reversed
/// pattern (so an error names the reversed pattern, as BuildKit's does).
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ExpandErrorKind> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// BuildKit's `reversePattern`: reverses the characters but keeps each `\x` escape in front of its `x`.
pub(crate) fn reverse_pattern(pattern: &str) -> String {
    let runes: Vec<char> = pattern.chars().collect();
    let mut out = runes.clone();
    let Some(last) = runes.len().checked_sub(1) else {
        return String::new();
    };
    let mut i = 0;
    while i <= last {
        let out_idx = last - i;
        if runes[i] == '\\' && i != last {
            out[out_idx - 1] = '\\';
            out[out_idx] = runes[i + 1];
            i += 2;
        } else {
            out[out_idx] = runes[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${v/p/r}` (first match, `r` inserted literally) and `${v//p/r}` (Go's `ReplaceAllString`, which
/// expands `$0`/`${0}` in `r` to the match and other `$name`s to nothing).
pub(crate) fn replace(pattern: &str, value: &str, replacement: &str, all: bool) -> Result<String, ExpandErrorKind> {
    let re = Pattern::compile(pattern, true, false)?;
    let text: Vec<char> = value.chars().collect();
    let table = Feasible::new(&re.atoms, &text);
    if !all {
        return Ok(match re.find_at(&text, &table, 0) {
            Some((start, end)) => {
                let mut out: String = text[..start].iter().collect();
                out.push_str(replacement);
                out.extend(&text[end..]);
                out
            }
            None => value.to_string(),
        });
    }
    // Go's Regexp.replaceAll, in character positions.
    let mut out = String::with_capacity(value.len());
    let (mut last_end, mut search) = (0, 0);
    while search <= text.len() {
        let Some((start, end)) = re.find_at(&text, &table, search) else {
            break;
        };
        out.extend(&text[last_end..start]);
        // No replacement for an empty match right after the previous match.
        if end > last_end || start == 0 {
            let matched: String = text[start..end].iter().collect();
            expand_template(&mut out, replacement, &matched);
        }
        last_end = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out.extend(&text[last_end..]);
    Ok(out)
}

/// Go's `Regexp.expand` for a regex whose only group is the whole match (group 0, unnamed).
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match extract_name(rest) {
            None => out.push('$'),
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// Go's regexp `extract`: a leading `name` or `{name}` (letters, digits, `_`), and the text after it.
fn extract_name(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(body) => (body, true),
        None => (s, false),
    };
    let len =
        body.char_indices().find(|&(_, c)| !(is_letter(c) || is_digit(c) || c == '_')).map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        return after.strip_prefix('}').map(|after| (name, after));
    }
    Some((name, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str, v: &str, greedy: bool) -> String {
        trim_prefix(p, v, greedy).unwrap()
    }

    fn suffix(p: &str, v: &str, greedy: bool) -> String {
        trim_suffix(p, v, greedy).unwrap()
    }

    #[test]
    fn reverse_pattern_keeps_escapes() {
        // BuildKit's TestReversePattern.
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern(r"ab\"), r"\ba");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
        assert_eq!(reverse_pattern(r"\\b"), r"b\\");
        assert_eq!(reverse_pattern(""), "");
        assert_eq!(reverse_pattern(r"\"), r"\");
    }

    #[test]
    fn compile_rejects_bad_escapes() {
        for bad in [r"\", r"\x", r"\\\"] {
            assert!(Pattern::compile(bad, true, true).is_err(), "{bad}");
        }
        let err = Pattern::compile(r"a\", true, true).unwrap_err();
        assert_eq!(err.to_string(), "invalid pattern (a\\) in substitution: invalid escape '\\\u{fffd}'");
        let re = Pattern::compile(r"(()[]{\}^$.\*\?|\\", true, true).unwrap();
        let lits: String = re
            .atoms
            .iter()
            .map(|a| match a {
                Atom::Lit(c) => *c,
                _ => '!',
            })
            .collect();
        assert_eq!(lits, r"(()[]{}^$.*?|\");
    }

    #[test]
    fn hash_trims_shortest_prefix() {
        assert_eq!(prefix("*x*y", "xxyy", false), "y");
        assert_eq!(prefix("*", "xxyy", false), "xxyy");
        assert_eq!(prefix("", "xxyy", false), "xxyy");
        assert_eq!(prefix(r"?\?", "???y", false), "?y");
        assert_eq!(prefix("x", "xxyy", false), "xyy");
        assert_eq!(prefix("y", "xxyy", false), "xxyy", "anchored at the start");
        assert_eq!(prefix("*/", "/a/b/c", false), "a/b/c");
    }

    #[test]
    fn double_hash_trims_longest_prefix() {
        assert_eq!(prefix("*x", "xxyy", true), "yy");
        assert_eq!(prefix("*/", "/a/b/c", true), "c");
        assert_eq!(prefix("*", "xxyy", true), "");
        assert_eq!(prefix("*", "ab\ncd", true), "\ncd", "stars stop at newlines like Go's `.`");
        assert_eq!(prefix("?", "\nx", true), "\nx");
    }

    #[test]
    fn percent_trims_shortest_suffix() {
        assert_eq!(suffix("x", "xxyy", false), "xxyy");
        assert_eq!(suffix("y", "xxyy", false), "xxy");
        assert_eq!(suffix(".*", "file.tar.gz", false), "file.tar");
        assert_eq!(suffix("", "xxyy", false), "xxyy");
    }

    #[test]
    fn double_percent_trims_longest_suffix() {
        assert_eq!(suffix(r"\**", "xx**", true), "xx");
        assert_eq!(suffix(r"\**\*", "a***yy*", true), "a");
        assert_eq!(suffix(".*", "file.tar.gz", true), "file");
        assert_eq!(suffix("한*", "가한나한다", true), "가");
    }

    #[test]
    fn slash_replaces_first_match() {
        assert_eq!(replace(r"\*/", "/foo*/*/*.txt", ".", false).unwrap(), "/foo.*/*.txt");
        assert_eq!(replace("/?/", "/a/foo/b/c.txt", "/", false).unwrap(), "/foo/b/c.txt");
        assert_eq!(replace("", "xxyy", "ww", false).unwrap(), "wwxxyy");
        assert_eq!(replace("x*", "axxbx", "-", false).unwrap(), "a-", "greedy star");
        assert_eq!(replace("z", "xxyy", "-", false).unwrap(), "xxyy");
        assert_eq!(replace("x", "axb", "[$0]", false).unwrap(), "a[$0]b", "no template expansion");
    }

    #[test]
    fn double_slash_replaces_all_matches() {
        assert_eq!(replace(r"\*/", "/foo*/*/*.txt", ".", true).unwrap(), "/foo..*.txt");
        assert_eq!(replace("/tmp", "/tmp/tmp/bar.txt", "", true).unwrap(), "/bar.txt");
        assert_eq!(replace("/?/", "/a/foo/b/c.txt", "/", true).unwrap(), "/foo/c.txt");
        assert_eq!(replace(r"\/", "/tmp/foo.txt", r"\/", true).unwrap(), r"\/tmp\/foo.txt");
        assert_eq!(replace("", "xy", "-", true).unwrap(), "-x-y-");
        assert_eq!(replace("x*", "axxbx", "-", true).unwrap(), "a-");
        assert_eq!(replace("*", "ab", "-", true).unwrap(), "-", "Go's empty-match-after-match rule");
        assert_eq!(replace("?", "a\nb", "-", true).unwrap(), "-\n-");
    }

    #[test]
    fn replace_all_expands_go_templates() {
        assert_eq!(replace("b", "abc", "[$0]", true).unwrap(), "a[b]c");
        assert_eq!(replace("b", "abc", "[${0}]", true).unwrap(), "a[b]c");
        assert_eq!(replace("b", "abc", "[$1$x${y}]", true).unwrap(), "a[]c");
        assert_eq!(replace("b", "abc", "[$$0]", true).unwrap(), "a[$0]c");
        assert_eq!(replace("b", "abc", "[$]", true).unwrap(), "a[$]c");
        assert_eq!(replace("b", "abc", "[${0]", true).unwrap(), "a[${0]c");
        assert_eq!(replace("b", "abc", "[$00]", true).unwrap(), "a[]c", "leading zeros are a name");
    }

    #[test]
    fn many_stars_stay_fast() {
        let value = "a".repeat(3000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert_eq!(prefix(&pattern, &value, true), value);
        assert_eq!(replace(&pattern, &value, "-", true).unwrap(), value);
    }
}
