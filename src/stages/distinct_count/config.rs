//! The `distinct_count` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::stage::DistinctCountStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::stages::values::FieldSpec;
use crate::time::Duration;

/// Counts the distinct values of `field` per group key in a sliding event-time window
/// and alerts while the count is at or over `threshold` (`count >= threshold`, as
/// `window_count`): one alert per episode. A port scan is the distinct `service.port`
/// values per `src.ip`; a password spray the distinct `user` values per source.
///
/// - **Values.** `field` is one field path, or a list of paths whose values together make
///   one value (a tuple: `[dst.ip, service.port]` counts distinct address and port
///   pairs). Values are compared by their JSON text, the way group keys are: the number
///   `22` and the string `"22"` are the same value (a port is a number in the PCE's REST
///   flows and may be a string in a syslog export), as are `true` and `"true"`; `22` and
///   `22.0` are not. An event whose field is missing or `null` (for a tuple: any of its
///   fields) has no value: it is counted (`missing` in the stage's state,
///   `vigil_node_dropped_total{reason="unmeasured"}`) and changes nothing.
/// - **Window.** Each group key has its own window `(newest - window, newest]` (see
///   `window_count`); a value counts while its latest sighting is in it, so a value seen
///   again stays in, and one not seen for `window` leaves. Late events (at or before the
///   stage's watermark − window) are counted as late and never mixed in.
/// - **Exact, then estimated.** A key counts its values exactly (a set of values, each
///   with the time it was last seen) up to `exact_up_to` distinct values in its window.
///   One more and the key switches to a HyperLogLog estimate (a standard error of about
///   0.8%) kept per sixteenth of the window; its alerts then say `estimate: approximate`,
///   and the window it counts over may reach up to a sixteenth of `window` further back.
///   A key goes back to exact counting once its window is empty.
/// - **Alert.** `value` is the number of distinct values; the alert's `fields` carry
///   `distinct_values` (up to `values_shown` of the values in the window, those seen first,
///   a tuple as a list), `distinct_values_omitted` (how many more the window holds) and
///   `distinct_method` (`exact` or `hyperloglog`). The default summary lists them, so a
///   mail names the ports scanned.
/// - **Episodes, `alert.mode: each_crossing`, `alert.resolve_after`, state across
///   restarts** as `window_count`. The state is reset when `field`, `group_by` or
///   `alert.mode` change, and kept when `threshold`, `window`, `exact_up_to`,
///   `values_shown` or the rest of `alert` change.
/// - **Memory.** A key costs about 300 bytes, plus per distinct value counted exactly
///   about 50 bytes while it has up to 32 and about 100 bytes past that (a map and a
///   tree), plus about 40 bytes and the text per value listed; an estimated key takes at
///   most about 250 KB (17 sketches of 12 KB; fewer while its values are few). So a key
///   holds at most about `exact_up_to` × 100 bytes (1 MB at the default), and the stage at
///   most `max_keys` times what its keys hold: size `max_keys` for the keys that may hold
///   many values at once. Keys are dropped once nothing of them can count, and past
///   `max_keys` the least recently seen are evicted (their episodes resolved).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct DistinctCountConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The field whose distinct values are counted (`service.port`), or a list of fields
    /// whose values together make one value (`[dst.ip, service.port]`).
    pub field: FieldSpec,
    /// Length of the sliding window (`30s`, `15m`, `1h`), in event time.
    pub window: Duration,
    /// The number of distinct values in the window at which to alert: the key fires when
    /// it holds `threshold` values or more (`>=`).
    pub threshold: f64,
    /// Field paths whose values make the group key (`src.ip`); each key has its own
    /// window. Default: none (one window for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most distinct values a key counts exactly (each kept as a hash with the time
    /// it was last seen: about 100 bytes). Past it the key's count is a HyperLogLog
    /// estimate (about 0.8% standard error, at most about 250 KB a key) marked
    /// `estimate: approximate`. `0` estimates from the first value. Default: 10000 — well
    /// above the thresholds detections use (a port scan: tens to a few thousand ports), so
    /// their crossings are decided on exact counts; only keys with more values than that
    /// in one window (about 1 MB each at the bound) pay for the estimate's 250 KB instead.
    #[serde(default = "default_exact_up_to")]
    #[schemars(range(max = 1_000_000))]
    pub exact_up_to: usize,
    /// How many of the distinct values an alert lists (`fields.distinct_values`), those
    /// seen first in its window. Default: 20.
    #[serde(default = "default_values_shown")]
    #[schemars(range(max = 100))]
    pub values_shown: usize,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// evicted, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 100000 (a key holding many
    /// values takes far more than a `window_count` key: see the stage's memory notes).
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn default_exact_up_to() -> usize {
    10_000
}

fn default_values_shown() -> usize {
    20
}

fn default_max_keys() -> usize {
    100_000
}

fn example() -> Value {
    json!({
        "inputs": ["flows"],
        "field": "service.port",
        "window": "15m",
        "threshold": 25,
        "group_by": ["src.ip"],
        "alert": {"severity": "high", "title": "Port scan from {{group.src.ip}}: {{value}} ports"}
    })
}

impl DistinctCountConfig {
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
        let what = format!("{{{{value}}}} distinct {}", self.field.text());
        if self.group_by.is_empty() {
            format!("{what} in {{{{window.length}}}}")
        } else {
            format!("{what} from {{{{group_key}}}} in {{{{window.length}}}}")
        }
    }

    /// The default alert summary: the count against the threshold, then the values.
    pub(super) fn default_summary(&self) -> String {
        let what = format!("distinct {}", self.field.text());
        // A tuple reads `(10.0.0.5, 22)`.
        let value = if self.field.is_tuple() {
            "({{#each this}}{{#if @index}}, {{/if}}{{this}}{{/each}})"
        } else {
            "{{this}}"
        };
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: the count of {what} fell below the threshold {{{{threshold}}}} ({{{{value}}}} in the window to {{{{window.end}}}}); it held from {{{{first_seen}}}} to {{{{last_seen}}}}.{{{{else}}}}{{{{value}}}} {what}{{{{#if estimate}}}} (estimated, within about 2%){{{{/if}}}} reached the threshold {{{{threshold}}}} in the window {{{{window.start}}}} to {{{{window.end}}}}: {{{{#each fields.distinct_values}}}}{{{{#if @index}}}}, {{{{/if}}}}{value}{{{{/each}}}}{{{{#if fields.distinct_values_omitted}}}} and {{{{fields.distinct_values_omitted}}}} more{{{{/if}}}}.{{{{/if}}}}"
        )
    }

    /// What the alerts' `fields` look like, for checking templates and for an example
    /// alert (`vigil send-test`): the distinct values of `field` in `records` (up to
    /// `values_shown`), or two made-up values when they have none; one more omitted.
    pub fn example_fields(&self, records: &[Value]) -> serde_json::Map<String, Value> {
        let paths: Vec<FieldPath> = self
            .field
            .paths()
            .into_iter()
            .filter_map(|p| FieldPath::parse(p).ok())
            .collect();
        let mut values: Vec<Value> = Vec::new();
        for r in records {
            let parts: Option<Vec<Value>> = paths.iter().map(|p| p.first(r).cloned()).collect();
            let value = match parts {
                Some(mut parts) if parts.len() == 1 && !self.field.is_tuple() => parts.remove(0),
                Some(parts) => Value::Array(parts),
                None => continue,
            };
            if !values.contains(&value) && values.len() < self.values_shown {
                values.push(value);
            }
        }
        if values.is_empty() {
            let one = |i: usize| {
                if self.field.is_tuple() {
                    Value::Array(vec![json!("example"), json!(i)])
                } else {
                    json!(i)
                }
            };
            values = vec![one(1), one(2)];
        }
        let mut fields = serde_json::Map::new();
        fields.insert("distinct_values".into(), Value::Array(values));
        fields.insert("distinct_values_omitted".into(), json!(1));
        fields.insert("distinct_method".into(), json!("exact"));
        fields
    }

    /// Structural checks: field paths that parse, a positive window and threshold,
    /// templates that render.
    pub fn check(&self, p: &mut Problems) {
        self.field.check(p, "several to count distinct tuples");
        p.positive_duration("/window", "`window`", &self.window);
        p.positive_number("/threshold", "`threshold`", self.threshold);
        if self.threshold.is_infinite() {
            p.error(
                "/threshold",
                codes::INVALID_VALUE,
                "`threshold` must be finite",
            );
        }
        if self.exact_up_to > 1_000_000 {
            p.error(
                "/exact_up_to",
                codes::INVALID_VALUE,
                "`exact_up_to` is at most 1000000 (about 100 MB for one key): past it the estimate is within 1%",
            );
        }
        if self.threshold.is_finite() && self.threshold > self.exact_up_to as f64 {
            p.warning(
                "/threshold",
                codes::INVALID_VALUE,
                format!(
                    "`threshold` {} is above `exact_up_to` {}: a key reaches it only once estimated (about 0.8% standard error), so it may fire a little early or late; raise `exact_up_to` to at least the threshold to decide on exact counts",
                    self.threshold, self.exact_up_to
                ),
            );
        }
        if self.values_shown > 100 {
            p.error(
                "/values_shown",
                codes::INVALID_VALUE,
                "`values_shown` is at most 100",
            );
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        AlertTemplates::check_with_fields(
            &self.alert,
            (&self.default_title(), &self.default_summary()),
            &self.group_by,
            None,
            &self.example_fields(&[]),
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
        let mut stage = DistinctCountStage::new(self, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        crate::stages::episode::resume(
            &mut stage,
            cx,
            self.alert.mode == crate::stages::episode::AlertMode::Episode,
        );
        Ok(Box::new(stage))
    }
}
