//! Dockerfile frontend: bytes and build options in, an [`llb::Definition`] out.
//!
//! A pipeline of small modules, as in BuildKit's frontend/dockerfile:
//! - [`parser`]: lines, directives, continuations, heredocs, flags -> [`parser::Ast`] with line spans;
//! - [`shell`]: BuildKit's word lexer and variable expansion behind an env-getter;
//! - [`instructions`]: typed commands with flag validation;
//! - [`convert`]: stages, ARG/ENV scoping, image config, ops;
//! - [`checks`]: BuildKit's Dockerfile lint rules (build checks).
//!
//! Architecture invariant: this crate does no I/O. It reads the bytes it is given; base-image configs come
//! from a resolver callback supplied by the caller.

pub mod checks;
pub mod convert;
pub mod diag;
pub mod instructions;
pub mod parser;
pub mod shell;
