//! The definition as a petgraph DAG: validated, pruned to what the root needs, in dependency order.

use std::collections::HashMap;

use llb::{Definition, Digest, Metadata, Vertex};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{step_label, SolveError};

/// The vertices a solve needs, edges from input to consumer.
pub(crate) struct Graph {
    /// Every needed vertex after its inputs.
    order: Vec<Digest>,
}

impl Graph {
    /// Validates `def` and loads the vertices reachable from its root.
    #[cfg(test)]
    pub(crate) fn load(def: &Definition) -> Result<Graph, SolveError> {
        let roots: Vec<llb::Output> = def.root.into_iter().collect();
        Graph::load_roots(def, &roots)
    }

    /// Validates `def` and loads the vertices reachable from any of `roots`.
    pub(crate) fn load_roots(def: &Definition, roots: &[llb::Output]) -> Result<Graph, SolveError> {
        def.validate()?;
        let mut dag = DiGraph::new();
        let mut nodes: HashMap<Digest, NodeIndex> = HashMap::new();
        let mut needed = std::collections::BTreeSet::new();
        for r in roots {
            needed.extend(def.reachable_from(&r.digest));
        }
        for d in &needed {
            nodes.insert(*d, dag.add_node(*d));
        }
        for d in &needed {
            for (pos, input) in def.vertices[d].inputs.iter().enumerate() {
                dag.add_edge(nodes[&input.digest], nodes[d], pos);
            }
        }
        let order = petgraph::algo::toposort(&dag, None)
            .map_err(|cycle| SolveError::Definition(llb::DefinitionError::Cycle(dag[cycle.node_id()])))?
            .into_iter()
            .map(|n| dag[n])
            .collect();
        Ok(Graph { order })
    }

    /// Every needed vertex after all of its inputs.
    pub(crate) fn order(&self) -> &[Digest] {
        &self.order
    }
}

/// What progress and errors call a vertex: its description, else a summary of the op.
pub(crate) fn vertex_name(v: &Vertex, meta: Option<&Metadata>) -> String {
    meta.and_then(|m| m.description.clone()).unwrap_or_else(|| v.summary())
}

/// The name with its Dockerfile location, for error messages.
pub(crate) fn vertex_label(v: &Vertex, meta: Option<&Metadata>) -> String {
    let locations = meta.map(|m| m.locations.as_slice()).unwrap_or(&[]);
    step_label(&vertex_name(v, meta), locations)
}

#[cfg(test)]
mod tests {
    use llb::{DefinitionBuilder, ExecOp, Op, SourceOp};

    use super::*;

    #[test]
    fn prunes_to_the_root_and_orders_inputs_first() {
        let mut b = DefinitionBuilder::new();
        let base = b.source(SourceOp::local("a"), None, Metadata::default()).unwrap();
        let other = b.source(SourceOp::local("unused"), None, Metadata::default()).unwrap();
        let run = b.add_op(Op::Exec(ExecOp::new(vec!["true".into()], Some(0))), &[base], None, Metadata::default());
        let run = run.unwrap();
        let def = b.finish(Some(run)).unwrap();
        let g = Graph::load(&def).unwrap();
        assert_eq!(g.order().len(), 2);
        assert_eq!(g.order(), &[base.digest, run.digest]);
        assert!(!g.order().contains(&other.digest));
    }

    #[test]
    fn no_root_is_an_empty_graph() {
        let g = Graph::load(&Definition::default()).unwrap();
        assert!(g.order().is_empty());
    }
}
