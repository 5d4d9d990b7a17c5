//! What every windowed detection stage does the same way around its own windows: the
//! stage-wide watermark and late events, a window per group key (made on a key's first
//! event, forgotten once nothing of it can count), the bound on keys, the sample budget,
//! and the episodes it leaves to [`Reporter`].
//!
//! A stage (`window_count`, `metric`, `ratio`, `distinct_count`) keeps a [`Keyed`] of its
//! window type and adds only what it measures:
//!
//! ```text
//! process: behind(t)? → at(group_by, event)? → before_event → add → after_event → settle
//! tick:    tick(now)
//! ```

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::alerting::SampleBudget;
use super::episode::{Book, EpisodeCounts, EpisodeWindow, Reporter, open_keys};
use super::keys::KeyMap;
use super::window::{Watermark, write_key};
use crate::event::{Event, FieldPath, Fields, Timestamp};
use crate::node::internal_event::{InternalEvent, KeysEvicted, LateEvent, Lateness};
use crate::node::{NodeCounters, Snapshot};

/// A window a [`Keyed`] holds per group key.
pub trait KeyedWindow: EpisodeWindow + Default {
    /// `each_crossing`: the end of the window of the key's last alert (earlier events are
    /// late for it).
    fn fired(&self) -> Option<Timestamp>;

    /// Bytes of the samples it holds (for the stage's sample budget).
    fn sample_bytes(&self) -> usize;

    /// Whether `t` belongs to a window this key already alerted on.
    fn late_for_key(&self, t: Timestamp) -> bool {
        self.fired().is_some_and(|f| t < f)
    }

    /// Whether nothing of this key can count any more (`newest <= cutoff`).
    fn expired(&self, cutoff: Timestamp) -> bool {
        self.newest().is_none_or(|n| n <= cutoff)
    }
}

/// A stage's windows by group key and everything kept beside them; see the module
/// documentation.
pub struct Keyed<W> {
    /// The windows.
    pub keys: KeyMap<W>,
    /// Open episodes and their counters.
    pub book: Book,
    /// Samples the windows keep.
    pub budget: SampleBudget,
    /// Resolutions of episodes left open by a state the stage did not restore.
    pub orphans: Vec<Arc<Event>>,
    /// The newest event time seen, and the late events counted.
    pub watermark: Watermark,
    /// The group key of the event at hand.
    pub key_buf: String,
    /// The most keys held.
    pub max_keys: usize,
    /// The window length.
    pub window: chrono::Duration,
    /// Where what is set aside (late events, evicted keys) is counted.
    pub counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    pub id: Arc<str>,
}

/// What a keyed stage saves: what [`Keyed`] holds, and beside it the stage's own fields
/// (`own`, written in the same object).
#[derive(Serialize)]
struct SavedRef<'a, W, X> {
    shape: &'a Value,
    watermark: &'a Watermark,
    episodes: &'a EpisodeCounts,
    keys: &'a KeyMap<W>,
    #[serde(flatten)]
    own: &'a X,
}

/// What a keyed stage saved (see [`SavedRef`]).
#[derive(Deserialize)]
#[serde(bound(deserialize = "W: DeserializeOwned, X: DeserializeOwned"))]
struct Saved<W, X> {
    shape: Value,
    watermark: Watermark,
    #[serde(default)]
    episodes: EpisodeCounts,
    keys: KeyMap<W>,
    #[serde(flatten)]
    own: X,
}

/// The window of the event at hand and what its episode needs (see [`Keyed::at`]).
pub struct At<'a, W> {
    /// Its group key.
    pub key: &'a str,
    /// Its window.
    pub window: &'a mut W,
    /// The stage's open episodes.
    pub book: &'a mut Book,
    /// The stage's sample budget.
    pub budget: &'a mut SampleBudget,
    /// The node's id, for the log.
    pub id: &'a str,
    /// Where the node counts what it sets aside.
    pub counters: &'a NodeCounters,
}

impl<W: KeyedWindow> Keyed<W> {
    /// No keys yet: windows of `window`, at most `max_keys`, `samples` a window.
    pub fn new(window: chrono::Duration, max_keys: usize, samples: usize, id: Arc<str>) -> Self {
        Keyed {
            keys: KeyMap::new(),
            book: Book::default(),
            budget: SampleBudget::new(samples),
            orphans: Vec::new(),
            watermark: Watermark::default(),
            key_buf: String::new(),
            max_keys: max_keys.max(1),
            window,
            counters: Arc::default(),
            id,
        }
    }

    /// The stage's state as saved: `shape` (what makes a saved state fit the stage), the
    /// windows and episodes, and the stage's own fields `own`.
    pub fn snapshot<X: Serialize>(&self, shape: &Value, own: &X, max_bytes: u64) -> Option<Snapshot>
    where
        W: Serialize,
    {
        let saved = SavedRef {
            shape,
            watermark: &self.watermark,
            episodes: &self.book.counts,
            keys: &self.keys,
            own,
        };
        Snapshot::write(&saved, max_bytes)
    }

    /// Restores a state [`Keyed::snapshot`] saved (its JSON text) when its shape is
    /// `shape`: each window is first handed to `fix` (what the stage sets again after a
    /// restore), their open episodes are watched again, and the stage's own fields are
    /// returned. `None` (the state reset) when the shape differs (`shape_of` says what
    /// makes it, for the log) or the state cannot be read.
    pub fn restore<X: DeserializeOwned>(
        &mut self,
        saved: &str,
        id: &str,
        shape: &Value,
        shape_of: &str,
        fix: impl FnMut(&mut W),
    ) -> Option<X>
    where
        W: DeserializeOwned,
    {
        match serde_json::from_str::<Saved<W, X>>(saved) {
            Ok(mut s) if s.shape == *shape => {
                s.keys.values_mut().for_each(fix);
                self.watermark = s.watermark;
                self.book.counts = s.episodes;
                self.keys = s.keys;
                self.book.open = open_keys(&self.keys);
                self.recount_samples();
                tracing::debug!(stage = %id, keys = self.keys.len(), "state restored");
                Some(s.own)
            }
            Ok(_) => {
                tracing::info!(stage = %id, "{shape_of} changed: state reset");
                None
            }
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: state reset");
                None
            }
        }
    }

    /// Whether an event at `t` is late for the stage (at or before the watermark − the
    /// window): counted and logged, never mixed into a window.
    pub fn behind(&mut self, t: Timestamp) -> bool {
        if !self.watermark.observe(t, self.window) {
            return false;
        }
        self.watermark.late += 1;
        LateEvent {
            stage: &self.id,
            time: t,
            key: None,
            why: Lateness::BehindWatermark,
        }
        .emit(&self.counters);
        true
    }

    /// The window of `event`'s key (`group_by` of it), made if new — or `None` when the
    /// key already alerted on a window that holds `t` (`each_crossing`: counted as late).
    pub fn at<'a>(
        &'a mut self,
        group_by: &[FieldPath],
        event: &(impl Fields + ?Sized),
        t: Timestamp,
    ) -> Option<At<'a, W>> {
        write_key(&mut self.key_buf, group_by, event);
        let window = self.keys.get_or_default(&self.key_buf);
        if window.late_for_key(t) {
            self.watermark.late += 1;
            LateEvent {
                stage: &self.id,
                time: t,
                key: Some(&self.key_buf),
                why: Lateness::WindowAlerted,
            }
            .emit(&self.counters);
            return None;
        }
        Some(At {
            key: &self.key_buf,
            window,
            book: &mut self.book,
            budget: &mut self.budget,
            id: &self.id,
            counters: &self.counters,
        })
    }

    /// After an event: forgets the keys nothing of which can count any more (when the
    /// watermark moved a window length since the last sweep), and evicts the least
    /// recently seen past `max_keys`.
    pub fn settle(&mut self, reporter: &Reporter, out: &mut Vec<Arc<Event>>) {
        if let Some(cutoff) = self.watermark.sweep_due(self.window) {
            self.sweep(reporter, cutoff, out);
        }
        if self.keys.len() > self.max_keys {
            let evicted = reporter.evict_oldest(&mut self.keys, self.max_keys, &mut self.book, out);
            KeysEvicted {
                stage: &self.id,
                keys: evicted as u64,
                max_keys: self.max_keys,
                warning: super::episode::EVICTING,
            }
            .emit(&self.counters);
            self.recount_samples();
        }
    }

    /// A tick at engine time `now`: hands on the orphans' resolutions, lets the reporter
    /// close, resolve or report the open episodes, and sweeps.
    pub fn tick(&mut self, reporter: &Reporter, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        out.append(&mut self.orphans);
        let cutoff = self.watermark.cutoff(self.window);
        if !self.book.open.is_empty() {
            reporter.on_tick(now, cutoff, &mut self.keys, &mut self.book, out);
        }
        if let Some(cutoff) = cutoff {
            self.sweep(reporter, cutoff, out);
        }
    }

    /// Forgets the keys nothing of which can count any more, resolving their episodes.
    fn sweep(&mut self, reporter: &Reporter, cutoff: Timestamp, out: &mut Vec<Arc<Event>>) {
        if !self.book.open.is_empty() {
            reporter.close_expired(
                &mut self.keys,
                cutoff,
                |k| k.expired(cutoff),
                &mut self.book,
                out,
            );
        }
        self.keys.retain(|_, k| !k.expired(cutoff));
        self.recount_samples();
    }

    fn recount_samples(&mut self) {
        self.budget.used = self.keys.values().map(KeyedWindow::sample_bytes).sum();
    }
}

impl KeyedWindow for super::window::KeyWindow {
    fn fired(&self) -> Option<Timestamp> {
        self.fired
    }

    fn sample_bytes(&self) -> usize {
        super::window::KeyWindow::sample_bytes(self)
    }
}
