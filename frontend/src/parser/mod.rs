//! Dockerfile parser: bytes -> [`Ast`] with line spans (BuildKit's `frontend/dockerfile/parser`).

mod ast;

pub use ast::{Ast, Directive, Heredoc, Node};
