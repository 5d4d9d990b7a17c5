//! One group key's window of distinct values.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::exact::{ExactSet, Shown};
use super::sketch::Sketches;
use crate::event::{AlertWindow, Event, Sample, Timestamp};
use crate::stages::alerting::{APPROXIMATE, SampleBudget, SampleSet};
use crate::stages::episode::{Episode, EpisodeWindow};
use crate::stages::values::shown_value;
use crate::stages::window::{Fired, minus};

/// What a key counts with, besides its window (the stage's settings).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The window length.
    pub(super) window: chrono::Duration,
    /// Values counted exactly before the key is estimated.
    pub(super) exact_up_to: usize,
    /// Values an alert lists.
    pub(super) values_shown: usize,
    /// Whether a value is a tuple (shown as a list).
    pub(super) tuple: bool,
}

/// A key's distinct values in `(newest - window, newest]`: exactly, or estimated past
/// `exact_up_to`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct DistinctWindow {
    /// The values and when each was last seen, while counted exactly.
    #[serde(default, skip_serializing_if = "ExactSet::is_empty")]
    exact: ExactSet,
    /// The estimate, once the key had more than `exact_up_to` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sketch: Option<Box<Sketches>>,
    /// Values to list in an alert.
    #[serde(default, skip_serializing_if = "Shown::is_empty")]
    shown: Shown,
    /// Whether values are tuples (for showing them; set by the stage).
    #[serde(skip)]
    tuple: bool,
    /// The newest event time of the key (kept across a firing).
    pub(super) newest: Option<Timestamp>,
    /// `each_crossing`: the end of the window of the key's last alert; earlier events are
    /// late for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fired: Option<Timestamp>,
    #[serde(default)]
    samples: SampleSet,
    /// The key's open alert episode (`episode` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) episode: Option<Box<Episode>>,
}

impl DistinctWindow {
    /// Sets what the stage's settings say of its values, after a restore.
    pub(super) fn set_tuple(&mut self, tuple: bool) {
        self.tuple = tuple;
    }

    /// The number of distinct values (estimated once the key has sketches).
    pub(super) fn count(&self) -> usize {
        match &self.sketch {
            Some(s) => s.estimate(),
            None => self.exact.len(),
        }
    }

    /// Whether the key is estimated.
    pub(super) fn estimated(&self) -> bool {
        self.sketch.is_some()
    }

    /// Notes value `h` (text `text`) of `event`, seen at `t`: counts it, lists it if
    /// there is room, offers the event as a sample, and slides the window.
    pub(super) fn add(
        &mut self,
        h: u64,
        text: &str,
        t: Timestamp,
        event: &Event,
        limits: Limits,
        samples: &mut SampleBudget,
    ) {
        self.tuple = limits.tuple;
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
        // Out of order and already out of the key's window: nothing to count.
        let cutoff = self.newest.map(|n| minus(n, limits.window));
        if let Some(c) = cutoff {
            if t <= c {
                return;
            }
            // What slid out goes first: an estimated key whose buckets all left counts
            // exactly again, and a key switches to the estimate only for values in its
            // window.
            self.evict_through(c);
        }
        match &mut self.sketch {
            Some(s) => s.insert(h, t),
            None => {
                let new = !self.exact.contains(h);
                if new && self.exact.len() >= limits.exact_up_to {
                    // One value more than is counted exactly: estimate from now on.
                    let mut s = Sketches::new(limits.window);
                    for seen in self.exact.iter() {
                        s.insert(seen.h, seen.t);
                    }
                    s.insert(h, t);
                    self.exact.clear();
                    self.sketch = Some(Box::new(s));
                } else {
                    self.exact.insert(h, t);
                }
            }
        }
        self.shown.offer(h, t, text, limits.values_shown);
        self.samples.offer(event, samples);
    }

    /// Drops what is at or before `cutoff`. An estimated key whose buckets are all gone
    /// counts exactly again.
    pub(super) fn evict_through(&mut self, cutoff: Timestamp) {
        if self.exact.oldest().is_some_and(|o| o <= cutoff) {
            self.exact.evict_through(cutoff);
        }
        if let Some(s) = &mut self.sketch {
            s.slide_to(cutoff);
            if s.is_empty() {
                self.sketch = None;
            }
        }
        self.shown.evict_through(cutoff);
        self.samples.evict_through(cutoff);
    }

    /// Whether the count reached `threshold`.
    pub(super) fn reached(&self, threshold: f64) -> bool {
        self.count() as f64 >= threshold
    }

    /// The alert's `fields`: the values listed, how many more, how they were counted.
    fn fields(&self) -> serde_json::Map<String, Value> {
        let values: Vec<Value> = self
            .shown
            .iter()
            .map(|v| shown_value(&v.text, self.tuple))
            .collect();
        let omitted = self.count().saturating_sub(values.len());
        let mut fields = serde_json::Map::new();
        fields.insert("distinct_values".into(), Value::Array(values));
        fields.insert("distinct_values_omitted".into(), json!(omitted));
        fields.insert(
            "distinct_method".into(),
            json!(if self.estimated() {
                "hyperloglog"
            } else {
                "exact"
            }),
        );
        fields
    }

    /// `each_crossing`: reports the window and starts it again empty; events before its
    /// end are late for this key from now on.
    pub(super) fn fire(&mut self, w: chrono::Duration) -> Fired {
        let end = self.newest.unwrap_or(Timestamp::MIN_UTC);
        let start = match self.fired {
            Some(previous) => minus(end, w).max(previous),
            None => minus(end, w),
        };
        let fired = Fired {
            sum: self.count() as f64,
            window: AlertWindow { start, end },
            samples: self.samples.take(),
            estimate: self.estimated().then_some(APPROXIMATE),
        };
        self.exact.clear();
        self.sketch = None;
        self.shown.clear();
        self.fired = Some(end);
        fired
    }
}

impl EpisodeWindow for DistinctWindow {
    fn episode_mut(&mut self) -> &mut Option<Box<Episode>> {
        &mut self.episode
    }

    fn episode(&self) -> Option<&Episode> {
        self.episode.as_deref()
    }

    fn total(&self) -> f64 {
        self.count() as f64
    }

    fn reached(&mut self, threshold: f64) -> bool {
        DistinctWindow::reached(self, threshold)
    }

    fn slide_to(&mut self, cutoff: Timestamp) {
        self.evict_through(cutoff);
    }

    fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    fn estimate(&self) -> Option<&'static str> {
        self.estimated().then_some(APPROXIMATE)
    }

    fn alert_fields(&self) -> serde_json::Map<String, Value> {
        self.fields()
    }

    fn samples(&self, n: usize) -> Vec<Sample> {
        self.samples.copies(n)
    }

    fn fire(&mut self, window: chrono::Duration) -> Fired {
        DistinctWindow::fire(self, window)
    }

    fn ended_by(
        &mut self,
        cutoff: Timestamp,
        threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp> {
        if let Some(s) = &self.sketch {
            return s.ended_by(cutoff, threshold, window);
        }
        // Nothing leaves by the cutoff: the common case, at no cost.
        if self.exact.oldest().is_none_or(|o| o > cutoff) {
            return None;
        }
        crate::stages::episode::ended_by(
            self.exact.iter().map(|s| (s.t, 1.0)),
            cutoff,
            threshold,
            window,
        )
    }
}

impl crate::stages::keyed::KeyedWindow for DistinctWindow {
    fn fired(&self) -> Option<Timestamp> {
        self.fired
    }

    fn sample_bytes(&self) -> usize {
        self.samples.bytes()
    }
}
