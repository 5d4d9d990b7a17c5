//! The `bandwidth` stage's configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stage::BandwidthStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// Measures the bytes of traffic flow records per group key and alerts when the volume in
/// a window (`mode: volume`, MiB = bytes / 1,048,576) or the current bandwidth
/// (`mode: rate`, Mbps = bits / 1,000,000 per second) reaches `threshold`.
///
/// **How the bytes of one record are measured** (`direction` picks the in counters, the
/// out counters or both):
///
/// 1. **Delta counters** (`dbi`/`dbo`, syslog flow summaries): the bytes of the interval,
///    over `ddms` milliseconds (1 s when missing or 0). Exact.
/// 2. **Lifetime counters** (`dst_bi`/`dst_bo`, PCE REST rows) of a flow seen before
///    (same `flow_key`): the difference to the previous observation; a counter that went
///    down was reset and counts its whole current value. The span is the difference of
///    `timestamp_range.last_detected` (else of the event times; 1 s when 0). Exact. An
///    observation older than the previous one (`stale`) or identical to it
///    (`duplicates`: the same flow reported twice) is skipped.
/// 3. **First sighting** of a flow with lifetime counters: the lifetime counters, over
///    `last_detected − first_detected + 1 s` (the whole window when the record has no
///    `timestamp_range`). A lower bound of the rate; alerts whose value used such a record
///    carry `estimate: lower_bound`.
///
/// A record whose in and out counters are both 0 or absent was not measured by the PCE:
/// it is counted (`unmeasured`), contributes nothing and never alerts. Every division is
/// guarded: no NaN or infinity ever reaches an alert.
///
/// **Windows** are per group key and in event time, as in `window_count`: the window is
/// `(newest − window, newest]`; an event at or before the stage's watermark − window is
/// late (counted, not mixed in). `volume` sums the bytes of the records in the window.
/// `rate` sums, over the group's flows (by `flow_key`), each flow's latest rate in the
/// window. Reaching the threshold opens the group's episode (`unit` `MiB` or `Mbps`),
/// updated in place while the group stays at or over it and resolved when it falls
/// below, as in `window_count`; `alert.mode: each_crossing` alerts at every crossing and
/// starts the group's window again empty.
///
/// **Memory**: groups whose newest event is at or before watermark − window are dropped,
/// and so are the remembered counters of flows not seen within a window of the watermark
/// (a flow seen again later counts as a first sighting). State (windows and per-flow
/// counters) survives restarts; it is reset when `mode`, `group_by`, `direction`,
/// `flow_key` or the counter field names change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct BandwidthConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// `volume`: MiB in the window. `rate`: current bandwidth in Mbps.
    pub mode: Mode,
    /// Length of the sliding window (`5m`, `1h`), in event time.
    pub window: Duration,
    /// The value (MiB for `volume`, Mbps for `rate`) at which to alert.
    pub threshold: f64,
    /// Field paths whose values make the group key. Default: none (one group).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// evicted, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 1000000.
    #[serde(default = "crate::stages::window::default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// Which counters count: `in`, `out` or `both`. Default: `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Field paths that identify one flow, for the difference of lifetime counters and
    /// the per-flow rate. Default: `[src.ip, dst.ip, service.port, service.proto]`, or
    /// `[src_ip, dst_ip, dst_port, proto]` for flat records (no `src` field).
    #[serde(default)]
    pub flow_key: Option<Vec<String>>,
    /// Lifetime bytes-in counter. Default: `dst_bi`.
    #[serde(default = "default_bytes_in")]
    pub bytes_in: String,
    /// Lifetime bytes-out counter. Default: `dst_bo`.
    #[serde(default = "default_bytes_out")]
    pub bytes_out: String,
    /// Bytes-in of the interval (delta counter). Default: `dbi`.
    #[serde(default = "default_delta_in")]
    pub delta_in: String,
    /// Bytes-out of the interval (delta counter). Default: `dbo`.
    #[serde(default = "default_delta_out")]
    pub delta_out: String,
    /// Length of the delta interval in milliseconds. Default: `ddms`.
    #[serde(default = "default_delta_ms")]
    pub delta_ms: String,
    /// How the alert reads.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn default_bytes_in() -> String {
    "dst_bi".into()
}
fn default_bytes_out() -> String {
    "dst_bo".into()
}
fn default_delta_in() -> String {
    "dbi".into()
}
fn default_delta_out() -> String {
    "dbo".into()
}
fn default_delta_ms() -> String {
    "ddms".into()
}

/// What the stage measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Bytes in the window, in MiB (1,048,576 bytes).
    Volume,
    /// Current bandwidth, in Mbps (1,000,000 bits per second).
    Rate,
}

/// Which byte counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Bytes in only (`dst_bi`, `dbi`).
    In,
    /// Bytes out only (`dst_bo`, `dbo`).
    Out,
    /// Both.
    #[default]
    Both,
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["flows"],
        "mode": "rate",
        "window": "10m",
        "threshold": 500,
        "group_by": ["dst.ip"],
        "direction": "both",
        "alert": {"severity": "high"}
    })
}

/// The default flow key of nested (PCE REST) records.
pub(super) const REST_FLOW_KEY: [&str; 4] = ["src.ip", "dst.ip", "service.port", "service.proto"];
/// The default flow key of flat (syslog) records.
pub(super) const FLAT_FLOW_KEY: [&str; 4] = ["src_ip", "dst_ip", "dst_port", "proto"];

impl BandwidthConfig {
    /// The templates of this stage's alerts and their unit, for an example alert (`vigil
    /// send-test`); `None` when they do not compile (`vigil validate` reports that).
    pub fn alert_templates(
        &self,
        pipeline: &str,
        stage: &str,
    ) -> Option<(AlertTemplates, &'static str)> {
        AlertTemplates::compile(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            pipeline,
            stage,
        )
        .ok()
        .map(|t| (t, self.unit()))
    }

    /// The unit of value and threshold.
    pub(super) fn unit(&self) -> &'static str {
        match self.mode {
            Mode::Volume => "MiB",
            Mode::Rate => "Mbps",
        }
    }

    /// The default alert title.
    pub(super) fn default_title(&self) -> String {
        let from = if self.group_by.is_empty() {
            String::new()
        } else {
            " from {{group_key}}".to_string()
        };
        match self.mode {
            Mode::Volume => format!(
                "{{{{#if estimate}}}}at least {{{{/if}}}}{{{{size value unit=unit}}}}{from} in {{{{window.length}}}}"
            ),
            Mode::Rate => {
                format!("{{{{#if estimate}}}}at least {{{{/if}}}}{{{{value}}}} Mbps{from}")
            }
        }
    }

    /// The default alert summary.
    pub(super) fn default_summary(&self) -> String {
        // Volumes read as sizes in the unit their magnitude calls for (`2.14 TiB`).
        let (what, value, threshold) = match self.mode {
            Mode::Volume => (
                "traffic volume",
                "{{size value unit=unit}}",
                "{{size threshold unit=unit}}",
            ),
            Mode::Rate => ("bandwidth", "{{value}} {{unit}}", "{{threshold}} {{unit}}"),
        };
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: the {what} fell below the threshold {threshold} ({value} in the window to {{{{window.end}}}}); it held from {{{{first_seen}}}} to {{{{last_seen}}}}.{{{{else}}}}{what} {value} reached the threshold {threshold} in the window {{{{window.start}}}} to {{{{window.end}}}}{{{{#if estimate}}}} (estimate: {{{{estimate}}}}){{{{/if}}}}{{{{/if}}}}"
        )
    }

    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/window", "`window`", &self.window);
        p.positive_number("/threshold", "`threshold`", self.threshold);
        if self.threshold.is_infinite() {
            p.error(
                "/threshold",
                codes::INVALID_VALUE,
                "`threshold` must be finite",
            );
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        if let Some(fk) = &self.flow_key {
            if fk.is_empty() {
                p.error(
                    "/flow_key",
                    codes::INVALID_VALUE,
                    "`flow_key` needs at least one field path (or leave it out for the default)",
                );
            }
            GroupBy::check(fk, "/flow_key", p);
        }
        for (name, path) in [
            ("bytes_in", &self.bytes_in),
            ("bytes_out", &self.bytes_out),
            ("delta_in", &self.delta_in),
            ("delta_out", &self.delta_out),
            ("delta_ms", &self.delta_ms),
        ] {
            if let Err(e) = FieldPath::parse(path) {
                p.error(format!("/{name}"), codes::INVALID_VALUE, e.to_string());
            }
        }
        AlertTemplates::check_with_unit(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            &self.group_by,
            Some(self.unit()),
            p,
        );
    }

    /// Builds the running stage, restoring its saved state when compatible.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let templates = AlertTemplates::for_stage(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            cx,
        )?;
        let mut stage = BandwidthStage::new(self, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        crate::stages::episode::resume(
            &mut stage,
            cx,
            self.alert.mode == crate::stages::episode::AlertMode::Episode,
        );
        Ok(Box::new(stage))
    }
}
