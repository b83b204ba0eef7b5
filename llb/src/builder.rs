//! Incremental construction of a [`Definition`], as the frontend converts instructions.

use std::collections::BTreeMap;

use crate::validate::{check_edges, check_op};
use crate::{Definition, DefinitionError, Digest, Metadata, Op, Output, Platform, SourceOp, Vertex};

/// Collects vertices bottom-up: a vertex can only be added once its inputs are, so the result is
/// acyclic by construction. Identical vertices (same digest) are stored once and their metadata merged
/// with [`Metadata::merge`].
#[derive(Debug, Clone, Default)]
pub struct DefinitionBuilder {
    vertices: BTreeMap<Digest, Vertex>,
    metadata: BTreeMap<Digest, Metadata>,
}

impl DefinitionBuilder {
    pub fn new() -> DefinitionBuilder {
        DefinitionBuilder::default()
    }

    /// Adds a vertex and returns its output 0 (use [`Output::with_index`] for others). Fails if the op
    /// is malformed or an input is unknown or out of range.
    pub fn add(&mut self, vertex: Vertex, metadata: Metadata) -> Result<Output, DefinitionError> {
        let digest = vertex.digest();
        check_op(&vertex).map_err(|problem| DefinitionError::InvalidOp { vertex: digest, problem })?;
        check_edges(digest, &vertex, &self.vertices)?;
        self.vertices.entry(digest).or_insert(vertex);
        if !metadata.is_empty() {
            self.metadata.entry(digest).or_default().merge(metadata);
        }
        Ok(Output::new(digest, 0))
    }

    /// Adds an op with the given inputs.
    pub fn add_op(
        &mut self,
        op: Op,
        inputs: &[Output],
        platform: Option<Platform>,
        metadata: Metadata,
    ) -> Result<Output, DefinitionError> {
        let inputs = inputs.iter().map(|&o| o.into()).collect();
        self.add(Vertex::new(op, inputs, platform), metadata)
    }

    /// Adds a source op.
    pub fn source(
        &mut self,
        source: SourceOp,
        platform: Option<Platform>,
        metadata: Metadata,
    ) -> Result<Output, DefinitionError> {
        self.add(Vertex::new(Op::Source(source), Vec::new(), platform), metadata)
    }

    pub fn vertex(&self, digest: &Digest) -> Option<&Vertex> {
        self.vertices.get(digest)
    }

    /// Metadata of an added vertex, created empty on first use.
    pub fn metadata_mut(&mut self, digest: &Digest) -> Option<&mut Metadata> {
        if !self.vertices.contains_key(digest) {
            return None;
        }
        Some(self.metadata.entry(*digest).or_default())
    }

    pub fn len(&self) -> usize {
        self.vertices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }

    /// The definition of `root`: only vertices reachable from it are kept (as BuildKit's
    /// `llb.State.Marshal`). With `None`, everything added is kept and nothing is built.
    pub fn finish(self, root: Option<Output>) -> Result<Definition, DefinitionError> {
        let mut metadata = self.metadata;
        metadata.retain(|_, m| !m.is_empty());
        let def = Definition { vertices: self.vertices, metadata, root }.pruned();
        def.validate()?;
        Ok(def)
    }
}
