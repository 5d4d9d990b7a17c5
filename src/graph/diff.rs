//! What a reload changes: the running graph's nodes against the new configuration's, as
//! data. The runtime applies a [`Diff`]; deciding it touches nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One node as a reload compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffNode {
    /// `pipeline.node`.
    pub id: Arc<str>,
    /// Its pipeline's name.
    pub pipeline: Arc<str>,
    /// What identifies its configuration (its YAML after interpolation and the files it
    /// reads): equal fingerprints mean the node keeps running.
    pub fingerprint: String,
}

/// What a reload does to each node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Nodes only in the new graph, by id.
    pub added: Vec<Arc<str>>,
    /// Nodes only in the running graph, in its order.
    pub removed: Vec<Arc<str>>,
    /// Nodes in both whose configuration changed, or that are rebuilt with their
    /// pipeline (see [`Diff::between`]), in the running graph's order.
    pub changed: Vec<Arc<str>>,
    /// Nodes that keep running, in the running graph's order.
    pub unchanged: Vec<Arc<str>>,
}

impl Diff {
    /// The diff from `old` (the running nodes) to `new`. With `rebuild_all` (the settings
    /// changed) every node in both is changed. A pipeline in `stopped` (given up on after
    /// repeated failures) starts again whole when the reload touches any of its nodes:
    /// its unchanged nodes are then changed too.
    pub fn between(
        old: &[DiffNode],
        new: &[DiffNode],
        rebuild_all: bool,
        stopped: &HashSet<&str>,
    ) -> Diff {
        let new_by_id: HashMap<&str, &DiffNode> = new.iter().map(|n| (&*n.id, n)).collect();
        let old_ids: HashSet<&str> = old.iter().map(|n| &*n.id).collect();
        let mut diff = Diff::default();
        for n in old {
            match new_by_id.get(&*n.id) {
                None => diff.removed.push(n.id.clone()),
                Some(m) if rebuild_all || m.fingerprint != n.fingerprint => {
                    diff.changed.push(n.id.clone())
                }
                Some(_) => diff.unchanged.push(n.id.clone()),
            }
        }
        diff.added = new
            .iter()
            .filter(|n| !old_ids.contains(&*n.id))
            .map(|n| n.id.clone())
            .collect();
        diff.added.sort();
        let pipeline_of: HashMap<&str, &str> = old
            .iter()
            .chain(new)
            .map(|n| (&*n.id, &*n.pipeline))
            .collect();
        let touched: HashSet<&str> = diff
            .added
            .iter()
            .chain(&diff.removed)
            .chain(&diff.changed)
            .filter_map(|id| pipeline_of.get(&**id).copied())
            .collect();
        let (revive, keep): (Vec<_>, Vec<_>) = diff.unchanged.into_iter().partition(|id| {
            pipeline_of
                .get(&**id)
                .is_some_and(|p| touched.contains(p) && stopped.contains(p))
        });
        diff.unchanged = keep;
        diff.changed.extend(revive);
        diff
    }

    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The nodes to stop: removed, then changed.
    pub fn retired(&self) -> impl Iterator<Item = &Arc<str>> {
        self.removed.iter().chain(&self.changed)
    }

    /// The nodes to start: changed, then added.
    pub fn started(&self) -> impl Iterator<Item = &Arc<str>> {
        self.changed.iter().chain(&self.added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, fp: &str) -> DiffNode {
        let pipeline = id.split('.').next().unwrap_or_default();
        DiffNode {
            id: id.into(),
            pipeline: pipeline.into(),
            fingerprint: fp.into(),
        }
    }

    fn ids(v: &[Arc<str>]) -> Vec<&str> {
        v.iter().map(|s| &**s).collect()
    }

    /// Same fingerprint → unchanged; another → changed; only old → removed; only new →
    /// added (sorted by id); nothing to do is empty.
    #[test]
    fn nodes_are_added_removed_changed_or_kept() {
        let old = [node("a.src", "1"), node("a.f", "2"), node("b.out", "3")];
        let new = [
            node("c.z", "9"),
            node("a.src", "1"),
            node("a.f", "2b"),
            node("c.a", "8"),
        ];
        let d = Diff::between(&old, &new, false, &HashSet::new());
        assert_eq!(ids(&d.unchanged), ["a.src"]);
        assert_eq!(ids(&d.changed), ["a.f"]);
        assert_eq!(ids(&d.removed), ["b.out"]);
        assert_eq!(ids(&d.added), ["c.a", "c.z"]);
        assert_eq!(
            d.retired().map(|s| &**s).collect::<Vec<_>>(),
            ["b.out", "a.f"]
        );
        assert_eq!(
            d.started().map(|s| &**s).collect::<Vec<_>>(),
            ["a.f", "c.a", "c.z"]
        );
        assert!(!d.is_empty());
        assert!(Diff::between(&old, &old, false, &HashSet::new()).is_empty());
    }

    /// New settings rebuild every node that stays, whatever its fingerprint.
    #[test]
    fn new_settings_change_every_node() {
        let old = [node("a.src", "1"), node("a.out", "2")];
        let d = Diff::between(&old, &old, true, &HashSet::new());
        assert_eq!(ids(&d.changed), ["a.src", "a.out"]);
        assert!(d.unchanged.is_empty());
    }

    /// A pipeline stopped after failures starts again whole when the reload touches it;
    /// an untouched stopped pipeline, and a touched running one, keep their other nodes.
    #[test]
    fn a_touched_stopped_pipeline_is_rebuilt_whole() {
        let old = [
            node("a.src", "1"),
            node("a.out", "2"),
            node("b.src", "3"),
            node("b.out", "4"),
            node("c.src", "5"),
            node("c.out", "6"),
        ];
        let new = [
            node("a.src", "1"),
            node("a.out", "2-fixed"),
            node("b.src", "3"),
            node("b.out", "4"),
            node("c.src", "5"),
            node("c.out", "6-edited"),
        ];
        let stopped: HashSet<&str> = ["a", "b"].into();
        let d = Diff::between(&old, &new, false, &stopped);
        assert_eq!(ids(&d.changed), ["a.out", "c.out", "a.src"]);
        assert_eq!(ids(&d.unchanged), ["b.src", "b.out", "c.src"]);
    }

    /// A node moved to another pipeline is a new node (its id changed); removing the last
    /// node of a stopped pipeline touches it too.
    #[test]
    fn ids_not_names_tell_nodes_apart() {
        let old = [node("a.f", "1"), node("a.src", "0")];
        let new = [node("b.f", "1"), node("a.src", "0")];
        let stopped: HashSet<&str> = ["a"].into();
        let d = Diff::between(&old, &new, false, &stopped);
        assert_eq!(ids(&d.removed), ["a.f"]);
        assert_eq!(ids(&d.added), ["b.f"]);
        assert_eq!(ids(&d.changed), ["a.src"], "a was touched by the removal");
    }
}
