//! Every component kind vigil has, in one place.
//!
//! A pipeline's `sources`, `stages` and `sinks` entries are told apart by `type`; the
//! enums below are the complete lists. Adding a kind means adding a variant here (the
//! compiler then points at every `match` to extend) and a folder under `src/sources`,
//! `src/stages` or `src/sinks` with its `config.rs`. The JSON Schema, `vigil validate` and
//! the misspelt-key test pick a new kind up from these enums.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::diagnostic::Problems;
use crate::node::{BuildContext, NodeError, Sink, Source, Stage, Tap};
use crate::pce::names::NameCache;
use crate::{sinks, sources, stages};

/// What the nodes of a run share, built from the settings before any node is: per PCE
/// connection its client, name cache and traffic hub; the delivery connections and
/// inhibition rules; where vigil's own alerts are published; and what the API sees of
/// the traffic. A node takes only the part its kind needs (see the `build` functions
/// below).
#[derive(Debug, Default)]
pub struct Services {
    /// The PCE connections, by name.
    pub pce: BTreeMap<String, Arc<sources::PceServices>>,
    /// SMTP, LINE and webhook connections and the inhibition rules.
    pub delivery: Arc<sinks::DeliveryServices>,
    /// vigil's own alerts, read by `internal` sources.
    pub internal: sources::internal::InternalAlerts,
    /// Recent events and the live stream, for the API.
    pub tap: Arc<Tap>,
    /// Name caches that belong to no connection: what a test case's `context` says the
    /// PCE knows.
    pub extra_names: Vec<Arc<NameCache>>,
    /// The running `nftables_ban` sinks, for the API and `vigil ban`.
    pub bans: Arc<sinks::nftables_ban::BanRegistry>,
}

impl Services {
    /// The services of PCE connection `name` (the loader has already checked that it
    /// exists; this is the runtime's own guard).
    pub fn pce(&self, name: &str) -> Result<&Arc<sources::PceServices>, NodeError> {
        self.pce
            .get(name)
            .ok_or_else(|| format!("no PCE connection `{name}` in the settings").into())
    }

    /// The name caches of every PCE connection, in name order (then the extra ones).
    pub fn name_caches(&self) -> Vec<Arc<NameCache>> {
        self.pce
            .values()
            .map(|p| p.names().clone())
            .chain(self.extra_names.iter().cloned())
            .collect()
    }
}

/// A source: where events come from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// JSON lines from a file, followed as it grows.
    File(sources::file::FileSourceConfig),
    /// JSON lines from standard input.
    Stdin(sources::stdin::StdinSourceConfig),
    /// JSON lines from the output of a command it runs (and restarts).
    Exec(sources::exec::ExecSourceConfig),
    /// The host's CPU, memory, disk, network and load, as rates, every interval.
    HostMetrics(sources::host_metrics::HostMetricsConfig),
    /// Bytes and packets per port and direction (nftables or iptables), every interval.
    PortCounters(sources::port_counters::PortCountersConfig),
    /// The health of an Illumio PCE, on change.
    PceHealth(sources::pce_health::PceHealthConfig),
    /// The audit events of an Illumio PCE, with a persisted watermark.
    PceEvents(sources::pce_events::PceEventsConfig),
    /// Traffic flows of an Illumio PCE, one shared query per connection per cycle.
    PceTraffic(sources::pce_traffic::PceTrafficConfig),
    /// vigil's own alerts (a reload that failed, ...).
    Internal(sources::internal::InternalSourceConfig),
    /// Syslog messages over TCP, UDP or TLS (RFC 5424 and 3164), decoded into events.
    Syslog(sources::syslog::SyslogSourceConfig),
}

/// A stage: what happens to events between sources and sinks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageConfig {
    /// Keeps the events that match conditions on their fields.
    Filter(stages::filter::FilterConfig),
    /// Counts events (or sums a field) per group in a sliding window; alerts at a threshold.
    WindowCount(stages::window_count::WindowCountConfig),
    /// Bytes (MiB per window) or bandwidth (Mbps) of traffic flows per group; alerts at a
    /// threshold.
    Bandwidth(stages::bandwidth::BandwidthConfig),
    /// An aggregate (avg, min, max, sum, percentile) of a numeric field per group in a
    /// sliding window; alerts while it is above or below bounds.
    Metric(stages::metric::MetricConfig),
    /// Counts the distinct values of a field per group in a sliding window (exact, then
    /// HyperLogLog); alerts at a threshold.
    DistinctCount(stages::distinct_count::DistinctCountConfig),
    /// A key's current window against the window before it (count or sum); alerts while
    /// one is `ratio` times the other, up or down — a drop to silence included.
    Spike(stages::spike::SpikeConfig),
    /// The share of a key's events that match conditions in a sliding window; alerts at
    /// a threshold.
    Ratio(stages::ratio::RatioConfig),
    /// Alerts the first time a value (or a tuple of values) is seen per group, after a
    /// learn period.
    NewTerm(stages::new_term::NewTermConfig),
    /// Drops repeats of an event or alert within a window.
    Dedupe(stages::dedupe::DedupeConfig),
    /// Realert per key: after one passes, the same key is quiet for a period.
    Cooldown(stages::cooldown::CooldownConfig),
    /// Alerts when a source, or a key, went quiet.
    Flatline(stages::flatline::FlatlineConfig),
    /// Totals per key over calendar periods (days, months, ...) in a time zone, reported
    /// when each period is over.
    Report(stages::report::ReportConfig),
    /// The biggest contributors (by count or sum) to an alert's window or its own.
    TopN(stages::top_n::TopNConfig),
    /// Runs a Rhai script on every event: drop, rewrite, enrich, raise alerts.
    Script(stages::script::ScriptConfig),
}

/// A sink: where results go.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// JSON lines appended to a file.
    File(sinks::file::FileSinkConfig),
    /// JSON lines on standard output.
    Stdout(sinks::stdout::StdoutSinkConfig),
    /// Mail through an SMTP server: the raw-log snapshot, HTML and plain text.
    Mail(sinks::mail::MailSinkConfig),
    /// LINE Messaging API push messages.
    Line(sinks::line::LineSinkConfig),
    /// An HTTP POST: generic JSON, Slack, Teams or a custom body.
    Webhook(sinks::webhook::WebhookSinkConfig),
    /// Bans the alert's address with nftables for a while (dry run by default).
    NftablesBan(sinks::nftables_ban::NftablesBanSinkConfig),
}

impl SourceConfig {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Stdin(_) => "stdin",
            SourceConfig::Exec(_) => "exec",
            SourceConfig::HostMetrics(_) => "host_metrics",
            SourceConfig::PortCounters(_) => "port_counters",
            SourceConfig::PceHealth(_) => "pce_health",
            SourceConfig::PceEvents(_) => "pce_events",
            SourceConfig::PceTraffic(_) => "pce_traffic",
            SourceConfig::Internal(_) => "internal",
            SourceConfig::Syslog(_) => "syslog",
        }
    }

    /// Structural checks beyond the schema.
    pub fn check(&self, p: &mut Problems) {
        match self {
            SourceConfig::File(c) => c.check(p),
            SourceConfig::Stdin(c) => c.check(p),
            SourceConfig::Exec(c) => c.check(p),
            SourceConfig::HostMetrics(c) => c.check(p),
            SourceConfig::PortCounters(c) => c.check(p),
            SourceConfig::PceHealth(c) => c.check(p),
            SourceConfig::PceEvents(c) => c.check(p),
            SourceConfig::PceTraffic(c) => c.check(p),
            SourceConfig::Internal(c) => c.check(p),
            SourceConfig::Syslog(c) => c.check(p),
        }
    }

    /// Whether the source is built from the `filter` stages reading it (see
    /// [`SourceConfig::build`]): a change to them rebuilds it.
    pub fn reads_its_readers(&self) -> bool {
        matches!(self, SourceConfig::PceTraffic(_))
    }

    /// The record a source makes of `record` as it reads it, for `vigil test` and `vigil
    /// replay`: a `file` or `exec` source reading Tetragon's events normalises it (see
    /// [`sources::tetragon`]); every other source takes it as it is. Why it cannot.
    pub fn decode_record(&self, record: &serde_json::Value) -> Result<serde_json::Value, String> {
        match self.line_format() {
            Some(sources::json_lines::LineFormat::Tetragon) => sources::tetragon::normalize(record)
                .map(|n| n.data)
                .map_err(|e| format!("not a Tetragon event: {e}")),
            _ => Ok(record.clone()),
        }
    }

    /// What the lines of a source that reads JSON lines hold (`decode:`); `None` for the
    /// other sources.
    pub fn line_format(&self) -> Option<sources::json_lines::LineFormat> {
        match self {
            SourceConfig::File(c) => Some(c.decode),
            SourceConfig::Exec(c) => Some(c.decode),
            SourceConfig::Stdin(_) => Some(sources::json_lines::LineFormat::Json),
            _ => None,
        }
    }

    /// Builds the running source. `readers` are the `filter` stages that read it, when
    /// every node reading it is one (`None` otherwise): a source may then ask its peer
    /// only for what they keep.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &Services,
        readers: Option<&[stages::filter::FilterConfig]>,
    ) -> Result<Box<dyn Source>, NodeError> {
        match self {
            SourceConfig::File(c) => c.build(cx, &services.internal),
            SourceConfig::Stdin(c) => c.build(cx),
            SourceConfig::Exec(c) => c.build(cx, &services.internal),
            SourceConfig::HostMetrics(c) => c.build(cx),
            SourceConfig::PortCounters(c) => c.build(cx),
            SourceConfig::PceHealth(c) => c.build(services.pce(&c.connection)?),
            SourceConfig::PceEvents(c) => c.build(cx, services.pce(&c.connection)?),
            SourceConfig::PceTraffic(c) => {
                let pce = services.pce(&c.connection)?;
                // Filters look `ip_list:` names up in every connection's names: the
                // connection's own lists are then the only ones when it is alone.
                let caches = services.name_caches();
                let own_lists = caches.len() == 1 && Arc::ptr_eq(&caches[0], pce.names());
                c.build(cx, pce, readers, own_lists)
            }
            SourceConfig::Internal(c) => c.build(&services.internal),
            SourceConfig::Syslog(c) => c.build(cx, &services.internal),
        }
    }
}

impl StageConfig {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            StageConfig::Filter(_) => "filter",
            StageConfig::WindowCount(_) => "window_count",
            StageConfig::Bandwidth(_) => "bandwidth",
            StageConfig::Metric(_) => "metric",
            StageConfig::DistinctCount(_) => "distinct_count",
            StageConfig::Spike(_) => "spike",
            StageConfig::Ratio(_) => "ratio",
            StageConfig::NewTerm(_) => "new_term",
            StageConfig::Dedupe(_) => "dedupe",
            StageConfig::Cooldown(_) => "cooldown",
            StageConfig::Flatline(_) => "flatline",
            StageConfig::Report(_) => "report",
            StageConfig::TopN(_) => "top_n",
            StageConfig::Script(_) => "script",
        }
    }

    /// The nodes this stage reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            StageConfig::Filter(c) => &c.inputs,
            StageConfig::WindowCount(c) => &c.inputs,
            StageConfig::Bandwidth(c) => &c.inputs,
            StageConfig::Metric(c) => &c.inputs,
            StageConfig::DistinctCount(c) => &c.inputs,
            StageConfig::Spike(c) => &c.inputs,
            StageConfig::Ratio(c) => &c.inputs,
            StageConfig::NewTerm(c) => &c.inputs,
            StageConfig::Dedupe(c) => &c.inputs,
            StageConfig::Cooldown(c) => &c.inputs,
            StageConfig::Flatline(c) => &c.inputs,
            StageConfig::Report(c) => &c.inputs,
            StageConfig::TopN(c) => &c.inputs,
            StageConfig::Script(c) => &c.inputs,
        }
    }

    /// The paths a detection stage groups its alerts by (empty for the others).
    pub fn group_by(&self) -> &[String] {
        match self {
            StageConfig::WindowCount(c) => &c.group_by,
            StageConfig::Bandwidth(c) => &c.group_by,
            StageConfig::Metric(c) => &c.group_by,
            StageConfig::DistinctCount(c) => &c.group_by,
            StageConfig::Spike(c) => &c.group_by,
            StageConfig::Ratio(c) => &c.group_by,
            StageConfig::NewTerm(c) => &c.group_by,
            StageConfig::Flatline(c) => &c.group_by,
            StageConfig::Report(c) => &c.group_by,
            StageConfig::Filter(_)
            | StageConfig::Dedupe(_)
            | StageConfig::Cooldown(_)
            | StageConfig::TopN(_)
            | StageConfig::Script(_) => &[],
        }
    }

    /// Structural checks beyond the schema.
    pub fn check(&self, p: &mut Problems) {
        match self {
            StageConfig::Filter(c) => c.check(p),
            StageConfig::WindowCount(c) => c.check(p),
            StageConfig::Bandwidth(c) => c.check(p),
            StageConfig::Metric(c) => c.check(p),
            StageConfig::DistinctCount(c) => c.check(p),
            StageConfig::Spike(c) => c.check(p),
            StageConfig::Ratio(c) => c.check(p),
            StageConfig::NewTerm(c) => c.check(p),
            StageConfig::Dedupe(c) => c.check(p),
            StageConfig::Cooldown(c) => c.check(p),
            StageConfig::Flatline(c) => c.check(p),
            StageConfig::Report(c) => c.check(p),
            StageConfig::TopN(c) => c.check(p),
            StageConfig::Script(c) => c.check(p),
        }
    }

    /// Builds the running stage.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &Services,
    ) -> Result<Box<dyn Stage>, NodeError> {
        match self {
            StageConfig::Filter(c) => c.build(cx, &services.name_caches()),
            StageConfig::WindowCount(c) => c.build(cx),
            StageConfig::Bandwidth(c) => c.build(cx),
            StageConfig::Metric(c) => c.build(cx),
            StageConfig::DistinctCount(c) => c.build(cx),
            StageConfig::Spike(c) => c.build(cx),
            StageConfig::Ratio(c) => c.build(cx, &services.name_caches()),
            StageConfig::NewTerm(c) => c.build(cx, &|warm| {
                // A connection not in the settings is reported by validation; where the
                // services hold none (`vigil test`), there is no history to read.
                Ok(services.pce(&warm.connection).ok().and_then(|pce| {
                    sources::pce_history::start(pce, warm, cx.clock.now(), cx.id.clone())
                }))
            }),
            StageConfig::Dedupe(c) => c.build(cx),
            StageConfig::Cooldown(c) => c.build(cx),
            StageConfig::Flatline(c) => c.build(cx),
            StageConfig::Report(c) => c.build(cx),
            StageConfig::TopN(c) => c.build(cx),
            StageConfig::Script(c) => c.build(cx),
        }
    }
}

impl SinkConfig {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::Mail(_) => "mail",
            SinkConfig::Line(_) => "line",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::NftablesBan(_) => "nftables_ban",
        }
    }

    /// The notification options of a delivering sink (mail, LINE, webhook); `None` for
    /// sinks that write every alert (file, stdout).
    pub fn delivery(&self) -> Option<sinks::delivery::DeliveryConfig> {
        match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) => None,
            SinkConfig::Mail(c) => Some(c.delivery()),
            SinkConfig::Line(c) => Some(c.delivery()),
            SinkConfig::Webhook(c) => Some(c.delivery()),
            SinkConfig::NftablesBan(c) => Some(c.delivery()),
        }
    }

    /// The nodes this sink reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::File(c) => &c.inputs,
            SinkConfig::Stdout(c) => &c.inputs,
            SinkConfig::Mail(c) => &c.inputs,
            SinkConfig::Line(c) => &c.inputs,
            SinkConfig::Webhook(c) => &c.inputs,
            SinkConfig::NftablesBan(c) => &c.inputs,
        }
    }

    /// Structural checks beyond the schema.
    pub fn check(&self, p: &mut Problems) {
        match self {
            SinkConfig::File(c) => c.check(p),
            SinkConfig::Stdout(c) => c.check(p),
            SinkConfig::Mail(c) => c.check(p),
            SinkConfig::Line(c) => c.check(p),
            SinkConfig::Webhook(c) => c.check(p),
            SinkConfig::NftablesBan(c) => c.check(p),
        }
    }

    /// For `vigil validate`: renders every template of a delivering sink against a sample
    /// alert grouped by `group_by` (the paths of the detection stages upstream).
    pub fn check_rendering(&self, group_by: &[String], p: &mut Problems) {
        match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::NftablesBan(_) => {}
            SinkConfig::Mail(c) => c.check_rendering(group_by, p),
            SinkConfig::Line(c) => c.check_rendering(group_by, p),
            SinkConfig::Webhook(c) => c.check_rendering(group_by, p),
        }
    }

    /// Who a delivering sink whose recipients follow the alert (a mail sink's templated
    /// `to`) sends an alert to, for `vigil test` and `vigil replay` to gather alerts into
    /// messages as the running sink does; `None` for sinks with fixed recipients, and when
    /// the templates do not compile (`vigil validate` says why).
    pub fn router(
        &self,
        base_dir: &std::path::Path,
        public_url: &str,
    ) -> Option<Box<dyn sinks::delivery::Rendering + Send>> {
        match self {
            SinkConfig::Mail(c) => c
                .render(base_dir, public_url)
                .ok()
                .map(|r| Box::new(r) as Box<dyn sinks::delivery::Rendering + Send>),
            _ => None,
        }
    }

    /// How a delivering sink sends one message (for `vigil send-test`); `None` for the
    /// other kinds, and for `nftables_ban` (a test send would ban an address).
    pub fn notifier(
        &self,
        cx: &BuildContext,
        services: &sinks::DeliveryServices,
    ) -> Option<Result<Box<dyn sinks::delivery::Notifier>, NodeError>> {
        match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::NftablesBan(_) => None,
            SinkConfig::Mail(c) => Some(c.notifier(cx, services)),
            SinkConfig::Line(c) => Some(c.notifier(cx, services)),
            SinkConfig::Webhook(c) => Some(c.notifier(cx, services)),
        }
    }

    /// The `connections:` family and name a delivering sink sends through.
    pub fn connection(&self) -> Option<(&'static str, &str)> {
        match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::NftablesBan(_) => None,
            SinkConfig::Mail(c) => Some(("smtp", &c.connection)),
            SinkConfig::Line(c) => Some(("line", &c.connection)),
            SinkConfig::Webhook(c) => Some(("webhook", &c.connection)),
        }
    }

    /// Builds the running sink.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &Services,
    ) -> Result<Box<dyn Sink>, NodeError> {
        match self {
            SinkConfig::File(c) => c.build(cx),
            SinkConfig::Stdout(c) => c.build(cx),
            SinkConfig::Mail(c) => c.build(cx, &services.delivery),
            SinkConfig::Line(c) => c.build(cx, &services.delivery),
            SinkConfig::Webhook(c) => c.build(cx, &services.delivery),
            SinkConfig::NftablesBan(c) => {
                let bans = sinks::nftables_ban::BanServices {
                    pce: services
                        .pce
                        .values()
                        .map(|p| sinks::nftables_ban::PceAccess {
                            name: p.name().to_string(),
                            client: p.client().clone(),
                            names: p.names().clone(),
                        })
                        .collect(),
                    registry: services.bans.clone(),
                };
                c.build(cx, &bans, &services.delivery)
            }
        }
    }
}
