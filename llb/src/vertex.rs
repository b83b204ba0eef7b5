//! Vertices: one op with its input edges, and its digest.
//!
//! # Canonical form
//!
//! A vertex's canonical bytes are its compact JSON (`serde_json::to_vec`) with:
//! - fields in declaration order (`op`, `inputs`, `platform`; inside an op as declared in this crate),
//! - enums externally tagged for `op` (`{"exec": {...}}`) and tagged with `"type"` for mount kinds and
//!   file actions,
//! - maps as `BTreeMap` (sorted keys), no floats anywhere, integers in decimal,
//! - fields at their default value (`None`, `false`, `0` where marked, empty vectors and strings) left
//!   out, like protobuf's zero values, so a new optional field does not change existing digests,
//! - inputs as `{"digest": "sha256:...", "index": n}` in the vertex's input order (`index` left out
//!   when 0).
//!
//! The digest is `sha256` of these bytes. Because inputs carry their producers' digests, a digest
//! covers the whole sub-graph below it (a Merkle DAG). Any change of this format changes digests; the
//! golden test in `tests.rs` is there to notice it.

use serde::{Deserialize, Serialize};

use crate::serde_util::is_default;
use crate::{Digest, ExecOp, FileOp, Platform, SourceOp};

/// An input edge: output `output_index` of vertex `digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Input {
    pub digest: Digest,
    #[serde(rename = "index", default, skip_serializing_if = "is_default")]
    pub output_index: usize,
}

/// A handle to one output of a vertex, as the builder hands them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Output {
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "is_default")]
    pub index: usize,
}

impl Output {
    pub fn new(digest: Digest, index: usize) -> Output {
        Output { digest, index }
    }

    /// The same vertex's output `index`.
    pub fn with_index(self, index: usize) -> Output {
        Output { index, ..self }
    }
}

impl From<Output> for Input {
    fn from(o: Output) -> Input {
        Input { digest: o.digest, output_index: o.index }
    }
}

impl From<Input> for Output {
    fn from(i: Input) -> Output {
        Output { digest: i.digest, index: i.output_index }
    }
}

/// The vertex's inputs merged in order, later ones on top (`COPY --link`, BuildKit `MergeOp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MergeOp {}

/// The changes from `lower` to `upper` (BuildKit `DiffOp`); each is a vertex input index or `None` for
/// scratch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiffOp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<usize>,
}

// Vertices live once in a map and are cloned rarely; boxing ExecOp would only add noise to every
// constructor in the frontend.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Source(SourceOp),
    Exec(ExecOp),
    File(FileOp),
    Merge(MergeOp),
    Diff(DiffOp),
}

impl Op {
    /// Short kind name: `source`, `exec`, `file`, `merge`, `diff`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Source(_) => "source",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
            Op::Diff(_) => "diff",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vertex {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// The platform the op produces content for (BuildKit `Op.platform`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Vertex {
    pub fn new(op: Op, inputs: Vec<Input>, platform: Option<Platform>) -> Vertex {
        Vertex { op, inputs, platform }
    }

    /// The canonical bytes described in the module documentation.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("vertex serialisation failed: {e}"))
    }

    /// sha256 of the canonical bytes.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }

    /// A copy with the fields that do not decide the result blanked; the solver's definition key
    /// starts from it. Blanked, per op:
    /// - exec: `meta.proxy_env` (client proxy settings, not part of Docker's cache key);
    /// - image source: `resolve_mode` (how, not what: images are keyed by resolved manifest digest);
    /// - local source: `shared_key_hint`, `differ` (transfer tuning);
    /// - git source: `auth_token_secret`, `auth_header_secret`, `known_ssh_hosts`, `mount_ssh_sock`
    ///   (credentials: a commit is the same whoever fetched it);
    /// - http source: `auth_header_secret`.
    ///
    /// Inputs keep their definition digests; the solver replaces them with the inputs' cache keys.
    pub fn cache_identity(&self) -> Vertex {
        let mut v = self.clone();
        match &mut v.op {
            Op::Source(s) => s.blank_non_identity(),
            Op::Exec(e) => e.blank_non_identity(),
            Op::File(_) | Op::Merge(_) | Op::Diff(_) => {}
        }
        v
    }

    /// Number of outputs other vertices may take as inputs.
    pub fn num_outputs(&self) -> usize {
        match &self.op {
            Op::Exec(e) => e.num_outputs(),
            Op::File(f) => f.num_outputs(),
            Op::Source(_) | Op::Merge(_) | Op::Diff(_) => 1,
        }
    }

    /// One-line text for labels when there is no description: `exec sh -c make`, `source local://context`.
    pub fn summary(&self) -> String {
        match &self.op {
            Op::Source(s) => format!("source {}", s.identifier()),
            Op::Exec(e) => format!("exec {}", e.meta.args.join(" ")),
            Op::File(f) => {
                let parts: Vec<String> = f.actions.iter().map(|a| a.action.summary()).collect();
                format!("file {}", parts.join("; "))
            }
            Op::Merge(_) => format!("merge {} inputs", self.inputs.len()),
            Op::Diff(_) => "diff".to_string(),
        }
    }
}
