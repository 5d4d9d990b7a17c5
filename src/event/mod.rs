//! Events and field paths.
//!
//! An [`Event`] is a JSON-shaped record plus where and when it came from. Events travel the
//! graph as `Arc<Event>`: a fan-out to three stages clones a pointer, never the record.
//! A [`FieldPath`] (`src.ip`, `dst.workload.labels`, `notifications.0.notification_type`)
//! addresses nested data; where a path crosses a list without an index it visits every
//! element, so `notifications.notification_type` sees each notification's type.

mod alert;
pub mod catalogue;
pub mod flow_id;
mod scan;
mod tape;
pub mod units;

use std::fmt;
use std::sync::Arc;

pub use alert::{
    Alert, AlertStatus, AlertWindow, Group, Sample, Severity, TopRow, TopTable, group_key,
    insert_path, push_key_field,
};
pub(crate) use scan::parse_prefix;
pub use scan::{ParseError, Problem};
pub use tape::{Field, Scalar, Tape, TapeRef};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A point in time (UTC).
pub type Timestamp = DateTime<Utc>;

/// One record flowing through a pipeline.
#[derive(Debug, Clone)]
pub struct Event {
    /// The record itself, as received (or as a stage rewrote it), shared by the event's
    /// copies (a stage that changes it copies it first). For an alert event it is made
    /// from the alert only when something reads it (see [`Event::data`]), so an alert that
    /// is counted, grouped or dropped is never serialised.
    data: Arc<Value>,
    /// The record parsed into a tape (see [`Tape`]), when a source made one: fields are
    /// read from it and `data` (then `null`) is made only when asked for.
    tape: Option<Arc<Tape>>,
    /// An alert event's JSON form, made on first read.
    alert_json: std::sync::OnceLock<Value>,
    /// The bytes it was parsed from, while `data` is unchanged: sinks write these as they
    /// are (no re-serialising), and alerts show the record exactly as the source sent it.
    raw: Option<bytes::Bytes>,
    /// The acknowledgement of the batch the event came in, if its source wants one.
    ack: Option<Arc<AckGuard>>,
    /// The typed alert, when the event is one (`data` is then its JSON form).
    alert: Option<Arc<Alert>>,
    /// Where and when it came from.
    pub meta: EventMeta,
}

impl PartialEq for Event {
    /// Events are equal when their record and metadata are; acknowledgements do not count.
    fn eq(&self, other: &Event) -> bool {
        self.data() == other.data() && self.raw == other.raw && self.meta == other.meta
    }
}

/// An event's record, to serialise (see [`Event::record`]).
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// A record held as a value.
    Value(&'a Value),
    /// A record held as a tape.
    Tape(&'a Tape),
}

impl serde::Serialize for Record<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Value(v) => v.serialize(s),
            Record::Tape(t) => t.serialize(s),
        }
    }
}

/// End-to-end acknowledgement of a batch of events.
///
/// A source that must not mark events done before they are safe (a checkpoint) makes a
/// pair with [`ack_pair`], attaches the guard to every event of the batch and waits on
/// the [`BatchAck`]. The guard lives as long as any event (or copy) that carries it: a
/// stage that drops an event has handled it; a sink keeps its events until it has written
/// and flushed them. When the last one goes, the ack resolves: `true` if nothing marked a
/// failure ([`Event::fail`]: a sink that could not write, an edge whose receiver died with
/// events queued), `false` otherwise.
#[derive(Debug, Default)]
pub struct AckGuard {
    tx: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<bool>>>,
    failed: std::sync::atomic::AtomicBool,
}

impl Drop for AckGuard {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().ok().and_then(Option::take);
        if let Some(tx) = tx {
            let _ = tx.send(!self.failed.load(std::sync::atomic::Ordering::Acquire));
        }
    }
}

/// Resolves when every event of a batch has been handled (see [`AckGuard`]).
#[derive(Debug)]
pub struct BatchAck {
    rx: tokio::sync::oneshot::Receiver<bool>,
}

impl BatchAck {
    /// `true` when every event was delivered or deliberately dropped; `false` when one
    /// failed somewhere.
    pub async fn delivered(self) -> bool {
        self.rx.await.unwrap_or(false)
    }

    /// Like [`BatchAck::delivered`] without giving the ack up, so that a caller can stop
    /// waiting (a timeout, a shutdown) and wait again later. Not to be called again
    /// once it has answered.
    pub async fn done(&mut self) -> bool {
        (&mut self.rx).await.unwrap_or(false)
    }

    /// Without waiting: `Some(delivered)` once every event of the batch is done with,
    /// `None` while some are still on their way.
    pub fn try_done(&mut self) -> Option<bool> {
        match self.rx.try_recv() {
            Ok(v) => Some(v),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(false),
        }
    }
}

/// A new acknowledgement: attach the guard to the events of a batch (then drop it), wait
/// on the ack.
pub fn ack_pair() -> (Arc<AckGuard>, BatchAck) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let guard = AckGuard {
        tx: std::sync::Mutex::new(Some(tx)),
        failed: std::sync::atomic::AtomicBool::new(false),
    };
    (Arc::new(guard), BatchAck { rx })
}

/// Metadata that travels with an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    /// The node that produced it, as `pipeline.node`.
    pub source: Arc<str>,
    /// Event time: taken from the record when it carries one, else the ingest time.
    pub time: Timestamp,
    /// When vigil read it.
    pub ingest: Timestamp,
}

/// Record fields tried, in order, for the event time.
pub const TIME_FIELDS: &[&str] = &["timestamp", "time", "@timestamp"];

/// [`TIME_FIELDS`] as field paths, parsed once.
static TIME_PATHS: std::sync::LazyLock<Vec<FieldPath>> = std::sync::LazyLock::new(|| {
    TIME_FIELDS
        .iter()
        .filter_map(|f| FieldPath::parse(f).ok())
        .collect()
});

impl Event {
    /// Builds an event from a record read by `source` at `ingest`. The event time is the
    /// first of [`TIME_FIELDS`] that holds an RFC 3339 time (or epoch seconds); otherwise
    /// the ingest time.
    pub fn from_record(data: Value, source: Arc<str>, ingest: Timestamp) -> Event {
        let time = record_time(&data).unwrap_or(ingest);
        Event::make(Arc::new(data), None, None, None, source, time, ingest)
    }

    /// An event of its parts, not acknowledged.
    fn make(
        data: Arc<Value>,
        tape: Option<Arc<Tape>>,
        raw: Option<bytes::Bytes>,
        alert: Option<Arc<Alert>>,
        source: Arc<str>,
        time: Timestamp,
        ingest: Timestamp,
    ) -> Event {
        Event {
            data,
            tape,
            alert_json: std::sync::OnceLock::new(),
            raw,
            ack: None,
            alert,
            meta: EventMeta {
                source,
                time,
                ingest,
            },
        }
    }

    /// Like [`Event::from_record`], keeping the bytes `data` was parsed from.
    pub fn from_line(raw: bytes::Bytes, data: Value, source: Arc<str>, ingest: Timestamp) -> Event {
        let mut e = Event::from_record(data, source, ingest);
        e.raw = Some(raw);
        e
    }

    /// Builds an event from a record parsed into a tape, read by `source` at `ingest`. The
    /// event time is found as [`Event::from_record`] finds it. An unchanged tape keeps its
    /// bytes as the event's raw form.
    pub fn from_tape(tape: Tape, source: Arc<str>, ingest: Timestamp) -> Event {
        let time = TIME_PATHS
            .iter()
            .filter_map(|p| tape.first_path(p))
            .find_map(|f| time_from_field(&f))
            .unwrap_or(ingest);
        let raw = (!tape.is_patched()).then(|| tape.raw());
        let tape = Some(Arc::new(tape));
        Event::make(Arc::new(Value::Null), tape, raw, None, source, time, ingest)
    }

    /// The record (an alert event's JSON form, made on the first call).
    pub fn data(&self) -> &Value {
        match (&self.alert, &self.tape) {
            (Some(alert), _) => self.alert_json.get_or_init(|| alert.to_value()),
            (None, Some(t)) => t.value(),
            (None, None) => &self.data,
        }
    }

    /// The record, to serialise: written as [`Event::data`] would be, without making a
    /// `Value` of a taped record.
    pub fn record(&self) -> Record<'_> {
        match (&self.alert, &self.tape) {
            (None, Some(t)) => Record::Tape(t),
            _ => Record::Value(self.data()),
        }
    }

    /// The record as JSON text: its original bytes when it has them, else the record
    /// serialised. A parsed record's text is made once and shared by the event's copies
    /// (the stages that keep the event as a sample), and holds neither the event nor its
    /// acknowledgement alive.
    pub fn json_text(&self) -> Arc<serde_json::value::RawValue> {
        let make = |event: &Event| {
            event
                .raw()
                .and_then(|raw| std::str::from_utf8(raw).ok())
                .and_then(|text| {
                    serde_json::value::RawValue::from_string(text.trim().to_string()).ok()
                })
                .unwrap_or_else(|| {
                    serde_json::value::to_raw_value(&event.record()).unwrap_or_default()
                })
                .into()
        };
        match (&self.alert, &self.tape) {
            (None, Some(t)) => t.json_text(|_| make(self)),
            _ => make(self),
        }
    }

    /// The record, shared: a copy that costs a pointer and does not hold the event (nor
    /// its batch acknowledgement). An alert event's JSON form is made for it.
    pub fn shared_data(&self) -> Arc<Value> {
        match (&self.alert, &self.tape) {
            (None, None) => self.data.clone(),
            _ => Arc::new(self.data().clone()),
        }
    }

    /// The record's tape, shared, when it has one and is not an alert (see [`Tape`]).
    pub fn shared_tape(&self) -> Option<Arc<Tape>> {
        match &self.alert {
            None => self.tape.clone(),
            Some(_) => None,
        }
    }

    /// The record, to change it. The original bytes no longer describe it and are dropped;
    /// so is the typed alert of an alert event (see [`Event::set_alert`]).
    pub fn data_mut(&mut self) -> &mut Value {
        if let Some(alert) = self.alert.take() {
            self.data = Arc::new(self.alert_json.take().unwrap_or_else(|| alert.to_value()));
        }
        if let Some(t) = self.tape.take() {
            self.data = Arc::new(match Arc::try_unwrap(t) {
                Ok(t) => t.into_value(),
                Err(shared) => shared.value().clone(),
            });
        }
        self.raw = None;
        Arc::make_mut(&mut self.data)
    }

    /// An event carrying `alert`, raised by the stage `source` at `time`.
    pub fn from_alert(alert: Alert, source: Arc<str>, time: Timestamp) -> Event {
        let alert = Some(Arc::new(alert));
        Event::make(Arc::new(Value::Null), None, None, alert, source, time, time)
    }

    /// The alert this event carries, if it is one.
    pub fn alert(&self) -> Option<&Alert> {
        self.alert.as_deref()
    }

    /// Replaces the event's record with `alert` (the event becomes, or stays, an alert).
    pub fn set_alert(&mut self, alert: Alert) {
        self.data = Arc::new(Value::Null);
        self.tape = None;
        self.alert_json = std::sync::OnceLock::new();
        self.raw = None;
        self.alert = Some(Arc::new(alert));
    }

    /// The bytes the record was parsed from, if it is unchanged since.
    pub fn raw(&self) -> Option<&[u8]> {
        self.raw.as_deref()
    }

    /// Attaches a batch acknowledgement (see [`AckGuard`]).
    pub fn with_ack(mut self, guard: &Arc<AckGuard>) -> Event {
        self.ack = Some(guard.clone());
        self
    }

    /// Attaches a batch acknowledgement to an event not yet handed on.
    pub fn set_ack(&mut self, guard: &Arc<AckGuard>) {
        self.ack = Some(guard.clone());
    }

    /// Whether a source waits on this event's acknowledgement.
    pub fn has_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Marks the event's batch as failed: it was not delivered.
    pub fn fail(&self) {
        if let Some(g) = &self.ack {
            g.failed.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// A record that field paths read: a `Value`, or an event (read from its tape when it has
/// one, without making its `Value`).
pub trait Fields {
    /// The first value `path` reaches (see [`FieldPath::first`]).
    fn field(&self, path: &FieldPath) -> Option<Field<'_>>;
    /// Calls `visit` with every value `path` reaches (see [`FieldPath::any`]).
    fn visit(&self, path: &FieldPath, visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool;
    /// Whether `path` reaches a value.
    fn has(&self, path: &FieldPath) -> bool {
        self.field(path).is_some()
    }
}

impl Fields for Value {
    fn field(&self, path: &FieldPath) -> Option<Field<'_>> {
        path.first(self).map(Field::Value)
    }

    fn visit(&self, path: &FieldPath, visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        path.any(self, &mut |v| visit(Field::Value(v)))
    }
}

impl Fields for Event {
    fn field(&self, path: &FieldPath) -> Option<Field<'_>> {
        path.first_in(self)
    }

    fn visit(&self, path: &FieldPath, visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        path.any_in(self, visit)
    }

    fn has(&self, path: &FieldPath) -> bool {
        match (&self.alert, &self.tape) {
            (None, Some(t)) => t.has_path(path),
            _ => path.first(self.data()).is_some(),
        }
    }
}

/// The event time a record carries, if any.
pub fn record_time(data: &Value) -> Option<Timestamp> {
    let obj = data.as_object()?;
    TIME_FIELDS
        .iter()
        .filter_map(|f| obj.get(*f))
        .find_map(time_from_value)
}

/// Reads a time from a value: an RFC 3339 string, or epoch seconds (or milliseconds).
pub fn time_from_value(v: &Value) -> Option<Timestamp> {
    time_from_field(&Field::Value(v))
}

/// Reads a time from a field: an RFC 3339 string, or epoch seconds (or milliseconds).
pub fn time_from_field(v: &Field<'_>) -> Option<Timestamp> {
    match v.scalar() {
        Scalar::Str(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Scalar::Num(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() || secs < 0.0 {
                return None;
            }
            // Epoch milliseconds are common too: anything past year 33658 in seconds is ms.
            let secs = if secs > 1e12 { secs / 1000.0 } else { secs };
            DateTime::from_timestamp_millis((secs * 1000.0) as i64)
        }
        _ => None,
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    /// A numeric segment: an index into a list, or a key that happens to be numeric.
    Index(usize, String),
}

impl Segment {
    /// The segment as an object key.
    fn key(&self) -> &str {
        match self {
            Segment::Key(k) | Segment::Index(_, k) => k,
        }
    }
}

/// A dotted path into a record: `src.ip`, `service.port`, `notifications.0.info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
    /// Its number for the lookup memo of taped records (the same for every path written
    /// alike), when it has one.
    number: Option<u16>,
}

/// A field path that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is not a field path: {reason}")]
pub struct FieldPathError {
    path: String,
    reason: &'static str,
}

impl FieldPath {
    /// Parses a dotted path. Empty segments (`a..b`, a leading or trailing dot) are errors.
    pub fn parse(text: &str) -> Result<FieldPath, FieldPathError> {
        if text.is_empty() {
            return Err(FieldPathError {
                path: text.into(),
                reason: "it is empty",
            });
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            if part.is_empty() {
                return Err(FieldPathError {
                    path: text.into(),
                    reason: "it has an empty segment (two dots, or a dot at an end)",
                });
            }
            segments.push(match part.parse::<usize>() {
                Ok(i) => Segment::Index(i, part.to_string()),
                Err(_) => Segment::Key(part.to_string()),
            });
        }
        Ok(FieldPath {
            text: text.to_string(),
            segments,
            number: tape::path_number(text),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Calls `visit` with every value the path reaches, stopping early when it returns
    /// `true`. Returns whether any call returned `true`. Lists met on the way without an
    /// index are fanned out; a list at the end of the path is visited element by element
    /// *and* as a whole is not visited (so `[1, 2]` matches `1`).
    pub fn any(&self, root: &Value, visit: &mut impl FnMut(&Value) -> bool) -> bool {
        walk(root, &self.segments, visit)
    }

    /// The first value the path reaches (lists without an index: the first element that
    /// has it).
    pub fn first<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        first(root, &self.segments)
    }

    /// [`FieldPath::first`] on an event's record, read from its tape when it has one
    /// (without making its `Value`).
    pub fn first_in<'e>(&self, event: &'e Event) -> Option<Field<'e>> {
        match (&event.alert, &event.tape) {
            (None, Some(t)) => t.first_path(self),
            _ => self.first(event.data()).map(Field::Value),
        }
    }

    /// [`FieldPath::any`] on an event's record, read from its tape when it has one.
    pub fn any_in(&self, event: &Event, visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        match (&event.alert, &event.tape) {
            (None, Some(t)) => t.any_path(self, visit),
            _ => walk(event.data(), &self.segments, &mut |v| {
                visit(Field::Value(v))
            }),
        }
    }

    /// [`FieldPath::first`] on a tape.
    pub fn first_in_tape<'t>(&self, tape: &'t Tape) -> Option<Field<'t>> {
        tape.first_path(self)
    }

    /// [`FieldPath::any`] on a tape.
    pub fn any_in_tape(&self, tape: &Tape, visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        tape.any_path(self, visit)
    }
}

/// `map[key]`. Records' maps are small (a flow has about 15 keys, its parts fewer): a
/// scan comparing keys beats hashing them (serde_json's ordered map hashes with SipHash),
/// and field paths are looked up on every event by every rule.
fn member<'v>(map: &'v serde_json::Map<String, Value>, key: &str) -> Option<&'v Value> {
    if map.len() <= 24 {
        map.iter().find_map(|(k, v)| (k == key).then_some(v))
    } else {
        map.get(key)
    }
}

fn walk(v: &Value, segs: &[Segment], visit: &mut impl FnMut(&Value) -> bool) -> bool {
    let Some((seg, rest)) = segs.split_first() else {
        return match v {
            Value::Array(items) => items.iter().any(&mut *visit),
            other => visit(other),
        };
    };
    match (v, seg) {
        (Value::Object(map), Segment::Key(k) | Segment::Index(_, k)) => {
            member(map, k).is_some_and(|c| walk(c, rest, visit))
        }
        (Value::Array(items), Segment::Index(i, _)) => {
            items.get(*i).is_some_and(|c| walk(c, rest, visit))
        }
        (Value::Array(items), Segment::Key(_)) => items.iter().any(|c| walk(c, segs, visit)),
        _ => false,
    }
}

fn first<'v>(v: &'v Value, segs: &[Segment]) -> Option<&'v Value> {
    let Some((seg, rest)) = segs.split_first() else {
        return Some(v);
    };
    match (v, seg) {
        (Value::Object(map), Segment::Key(k) | Segment::Index(_, k)) => {
            first(member(map, k)?, rest)
        }
        (Value::Array(items), Segment::Index(i, _)) => first(items.get(*i)?, rest),
        (Value::Array(items), Segment::Key(_)) => items.iter().find_map(|c| first(c, segs)),
        _ => None,
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(path: &str, v: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        FieldPath::parse(path).unwrap().any(v, &mut |x| {
            out.push(x.clone());
            false
        });
        out
    }

    #[test]
    fn copies_of_a_parsed_event_share_one_json_text_and_a_changed_copy_makes_its_own() {
        let mut tape = Tape::parse(bytes::Bytes::from_static(
            br#" {"src": {"ip": "10.0.0.1"}, "num_connections": 3} "#,
        ))
        .unwrap();
        tape.set(&["vigil", "note"], json!("enriched"));
        let event = Event::from_tape(tape, "p.flows".into(), Utc::now());
        let copy = event.clone();
        let (a, b) = (event.json_text(), copy.json_text());
        assert!(
            Arc::ptr_eq(&a, &b),
            "two stages sampling one event share its text"
        );
        assert_eq!(
            serde_json::from_str::<Value>(a.get()).unwrap(),
            json!({"src": {"ip": "10.0.0.1"}, "num_connections": 3, "vigil": {"note": "enriched"}})
        );
        let mut changed = copy.clone();
        changed.data_mut()["num_connections"] = json!(4);
        let c = changed.json_text();
        assert!(c.get().contains("\"num_connections\":4"), "{}", c.get());
        assert!(a.get().contains("\"num_connections\":3"), "{}", a.get());
        // An unchanged record's text is the bytes it came in, trimmed.
        let plain = Event::from_tape(
            Tape::parse(bytes::Bytes::from_static(b" {\"a\":  1} \n")).unwrap(),
            "p.s".into(),
            Utc::now(),
        );
        assert_eq!(plain.json_text().get(), "{\"a\":  1}");
    }

    #[test]
    fn nested_and_lists() {
        let v = json!({
            "src": {"ip": "10.0.0.1"},
            "notifications": [
                {"notification_type": "user.login_failed"},
                {"notification_type": "request.authentication_failed"}
            ],
            "ports": [22, 80]
        });
        assert_eq!(all("src.ip", &v), vec![json!("10.0.0.1")]);
        assert_eq!(
            all("notifications.notification_type", &v),
            vec![
                json!("user.login_failed"),
                json!("request.authentication_failed")
            ]
        );
        assert_eq!(
            all("notifications.1.notification_type", &v),
            vec![json!("request.authentication_failed")]
        );
        assert_eq!(all("ports", &v), vec![json!(22), json!(80)]);
        assert!(all("src.port", &v).is_empty());
        assert!(all("src.ip.x", &v).is_empty());
    }

    #[test]
    fn numeric_keys_in_objects() {
        let v = json!({"a": {"0": "zero"}});
        assert_eq!(all("a.0", &v), vec![json!("zero")]);
    }

    #[test]
    fn bad_paths() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse(".a").is_err());
    }

    #[tokio::test]
    async fn a_batch_is_acknowledged_when_its_last_event_goes() {
        let (guard, ack) = ack_pair();
        let a = Arc::new(
            Event::from_record(json!({"n": 1}), "p.s".into(), Utc::now()).with_ack(&guard),
        );
        let b = Arc::new(
            Event::from_record(json!({"n": 2}), "p.s".into(), Utc::now()).with_ack(&guard),
        );
        drop(guard);
        let copy = (*b).clone();
        drop(a);
        drop(b);
        let mut ack = Box::pin(ack.delivered());
        assert!(
            futures::poll!(&mut ack).is_pending(),
            "a copy still carries the batch"
        );
        drop(copy);
        assert!(ack.await);

        let (guard, ack) = ack_pair();
        let e = Event::from_record(json!({}), "p.s".into(), Utc::now()).with_ack(&guard);
        drop(guard);
        e.fail();
        drop(e);
        assert!(!ack.delivered().await);
    }

    #[test]
    fn event_time_from_record() {
        let ingest = Utc::now();
        let e = Event::from_record(
            json!({"timestamp": "2024-03-01T10:00:00.123Z"}),
            "p.s".into(),
            ingest,
        );
        assert_eq!(e.meta.time.to_rfc3339(), "2024-03-01T10:00:00.123+00:00");
        let e = Event::from_record(json!({"time": 1700000000}), "p.s".into(), ingest);
        assert_eq!(e.meta.time.timestamp(), 1_700_000_000);
        let e = Event::from_record(json!({"x": 1}), "p.s".into(), ingest);
        assert_eq!(e.meta.time, ingest);
    }
}
