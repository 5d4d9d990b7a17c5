//! The running `window_count` stage.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::WindowCountConfig;
use crate::event::{AlertStatus, Event, FieldPath, Timestamp};
use crate::runtime::{NodeError, Stage};
use crate::stages::alerting::{AlertTemplates, Finding, GroupBy};
use crate::stages::window::{KeyWindow, Watermark, number, write_key};

/// Counts or sums per group key in sliding event-time windows; see [`WindowCountConfig`].
pub struct WindowCountStage {
    window: chrono::Duration,
    threshold: f64,
    sum: Option<FieldPath>,
    group_by: GroupBy,
    templates: AlertTemplates,
    shape: Value,
    keys: HashMap<String, KeyWindow>,
    watermark: Watermark,
    skipped: u64,
    key_buf: String,
}

/// What [`WindowCountStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    watermark: &'a Watermark,
    skipped: u64,
    keys: &'a HashMap<String, KeyWindow>,
}

/// What [`WindowCountStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    watermark: Watermark,
    #[serde(default)]
    skipped: u64,
    keys: HashMap<String, KeyWindow>,
}

impl WindowCountStage {
    /// A stage with empty windows.
    pub fn new(cfg: &WindowCountConfig, templates: AlertTemplates) -> Result<Self, NodeError> {
        let sum = cfg
            .sum
            .as_deref()
            .map(FieldPath::parse)
            .transpose()
            .map_err(|e| NodeError::from(format!("sum: {e}")))?;
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        Ok(WindowCountStage {
            window: cfg.window.span(),
            threshold: cfg.threshold,
            sum,
            group_by,
            templates,
            shape: json!({"group_by": cfg.group_by, "sum": cfg.sum}),
            keys: HashMap::new(),
            watermark: Watermark::default(),
            skipped: 0,
            key_buf: String::new(),
        })
    }

    /// Restores a snapshot when its shape (`group_by`, `sum`) matches this config.
    pub fn restore(&mut self, saved: Value, id: &str) {
        match serde_json::from_value::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.watermark = s.watermark;
                self.skipped = s.skipped;
                self.keys = s.keys;
                for k in self.keys.values_mut() {
                    k.recompute();
                }
                tracing::debug!(stage = %id, keys = self.keys.len(), "state restored");
            }
            Ok(_) => tracing::info!(stage = %id, "group_by or sum changed: state reset"),
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: state reset")
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

    fn sweep(&mut self, cutoff: Timestamp) {
        self.keys.retain(|_, k| !k.expired(cutoff));
    }
}

impl Stage for WindowCountStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.watermark.observe(t, self.window) {
            self.watermark.late += 1;
            tracing::debug!(stage = %self.templates.node_id(), time = %t, "late event: older than the window behind the watermark");
            return;
        }
        let weight = match &self.sum {
            None => 1.0,
            Some(path) => match path.first(event.data()).and_then(number) {
                Some(v) => v,
                None => {
                    self.skipped += 1;
                    0.0
                }
            },
        };
        write_key(&mut self.key_buf, &self.group_by.0, event.data());
        let key = match self.keys.get_mut(self.key_buf.as_str()) {
            Some(k) => k,
            None => self.keys.entry(self.key_buf.clone()).or_default(),
        };
        if key.late_for_key(t) {
            self.watermark.late += 1;
            tracing::debug!(stage = %self.templates.node_id(), time = %t, key = %self.key_buf, "late event: its window already alerted");
            return;
        }
        key.add(
            t,
            weight,
            false,
            self.window,
            &event,
            self.templates.samples,
        );
        if key.reached(self.threshold) {
            let fired = key.fire(self.window);
            let alert = self.templates.alert(Finding {
                group: self.group_by.group(event.data()),
                value: fired.sum,
                threshold: self.threshold,
                unit: None,
                estimate: None,
                window: fired.window,
                samples: fired.samples,
                status: AlertStatus::Firing,
            });
            out.push(self.templates.event(alert));
        }
        if let Some(cutoff) = self.watermark.sweep_due(self.window) {
            self.sweep(cutoff);
        }
    }

    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Arc<Event>>) {
        if let Some(cutoff) = self.watermark.cutoff(self.window) {
            self.sweep(cutoff);
        }
    }

    fn snapshot(&self) -> Option<Value> {
        let saved = SavedRef {
            shape: &self.shape,
            watermark: &self.watermark,
            skipped: self.skipped,
            keys: &self.keys,
        };
        serde_json::to_value(&saved).ok()
    }
}
