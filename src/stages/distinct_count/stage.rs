//! The running `distinct_count` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::DistinctCountConfig;
use super::key::{DistinctWindow, Limits};
use crate::event::{Event, FieldPath, Timestamp};
use crate::node::internal_event::{
    DistinctFieldMissing, InternalEvent, KeysEvicted, LateEvent, Lateness,
};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget};
use crate::stages::episode::{Book, EpisodeCounts, Reporter, open_keys};
use crate::stages::keys::KeyMap;
use crate::stages::values::ValueHasher;
use crate::stages::window::{Watermark, write_key};

/// Counts distinct values per group key in sliding event-time windows; see
/// [`DistinctCountConfig`].
pub struct DistinctCountStage {
    window: chrono::Duration,
    field: Vec<FieldPath>,
    group_by: GroupBy,
    limits: Limits,
    reporter: Reporter,
    shape: Value,
    hasher: ValueHasher,
    keys: KeyMap<DistinctWindow>,
    /// Open episodes and their counters.
    book: Book,
    /// Samples the windows keep.
    budget: SampleBudget,
    /// Resolutions of episodes left open by a state this stage did not restore.
    orphans: Vec<Arc<Event>>,
    watermark: Watermark,
    /// Events without the field (missing or null).
    missing: u64,
    key_buf: String,
    value_buf: String,
    max_keys: usize,
    /// Where what is set aside (late events, events without the field, evicted keys) is
    /// counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

/// What [`DistinctCountStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    hasher: &'a ValueHasher,
    watermark: &'a Watermark,
    missing: u64,
    episodes: &'a EpisodeCounts,
    keys: &'a KeyMap<DistinctWindow>,
}

/// What [`DistinctCountStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    hasher: ValueHasher,
    watermark: Watermark,
    #[serde(default)]
    missing: u64,
    #[serde(default)]
    episodes: EpisodeCounts,
    keys: KeyMap<DistinctWindow>,
}

impl DistinctCountStage {
    /// A stage with empty windows.
    pub fn new(
        cfg: &DistinctCountConfig,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        let field = cfg.field.parse().map_err(NodeError::from)?;
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let window = cfg.window.span();
        let samples_per_window = templates.samples;
        let id = templates.node_id();
        Ok(DistinctCountStage {
            window,
            field,
            group_by,
            limits: Limits {
                window,
                exact_up_to: cfg.exact_up_to,
                values_shown: cfg.values_shown.min(100),
                tuple: cfg.field.is_tuple(),
            },
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
            shape: json!({
                "field": cfg.field.paths(),
                "tuple": cfg.field.is_tuple(),
                "group_by": cfg.group_by,
                "mode": cfg.alert.mode,
            }),
            hasher: ValueHasher::random(),
            keys: KeyMap::new(),
            book: Book::default(),
            budget: SampleBudget::new(samples_per_window),
            orphans: Vec::new(),
            watermark: Watermark::default(),
            missing: 0,
            key_buf: String::new(),
            value_buf: String::new(),
            max_keys: cfg.max_keys.max(1),
            counters: Arc::default(),
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Hashes values under a fixed key instead of a random one (tests and benchmarks
    /// that compare runs; a restored state brings its own key).
    pub fn with_hash_key(mut self, k0: u64, k1: u64) -> Self {
        self.hasher = ValueHasher::with_key(k0, k1);
        self
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape (`field`, `group_by`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.hasher = s.hasher;
                self.watermark = s.watermark;
                self.missing = s.missing;
                self.book.counts = s.episodes;
                self.keys = s.keys;
                let tuple = self.limits.tuple;
                self.keys.values_mut().for_each(|k| k.set_tuple(tuple));
                self.book.open = open_keys(&self.keys);
                self.budget.used = self.keys.values().map(DistinctWindow::sample_bytes).sum();
                tracing::debug!(stage = %id, keys = self.keys.len(), "state restored");
                true
            }
            Ok(_) => {
                tracing::info!(stage = %id, "field, group_by or alert.mode changed: state reset");
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

    /// Events without the field (missing or null) seen so far.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// The number of distinct values key `key` holds (`group_key` text), and whether it
    /// is an estimate.
    pub fn count_of(&self, key: &str) -> Option<(usize, bool)> {
        self.keys.get(key).map(|k| (k.count(), k.estimated()))
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
        self.budget.used = self.keys.values().map(DistinctWindow::sample_bytes).sum();
    }
}

impl Stage for DistinctCountStage {
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
        let Some(h) = self
            .hasher
            .value_of(&self.field, &*event, &mut self.value_buf)
        else {
            self.missing += 1;
            DistinctFieldMissing {
                stage: &self.id,
                time: t,
            }
            .emit(&self.counters);
            return;
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
        key.add(h, &self.value_buf, t, &event, self.limits, &mut self.budget);
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
            self.budget.used = self.keys.values().map(DistinctWindow::sample_bytes).sum();
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
            hasher: &self.hasher,
            watermark: &self.watermark,
            missing: self.missing,
            episodes: &self.book.counts,
            keys: &self.keys,
        };
        Snapshot::write(&saved, max_bytes)
    }
}
