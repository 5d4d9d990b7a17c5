//! The `dedupe` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::stage::DedupeStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::GroupBy;
use crate::time::Duration;

/// Drops repeats: the first event (or alert) with a key passes; later ones with the same
/// key are dropped until `window` of event time has passed since that first one. The next
/// one after that passes and starts a new window (the window does not slide with the
/// repeats). Windows are half-open: a repeat exactly `window` after the first passes.
///
/// The key is the values at `key` (a missing field and an empty one are different keys);
/// without `key`, an alert's `id` (the same finding raised again, e.g. after a replay), and
/// for any other event the whole record (including its time fields: use `key` to ignore
/// them). An event older than the first of its key (late) is within the window and dropped.
///
/// Memory is bounded: keys whose window has ended behind the newest event time seen are
/// forgotten, and at most `max_keys` are held (beyond that the oldest is forgotten early and
/// counted). Drops are counted; the state survives restarts unless `key` changes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct DedupeConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// How long after the first of a key repeats are dropped (event time).
    pub window: Duration,
    /// Field paths whose values make the key. Default: an alert's id, else the whole record.
    #[serde(default)]
    pub key: Vec<String>,
    /// The most keys held at once. Default: 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    100_000
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["burst"],
        "window": "10m",
        "key": ["group_key"]
    })
}

impl DedupeConfig {
    /// Structural checks: a positive window, field paths that parse, room for one key.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/window", "`window`", &self.window);
        GroupBy::check(&self.key, "/key", p);
        if self.max_keys == 0 {
            p.error(
                "/max_keys",
                codes::NON_POSITIVE,
                "`max_keys` must be at least 1",
            );
        }
    }

    /// Builds the running stage, restoring its saved state.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let key = GroupBy::parse(&self.key)?.0;
        let mut stage = DedupeStage::new(key, self.window.span(), self.max_keys.max(1))
            .counting_into(cx.id.clone(), cx.counters.clone());
        if let Some(saved) = cx.restore() {
            stage.restore(&cx.id, &saved);
        }
        Ok(Box::new(stage))
    }
}
