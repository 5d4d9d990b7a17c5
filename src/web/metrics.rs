//! `/metrics` in the Prometheus text format (0.0.4).
//!
//! The values live in vigil's own counters (per node, the outbox, reloads), read at
//! scrape time and written here: a node removed by a reload simply stops appearing.
//!
//! | metric | labels |
//! |---|---|
//! | `vigil_node_events_in_total`, `vigil_node_events_out_total`, `vigil_node_errors_total` | `node`, `pipeline`, `role`, `kind` |
//! | `vigil_outbox_messages` | `state` (`gathering`, `pending`, `sent`, `dead`) |
//! | `vigil_reloads_total`, `vigil_reload_failures_total` | |

use std::fmt::Write as _;

use crate::runtime::NodeStatus;
use crate::store::OutboxState;

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-node counter family: name, help, and how to read it.
type Family = (&'static str, &'static str, fn(&NodeStatus) -> u64);

/// The exposition of `nodes`, the outbox counts and the reload counters.
pub(super) fn render(
    nodes: &[NodeStatus],
    outbox: &[(OutboxState, u64)],
    reloads: u64,
    failures: u64,
) -> String {
    let mut out = String::new();
    let families: [Family; 3] = [
        (
            "vigil_node_events_in_total",
            "Events a node received.",
            |n| n.events_in,
        ),
        (
            "vigil_node_events_out_total",
            "Events a node handed on (sinks: written or delivered).",
            |n| n.events_out,
        ),
        (
            "vigil_node_errors_total",
            "Records or events a node counted as failed.",
            |n| n.errors,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for n in nodes {
            let _ = writeln!(
                out,
                "{name}{{node=\"{}\",pipeline=\"{}\",role=\"{}\",kind=\"{}\"}} {}",
                label(&n.id),
                label(&n.pipeline),
                n.role,
                label(&n.kind),
                value(n)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vigil_outbox_messages Messages in the delivery outbox, by state."
    );
    let _ = writeln!(out, "# TYPE vigil_outbox_messages gauge");
    for state in [
        OutboxState::Gathering,
        OutboxState::Pending,
        OutboxState::Sent,
        OutboxState::Dead,
    ] {
        let n = outbox
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "vigil_outbox_messages{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }
    for (name, help, v) in [
        (
            "vigil_reloads_total",
            "Reloads of the pipeline files, successful or not.",
            reloads,
        ),
        (
            "vigil_reload_failures_total",
            "Reloads that failed (the old pipelines kept running).",
            failures,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
