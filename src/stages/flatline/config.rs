//! The `flatline` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::stage::FlatlineStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// Default title of flatline alerts.
pub(crate) const DEFAULT_TITLE: &str = "{{#if (eq status \"resolved\")}}Events again{{#if group_key}} from {{group_key}}{{/if}} after {{window.length}} quiet{{else}}No events{{#if group_key}} from {{group_key}}{{/if}} for {{window.length}}{{/if}}";
/// Default summary of flatline alerts.
pub(crate) const DEFAULT_SUMMARY: &str = "{{pipeline}}.{{stage}}: quiet for {{value}} s (alerts after {{threshold}} s), last event at {{window.start}}, {{status}} at {{window.end}}.";

/// Alerts when a source, or a key, went quiet: nothing arrived for `after`.
///
/// Quiet is measured in arrival time (when vigil read the event), against the clock: a
/// key is seen when one of its events arrives, and each clock tick checks every key. When
/// `now - last seen >= after`, one `firing` alert is raised for the quiet period (value:
/// the seconds quiet, threshold: `after` in seconds, unit `s`, window from the last event
/// to now, samples: the last event seen of that key). It is not repeated while the key
/// stays quiet. When an event of that key arrives again, a `resolved` alert with the same
/// group follows (window: from the last event before the gap to this one) and the key is
/// watched again.
///
/// Without `group_by` the whole input is one key, watched from the stage's first tick: a
/// source that never sends anything also raises an alert after `after`. With `group_by`
/// a key is watched from its first event on. Quiet keys are kept (they are the point), at
/// most `max_keys` of them: beyond that the key seen longest ago is forgotten and counted.
///
/// The stage hands on only its alerts, not the events it watches (have other stages
/// read the same inputs for those). The last-seen times survive restarts unless
/// `group_by` changes; a key that stayed quiet across a restart fires at the first tick.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct FlatlineConfig {
    /// The sources or stages this stage watches.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// How long without an event before the alert (arrival time).
    pub after: Duration,
    /// Field paths whose values make a key watched on its own. Default: the whole input
    /// is one key.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How the alerts read.
    #[serde(default)]
    pub alert: AlertConfig,
    /// The most keys watched at once. Default: 10000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    10_000
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["health"],
        "after": "10m",
        "group_by": ["host"],
        "alert": {"severity": "high", "title": "{{group.host}} quiet for {{window.length}}"}
    })
}

impl FlatlineConfig {
    /// The templates of this stage's alerts, for an example alert (`vigil send-test`);
    /// `None` when they do not compile (`vigil validate` reports that).
    pub fn alert_templates(&self, pipeline: &str, stage: &str) -> Option<AlertTemplates> {
        AlertTemplates::compile(&self.alert, DEFAULT_TITLE, DEFAULT_SUMMARY, pipeline, stage).ok()
    }

    /// Structural checks: a positive `after`, field paths that parse, templates that render.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/after", "`after`", &self.after);
        GroupBy::check(&self.group_by, "/group_by", p);
        self.alert.check_no_episodes(
            "flatline (its alerts always resolve when the key comes back)",
            p,
        );
        AlertTemplates::check(
            &self.alert,
            DEFAULT_TITLE,
            DEFAULT_SUMMARY,
            &self.group_by,
            p,
        );
        if self.max_keys == 0 {
            p.error(
                "/max_keys",
                codes::NON_POSITIVE,
                "`max_keys` must be at least 1",
            );
        }
    }

    /// Builds the running stage, restoring its saved last-seen times.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let group_by = GroupBy::parse(&self.group_by)?;
        let templates = AlertTemplates::for_stage(&self.alert, DEFAULT_TITLE, DEFAULT_SUMMARY, cx)?;
        let mut stage =
            FlatlineStage::new(group_by, self.after.span(), templates, self.max_keys.max(1))
                .counting_into(cx.counters.clone());
        crate::stages::episode::resume(&mut stage, cx, true);
        Ok(Box::new(stage))
    }
}
