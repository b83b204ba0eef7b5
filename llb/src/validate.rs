//! Structural checks of vertices and definitions. Every error names the vertex digest.

use std::collections::{BTreeMap, BTreeSet};

use crate::exec::MountKind;
use crate::file::FileActionKind;
use crate::{Definition, Digest, Op, Vertex};

/// A definition or vertex that the solver must not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("vertex {vertex}: input {input} is not in the definition")]
    MissingInput { vertex: Digest, input: Digest },
    #[error("vertex {vertex}: input {position} uses output {index} of {input}, which has {available} outputs")]
    InputOutputOutOfRange { vertex: Digest, position: usize, input: Digest, index: usize, available: usize },
    #[error("root {0} is not in the definition")]
    MissingRoot(Digest),
    #[error("root uses output {index} of {digest}, which has {available} outputs")]
    RootOutputOutOfRange { digest: Digest, index: usize, available: usize },
    #[error("cycle through vertex {0}")]
    Cycle(Digest),
    #[error("vertex stored under {key} has digest {actual}")]
    DigestMismatch { key: Digest, actual: Digest },
    #[error("metadata for {0} has no vertex")]
    OrphanMetadata(Digest),
    #[error("vertex {vertex}: {problem}")]
    InvalidOp { vertex: Digest, problem: OpProblem },
    #[error("invalid definition json: {0}")]
    Json(String),
}

/// What is wrong inside one op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpProblem {
    #[error("source ops take no inputs, got {0}")]
    SourceWithInputs(usize),
    #[error("image reference {0:?} is not normalised (expected {1:?})")]
    UnnormalizedReference(String, String),
    #[error("image reference {0:?} is invalid: {1}")]
    BadReference(String, crate::ReferenceError),
    #[error("exec has no arguments")]
    NoArgs,
    #[error("exec has no mounts (mount 0 is the root filesystem)")]
    NoMounts,
    #[error("mount 0 must be a bind mount at \"/\", got {0:?}")]
    BadRootfs(String),
    #[error("mount {mount} destination {dest:?} is not an absolute path")]
    RelativeMountDest { mount: usize, dest: String },
    #[error("mount {mount} uses input {input} but the vertex has {inputs} inputs")]
    MountInput { mount: usize, input: usize, inputs: usize },
    #[error("{kind} mount {mount} cannot take an input")]
    MountTakesNoInput { mount: usize, kind: &'static str },
    #[error("mount {mount} is read-only or not a bind mount and cannot have an output")]
    MountOutputNotAllowed { mount: usize },
    #[error("output {0} is produced twice")]
    DuplicateOutput(usize),
    #[error("output {0} is missing: outputs must be numbered 0..n")]
    OutputGap(usize),
    #[error("file op has no actions")]
    NoActions,
    #[error("action {action}: {field} index {index} is out of range (must be below {limit})")]
    ActionIndex { action: usize, field: &'static str, index: usize, limit: usize },
    #[error("action {0}: copy needs a secondary input to copy from")]
    CopyWithoutSource(usize),
    #[error("merge needs at least one input")]
    EmptyMerge,
    #[error("diff {field} index {index} is out of range (the vertex has {inputs} inputs)")]
    DiffIndex { field: &'static str, index: usize, inputs: usize },
}

fn check_outputs(outputs: impl Iterator<Item = usize>) -> Result<(), OpProblem> {
    let mut seen = BTreeSet::new();
    for o in outputs {
        if !seen.insert(o) {
            return Err(OpProblem::DuplicateOutput(o));
        }
    }
    match seen.iter().enumerate().find(|(i, o)| i != *o) {
        Some((i, _)) => Err(OpProblem::OutputGap(i)),
        None => Ok(()),
    }
}

fn kind_name(kind: &MountKind) -> &'static str {
    match kind {
        MountKind::Bind => "bind",
        MountKind::Cache { .. } => "cache",
        MountKind::Tmpfs { .. } => "tmpfs",
        MountKind::Secret(_) => "secret",
        MountKind::Ssh(_) => "ssh",
    }
}

/// Checks the indices inside one op against its own input list (not the graph).
pub(crate) fn check_op(v: &Vertex) -> Result<(), OpProblem> {
    let inputs = v.inputs.len();
    match &v.op {
        Op::Source(_) if inputs > 0 => Err(OpProblem::SourceWithInputs(inputs)),
        // A reference in another spelling would be a second vertex for the same image.
        Op::Source(crate::SourceOp::Image { reference, .. }) => match crate::normalize_reference(reference) {
            Ok(n) if n == *reference => Ok(()),
            Ok(n) => Err(OpProblem::UnnormalizedReference(reference.clone(), n)),
            Err(e) => Err(OpProblem::BadReference(reference.clone(), e)),
        },
        Op::Source(_) => Ok(()),
        Op::Exec(e) => {
            if e.meta.args.is_empty() {
                return Err(OpProblem::NoArgs);
            }
            let root = e.mounts.first().ok_or(OpProblem::NoMounts)?;
            if root.dest != "/" || root.kind != MountKind::Bind {
                return Err(OpProblem::BadRootfs(root.dest.clone()));
            }
            for (i, m) in e.mounts.iter().enumerate() {
                if !m.dest.starts_with('/') {
                    return Err(OpProblem::RelativeMountDest { mount: i, dest: m.dest.clone() });
                }
                if let Some(input) = m.input.filter(|&n| n >= inputs) {
                    return Err(OpProblem::MountInput { mount: i, input, inputs });
                }
                let takes_input = matches!(m.kind, MountKind::Bind | MountKind::Cache { .. });
                if m.input.is_some() && !takes_input {
                    return Err(OpProblem::MountTakesNoInput { mount: i, kind: kind_name(&m.kind) });
                }
                if m.output.is_some() && (m.readonly || m.kind != MountKind::Bind) {
                    return Err(OpProblem::MountOutputNotAllowed { mount: i });
                }
            }
            check_outputs(e.mounts.iter().filter_map(|m| m.output))
        }
        Op::File(f) => {
            if f.actions.is_empty() {
                return Err(OpProblem::NoActions);
            }
            for (i, a) in f.actions.iter().enumerate() {
                // Earlier actions only: an action cannot read its own or a later result.
                let limit = inputs + i;
                let mut indices = vec![("input", a.input), ("secondary input", a.secondary_input)];
                if let Some(owner) = a.action.owner() {
                    for opt in [&owner.user, &owner.group].into_iter().flatten() {
                        if let crate::UserOpt::ByName { input, .. } = opt {
                            indices.push(("owner lookup input", *input));
                        }
                    }
                }
                for (field, index) in indices {
                    if let Some(index) = index.filter(|&n| n >= limit) {
                        return Err(OpProblem::ActionIndex { action: i, field, index, limit });
                    }
                }
                if matches!(a.action, FileActionKind::Copy(_)) && a.secondary_input.is_none() {
                    return Err(OpProblem::CopyWithoutSource(i));
                }
            }
            check_outputs(f.actions.iter().filter_map(|a| a.output))
        }
        Op::Merge(_) if inputs == 0 => Err(OpProblem::EmptyMerge),
        Op::Merge(_) => Ok(()),
        Op::Diff(d) => {
            for (field, index) in [("lower", d.lower), ("upper", d.upper)] {
                if let Some(index) = index.filter(|&n| n >= inputs) {
                    return Err(OpProblem::DiffIndex { field, index, inputs });
                }
            }
            Ok(())
        }
    }
}

/// Checks one vertex's edges against the vertices known so far.
pub(crate) fn check_edges(
    digest: Digest,
    v: &Vertex,
    vertices: &BTreeMap<Digest, Vertex>,
) -> Result<(), DefinitionError> {
    for (position, input) in v.inputs.iter().enumerate() {
        let producer =
            vertices.get(&input.digest).ok_or(DefinitionError::MissingInput { vertex: digest, input: input.digest })?;
        let available = producer.num_outputs();
        if input.output_index >= available {
            return Err(DefinitionError::InputOutputOutOfRange {
                vertex: digest,
                position,
                input: input.digest,
                index: input.output_index,
                available,
            });
        }
    }
    Ok(())
}

impl Definition {
    /// Checks that every key is its vertex's digest, every op is well-formed, every input and the
    /// root exist with their output index in range, there is no cycle, and metadata belongs to a
    /// vertex.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        for (key, v) in &self.vertices {
            let actual = v.digest();
            if actual != *key {
                return Err(DefinitionError::DigestMismatch { key: *key, actual });
            }
            check_op(v).map_err(|problem| DefinitionError::InvalidOp { vertex: *key, problem })?;
            check_edges(*key, v, &self.vertices)?;
        }
        if let Some(root) = &self.root {
            let producer = self.vertices.get(&root.digest).ok_or(DefinitionError::MissingRoot(root.digest))?;
            let available = producer.num_outputs();
            if root.index >= available {
                return Err(DefinitionError::RootOutputOutOfRange {
                    digest: root.digest,
                    index: root.index,
                    available,
                });
            }
        }
        if let Some(orphan) = self.metadata.keys().find(|d| !self.vertices.contains_key(d)) {
            return Err(DefinitionError::OrphanMetadata(*orphan));
        }
        self.topological_order().map(|_| ())
    }
}
