//! Stage planning: expand FROM lines in the global scope, resolve stage references (FROM, COPY --from,
//! RUN --mount from=), pick the target, keep only the stages it reaches, reject cycles, and order the
//! rest so every stage comes after the stages it uses.

use std::collections::BTreeSet;

use llb::Platform;

use super::scope::GlobalScope;
use super::ConvertOptions;
use crate::diag::{suggest, Diagnostic, Span};
use crate::instructions::{mount_from, Dockerfile, Instruction, Stage};
use crate::shell::Lexer;

/// Where a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference, expanded (not yet normalised).
    Image(String),
    /// A `--build-context name=...` that replaces the base.
    Named(String),
}

/// What `COPY --from` / `RUN --mount from=` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FromRef {
    Stage(usize),
    Image(String),
    Named(String),
}

#[derive(Clone, Debug)]
pub(crate) struct StagePlan {
    pub base: Base,
    pub platform: Platform,
    /// True when FROM had `--platform`.
    pub platform_explicit: bool,
    pub deps: BTreeSet<usize>,
}

/// Resolve a `--from` word against stage names (case-insensitive), stage indices and named contexts.
pub(crate) fn resolve_from(
    df: &Dockerfile,
    opts: &ConvertOptions,
    word: &str,
    span: Span,
) -> Result<FromRef, Diagnostic> {
    let lower = word.to_ascii_lowercase();
    if opts.named_contexts.contains_key(&lower) {
        return Ok(FromRef::Named(lower));
    }
    if let Some(i) = df.stages.iter().position(|s| s.name.as_deref() == Some(lower.as_str())) {
        return Ok(FromRef::Stage(i));
    }
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
        return match word.parse::<usize>() {
            Ok(i) if i < df.stages.len() => Ok(FromRef::Stage(i)),
            _ => Err(Diagnostic::spanned(
                format!(
                    "invalid stage index {word}: the Dockerfile has {} stages (0 to {})",
                    df.stages.len(),
                    df.stages.len() - 1
                ),
                span,
            )),
        };
    }
    Ok(FromRef::Image(word.to_string()))
}

/// Plan every stage: expand FROM words and record dependencies.
pub(crate) fn plan(
    df: &Dockerfile,
    opts: &ConvertOptions,
    global: &GlobalScope,
    lexer: &Lexer,
) -> Result<Vec<StagePlan>, Diagnostic> {
    let mut plans: Vec<StagePlan> = Vec::with_capacity(df.stages.len());
    for (i, stage) in df.stages.iter().enumerate() {
        let expanded =
            lexer.process_word(&stage.base, global).map_err(|e| Diagnostic::spanned(e.to_string(), stage.span))?;
        // An undefined variable here is the UndefinedArgInFrom check's to report (crate::checks).
        let base_word = expanded.value;
        if base_word.is_empty() {
            return Err(Diagnostic::spanned(format!("base name ({}) should not be blank", stage.base), stage.span));
        }
        let lower = base_word.to_ascii_lowercase();
        let mut deps = BTreeSet::new();
        let base = if opts.named_contexts.contains_key(&lower) {
            Base::Named(lower)
        } else if let Some(j) = df.stages[..i].iter().position(|s| s.name.as_deref() == Some(lower.as_str())) {
            deps.insert(j);
            Base::Stage(j)
        } else if lower == "scratch" {
            Base::Scratch
        } else {
            Base::Image(base_word)
        };
        let (platform, platform_explicit) = match &stage.platform {
            Some(p) => {
                let word = lexer
                    .process_word(p, global)
                    .map_err(|e| Diagnostic::spanned(format!("--platform: {e}"), stage.span))?
                    .value;
                let platform = word
                    .parse::<Platform>()
                    .map_err(|e| Diagnostic::spanned(format!("FROM --platform: {e}"), stage.span))?;
                (platform, true)
            }
            None => match &base {
                Base::Stage(j) => (plans[*j].platform.clone(), plans[*j].platform_explicit),
                _ => (opts.target_platform.clone().unwrap_or_else(|| opts.build_platform.clone()), false),
            },
        };
        collect_from_deps(df, opts, stage, &mut deps)?;
        plans.push(StagePlan { base, platform, platform_explicit, deps });
    }
    Ok(plans)
}

fn collect_from_deps(
    df: &Dockerfile,
    opts: &ConvertOptions,
    stage: &Stage,
    deps: &mut BTreeSet<usize>,
) -> Result<(), Diagnostic> {
    for cmd in &stage.commands {
        let words: Vec<String> = match &cmd.instruction {
            Instruction::Copy(c) => c.from.iter().cloned().collect(),
            Instruction::Run(r) => {
                let mut out = Vec::new();
                for m in &r.mounts {
                    // `from` cannot use variables; the other values are expanded at dispatch.
                    let from = mount_from(m).map_err(|e| Diagnostic::spanned(format!("--mount={m}: {e}"), cmd.span))?;
                    out.extend(from);
                }
                out
            }
            _ => Vec::new(),
        };
        for w in words {
            if let FromRef::Stage(j) = resolve_from(df, opts, &w, cmd.span)? {
                deps.insert(j);
            }
        }
    }
    Ok(())
}

/// The target stage: `--target` by name (with a "did you mean"), else the last stage.
pub(crate) fn target_index(df: &Dockerfile, target: Option<&str>) -> Result<usize, Diagnostic> {
    let Some(target) = target else { return Ok(df.stages.len() - 1) };
    let lower = target.to_ascii_lowercase();
    if let Some(i) = df.stages.iter().position(|s| s.name.as_deref() == Some(lower.as_str())) {
        return Ok(i);
    }
    let names: Vec<&str> = df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let msg = format!("target stage \"{target}\" could not be found");
    let msg = match suggest(msg.clone(), &lower, names.iter().copied()) {
        m if m != msg => m,
        _ if names.is_empty() => format!("{msg}: the Dockerfile names no stages (use FROM image AS name)"),
        _ => format!("{msg} (stages: {})", names.join(", ")),
    };
    Err(Diagnostic::new(msg))
}

/// Stages reachable from `target`, dependencies first; a cycle is an error naming the stage.
pub(crate) fn order(df: &Dockerfile, plans: &[StagePlan], target: usize) -> Result<Vec<usize>, Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; plans.len()];
    let mut out = Vec::new();
    // Iterative DFS: (stage, next dependency position).
    let mut stack: Vec<(usize, usize)> = vec![(target, 0)];
    marks[target] = Mark::Active;
    while let Some(&mut (stage, ref mut pos)) = stack.last_mut() {
        let deps: Vec<usize> = plans[stage].deps.iter().copied().collect();
        if let Some(&dep) = deps.get(*pos) {
            *pos += 1;
            match marks[dep] {
                Mark::Done => {}
                Mark::Active => {
                    let s = &df.stages[dep];
                    let name = s.name.clone().unwrap_or_else(|| dep.to_string());
                    return Err(Diagnostic::spanned(format!("circular dependency detected on stage: {name}"), s.span));
                }
                Mark::New => {
                    marks[dep] = Mark::Active;
                    stack.push((dep, 0));
                }
            }
        } else {
            marks[stage] = Mark::Done;
            out.push(stage);
            stack.pop();
        }
    }
    Ok(out)
}
