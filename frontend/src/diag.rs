//! Diagnostics that point at Dockerfile lines, rendered like BuildKit:
//!
//! ```text
//! Dockerfile:7: unknown instruction: RUNN (did you mean RUN?)
//! --------------------
//!    6 |     FROM busybox
//!    7 | >>> RUNN echo hi
//! --------------------
//! ```

use std::fmt;

/// An inclusive range of 1-based source lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn line(line: usize) -> Span {
        Span { start: line, end: line }
    }
}

/// An error (or warning) of the frontend, optionally tied to source lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic { message: message.into(), span: None }
    }

    pub fn spanned(message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic { message: message.into(), span: Some(span) }
    }

    /// Attach a span unless one is already set (inner errors know better).
    pub fn with_span(mut self, span: Span) -> Diagnostic {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    /// Render as `<file>:<line>: <message>` followed by the offending lines with one line of context on
    /// each side, BuildKit style.
    pub fn render(&self, file: &str, source: &str) -> String {
        let Some(span) = self.span else {
            return format!("{file}: {}", self.message);
        };
        let mut out = format!("{file}:{}: {}\n", span.start, self.message);
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let lines: Vec<&str> = source
            .strip_suffix('\n')
            .unwrap_or(source)
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        let first = span.start.saturating_sub(1).max(1);
        let last = (span.end + 1).min(lines.len());
        out.push_str("--------------------\n");
        for n in first..=last {
            let Some(text) = lines.get(n - 1) else { break };
            let marker = if (span.start..=span.end).contains(&n) { ">>> " } else { "    " };
            out.push_str(&format!(" {n:>3} | {marker}{text}\n"));
        }
        out.push_str("--------------------\n");
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(span) => write!(f, "line {}: {}", span.start, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// "did you mean X?" against a list of candidates, by edit distance.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&input, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Append ` (did you mean X?)` to `message` when a close candidate exists.
pub fn suggest<'a>(message: String, input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match did_you_mean(input, candidates) {
        Some(c) => format!("{message} (did you mean {c}?)"),
        None => message,
    }
}
