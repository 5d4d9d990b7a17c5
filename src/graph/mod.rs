//! The DAG of all pipelines: nodes, edges, checks, and drawings (DOT, Mermaid).

mod diff;

use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};

pub use diff::{Diff, DiffNode};

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// Produces events.
    Source,
    /// Transforms events.
    Stage,
    /// Delivers events.
    Sink,
}

impl NodeRole {
    /// `source`, `stage` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Source => "source",
            NodeRole::Stage => "stage",
            NodeRole::Sink => "sink",
        }
    }
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct GraphNode {
    /// `pipeline.node`.
    pub id: Arc<str>,
    /// Index of the pipeline in [`Graph::pipelines`].
    pub pipeline: usize,
    /// The node's name within its pipeline.
    pub name: String,
    /// Source, stage or sink.
    pub role: NodeRole,
    /// The component kind (`file`, `filter`, ...).
    pub kind: String,
    /// The nodes it reads, as indices into [`Graph::nodes`].
    pub inputs: Vec<usize>,
}

/// Every node of every pipeline.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The pipelines' names, in file order.
    pub pipelines: Vec<Arc<str>>,
    /// Sources, then stages, then sinks, pipeline by pipeline.
    pub nodes: Vec<GraphNode>,
}

impl Graph {
    /// Graphviz DOT, one cluster per pipeline.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph vigil {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for (pi, name) in self.pipelines.iter().enumerate() {
            let _ = writeln!(out, "  subgraph \"cluster_{}\" {{", dot_escape(name));
            let _ = writeln!(out, "    label=\"{}\";", dot_escape(name));
            for n in self.nodes.iter().filter(|n| n.pipeline == pi) {
                let shape = match n.role {
                    NodeRole::Source => "invhouse",
                    NodeRole::Stage => "box",
                    NodeRole::Sink => "house",
                };
                let _ = writeln!(
                    out,
                    "    \"{}\" [label=\"{}\\n({})\", shape={}];",
                    dot_escape(&n.id),
                    dot_escape(&n.name),
                    dot_escape(&n.kind),
                    shape
                );
            }
            out.push_str("  }\n");
        }
        for n in &self.nodes {
            for i in &n.inputs {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\";",
                    dot_escape(&self.nodes[*i].id),
                    dot_escape(&n.id)
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart, one subgraph per pipeline.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let mid = |i: usize| format!("n{i}");
        for (pi, name) in self.pipelines.iter().enumerate() {
            let _ = writeln!(out, "  subgraph p{pi}[\"{}\"]", mermaid_escape(name));
            for (i, n) in self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.pipeline == pi)
            {
                let label = format!(
                    "{}<br/>({})",
                    mermaid_escape(&n.name),
                    mermaid_escape(&n.kind)
                );
                let shape = match n.role {
                    NodeRole::Source => format!("{}[/\"{label}\"/]", mid(i)),
                    NodeRole::Stage => format!("{}[\"{label}\"]", mid(i)),
                    NodeRole::Sink => format!("{}[\\\"{label}\"\\]", mid(i)),
                };
                let _ = writeln!(out, "    {shape}");
            }
            out.push_str("  end\n");
        }
        for (to, n) in self.nodes.iter().enumerate() {
            for from in &n.inputs {
                let _ = writeln!(out, "  {} --> {}", mid(*from), mid(to));
            }
        }
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// Structural facts about a wiring, for validation: which nodes sit on cycles, and which
/// nodes some source reaches. `edges` are `(from, to)` pairs over `0..n`.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Each cycle as its node indices (a self-loop is a cycle of one).
    pub cycles: Vec<Vec<usize>>,
    /// `reached[i]`: some node in `roots` leads to node `i`.
    pub reached: Vec<bool>,
}

/// Finds cycles and what `roots` reach.
pub fn analyse(n: usize, edges: &[(usize, usize)], roots: &[usize]) -> Analysis {
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n, edges.len());
    let idx: Vec<NodeIndex> = (0..n).map(|_| g.add_node(())).collect();
    for (a, b) in edges {
        g.add_edge(idx[*a], idx[*b], ());
    }
    let mut cycles = Vec::new();
    for scc in tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && g.edges(scc[0]).any(|e| e.target() == scc[0]);
        if scc.len() > 1 || self_loop {
            let mut members: Vec<usize> = scc.iter().map(|i| i.index()).collect();
            members.sort_unstable();
            cycles.push(members);
        }
    }
    cycles.sort();
    let mut reached = vec![false; n];
    for r in roots {
        let mut dfs = Dfs::new(&g, idx[*r]);
        while let Some(v) = dfs.next(&g) {
            reached[v.index()] = true;
        }
    }
    Analysis { cycles, reached }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_and_reach() {
        // 0 -> 1 -> 2, 3 <-> 4 -> 5, 6 -> 6
        let a = analyse(7, &[(0, 1), (1, 2), (3, 4), (4, 3), (4, 5), (6, 6)], &[0]);
        assert_eq!(a.cycles, vec![vec![3, 4], vec![6]]);
        assert_eq!(
            a.reached,
            vec![true, true, true, false, false, false, false]
        );
    }
}
