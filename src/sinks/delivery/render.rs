//! Templates of the delivering sinks: handlebars in strict mode (a misspelt variable is an
//! error, caught by `vigil validate`), the values they see, and the built-in ones.
//!
//! Built-in templates live in the repository's `templates/` folder and are compiled into
//! the binary. A sink names a template set with `template: NAME`; the files
//! `templates/NAME.<part>.hbs` beside the pipeline file are used when present, else the
//! built-in set of that name.
//!
//! # What templates see
//!
//! - `alert`: the first alert of the message; `alerts`: all of them, new ones first, then
//!   those still firing, then those resolved since the group's last notification;
//!   `count` (the group's alerts in this notification, those left out included); `more`
//!   (`count − 1`); `new_count`, `firing_count`, `resolved_count`; `all_resolved`;
//!   `reminder` (nothing changed since the last notification); `omitted` (alerts left
//!   out of a very large notification); `group` (the notification group's `group_by`
//!   values); `severity` / `severity_upper` (the highest); `sink`; `id` (the message id);
//!   `public_url`.
//! - Each alert has every field of the alert's JSON form (`title`, `summary`,
//!   `severity`, `status`, `pipeline`, `stage`, `group` — `{{alert.group.src.ip}}` —,
//!   `group_key`, `value`, `threshold`, `unit`, `estimate`, `window.start`, `window.end`,
//!   `first_seen`, `last_seen` (RFC 3339), `updates`, `episode`, `fields`), plus `change`
//!   (`new`, `firing`: still firing, `resolved`), `lasted` (from first to last seen),
//!   `samples_omitted` (alerts after the tenth of a notification carry no `samples`,
//!   only how many they left out),
//!   `url` (the alert in the dashboard), `severity_upper`, `value_text`
//!   and `threshold_text` (with the unit), `window.length`, `sample_count`, and for
//!   each of `samples`: `time`, `source`, `record` (the raw event) and `pretty` (it
//!   pretty-printed). `top`, when a `top_n` stage annotated the alert, has `by_text`,
//!   `measure`, `keys`, `total_text` and `rows` with `rank`, `key_text`, `value_text`
//!   and `share` (percent of the total).
//! - Helpers: `{{json x}}` (as a JSON literal, for JSON bodies), `{{json_pretty x}}`
//!   (indented JSON), `{{upper x}}`, `{{lower x}}`.

use std::path::Path;

use handlebars::Handlebars;
use serde_json::{Value, json};

use super::Notification;
use super::dispatch::Change;
use crate::event::Alert;

/// The built-in templates, by `<set>.<part>`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "raw-log-snapshot.subject",
        include_str!("../../../templates/raw-log-snapshot.subject.hbs"),
    ),
    (
        "raw-log-snapshot.text",
        include_str!("../../../templates/raw-log-snapshot.text.hbs"),
    ),
    (
        "raw-log-snapshot.html",
        include_str!("../../../templates/raw-log-snapshot.html.hbs"),
    ),
    (
        "line.text",
        include_str!("../../../templates/line.text.hbs"),
    ),
];

/// The names of the built-in template sets.
pub fn builtin_sets() -> Vec<&'static str> {
    let mut sets: Vec<&str> = BUILTIN
        .iter()
        .filter_map(|(n, _)| n.rsplit_once('.').map(|(set, _)| set))
        .collect();
    sets.dedup();
    sets
}

/// Where a template's text came from, for error messages.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Built into vigil.
    Builtin(String),
    /// A file (path as written relative to the pipeline's directory).
    File(String),
    /// Written inline in the sink's config, at this JSON pointer within the sink
    /// (`/to/1`, `/subject`, `/headers/X-Severity`).
    Inline(String),
}

/// A template that did not compile or render: where, and why.
#[derive(Debug, Clone)]
pub struct TemplateFailure {
    /// The template.
    pub origin: Origin,
    /// Line and column in the template's text (from 1), when known.
    pub pos: Option<(usize, usize)>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for TemplateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((l, c)) = self.pos {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl From<TemplateFailure> for String {
    fn from(f: TemplateFailure) -> String {
        f.to_string()
    }
}

impl TemplateFailure {
    /// Reports the failure in `p`: inside the YAML value for an inline template (at its
    /// line and column there), else on the sink with the file's own position.
    pub fn report(&self, p: &mut crate::diagnostic::Problems) {
        use crate::diagnostic::codes;
        match (&self.origin, self.pos) {
            (Origin::Inline(pointer), Some((l, c))) => p.error_inside(
                pointer.clone(),
                (
                    u32::try_from(l).unwrap_or(u32::MAX),
                    u32::try_from(c).unwrap_or(u32::MAX),
                ),
                codes::INVALID_VALUE,
                self.reason.clone(),
            ),
            (Origin::Inline(pointer), None) => {
                p.error(pointer.clone(), codes::INVALID_VALUE, self.reason.clone());
            }
            _ => p.error("", codes::INVALID_VALUE, self.to_string()),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin(n) => write!(f, "built-in template `{n}`"),
            Origin::File(p) => f.write_str(p),
            Origin::Inline(k) => write!(f, "`{}`", k.trim_start_matches('/').replace('/', ".")),
        }
    }
}

/// Reads part `part` (`subject`, `text`, `html`) of template set `set`: the file
/// `templates/<set>.<part>.hbs` under `base_dir` when present, else the built-in one.
/// `Ok(None)` when neither exists. A set whose file would be outside `base_dir` (a `..`
/// step, an absolute name, a symbolic link leading out) is an error.
pub fn load(
    base_dir: &Path,
    set: &str,
    part: &str,
) -> Result<Option<(String, Origin)>, super::SetupError> {
    let rel = format!("templates/{set}.{part}.hbs");
    let path = crate::confine::confine(base_dir, &rel)
        .map_err(|e| super::SetupError::OutsideDir(format!("template set `{set}`: {e}")))?;
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(Some((text, Origin::File(rel)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
    }
    let key = format!("{set}.{part}");
    Ok(BUILTIN
        .iter()
        .find(|(n, _)| *n == key)
        .map(|(_, text)| ((*text).to_string(), Origin::Builtin(key))))
}

/// A set of compiled templates: plain-text ones (no escaping), HTML ones (escaped for
/// HTML) and JSON ones (every value escaped as the content of a JSON string).
pub struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    json: Handlebars<'static>,
    origins: Vec<(String, Origin)>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

/// The helpers templates may call.
mod helpers {
    #![allow(missing_docs, unreachable_pub)]
    use handlebars::handlebars_helper;

    handlebars_helper!(json: |v: Json| v.to_string());
    handlebars_helper!(json_pretty: |v: Json| serde_json::to_string_pretty(v).unwrap_or_default());
    handlebars_helper!(upper: |s: str| s.to_uppercase());
    handlebars_helper!(lower: |s: str| s.to_lowercase());

    /// `{{size n}}`: `n` bytes in the binary unit its magnitude calls for (`2.14 TiB`);
    /// `{{size n unit="MiB"}}` when `n` counts another unit. A number given as text is
    /// read; anything else is an error that names the helper.
    pub fn size(
        h: &handlebars::Helper<'_>,
        _: &handlebars::Handlebars<'_>,
        _: &handlebars::Context,
        _: &mut handlebars::RenderContext<'_, '_>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        use handlebars::RenderErrorReason;
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("size", 0))?;
        let v = param.value();
        let n = v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
        let Some(n) = n else {
            return Err(RenderErrorReason::Other(format!("`size` needs a number, got {v}")).into());
        };
        let scale = match h.hash_get("unit").map(|u| u.value()) {
            None => 1.0,
            Some(u) => u
                .as_str()
                .and_then(crate::event::units::unit_bytes)
                .ok_or_else(|| {
                    RenderErrorReason::Other(format!(
                        "`size`: unit={u} is not a size unit (B, KiB, MiB, GiB, TiB)"
                    ))
                })?,
        };
        out.write(&crate::event::units::binary_size(n * scale))?;
        Ok(())
    }
}

/// Adds the formatting helpers every vigil template has (`size`, `upper`, `lower`) to
/// `hb`: the delivery templates and the alert titles and summaries of detection stages.
pub fn add_format_helpers(hb: &mut Handlebars<'static>) {
    hb.register_helper("size", Box::new(helpers::size));
    hb.register_helper("upper", Box::new(helpers::upper));
    hb.register_helper("lower", Box::new(helpers::lower));
}

/// Templates compiled so far, by name and source: every sink of a kind uses the same
/// templates, and compiling one costs far more than copying it. Config-sized; beyond
/// [`MAX_COMPILED`] entries templates are compiled each time.
static COMPILED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(String, String), handlebars::Template>>,
> = std::sync::LazyLock::new(Default::default);

/// The most templates [`COMPILED`] keeps.
const MAX_COMPILED: usize = 512;

/// `source` compiled as the template `name` (from [`COMPILED`] when it was before).
fn compiled(name: &str, source: &str) -> Result<handlebars::Template, handlebars::TemplateError> {
    let key = (name.to_string(), source.to_string());
    let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = cache.get(&key) {
        return Ok(t.clone());
    }
    let mut scratch = Handlebars::new();
    scratch.register_template_string(name, source)?;
    let Some(template) = scratch.get_template(name).cloned() else {
        return Err(handlebars::TemplateError::of(
            handlebars::TemplateErrorReason::InvalidSyntax(format!(
                "template `{name}` was not kept"
            )),
        ));
    };
    if cache.len() < MAX_COMPILED {
        cache.insert(key, template.clone());
    }
    Ok(template)
}

/// How a registry escapes the values it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Plain text: as they are.
    None,
    /// HTML (handlebars' own escaping).
    Html,
    /// The content of a JSON string: `"`, `\`, control characters.
    JsonString,
}

/// `s` escaped as the content of a JSON string (what goes between the quotes).
pub fn json_string_content(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// A helper whose output is written as it is in a registry that escapes values: `json`
/// and `json_pretty` write JSON, which a JSON body takes as it is.
struct Unescaped<H>(H);

impl<H: handlebars::HelperDef + Send + Sync> handlebars::HelperDef for Unescaped<H> {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc handlebars::Context,
        rc: &mut handlebars::RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        self.0.call_inner(h, r, ctx, rc)
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc handlebars::Context,
        rc: &mut handlebars::RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        let result = self.0.call_inner(h, r, ctx, rc)?;
        if r.strict_mode() && result.is_missing() {
            return Err(handlebars::RenderError::strict_error(None));
        }
        out.write(&result.render())?;
        Ok(())
    }
}

fn registry(escape: Escape) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    match escape {
        Escape::None => hb.register_escape_fn(handlebars::no_escape),
        Escape::Html => {}
        Escape::JsonString => hb.register_escape_fn(json_string_content),
    }
    if escape == Escape::JsonString {
        hb.register_helper("json", Box::new(Unescaped(helpers::json)));
        hb.register_helper("json_pretty", Box::new(Unescaped(helpers::json_pretty)));
    } else {
        hb.register_helper("json", Box::new(helpers::json));
        hb.register_helper("json_pretty", Box::new(helpers::json_pretty));
    }
    add_format_helpers(&mut hb);
    hb
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    /// No templates yet.
    pub fn new() -> Templates {
        Templates {
            text: registry(Escape::None),
            html: registry(Escape::Html),
            json: registry(Escape::JsonString),
            origins: Vec::new(),
        }
    }

    /// Compiles `source` under `name` into the registry that escapes as `escape` says.
    fn add(
        &mut self,
        escape: Escape,
        name: &str,
        source: &str,
        origin: Origin,
    ) -> Result<(), TemplateFailure> {
        let template = compiled(name, source).map_err(|e| compile_error(&origin, &e))?;
        let registry = match escape {
            Escape::None => &mut self.text,
            Escape::Html => &mut self.html,
            Escape::JsonString => &mut self.json,
        };
        registry.register_template(name, template);
        self.origins.push((name.to_string(), origin));
        Ok(())
    }

    /// Compiles `source` as plain text (nothing escaped) under `name`.
    pub fn add_text(
        &mut self,
        name: &str,
        source: &str,
        origin: Origin,
    ) -> Result<(), TemplateFailure> {
        self.add(Escape::None, name, source, origin)
    }

    /// Compiles `source` as HTML (values are escaped) under `name`.
    pub fn add_html(
        &mut self,
        name: &str,
        source: &str,
        origin: Origin,
    ) -> Result<(), TemplateFailure> {
        self.add(Escape::Html, name, source, origin)
    }

    /// Compiles `source` as a JSON document under `name`: every value written with
    /// `{{x}}` is escaped as the content of a JSON string (`"`, `\`, control
    /// characters), so `"host": "{{alert.group.host}}"` stays valid JSON whatever the host
    /// name holds. `{{json x}}` writes a JSON literal as it is; `{{{x}}}` writes a value
    /// unescaped.
    pub fn add_json(
        &mut self,
        name: &str,
        source: &str,
        origin: Origin,
    ) -> Result<(), TemplateFailure> {
        self.add(Escape::JsonString, name, source, origin)
    }

    /// Renders every template with `cx`: the failures (for `vigil validate`).
    pub fn failures(&self, cx: &Value) -> Vec<TemplateFailure> {
        self.origins
            .iter()
            .filter_map(|(name, _)| self.render(name, cx).err())
            .collect()
    }

    /// Whether a template `name` was added.
    pub fn has(&self, name: &str) -> bool {
        self.text.has_template(name) || self.html.has_template(name) || self.json.has_template(name)
    }

    /// Renders template `name` with `cx`. The error names the template's origin and what
    /// is wrong (`templates/x.html.hbs: Failed to access variable in strict mode ...`).
    pub fn render(&self, name: &str, cx: &Value) -> Result<String, TemplateFailure> {
        let hb = if self.html.has_template(name) {
            &self.html
        } else if self.json.has_template(name) {
            &self.json
        } else {
            &self.text
        };
        hb.render(name, cx).map_err(|e| {
            let origin = self
                .origins
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| Origin::Builtin(name.to_string()), |(_, o)| o.clone());
            render_error(origin, &e)
        })
    }
}

fn compile_error(origin: &Origin, e: &handlebars::TemplateError) -> TemplateFailure {
    TemplateFailure {
        origin: origin.clone(),
        pos: e.pos(),
        reason: crate::diagnostic::template::syntax_reason(e),
    }
}

fn render_error(origin: Origin, e: &handlebars::RenderError) -> TemplateFailure {
    let reason = match e.reason() {
        handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
            format!("`{path}` does not exist in the alert (strict mode)")
        }
        _ => crate::diagnostic::template::render_reason(e),
    };
    TemplateFailure {
        origin,
        pos: e.line_no.zip(e.column_no),
        reason,
    }
}

/// How many alerts of one notification show their raw events (the rest say how many
/// they left out, `samples_omitted`): a mail of a hundred alerts stays readable.
pub const SAMPLES_FOR_FIRST: usize = 10;

/// The values templates see for `n` (see the module docs).
pub fn context(n: &Notification, public_url: &str) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // A notification of many alerts shows the raw events of the first ones.
            let mut v = if i < SAMPLES_FOR_FIRST {
                alert_view(a, public_url)
            } else {
                let mut without = a.clone();
                without.samples.clear();
                let mut v = alert_view(&without, public_url);
                if let Some(o) = v.as_object_mut() {
                    o.insert("samples_omitted".into(), a.samples.len().into());
                }
                v
            };
            if let Some(o) = v.as_object_mut() {
                o.insert("change".into(), n.change(i).as_str().into());
            }
            v
        })
        .collect();
    let severity = n
        .alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or_default();
    let count = |c: Change| (0..n.alerts.len()).filter(|i| n.change(*i) == c).count();
    let (new, firing, resolved) = (
        count(Change::New) + n.omitted.new,
        count(Change::Firing) + n.omitted.firing,
        count(Change::Resolved) + n.omitted.resolved,
    );
    let total = n.alerts.len() + n.omitted.total();
    json!({
        "id": n.id,
        "sink": n.sink,
        "count": total,
        "more": total.saturating_sub(1),
        "new_count": new,
        "firing_count": firing,
        "resolved_count": resolved,
        "all_resolved": new + firing == 0 && resolved > 0,
        "omitted": n.omitted.total(),
        "reminder": n.reminder,
        "group": n.group,
        "severity": severity.as_str(),
        "severity_upper": severity.as_str().to_uppercase(),
        "public_url": public_url.trim_end_matches('/'),
        "alert": alerts.first().cloned().unwrap_or(Value::Null),
        "alerts": alerts,
    })
}

/// The link to `alert` in the dashboard.
pub fn alert_url(public_url: &str, alert: &Alert) -> String {
    format!("{}/#/alerts/{}", public_url.trim_end_matches('/'), alert.id)
}

/// One alert as templates see it.
pub fn alert_view(alert: &Alert, public_url: &str) -> Value {
    let mut v = serde_json::to_value(alert).unwrap_or(Value::Null);
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    // A size (`MiB`) reads in the unit its magnitude calls for; other units as they are.
    let size_unit = alert
        .unit
        .as_deref()
        .and_then(crate::event::units::unit_bytes);
    let unit = alert
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let quantity = |v: f64| match size_unit {
        Some(bytes) => crate::event::units::binary_size(v * bytes),
        None => format!("{}{unit}", number(v)),
    };
    obj.insert("url".into(), alert_url(public_url, alert).into());
    obj.insert(
        "severity_upper".into(),
        alert.severity.as_str().to_uppercase().into(),
    );
    obj.insert("value_text".into(), quantity(alert.value).into());
    obj.insert("threshold_text".into(), quantity(alert.threshold).into());
    obj.entry("unit").or_insert_with(|| "".into());
    obj.entry("estimate").or_insert_with(|| "".into());
    obj.entry("fields")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let length = (alert.window.end - alert.window.start)
        .to_std()
        .unwrap_or_default();
    obj.insert(
        "window".into(),
        json!({
            "start": time(alert.window.start),
            "end": time(alert.window.end),
            "length": humantime::format_duration(std::time::Duration::from_secs(length.as_secs())).to_string(),
        }),
    );
    obj.insert("first_seen".into(), time(alert.first_seen).into());
    obj.insert("last_seen".into(), time(alert.last_seen).into());
    let lasted = (alert.last_seen - alert.first_seen)
        .to_std()
        .unwrap_or_default();
    obj.insert(
        "lasted".into(),
        humantime::format_duration(std::time::Duration::from_secs(lasted.as_secs()))
            .to_string()
            .into(),
    );
    obj.entry("change").or_insert_with(|| "new".into());
    obj.insert("sample_count".into(), alert.samples.len().into());
    obj.insert("samples_omitted".into(), 0.into());
    obj.insert("workloads".into(), Value::Array(workloads_of(alert)));
    obj.insert(
        "samples".into(),
        alert
            .samples
            .iter()
            .map(|s| {
                let record = s.value();
                json!({
                    "time": time(s.time),
                    "source": s.source,
                    "pretty": serde_json::to_string_pretty(&record).unwrap_or_default(),
                    "record": record,
                })
            })
            .collect(),
    );
    match &alert.top {
        Some(top) => {
            // A table that sums bytes shows sizes (`1.5 GiB`), others plain numbers.
            let measured = |v: f64| {
                if crate::event::units::is_byte_field(&top.measure) {
                    crate::event::units::binary_size(v)
                } else {
                    number(v)
                }
            };
            let columns = top_columns(&top.by);
            let rows: Vec<Value> = top
                .rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let cells = top_cells(&top.by, &r.key);
                    let share = if top.total > 0.0 {
                        format!("{:.1}%", r.value * 100.0 / top.total)
                    } else {
                        String::new()
                    };
                    json!({
                        "rank": i + 1,
                        "key": r.key,
                        "key_text": cells.join(" / "),
                        "cells": cells,
                        "value": r.value,
                        "value_text": measured(r.value),
                        "share": share,
                    })
                })
                .collect();
            obj.insert(
                "top".into(),
                json!({
                    "by": top.by,
                    "by_text": columns.join(", "),
                    "columns": columns,
                    "measure": top.measure,
                    "keys": top.keys,
                    "total": top.total,
                    "total_text": measured(top.total),
                    "window": {"start": time(top.window.start), "end": time(top.window.end)},
                    "rows": rows,
                }),
            );
        }
        None => {
            obj.insert("top".into(), Value::Null);
        }
    }
    v
}

/// A time as templates show it: RFC 3339 in UTC, to the second.
fn time(t: crate::event::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A number without a trailing `.0`, with at most two decimals.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Whether `port` and `proto` are the port and protocol of one service (`service.port`
/// and `service.proto`, `dst_port` and `proto`), and the name of the pair.
fn service_pair(port: &str, proto: &str) -> Option<String> {
    let (pp, pl) = port.rsplit_once('.').map_or(("", port), |(p, l)| (p, l));
    let (qp, ql) = proto.rsplit_once('.').map_or(("", proto), |(p, l)| (p, l));
    let port_like = matches!(pl, "port" | "dst_port");
    (port_like && ql == "proto" && pp == qp).then(|| {
        if pp.is_empty() {
            "service".to_string()
        } else {
            pp.to_string()
        }
    })
}

/// The column names of a top table: its `by` paths, a service's port and protocol as one
/// column (`service`).
fn top_columns(by: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(by.len());
    let mut i = 0;
    while i < by.len() {
        match by.get(i + 1).and_then(|next| service_pair(&by[i], next)) {
            Some(name) => {
                out.push(name);
                i += 2;
            }
            None => {
                out.push(by[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// The cells of a top row, as [`top_columns`] names them: a service reads `445/tcp`,
/// `53/udp`, `icmp` (an ICMP row's port is missing or the PCE's `"All"`), `proto 47`.
fn top_cells(by: &[String], key: &[Value]) -> Vec<String> {
    let mut out = Vec::with_capacity(key.len());
    let mut i = 0;
    while i < key.len() {
        if by
            .get(i + 1)
            .and_then(|next| by.get(i).and_then(|p| service_pair(p, next)))
            .is_some()
        {
            out.push(service_text(
                &key[i],
                key.get(i + 1).unwrap_or(&Value::Null),
            ));
            i += 2;
        } else {
            out.push(scalar_text(&key[i]));
            i += 1;
        }
    }
    out
}

/// A service as people name it: `445/tcp`, `icmp`, `proto 47`.
fn service_text(port: &Value, proto: &Value) -> String {
    let proto_num = proto
        .as_u64()
        .or_else(|| proto.as_str().and_then(|s| s.parse().ok()));
    let name = match proto_num {
        Some(6) => "tcp".to_string(),
        Some(17) => "udp".to_string(),
        Some(1) => return "icmp".into(),
        Some(58) => return "icmpv6".into(),
        Some(n) => format!("proto {n}"),
        None => match proto {
            Value::Null => String::new(),
            other => scalar_text(other).to_lowercase(),
        },
    };
    let port = match port {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if s.parse::<u16>().is_ok() => Some(s.clone()),
        // Missing, or the PCE's "All" (every port of the protocol).
        _ => None,
    };
    match (port, name.is_empty()) {
        (Some(p), false) => format!("{p}/{name}"),
        (Some(p), true) => p,
        (None, false) => name,
        (None, true) => "-".into(),
    }
}

/// The workloads and VENs the alert's raw events name, once each (at most 10), for the
/// reader before the raw JSON: `role` (`source`, `destination`, `agent`), `name` (the
/// workload's name, else its hostname, else its href), `hostname`, `href` and
/// `labels_text` (`role=db, env=prod`). From flows (`src.workload`, `dst.workload`) and
/// events (`created_by.agent`, `notifications.info.agents`).
pub fn workloads_of(alert: &Alert) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |role: &str, w: &Value| {
        let Some(obj) = w.as_object() else { return };
        let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let href = text("href").unwrap_or_default();
        let name = text("name").or_else(|| text("hostname")).unwrap_or(href);
        if name.is_empty() || out.len() >= 10 || !seen.insert(format!("{href}\u{0}{name}")) {
            return;
        }
        let labels: Vec<String> = obj
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| {
                Some(format!(
                    "{}={}",
                    l.get("key")?.as_str()?,
                    l.get("value")?.as_str()?
                ))
            })
            .collect();
        out.push(json!({
            "role": role,
            "name": name,
            "hostname": text("hostname").unwrap_or_default(),
            "href": href,
            "labels_text": labels.join(", "),
        }));
    };
    for sample in &alert.samples {
        let r = sample.value();
        add("source", &r["src"]["workload"]);
        add("destination", &r["dst"]["workload"]);
        add("agent", &r["created_by"]["agent"]);
        for n in r["notifications"].as_array().into_iter().flatten() {
            for a in n["info"]["agents"].as_array().into_iter().flatten() {
                add("agent", a);
            }
        }
    }
    out
}

/// A JSON scalar as plain text (strings without quotes, `null` as `-`).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::delivery::{sample_alert, sample_notification};

    #[test]
    fn strict_mode_names_the_missing_variable_and_where() {
        let mut t = Templates::new();
        t.add_text(
            "x",
            "line one\n{{alert.group.src.ipp}}",
            Origin::File("templates/x.text.hbs".into()),
        )
        .unwrap();
        let n = sample_notification("p.s", vec![sample_alert()]);
        let err = t
            .render("x", &context(&n, "http://vigil"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("templates/x.text.hbs:2:"), "{err}");
        assert!(err.contains("alert.group.src.ipp"), "{err}");
    }

    #[test]
    fn optional_parts_are_tested_with_if() {
        let mut t = Templates::new();
        t.add_text(
            "x",
            "{{#if alert.fields.ticket}}T{{/if}}{{#if alert.top}}{{alert.top.rows.0.key_text}}{{/if}}",
            Origin::Inline("x".into()),
        )
        .unwrap();
        let n = sample_notification("p.s", vec![sample_alert()]);
        assert_eq!(
            t.render("x", &context(&n, "http://vigil")).unwrap(),
            "10.0.5.11 / 22"
        );
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let mut t = Templates::new();
        t.add_html("h", "{{alert.title}}", Origin::Inline("h".into()))
            .unwrap();
        t.add_text(
            "t",
            "{{alert.title}} {{json alert.title}}",
            Origin::Inline("t".into()),
        )
        .unwrap();
        let mut a = sample_alert();
        a.title = "<b>\"x\"</b>".into();
        let cx = context(&sample_notification("p.s", vec![a]), "http://vigil");
        assert_eq!(
            t.render("h", &cx).unwrap(),
            "&lt;b&gt;&quot;x&quot;&lt;/b&gt;"
        );
        assert_eq!(
            t.render("t", &cx).unwrap(),
            "<b>\"x\"</b> \"<b>\\\"x\\\"</b>\""
        );
    }

    #[test]
    fn size_renders_binary_units_by_magnitude_and_names_a_wrong_unit() {
        let hb = registry(Escape::None);
        let cx =
            json!({"bytes": 2_350_000_000u64, "mib": 2_241_535.92, "unit": "MiB", "text": "1536"});
        let r = |t: &str| hb.render_template(t, &cx);
        assert_eq!(r("{{size bytes}}").unwrap(), "2.19 GiB");
        assert_eq!(r("{{size mib unit=unit}}").unwrap(), "2.14 TiB");
        assert_eq!(r("{{size text}}").unwrap(), "1.5 KiB");
        let e = r("{{size mib unit=\"Mbps\"}}").unwrap_err().to_string();
        assert!(e.contains("not a size unit"), "{e}");
        let e = r("{{size unit}}").unwrap_err().to_string();
        assert!(e.contains("`size` needs a number"), "{e}");
    }

    #[test]
    fn volumes_and_byte_tables_read_as_sizes_and_shares_carry_one_percent_sign() {
        let mut a = sample_alert();
        a.unit = Some("MiB".into());
        a.value = 2_241_535.92;
        a.threshold = 1024.0;
        if let Some(top) = a.top.as_mut() {
            top.measure = "dst_bo".into();
            top.rows[0].value = 1.5 * 1024.0 * 1024.0 * 1024.0;
            top.rows[1].value = 512.0;
            top.total = top.rows[0].value + 512.0;
        }
        let v = alert_view(&a, "http://vigil.example");
        assert_eq!(v["value_text"], "2.14 TiB");
        assert_eq!(v["threshold_text"], "1 GiB");
        assert_eq!(v["top"]["rows"][0]["value_text"], "1.5 GiB");
        assert_eq!(v["top"]["rows"][1]["value_text"], "512 B");
        assert_eq!(v["top"]["rows"][0]["share"], "100.0%");
        // Not a size: as it was.
        let plain = alert_view(&sample_alert(), "http://vigil.example");
        assert_eq!(plain["top"]["rows"][0]["value_text"], "24");
        assert_eq!(plain["top"]["rows"][0]["share"], "66.7%");
        // The shipped mail writes the share once with its percent sign.
        for part in ["text", "html"] {
            let (source, origin) = load(Path::new("/nonexistent"), "raw-log-snapshot", part)
                .unwrap()
                .unwrap();
            let mut t = Templates::new();
            t.add_text("m", &source, origin).unwrap();
            let n = sample_notification("p.s", vec![sample_alert()]);
            let out = t.render("m", &context(&n, "http://vigil")).unwrap();
            assert!(out.contains("66.7%") && !out.contains("%%"), "{out}");
        }
    }

    #[test]
    fn a_service_in_a_top_table_is_one_column_named_as_people_name_it() {
        let by = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let b = by(&["dst.ip", "service.port", "service.proto"]);
        assert_eq!(top_columns(&b), vec!["dst.ip", "service"]);
        let cells = |k: Value| top_cells(&b, k.as_array().unwrap());
        assert_eq!(
            cells(json!(["10.0.0.1", 445, 6])),
            vec!["10.0.0.1", "445/tcp"]
        );
        assert_eq!(
            cells(json!(["10.0.0.1", 53, 17])),
            vec!["10.0.0.1", "53/udp"]
        );
        // ICMP: the PCE writes the port as "All", or leaves it out.
        assert_eq!(
            cells(json!(["10.0.0.1", "All", 1])),
            vec!["10.0.0.1", "icmp"]
        );
        assert_eq!(
            cells(json!(["10.0.0.1", null, 1])),
            vec!["10.0.0.1", "icmp"]
        );
        assert_eq!(
            cells(json!(["10.0.0.1", null, 47])),
            vec!["10.0.0.1", "proto 47"]
        );
        // Flat (syslog) records; a port alone stays as it is.
        assert_eq!(top_columns(&by(&["dst_port", "proto"])), vec!["service"]);
        let alone = by(&["dst.ip", "service.port"]);
        assert_eq!(top_columns(&alone), alone);
        assert_eq!(top_cells(&alone, &[json!("h"), json!(22)]), vec!["h", "22"]);
    }

    #[test]
    fn the_workloads_of_the_raw_events_are_named_with_their_labels_once() {
        let a = sample_alert();
        let w = workloads_of(&a);
        assert!(!w.is_empty(), "{w:?}");
        let names: Vec<&str> = w.iter().filter_map(|x| x["name"].as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(
            w.iter()
                .any(|x| x["labels_text"].as_str().is_some_and(|l| l.contains('='))),
            "{w:?}"
        );
        let text = alert_view(&a, "http://vigil");
        assert_eq!(text["workloads"], Value::Array(w));
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(number(36.0), "36");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(2.345), "2.35");
        assert_eq!(number(0.0), "0");
    }
}
