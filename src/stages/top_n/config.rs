//! The `top_n` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::stage::{TopNSpec, TopNStage};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// Adds a top-N table to alerts: the keys (values at `by`) with the most events, or the
/// biggest sum of `sum`, in the alert's window.
///
/// Its `inputs` may mix raw events and alerts (`inputs: [blocked, burst]`: a filter and
/// the detection stage reading it). Raw events are recorded (only their time, `by`
/// values, weight and `within` values — never the event itself) and are not handed on.
/// An alert gets a `top` table over the recorded events with times from its window's start
/// to its end (both included) and is handed on. With `within`, only events whose values at
/// those paths equal the alert's group values at the same paths count (`within: [src.ip]`:
/// the top ports of the IP that fired); an alert not grouped by such a path matches events
/// where it is missing or null. Rows are biggest first, ties in key order; `total` and
/// `keys` count every key, not only the `n` shown.
///
/// With `window`, the stage also raises a report of its own at the end of each tumbling
/// event-time window (aligned to the epoch) that had events: value = the total, threshold
/// 0, the table in `top`. A window ends when an event at or after its end arrives, or,
/// when events stop, once the clock has moved past its end as far as it was ahead of the
/// newest event time; at the end of the input all open windows are reported. Events
/// arriving for a window already reported are counted as late and left out of reports.
///
/// With `sum`, events whose field is missing, not a number (numeric strings count), negative
/// or not finite are skipped and counted. Events are kept for `retain` (at least `window`)
/// behind the newest event time, at most `max_events` of them (the oldest go first, counted):
/// an alert whose window reaches further back gets a table of what is still held. Raw events
/// should reach this stage before the alerts they caused (the usual case when both come
/// from the same upstream). The recorded events survive restarts unless `by`, `sum` or
/// `within` change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct TopNConfig {
    /// The sources or stages this stage reads: raw events to record, alerts to annotate.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// Field paths whose values make a row's key.
    #[schemars(length(min = 1))]
    pub by: Vec<String>,
    /// How many rows a table shows. Default: 5.
    #[serde(default = "default_n")]
    pub n: usize,
    /// A numeric field to sum per key. Default: count events.
    #[serde(default)]
    pub sum: Option<String>,
    /// A window of its own: report the top N at the end of each (event time).
    #[serde(default)]
    pub window: Option<Duration>,
    /// Field paths that restrict an alert's table to events with the alert's group values.
    #[serde(default)]
    pub within: Vec<String>,
    /// How the stage's own reports read (with `window`).
    #[serde(default)]
    pub alert: AlertConfig,
    /// How long recorded events are kept behind the newest event time (at least `window`).
    /// Default: 1h.
    #[serde(default = "default_retain")]
    pub retain: Duration,
    /// The most events recorded at once. Default: 1000000.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

fn default_n() -> usize {
    5
}

fn default_retain() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_events() -> usize {
    1_000_000
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["blocked", "burst"],
        "by": ["dst.port"],
        "n": 5,
        "sum": "num_connections",
        "within": ["src.ip"]
    })
}

impl TopNConfig {
    fn measure(&self) -> String {
        self.sum.clone().unwrap_or_else(|| "count".into())
    }

    fn default_title(&self) -> String {
        format!(
            "Top {} by {} over {{{{window.length}}}}: {{{{value}}}} in total",
            self.by.join(", "),
            self.measure()
        )
    }

    /// Structural checks: paths that parse, positive sizes and windows, templates.
    pub fn check(&self, p: &mut Problems) {
        if self.by.is_empty() {
            p.error(
                "/by",
                codes::INVALID_VALUE,
                "`by` needs at least one field path",
            );
        }
        GroupBy::check(&self.by, "/by", p);
        GroupBy::check(&self.within, "/within", p);
        if let Some(sum) = &self.sum
            && let Err(e) = FieldPath::parse(sum)
        {
            p.error("/sum", codes::INVALID_VALUE, e.to_string());
        }
        if self.n == 0 {
            p.error("/n", codes::NON_POSITIVE, "`n` must be at least 1");
        }
        if self.max_events == 0 {
            p.error(
                "/max_events",
                codes::NON_POSITIVE,
                "`max_events` must be at least 1",
            );
        }
        if let Some(w) = &self.window {
            p.positive_duration("/window", "`window`", w);
        }
        p.positive_duration("/retain", "`retain`", &self.retain);
        self.alert.check_no_episodes("top_n", p);
        AlertTemplates::check(&self.alert, &self.default_title(), DEFAULT_SUMMARY, &[], p);
    }

    /// Builds the running stage, restoring its recorded events.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let templates =
            AlertTemplates::for_stage(&self.alert, &self.default_title(), DEFAULT_SUMMARY, cx)?;
        let window = self.window.map(|w| w.span());
        let retain = self.retain.span();
        let spec = TopNSpec {
            by: GroupBy::parse(&self.by)?.0,
            sum: self
                .sum
                .as_deref()
                .map(FieldPath::parse)
                .transpose()
                .map_err(|e| e.to_string())?,
            within: GroupBy::parse(&self.within)?.0,
            n: self.n.max(1),
            window,
            retain: window.map_or(retain, |w| w.max(retain)),
            max_events: self.max_events.max(1),
        };
        let mut stage = TopNStage::new(spec, templates).counting_into(cx.counters.clone());
        if let Some(saved) = cx.restore() {
            stage.restore(&cx.id, &saved);
        }
        Ok(Box::new(stage))
    }
}

/// Default summary of the stage's own reports.
const DEFAULT_SUMMARY: &str =
    "{{pipeline}}.{{stage}}: {{value}} in total from {{window.start}} to {{window.end}}.";
