//! The running `window_count` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::WindowCountConfig;
use crate::event::{Event, FieldPath, Timestamp};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy};
use crate::stages::episode::{EpisodeCounts, Reporter};
use crate::stages::keyed::Keyed;
use crate::stages::window::{KeyWindow, number};

/// What the stage saves of its own beside its windows.
#[derive(Serialize, Deserialize)]
struct Skipped {
    /// Events whose `sum` field was missing, not a number or negative.
    #[serde(default)]
    skipped: u64,
}

/// Counts or sums per group key in sliding event-time windows; see [`WindowCountConfig`].
pub struct WindowCountStage {
    sum: Option<FieldPath>,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    keyed: Keyed<KeyWindow>,
    skipped: u64,
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
        let keyed = Keyed::new(window, cfg.max_keys, templates.samples, templates.node_id());
        Ok(WindowCountStage {
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
            shape: json!({"group_by": cfg.group_by, "sum": cfg.sum, "mode": cfg.alert.mode}),
            keyed,
            skipped: 0,
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

    /// Restores a snapshot (its JSON text) when its shape (`group_by`, `sum`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        let own: Option<Skipped> = self.keyed.restore(
            saved,
            id,
            &self.shape,
            "group_by, sum or alert.mode",
            KeyWindow::recompute,
        );
        own.map(|o| self.skipped = o.skipped).is_some()
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.keyed.watermark.late
    }

    /// Events whose `sum` field was missing, not a number or negative.
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

impl Stage for WindowCountStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.keyed.behind(t) {
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
        let window = self.keyed.window;
        let Some(at) = self.keyed.at(&self.group_by.0, &*event, t) else {
            return;
        };
        self.reporter
            .before_event(at.key, at.window, t, at.book, out);
        at.window.add(t, weight, false, window, &event, at.budget);
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

impl crate::stages::episode::Resumable for WindowCountStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        WindowCountStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        WindowCountStage::close_at_start(self, orphans);
    }
}
