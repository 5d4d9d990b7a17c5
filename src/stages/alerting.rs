//! What detection stages share: the `alert:` block of their config, grouping by field
//! paths, and the samples (raw-log snapshot) an alert carries.

use std::collections::VecDeque;
use std::sync::Arc;

use handlebars::Handlebars;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::episode::AlertMode;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::{
    Alert, AlertStatus, AlertWindow, Event, FieldPath, Group, Sample, Severity, Timestamp,
};
use crate::time::Duration;

/// The `alert:` block of a detection stage: how the alerts it raises read.
///
/// `title` and `summary` are handlebars templates, checked by `vigil validate` against a
/// sample alert (strict: a misspelt variable is an error). They see `group` (the group
/// values by path: `{{group.src.ip}}`), `group_key`, `value`, `threshold`, `unit`,
/// `estimate`, `window.start`, `window.end`, `window.length`, `status` (`firing` or
/// `resolved`), `first_seen`, `last_seen`, `updates`, `fields` (what the stage adds, e.g.
/// `distinct_count`'s `fields.distinct_values`), `pipeline`, `stage` and `severity`; a
/// stage's own values are variables by themselves too where no common one has the name
/// (`spike`: `direction`, `reference`; `ratio`: `matched`, `total`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// How bad it is: `info`, `low`, `medium`, `high` or `critical`. Default: `medium`.
    #[serde(default)]
    pub severity: Severity,
    /// One line naming what happened. Default: the stage's own description of it.
    #[serde(default)]
    pub title: Option<String>,
    /// A few lines of detail. Default: the value against the threshold over the window.
    #[serde(default)]
    pub summary: Option<String>,
    /// How many of the raw events that caused the alert it carries (the raw-log
    /// snapshot). Default: 5.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// `window_count`, `bandwidth`, `distinct_count`, `metric` and `ratio` only. `episode`
    /// (default): one alert per key while its condition holds — `firing` at the first
    /// crossing, updated in place, `resolved` when it no longer holds. `each_crossing`: an
    /// alert at every crossing, the key's window starting again empty after each
    /// (ElastAlert's frequency rule; on busy traffic it fires again and again).
    #[serde(default)]
    pub mode: AlertMode,
    /// `window_count`, `bandwidth`, `distinct_count`, `metric` and `ratio` in `episode`
    /// mode: an episode
    /// whose key had no event for this long (engine time) is resolved even if its window,
    /// measured in event time, still holds enough. Default: the stage's `window`.
    #[serde(default)]
    pub resolve_after: Option<Duration>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            severity: Severity::default(),
            title: None,
            summary: None,
            samples: default_samples(),
            mode: AlertMode::default(),
            resolve_after: None,
        }
    }
}

impl AlertConfig {
    /// For stages without episodes: `mode` and `resolve_after` are errors there.
    pub fn check_no_episodes(&self, kind: &str, p: &mut Problems) {
        if self.mode != AlertMode::Episode {
            p.error(
                "/alert/mode",
                codes::INVALID_VALUE,
                format!(
                    "`alert.mode` applies to window_count, bandwidth, distinct_count, metric and ratio, not to {kind}"
                ),
            );
        }
        if self.resolve_after.is_some() {
            p.error(
                "/alert/resolve_after",
                codes::INVALID_VALUE,
                format!(
                    "`alert.resolve_after` applies to window_count, bandwidth, distinct_count, metric and ratio, not to {kind}"
                ),
            );
        }
    }
}

fn default_samples() -> usize {
    5
}

/// [`Finding::estimate`] of a value known to be at least the true one's share (a flow's
/// bytes from lifetime counters over its detected span: `bandwidth`).
pub const LOWER_BOUND: &str = "lower_bound";

/// [`Finding::estimate`] of a value estimated from a sketch, within a few percent either
/// way (a HyperLogLog count of distinct values: `distinct_count`).
pub const APPROXIMATE: &str = "approximate";

/// The most samples an alert may carry.
pub const MAX_SAMPLES: usize = 100;

/// The template names in an [`AlertTemplates`] registry.
const TITLE: &str = "title";
const SUMMARY: &str = "summary";

/// The compiled `alert:` block of one stage.
#[derive(Debug, Clone)]
pub struct AlertTemplates {
    registry: Arc<Handlebars<'static>>,
    /// Severity of the alerts.
    pub severity: Severity,
    /// Samples per alert.
    pub samples: usize,
    pipeline: Arc<str>,
    stage: Arc<str>,
}

/// What goes into an alert besides what the templates render.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The group.
    pub group: Group,
    /// The measured value.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// Unit of value and threshold (`MiB`, `Mbps`), if not a count.
    pub unit: Option<String>,
    /// Set when the value is an estimate, saying what kind ([`LOWER_BOUND`],
    /// [`APPROXIMATE`]).
    pub estimate: Option<String>,
    /// The window measured.
    pub window: AlertWindow,
    /// The raw events.
    pub samples: Vec<Sample>,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// The episode's alert id; `None` makes one from the group and window.
    pub id: Option<String>,
    /// When the episode began (the window's end for a one-off alert).
    pub first_seen: Timestamp,
    /// The newest event time counted.
    pub last_seen: Timestamp,
    /// In-place updates of the episode before this report.
    pub updates: u64,
    /// Whether the finding is an episode (closed later by a `resolved` report).
    pub episode: bool,
    /// What the stage adds to the alert's `fields`; templates see them as `fields` and,
    /// where no common variable has the name, by themselves (`spike`: `direction`).
    pub fields: serde_json::Map<String, Value>,
}

impl Finding {
    /// A one-off finding (no episode): first and last seen at the window's end.
    pub fn once(
        group: Group,
        value: f64,
        threshold: f64,
        window: AlertWindow,
        samples: Vec<Sample>,
        status: AlertStatus,
    ) -> Finding {
        Finding {
            group,
            value,
            threshold,
            unit: None,
            estimate: None,
            window,
            samples,
            status,
            id: None,
            first_seen: window.end,
            last_seen: window.end,
            updates: 0,
            episode: false,
            fields: serde_json::Map::new(),
        }
    }
}

impl AlertTemplates {
    /// Compiles `cfg`; `default_title` / `default_summary` are used when it sets none.
    /// Errors name the template and what is wrong.
    pub fn compile(
        cfg: &AlertConfig,
        default_title: &str,
        default_summary: &str,
        pipeline: &str,
        stage: &str,
    ) -> Result<AlertTemplates, (&'static str, String)> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        crate::sinks::delivery::render::add_format_helpers(&mut hb);
        let title = cfg.title.as_deref().unwrap_or(default_title);
        let summary = cfg.summary.as_deref().unwrap_or(default_summary);
        hb.register_template_string(TITLE, title)
            .map_err(|e| ("/alert/title", template_error(&e)))?;
        hb.register_template_string(SUMMARY, summary)
            .map_err(|e| ("/alert/summary", template_error(&e)))?;
        Ok(AlertTemplates {
            registry: Arc::new(hb),
            severity: cfg.severity,
            samples: cfg.samples.min(MAX_SAMPLES),
            pipeline: pipeline.into(),
            stage: stage.into(),
        })
    }

    /// Compiles `cfg` for the stage being built in `cx`.
    pub fn for_stage(
        cfg: &AlertConfig,
        default_title: &str,
        default_summary: &str,
        cx: &crate::node::BuildContext,
    ) -> Result<AlertTemplates, crate::node::NodeError> {
        AlertTemplates::compile(cfg, default_title, default_summary, &cx.pipeline, &cx.node)
            .map_err(|(pointer, message)| format!("{pointer}: {message}").into())
    }

    /// Checks `cfg` for `vigil validate`: the templates compile and render against a
    /// sample alert grouped by `group_by`.
    pub fn check(
        cfg: &AlertConfig,
        default_title: &str,
        default_summary: &str,
        group_by: &[String],
        p: &mut Problems,
    ) {
        Self::check_with_unit(cfg, default_title, default_summary, group_by, None, p);
    }

    /// [`AlertTemplates::check`] for a stage whose alerts carry `unit` (so a template
    /// can be checked to render it, e.g. `{{size value unit=unit}}` of a volume).
    pub fn check_with_unit(
        cfg: &AlertConfig,
        default_title: &str,
        default_summary: &str,
        group_by: &[String],
        unit: Option<&str>,
        p: &mut Problems,
    ) {
        let defaults = (default_title, default_summary);
        Self::check_with_fields(cfg, defaults, group_by, unit, &serde_json::Map::new(), p);
    }

    /// [`AlertTemplates::check_with_unit`] for a stage whose alerts carry values of their
    /// own (`fields`: example values, e.g. `{"direction": "up", "reference": 10}`), so a
    /// template may use them and one that misspells them is an error.
    pub fn check_with_fields(
        cfg: &AlertConfig,
        (default_title, default_summary): (&str, &str),
        group_by: &[String],
        unit: Option<&str>,
        fields: &serde_json::Map<String, Value>,
        p: &mut Problems,
    ) {
        if cfg.samples > MAX_SAMPLES {
            p.error(
                "/alert/samples",
                codes::INVALID_VALUE,
                format!("at most {MAX_SAMPLES} samples per alert"),
            );
        }
        if let Some(d) = &cfg.resolve_after {
            p.positive_duration("/alert/resolve_after", "`alert.resolve_after`", d);
        }
        let t = match AlertTemplates::compile(cfg, default_title, default_summary, "p", "s") {
            Ok(t) => t,
            Err((pointer, message)) => {
                p.error(pointer, codes::INVALID_VALUE, message);
                return;
            }
        };
        let paths: Vec<FieldPath> = group_by
            .iter()
            .filter_map(|g| FieldPath::parse(g).ok())
            .collect();
        let sample = Value::Object(serde_json::Map::new());
        let mut group = Group::of(&sample, &paths);
        for (_, v) in &mut group.fields {
            *v = Some(Value::String("example".into()));
        }
        let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let cx = t.context(&Finding {
            unit: Some(unit.unwrap_or("unit").into()),
            estimate: Some(LOWER_BOUND.into()),
            fields: fields.clone(),
            ..Finding::once(
                group,
                1.0,
                1.0,
                AlertWindow {
                    start: now,
                    end: now,
                },
                Vec::new(),
                AlertStatus::Firing,
            )
        });
        for (name, pointer) in [(TITLE, "/alert/title"), (SUMMARY, "/alert/summary")] {
            if let Err(e) = t.registry.render(name, &cx) {
                p.error(pointer, codes::INVALID_VALUE, render_error(&e, fields));
            }
        }
    }

    /// The values templates see.
    pub fn context(&self, f: &Finding) -> Value {
        let length = (f.window.end - f.window.start).to_std().unwrap_or_default();
        let mut cx = json!({
            "pipeline": &*self.pipeline,
            "stage": &*self.stage,
            "severity": self.severity.as_str(),
            "group": f.group.nested(),
            "group_key": f.group.key(),
            "value": round(f.value),
            "threshold": round(f.threshold),
            "unit": f.unit.clone().unwrap_or_default(),
            "estimate": f.estimate.clone().unwrap_or_default(),
            "status": match f.status { AlertStatus::Firing => "firing", AlertStatus::Resolved => "resolved" },
            "first_seen": f.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "last_seen": f.last_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "updates": f.updates,
            "fields": f.fields,
            "window": {
                "start": f.window.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "end": f.window.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "length": humantime::format_duration(std::time::Duration::from_secs(length.as_secs())).to_string(),
            },
        });
        if let Value::Object(common) = &mut cx {
            for (name, v) in &f.fields {
                if !common.contains_key(name) {
                    let v = match v {
                        Value::Number(n) => n.as_f64().map_or_else(|| v.clone(), round),
                        _ => v.clone(),
                    };
                    common.insert(name.clone(), v);
                }
            }
        }
        cx
    }

    /// Makes the alert for `f`. A template that fails to render (a value the check could
    /// not foresee) falls back to its source text and logs why.
    pub fn alert(&self, f: Finding) -> Alert {
        let cx = self.context(&f);
        let render = |name: &str| match self.registry.render(name, &cx) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(stage = %self.stage, template = name, error = %render_error(&e, &f.fields), "alert template failed");
                self.registry
                    .get_template(name)
                    .and_then(|t| t.name.clone())
                    .unwrap_or_else(|| name.to_string())
            }
        };
        let group_key = f.group.key();
        let title = render(TITLE);
        let summary = render(SUMMARY);
        Alert {
            id: f.id.unwrap_or_else(|| {
                Alert::make_id(&self.pipeline, &self.stage, &group_key, &f.window)
            }),
            status: f.status,
            pipeline: self.pipeline.to_string(),
            stage: self.stage.to_string(),
            severity: self.severity,
            title,
            summary,
            group: f.group.nested(),
            group_key,
            value: f.value,
            threshold: f.threshold,
            unit: f.unit,
            estimate: f.estimate,
            window: f.window,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            updates: f.updates,
            episode: f.episode,
            samples: f.samples,
            top: None,
            fields: f.fields,
        }
    }

    /// The id of this stage's alert for group key `group_key` and `window`.
    pub fn alert_id(&self, group_key: &str, window: &AlertWindow) -> String {
        Alert::make_id(&self.pipeline, &self.stage, group_key, window)
    }

    /// The node id alerts are raised by (`pipeline.stage`), for their events' metadata.
    pub fn node_id(&self) -> Arc<str> {
        format!("{}.{}", self.pipeline, self.stage).into()
    }

    /// Wraps `alert` in an event.
    pub fn event(&self, alert: Alert) -> Arc<Event> {
        let time = alert.window.end;
        Arc::new(Event::from_alert(alert, self.node_id(), time))
    }
}

fn round(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!((v * 100.0).round() / 100.0)
    }
}

fn template_error(e: &handlebars::TemplateError) -> String {
    format!(
        "this template does not parse: {}",
        crate::diagnostic::template::syntax_reason(e)
    )
}

fn render_error(e: &handlebars::RenderError, fields: &serde_json::Map<String, Value>) -> String {
    let reason = crate::diagnostic::template::render_reason(e);
    let own: String = fields.keys().map(|k| format!(", {k}")).collect();
    format!(
        "this template does not render: {reason} (variables: group.<path>, group_key, value, threshold, unit, estimate, window.start, window.end, window.length, first_seen, last_seen, updates, fields, pipeline, stage, severity, status{own})"
    )
}

/// Compiled `group_by` paths.
#[derive(Debug, Clone, Default)]
pub struct GroupBy(pub Vec<FieldPath>);

impl GroupBy {
    /// Parses the paths (checked by `vigil validate` first).
    pub fn parse(paths: &[String]) -> Result<GroupBy, String> {
        paths
            .iter()
            .map(|p| FieldPath::parse(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map(GroupBy)
    }

    /// Checks the paths for `vigil validate`; problems at `/group_by/<i>`.
    pub fn check(paths: &[String], pointer: &str, p: &mut Problems) {
        for (i, path) in paths.iter().enumerate() {
            if let Err(e) = FieldPath::parse(path) {
                p.error(
                    format!("{pointer}/{i}"),
                    codes::INVALID_VALUE,
                    e.to_string(),
                );
            }
        }
    }

    /// The group of an event.
    pub fn group(&self, data: &Value) -> Group {
        Group::of(data, &self.0)
    }
}

/// The most bytes of raw events a detection stage keeps as samples of its windows (the
/// keys that have not alerted yet). Beyond it, a window keeps no samples until some are
/// freed (counted); an alert then carries at least the event that opened it.
pub const SAMPLE_BUDGET_BYTES: usize = 1 << 20;

/// How many samples a stage's windows keep, within how many bytes in all.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SampleBudget {
    /// Samples per window (the stage's `alert.samples`).
    #[serde(skip)]
    pub per_window: usize,
    /// Bytes held (recounted when windows are swept).
    #[serde(skip)]
    pub used: usize,
    /// Samples not kept because the budget was spent.
    #[serde(default)]
    pub skipped: u64,
}

impl SampleBudget {
    /// A budget of `per_window` samples a window.
    pub fn new(per_window: usize) -> SampleBudget {
        SampleBudget {
            per_window,
            used: 0,
            skipped: 0,
        }
    }
}

/// Up to N samples of the events in a window, the earliest kept: when earlier samples
/// slide out of the window, later events take their place. An empty set takes no
/// allocation and one word (a stage may hold a million). Saved as `{"items": [...]}`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SampleSet {
    #[allow(clippy::box_collection, reason = "one word instead of four when empty")]
    #[serde(serialize_with = "save_items", deserialize_with = "load_items")]
    items: Option<Box<VecDeque<Sample>>>,
}

#[allow(clippy::box_collection, reason = "see SampleSet::items")]
fn save_items<S: serde::Serializer>(
    items: &Option<Box<VecDeque<Sample>>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(items.iter().flat_map(|q| q.iter()))
}

#[allow(clippy::box_collection, reason = "see SampleSet::items")]
fn load_items<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<VecDeque<Sample>>>, D::Error> {
    let items = <VecDeque<Sample> as serde::Deserialize>::deserialize(deserializer)?;
    Ok((!items.is_empty()).then(|| Box::new(items)))
}

/// Where an item goes in `q`, kept in order, after every item `before` holds for (the
/// queue's order is `before`'s): last, without a search, when it holds for the last item,
/// as it does for events that come in time order.
pub fn slot_after<T>(q: &VecDeque<T>, before: impl Fn(&T) -> bool) -> usize {
    if q.back().is_none_or(&before) {
        q.len()
    } else {
        q.partition_point(before)
    }
}

impl SampleSet {
    /// Offers `event`; kept if fewer than the budget's samples a window are held and the
    /// stage's bytes allow.
    pub fn offer(&mut self, event: &Event, budget: &mut SampleBudget) {
        if self.len() >= budget.per_window {
            return;
        }
        if budget.used >= SAMPLE_BUDGET_BYTES {
            budget.skipped += 1;
            if budget.skipped == 1 {
                tracing::info!(
                    budget_bytes = SAMPLE_BUDGET_BYTES,
                    "a detection stage's windows hold as many samples as they may: more keys are counted without samples (an alert still carries the event that opened it)"
                );
            }
            return;
        }
        let s = Sample::of(event);
        budget.used += s.record.get().len();
        let items = self.items.get_or_insert_default();
        // Keep time order even when events arrive out of order.
        let at = slot_after(items, |x| x.time <= s.time);
        items.insert(at, s);
    }

    fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.items.iter().flat_map(|q| q.iter())
    }

    /// Bytes of raw events held.
    pub fn bytes(&self) -> usize {
        self.iter().map(|s| s.record.get().len()).sum()
    }

    /// Drops samples older than `cutoff` (times `<= cutoff` are out of the window).
    pub fn evict_through(&mut self, cutoff: Timestamp) {
        let Some(items) = &mut self.items else { return };
        while items.front().is_some_and(|s| s.time <= cutoff) {
            items.pop_front();
        }
        if items.is_empty() {
            self.items = None;
        }
    }

    /// Copies of the first `n` samples.
    pub fn copies(&self, n: usize) -> Vec<Sample> {
        self.iter().take(n).cloned().collect()
    }

    /// Takes the samples, leaving the set empty.
    pub fn take(&mut self) -> Vec<Sample> {
        self.items.take().map(|q| Vec::from(*q)).unwrap_or_default()
    }

    /// The samples held.
    pub fn len(&self) -> usize {
        self.items.as_ref().map_or(0, |q| q.len())
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn templates_render_group_values_and_a_misspelt_variable_is_an_error() {
        let cfg = AlertConfig {
            title: Some("Burst from {{group.src.ip}}: {{value}} ≥ {{threshold}}".into()),
            ..AlertConfig::default()
        };
        let mut p = Problems::default();
        AlertTemplates::check(&cfg, "t", "s", &["src.ip".into()], &mut p);
        assert!(p.items.is_empty(), "{:?}", p.items);

        let t = AlertTemplates::compile(&cfg, "t", "s", "pipe", "burst").unwrap();
        let g = GroupBy::parse(&["src.ip".into()]).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let a = t.alert(Finding::once(
            g.group(&json!({"src": {"ip": "10.1.1.1"}})),
            12.0,
            10.0,
            AlertWindow { start: t0, end: t0 },
            vec![],
            AlertStatus::Firing,
        ));
        assert_eq!(a.title, "Burst from 10.1.1.1: 12 ≥ 10");
        assert_eq!(a.group_key, "src.ip=10.1.1.1");

        let bad = AlertConfig {
            title: Some("Burst from {{group.src.ipp}}".into()),
            ..AlertConfig::default()
        };
        let mut p = Problems::default();
        AlertTemplates::check(&bad, "t", "s", &["src.ip".into()], &mut p);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].pointer, "/alert/title");
        assert!(
            p.items[0].message.contains("does not render"),
            "{}",
            p.items[0].message
        );

        let unparsable = AlertConfig {
            summary: Some("{{#if}}".into()),
            ..AlertConfig::default()
        };
        let mut p = Problems::default();
        AlertTemplates::check(&unparsable, "t", "s", &[], &mut p);
        assert_eq!(p.items[0].pointer, "/alert/summary");
    }

    #[test]
    fn sample_sets_keep_the_earliest_and_refill() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let ev = |s: i64| {
            Event::from_record(
                json!({"n": s}),
                "p.s".into(),
                t0 + chrono::Duration::seconds(s),
            )
        };
        let mut set = SampleSet::default();
        let mut budget = SampleBudget::new(3);
        for s in [3, 1, 2, 4] {
            set.offer(&ev(s), &mut budget);
        }
        assert_eq!(set.len(), 3);
        set.evict_through(t0 + chrono::Duration::seconds(1));
        set.offer(&ev(5), &mut budget);
        let got: Vec<i64> = set
            .take()
            .iter()
            .map(|s| s.value()["n"].as_i64().unwrap())
            .collect();
        assert_eq!(got, vec![2, 3, 5]);

        // A spent budget keeps nothing more, and says so.
        let mut spent = SampleBudget::new(3);
        spent.used = SAMPLE_BUDGET_BYTES;
        let mut set = SampleSet::default();
        set.offer(&ev(1), &mut spent);
        assert!(set.is_empty());
        assert_eq!(spent.skipped, 1);
    }
}
