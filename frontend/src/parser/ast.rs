//! The Dockerfile AST: what the parser produces and instruction parsing consumes.

use crate::diag::{Diagnostic, Span};

/// A parser directive from the top of the file (`# syntax=...`, `# escape=...`, `# check=...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name.
    pub name: String,
    pub value: String,
    pub span: Span,
}

/// A heredoc body attached to an instruction (`<<EOF ... EOF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, without quotes (`EOF`).
    pub name: String,
    /// The body lines joined with `\n`, ending with `\n` when non-empty; for `<<-` leading tabs stripped.
    /// A CRLF file keeps the `\r` of each line, as BuildKit does.
    pub content: String,
    /// The body exactly as read, before `<<-` strips tabs: BuildKit's `Heredoc.Content`. BuildKit runs a
    /// `RUN <<-EOF` body without a shebang unstripped, and writes ONBUILD triggers from it.
    pub raw: String,
    /// False when the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The fd prefix (`3<<EOF`), 0 when absent; `u32::MAX` when too large (BuildKit saturates).
    pub file_descriptor: u32,
}

/// One instruction. Mirrors BuildKit's `parser.Node` for an instruction line, flattened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Lower-cased keyword (`run`, `from`, ...).
    pub keyword: String,
    /// The instruction text as written, continuation lines joined (comment lines removed), without the
    /// heredoc bodies.
    pub original: String,
    /// Flags as written (`--from=x`), in order, before the arguments; `--` ends them.
    pub flags: Vec<String>,
    /// Arguments after parser-level normalisation (JSON array elements, one shell-form string, ENV/LABEL
    /// triples `key value sep`, ...). For ONBUILD this is empty and `inner` holds the wrapped instruction.
    pub args: Vec<String>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies in the order their openers appear. For ONBUILD they belong to the ONBUILD node, as
    /// in BuildKit, not to `inner`.
    pub heredocs: Vec<Heredoc>,
    /// ONBUILD's wrapped instruction; its span is the ONBUILD's. BuildKit parses it without knowing the
    /// keyword, so an unknown one (`ONBUILD RUNN x`) is kept here with the single argument `""`.
    pub inner: Option<Box<Node>>,
    /// Comment lines directly above the instruction (without `#`), for documentation tools. As in
    /// BuildKit an empty `#` line clears them, a blank line does not, and an indented comment keeps its
    /// `#` (BuildKit drops the line's first byte).
    pub comments: Vec<String>,
    /// The first to the last line of the instruction, continuation lines and heredoc bodies included.
    pub span: Span,
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ast {
    /// The directives of the directive block at the top, as the parser applied them (see
    /// [`super::find_directive`] for BuildKit's reading of `# check=`, which also skips a `#!` line).
    pub directives: Vec<Directive>,
    /// The escape token in force (`\\` or `` ` ``).
    pub escape: char,
    pub nodes: Vec<Node>,
    /// Non-fatal findings (empty continuation lines, ...).
    pub warnings: Vec<Diagnostic>,
}
