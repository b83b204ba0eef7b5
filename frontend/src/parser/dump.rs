//! Printing an [`Ast`]: BuildKit's S-expression `Node.Dump` (its golden-file format) and a detailed form
//! with everything else the AST holds, for golden tests and debugging.

use std::fmt::Write;

use super::ast::{Ast, Node};
use super::go::trim_space;
use crate::shell::go_quote as quote;

/// BuildKit's `Dump` plus a final newline: one `(keyword ["--flags"] "args"...)` line per instruction,
/// each string in Go's `strconv.Quote` form, ONBUILD's instruction nested. Byte for byte the `result`
/// files of BuildKit's parser tests.
pub fn dump(ast: &Ast) -> String {
    let mut out = String::new();
    for node in &ast.nodes {
        out.push('(');
        out.push_str(&dump_node(node));
        out.push_str(")\n");
    }
    out
}

fn dump_node(node: &Node) -> String {
    let mut s = node.keyword.clone();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| quote(f)).collect();
        let _ = write!(s, " [{}]", flags.join(" "));
    }
    if let Some(inner) = &node.inner {
        let _ = write!(s, " ({})", dump_node(inner));
    }
    for arg in &node.args {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    // Go trims each node's text; that matters only for an empty keyword.
    trim_space(&s).to_string()
}

/// Everything in the AST, one fact per line: directives, escape token, each instruction with its span,
/// original text, flags, arguments, heredocs and comments, and the warnings.
pub fn dump_detailed(ast: &Ast) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "escape {}", quote(&ast.escape.to_string()));
    for d in &ast.directives {
        let _ = writeln!(out, "directive {} {} line {}", d.name, quote(&d.value), d.span.start);
    }
    for node in &ast.nodes {
        detail_node(&mut out, node, "");
    }
    for w in &ast.warnings {
        let span = w.span.unwrap_or_default();
        let _ = writeln!(out, "warning {}-{} {}", span.start, span.end, quote(&w.message));
    }
    out
}

fn detail_node(out: &mut String, node: &Node, indent: &str) {
    let _ = writeln!(
        out,
        "{indent}{} {}-{}{}",
        node.keyword,
        node.span.start,
        node.span.end,
        if node.json { " json" } else { "" }
    );
    let _ = writeln!(out, "{indent}  original {}", quote(&node.original));
    for c in &node.comments {
        let _ = writeln!(out, "{indent}  comment {}", quote(c));
    }
    for f in &node.flags {
        let _ = writeln!(out, "{indent}  flag {}", quote(f));
    }
    for a in &node.args {
        let _ = writeln!(out, "{indent}  arg {}", quote(a));
    }
    for h in &node.heredocs {
        let _ = writeln!(
            out,
            "{indent}  heredoc {} fd={} expand={} chomp={} content={}",
            quote(&h.name),
            h.file_descriptor,
            h.expand,
            h.chomp,
            quote(&h.content)
        );
        if h.raw != h.content {
            let _ = writeln!(out, "{indent}    raw={}", quote(&h.raw));
        }
    }
    if let Some(inner) = &node.inner {
        detail_node(out, inner, &format!("{indent}  "));
    }
}
