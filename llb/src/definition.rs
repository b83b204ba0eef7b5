//! A complete build definition: vertices by digest, their metadata, and the output to build.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{DefinitionError, Digest, Metadata, Output, Vertex};

/// The graph a frontend hands to the solver.
///
/// JSON form (`to_json`): `{"vertices": {digest: vertex}, "metadata": {digest: metadata}, "root":
/// {"digest", "index"}}`, pretty printed, keys sorted. Vertices use the canonical field layout of
/// [`Vertex`], so re-hashing a parsed vertex gives back its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub vertices: BTreeMap<Digest, Vertex>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<Digest, Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Output>,
}

impl Definition {
    /// Pretty, stable JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| unreachable!("definition serialisation failed: {e}"))
    }

    /// Parses and validates (so every key is checked against its vertex's digest).
    pub fn from_json(json: &str) -> Result<Definition, DefinitionError> {
        let def: Definition = serde_json::from_str(json).map_err(|e| DefinitionError::Json(e.to_string()))?;
        def.validate()?;
        Ok(def)
    }

    /// Metadata of a vertex, if any was attached.
    pub fn metadata_of(&self, digest: &Digest) -> Option<&Metadata> {
        self.metadata.get(digest)
    }

    /// `root` and every vertex it depends on that is present in the definition.
    pub fn reachable_from(&self, root: &Digest) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![*root];
        while let Some(d) = stack.pop() {
            let Some(v) = self.vertices.get(&d) else { continue };
            if seen.insert(d) {
                stack.extend(v.inputs.iter().map(|i| i.digest));
            }
        }
        seen
    }

    /// A copy with only the vertices (and metadata) reachable from the root; unchanged without a root.
    pub fn pruned(&self) -> Definition {
        let Some(root) = self.root else { return self.clone() };
        self.pruned_to(&[root])
    }

    /// A copy with only the vertices (and metadata) reachable from any of `roots` (the roots of a
    /// multi-platform build, solved together); the root stays as it was.
    pub fn pruned_to(&self, roots: &[Output]) -> Definition {
        let mut keep = BTreeSet::new();
        for r in roots {
            keep.extend(self.reachable_from(&r.digest));
        }
        Definition {
            vertices: self.vertices.iter().filter(|(d, _)| keep.contains(d)).map(|(d, v)| (*d, v.clone())).collect(),
            metadata: self.metadata.iter().filter(|(d, _)| keep.contains(d)).map(|(d, m)| (*d, m.clone())).collect(),
            root: self.root,
        }
    }

    /// Every vertex after all of its inputs; ties broken by digest, so the order is deterministic.
    /// Inputs that are not in the definition are skipped (`validate` reports them).
    pub fn topological_order(&self) -> Result<Vec<Digest>, DefinitionError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<Digest, Mark> = BTreeMap::new();
        let mut order = Vec::with_capacity(self.vertices.len());
        for start in self.vertices.keys() {
            if marks.contains_key(start) {
                continue;
            }
            // Iterative DFS: (vertex, next input position).
            let mut stack = vec![(*start, 0usize)];
            marks.insert(*start, Mark::Visiting);
            while let Some((d, pos)) = stack.pop() {
                let inputs = &self.vertices[&d].inputs;
                if let Some(input) = inputs.get(pos) {
                    stack.push((d, pos + 1));
                    if !self.vertices.contains_key(&input.digest) {
                        continue;
                    }
                    match marks.get(&input.digest) {
                        Some(Mark::Visiting) => return Err(DefinitionError::Cycle(input.digest)),
                        Some(Mark::Done) => {}
                        None => {
                            marks.insert(input.digest, Mark::Visiting);
                            stack.push((input.digest, 0));
                        }
                    }
                } else {
                    marks.insert(d, Mark::Done);
                    order.push(d);
                }
            }
        }
        Ok(order)
    }
}
