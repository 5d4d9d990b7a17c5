//! `/metrics` in the Prometheus text format (0.0.4), encoded by `prometheus-client`.
//!
//! The values live in vigil's own counters (per node, the outbox, reloads, the PCE clients)
//! and, for the `process_*` metrics, in `/proc` ([`process`]). Each scrape reads them into a
//! [`Snapshot`], which a fresh `Registry` holds as its one `Collector` and encodes: nothing
//! is kept between scrapes, so a node removed by a reload simply stops appearing. Counters
//! are registered without `_total`; the encoder adds it.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vigil_node_events_in_total`, `vigil_node_events_out_total`, `vigil_node_restarts_total` | counter | `node`, `pipeline`, `role`, `kind` |
//! | `vigil_node_errors_total` (what failed) | counter | `node`, `pipeline`, `role`, `kind`, `reason` ([`ErrorReason`](crate::node::internal_event::ErrorReason): `malformed`, `events_failed`, `not_encoded`, `checkpoint_not_stored`, `read_failed`, `not_delivered`, `visible_late`, `internal_missed`, `script`, `recipients_unknown`, `not_stored`, `undeliverable`, `given_up`, `unknown_ip_list`, `unknown_type`, `command_exited`) |
//! | `vigil_node_dropped_total` (set aside on purpose) | counter | `node`, `pipeline`, `role`, `kind`, `reason` ([`DropReason`](crate::node::internal_event::DropReason): `late`, `evicted`, `unmeasured`, `stale`, `duplicate`, `cooldown`, `where_error`, `min_severity`, `already_notified`, `silenced`, `inhibited`, `refused`, `rejected_rotated`, `snapshot_too_large`, `peer_not_allowed`, `connection_limit`, `pipeline_full`, `allow_listed`, `max_bans`) |
//! | `vigil_node_state` (1 for the node's state) | gauge | `node`, `pipeline`, `role`, `kind`, `state` (`running`, `restarting`, `failed`) |
//! | `vigil_outbox_messages` | gauge | `state` (`gathering`, `pending`, `sending`, `sent`, `dead`) |
//! | `vigil_deliveries` (alerts per delivering sink) | gauge | `sink`, `state` |
//! | `vigil_alerts` (alerts in the history) | gauge | `severity` |
//! | `vigil_pce_requests_total` | counter | `connection`, `endpoint`, `method`, `status` |
//! | `vigil_pce_request_duration_seconds` (buckets: [`BUCKETS`](crate::pce::client::BUCKETS)) | histogram | `connection`, `endpoint`, `method`, `status` |
//! | `vigil_pce_traffic_slices_total`, `…_failed_queries_total`, `…_truncated_queries_total` | counter | `connection` |
//! | `vigil_pce_traffic_rows_new_total`, `…_rows_continued_total`, `…_rows_repeated_total`, `…_flows_expired_total`, `…_flows_evicted_total` | counter | `connection` |
//! | `vigil_store_transactions_total`, `vigil_store_writes_total`, `vigil_store_write_failures_total`, `vigil_store_transaction_failures_total`, `vigil_store_queue_full_total` | counter | |
//! | `vigil_store_writes_queued` | gauge | |
//! | `vigil_reloads_total`, `vigil_reload_failures_total` | counter | |
//! | `vigil_web_connections_total`, `vigil_web_accept_errors_total`, `vigil_web_panics_total` | counter | |
//! | `vigil_web_connections_open` | gauge | |
//! | `vigil_web_refused_total` (connections and requests the web server refused or cut off) | counter | `reason` (`max_connections`, `header_timeout`, `idle_timeout`, `host`, `origin`, `token`, `body_too_large`, `request_timeout`) |
//! | `process_cpu_seconds_total` | counter | |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | gauge | |
//!
//! The `process_*` metrics are there on Linux only; one that could not be read is left out.

mod process;

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::pce::client::{BUCKETS, EndpointStats};
use crate::runtime::{NodeState, NodeStatus};
use crate::sources::pce_traffic::TrafficCounters;
use crate::store::OutboxState;

pub(super) use process::Process;
pub(super) use prometheus_text::CONTENT_TYPE;

/// One PCE connection's name, request statistics, and traffic counters when a
/// `pce_traffic` source reads it.
pub(super) type PceCounts = (String, Vec<EndpointStats>, Option<TrafficCounters>);

/// What `/metrics` reports besides the nodes.
#[derive(Debug)]
pub(super) struct Counts {
    /// Outbox messages by state.
    pub(super) outbox: Vec<(OutboxState, u64)>,
    /// Alerts by sink and the state of their message.
    pub(super) deliveries: Vec<(String, OutboxState, u64)>,
    /// Alerts in the history by severity.
    pub(super) alerts: Vec<(String, u64)>,
    /// Reloads, and failed ones.
    pub(super) reloads: (u64, u64),
    /// What the store's writing thread did.
    pub(super) writer: crate::store::writer::WriterCounts,
    /// Per PCE connection: its requests, and its traffic counters when a `pce_traffic`
    /// source reads it.
    pub(super) pce: Vec<PceCounts>,
    /// What the web server accepted, refused and cut off.
    pub(super) web: super::stats::WebCounts,
}

/// Everything one scrape reports, read at scrape time.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// The nodes of the running pipelines.
    pub(super) nodes: Vec<NodeStatus>,
    /// The store's and the PCE connections' counts, and the reloads.
    pub(super) counts: Counts,
    /// What the process uses.
    pub(super) process: Process,
}

/// The exposition of `snapshot`.
pub(super) fn render(snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A series' labels, in the order they are written.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A per-node counter family: name (without `_total`), help, and how to read it.
type NodeCounter = (&'static str, &'static str, fn(&NodeStatus) -> u64);

/// A per-connection traffic counter family: name (without `_total`), help, and how to
/// read it.
type TrafficCounter = (&'static str, &'static str, fn(&TrafficCounters) -> u64);

const NODE_COUNTERS: [NodeCounter; 3] = [
    ("vigil_node_events_in", "Events a node received.", |n| {
        n.events_in
    }),
    (
        "vigil_node_events_out",
        "Events a node handed on (sinks: written or delivered).",
        |n| n.events_out,
    ),
    (
        "vigil_node_restarts",
        "Times a node was started again after it failed.",
        |n| n.restarts,
    ),
];

const TRAFFIC_COUNTERS: [TrafficCounter; 8] = [
    (
        "vigil_pce_traffic_slices",
        "Traffic time slices queried, per PCE connection.",
        |q| q.slices,
    ),
    (
        "vigil_pce_traffic_failed_queries",
        "Traffic queries that failed (their slice is retried a minute later, backing off up to the interval), per PCE connection.",
        |q| q.failed_queries,
    ),
    (
        "vigil_pce_traffic_truncated_queries",
        "Traffic queries whose results were cut at max_results, per PCE connection.",
        |q| q.truncated,
    ),
    (
        "vigil_pce_traffic_rows_new",
        "Traffic rows of flows not seen before (counted whole), per PCE connection.",
        |q| q.rows_new,
    ),
    (
        "vigil_pce_traffic_rows_continued",
        "Traffic rows of flows seen before (counted as the increase), per PCE connection.",
        |q| q.rows_continued,
    ),
    (
        "vigil_pce_traffic_rows_repeated",
        "Traffic rows already counted (not handed on), per PCE connection.",
        |q| q.rows_repeated,
    ),
    (
        "vigil_pce_traffic_flows_expired",
        "Flows forgotten after flow_memory without a sighting, per PCE connection.",
        |q| q.flows_expired,
    ),
    (
        "vigil_pce_traffic_flows_evicted",
        "Flows forgotten because max_flows were remembered, per PCE connection.",
        |q| q.flows_evicted,
    ),
];

const DROPPED_HELP: &str = "What a node set aside on purpose, by reason (late: older than its window behind the watermark, or for a window already alerted; evicted: a group key (top_n: a held event) pushed out by max_keys (max_events); unmeasured: a flow without bytes, an event without a number to sum; stale, duplicate: a flow observation older than or the same as the flow's last, an alert report older than the one held, a repeat within dedupe's window; cooldown: suppressed by a cooldown; where_error: a where: that failed; min_severity, already_notified, silenced, inhibited: alerts a delivering sink did not send; refused: an alert a delivering sink had no room for; rejected_rotated: a file of set-aside records rotated away; snapshot_too_large: a stage state past snapshot_max_bytes, not saved; peer_not_allowed: a syslog sender outside allow_from; connection_limit: a syslog connection past connection_limit; pipeline_full: a syslog UDP datagram that found the pipeline full; allow_listed, max_bans: an address an nftables_ban sink did not ban, in its allow list or past max_bans).";

/// A node's counts by reason.
type ByReason = fn(&NodeStatus) -> &std::collections::BTreeMap<&'static str, u64>;

fn by_errors(n: &NodeStatus) -> &std::collections::BTreeMap<&'static str, u64> {
    &n.errors_by_reason
}

fn by_dropped(n: &NodeStatus) -> &std::collections::BTreeMap<&'static str, u64> {
    &n.dropped
}

const ERRORS_HELP: &str = "Records or events a node counted as failed, by reason (malformed: an input record not a JSON object or too long, set aside; events_failed: events a node could not handle; not_encoded: an event a sink could not encode; checkpoint_not_stored: a source position not stored; read_failed: a PCE read that failed; not_delivered: events a source handed on that were not all delivered, read again; visible_late: PCE events visible later than overlap; internal_missed: engine alerts the internal source missed; script: a script that failed; recipients_unknown: an alert without recipients; not_stored: alerts or notifications not stored; undeliverable: a notification refused for good; given_up: a notification given up after its retries; unknown_ip_list: an ip_list: operand naming no IP list of the PCE, once per name; unknown_type: a record of a type its decoder does not know, handed on; command_exited: the command of an exec source exited or could not start).";

const STATE_HELP: &str = "1 for the state a node is in (running, restarting: it failed and waits to start again, failed: it failed too often and its pipeline is stopped), 0 for the others.";

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        self.encode_nodes(e)?;
        self.encode_store(e)?;
        self.encode_pce(e)?;
        let (reloads, failures) = self.counts.reloads;
        single(
            e,
            "vigil_reloads",
            "Reloads of the pipeline files, successful or not.",
            Some(ConstCounter::new(reloads)),
        )?;
        single(
            e,
            "vigil_reload_failures",
            "Reloads that failed (the old pipelines kept running).",
            Some(ConstCounter::new(failures)),
        )?;
        self.encode_web(e)?;
        self.process.encode(e)
    }
}

const WEB_REFUSED_HELP: &str = "Connections and requests the web server refused or cut off, by reason (max_connections: a connection beyond web.max_connections, closed at once; header_timeout: no request headers within web.header_read_timeout; idle_timeout: nothing sent either way for web.idle_timeout; host: a Host that is not this server, 421; origin: a browser's change from another origin without a token, 403; token: no or a wrong token, 401; body_too_large: a body beyond web.max_body_bytes, 413; request_timeout: not answered within web.request_timeout, 408).";

impl Snapshot {
    fn encode_web(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let web = &self.counts.web;
        single(
            e,
            "vigil_web_connections",
            "Connections the web server accepted.",
            Some(ConstCounter::new(web.accepted)),
        )?;
        single(
            e,
            "vigil_web_connections_open",
            "Connections open now.",
            Some(ConstGauge::new(web.open)),
        )?;
        single(
            e,
            "vigil_web_accept_errors",
            "Connections the web server could not accept (out of file descriptors, ...).",
            Some(ConstCounter::new(web.accept_errors)),
        )?;
        single(
            e,
            "vigil_web_panics",
            "Requests whose handler panicked (answered 500).",
            Some(ConstCounter::new(web.panics)),
        )?;
        counters(
            e,
            "vigil_web_refused",
            WEB_REFUSED_HELP,
            web.refused
                .iter()
                .map(|(reason, n)| (vec![("reason", *reason)], *n)),
        )
    }

    /// The per-node families.
    fn encode_nodes(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in NODE_COUNTERS {
            counters(
                e,
                name,
                help,
                self.nodes.iter().map(|n| (node_labels(n), value(n))),
            )?;
        }
        for (name, help, reasons) in [
            ("vigil_node_errors", ERRORS_HELP, by_errors as ByReason),
            ("vigil_node_dropped", DROPPED_HELP, by_dropped),
        ] {
            counters(
                e,
                name,
                help,
                self.nodes.iter().flat_map(|n| {
                    reasons(n).iter().map(move |(reason, count)| {
                        let mut labels = node_labels(n);
                        labels.push(("reason", reason));
                        (labels, *count)
                    })
                }),
            )?;
        }
        gauges(
            e,
            "vigil_node_state",
            STATE_HELP,
            self.nodes.iter().flat_map(|n| {
                NodeState::ALL.into_iter().map(move |state| {
                    let mut labels = node_labels(n);
                    labels.push(("state", state.as_str()));
                    (labels, u64::from(n.state == state))
                })
            }),
        )
    }

    /// The outbox, the deliveries and the alerts.
    fn encode_store(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let counts = &self.counts;
        gauges(
            e,
            "vigil_outbox_messages",
            "Messages in the delivery outbox, by state.",
            [
                OutboxState::Gathering,
                OutboxState::Pending,
                OutboxState::Sending,
                OutboxState::Sent,
                OutboxState::Dead,
            ]
            .into_iter()
            .map(|state| {
                let n = counts
                    .outbox
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(0, |(_, n)| *n);
                (vec![("state", state.as_str())], n)
            }),
        )?;
        gauges(
            e,
            "vigil_deliveries",
            "Alerts each delivering sink holds, by the state of their message (sent, pending, gathering, dead).",
            counts.deliveries.iter().map(|(sink, state, n)| {
                (vec![("sink", sink.as_str()), ("state", state.as_str())], *n)
            }),
        )?;
        let w = &counts.writer;
        for (name, help, n) in [
            (
                "vigil_store_transactions",
                "Transactions the state database's writing thread committed (each holds every write queued at that moment).",
                w.commits,
            ),
            (
                "vigil_store_writes",
                "Writes to the state database.",
                w.jobs,
            ),
            (
                "vigil_store_write_failures",
                "Writes to the state database that failed (each undone alone; the caller logs it).",
                w.failed,
            ),
            (
                "vigil_store_transaction_failures",
                "Transactions of the state database that could not be committed (every write in them failed).",
                w.failed_commits,
            ),
            (
                "vigil_store_queue_full",
                "Times a node waited because the state database's write queue was full.",
                w.waited_for_room,
            ),
        ] {
            counters(e, name, help, [(Vec::new(), n)])?;
        }
        gauges(
            e,
            "vigil_store_writes_queued",
            "Writes waiting for the state database's writing thread.",
            [(Vec::new(), w.queued)],
        )?;
        gauges(
            e,
            "vigil_alerts",
            "Alerts in the history, by severity.",
            ["info", "low", "medium", "high", "critical"]
                .into_iter()
                .map(|severity| {
                    let n = counts
                        .alerts
                        .iter()
                        .find(|(s, _)| s == severity)
                        .map_or(0, |(_, n)| *n);
                    (vec![("severity", severity)], n)
                }),
        )
    }

    /// The PCE connections' requests and traffic counters.
    fn encode_pce(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let pce = &self.counts.pce;
        let requests = || {
            pce.iter().flat_map(|(conn, stats, _)| {
                stats.iter().map(move |s| (request_labels(conn, s), s))
            })
        };
        counters(
            e,
            "vigil_pce_requests",
            "Requests to a PCE, by endpoint, method and status (`error`: no answer).",
            requests().map(|(labels, s)| (labels, s.count)),
        )?;
        let mut family = e.encode_descriptor(
            "vigil_pce_request_duration_seconds",
            "How long requests to a PCE took, by endpoint and status.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, s) in requests() {
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    s.seconds,
                    s.count,
                    &bucket_counts(&s.buckets),
                    None,
                )?;
        }
        for (name, help, pick) in TRAFFIC_COUNTERS {
            counters(
                e,
                name,
                help,
                pce.iter().filter_map(|(conn, _, traffic)| {
                    traffic
                        .as_ref()
                        .map(|q| (vec![("connection", conn.as_str())], pick(q)))
                }),
            )?;
        }
        Ok(())
    }
}

impl Process {
    /// The `process_*` families, each only when its value could be read.
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        single(
            e,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(ConstCounter::new),
        )?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
        ] {
            single(e, name, help, value.map(ConstGauge::new))?;
        }
        single(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.map(ConstGauge::new),
        )
    }
}

/// The labels of a node's series: `node`, `pipeline`, `role`, `kind`.
fn node_labels(n: &NodeStatus) -> Labels<'_> {
    vec![
        ("node", &n.id),
        ("pipeline", &n.pipeline),
        ("role", n.role),
        ("kind", &n.kind),
    ]
}

/// The labels of a PCE request's series: `connection`, `endpoint`, `method`, `status`.
fn request_labels<'a>(conn: &'a str, s: &'a EndpointStats) -> Labels<'a> {
    vec![
        ("connection", conn),
        ("endpoint", &s.endpoint),
        ("method", &s.method),
        ("status", &s.status),
    ]
}

/// Each bucket's own count: the client keeps them cumulative, the encoder adds them up.
fn bucket_counts(cumulative: &[u64; BUCKETS.len()]) -> Vec<(f64, u64)> {
    let mut below = 0;
    BUCKETS
        .iter()
        .zip(cumulative)
        .map(|(bound, &n)| {
            let own = n.saturating_sub(below);
            below = below.max(n);
            (*bound, own)
        })
        .collect()
}

/// A family of counters: `# HELP`, `# TYPE`, then one line per series. `name` is without
/// `_total`.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of gauges: `# HELP`, `# TYPE`, then one line per series.
fn gauges<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one series without labels, or nothing when `metric` is `None`.
fn single(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: Option<impl EncodeMetric>,
) -> fmt::Result {
    match metric {
        Some(m) => m.encode(e.encode_descriptor(name, help, None, m.metric_type())?),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    /// A node that restarted and dropped events, some outbox messages, a PCE connection
    /// with requests and traffic counters, and a process.
    fn snapshot() -> Snapshot {
        let node = NodeStatus {
            id: "p.keep".into(),
            pipeline: "p".into(),
            name: "keep".into(),
            role: "stage",
            kind: "filter".into(),
            inputs: vec!["p.in".into()],
            events_in: 3,
            events_out: 2,
            errors: 1,
            errors_by_reason: [("script", 1)].into_iter().collect(),
            state: NodeState::Restarting,
            restarts: 4,
            last_error: None,
            dropped: [("late", 5), ("cooldown", 1)].into_iter().collect(),
        };
        let stats = EndpointStats {
            endpoint: "/orgs/:org/events".into(),
            method: "GET".into(),
            status: "200".into(),
            count: 7,
            seconds: 1.25,
            buckets: [1, 2, 3, 4, 5, 6, 6, 7, 7],
        };
        Snapshot {
            nodes: vec![node],
            counts: Counts {
                outbox: vec![(OutboxState::Sent, 3), (OutboxState::Dead, 1)],
                deliveries: vec![("p.hook".into(), OutboxState::Sent, 3)],
                alerts: vec![("high".into(), 4)],
                reloads: (2, 1),
                writer: crate::store::writer::WriterCounts {
                    commits: 5,
                    jobs: 9,
                    ..Default::default()
                },
                pce: vec![(
                    "lab".into(),
                    vec![stats],
                    Some(TrafficCounters {
                        slices: 4,
                        ..Default::default()
                    }),
                )],
                web: Default::default(),
            },
            process: Process {
                cpu_seconds: Some(1.5),
                resident_bytes: Some(20 << 20),
                virtual_bytes: Some(300 << 20),
                open_fds: Some(17),
                max_fds: Some(1024),
                start_time_seconds: Some(1_764_000_000.5),
            },
        }
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
    }

    /// The value of the one sample of `name` with `labels` (among others).
    fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Value {
        let found: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value.clone()
    }

    #[test]
    fn a_snapshot_renders_every_family_with_its_labels() {
        let text = render(snapshot()).expect("render");
        let scrape = parse(&text);
        let node = [
            ("node", "p.keep"),
            ("pipeline", "p"),
            ("role", "stage"),
            ("kind", "filter"),
        ];
        for (name, v) in [
            ("vigil_node_events_in_total", 3.0),
            ("vigil_node_events_out_total", 2.0),
            ("vigil_node_restarts_total", 4.0),
        ] {
            assert_eq!(value(&scrape, name, &node), Value::Counter(v), "{name}");
        }
        let with = |k, v| {
            let mut l = node.to_vec();
            l.push((k, v));
            l
        };
        assert_eq!(
            value(&scrape, "vigil_node_dropped_total", &with("reason", "late")),
            Value::Counter(5.0)
        );
        assert_eq!(
            value(
                &scrape,
                "vigil_node_errors_total",
                &with("reason", "script")
            ),
            Value::Counter(1.0)
        );
        assert_eq!(
            value(&scrape, "vigil_node_state", &with("state", "restarting")),
            Value::Gauge(1.0)
        );
        assert_eq!(
            value(&scrape, "vigil_node_state", &with("state", "running")),
            Value::Gauge(0.0)
        );
        assert_eq!(
            value(&scrape, "vigil_outbox_messages", &[("state", "sent")]),
            Value::Gauge(3.0)
        );
        assert_eq!(
            value(&scrape, "vigil_outbox_messages", &[("state", "pending")]),
            Value::Gauge(0.0)
        );
        assert_eq!(
            value(
                &scrape,
                "vigil_deliveries",
                &[("sink", "p.hook"), ("state", "sent")]
            ),
            Value::Gauge(3.0)
        );
        assert_eq!(
            value(&scrape, "vigil_alerts", &[("severity", "critical")]),
            Value::Gauge(0.0)
        );
        let request = [
            ("connection", "lab"),
            ("endpoint", "/orgs/:org/events"),
            ("method", "GET"),
            ("status", "200"),
        ];
        assert_eq!(
            value(&scrape, "vigil_pce_requests_total", &request),
            Value::Counter(7.0)
        );
        let Value::Histogram(buckets) =
            value(&scrape, "vigil_pce_request_duration_seconds", &request)
        else {
            panic!("a histogram:\n{text}");
        };
        let got: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        let mut want: Vec<(f64, f64)> = BUCKETS
            .iter()
            .zip([1, 2, 3, 4, 5, 6, 6, 7, 7])
            .map(|(b, n)| (*b, f64::from(n)))
            .collect();
        want.push((f64::INFINITY, 7.0));
        assert_eq!(got, want);
        assert_eq!(
            value(&scrape, "vigil_pce_request_duration_seconds_sum", &request),
            Value::Untyped(1.25)
        );
        assert_eq!(
            value(
                &scrape,
                "vigil_pce_request_duration_seconds_count",
                &request
            ),
            Value::Untyped(7.0)
        );
        assert_eq!(
            value(
                &scrape,
                "vigil_pce_traffic_slices_total",
                &[("connection", "lab")]
            ),
            Value::Counter(4.0)
        );
        assert_eq!(
            value(&scrape, "vigil_reloads_total", &[]),
            Value::Counter(2.0)
        );
        assert_eq!(
            value(&scrape, "vigil_reload_failures_total", &[]),
            Value::Counter(1.0)
        );
        assert_eq!(
            value(&scrape, "vigil_store_transactions_total", &[]),
            Value::Counter(5.0)
        );
        assert_eq!(
            value(&scrape, "vigil_store_writes_total", &[]),
            Value::Counter(9.0)
        );
        for (name, v) in [
            ("process_cpu_seconds_total", Value::Counter(1.5)),
            (
                "process_resident_memory_bytes",
                Value::Gauge(20.0 * 1048576.0),
            ),
            (
                "process_virtual_memory_bytes",
                Value::Gauge(300.0 * 1048576.0),
            ),
            ("process_open_fds", Value::Gauge(17.0)),
            ("process_max_fds", Value::Gauge(1024.0)),
            ("process_start_time_seconds", Value::Gauge(1_764_000_000.5)),
        ] {
            assert_eq!(value(&scrape, name, &[]), v, "{name}");
        }
    }

    /// Dashboards and tests match whole lines: these are written exactly as before
    /// `prometheus-client`.
    #[test]
    fn lines_are_written_as_before() {
        let text = render(snapshot()).expect("render");
        for line in [
            "# HELP vigil_node_events_in_total Events a node received.",
            "# TYPE vigil_node_events_in_total counter",
            "vigil_node_restarts_total{node=\"p.keep\",pipeline=\"p\",role=\"stage\",kind=\"filter\"} 4",
            "vigil_node_state{node=\"p.keep\",pipeline=\"p\",role=\"stage\",kind=\"filter\",state=\"restarting\"} 1",
            "# TYPE vigil_node_state gauge",
            "vigil_outbox_messages{state=\"sent\"} 3",
            "# TYPE vigil_pce_request_duration_seconds histogram",
            "vigil_pce_request_duration_seconds_bucket{connection=\"lab\",endpoint=\"/orgs/:org/events\",method=\"GET\",status=\"200\",le=\"1\"} 5",
            "vigil_pce_request_duration_seconds_bucket{connection=\"lab\",endpoint=\"/orgs/:org/events\",method=\"GET\",status=\"200\",le=\"+Inf\"} 7",
            "vigil_pce_traffic_slices_total{connection=\"lab\"} 4",
            "vigil_reloads_total 2",
            "vigil_reload_failures_total 1",
            "# TYPE process_cpu_seconds_total counter",
            "process_open_fds 17",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = snapshot();
        s.counts.deliveries = vec![("a\"b\\c\nd".into(), OutboxState::Dead, 2)];
        let text = render(s).expect("render");
        assert!(
            text.lines()
                .any(|l| l == "vigil_deliveries{sink=\"a\\\"b\\\\c\\nd\",state=\"dead\"} 2"),
            "{text}"
        );
        parse(&text);
    }

    #[test]
    fn traffic_counters_are_exported_per_connection() {
        let traffic = TrafficCounters {
            slices: 4,
            rows_new: 10,
            rows_continued: 7,
            rows_repeated: 3,
            flows_expired: 2,
            flows_evicted: 1,
            ..Default::default()
        };
        let mut s = snapshot();
        s.counts.pce = vec![
            ("lab".to_string(), Vec::new(), Some(traffic)),
            ("events_only".to_string(), Vec::new(), None),
        ];
        let text = render(s).expect("render");
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

    #[test]
    fn a_process_value_not_read_is_left_out() {
        let mut s = snapshot();
        s.process = Process {
            open_fds: Some(9),
            ..Process::default()
        };
        let text = render(s).expect("render");
        assert!(text.lines().any(|l| l == "process_open_fds 9"), "{text}");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(!text.contains(name), "{name} in:\n{text}");
        }
    }

    /// Every reason a node may count a drop under is documented where users look: the
    /// table at the top of this module, the metric's HELP text and README's `/metrics`
    /// line; and nothing documented there is a reason no code counts.
    /// The reasons a text lists after the `reason` label of `metric`: its `snake_case`
    /// words up to the next `;`.
    fn reasons_listed<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        let text = &text[text.find(metric).expect("the metric named")..];
        let text = &text[text.find("`reason`").expect("the reason label")..];
        let text = &text[..text.find(';').unwrap_or(text.len())];
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| *w != "reason" && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    }

    /// Every reason of `vigil_node_dropped_total` and `vigil_node_errors_total` is in the
    /// `/metrics` table above, in README's `/metrics` line and in the HELP text.
    #[test]
    fn every_drop_and_error_reason_is_documented() {
        use crate::node::internal_event::{DropReason, ErrorReason};
        let module = include_str!("mod.rs");
        let readme = include_str!("../../../README.md");
        let readme = readme
            .lines()
            .find(|l| l.starts_with("| `GET /metrics`"))
            .expect("README's /metrics line");
        let dropped: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        let errors: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        for (metric, known, help) in [
            ("`vigil_node_dropped_total`", &dropped, DROPPED_HELP),
            ("`vigil_node_errors_total`", &errors, ERRORS_HELP),
        ] {
            let table = module
                .lines()
                .find(|l| l.starts_with(&format!("//! | {metric}")))
                .expect("the table's row for the metric");
            for (doc, text) in [
                ("the /metrics table", table),
                ("README's /metrics line", readme),
            ] {
                assert_eq!(
                    &reasons_listed(text, metric),
                    known,
                    "the reasons {doc} lists for {metric}"
                );
            }
            for r in known {
                assert!(
                    help.contains(&format!("{r}:")) || help.contains(&format!("{r},")),
                    "{r} is missing from the HELP text of {metric}"
                );
            }
        }
    }
}
