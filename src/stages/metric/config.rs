//! The `metric` stage's configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::stage::MetricStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// An aggregate of a numeric field (`avg`, `min`, `max`, `sum`, or a percentile `p50` …
/// `p99`) per group key over a sliding event-time window; alerts while it is strictly
/// above `above` or strictly below `below`: one alert per episode.
///
/// - **Values.** Each event adds the value of `field`: a number or a numeric string,
///   negative ones included. An event whose field is missing, not a number, or not finite
///   adds nothing (counted as `skipped` in the stage's state): a missing value never
///   alerts, and a window without values has no aggregate.
/// - **Window.** As `window_count`'s: each group key has its own window
///   `(newest - window, newest]`; events out of order but inside it count at their
///   place; events at or before the stage's watermark − window are late (counted, never
///   mixed in).
/// - **Aggregates.** `avg` is the mean; `sum` the total; `min` and `max` the extremes;
///   `pNN` the nearest-rank percentile: of the `n` values in the window, sorted, the one
///   at rank ⌈NN/100 × n⌉ (so `p50` of 1, 2, 3, 4 is 2, and `p99` of fewer than 100
///   values is their maximum).
/// - **Alert.** While at least `min_values` values are in the window and the aggregate
///   is outside the bounds, the key's episode is open: a `firing` alert with `value`
///   (the aggregate), `threshold` (the bound it is measured against: `above` when set,
///   else `below`), `window`, the group and samples; updated in place and reported at
///   most once per `history_interval` while it stays out; `resolved` once it is back
///   inside the bounds (or the window slid empty), dated when it was. An episode stays
///   one episode if the aggregate goes from above `above` to below `below` without
///   coming back inside in between. `alert.mode: each_crossing` alerts at each crossing
///   and starts the key's window again empty.
/// - **Memory.** At most `max_values` values a key (past it the oldest value leaves the
///   window early, the aggregate is marked an estimate while the window would still hold
///   it, and the drop is counted in `vigil_node_dropped_total{reason="evicted"}`) and
///   `max_keys` keys (the least recently seen tenth evicted past it, counted the same
///   way). Keys with nothing left that can count are swept as in `window_count`. An
///   event costs time in proportion to the values its key's window holds (the aggregate
///   is computed anew over them).
/// - **State** (windows and open episodes) survives restarts and reloads; it is reset
///   when `field`, `group_by` or `alert.mode` change (open episodes then resolved), and
///   kept when only the bounds, the aggregate, `window` or the rest of `alert` change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct MetricConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The numeric field aggregated (`cpu.percent`, `dst_bytes`).
    pub field: String,
    /// The aggregate: `avg`, `min`, `max`, `sum`, or a percentile `p1` … `p99`.
    pub aggregate: Aggregate,
    /// Length of the sliding window (`30s`, `5m`, `1h`), in event time.
    pub window: Duration,
    /// Alert while the aggregate is strictly above this. At least one of `above` and
    /// `below` is needed.
    #[serde(default)]
    pub above: Option<f64>,
    /// Alert while the aggregate is strictly below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Values a key's window must hold before its aggregate can alert (an average of
    /// one reading is rarely news). Default: 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_values: usize,
    /// The most values a key's window holds; past it the oldest leaves early (see the
    /// stage's description). Default: 10000.
    #[serde(default = "default_max_values")]
    #[schemars(range(min = 1))]
    pub max_values: usize,
    /// Field paths whose values make the group key; each key has its own window.
    /// Default: none (one window for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// evicted, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 1000000.
    #[serde(default = "crate::stages::window::default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn one() -> usize {
    1
}

fn default_max_values() -> usize {
    10_000
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["host"],
        "field": "cpu.percent",
        "aggregate": "avg",
        "window": "1m",
        "above": 80,
        "min_values": 3,
        "group_by": ["host"],
        "alert": {"severity": "high", "title": "CPU {{value}} % on {{group.host}}"}
    })
}

/// How a window's values are summed up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// The mean.
    Avg,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The total.
    Sum,
    /// The nearest-rank percentile (1 to 99).
    Percentile(u8),
}

impl Aggregate {
    /// The aggregate written `text`; `None` if it is none.
    pub fn parse(text: &str) -> Option<Aggregate> {
        Some(match text {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            _ => {
                let p: u8 = text.strip_prefix('p')?.parse().ok()?;
                if !(1..=99).contains(&p) || text.starts_with("p0") {
                    return None;
                }
                Aggregate::Percentile(p)
            }
        })
    }

    /// How it is written.
    pub fn name(self) -> String {
        match self {
            Aggregate::Avg => "avg".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Max => "max".into(),
            Aggregate::Sum => "sum".into(),
            Aggregate::Percentile(p) => format!("p{p}"),
        }
    }
}

impl JsonSchema for Aggregate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Aggregate".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "How a window's values are summed up: `avg`, `min`, `max`, `sum`, or a nearest-rank percentile `p1` … `p99`.",
            "pattern": "^(avg|min|max|sum|p([1-9]|[1-9][0-9]))$",
            "examples": ["avg", "max", "p95"]
        })
    }
}

impl<'de> Deserialize<'de> for Aggregate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Aggregate, D::Error> {
        let text = String::deserialize(d)?;
        Aggregate::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown aggregate `{text}`: use avg, min, max, sum, or a percentile p1 to p99"
            ))
        })
    }
}

impl MetricConfig {
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

    /// The bounds as people read them: `above 80`, `below 0.1`, `outside 0.1 to 0.8`.
    fn bounds_text(&self) -> String {
        match (self.above, self.below) {
            (Some(a), Some(b)) => format!("outside {b} to {a}"),
            (Some(a), None) => format!("above {a}"),
            (None, Some(b)) => format!("below {b}"),
            (None, None) => "outside its bounds".into(),
        }
    }

    /// The default alert title.
    pub(super) fn default_title(&self) -> String {
        let what = format!("{} of {}", self.aggregate.name(), self.field);
        let whom = if self.group_by.is_empty() {
            String::new()
        } else {
            " for {{group_key}}".to_string()
        };
        format!(
            "{what} {{{{value}}}}{whom}, {} in {{{{window.length}}}}",
            self.bounds_text()
        )
    }

    /// The default alert summary.
    pub(super) fn default_summary(&self) -> String {
        let what = format!("the {} of {}", self.aggregate.name(), self.field);
        let bounds = self.bounds_text();
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: {what} is back within its bounds ({{{{value}}}} in the window to {{{{window.end}}}}); it was {bounds} from {{{{first_seen}}}} to {{{{last_seen}}}}.{{{{else}}}}{what} is {{{{value}}}}, {bounds}, in the window {{{{window.start}}}} to {{{{window.end}}}}{{{{/if}}}}"
        )
    }

    /// Structural checks: a positive window, a field path that parses, at least one
    /// finite bound (and `below` under `above`), templates that render.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/window", "`window`", &self.window);
        if let Err(e) = FieldPath::parse(&self.field) {
            p.error("/field", codes::INVALID_VALUE, e.to_string());
        }
        if self.above.is_none() && self.below.is_none() {
            p.error(
                "",
                codes::INVALID_VALUE,
                "a `metric` stage needs `above`, `below`, or both: the bounds outside which it alerts",
            );
        }
        for (pointer, name, bound) in [
            ("/above", "above", self.above),
            ("/below", "below", self.below),
        ] {
            if bound.is_some_and(|b| !b.is_finite()) {
                p.error(
                    pointer,
                    codes::INVALID_VALUE,
                    format!("`{name}` must be a finite number"),
                );
            }
        }
        if let (Some(a), Some(b)) = (self.above, self.below)
            && b > a
        {
            p.error(
                "/below",
                codes::INVALID_VALUE,
                format!("`below` ({b}) is over `above` ({a}): every value would alert; swap them"),
            );
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
        let mut stage = MetricStage::new(self, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        crate::stages::episode::resume(
            &mut stage,
            cx,
            self.alert.mode == crate::stages::episode::AlertMode::Episode,
        );
        Ok(Box::new(stage))
    }
}
