//! The `ratio` stage's configuration.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::stage::RatioStage;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Stage};
use crate::pce::names::NameCache;
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::stages::filter::{CompiledFilter, Conditions, IpListWatch};
use crate::time::Duration;

/// The share of a key's events that match a condition in a sliding event-time window —
/// blocked flows out of all flows per source, failed logins out of all logins per user
/// — alerting while it is at or over `threshold`: one alert per episode.
///
/// - **Match.** `match` holds conditions in the `filter` stage's language (equality,
///   lists, operators such as `gte`, `regex`, `cidr`, `ip_list:` names, …), all of
///   which must hold for an event to count as matched. Every event the stage reads
///   counts in its key's total.
/// - **Window.** As `window_count`'s: each group key has its own window `(newest −
///   window, newest]`, `newest` being the key's newest event time; events out of order
///   but inside it count at their place; events at or before the stage's watermark −
///   window are late (counted, never mixed in).
/// - **Alert.** While the key's window holds at least `min_count` events and the share
///   matched ÷ total is at or over `threshold`, its episode is open: a `firing` alert
///   with `value` = the share (0 to 1), `threshold`, `window`, the group, samples of the
///   matched events, and in `fields` (and as template variables) `matched` and `total`;
///   updated in place and reported at most once per `history_interval` while it holds;
///   `resolved` once the share falls under `threshold` or the window holds fewer than
///   `min_count` events (events leaving the window count: it is dated when they left),
///   or the key had no event for `alert.resolve_after`. `alert.mode: each_crossing`
///   alerts at each crossing and starts the key's window again empty.
/// - **Memory.** Per key, one point per distinct event time in its window (past 1024,
///   points merge into slots of window/512: every event still counts, a merged one
///   leaves the window up to a slot later; counted as `coarsened`) and up to
///   `alert.samples` samples. Keys with nothing left in their window are forgotten as in
///   `window_count`; at most `max_keys` keys (the least recently seen tenth evicted past
///   it, their episodes resolved, counted in `vigil_node_dropped_total{reason="evicted"}`).
/// - **State** (windows and open episodes) survives restarts and reloads; it is reset
///   when `match`, `group_by` or `alert.mode` change (open episodes then resolved), and
///   kept when `threshold`, `min_count`, `window` or the rest of `alert` change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct RatioConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// Length of the sliding window (`10m`, `1h`), in event time.
    pub window: Duration,
    /// The conditions of the events counted as matched, by field path, in the `filter`
    /// stage's language; all must hold (`policy_decision: blocked`).
    #[serde(rename = "match")]
    pub match_: Conditions,
    /// The share of a key's events (0 to 1) at or over which it alerts: `0.5` alerts
    /// when half or more of its events match.
    pub threshold: f64,
    /// The fewest events a key's window must hold before its share can alert (one
    /// blocked flow out of one is rarely news). Default: 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_count: u64,
    /// Field paths whose values make the group key; each key has its own window.
    /// Default: none (one window for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most group keys held at once. Past it, the keys seen least recently are
    /// evicted, a tenth at a time (their open episodes resolved), and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 1000000.
    #[serde(default = "crate::stages::window::default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads. Besides the usual variables, templates see `matched` and
    /// `total` (the key's matched and all events in the window).
    #[serde(default)]
    pub alert: AlertConfig,
}

fn one() -> u64 {
    1
}

fn example() -> Value {
    json!({
        "inputs": ["flows"],
        "window": "10m",
        "match": {"policy_decision": ["blocked", "potentially_blocked"]},
        "threshold": 0.5,
        "min_count": 20,
        "group_by": ["src.ip"],
        "alert": {"severity": "high", "title": "{{matched}} of {{total}} flows from {{group.src.ip}} blocked"}
    })
}

impl RatioConfig {
    /// The templates of this stage's alerts, for an example alert (`vigil send-test`);
    /// `None` when they do not compile (`vigil validate` reports that).
    pub fn alert_templates(&self, pipeline: &str, stage: &str) -> Option<AlertTemplates> {
        AlertTemplates::compile(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            pipeline,
            stage,
        )
        .ok()
    }

    /// An example of what an alert of this stage reports: `(value, threshold, fields)`
    /// — for checking templates and for `vigil send-test`.
    pub fn example_report(&self) -> (f64, f64, Map<String, Value>) {
        let total = self.min_count.max(4);
        let matched = total * 3 / 4;
        let mut fields = Map::new();
        fields.insert("matched".into(), json!(matched));
        fields.insert("total".into(), json!(total));
        (matched as f64 / total as f64, self.threshold, fields)
    }

    /// The default alert title.
    pub(super) fn default_title(&self) -> String {
        let whom = if self.group_by.is_empty() {
            String::new()
        } else {
            " of {{group_key}}".to_string()
        };
        format!(
            "{{{{matched}}}} of {{{{total}}}} events{whom} match in {{{{window.length}}}} (share {{{{value}}}}, alerts at {{{{threshold}}}})"
        )
    }

    /// The default alert summary.
    pub(super) fn default_summary(&self) -> String {
        let min = self.min_count;
        format!(
            "{{{{#if (eq status \"resolved\")}}}}Over: {{{{matched}}}} of the {{{{total}}}} events in the window to {{{{window.end}}}} match, a share of {{{{value}}}}: under {{{{threshold}}}}, or fewer than {min} events; it held from {{{{first_seen}}}} to {{{{last_seen}}}}.{{{{else}}}}{{{{matched}}}} of the {{{{total}}}} events in the window {{{{window.start}}}} to {{{{window.end}}}} match, a share of {{{{value}}}}: at or over {{{{threshold}}}} (over at least {min} events).{{{{/if}}}}"
        )
    }

    /// The shape of `match` for the saved state (a change resets it).
    pub(super) fn match_shape(&self) -> String {
        format!("{:?}", self.match_)
    }

    /// Structural checks: a positive window, conditions that compile, a threshold
    /// between 0 and 1, field paths that parse, templates that render.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/window", "`window`", &self.window);
        if self.match_.is_empty() {
            p.error_at_key(
                "/match",
                codes::INVALID_VALUE,
                "`match` has no condition, so every event would match: give the conditions of the events to count, e.g. `policy_decision: blocked`",
            );
        } else if let Err(errors) = CompiledFilter::conditions(&self.match_, &["match"]) {
            for (pointer, at_key, message) in errors {
                if at_key {
                    p.error_at_key(pointer, codes::INVALID_VALUE, message);
                } else {
                    p.error(pointer, codes::INVALID_VALUE, message);
                }
            }
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            p.error(
                "/threshold",
                codes::INVALID_VALUE,
                format!(
                    "`threshold` is a share over 0 and at most 1 (0.5: half of the events or more), not {}",
                    self.threshold
                ),
            );
        }
        if self.min_count == 0 {
            p.error(
                "/min_count",
                codes::NON_POSITIVE,
                "`min_count` must be at least 1",
            );
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        let (_, _, fields) = self.example_report();
        AlertTemplates::check_with_fields(
            &self.alert,
            (&self.default_title(), &self.default_summary()),
            &self.group_by,
            None,
            &fields,
            p,
        );
    }

    /// Builds the running stage, restoring its saved state when compatible. `names` are
    /// the name caches of the PCE connections, for `ip_list:` operands.
    pub fn build(
        &self,
        cx: &BuildContext,
        names: &[Arc<NameCache>],
    ) -> Result<Box<dyn Stage>, NodeError> {
        let templates = AlertTemplates::for_stage(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            cx,
        )?;
        let mut matcher =
            CompiledFilter::conditions(&self.match_, &["match"]).map_err(|errors| {
                let msgs: Vec<String> = errors
                    .into_iter()
                    .map(|(pointer, _, m)| format!("{pointer}: {m}"))
                    .collect();
                NodeError::from(msgs.join("; "))
            })?;
        let mut watch = None;
        if matcher.uses_ip_lists() {
            if names.is_empty() {
                tracing::warn!(stage = %cx.id, "`ip_list:` operands need a PCE connection; they match only the list's name");
            } else {
                watch = Some(IpListWatch::new(
                    cx.id.clone(),
                    matcher.ip_list_names(),
                    names,
                    cx.counters.clone(),
                ));
            }
            matcher.resolve_ip_lists(names);
        }
        let mut stage = RatioStage::new(self, matcher, templates, cx.history_interval)?
            .counting_into(cx.counters.clone());
        if let Some(w) = watch {
            stage = stage.with_ip_list_watch(w);
        }
        crate::stages::episode::resume(
            &mut stage,
            cx,
            self.alert.mode == crate::stages::episode::AlertMode::Episode,
        );
        Ok(Box::new(stage))
    }
}
