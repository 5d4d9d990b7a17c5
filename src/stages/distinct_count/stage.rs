//! The running `distinct_count` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::DistinctCountConfig;
use super::key::{DistinctWindow, Limits};
use crate::event::{Event, FieldPath, Timestamp};
use crate::node::internal_event::{DistinctFieldMissing, InternalEvent};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy};
use crate::stages::episode::{EpisodeCounts, Reporter};
use crate::stages::keyed::Keyed;
use crate::stages::values::ValueHasher;

/// Counts distinct values per group key in sliding event-time windows; see
/// [`DistinctCountConfig`].
pub struct DistinctCountStage {
    field: Vec<FieldPath>,
    group_by: GroupBy,
    limits: Limits,
    reporter: Reporter,
    shape: Value,
    hasher: ValueHasher,
    keyed: Keyed<DistinctWindow>,
    /// Events without the field (missing or null).
    missing: u64,
    value_buf: String,
}

/// What the stage saves of its own beside its windows (borrowed form).
#[derive(Serialize)]
struct OwnRef<'a> {
    /// The key values are hashed under, so they are recognised after a restart.
    hasher: &'a ValueHasher,
    missing: u64,
}

/// What the stage saved of its own (see [`OwnRef`]).
#[derive(Deserialize)]
struct Own {
    hasher: ValueHasher,
    #[serde(default)]
    missing: u64,
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
        let keyed = Keyed::new(window, cfg.max_keys, templates.samples, templates.node_id());
        Ok(DistinctCountStage {
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
            shape: json!({
                "field": cfg.field.paths(),
                "tuple": cfg.field.is_tuple(),
                "group_by": cfg.group_by,
                "mode": cfg.alert.mode,
            }),
            hasher: ValueHasher::random(),
            keyed,
            missing: 0,
            value_buf: String::new(),
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.keyed.counters = counters;
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
        self.keyed.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape (`field`, `group_by`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        let tuple = self.limits.tuple;
        let own: Option<Own> = self.keyed.restore(
            saved,
            id,
            &self.shape,
            "field, group_by or alert.mode",
            |k: &mut DistinctWindow| k.set_tuple(tuple),
        );
        own.map(|o| {
            self.hasher = o.hasher;
            self.missing = o.missing;
        })
        .is_some()
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.keyed.watermark.late
    }

    /// Events without the field (missing or null) seen so far.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keyed.keys.len()
    }

    /// The number of distinct values key `key` holds (`group_key` text), and whether it
    /// is an estimate.
    pub fn count_of(&self, key: &str) -> Option<(usize, bool)> {
        self.keyed.keys.get(key).map(|k| (k.count(), k.estimated()))
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.keyed.book.counts
    }
}

impl Stage for DistinctCountStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.keyed.behind(t) {
            return;
        }
        let Some(h) = self
            .hasher
            .value_of(&self.field, &*event, &mut self.value_buf)
        else {
            self.missing += 1;
            DistinctFieldMissing {
                stage: &self.keyed.id,
                time: t,
            }
            .emit(&self.keyed.counters);
            return;
        };
        let Some(at) = self.keyed.at(&self.group_by.0, &*event, t) else {
            return;
        };
        self.reporter
            .before_event(at.key, at.window, t, at.book, out);
        at.window
            .add(h, &self.value_buf, t, &event, self.limits, at.budget);
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
        let own = OwnRef {
            hasher: &self.hasher,
            missing: self.missing,
        };
        self.keyed.snapshot(&self.shape, &own, max_bytes)
    }
}

impl crate::stages::episode::Resumable for DistinctCountStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        DistinctCountStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        DistinctCountStage::close_at_start(self, orphans);
    }
}
