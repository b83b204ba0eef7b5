//! The rules BuildKit runs while parsing (instructions.Parse, `validateStageNames`,
//! `validateCommandCasing`): they read the instructions as written, in every stage.

use std::collections::BTreeSet;

use super::rules::*;
use super::Linter;
use crate::diag::Span;
use crate::instructions::Dockerfile;
use crate::parser::{Ast, Node};

/// The keyword as written (`from`, `FROM`, `From`): BuildKit's `node.Value`.
pub(super) fn written_keyword(original: &str) -> &str {
    original.split_whitespace().next().unwrap_or("")
}

pub(super) fn check(ast: &Ast, df: &Dockerfile, lint: &mut Linter) {
    // The parser's warnings are its empty continuation lines (BuildKit reports them first).
    for w in &ast.warnings {
        if let Some(span) = w.span {
            // BuildKit points at the instruction's last line.
            lint.report(&NO_EMPTY_CONTINUATION, Span::line(span.end), "Empty continuation line".into());
        }
    }
    for node in &ast.nodes {
        instruction(node, lint);
    }
    stage_names(df, lint);
    casing(df, lint);
}

/// Rules of `instructions.ParseInstructionWithLinter`.
fn instruction(node: &Node, lint: &mut Linter) {
    let kw = written_keyword(&node.original);
    match node.keyword.as_str() {
        "maintainer" => lint.report(
            &MAINTAINER_DEPRECATED,
            node.span,
            "Maintainer instruction is deprecated in favor of using label".into(),
        ),
        "from" if node.args.len() == 3 => {
            let (as_kw, name) = (&node.args[1], &node.args[2]);
            if *name != name.to_lowercase() {
                lint.report(&STAGE_NAME_CASING, node.span, format!("Stage name '{name}' should be lowercase"));
            }
            // A FROM of mixed case is ConsistentInstructionCasing's business.
            let from_lower = kw == kw.to_lowercase();
            let from_upper = kw == kw.to_uppercase();
            let matches = if from_lower {
                *as_kw == as_kw.to_lowercase()
            } else if from_upper {
                *as_kw == as_kw.to_uppercase()
            } else {
                true
            };
            if !matches {
                lint.report(&FROM_AS_CASING, node.span, format!("'{as_kw}' and '{kw}' keywords' casing do not match"));
            }
            definition_description("FROM", &[name.to_lowercase()], node, lint);
        }
        "arg" => {
            let keys: Vec<String> =
                node.args.iter().map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k).to_string()).collect();
            definition_description("ARG", &keys, node, lint);
        }
        _ => {}
    }
}

/// `validateDefinitionDescription`: the comment right above a stage or ARG should start with its name.
fn definition_description(instruction: &str, keys: &[String], node: &Node, lint: &mut Linter) {
    let (Some(last), false) = (node.comments.last(), keys.is_empty()) else { return };
    let first_word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { keys[0].as_str() };
    lint.report(
        &INVALID_DEFINITION_DESCRIPTION,
        node.span,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}

/// `validateStageNames`: reserved and duplicate stage names.
fn stage_names(df: &Dockerfile, lint: &mut Linter) {
    let mut seen = BTreeSet::new();
    for stage in &df.stages {
        let Some(name) = &stage.name else { continue };
        if name == "context" || name == "scratch" {
            lint.report(
                &RESERVED_STAGE_NAME,
                stage.span,
                format!("Stage name should not use the same name as reserved stage \"{name}\""),
            );
        }
        if !seen.insert(name.clone()) {
            lint.report(
                &DUPLICATE_STAGE_NAME,
                stage.span,
                format!("Duplicate stage name \"{name}\", stage names should be unique"),
            );
        }
    }
}

/// `validateCommandCasing`: every keyword in the case of the majority (FROM lines and stage commands;
/// the ARGs before the first FROM are not counted). A tie counts as upper case.
fn casing(df: &Dockerfile, lint: &mut Linter) {
    let keywords = || {
        df.stages.iter().flat_map(|s| {
            std::iter::once((written_keyword(&s.original), s.span))
                .chain(s.commands.iter().map(|c| (written_keyword(&c.original), c.span)))
        })
    };
    let (mut lower, mut upper) = (0, 0);
    for (kw, _) in keywords() {
        if kw == kw.to_lowercase() {
            lower += 1;
        } else if kw == kw.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for (kw, span) in keywords() {
        let correct = if majority_lower && kw.to_lowercase() != kw {
            "lowercase"
        } else if !majority_lower && kw.to_uppercase() != kw {
            "uppercase"
        } else {
            continue;
        };
        lint.report(
            &CONSISTENT_INSTRUCTION_CASING,
            span,
            format!("Command '{kw}' should match the case of the command majority ({correct})"),
        );
    }
}
