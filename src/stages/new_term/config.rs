//! The `new_term` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::stage::NewTermStage;
use super::warm_up::{HistoryFeed, Layout, PceWarmUp, WarmUpConfig, WarmUpMark, layout};
use crate::confine::confine;
use crate::diagnostic::{Problems, codes};
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::stages::values::FieldSpec;
use crate::time::Duration;

/// Alerts the first time a value of `field` — or a tuple of values, `field: [a, b]` — is
/// seen for a group key, once a `learn` period is over: a first connection between two
/// apps (`field: [src.labels.app, dst.labels.app]`), a user's first login from a country,
/// a process never run on a host before.
///
/// - **Values.** `field` is one field path, or a list of paths whose values together
///   make one value (a tuple). Values compare by their JSON text, as `distinct_count`'s
///   do: `22` and `"22"` are one value, `22` and `22.0` are not. An event whose field is
///   missing or `null` (for a tuple: any of its fields) has no value: it is counted
///   (`missing` in the stage's state, `vigil_node_dropped_total{reason="unmeasured"}`),
///   learns nothing and never alerts.
/// - **Keys.** Each `group_by` key has its own values (default: none, one set for all
///   events): with `group_by: [src.ip]` and `field: dst.ip`, a destination new for one
///   source alerts even if other sources reach it daily. A key seen for the first time
///   after the learn period alerts on its first value.
/// - **Learning.** The learn period starts at the event time of the first event the
///   stage sees and lasts `learn`: an event whose own time is before its end teaches the
///   stage its value and never alerts, whenever it arrives; an event at or after the end
///   alerts if its value is new for its key. The start is saved with the state, so a
///   restart or a reload does not learn again. Values in `warm_up.file` are learned when
///   the stage is built, before the first event. With `warm_up.pce` the stage reads the
///   PCE's own history of the last `lookback` (flows or audit events) when the daemon
///   starts, learning every value and alerting on none until it is read; learned values
///   count from their own time, so `learn: 7d` with `lookback: 7d` alerts at once.
/// - **Forgetting.** With `forget_after`, a value is forgotten once the stage's event
///   time (the newest event time it has seen) is `forget_after` or more past the value's
///   last sighting: seen again, it is new again and alerts (or, in the learn period, is
///   learned again). Without it, a value is known for good — within the bounds below.
/// - **Alert.** Each new value is one alert, of its own (a one-off: no episode, nothing
///   to resolve), raised by the event that brought it: `value` and `threshold` 1, the
///   window and `first_seen` at the event's time, the group of its key, `fields.term` =
///   the value (a tuple as a list, parts that read as numbers as numbers), the event as
///   the sample. The alert's id is made of the key, the value and the time, so the same
///   event read again after a restart makes the same alert (delivered once). Put a
///   `dedupe` or `cooldown` stage after it to quieten a key that brings many new values
///   at once.
/// - **Memory.** Values are held as keyed 64-bit hashes, not text (the hash key is kept
///   in the saved state so a restart knows them), with the time each was last seen: a
///   key with a few values takes about 300 bytes, and a value of a key with many 20 to
///   40 bytes. At most `max_terms` values a key, `max_total_terms` in all and `max_keys`
///   keys: past a bound the least recently seen tenth is evicted (its values alert again
///   when next seen) and counted in `vigil_node_dropped_total{reason="evicted"}`. At the
///   defaults the stage holds at most about 40 MB.
/// - **State** (values, the learn period's start, the hash key) survives restarts and
///   reloads; it is reset when `field` or `group_by` change, and kept when `learn`,
///   `forget_after`, the bounds, `warm_up` or `alert` change. The warm-up file is read
///   when the stage is built (at a start, or a reload that changes the stage), and then
///   only if the stage has no saved state or the file changed since it was learned (its
///   name, size or modification time): what was learned since is kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct NewTermConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The field whose new values alert (`dst.ip`), or a list of fields whose values
    /// together make one value (`[src.labels.app, dst.labels.app]`: a pair of apps).
    pub field: FieldSpec,
    /// How long to learn before alerting (`7d`, `24h`; `0s` alerts from the first event,
    /// for a stage warmed up from a file), in event time from the first event the stage
    /// sees. Values seen in it never alert.
    pub learn: Duration,
    /// Forget a value not seen for this long (event time): it alerts again as new when
    /// it comes back (`30d`). Default: values are never forgotten (within the bounds).
    #[serde(default)]
    pub forget_after: Option<Duration>,
    /// Field paths whose values make the group key (`src.ip`); each key learns its own
    /// values. Default: none (one set of values for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Past values to learn when the stage is built, so a new rule or a new deployment
    /// does not alert on everything it has not seen yet.
    #[serde(default)]
    pub warm_up: Option<WarmUpConfig>,
    /// The most values one key holds. Past it, the key's least recently seen tenth is
    /// forgotten (they alert again when seen) and counted in
    /// `vigil_node_dropped_total{reason="evicted"}`. Default: 100000.
    #[serde(default = "default_max_terms")]
    #[schemars(range(min = 1))]
    pub max_terms: usize,
    /// The most values held over all keys (20 to 40 bytes each in a key with many).
    /// Past it, the least recently seen tenth of all values is forgotten and counted as
    /// evicted. Default: 1000000.
    #[serde(default = "default_max_total_terms")]
    #[schemars(range(min = 1))]
    pub max_total_terms: usize,
    /// The most group keys held. Past it, the keys seen least recently are forgotten, a
    /// tenth at a time, with their values, and counted as evicted. Default: 100000.
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the alert reads. `alert.mode` and `alert.resolve_after` do not apply: each new
    /// value is one alert, with nothing to resolve.
    #[serde(default)]
    pub alert: AlertConfig,
}

fn default_max_terms() -> usize {
    100_000
}

fn default_max_total_terms() -> usize {
    1_000_000
}

fn default_max_keys() -> usize {
    100_000
}

fn example() -> Value {
    json!({
        "inputs": ["flows"],
        "field": ["src.labels.app", "dst.labels.app"],
        "learn": "7d",
        "forget_after": "90d",
        "alert": {
            "severity": "medium",
            "title": "First connection from {{fields.term.[0]}} to {{fields.term.[1]}}"
        }
    })
}

impl NewTermConfig {
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

    /// How a value reads in the default templates: `{{fields.term}}`, or a tuple as
    /// `(web, db)`.
    fn term_text(&self) -> &'static str {
        if self.field.is_tuple() {
            "({{#each fields.term}}{{#if @index}}, {{/if}}{{this}}{{/each}})"
        } else {
            "{{fields.term}}"
        }
    }

    /// The default alert title: `New dst.ip 10.0.0.5 for src.ip=10.0.0.1`.
    pub(super) fn default_title(&self) -> String {
        format!(
            "New {} {}{{{{#if group_key}}}} for {{{{group_key}}}}{{{{/if}}}}",
            self.field.text(),
            self.term_text()
        )
    }

    /// The default alert summary: the value, when, and since when values are learned.
    pub(super) fn default_summary(&self) -> String {
        let unseen = match &self.forget_after {
            Some(d) => format!("not seen in the last {d}"),
            None => "never seen before".to_string(),
        };
        format!(
            "{} {}{{{{#if group_key}}}} for {{{{group_key}}}}{{{{/if}}}} at {{{{window.end}}}}: {unseen} (values learned since {{{{fields.learning_since}}}}).",
            self.field.text(),
            self.term_text()
        )
    }

    /// What the alerts' `fields` look like, for checking templates and for an example
    /// alert (`vigil send-test`): the first value of `field` in `records`, or a made-up
    /// one when they have none.
    pub fn example_fields(&self, records: &[Value]) -> serde_json::Map<String, Value> {
        let paths: Vec<FieldPath> = self
            .field
            .paths()
            .into_iter()
            .filter_map(|p| FieldPath::parse(p).ok())
            .collect();
        let found = records.iter().find_map(|r| {
            let parts: Option<Vec<Value>> = paths.iter().map(|p| p.first(r).cloned()).collect();
            match parts {
                Some(parts) if parts.iter().any(Value::is_null) => None,
                Some(mut parts) if parts.len() == 1 && !self.field.is_tuple() => {
                    Some(parts.remove(0))
                }
                Some(parts) => Some(Value::Array(parts)),
                None => None,
            }
        });
        let term = found.unwrap_or_else(|| {
            if self.field.is_tuple() {
                Value::Array(
                    (1..=self.field.paths().len())
                        .map(|i| json!(format!("example-{i}")))
                        .collect(),
                )
            } else {
                json!("example")
            }
        });
        let mut fields = serde_json::Map::new();
        fields.insert("term".into(), term);
        fields.insert("learning_since".into(), json!("1970-01-01T00:00:00Z"));
        fields
    }

    /// Structural checks: field paths that parse, bounds of at least 1, a warm-up file
    /// inside the pipeline's directory that can be read, templates that render.
    pub fn check(&self, p: &mut Problems) {
        self.field
            .check(p, "several whose values together make one value");
        GroupBy::check(&self.group_by, "/group_by", p);
        if let Some(d) = &self.forget_after {
            p.positive_duration("/forget_after", "`forget_after`", d);
        }
        for (pointer, what, v) in [
            ("/max_terms", "`max_terms`", self.max_terms),
            (
                "/max_total_terms",
                "`max_total_terms`",
                self.max_total_terms,
            ),
            ("/max_keys", "`max_keys`", self.max_keys),
        ] {
            if v == 0 {
                p.error(
                    pointer,
                    codes::NON_POSITIVE,
                    format!("{what} must be at least 1"),
                );
            }
        }
        if self.max_terms > self.max_total_terms {
            p.warning(
                "/max_terms",
                codes::INVALID_VALUE,
                format!(
                    "`max_terms` {} is above `max_total_terms` {}: no key can hold more than `max_total_terms` values",
                    self.max_terms, self.max_total_terms
                ),
            );
        }
        match &self.warm_up {
            None if !self.learn.is_positive() => p.warning(
                "/learn",
                codes::INVALID_VALUE,
                "`learn` is 0s and there is no `warm_up`: every value alerts the first time it is seen, from the first event on; learn for a while first (`learn: 7d`) or warm up from past records",
            ),
            None => {}
            Some(w) => self.check_warm_up(w, p),
        }
        self.alert.check_no_episodes(
            "new_term (each new value is one alert, with nothing to resolve)",
            p,
        );
        AlertTemplates::check_with_fields(
            &self.alert,
            (&self.default_title(), &self.default_summary()),
            &self.group_by,
            None,
            &self.example_fields(&[]),
            p,
        );
    }

    fn check_warm_up(&self, w: &WarmUpConfig, p: &mut Problems) {
        if let Some(f) = &w.time_field
            && let Err(e) = FieldPath::parse(f)
        {
            p.error("/warm_up/time_field", codes::INVALID_VALUE, e.to_string());
        }
        if let Some(pce) = &w.pce
            && !pce.lookback.is_positive()
        {
            p.error(
                "/warm_up/pce/lookback",
                codes::INVALID_VALUE,
                "`lookback` must be longer than 0s: how far back the PCE's history is read (`7d`)",
            );
        }
        let Some(file) = &w.file else {
            if w.pce.is_none() {
                p.error(
                    "/warm_up",
                    codes::INVALID_VALUE,
                    "`warm_up` needs a `file` of past records, a `pce` history to read, or both",
                );
            }
            return;
        };
        let path = match confine(&p.base_dir, file) {
            Ok(path) => path,
            Err(e) => {
                p.error(
                    "/warm_up/file",
                    codes::OUTSIDE_DIR,
                    format!("warm_up.file {e}"),
                );
                return;
            }
        };
        // Only how the file starts is read here: the whole of it is read when the stage
        // is built (where lines that are not records are counted and set aside).
        match layout(&path) {
            Ok(Layout::Empty) => p.warning(
                "/warm_up/file",
                codes::INVALID_VALUE,
                format!(
                    "the warm-up file `{}` is empty: the stage learns nothing from it",
                    path.display()
                ),
            ),
            Ok(Layout::Lines | Layout::Array) => {}
            Err(e) => p.error("/warm_up/file", codes::INVALID_VALUE, e.to_string()),
        }
    }

    /// Builds the running stage: restores its saved state when compatible, then learns
    /// the warm-up file if the state does not hold it yet, and starts reading the PCE's
    /// history through `history` if the state does not hold that either (`history`
    /// answers `None` where no history can be read: `vigil test`, `vigil replay`).
    pub fn build(
        &self,
        cx: &BuildContext,
        history: &dyn Fn(&PceWarmUp) -> Result<Option<HistoryFeed>, NodeError>,
    ) -> Result<Box<dyn Stage>, NodeError> {
        let templates = AlertTemplates::for_stage(
            &self.alert,
            &self.default_title(),
            &self.default_summary(),
            cx,
        )?;
        let mut stage = NewTermStage::new(self, templates)?.counting_into(cx.counters.clone());
        let restored = cx
            .restore()
            .is_some_and(|saved| stage.restore(&saved, &cx.id));
        if let Some(pce) = self.warm_up.as_ref().and_then(|w| w.pce.as_ref()) {
            let mark = pce.mark();
            if !restored || stage.pce_warmed_from() != Some(mark.as_str()) {
                match history(pce)? {
                    Some(feed) => stage.read_history(feed, mark),
                    None => {
                        tracing::debug!(stage = %cx.id, "the PCE's history is not read here (only by the daemon)")
                    }
                }
            }
        }
        if let Some((w, file)) = self
            .warm_up
            .as_ref()
            .and_then(|w| w.file.as_ref().map(|f| (w, f)))
        {
            let path = confine(&cx.base_dir, file)
                .map_err(|e| NodeError::from(format!("warm_up.file {e}")))?;
            let mark = WarmUpMark::of(file, &path).map_err(|e| NodeError::from(e.to_string()))?;
            if !restored || stage.warmed_from() != Some(&mark) {
                let time_field = w
                    .time_field
                    .as_deref()
                    .map(FieldPath::parse)
                    .transpose()
                    .map_err(|e| NodeError::from(format!("warm_up.time_field: {e}")))?;
                let mut rejected = crate::store::rejected::RejectedLog::new(
                    &cx.state_dir,
                    &cx.id,
                    cx.rejected_max_bytes,
                );
                stage
                    .warm_up(&path, time_field.as_ref(), cx.clock.now(), &mut rejected)
                    .map_err(|e| NodeError::from(e.to_string()))?;
                stage.set_warmed_from(mark);
            }
        }
        Ok(Box::new(stage))
    }
}
