//! `/metrics` in the Prometheus text format (0.0.4).
//!
//! The values live in vigil's own counters (per node, the outbox, reloads), read at
//! scrape time and written here: a node removed by a reload simply stops appearing.
//!
//! | metric | labels |
//! |---|---|
//! | `vigil_node_events_in_total`, `vigil_node_events_out_total`, `vigil_node_errors_total`, `vigil_node_restarts_total` | `node`, `pipeline`, `role`, `kind` |
//! | `vigil_node_dropped_total` (set aside on purpose) | `node`, `pipeline`, `role`, `kind`, `reason` (`late`, `evicted`, `unmeasured`, `stale`, `duplicate`, `cooldown`, `where_error`, `min_severity`, `already_notified`, `silenced`, `inhibited`) |
//! | `vigil_node_state` (1 for the node's state) | `node`, `pipeline`, `role`, `kind`, `state` (`running`, `restarting`, `failed`) |
//! | `vigil_outbox_messages` | `state` (`gathering`, `pending`, `sending`, `sent`, `dead`) |
//! | `vigil_deliveries` (alerts per delivering sink) | `sink`, `state` |
//! | `vigil_alerts` (alerts in the history) | `severity` |
//! | `vigil_pce_requests_total`, `vigil_pce_request_duration_seconds` (histogram) | `connection`, `endpoint`, `method`, `status` |
//! | `vigil_pce_traffic_slices_total`, `…_failed_queries_total`, `…_truncated_queries_total` | `connection` |
//! | `vigil_pce_traffic_rows_new_total`, `…_rows_continued_total`, `…_rows_repeated_total`, `…_flows_expired_total`, `…_flows_evicted_total` | `connection` |
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

/// The labels of a node's series: `node`, `pipeline`, `role`, `kind`.
fn node_labels(n: &NodeStatus) -> String {
    format!(
        "node=\"{}\",pipeline=\"{}\",role=\"{}\",kind=\"{}\"",
        label(&n.id),
        label(&n.pipeline),
        n.role,
        label(&n.kind)
    )
}

/// A per-node counter family: name, help, and how to read it.
type Family = (&'static str, &'static str, fn(&NodeStatus) -> u64);

/// One PCE connection's name, request statistics, and traffic counters when a
/// `pce_traffic` source reads it.
pub(super) type PceCounts = (
    String,
    Vec<crate::pce::client::EndpointStats>,
    Option<crate::sources::pce_traffic::TrafficCounters>,
);

/// A per-connection traffic counter: name, help, and how to read it.
type TrafficFamily = (
    &'static str,
    &'static str,
    fn(&crate::sources::pce_traffic::TrafficCounters) -> u64,
);

/// What `/metrics` reports besides the nodes.
pub(super) struct Counts {
    /// Outbox messages by state.
    pub(super) outbox: Vec<(OutboxState, u64)>,
    /// Alerts by sink and the state of their message.
    pub(super) deliveries: Vec<(String, OutboxState, u64)>,
    /// Alerts in the history by severity.
    pub(super) alerts: Vec<(String, u64)>,
    /// Reloads, and failed ones.
    pub(super) reloads: (u64, u64),
    /// Per PCE connection: its requests, and its traffic counters when a `pce_traffic`
    /// source reads it.
    pub(super) pce: Vec<PceCounts>,
}

/// The exposition of `nodes` and `counts`.
pub(super) fn render(nodes: &[NodeStatus], counts: &Counts) -> String {
    let (outbox, (reloads, failures)) = (&counts.outbox, counts.reloads);
    let mut out = String::new();
    let families: [Family; 4] = [
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
        (
            "vigil_node_restarts_total",
            "Times a node was started again after it failed.",
            |n| n.restarts,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for n in nodes {
            let _ = writeln!(out, "{name}{{{}}} {}", node_labels(n), value(n));
        }
    }
    let _ = writeln!(
        out,
        "# HELP vigil_node_dropped_total What a node set aside on purpose, by reason (late: older than its window behind the watermark; evicted: a group key pushed out by max_keys; unmeasured, stale, duplicate: flows bandwidth could not measure; cooldown: suppressed by a cooldown; where_error: a where: that failed; min_severity, already_notified, silenced, inhibited: alerts a delivering sink did not send)."
    );
    let _ = writeln!(out, "# TYPE vigil_node_dropped_total counter");
    for n in nodes {
        for (reason, count) in &n.dropped {
            let _ = writeln!(
                out,
                "vigil_node_dropped_total{{{},reason=\"{reason}\"}} {count}",
                node_labels(n)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vigil_node_state 1 for the state a node is in (running, restarting: it failed and waits to start again, failed: it failed too often and its pipeline is stopped), 0 for the others."
    );
    let _ = writeln!(out, "# TYPE vigil_node_state gauge");
    for n in nodes {
        for state in crate::runtime::NodeState::ALL {
            let _ = writeln!(
                out,
                "vigil_node_state{{{},state=\"{}\"}} {}",
                node_labels(n),
                state.as_str(),
                u8::from(n.state == state)
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
        OutboxState::Sending,
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
    let _ = writeln!(
        out,
        "# HELP vigil_deliveries Alerts each delivering sink holds, by the state of their message (sent, pending, gathering, dead)."
    );
    let _ = writeln!(out, "# TYPE vigil_deliveries gauge");
    for (sink, state, n) in &counts.deliveries {
        let _ = writeln!(
            out,
            "vigil_deliveries{{sink=\"{}\",state=\"{}\"}} {n}",
            label(sink),
            state.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP vigil_alerts Alerts in the history, by severity."
    );
    let _ = writeln!(out, "# TYPE vigil_alerts gauge");
    for severity in ["info", "low", "medium", "high", "critical"] {
        let n = counts
            .alerts
            .iter()
            .find(|(s, _)| s == severity)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "vigil_alerts{{severity=\"{severity}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP vigil_pce_requests_total Requests to a PCE, by endpoint, method and status (`error`: no answer)."
    );
    let _ = writeln!(out, "# TYPE vigil_pce_requests_total counter");
    for (conn, stats, _) in &counts.pce {
        for e in stats {
            let _ = writeln!(
                out,
                "vigil_pce_requests_total{{connection=\"{}\",endpoint=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                label(conn),
                label(&e.endpoint),
                label(&e.method),
                label(&e.status),
                e.count
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP vigil_pce_request_duration_seconds How long requests to a PCE took, by endpoint and status."
    );
    let _ = writeln!(out, "# TYPE vigil_pce_request_duration_seconds histogram");
    for (conn, stats, _) in &counts.pce {
        for e in stats {
            let labels = format!(
                "connection=\"{}\",endpoint=\"{}\",method=\"{}\",status=\"{}\"",
                label(conn),
                label(&e.endpoint),
                label(&e.method),
                label(&e.status)
            );
            for (bound, n) in crate::pce::client::BUCKETS.iter().zip(e.buckets) {
                let _ = writeln!(
                    out,
                    "vigil_pce_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "vigil_pce_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                e.count
            );
            let _ = writeln!(
                out,
                "vigil_pce_request_duration_seconds_sum{{{labels}}} {}",
                e.seconds
            );
            let _ = writeln!(
                out,
                "vigil_pce_request_duration_seconds_count{{{labels}}} {}",
                e.count
            );
        }
    }
    let traffic: [TrafficFamily; 8] = [
        (
            "vigil_pce_traffic_slices_total",
            "Traffic time slices queried, per PCE connection.",
            |q| q.slices,
        ),
        (
            "vigil_pce_traffic_failed_queries_total",
            "Traffic queries that failed (retried next cycle), per PCE connection.",
            |q| q.failed_queries,
        ),
        (
            "vigil_pce_traffic_truncated_queries_total",
            "Traffic queries whose results were cut at max_results, per PCE connection.",
            |q| q.truncated,
        ),
        (
            "vigil_pce_traffic_rows_new_total",
            "Traffic rows of flows not seen before (counted whole), per PCE connection.",
            |q| q.rows_new,
        ),
        (
            "vigil_pce_traffic_rows_continued_total",
            "Traffic rows of flows seen before (counted as the increase), per PCE connection.",
            |q| q.rows_continued,
        ),
        (
            "vigil_pce_traffic_rows_repeated_total",
            "Traffic rows already counted (not handed on), per PCE connection.",
            |q| q.rows_repeated,
        ),
        (
            "vigil_pce_traffic_flows_expired_total",
            "Flows forgotten after flow_memory without a sighting, per PCE connection.",
            |q| q.flows_expired,
        ),
        (
            "vigil_pce_traffic_flows_evicted_total",
            "Flows forgotten because max_flows were remembered, per PCE connection.",
            |q| q.flows_evicted,
        ),
    ];
    for (name, help, pick) in traffic {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (conn, _, q) in &counts.pce {
            if let Some(q) = q {
                let v = pick(q);
                let _ = writeln!(out, "{name}{{connection=\"{}\"}} {v}", label(conn));
            }
        }
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

    #[test]
    fn traffic_counters_are_exported_per_connection() {
        let traffic = crate::sources::pce_traffic::TrafficCounters {
            slices: 4,
            rows_new: 10,
            rows_continued: 7,
            rows_repeated: 3,
            flows_expired: 2,
            flows_evicted: 1,
            ..Default::default()
        };
        let counts = Counts {
            outbox: Vec::new(),
            deliveries: Vec::new(),
            alerts: Vec::new(),
            reloads: (0, 0),
            pce: vec![
                ("lab".to_string(), Vec::new(), Some(traffic)),
                ("events_only".to_string(), Vec::new(), None),
            ],
        };
        let text = render(&[], &counts);
        for line in [
            "vigil_pce_traffic_slices_total{connection=\"lab\"} 4",
            "vigil_pce_traffic_rows_new_total{connection=\"lab\"} 10",
            "vigil_pce_traffic_rows_continued_total{connection=\"lab\"} 7",
            "vigil_pce_traffic_rows_repeated_total{connection=\"lab\"} 3",
            "vigil_pce_traffic_flows_expired_total{connection=\"lab\"} 2",
            "vigil_pce_traffic_flows_evicted_total{connection=\"lab\"} 1",
            "# TYPE vigil_pce_traffic_rows_repeated_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("events_only\"}"), "{text}");
    }
}
