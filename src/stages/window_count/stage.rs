//! The running `window_count` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::WindowCountConfig;
use crate::event::{Event, FieldPath, Timestamp};
use crate::node::internal_event::{InternalEvent, KeysEvicted, LateEvent, Lateness};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget};
use crate::stages::episode::{Book, EpisodeCounts, Reporter, open_keys};
use crate::stages::keys::KeyMap;
use crate::stages::window::{KeyWindow, Watermark, number, write_key};

/// Counts or sums per group key in sliding event-time windows; see [`WindowCountConfig`].
pub struct WindowCountStage {
    window: chrono::Duration,
    sum: Option<FieldPath>,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    keys: KeyMap<KeyWindow>,
    /// Open episodes and their counters.
    book: Book,
    /// Samples the windows keep.
    budget: SampleBudget,
    /// Resolutions of episodes left open by a state this stage did not restore.
    orphans: Vec<Arc<Event>>,
    watermark: Watermark,
    skipped: u64,
    key_buf: String,
    max_keys: usize,
    /// Where what is set aside (late events, evicted keys) is counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

/// What [`WindowCountStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    watermark: &'a Watermark,
    skipped: u64,
    episodes: &'a EpisodeCounts,
    keys: &'a KeyMap<KeyWindow>,
}

/// What [`WindowCountStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    watermark: Watermark,
    #[serde(default)]
    skipped: u64,
    #[serde(default)]
    episodes: EpisodeCounts,
    keys: KeyMap<KeyWindow>,
}

impl WindowCountStage {
    /// A stage with empty windows.
    pub fn new(
        cfg: &WindowCountConfig,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        let sum = cfg
            .sum
            .as_deref()
            .map(FieldPath::parse)
            .transpose()
            .map_err(|e| NodeError::from(format!("sum: {e}")))?;
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let window = cfg.window.span();
        let samples_per_window = templates.samples;
        let id = templates.node_id();
        Ok(WindowCountStage {
            window,
            sum,
            group_by,
            reporter: Reporter {
                templates,
                threshold: cfg.threshold,
                scale: 1.0,
                unit: None,
                window,
                mode: cfg.alert.mode,
                resolve_after: cfg.alert.resolve_after.map_or(window, |d| d.span()),
                history_interval,
            },
            id,
            shape: json!({"group_by": cfg.group_by, "sum": cfg.sum, "mode": cfg.alert.mode}),
            keys: KeyMap::new(),
            book: Book::default(),
            budget: SampleBudget::new(samples_per_window),
            orphans: Vec::new(),
            watermark: Watermark::default(),
            skipped: 0,
            key_buf: String::new(),
            max_keys: cfg.max_keys.max(1),
            counters: Arc::default(),
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape (`group_by`, `sum`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.watermark = s.watermark;
                self.skipped = s.skipped;
                self.book.counts = s.episodes;
                self.keys = s.keys;
                for k in self.keys.values_mut() {
                    k.recompute();
                }
                self.book.open = open_keys(&self.keys);
                tracing::debug!(stage = %id, keys = self.keys.len(), "state restored");
                true
            }
            Ok(_) => {
                tracing::info!(stage = %id, "group_by, sum or alert.mode changed: state reset");
                false
            }
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: state reset");
                false
            }
        }
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.watermark.late
    }

    /// Events whose `sum` field was missing, not a number or negative.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.book.counts
    }

    /// Forgets the keys nothing of which can count any more, resolving their episodes.
    fn sweep(&mut self, cutoff: Timestamp, out: &mut Vec<Arc<Event>>) {
        if !self.book.open.is_empty() {
            self.reporter.close_expired(
                &mut self.keys,
                cutoff,
                |k| k.expired(cutoff),
                &mut self.book,
                out,
            );
        }
        self.keys.retain(|_, k| !k.expired(cutoff));
        self.budget.used = self.keys.values().map(KeyWindow::sample_bytes).sum();
    }
}

impl Stage for WindowCountStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.watermark.observe(t, self.window) {
            self.watermark.late += 1;
            LateEvent {
                stage: &self.id,
                time: t,
                key: None,
                why: Lateness::BehindWatermark,
            }
            .emit(&self.counters);
            return;
        }
        let weight = match &self.sum {
            None => 1.0,
            Some(path) => match path.first_in(&event).and_then(number) {
                Some(v) => v,
                None => {
                    self.skipped += 1;
                    0.0
                }
            },
        };
        write_key(&mut self.key_buf, &self.group_by.0, &*event);
        let key = self.keys.get_or_default(&self.key_buf);
        if key.late_for_key(t) {
            self.watermark.late += 1;
            LateEvent {
                stage: &self.id,
                time: t,
                key: Some(&self.key_buf),
                why: Lateness::WindowAlerted,
            }
            .emit(&self.counters);
            return;
        }
        self.reporter
            .before_event(&self.key_buf, key, t, &mut self.book, out);
        key.add(t, weight, false, self.window, &event, &mut self.budget);
        let group_by = &self.group_by;
        self.reporter.after_event(
            &self.key_buf,
            key,
            &event,
            || group_by.group(event.data()),
            &mut self.book,
            out,
        );
        if let Some(cutoff) = self.watermark.sweep_due(self.window) {
            self.sweep(cutoff, out);
        }
        if self.keys.len() > self.max_keys {
            let evicted =
                self.reporter
                    .evict_oldest(&mut self.keys, self.max_keys, &mut self.book, out);
            KeysEvicted {
                stage: &self.id,
                keys: evicted as u64,
                max_keys: self.max_keys,
                warning: crate::stages::episode::EVICTING,
            }
            .emit(&self.counters);
            self.budget.used = self.keys.values().map(KeyWindow::sample_bytes).sum();
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        out.append(&mut self.orphans);
        let cutoff = self.watermark.cutoff(self.window);
        if !self.book.open.is_empty() {
            self.reporter
                .on_tick(now, cutoff, &mut self.keys, &mut self.book, out);
        }
        if let Some(cutoff) = cutoff {
            self.sweep(cutoff, out);
        }
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let saved = SavedRef {
            shape: &self.shape,
            watermark: &self.watermark,
            skipped: self.skipped,
            episodes: &self.book.counts,
            keys: &self.keys,
        };
        Snapshot::write(&saved, max_bytes)
    }
}
