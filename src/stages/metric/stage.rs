//! The running `metric` stage.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{Aggregate, MetricConfig};
use crate::event::{AlertWindow, Event, Field, FieldPath, Sample, Scalar, Timestamp};
use crate::node::internal_event::{InternalEvent, ValueDroppedEarly};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget, SampleSet, slot_after};
use crate::stages::episode::{Episode, EpisodeCounts, EpisodeWindow, Reporter};
use crate::stages::keyed::{Keyed, KeyedWindow};
use crate::stages::window::{Fired, minus};

/// What decides whether a window is out of bounds: shared by the stage and its windows.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) aggregate: Aggregate,
    pub(super) above: Option<f64>,
    pub(super) below: Option<f64>,
    pub(super) min_values: usize,
}

impl Rule {
    fn outside(&self, v: f64) -> bool {
        self.above.is_some_and(|a| v > a) || self.below.is_some_and(|b| v < b)
    }

    /// The aggregate of `values` (in any order), if there are at least `min_values`.
    pub(super) fn aggregate<'a>(
        &self,
        values: impl Iterator<Item = &'a Reading> + Clone,
    ) -> Option<f64> {
        let n = values.clone().count();
        if n == 0 || n < self.min_values {
            return None;
        }
        let v = values.map(|r| r.v);
        Some(match self.aggregate {
            Aggregate::Sum => v.sum(),
            Aggregate::Avg => v.sum::<f64>() / n as f64,
            Aggregate::Min => v.fold(f64::INFINITY, f64::min),
            Aggregate::Max => v.fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Percentile(p) => {
                let mut all: Vec<f64> = v.collect();
                // Nearest rank: ⌈p/100 × n⌉, from 1.
                let rank = (usize::from(p) * n).div_ceil(100).clamp(1, n);
                let (_, nth, _) = all.select_nth_unstable_by(rank - 1, f64::total_cmp);
                *nth
            }
        })
    }
}

/// One value of a window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Reading {
    pub(super) t: Timestamp,
    pub(super) v: f64,
}

/// One key's window: its values in time order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct MetricWindow {
    values: VecDeque<Reading>,
    newest: Option<Timestamp>,
    /// Time of the window end of the key's last alert: earlier events are late for it
    /// (`each_crossing` mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired: Option<Timestamp>,
    /// The newest time of a value that left early (`max_values`): while the window would
    /// still hold it, the aggregate is an estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    early: Option<Timestamp>,
    samples: SampleSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<Box<Episode>>,
    /// The stage's rule (set when the window is made or restored).
    #[serde(skip)]
    rule: Option<Arc<Rule>>,
}

impl MetricWindow {
    fn aggregate(&self) -> Option<f64> {
        self.rule.as_ref()?.aggregate(self.values.iter())
    }

    /// Adds `v` at `t` in time order, offers `event` as a sample and slides the window
    /// to `(newest - w, newest]`; whether a value left early to stay within `max_values`.
    fn add(
        &mut self,
        reading: (Timestamp, f64),
        w: chrono::Duration,
        max_values: usize,
        event: &Event,
        budget: &mut SampleBudget,
    ) -> bool {
        let (t, v) = reading;
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
        let at = slot_after(&self.values, |r| r.t <= t);
        self.values.insert(at, Reading { t, v });
        self.samples.offer(event, budget);
        if let Some(n) = self.newest {
            self.evict_through(minus(n, w));
        }
        let mut early = false;
        while self.values.len() > max_values {
            if let Some(r) = self.values.pop_front() {
                self.early = Some(self.early.map_or(r.t, |e| e.max(r.t)));
                early = true;
            }
        }
        early
    }

    /// Drops the values at or before `cutoff`.
    fn evict_through(&mut self, cutoff: Timestamp) {
        let before = self.values.len();
        while self.values.front().is_some_and(|r| r.t <= cutoff) {
            self.values.pop_front();
        }
        if self.values.len() != before {
            self.samples.evict_through(cutoff);
        }
        if self.early.is_some_and(|e| e <= cutoff) {
            self.early = None;
        }
    }
}

impl KeyedWindow for MetricWindow {
    fn fired(&self) -> Option<Timestamp> {
        self.fired
    }

    fn sample_bytes(&self) -> usize {
        self.samples.bytes()
    }
}

impl EpisodeWindow for MetricWindow {
    fn episode_mut(&mut self) -> &mut Option<Box<Episode>> {
        &mut self.episode
    }

    fn episode(&self) -> Option<&Episode> {
        self.episode.as_deref()
    }

    /// The aggregate; 0 when the window holds too few values to have one.
    fn total(&self) -> f64 {
        self.aggregate().unwrap_or(0.0)
    }

    /// Whether the aggregate is outside the bounds (the threshold is not used: the
    /// window's rule holds both bounds).
    fn reached(&mut self, _threshold: f64) -> bool {
        let rule = self.rule.clone();
        rule.is_some_and(|r| self.aggregate().is_some_and(|a| r.outside(a)))
    }

    fn slide_to(&mut self, cutoff: Timestamp) {
        self.evict_through(cutoff);
    }

    fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    /// Approximate while a value that left early would still be in the window.
    fn estimate(&self) -> Option<&'static str> {
        self.early.map(|_| crate::stages::alerting::APPROXIMATE)
    }

    /// The aggregate's name and how many values it was made of.
    fn alert_fields(&self) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        if let Some(rule) = &self.rule {
            fields.insert("aggregate".into(), Value::from(rule.aggregate.name()));
        }
        fields.insert("values".into(), Value::from(self.values.len()));
        fields
    }

    fn samples(&self, n: usize) -> Vec<Sample> {
        self.samples.copies(n)
    }

    fn fire(&mut self, window: chrono::Duration) -> Fired {
        let end = self.newest.unwrap_or(Timestamp::MIN_UTC);
        let start = match self.fired {
            Some(previous) => minus(end, window).max(previous),
            None => minus(end, window),
        };
        let fired = Fired {
            sum: self.total(),
            window: AlertWindow { start, end },
            samples: self.samples.take(),
            estimate: self.estimate(),
        };
        self.values.clear();
        self.early = None;
        self.fired = Some(end);
        fired
    }

    /// The first time, sliding on to `cutoff + window`, at which the values left make an
    /// aggregate inside the bounds (or too few for one).
    fn ended_by(
        &mut self,
        cutoff: Timestamp,
        _threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp> {
        let rule = self.rule.clone()?;
        let mut i = 0;
        while let Some(r) = self.values.get(i) {
            let t = r.t;
            if t > cutoff {
                return None;
            }
            // Values at the same time leave together.
            while self.values.get(i).is_some_and(|r| r.t == t) {
                i += 1;
            }
            if rule
                .aggregate(self.values.range(i..))
                .is_none_or(|a| !rule.outside(a))
            {
                return Some(t + window);
            }
        }
        None
    }
}

/// A finite number from a JSON number or numeric string.
fn reading(v: Field<'_>) -> Option<f64> {
    let n = match v.scalar() {
        Scalar::Num(n) => n.as_f64()?,
        Scalar::Str(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// What the stage saves of its own beside its windows.
#[derive(Serialize, Deserialize)]
struct Skipped {
    /// Events without a numeric value.
    #[serde(default)]
    skipped: u64,
}

/// Aggregates a field per group key in sliding event-time windows; see [`MetricConfig`].
pub struct MetricStage {
    field: FieldPath,
    rule: Arc<Rule>,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    keyed: Keyed<MetricWindow>,
    skipped: u64,
    max_values: usize,
}

impl MetricStage {
    /// A stage with empty windows.
    pub fn new(
        cfg: &MetricConfig,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        let field =
            FieldPath::parse(&cfg.field).map_err(|e| NodeError::from(format!("field: {e}")))?;
        if cfg.above.is_none() && cfg.below.is_none() {
            return Err(NodeError::from(
                "a `metric` stage needs `above`, `below`, or both".to_string(),
            ));
        }
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let window = cfg.window.span();
        let keyed = Keyed::new(window, cfg.max_keys, templates.samples, templates.node_id());
        Ok(MetricStage {
            field,
            rule: Arc::new(Rule {
                aggregate: cfg.aggregate,
                above: cfg.above,
                below: cfg.below,
                min_values: cfg.min_values.max(1),
            }),
            group_by,
            reporter: Reporter {
                templates,
                threshold: cfg.above.or(cfg.below).unwrap_or_default(),
                scale: 1.0,
                unit: None,
                window,
                mode: cfg.alert.mode,
                resolve_after: cfg.alert.resolve_after.map_or(window, |d| d.span()),
                history_interval,
            },
            shape: json!({"field": cfg.field, "group_by": cfg.group_by, "mode": cfg.alert.mode}),
            keyed,
            skipped: 0,
            max_values: cfg.max_values.max(1),
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.keyed.counters = counters;
        self
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.keyed.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape (`field`, `group_by`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        let rule = self.rule.clone();
        let own: Option<Skipped> = self.keyed.restore(
            saved,
            id,
            &self.shape,
            "field, group_by or alert.mode",
            |w: &mut MetricWindow| {
                // A hand-edited state is put in order too.
                w.values.make_contiguous().sort_by_key(|r| r.t);
                w.rule = Some(rule.clone());
            },
        );
        own.map(|o| self.skipped = o.skipped).is_some()
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.keyed.watermark.late
    }

    /// Events whose field was missing, not a number or not finite.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keyed.keys.len()
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.keyed.book.counts
    }
}

impl Stage for MetricStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.keyed.behind(t) {
            return;
        }
        let Some(v) = self.field.first_in(&event).and_then(reading) else {
            self.skipped += 1;
            tracing::debug!(stage = %self.keyed.id, field = %self.field.as_str(), "no numeric value: skipped");
            return;
        };
        let window = self.keyed.window;
        let Some(at) = self.keyed.at(&self.group_by.0, &*event, t) else {
            return;
        };
        if at.window.rule.is_none() {
            at.window.rule = Some(self.rule.clone());
        }
        self.reporter
            .before_event(at.key, at.window, t, at.book, out);
        if at
            .window
            .add((t, v), window, self.max_values, &event, at.budget)
        {
            ValueDroppedEarly {
                stage: at.id,
                key: at.key,
                max_values: self.max_values,
            }
            .emit(at.counters);
        }
        let group_by = &self.group_by;
        self.reporter.after_event(
            at.key,
            at.window,
            &event,
            || group_by.group(event.data()),
            at.book,
            out,
        );
        self.keyed.settle(&self.reporter, out);
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        self.keyed.tick(&self.reporter, now, out);
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let own = Skipped {
            skipped: self.skipped,
        };
        self.keyed.snapshot(&self.shape, &own, max_bytes)
    }
}

impl crate::stages::episode::Resumable for MetricStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        MetricStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        MetricStage::close_at_start(self, orphans);
    }
}
