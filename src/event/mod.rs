//! Events and field paths.
//!
//! An [`Event`] is a JSON-shaped record plus where and when it came from. Events travel the
//! graph as `Arc<Event>`: a fan-out to three stages clones a pointer, never the record.
//! A [`FieldPath`] (`src.ip`, `dst.workload.labels`, `notifications.0.notification_type`)
//! addresses nested data; where a path crosses a list without an index it visits every
//! element, so `notifications.notification_type` sees each notification's type.

mod alert;

use std::fmt;
use std::sync::Arc;

pub use alert::{
    Alert, AlertStatus, AlertWindow, Group, Sample, Severity, TopRow, TopTable, group_key,
    insert_path, push_key_field,
};

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

impl Event {
    /// Builds an event from a record read by `source` at `ingest`. The event time is the
    /// first of [`TIME_FIELDS`] that holds an RFC 3339 time (or epoch seconds); otherwise
    /// the ingest time.
    pub fn from_record(data: Value, source: Arc<str>, ingest: Timestamp) -> Event {
        let time = record_time(&data).unwrap_or(ingest);
        Event {
            data: Arc::new(data),
            alert_json: std::sync::OnceLock::new(),
            raw: None,
            ack: None,
            alert: None,
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

    /// The record (an alert event's JSON form, made on the first call).
    pub fn data(&self) -> &Value {
        match &self.alert {
            Some(alert) => self.alert_json.get_or_init(|| alert.to_value()),
            None => &self.data,
        }
    }

    /// The record, shared: a copy that costs a pointer and does not hold the event (nor
    /// its batch acknowledgement). An alert event's JSON form is made for it.
    pub fn shared_data(&self) -> Arc<Value> {
        match &self.alert {
            Some(_) => Arc::new(self.data().clone()),
            None => self.data.clone(),
        }
    }

    /// The record, to change it. The original bytes no longer describe it and are dropped;
    /// so is the typed alert of an alert event (see [`Event::set_alert`]).
    pub fn data_mut(&mut self) -> &mut Value {
        if let Some(alert) = self.alert.take() {
            self.data = Arc::new(self.alert_json.take().unwrap_or_else(|| alert.to_value()));
        }
        self.raw = None;
        Arc::make_mut(&mut self.data)
    }

    /// An event carrying `alert`, raised by the stage `source` at `time`.
    pub fn from_alert(alert: Alert, source: Arc<str>, time: Timestamp) -> Event {
        Event {
            data: Arc::new(Value::Null),
            alert_json: std::sync::OnceLock::new(),
            raw: None,
            ack: None,
            alert: Some(Arc::new(alert)),
            meta: EventMeta {
                source,
                time,
                ingest: time,
            },
        }
    }

    /// The alert this event carries, if it is one.
    pub fn alert(&self) -> Option<&Alert> {
        self.alert.as_deref()
    }

    /// Replaces the event's record with `alert` (the event becomes, or stays, an alert).
    pub fn set_alert(&mut self, alert: Alert) {
        self.data = Arc::new(Value::Null);
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
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => {
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

/// A dotted path into a record: `src.ip`, `service.port`, `notifications.0.info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
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
            map.get(k.as_str()).is_some_and(|c| walk(c, rest, visit))
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
            first(map.get(k.as_str())?, rest)
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
