//! The `cooldown` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::stage::CooldownStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::GroupBy;
use crate::time::Duration;

/// Realert per key: after an event or alert with a key passes, later ones with the same key
/// are suppressed until `period` of event time has passed since the one that passed. One
/// arriving exactly `period` later passes (and starts a new period). An event older than
/// the one that passed (late) is suppressed.
///
/// The key is the values at `key` when given (`key: [group.src.ip]` quiets an IP across
/// rules). Without `key`, an alert's key is its pipeline, stage and group key (each rule
/// and group has its own cooldown), and every other event shares one key. A missing field
/// and an empty one are different keys.
///
/// A `resolved` alert always passes and ends its key's cooldown, so the next firing alert
/// of that key passes at once. Later reports of the alert that passed (the updates of its
/// episode: same id) pass too; a new episode of the key within the period is held back.
///
/// Each key's period is measured on the event time of the input it passed from, so a
/// cooldown fed by several rules whose clocks differ (a PCE's traffic lags its audit
/// events by minutes) holds each for its full period.
///
/// **Cooldown or grouping?** A delivering sink's notification options (`group_by`,
/// `group_interval`, `repeat_interval`) decide when people hear about alerts; the alert
/// history and every other sink still see all of them. Use `cooldown` when an alert
/// should not exist at all downstream of it within the period — e.g. before a `script`
/// or an action that must not run twice — or to quiet events that are not alerts.
///
/// Keys whose period has ended are forgotten; at most `max_keys` are held (beyond that
/// the oldest is forgotten early and counted). Suppressions are counted. Cooldowns survive
/// restarts unless `key` changes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct CooldownConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// How long a key stays quiet after one of its events passes (event time).
    pub period: Duration,
    /// Field paths whose values make the key. Default: for alerts pipeline, stage and group
    /// key; other events share one key.
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
        "period": "30m",
        "key": ["group.src.ip"]
    })
}

impl CooldownConfig {
    /// Structural checks: a positive period, field paths that parse, room for one key.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/period", "`period`", &self.period);
        GroupBy::check(&self.key, "/key", p);
        if self.max_keys == 0 {
            p.error(
                "/max_keys",
                codes::NON_POSITIVE,
                "`max_keys` must be at least 1",
            );
        }
    }

    /// Builds the running stage, restoring its saved cooldowns.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let key = GroupBy::parse(&self.key)?.0;
        let mut stage = CooldownStage::new(key, self.period.span(), self.max_keys.max(1))
            .counting_into(cx.id.clone(), cx.counters.clone());
        if let Some(saved) = cx.restore() {
            stage.restore(&cx.id, &saved);
        }
        Ok(Box::new(stage))
    }
}
