//! The `spike` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::stage::SpikeStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::stages::episode::AlertMode;
use crate::time::Duration;

/// Compares, per group key, the events (or a field's sum) of the current window with
/// those of the window just before it, and alerts while one is `ratio` times the other:
/// one alert per spike episode.
///
/// - **Windows.** Every key is measured at one end `T`, the stage's clock (below): the
///   *current* window is `(T − window, T]`, the *reference* window the one just before
///   it, `(T − 2·window, T − window]`. Both are half-open like `window_count`'s: an event
///   exactly `window` older than `T` has left the current window for the reference one,
///   and one exactly `2·window` older has left both.
/// - **Measure.** `measure: count` counts events; `measure: {sum: <field>}` adds up the
///   field's value (a non-negative number or numeric string; an event without one adds
///   nothing and is counted as `skipped` in the stage's state).
/// - **Spikes.** With `ratio: r`, an *up*-spike holds while current ≥ r × reference, with
///   current ≥ `min_current` and more than 0; a *down*-spike while current ≤
///   reference / r, with the reference more than 0. Neither holds while the reference is
///   under `min_reference`. `direction` says which alert: `up`, `down` or `both`.
/// - **Clock.** `T` is the newest event time the stage has seen (its watermark): a key
///   that falls silent while other keys go on is seen to drop as their events arrive. At
///   each tick of the engine's clock `T` also moves on past the watermark by the engine
///   time passed since the watermark last moved, less `grace`: a key, or the whole input,
///   that falls silent is seen to drop from ticks alone, at the event time its windows
///   show it. Events that come with a steady delay (a source's lag) do not read as a
///   drop, since `T` keeps that delay; between the deliveries of a source that reads in
///   batches, `grace` holds `T` back. `T` never goes back. `vigil test` and replay run
///   the same clock on their virtual time, so they alert as a live run does. The engine
///   time a restart was down for is not taken as silence: after one, `T` moves from ticks
///   counting from the first tick.
/// - **Warm-up.** A key is measured only once its reference window lies wholly in what
///   the stage has seen: from `T − 2·window` ≥ the stage's first event time (or the
///   newest time of the keys forgotten past `max_keys`, whose history is lost), so a
///   start does not read as a spike.
/// - **Episodes.** A key's condition is evaluated at each of its events and at every
///   instant its windows change without one (an event moves from the current window to
///   the reference, or leaves the reference); an episode opens at the first instant a
///   spike holds: a `firing` alert with `value` = the current window's count (or sum),
///   `threshold` = the reference × ratio (up) or the reference / ratio (down), `window` =
///   the current window, `first_seen` = that instant, and in `fields` (and as template
///   variables) `direction` (`up` or `down`) and `reference`. While the spike holds the
///   episode is updated in place by the key's events (reported again at most once per
///   `history_interval`); at the instant it no longer holds — current back within the
///   ratio, or the reference under `min_reference` — a `resolved` alert with the same id
///   closes it, dated then. A drop to silence therefore resolves once the silence fills
///   the reference window too (`flatline` tells of a key that stays quiet). With
///   `direction: both`, an up-spike that turns into a down-spike at one instant closes
///   and the down-spike opens.
/// - **Late events.** An event at or before `T − 2·window` can count in neither window:
///   it is counted as late and set aside. Events out of order but after it count in
///   their window from then on (instants already evaluated stay as they were).
/// - **Memory.** Per key: one point per distinct event time in its two windows (past
///   1024, points merge into slots of 2·window/512 — every event still counts, a merged
///   one moves later by less than a slot; counted as `coarsened`), its group, and up to
///   `alert.samples` samples of its current window. A key with nothing left in either
///   window and no open episode is forgotten. At most `max_keys` keys: past it the least
///   recently seen tenth is forgotten (their open episodes resolved), counted in
///   `vigil_node_dropped_total{reason="evicted"}`. A tick looks at the keys only when
///   one of their windows changes by its time, and then costs time in proportion to the
///   keys held.
/// - **State** (windows, clock, open episodes) survives restarts and reloads; it is
///   reset when `window`, `measure` or `group_by` change (open episodes then resolved),
///   and kept when `ratio`, `direction`, the minimums, `grace` or the rest of `alert`
///   change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct SpikeConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// Length of each window, current and reference (`10m`, `1h`), in event time.
    pub window: Duration,
    /// What a window measures: `count` (events), or `{sum: <field>}` (the sum of a
    /// numeric field, e.g. `{sum: num_connections}`). Default: `count`.
    #[serde(default)]
    pub measure: Measure,
    /// Which spikes alert: `up` (current ≥ ratio × reference), `down` (current ≤
    /// reference / ratio) or `both`. Default: `up`.
    #[serde(default)]
    pub direction: Direction,
    /// How many times the reference the current window must be for an up-spike (2:
    /// twice), or how many times smaller for a down-spike (2: half). More than 1.
    pub ratio: f64,
    /// The reference window's count (or sum) below which nothing alerts, up or down:
    /// too little traffic to compare with. Default: 1 (an empty reference never alerts,
    /// so a key's first events are no spike; `0` lets them be one).
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub min_reference: f64,
    /// Up-spikes only: the current window's count (or sum) below which no up-spike
    /// alerts, whatever the ratio (1 against 0 is not news). Default: 1.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub min_current: f64,
    /// How long, in engine time, the input may deliver nothing while its traffic goes on:
    /// for a source that reads in batches, its `interval` (a `pce_traffic` source reads
    /// flows every `interval`). Ticks move the clock past the newest event only beyond
    /// it, so the gap between two deliveries never reads as a drop; a real silence is
    /// seen that much later. Default: `0s` (events arrive as they happen).
    #[serde(default = "zero")]
    pub grace: Duration,
    /// Field paths whose values make the group key; each key has its own windows.
    /// Default: none (one pair of windows for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// forgotten, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 1000000.
    #[serde(default = "crate::stages::window::default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads. Besides the usual variables, templates see `direction` (`up`
    /// or `down`) and `reference` (the reference window's count or sum). `mode` and
    /// `resolve_after` do not apply: a spike is measured against its own past, and its
    /// episode ends when the ratio no longer holds.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn one() -> f64 {
    1.0
}

fn zero() -> Duration {
    Duration::from_secs(0)
}

fn example() -> Value {
    json!({
        "inputs": ["flows"],
        "window": "30m",
        "measure": {"sum": "num_connections"},
        "direction": "both",
        "ratio": 3,
        "min_reference": 50,
        "grace": "5m",
        "group_by": ["src.ip"],
        "alert": {"severity": "high"}
    })
}

/// What a window measures.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "SpikeMeasure")]
pub enum Measure {
    /// The number of events.
    #[default]
    Count,
    /// The sum of a numeric field (`num_connections`, `dst_bo`).
    Sum(String),
}

impl<'de> Deserialize<'de> for Measure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Measure, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SumOf {
            sum: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Sum(SumOf),
        }
        const HOW: &str = "use `count`, or `{sum: <field>}` to add up a numeric field";
        match Form::deserialize(d) {
            Ok(Form::Name(n)) if n == "count" => Ok(Measure::Count),
            Ok(Form::Name(n)) => Err(serde::de::Error::custom(format!(
                "unknown measure `{n}`: {HOW}"
            ))),
            Ok(Form::Sum(s)) => Ok(Measure::Sum(s.sum)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "`measure` is not one: {HOW}"
            ))),
        }
    }
}

/// Which spikes alert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "SpikeDirection")]
pub enum Direction {
    /// Up-spikes: current ≥ ratio × reference.
    #[default]
    Up,
    /// Down-spikes (drops): current ≤ reference / ratio.
    Down,
    /// Both.
    Both,
}

impl Direction {
    /// Whether up-spikes alert.
    pub fn up(self) -> bool {
        matches!(self, Direction::Up | Direction::Both)
    }

    /// Whether down-spikes alert.
    pub fn down(self) -> bool {
        matches!(self, Direction::Down | Direction::Both)
    }
}

impl SpikeConfig {
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

    /// An example of what an alert of this stage reports: `(value, threshold, fields)`,
    /// an up-spike (a down-spike when only those alert) against a reference of 10 — for
    /// checking templates and for `vigil send-test`.
    pub fn example_report(&self) -> (f64, f64, Map<String, Value>) {
        let reference = 10.0;
        let ratio = if self.ratio.is_finite() && self.ratio > 1.0 {
            self.ratio
        } else {
            2.0
        };
        let (direction, value, threshold) = if self.direction == Direction::Down {
            ("down", 0.0, reference / ratio)
        } else {
            ("up", reference * ratio * 1.5, reference * ratio)
        };
        let mut fields = Map::new();
        fields.insert("direction".into(), json!(direction));
        fields.insert("reference".into(), json!(reference));
        (value, threshold, fields)
    }

    /// What is measured, as people read it.
    fn what(&self) -> String {
        match &self.measure {
            Measure::Count => "events".into(),
            Measure::Sum(field) => format!("the sum of {field}"),
        }
    }

    /// The default alert title.
    pub(super) fn default_title(&self) -> String {
        let whom = if self.group_by.is_empty() {
            String::new()
        } else {
            " for {{group_key}}".to_string()
        };
        format!(
            "{{{{#if (eq direction \"up\")}}}}Spike{{{{else}}}}Drop{{{{/if}}}} in {what}{whom}: {{{{value}}}} in {{{{window.length}}}} against {{{{reference}}}} the {{{{window.length}}}} before",
            what = self.what()
        )
    }

    /// The default alert summary.
    pub(super) fn default_summary(&self) -> String {
        let what = self.what();
        let ratio = self.ratio;
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: the {{{{direction}}}}-spike of {what} no longer holds ({{{{value}}}} in the window to {{{{window.end}}}} against {{{{reference}}}} in the one before, for a ratio of {ratio}); it began at {{{{first_seen}}}}.{{{{else}}}}{what} went {{{{direction}}}}: {{{{value}}}} in the window {{{{window.start}}}} to {{{{window.end}}}} against {{{{reference}}}} in the {{{{window.length}}}} before it ({{{{#if (eq direction \"up\")}}}}at or over{{{{else}}}}at or under{{{{/if}}}} {{{{threshold}}}}, a ratio of {ratio}).{{{{/if}}}}"
        )
    }

    /// Structural checks: a positive window, a ratio over 1, minimums that are numbers,
    /// a `grace` that is not negative, field paths that parse, no `alert.mode` or
    /// `alert.resolve_after`, templates that render.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/window", "`window`", &self.window);
        if !(self.ratio.is_finite() && self.ratio > 1.0) {
            p.error(
                "/ratio",
                codes::INVALID_VALUE,
                format!(
                    "`ratio` must be a number greater than 1, not {}: 2 alerts when the current window is twice the reference (up) or half of it (down)",
                    self.ratio
                ),
            );
        }
        for (pointer, name, v) in [
            ("/min_reference", "min_reference", self.min_reference),
            ("/min_current", "min_current", self.min_current),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                p.error(
                    pointer,
                    codes::INVALID_VALUE,
                    format!("`{name}` must be a number of 0 or more, not {v}"),
                );
            }
        }
        if self.grace.is_negative() {
            p.error(
                "/grace",
                codes::INVALID_VALUE,
                format!("`grace` must not be negative, not `{}`", self.grace),
            );
        }
        if let Measure::Sum(field) = &self.measure
            && let Err(e) = FieldPath::parse(field)
        {
            p.error("/measure/sum", codes::INVALID_VALUE, e.to_string());
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        if self.alert.mode != AlertMode::Episode {
            p.error(
                "/alert/mode",
                codes::INVALID_VALUE,
                "`alert.mode` does not apply to spike: a spike is one episode while it lasts (starting its windows again empty would lose the reference); remove it",
            );
        }
        if self.alert.resolve_after.is_some() {
            p.error(
                "/alert/resolve_after",
                codes::INVALID_VALUE,
                "`alert.resolve_after` does not apply to spike: its episode ends when the ratio no longer holds, measured from ticks too; remove it",
            );
        }
        let (_, _, fields) = self.example_report();
        AlertTemplates::check_with_fields(
            &self.alert,
            (&self.default_title(), &self.default_summary()),
            &self.group_by,
            None,
            &fields,
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
        let mut stage = SpikeStage::new(self, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        crate::stages::episode::resume(&mut stage, cx, true);
        Ok(Box::new(stage))
    }
}
