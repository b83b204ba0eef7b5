//! Dockerfile parser: bytes -> [`Ast`] with line spans. An exact port of BuildKit's
//! `frontend/dockerfile/parser` (`parser.go`, `line_parsers.go`, `split_command.go`, `directives.go`).
//!
//! - [`parse`] reads the lines: parser directives at the top, comments, continuation lines (the escape
//!   token at the end of a line), one [`Node`] per instruction with its arguments normalised per keyword
//!   (JSON or shell form, ENV/LABEL triples, ...), heredoc bodies after RUN/COPY/ADD.
//! - [`dump`] prints BuildKit's S-expression form, the format of its parser golden files.
//!
//! Where BuildKit's behaviour is odd, this follows it (see the comments at each place); the deliberate
//! differences are:
//! - unknown instructions are an error here (BuildKit reports them in its next stage), reported only
//!   after the whole file parsed, as BuildKit would;
//! - invalid UTF-8 is an error (BuildKit passes the bytes along);
//! - errors point at the offending line where BuildKit's location is one line off (directive errors,
//!   a line longer than 64 KiB);
//! - heredoc detection uses [`crate::shell::Lexer`], which does not yet keep `<< EOF` (a space after
//!   `<<`, accepted since BuildKit v0.22) together, so such a heredoc is not recognised.

mod ast;
mod directives;
mod dump;
mod go;
mod heredoc;
mod json;
mod line_parsers;
mod parse;
mod split_command;

/// Go's `strconv.Quote`, exact to Unicode 15.0 (the quoting of [`dump`] and of BuildKit's messages).
pub use crate::shell::go_quote;
pub use ast::{Ast, Directive, Heredoc, Node};
pub use directives::{find_directive, DEFAULT_ESCAPE};
pub use dump::{dump, dump_detailed};
pub use line_parsers::INSTRUCTIONS;

/// BuildKit's `MustParseHeredoc`: the heredoc a word opens (`<<EOF`, `<<-"EOF"`, `3<<EOF`), as its
/// delimiter name and whether `<<-` strips tabs; `None` for any other word.
pub fn heredoc_opener(word: &str) -> Option<(String, bool)> {
    heredoc::parse_heredoc(word).ok().flatten().map(|o| (o.name, o.chomp))
}

use crate::diag::{Diagnostic, Span};

/// Parses a Dockerfile.
///
/// Every error has a span: the offending lines, or for "file with no instructions" the last line of the
/// file (line 1 for an empty file). Warnings (empty continuation lines) go to [`Ast::warnings`], spanned to
/// the whole instruction (BuildKit gives its last line).
pub fn parse(source: &[u8]) -> Result<Ast, Diagnostic> {
    let text = std::str::from_utf8(source).map_err(|e| {
        let line = 1 + source[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        Diagnostic::spanned("invalid UTF-8 encoding", Span::line(line))
    })?;
    parse::parse_text(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(source: &str) -> Diagnostic {
        parse(source.as_bytes()).unwrap_err()
    }

    #[test]
    fn lines_longer_than_bufio_allows_fail() {
        // A line with its newline may fill the scanner's 64 KiB buffer exactly.
        let fits = format!("FROM a\nRUN {}\n", "x".repeat(65536 - 5));
        assert!(parse(fits.as_bytes()).is_ok());
        let long = format!("FROM a\nRUN {}\nRUN b\n", "x".repeat(65536 - 4));
        let e = err(&long);
        assert_eq!(
            (e.message.as_str(), e.span),
            ("dockerfile line greater than max allowed size of 65535", Some(Span::line(2)))
        );
        // Without a newline the last line needs one byte of room for the scanner to see the end.
        assert!(parse(format!("FROM a\nRUN {}", "x".repeat(65535 - 4)).as_bytes()).is_ok());
        assert!(parse(format!("FROM a\nRUN {}", "x".repeat(65536 - 4)).as_bytes()).is_err());
        // No instructions before it: that error wins, as in BuildKit.
        assert_eq!(err(&"x".repeat(70000)).message, "file with no instructions");
    }

    #[test]
    fn spans() {
        let ast = parse(b"\n# c\nFROM a \\\n  b\nONBUILD RUN <<EOF\nx\nEOF\n").unwrap();
        assert_eq!(ast.nodes[0].span, Span::new(3, 4));
        assert_eq!(ast.nodes[1].span, Span::new(5, 7));
        assert_eq!(ast.nodes[1].inner.as_ref().unwrap().span, Span::new(5, 7));
        assert_eq!(err("").span, Some(Span::line(1)));
        assert_eq!(err("# a\n\n").span, Some(Span::line(2)));
        assert_eq!(parse(b"FROM a\nRUN b\n\xff").unwrap_err().span, Some(Span::line(3)));
    }

    #[test]
    fn unknown_instructions_are_reported_after_parsing() {
        let e = err("FROM a\nRUNN b\nrunn c\n");
        assert_eq!(
            (e.message.as_str(), e.span),
            ("unknown instruction: RUNN (did you mean RUN?)", Some(Span::line(2)))
        );
        assert_eq!(err("FROM a\nRUNN b\nRUN <<EOF\n").message, "unterminated heredoc");
        assert_eq!(err("from a\nworkdir\u{a0}/x\n").message, "unknown instruction: workdir\u{a0}/x");
    }

    #[test]
    fn escape_directive_sets_the_token() {
        let ast = parse(b"# escape=`\nFROM a\nRUN b `\n c\n").unwrap();
        assert_eq!((ast.escape, dump(&ast).as_str()), ('`', "(from \"a\")\n(run \"b  c\")\n"));
        assert_eq!(ast.directives, [Directive { name: "escape".into(), value: "`".into(), span: Span::line(1) }]);
    }

    /// BuildKit v0.22 (moby/buildkit#5817) keeps `<<` and the blanks after it in one word, so `<< EOF`
    /// opens a heredoc. That lives in the word lexer (`processPossibleHeredoc`), which
    /// `crate::shell::Lexer` does not have yet.
    #[test]
    fn heredoc_with_blanks_after_the_marker() {
        let ast = parse(b"FROM a\nRUN cat << EOF > /x\nhello\nEOF\n").unwrap();
        assert_eq!(ast.nodes[1].heredocs[0].content, "hello\n");
        // `<<-` followed by a blank is not an opener (moby/buildkit#6822 is not merged).
        assert!(parse(b"FROM a\nRUN cat <<- EOF\nhello\nEOF\n").is_err());
    }
}
