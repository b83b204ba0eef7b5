//! Per-instruction argument parsing: BuildKit's `line_parsers.go` and its dispatch table.

use super::ast::Node;
use super::go;
use super::json::{self, JsonError};
use super::split_command::split_command;
use crate::diag::Span;

/// The Dockerfile instructions, upper case, as `unknown instruction` suggestions name them.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Whether a lower-cased keyword is an instruction.
pub(crate) fn is_instruction(keyword: &str) -> bool {
    INSTRUCTIONS.iter().any(|i| i.eq_ignore_ascii_case(keyword))
}

/// What a line parser makes of the text after the keyword and flags.
#[derive(Default)]
struct Parsed {
    args: Vec<String>,
    json: bool,
    inner: Option<Box<Node>>,
}

impl Parsed {
    fn args(args: Vec<String>) -> Parsed {
        Parsed { args, ..Parsed::default() }
    }
}

/// BuildKit's `newNodeFromLine`: splits `line` and dispatches on the keyword. Unknown keywords parse
/// (BuildKit's `parseIgnore`); rejecting them is the caller's business. The span is left for the caller.
pub(crate) fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    let (command, flags, rest) = split_command(line, escape);
    let keyword = go::to_lower(&command);
    let parsed = match keyword.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(&rest)?,
        "arg" => Parsed::args(parse_words(&rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest)?,
        "env" => Parsed::args(name_val(&rest, "ENV", escape)?),
        "label" => Parsed::args(name_val(&rest, "LABEL", escape)?),
        "expose" | "from" => Parsed::args(strings_whitespace_delimited(&rest)),
        "healthcheck" => health_config(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => Parsed::args(string(&rest)),
        "onbuild" => sub_command(&rest, escape)?,
        // parseIgnore: one empty argument.
        _ => Parsed::args(vec![String::new()]),
    };
    Ok(Node {
        keyword,
        original: line.to_string(),
        flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: Vec::new(),
        inner: parsed.inner,
        comments,
        span: Span::default(),
    })
}

/// `ONBUILD RUN foo` -> `(onbuild (run "foo"))`.
fn sub_command(rest: &str, escape: char) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::default());
    }
    let inner = node_from_line(rest, escape, Vec::new())?;
    Ok(Parsed { inner: Some(Box::new(inner)), ..Parsed::default() })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept in the words (they are
/// removed later, by word expansion). An escape token at the very end is dropped.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut ch = '\0';
    let mut pos = 0;
    while pos <= n {
        if pos != n {
            ch = chars[pos];
        }
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if go::is_space(ch) {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if pos == n {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if go::is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                // Unquoted, the escape token and the next character are both kept, even a quote.
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        // Nothing can be escaped inside single quotes.
        if ch == escape && quote != '\'' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// BuildKit's `parseNameVal` for ENV and LABEL: triples `key value sep`, sep `=` for `k=v` words and
/// empty for the legacy `KEY name value` form (decided by whether the first word has a `=`).
fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let parts = go::split_whitespace(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![parts[0].to_string(), parts[1].to_string(), String::new()]);
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::shell::go_quote(word)
            ));
        };
        args.extend([name.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// BuildKit's `parseStringsWhitespaceDelimited`.
fn strings_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    go::split_whitespace(rest, None).into_iter().map(str::to_string).collect()
}

/// BuildKit's `parseString`.
fn string(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit's `parseJSON`: `Ok(None)` when the text is not a JSON array (the caller falls back).
fn json_array(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = go::trim_left_space(rest);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match json::parse_string_array(rest) {
        Ok(args) => Ok(Some(args)),
        Err(JsonError::Syntax) => Ok(None),
        Err(JsonError::NotStrings) => Err(NOT_STRING_ARRAY.to_string()),
    }
}

/// BuildKit's `parseMaybeJSON`: a JSON array, or else the whole text as one argument.
fn maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::default());
    }
    Ok(match json_array(rest)? {
        Some(args) => Parsed { args, json: true, inner: None },
        None => Parsed::args(vec![rest.to_string()]),
    })
}

/// BuildKit's `parseMaybeJSONToList`: a JSON array, or else whitespace-separated words.
fn maybe_json_to_list(rest: &str) -> Result<Parsed, String> {
    Ok(match json_array(rest)? {
        Some(args) => Parsed { args, json: true, inner: None },
        None => Parsed::args(strings_whitespace_delimited(rest)),
    })
}

/// BuildKit's `parseHealthConfig`: the type word (`CMD`, `NONE`, ...) and then the command as in
/// [`maybe_json`]. Like BuildKit it finds the end of the type word byte by byte (see
/// [`super::split_command::extract_builder_flags`] on what that means for non-ASCII text).
fn health_config(rest: &str) -> Result<Parsed, String> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|&c| go::is_space_byte(c)).unwrap_or(b.len());
    let next = b[sep..].iter().position(|&c| !go::is_space_byte(c)).map_or(b.len(), |i| sep + i);
    if sep == 0 {
        return Ok(Parsed::default());
    }
    let mut cmd = maybe_json(&String::from_utf8_lossy(&b[next..]))?;
    cmd.args.insert(0, String::from_utf8_lossy(&b[..sep]).into_owned());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(line: &str) -> Node {
        node_from_line(line, '\\', Vec::new()).unwrap()
    }

    fn args(line: &str) -> Vec<String> {
        node(line).args
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a "b c" 'd\'e f\ g "" \"h"#, '\\'),
            ["a", "\"b c\"", "'d\\'e", "f\\ g", "\"\"", "\\\"h"]
        );
        assert_eq!(parse_words("a\\", '\\'), ["a"]);
        assert_eq!(parse_words("\"a\\", '\\'), ["\"a"]);
        assert_eq!(parse_words("a\u{a0}b\u{3000}c", '\\'), ["a", "b", "c"]);
        // An escaped quote opens nothing; an escape token ending an open quote is dropped.
        assert_eq!(parse_words("a`\"b c\" `", '`'), ["a`\"b", "c\" "]);
    }

    #[test]
    fn env_and_label() {
        assert_eq!(args("ENV a b  c"), ["a", "b  c", ""]);
        assert_eq!(args("ENV a=b c=\"d e\""), ["a", "b", "=", "c", "\"d e\"", "="]);
        assert_eq!(args("LABEL a="), ["a", "", "="]);
        assert!(args("ENV").is_empty());
        assert_eq!(node_from_line("ENV PATH", '\\', vec![]).unwrap_err(), "ENV must have two arguments");
        assert_eq!(
            node_from_line("LABEL a=b c", '\\', vec![]).unwrap_err(),
            r#"Syntax error - can't find = in "c". Must be of the form: name=value"#
        );
    }

    #[test]
    fn json_or_shell() {
        let n = node("CMD [\"a\", \"b\"]");
        assert_eq!((n.args, n.json), (vec!["a".to_string(), "b".to_string()], true));
        let n = node("RUN [\"a\" b");
        assert_eq!((n.args, n.json), (vec!["[\"a\" b".to_string()], false));
        assert_eq!(args("COPY [\"a b\", \"c\"]"), ["a b", "c"]);
        assert_eq!(args("COPY a  b"), ["a", "b"]);
        assert_eq!(node_from_line("CMD [1]", '\\', vec![]).unwrap_err(), NOT_STRING_ARRAY);
        assert_eq!(node_from_line("VOLUME [\"a\", null]", '\\', vec![]).unwrap_err(), NOT_STRING_ARRAY);
        let n = node("CMD []");
        assert!(n.args.is_empty() && n.json);
    }

    #[test]
    fn healthcheck() {
        assert!(args("HEALTHCHECK").is_empty());
        assert_eq!(args("HEALTHCHECK NONE"), ["NONE"]);
        let n = node("HEALTHCHECK --interval=5s CMD [\"a\"]");
        assert_eq!(
            (n.flags, n.args, n.json),
            (vec!["--interval=5s".to_string()], vec!["CMD".to_string(), "a".to_string()], true)
        );
        assert_eq!(args("HEALTHCHECK CMD  a  b"), ["CMD", "a  b"]);
    }

    #[test]
    fn onbuild_nests() {
        let n = node("ONBUILD --x RUN --mount=a echo hi");
        assert_eq!((n.keyword.as_str(), n.flags, n.args.len()), ("onbuild", vec!["--x".to_string()], 0));
        let inner = n.inner.unwrap();
        assert_eq!((inner.keyword.as_str(), inner.original.as_str()), ("run", "RUN --mount=a echo hi"));
        assert_eq!((inner.flags, inner.args), (vec!["--mount=a".to_string()], vec!["echo hi".to_string()]));
        assert!(node("ONBUILD").inner.is_none());
        assert_eq!(node("ONBUILD NOPE x").inner.unwrap().args, [""], "parseIgnore");
    }

    #[test]
    fn others() {
        assert_eq!(args("FROM a  AS b"), ["a", "AS", "b"]);
        assert_eq!(args("ARG a=\"b c\" d"), ["a=\"b c\"", "d"]);
        assert_eq!(args("USER  a b "), ["a b"]);
        assert_eq!(node("rUn x").keyword, "run");
        assert!(is_instruction("stopsignal") && !is_instruction("runn"));
    }
}
