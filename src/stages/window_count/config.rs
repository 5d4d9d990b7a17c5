//! The `window_count` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::stage::WindowCountStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// Counts events (or sums a numeric field) per group key in a sliding event-time window
/// and alerts while the count is at or over `threshold`: one alert per episode.
///
/// - **Window.** Each group key (the values of `group_by`; a missing field and an empty
///   string are different keys) has its own window `(newest - window, newest]`, where
///   `newest` is the newest event time seen for that key. An event exactly `window`
///   older than the newest is out. Events that arrive out of order but inside the window
///   count at their place.
/// - **Alert.** When the count (or sum) reaches `threshold` the key's episode opens: a
///   `firing` alert with `value` (the count or sum), `threshold`, `window` (`start` =
///   newest − window, `end` = newest), `first_seen`, the group and up to `alert.samples`
///   of the events in the window. `threshold: 1` alerts on the first matching event.
/// - **While the key stays at or over the threshold** the episode is updated in place
///   (`last_seen`, `updates`, samples up to the limit; no alert made, nothing written)
///   and reported again with the window's total at most once per `history_interval`
///   (settings). When the window falls below the threshold, or the key had no event for
///   `alert.resolve_after` (default: `window`), a `resolved` alert with the same id
///   closes it, dated when the window fell below.
/// - **`alert.mode: each_crossing`** keeps ElastAlert's frequency rule: an alert at each
///   crossing, after which the key's window starts again empty and events of that key
///   older than the alert's window end are counted as late.
/// - **Late events.** The stage's watermark is the newest event time it has seen. An
///   event at or before watermark − window is late: it is counted (`late` in the stage's
///   state, logged at debug level) and never mixed into a window.
/// - **Sum.** With `sum: <path>` each event adds the numeric value of that field
///   (numbers or numeric strings). A missing, non-numeric or negative value adds 0 and is
///   counted as `skipped`.
/// - **Memory.** A key is dropped once its newest event is at or before
///   watermark − window (nothing of it can count any more); keys are swept on every tick
///   and whenever the watermark has moved a window length. State is thus bounded by the
///   keys active within about two window lengths of the watermark, each holding at most
///   one entry per distinct event time in its window (events at the same time merge),
///   plus `alert.samples` samples.
/// - **State** (windows and open episodes) survives restarts and reloads; it is reset
///   when `group_by`, `sum` or `alert.mode` changes (the open episodes are then resolved),
///   and kept when only `threshold`, `window` or the rest of `alert` change (the new
///   threshold applies from the next event).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct WindowCountConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// Length of the sliding window (`30s`, `5m`, `1h`), in event time.
    pub window: Duration,
    /// The count (or sum) at which to alert; `1` alerts on the first event.
    pub threshold: f64,
    /// A numeric field to sum instead of counting events (`num_connections`).
    #[serde(default)]
    pub sum: Option<String>,
    /// Field paths whose values make the group key; each key has its own window.
    /// Default: none (one window for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// evicted, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. A key seen at one event time takes
    /// about 150 bytes (a million keys: about 150 MB). Default: 1000000.
    #[serde(default = "crate::stages::window::default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["blocked"],
        "window": "5m",
        "threshold": 20,
        "group_by": ["src.ip"],
        "alert": {"severity": "high", "title": "Port scan from {{group.src.ip}}"}
    })
}

impl WindowCountConfig {
    /// The templates of this stage's alerts, for an example alert (`vigil send-test`);
    /// `None` when they do not compile (`vigil validate` reports that).
    pub fn alert_templates(&self, pipeline: &str, stage: &str) -> Option<AlertTemplates> {
        AlertTemplates::compile(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            pipeline,
            stage,
        )
        .ok()
    }

    /// The default alert title.
    pub(super) fn default_title(&self) -> String {
        let what = match &self.sum {
            Some(path) => format!("{{{{value}}}} {path}"),
            None => "{{value}} events".to_string(),
        };
        if self.group_by.is_empty() {
            format!("{what} in {{{{window.length}}}}")
        } else {
            format!("{what} from {{{{group_key}}}} in {{{{window.length}}}}")
        }
    }

    /// The default alert summary.
    pub(super) fn default_summary(&self) -> String {
        let what = match &self.sum {
            Some(path) => format!("sum of {path}"),
            None => "count".to_string(),
        };
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: the {what} fell below the threshold {{{{threshold}}}} ({{{{value}}}} in the window to {{{{window.end}}}}); it held from {{{{first_seen}}}} to {{{{last_seen}}}}.{{{{else}}}}{what} {{{{value}}}} reached the threshold {{{{threshold}}}} in the window {{{{window.start}}}} to {{{{window.end}}}}{{{{/if}}}}"
        )
    }

    /// Structural checks: a positive window and threshold, field paths that parse,
    /// templates that render.
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
        if let Some(sum) = &self.sum
            && let Err(e) = FieldPath::parse(sum)
        {
            p.error("/sum", codes::INVALID_VALUE, e.to_string());
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        AlertTemplates::check(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            &self.group_by,
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
        let mut stage = WindowCountStage::new(self, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        crate::stages::episode::resume(
            &mut stage,
            cx,
            self.alert.mode == crate::stages::episode::AlertMode::Episode,
        );
        Ok(Box::new(stage))
    }
}
