//! The `report` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::period::{Calendar, Period, parse_time_zone};
use super::stage::{ReportSpec, ReportStage};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::{FieldPath, Severity};
use crate::node::{BuildContext, NodeError, Stage};
use crate::stages::alerting::{AlertConfig, AlertTemplates, GroupBy};
use crate::time::Duration;

/// Totals per key over calendar periods — hours, days, ISO weeks or months in a time
/// zone — reported when each period is over: one alert per key (and, with `top`, one
/// with the period's biggest keys). The Portflow case: the bytes of each port, a mail
/// per port owner each month.
///
/// - **Periods.** An event's time decides its period, in `time_zone`: `monthly` is the
///   calendar month there, `daily` the day from local midnight to midnight (23 or 25
///   hours on the days the clocks change), `weekly` the ISO week from Monday 00:00,
///   `hourly` the hour of the local clock (the hour repeated when clocks go back is one
///   period of two hours).
/// - **Totals.** Per `group_by` key (a missing field and an empty one are different keys)
///   each period counts the events and adds up each `sum` field. An event whose field is
///   missing, not a number (numeric strings count) or negative adds nothing to that total
///   and is counted in `fields.unmeasured`; it still counts as an event and adds to the
///   other totals. Sums are exact for whole numbers up to 2^53 (bytes: 8 PiB).
/// - **Reports.** A period is reported once the clock (the time all inputs reached) is
///   `grace` past its end, and at the end of the input (`vigil test`, `vigil replay`):
///   one one-off alert per key (`info` unless `alert.severity` says otherwise; keys in
///   order), `value` the total of the first `sum` field (the count of events without
///   `sum`), `unit` as configured (`unit: B` shows sizes: `2.14 TiB`), `window` the period
///   `[start, end)`, `group` the key, and `fields`: `period` (`2026-03`, `2026-03-14`,
///   `2026-W11`, `2026-03-14T09:00`), `time_zone`, `count`, `totals` (each `sum` field's
///   total, by path) and `unmeasured` (by path). With `top: N`, one more alert follows:
///   group empty, `value` the total over every key, the N biggest keys by the first
///   measure as its `top` table (ties in key order), `fields.keys` (how many keys) and
///   `fields.ignored` (events of keys past `max_keys`). Alert ids are made of the
///   pipeline, stage, key and period, so a replay makes the same ids.
/// - **Late events.** An event for a period already reported — or whose period ended
///   `grace` or more before the clock — is counted as late
///   (`vigil_node_dropped_total{reason="late"}`) and added nowhere. A source catching up
///   after an outage longer than `grace` finds its periods reported: give such inputs a
///   longer `grace`.
/// - **Bounds.** A period holds at most `max_keys` keys: an event of a further key is not
///   counted, and is counted as `reason="evicted"` (the first of each period is a warning
///   in the log) and in the top alert's `fields.ignored`.
/// - **State.** The open periods survive restarts and reloads; they are reset when
///   `group_by`, `sum`, `period` or `time_zone` changes.
///
/// The stage hands on only its alerts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct ReportConfig {
    /// The sources or stages this stage totals.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The calendar period totals are kept over: `hourly`, `daily`, `weekly` (ISO weeks,
    /// from Monday) or `monthly`, in `time_zone`.
    pub period: Period,
    /// The time zone whose calendar makes the periods: an IANA name (`Europe/Berlin`,
    /// `Asia/Taipei`, `America/New_York`). Default: `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Field paths whose values make the key totals are kept per (`service.port`).
    /// Default: none (one total for all events).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Numeric fields to total (a path, or a list: `[in_bytes, out_bytes]`); the first is
    /// the alerts' `value`. Default: none (the alerts' `value` is the count of events).
    #[serde(default)]
    pub sum: SumFields,
    /// The unit of the first `sum` field (`B` for bytes: templates and mails then show
    /// sizes, `2.14 TiB`). Default: none.
    #[serde(default)]
    pub unit: Option<String>,
    /// Also report the period's N biggest keys (by the first `sum` field, or by count) as
    /// one alert with a `top` table. Needs `group_by`. Default: no such alert.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub top: Option<usize>,
    /// How long after a period's end its events may still arrive before it is reported.
    /// Default: `5m`.
    #[serde(default = "default_grace")]
    pub grace: Duration,
    /// The most keys one period holds; events of further keys are counted and not
    /// totalled. Default: 100000.
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1))]
    pub max_keys: usize,
    /// How the reports read.
    #[serde(default)]
    pub alert: ReportAlertConfig,
}

/// `sum:` one field path, or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SumFields {
    /// One numeric field.
    One(String),
    /// Several numeric fields, each totalled on its own.
    Many(Vec<String>),
}

impl Default for SumFields {
    fn default() -> Self {
        SumFields::Many(Vec::new())
    }
}

impl SumFields {
    /// The paths, in order.
    pub fn paths(&self) -> &[String] {
        match self {
            SumFields::One(p) => std::slice::from_ref(p),
            SumFields::Many(ps) => ps,
        }
    }

    /// The JSON pointer (within the stage) of path `i`.
    pub fn pointer(&self, i: usize) -> String {
        match self {
            SumFields::One(_) => "/sum".into(),
            SumFields::Many(_) => format!("/sum/{i}"),
        }
    }
}

/// The `alert:` block of a `report` stage: how its alerts read.
///
/// The templates are handlebars, checked by `vigil validate`, and see what every alert's
/// do (`group`, `group_key`, `value`, `unit`, `window.start`, `window.end`,
/// `window.length`, `pipeline`, `stage`, `severity`, `fields`) and the report's own
/// values by name too: `period`, `time_zone`, `count`, `totals`, `unmeasured` (the top
/// alert adds `keys` and `ignored`). `{{size value unit=unit}}` writes a size.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportAlertConfig {
    /// How bad it is: `info`, `low`, `medium`, `high` or `critical`. Default: `info` (a
    /// report is for the record).
    #[serde(default = "info")]
    pub severity: Severity,
    /// One line naming the key's report. Default: `{{group_key}}: <value> in
    /// {{fields.period}}`.
    #[serde(default)]
    pub title: Option<String>,
    /// A few lines of detail. Default: the value, the count of events and every total over
    /// the period.
    #[serde(default)]
    pub summary: Option<String>,
    /// With `top`: the title of the period's top-N alert. Default: `Top N <keys> in
    /// {{fields.period}} by <measure>`.
    #[serde(default)]
    pub top_title: Option<String>,
    /// With `top`: its summary. Default: the total, events and keys of the period.
    #[serde(default)]
    pub top_summary: Option<String>,
}

impl Default for ReportAlertConfig {
    fn default() -> Self {
        ReportAlertConfig {
            severity: info(),
            title: None,
            summary: None,
            top_title: None,
            top_summary: None,
        }
    }
}

fn info() -> Severity {
    Severity::Info
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_max_keys() -> usize {
    100_000
}

fn example() -> Value {
    json!({
        "inputs": ["ports"],
        "period": "monthly",
        "time_zone": "Asia/Taipei",
        "group_by": ["port"],
        "sum": ["bytes_in", "bytes_out"],
        "unit": "B",
        "top": 10,
        "alert": {"title": "Port {{group.port}}: {{size value unit=unit}} in {{period}}"}
    })
}

/// The pseudo group key of the top-N alert in its id (no real key is written so: a key
/// has `path=value` pairs, or is empty).
pub(super) const TOP_KEY: &str = "<top>";

impl ReportConfig {
    /// How a value reads in the default templates.
    fn value_text(&self) -> String {
        match (&self.unit, self.sum.paths().first()) {
            (Some(u), _) if crate::event::units::unit_bytes(u).is_some() => {
                "{{size value unit=unit}}".into()
            }
            (Some(_), _) => "{{value}} {{unit}}".into(),
            (None, Some(path)) => format!("{{{{value}}}} {path}"),
            (None, None) => "{{value}} events".into(),
        }
    }

    /// The default title of a key's report.
    pub(super) fn default_title(&self) -> String {
        let value = self.value_text();
        if self.group_by.is_empty() {
            format!("{value} in {{{{fields.period}}}}")
        } else {
            format!("{{{{group_key}}}}: {value} in {{{{fields.period}}}}")
        }
    }

    /// The default summary of a key's report.
    pub(super) fn default_summary(&self) -> String {
        let noun = self.period.noun();
        let mut s = format!(
            "{{{{pipeline}}}}.{{{{stage}}}}: {value} from {{{{fields.count}}}} events in the {noun} {{{{fields.period}}}} ({{{{fields.time_zone}}}}, {{{{window.start}}}} to {{{{window.end}}}}).",
            value = self.value_text()
        );
        if self.sum.paths().len() > 1 {
            s.push_str(" Totals: {{#each fields.totals}}{{@key}} {{this}}{{#unless @last}}, {{/unless}}{{/each}}.");
        }
        if !self.sum.paths().is_empty() {
            s.push_str("{{#each fields.unmeasured}}{{#if this}} {{this}} events had no number at {{@key}}.{{/if}}{{/each}}");
        }
        s
    }

    /// The default title of the top-N report.
    pub(super) fn default_top_title(&self) -> String {
        let measure = self.sum.paths().first().map_or("events", String::as_str);
        format!(
            "Top {} {} in {{{{fields.period}}}} by {measure}",
            self.top.unwrap_or(1),
            self.group_by.join(", ")
        )
    }

    /// The default summary of the top-N report.
    pub(super) fn default_top_summary(&self) -> String {
        format!(
            "{{{{pipeline}}}}.{{{{stage}}}}: {value} in total from {{{{fields.count}}}} events of {{{{fields.keys}}}} keys in the {noun} {{{{fields.period}}}} ({{{{fields.time_zone}}}}, {{{{window.start}}}} to {{{{window.end}}}}).{{{{#if fields.ignored}}}} {{{{fields.ignored}}}} events of keys past max_keys were not counted.{{{{/if}}}}",
            value = self.value_text(),
            noun = self.period.noun()
        )
    }

    fn alert_config(&self, top: bool) -> AlertConfig {
        let a = &self.alert;
        let (title, summary) = if top {
            (a.top_title.clone(), a.top_summary.clone())
        } else {
            (a.title.clone(), a.summary.clone())
        };
        AlertConfig {
            severity: a.severity,
            title,
            summary,
            samples: 0,
            ..AlertConfig::default()
        }
    }

    /// What a report's `fields` hold, with example values (for checking templates).
    pub(crate) fn example_fields(&self, top: bool) -> serde_json::Map<String, Value> {
        let each = |v: Value| -> Value {
            Value::Object(
                self.sum
                    .paths()
                    .iter()
                    .map(|p| (p.clone(), v.clone()))
                    .collect(),
            )
        };
        let mut f = serde_json::Map::new();
        f.insert("period".into(), json!("2026-03"));
        f.insert("time_zone".into(), json!(self.time_zone));
        f.insert("count".into(), json!(1));
        f.insert("totals".into(), each(json!(1)));
        f.insert("unmeasured".into(), each(json!(0)));
        if top {
            f.insert("keys".into(), json!(1));
            f.insert("ignored".into(), json!(0));
        }
        f
    }

    /// The templates of this stage's per-key alerts, for an example alert (`vigil
    /// send-test`); `None` when they do not compile (`vigil validate` reports that).
    pub fn alert_templates(&self, pipeline: &str, stage: &str) -> Option<AlertTemplates> {
        AlertTemplates::compile(
            &self.alert_config(false),
            &self.default_title(),
            &self.default_summary(),
            pipeline,
            stage,
        )
        .ok()
    }

    /// Structural checks: a known time zone, field paths that parse (each `sum` field
    /// once), `top` with `group_by`, bounds, templates that render.
    pub fn check(&self, p: &mut Problems) {
        if let Err(e) = parse_time_zone(&self.time_zone) {
            p.error("/time_zone", codes::INVALID_VALUE, e);
        }
        GroupBy::check(&self.group_by, "/group_by", p);
        for (i, path) in self.sum.paths().iter().enumerate() {
            if let Err(e) = FieldPath::parse(path) {
                p.error(self.sum.pointer(i), codes::INVALID_VALUE, e.to_string());
            } else if self.sum.paths()[..i].contains(path) {
                p.error(
                    self.sum.pointer(i),
                    codes::INVALID_VALUE,
                    format!("`{path}` is listed twice in `sum`: total each field once"),
                );
            }
        }
        if self.grace.is_negative() {
            p.error(
                "/grace",
                codes::INVALID_VALUE,
                format!("`grace` must not be negative, not `{}`", self.grace),
            );
        }
        if self.max_keys == 0 {
            p.error(
                "/max_keys",
                codes::NON_POSITIVE,
                "`max_keys` must be at least 1",
            );
        }
        if let Some(u) = &self.unit
            && u.trim().is_empty()
        {
            p.error(
                "/unit",
                codes::INVALID_VALUE,
                "`unit` is empty: name the unit (`B`) or leave it out",
            );
        }
        match self.top {
            Some(0) => p.error("/top", codes::NON_POSITIVE, "`top` must be at least 1"),
            Some(_) if self.group_by.is_empty() => p.error(
                "/top",
                codes::INVALID_VALUE,
                "`top` ranks the keys of `group_by`, and there is none: add `group_by`, or leave `top` out",
            ),
            _ => {}
        }
        if self.top.is_none() {
            for (key, set) in [
                ("top_title", &self.alert.top_title),
                ("top_summary", &self.alert.top_summary),
            ] {
                if set.is_some() {
                    p.error(
                        format!("/alert/{key}"),
                        codes::INVALID_VALUE,
                        format!("`alert.{key}` words the top-N alert, which only `top: N` makes: add `top`, or leave it out"),
                    );
                }
            }
        }
        // Checked with the unit the alerts carry (none: a template writing
        // `{{size value unit=unit}}` without `unit:` is an error).
        let unit = self.unit.as_deref().filter(|u| !u.trim().is_empty());
        AlertTemplates::check_with_fields(
            &self.alert_config(false),
            (&self.default_title(), &self.default_summary()),
            &self.group_by,
            unit,
            &self.example_fields(false),
            p,
        );
        if self.top.is_some() {
            let mut top = Problems::default();
            AlertTemplates::check_with_fields(
                &self.alert_config(true),
                (&self.default_top_title(), &self.default_top_summary()),
                &[],
                unit,
                &self.example_fields(true),
                &mut top,
            );
            for mut problem in top.items {
                problem.pointer = problem
                    .pointer
                    .replace("/alert/title", "/alert/top_title")
                    .replace("/alert/summary", "/alert/top_summary");
                p.items.push(problem);
            }
        }
    }

    /// Builds the running stage, restoring its open periods when `group_by`, `sum`,
    /// `period` and `time_zone` are unchanged.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let mut stage = self
            .stage(&cx.pipeline, &cx.node)?
            .counting_into(cx.counters.clone());
        if let Some(saved) = cx.restore() {
            stage.restore(&cx.id, &saved);
        }
        Ok(Box::new(stage))
    }

    /// The running stage of pipeline `pipeline`, node `node`, empty.
    pub(super) fn stage(&self, pipeline: &str, node: &str) -> Result<ReportStage, NodeError> {
        let tz = parse_time_zone(&self.time_zone).map_err(|e| format!("time_zone: {e}"))?;
        let compile = |top: bool, title: String, summary: String| {
            AlertTemplates::compile(&self.alert_config(top), &title, &summary, pipeline, node)
                .map_err(|(pointer, message)| NodeError::from(format!("{pointer}: {message}")))
        };
        let templates = compile(false, self.default_title(), self.default_summary())?;
        let top_templates = compile(true, self.default_top_title(), self.default_top_summary())?;
        let sum = self
            .sum
            .paths()
            .iter()
            .map(|p| FieldPath::parse(p).map_err(|e| NodeError::from(format!("sum: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = ReportSpec {
            group_by: GroupBy::parse(&self.group_by).map_err(NodeError::from)?,
            sum,
            calendar: Calendar::new(self.period, tz),
            grace: self.grace.span(),
            max_keys: self.max_keys.max(1),
            top: self.top.filter(|n| *n > 0),
            unit: self.unit.clone().filter(|u| !u.trim().is_empty()),
        };
        Ok(ReportStage::new(spec, templates, top_templates))
    }
}
