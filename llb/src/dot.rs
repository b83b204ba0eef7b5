//! Graphviz rendering of a definition, for `rbuild debug dump-llb --dot` and bug reports.

use std::fmt::Write;

use crate::Definition;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Definition {
    /// A `digraph` with one box per vertex labelled with its short digest and description (or a
    /// summary of the op), and an edge from each input to its consumer, labelled with the output index
    /// when it is not 0. The root is drawn bold. Output is deterministic (sorted by digest).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph llb {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n");
        for (d, v) in &self.vertices {
            let text = self.metadata_of(d).and_then(|m| m.description.clone()).unwrap_or_else(|| v.summary());
            let bold = if self.root.is_some_and(|r| r.digest == *d) { ", style=bold" } else { "" };
            // Writing to a String cannot fail.
            let _ = writeln!(out, "  \"{}\" [label=\"{}\\n{}\"{bold}];", d.short(), d.short(), escape(&text));
        }
        for (d, v) in &self.vertices {
            for input in &v.inputs {
                let label = if input.output_index == 0 {
                    String::new()
                } else {
                    format!(" [label=\"{}\"]", input.output_index)
                };
                let _ = writeln!(out, "  \"{}\" -> \"{}\"{label};", input.digest.short(), d.short());
            }
        }
        out.push_str("}\n");
        out
    }
}
