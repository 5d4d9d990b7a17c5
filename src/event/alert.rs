//! Alerts: what detection stages emit.
//!
//! An [`Alert`] travels the graph inside an [`Event`](super::Event) (see
//! [`Event::from_alert`](super::Event::from_alert)): its JSON form is the event's record, so
//! filters, files and sinks see an alert like any record (`severity`, `group.src.ip`,
//! `value`, `samples`), while alert-aware stages (top_n, cooldown, dedupe) read the typed
//! value.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{Event, Field, Scalar, Timestamp};

/// How bad an alert is, from `info` to `critical` (ordered).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record; nobody needs to act.
    Info,
    /// Worth a look when convenient.
    Low,
    /// Look today.
    #[default]
    Medium,
    /// Act now.
    High,
    /// Act now, wake people up.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a condition holds (`firing`) or has ended (`resolved`: the window fell below
/// the threshold, or a flatline's source came back). An episode keeps one alert id from
/// its first `firing` report to its `resolved` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds.
    #[default]
    Firing,
    /// The condition no longer holds.
    Resolved,
}

/// The event-time window an alert covers: `[start, end)` — events at `start` or later and
/// before `end`, except that the event that fired the alert (at `end`) is included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertWindow {
    /// The window's start.
    pub start: Timestamp,
    /// The window's end: the time of the event that completed the condition.
    pub end: Timestamp,
}

/// One raw event kept with an alert: the raw-log snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// The event's time.
    pub time: Timestamp,
    /// The node that read it (`pipeline.source`).
    pub source: Arc<str>,
    /// The record exactly as the source sent it (the original bytes when unchanged),
    /// shared by the stages that keep the same event.
    pub record: Arc<RawValue>,
}

impl PartialEq for Sample {
    fn eq(&self, other: &Sample) -> bool {
        self.time == other.time
            && self.source == other.source
            && self.record.get() == other.record.get()
    }
}

impl Sample {
    /// A sample of `event`: its original bytes when it has them, else its record
    /// serialised (see [`Event::json_text`]). It does not hold the event (nor its
    /// acknowledgement) alive.
    pub fn of(event: &Event) -> Sample {
        Sample {
            time: event.meta.time,
            source: event.meta.source.clone(),
            record: event.json_text(),
        }
    }

    /// The record as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.record.get()).unwrap_or(Value::Null)
    }
}

/// A top-N table: the biggest contributors to an alert or a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopTable {
    /// The field paths rows are keyed by.
    pub by: Vec<String>,
    /// What was measured: `count`, or the summed field path.
    pub measure: String,
    /// The window the table covers.
    pub window: AlertWindow,
    /// The rows, biggest first (ties by key).
    pub rows: Vec<TopRow>,
    /// The measure over every key, not only the rows shown.
    pub total: f64,
    /// How many distinct keys there were.
    pub keys: u64,
}

/// One row of a [`TopTable`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The values of the `by` paths, in order (`null` where the event had none).
    pub key: Vec<Value>,
    /// The count or sum.
    pub value: f64,
}

/// An alert: a detection stage's finding, with the raw events that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: a hash of pipeline, stage, group key and the window in which the
    /// episode opened. The same finding made again (a replay, a restart) gets the same id,
    /// and an episode keeps it through its updates to its resolution.
    pub id: String,
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The pipeline.
    pub pipeline: String,
    /// The stage that raised it (the rule).
    pub stage: String,
    /// How bad it is.
    pub severity: Severity,
    /// One line, rendered from the stage's `alert.title` template.
    pub title: String,
    /// A few lines, rendered from the stage's `alert.summary` template.
    pub summary: String,
    /// The group: the `group_by` paths and the values they had, as a nested mapping
    /// (`{"src": {"ip": "10.0.0.1"}}`; `null` for a missing field).
    pub group: Value,
    /// The group as one string (`src.ip=10.0.0.1`); a missing field reads `<missing>`, an
    /// empty one `""`, so they are different keys.
    pub group_key: String,
    /// What was measured (a count, a sum, MiB, Mbps, ...).
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// The unit of `value` and `threshold`, if not a plain count (`MiB`, `Mbps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Set when `value` is an estimate, saying what kind: `lower_bound` (at least this
    /// much: `bandwidth`), `approximate` (within a few percent either way: a HyperLogLog
    /// count of `distinct_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
    /// The window the value was measured over.
    pub window: AlertWindow,
    /// When the episode began: the time of the event with which the condition first held.
    /// An alert of a stage without episodes (`mode: each_crossing`) has the end of its
    /// window here.
    #[serde(default)]
    pub first_seen: Timestamp,
    /// The time of the newest event counted while the condition held.
    #[serde(default)]
    pub last_seen: Timestamp,
    /// How many times the episode was updated (its value or window moved) before this
    /// report: `0` when it opened.
    #[serde(default)]
    pub updates: u64,
    /// Whether the alert is an episode: reported again while it lasts and closed by a
    /// `resolved` report with the same id. A one-off alert (`alert.mode: each_crossing`,
    /// a script's `alert()`, a `top_n` report, an event sent to a delivering sink) is not,
    /// and is notified once.
    #[serde(default)]
    pub episode: bool,
    /// The first raw events that caused it (the raw-log snapshot).
    pub samples: Vec<Sample>,
    /// The biggest contributors, when a `top_n` stage annotated the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<TopTable>,
    /// Extra fields set by a script stage.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
}

impl Alert {
    /// The stable id of a finding.
    pub fn make_id(pipeline: &str, stage: &str, group_key: &str, window: &AlertWindow) -> String {
        let mut h = Sha256::new();
        for part in [
            pipeline,
            stage,
            group_key,
            &window.start.to_rfc3339(),
            &window.end.to_rfc3339(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The alert as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Whether this report is an update of an episode already reported (not its opening
    /// and not its end).
    pub fn is_update(&self) -> bool {
        self.status == AlertStatus::Firing && self.updates > 0
    }
}

/// Builds the group of an alert from paths and the values they had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// `(path, value)`; `None` for a missing field.
    pub fields: Vec<(String, Option<Value>)>,
}

impl Group {
    /// Reads `paths` from `data`.
    pub fn of(data: &Value, paths: &[super::FieldPath]) -> Group {
        Group {
            fields: paths
                .iter()
                .map(|p| (p.as_str().to_string(), p.first(data).cloned()))
                .collect(),
        }
    }

    /// The group as one string. Missing and empty are different keys.
    pub fn key(&self) -> String {
        group_key(&self.fields)
    }

    /// The group as a nested mapping: `src.ip` → `{"src": {"ip": ...}}`.
    pub fn nested(&self) -> Value {
        let mut root = Value::Object(serde_json::Map::new());
        for (path, v) in &self.fields {
            insert_path(&mut root, path, v.clone().unwrap_or(Value::Null));
        }
        root
    }
}

/// The key string of `(path, value)` pairs; see [`Group::key`].
pub fn group_key(fields: &[(String, Option<Value>)]) -> String {
    let mut out = String::new();
    for (i, (path, v)) in fields.iter().enumerate() {
        push_key_field(&mut out, i, path, v.as_ref().map(Field::Value));
    }
    out
}

/// Appends the `i`-th `path=value` of a group key to `out`: a missing value reads
/// `<missing>`, a number, boolean or null as JSON, an object or list as its JSON text, and
/// a string as it is — unless it could be read as one of those or holds `,`, `=`, `"`, `\`
/// or a control character, when it is quoted and escaped as a JSON string. So two keys
/// are equal only when their values are: the string `"1"` and the number `1`, `"null"`
/// and null, `"<missing>"` and a missing field, `{a: "x,b=y", b: "z"}` and
/// `{a: "x", b: "y,b=z"}` all make different keys, while `src.ip=10.0.0.1` stays
/// readable. Every group key (windows, dedupe, cooldown, flatline, alert ids) is made
/// here.
pub fn push_key_field(out: &mut String, i: usize, path: &str, v: Option<Field<'_>>) {
    use std::fmt::Write as _;
    if i > 0 {
        out.push(',');
    }
    out.push_str(path);
    out.push('=');
    let Some(v) = v else {
        out.push_str("<missing>");
        return;
    };
    match v.scalar() {
        Scalar::Str(s) if key_text_needs_quotes(s) => {
            let _ = write!(out, "{}", Value::String(s.to_string()));
        }
        Scalar::Str(s) => out.push_str(s),
        Scalar::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Scalar::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Scalar::Null => out.push_str("null"),
        Scalar::Other => {
            let _ = write!(out, "{}", v.to_value());
        }
    }
}

/// Whether a string in a group key must be quoted to be told apart (see
/// [`push_key_field`]).
fn key_text_needs_quotes(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        return true;
    };
    // One pass over the bytes: separators, quotes and control characters (C0, DEL, and
    // C1, which UTF-8 writes as 0xC2 0x80..=0x9F).
    let mut prev = 0u8;
    for &b in s.as_bytes() {
        if matches!(b, b',' | b'=' | b'"' | b'\\') || b < 0x20 || b == 0x7f {
            return true;
        }
        if prev == 0xc2 && (0x80..=0x9f).contains(&b) {
            return true;
        }
        prev = b;
    }
    matches!(s, "null" | "true" | "false" | "<missing>")
        || matches!(first, b'[' | b'{')
        // Only text starting like a number (or `inf`, `nan`) can read as one.
        || (matches!(first, b'0'..=b'9' | b'+' | b'-' | b'.' | b'i' | b'I' | b'n' | b'N')
            && s.parse::<f64>().is_ok())
}

/// Sets `path` (dotted) inside `root`, creating mappings on the way.
pub fn insert_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !cur.is_object() {
            *cur = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = cur else { return };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FieldPath;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    /// The rule written plainly: the one-pass check must say the same (saved states hold
    /// keys written by it).
    fn needs_quotes_reference(s: &str) -> bool {
        s.is_empty()
            || matches!(s, "null" | "true" | "false" | "<missing>")
            || s.parse::<f64>().is_ok()
            || s.starts_with(['"', '[', '{'])
            || s.contains([',', '=', '"', '\\'])
            || s.chars().any(char::is_control)
    }

    #[test]
    fn key_text_is_quoted_exactly_when_it_could_be_misread() {
        let cases = "|10.0.0.1|web-01|1|-1|+1|.5|1e5|1.|inf|Infinity|NaN|nan|nane|null|true|false|<missing>|[x|{x|\"x|a,b|a=b|a\\b|tab\there|del\u{7f}|c1\u{85}|c1\u{9f}|nbsp\u{a0}|é|日本|ip_list:Corp";
        for s in cases.split('|') {
            assert_eq!(key_text_needs_quotes(s), needs_quotes_reference(s), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn key_text_quoting_matches_the_plain_rule(s in proptest::prelude::any::<String>()) {
            proptest::prop_assert_eq!(key_text_needs_quotes(&s), needs_quotes_reference(&s));
        }
    }

    #[test]
    fn group_keys_tell_missing_from_empty() {
        let paths = [FieldPath::parse("user").unwrap()];
        let missing = Group::of(&json!({}), &paths);
        let empty = Group::of(&json!({"user": ""}), &paths);
        let null = Group::of(&json!({"user": null}), &paths);
        assert_ne!(missing.key(), empty.key());
        assert_ne!(empty.key(), null.key());
        assert_eq!(missing.key(), "user=<missing>");
        assert_eq!(empty.key(), "user=\"\"");
    }

    #[test]
    fn nested_group() {
        let paths = [
            FieldPath::parse("src.ip").unwrap(),
            FieldPath::parse("service.port").unwrap(),
        ];
        let g = Group::of(
            &json!({"src": {"ip": "10.0.0.1"}, "service": {"port": 22}}),
            &paths,
        );
        assert_eq!(
            g.nested(),
            json!({"src": {"ip": "10.0.0.1"}, "service": {"port": 22}})
        );
        assert_eq!(g.key(), "src.ip=10.0.0.1,service.port=22");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let w = AlertWindow { start: t, end: t };
        let a = Alert::make_id("p", "s", "k=1", &w);
        assert_eq!(a, Alert::make_id("p", "s", "k=1", &w));
        assert_ne!(a, Alert::make_id("p", "s", "k=2", &w));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn samples_keep_the_original_bytes() {
        let raw = bytes::Bytes::from_static(b"{\"b\":1,  \"a\":2}\n");
        let e = Event::from_line(raw, json!({"b": 1, "a": 2}), "p.s".into(), Utc::now());
        let s = Sample::of(&e);
        assert_eq!(s.record.get(), "{\"b\":1,  \"a\":2}");
        let e = Event::from_record(json!({"x": [1]}), "p.s".into(), Utc::now());
        assert_eq!(Sample::of(&e).record.get(), "{\"x\":[1]}");
    }

    fn key(fields: &[(&str, Option<Value>)]) -> String {
        let fields: Vec<(String, Option<Value>)> = fields
            .iter()
            .map(|(p, v)| (p.to_string(), v.clone()))
            .collect();
        group_key(&fields)
    }

    /// Values that print alike make different keys: a string and the number, boolean or
    /// null it spells, the text `<missing>` and a missing field, and strings holding the
    /// separators.
    #[test]
    fn keys_tell_apart_values_that_print_alike() {
        let pairs = [
            (vec![("a", Some(json!("1")))], vec![("a", Some(json!(1)))]),
            (
                vec![("a", Some(json!("1.5")))],
                vec![("a", Some(json!(1.5)))],
            ),
            (
                vec![("a", Some(json!("null")))],
                vec![("a", Some(Value::Null))],
            ),
            (
                vec![("a", Some(json!("true")))],
                vec![("a", Some(json!(true)))],
            ),
            (vec![("a", Some(json!("<missing>")))], vec![("a", None)]),
            (
                vec![("a", Some(json!("x,b=y"))), ("b", Some(json!("z")))],
                vec![("a", Some(json!("x"))), ("b", Some(json!("y,b=z")))],
            ),
            (
                vec![("a", Some(json!("[1]")))],
                vec![("a", Some(json!([1])))],
            ),
            (vec![("a", Some(json!("")))], vec![("a", None)]),
        ];
        for (left, right) in pairs {
            assert_ne!(key(&left), key(&right), "{left:?} vs {right:?}");
        }
    }

    /// Plain values stay readable; strings that need it are JSON strings.
    #[test]
    fn keys_read_as_they_did_where_nothing_is_ambiguous() {
        assert_eq!(
            key(&[
                ("src.ip", Some(json!("10.0.0.1"))),
                ("port", Some(json!(22))),
                ("user", Some(json!("root")))
            ]),
            "src.ip=10.0.0.1,port=22,user=root"
        );
        assert_eq!(
            key(&[
                ("a", Some(json!("1"))),
                ("b", None),
                ("c", Some(json!("x,\"y\"")))
            ]),
            r#"a="1",b=<missing>,c="x,\"y\"""#
        );
    }
}
