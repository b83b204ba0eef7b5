//! The line loop of BuildKit's `Parse` (`parser.go`): directives, comments, continuations, instructions
//! and heredoc bodies, with the line numbers of each.

use super::ast::{Ast, Heredoc, Node};
use super::directives::Directives;
use super::heredoc;
use super::line_parsers::{is_instruction, node_from_line, INSTRUCTIONS};
use super::split_command::split_command;
use crate::diag::{suggest, Diagnostic, Span};

/// `bufio.MaxScanTokenSize`: BuildKit reads lines with a `bufio.Scanner` and fails on longer ones.
const MAX_TOKEN: usize = 64 * 1024;

/// BuildKit's `bufio.Scanner` with its `scanLines`: lines keep their `\n` (and `\r`); the last line may
/// lack one. A line that does not fit the scanner's 64 KiB buffer stops the scan, as in Go: a line ending
/// in `\n` may be 65536 bytes with it, a last line without one only 65535.
struct Lines<'a> {
    rest: &'a str,
    /// The 1-based number of a line that was too long.
    too_long: Option<usize>,
    /// Lines handed out so far.
    count: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a str> {
        if self.too_long.is_some() || self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let line = &self.rest[..end];
        let fits = if line.ends_with('\n') { line.len() <= MAX_TOKEN } else { line.len() < MAX_TOKEN };
        if !fits {
            self.too_long = Some(self.count + 1);
            return None;
        }
        self.rest = &self.rest[end..];
        self.count += 1;
        Some(line)
    }
}

/// Go's `unicode.IsSpace`-trimmed start of a line.
fn trim_leading_whitespace(s: &str) -> &str {
    super::go::trim_left_space(s)
}

/// `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_leading_whitespace(line).starts_with('#')
}

/// BuildKit's `processLine`: the line without its newline (and leading whitespace on an instruction's
/// first line), or empty for a comment; plus whether it was a parser directive.
fn process_line<'a>(
    d: &mut Directives,
    token: &'a str,
    strip_left: bool,
    line_no: usize,
) -> Result<(&'a str, bool), Diagnostic> {
    let mut token = trim_newline(token);
    if strip_left {
        token = trim_leading_whitespace(token);
    }
    let directive = d.possible_directive(token, line_no).map_err(|e| Diagnostic::spanned(e, Span::line(line_no)))?;
    Ok((if is_comment(token) { "" } else { token }, directive))
}

/// The parser proper; see [`super::parse`] for the contract.
pub(crate) fn parse_text(text: &str) -> Result<Ast, Diagnostic> {
    let mut d = Directives::new();
    let mut lines = Lines { rest: text, too_long: None, count: 0 };
    let mut current_line = 0;
    let mut nodes: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    // BuildKit rejects unknown instructions only after the whole file has parsed.
    let mut unknown: Option<Diagnostic> = None;

    while let Some(mut token) = lines.next() {
        if current_line == 0 {
            token = token.strip_prefix('\u{feff}').unwrap_or(token);
        }
        if is_comment(token) {
            // BuildKit drops the first byte, which is the `#` only when the line is not indented.
            let text = String::from_utf8_lossy(&token.as_bytes()[1..]);
            let comment = super::go::trim_space(&text);
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let (first, directive) = process_line(&mut d, token, true, current_line + 1)?;
        if directive {
            comments.pop();
        }
        current_line += 1;
        let start_line = current_line;

        let (first, mut end_of_line) = d.trim_continuation(first);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut has_empty_continuation = false;
        while !end_of_line {
            let Some(token) = lines.next() else { break };
            let (next, _) = process_line(&mut d, token, false, current_line + 1)?;
            current_line += 1;
            if is_comment(token) {
                continue;
            }
            if trim_leading_whitespace(next).is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (next, eol) = d.trim_continuation(next);
            end_of_line = eol;
            line.push_str(next);
        }
        let span = Span::new(start_line, current_line);
        if has_empty_continuation {
            warnings.push(Diagnostic::spanned(
                format!(
                    "Empty continuation line found in: {line} (Empty continuation lines will become errors in a future release)"
                ),
                span,
            ));
        }

        let mut node =
            node_from_line(&line, d.escape, std::mem::take(&mut comments)).map_err(|e| Diagnostic::spanned(e, span))?;
        if unknown.is_none() && !is_instruction(&node.keyword) {
            let (command, _, _) = split_command(&line, d.escape);
            let message = suggest(format!("unknown instruction: {command}"), &command, INSTRUCTIONS);
            unknown = Some(Diagnostic::spanned(message, span));
        }

        if can_contain_heredoc(&node) && line.contains("<<") {
            for opener in heredoc::heredocs_from_line(&line).map_err(|e| Diagnostic::spanned(e, span))? {
                let mut raw = String::new();
                let mut terminated = false;
                while let Some(body) = lines.next() {
                    current_line += 1;
                    let mut candidate = trim_newline(body);
                    if opener.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == opener.name {
                        terminated = true;
                        break;
                    }
                    raw.push_str(body);
                }
                if !terminated {
                    return Err(Diagnostic::spanned("unterminated heredoc", Span::new(start_line, current_line)));
                }
                let content = if opener.chomp { heredoc::chomp(&raw) } else { raw.clone() };
                node.heredocs.push(Heredoc {
                    name: opener.name,
                    content,
                    raw,
                    expand: opener.expand,
                    chomp: opener.chomp,
                    file_descriptor: opener.file_descriptor,
                });
            }
        }

        node.span = Span::new(start_line, current_line);
        if let Some(inner) = node.inner.as_deref_mut() {
            inner.span = node.span;
        }
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(Diagnostic::spanned("file with no instructions", Span::line(current_line.max(1))));
    }
    if let Some(line) = lines.too_long {
        return Err(Diagnostic::spanned(
            format!("dockerfile line greater than max allowed size of {}", MAX_TOKEN - 1),
            Span::line(line),
        ));
    }
    if let Some(unknown) = unknown {
        return Err(unknown);
    }
    Ok(Ast { directives: d.found, escape: d.escape, nodes, warnings })
}

/// BuildKit's `canContainHeredoc`: RUN, COPY and ADD (also wrapped in ONBUILD), unless in JSON form.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.inner, node.keyword.as_str()) {
        (Some(inner), "onbuild") => inner,
        _ => node,
    };
    matches!(node.keyword.as_str(), "run" | "copy" | "add") && !node.json
}
