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
        for n in excerpt_lines(first, last, span.start, span.end) {
            let Some(n) = n else {
                out.push_str(&format!("     | ... ({} more lines)\n", span.end - span.start + 1 - EXCERPT_LINES));
                continue;
            };
            let Some(text) = lines.get(n - 1) else { break };
            let marker = if (span.start..=span.end).contains(&n) { ">>> " } else { "    " };
            out.push_str(&format!(" {n:>3} | {marker}{}\n", clip(text, EXCERPT_WIDTH)));
        }
        out.push_str("--------------------\n");
        out
    }
}

/// How many characters of one Dockerfile line (or of a command) an error shows.
pub const EXCERPT_WIDTH: usize = 240;

/// How many lines of one instruction an excerpt shows: the first and the last halves.
pub const EXCERPT_LINES: usize = 12;

/// `text` cut to `max` characters, saying how much was left out: a 5 MB RUN line is not echoed whole.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => {
            let rest = text[at..].chars().count();
            std::borrow::Cow::Owned(format!("{}... ({rest} more characters)", &text[..at]))
        }
    }
}

/// The line numbers an excerpt of `first..=last` shows where `start..=end` is the instruction: all of
/// them, or with `None` standing for the middle of an instruction longer than [`EXCERPT_LINES`].
pub fn excerpt_lines(first: usize, last: usize, start: usize, end: usize) -> Vec<Option<usize>> {
    if end < start || end - start < EXCERPT_LINES {
        return (first..=last).map(Some).collect();
    }
    let half = EXCERPT_LINES / 2;
    let mut out: Vec<Option<usize>> = (first..start + half).map(Some).collect();
    out.push(None);
    out.extend((end + 1 - half..=last).map(Some));
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_and_instructions_are_clipped_in_excerpts() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 3), "ééé... (2 more characters)");
        // One enormous line: its start and how much more.
        let source = format!("FROM a\nRUN echo {}\n", "x".repeat(100_000));
        let shown = Diagnostic::spanned("bad", Span::new(2, 2)).render("Dockerfile", &source);
        assert!(shown.len() < 1000, "{} bytes", shown.len());
        assert!(shown.contains("(99769 more characters)"), "{shown}");
        // One instruction of many lines: its first and last lines, and how many between.
        let mut source = "FROM a\nRUN a \\\n".to_string();
        for _ in 0..1000 {
            source.push_str("  b \\\n");
        }
        source.push_str("  c\nCMD d\n");
        let shown = Diagnostic::spanned("bad", Span::new(2, 1003)).render("Dockerfile", &source);
        // The header, a rule, a line before, the instruction's ends and the gap, a line after, a rule.
        assert_eq!(shown.lines().count(), 1 + 1 + 1 + EXCERPT_LINES + 1 + 1 + 1, "{shown}");
        assert!(shown.contains("     | ... (990 more lines)\n"), "{shown}");
        assert!(shown.contains("   1 |     FROM a\n") && shown.contains("1004 |     CMD d\n"), "{shown}");
        assert_eq!(excerpt_lines(1, 3, 2, 2), vec![Some(1), Some(2), Some(3)]);
    }
}
