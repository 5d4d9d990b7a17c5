//! What the API sees of the traffic: the recent events every source read (a ring) and a
//! live feed of events and alerts for the stream (`/api/v1/stream`). Publishing costs a
//! pointer copy per event, and building the feed's items happens only while someone
//! listens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::event::{Event, Timestamp};

/// How many recent events are kept.
pub(crate) const RECENT: usize = 500;
/// How many of one batch's events go into the ring, and onto the live feed, at most: it
/// is one ring (and one feed) for every source, and the pipelines reading one PCE
/// connection each hand on the same flows, so a few of each batch are plenty to keep it
/// fresh and to show what flows.
const PER_BATCH: usize = 8;

/// One item of the live feed.
#[derive(Debug, Clone, Serialize)]
pub struct StreamItem {
    /// `event` or `alert`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event's time (an alert's: the end of its window).
    pub time: Timestamp,
    /// The node that read or raised it (`pipeline.node`).
    pub source: String,
    /// The pipeline.
    pub pipeline: String,
    /// An alert's severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<crate::event::Severity>,
    /// An alert's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The record (an alert's JSON form).
    pub record: Value,
    /// What the item is, for a listener to recognise it again: an alert's id, status and
    /// update count (a later stage that edits the alert — a top-N table added — sends it
    /// again under the same id), an event's `href` (a PCE event read by several
    /// pipelines' sources is the same event). Absent for records with no identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The identity of a record read from a source: its `href` (PCE events, workloads).
fn record_id(record: &Value) -> Option<String> {
    record
        .get("href")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(|h| format!("event:{h}"))
}

impl StreamItem {
    /// The item of `event` (an alert when it carries one).
    pub fn of(event: &Event) -> StreamItem {
        let source = event.meta.source.to_string();
        let pipeline = source.split('.').next().unwrap_or_default().to_string();
        match event.alert() {
            Some(a) => StreamItem {
                kind: "alert",
                time: a.window.end,
                source,
                pipeline: a.pipeline.clone(),
                severity: Some(a.severity),
                title: Some(a.title.clone()),
                record: serde_json::to_value(a).unwrap_or(Value::Null),
                id: Some(format!(
                    "alert:{}:{}:{}",
                    a.id,
                    match a.status {
                        crate::event::AlertStatus::Firing => "firing",
                        crate::event::AlertStatus::Resolved => "resolved",
                    },
                    a.updates
                )),
            },
            None => {
                let record = event.data().clone();
                StreamItem {
                    kind: "event",
                    time: event.meta.time,
                    source,
                    pipeline,
                    severity: None,
                    title: None,
                    id: record_id(&record),
                    record,
                }
            }
        }
    }
}

/// A recent event, copied: holding the event itself would hold its source's batch
/// acknowledgement (and so its checkpoint) back.
#[derive(Debug, Clone)]
struct Recent {
    source: Arc<str>,
    time: Timestamp,
    /// The original line when the event has one (a cheap copy), else the record.
    raw: Option<Arc<[u8]>>,
    data: Option<Arc<Value>>,
    /// The record's tape, when it has one (its `Value` is made only if the ring is read).
    tape: Option<Arc<crate::event::Tape>>,
}

impl Recent {
    fn of(e: &Event) -> Recent {
        match e.raw() {
            Some(raw) => Recent {
                source: e.meta.source.clone(),
                time: e.meta.time,
                raw: Some(Arc::from(raw)),
                data: None,
                tape: None,
            },
            None => {
                let tape = e.shared_tape();
                Recent {
                    source: e.meta.source.clone(),
                    time: e.meta.time,
                    raw: None,
                    data: tape.is_none().then(|| e.shared_data()),
                    tape,
                }
            }
        }
    }

    fn item(&self) -> StreamItem {
        let record = match (&self.data, &self.raw, &self.tape) {
            (Some(d), _, _) => Value::clone(d),
            (None, Some(raw), _) => serde_json::from_slice(raw).unwrap_or(Value::Null),
            (None, None, Some(t)) => t.value().clone(),
            (None, None, None) => Value::Null,
        };
        StreamItem {
            kind: "event",
            time: self.time,
            source: self.source.to_string(),
            pipeline: self
                .source
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            severity: None,
            title: None,
            id: record_id(&record),
            record,
        }
    }
}

/// What one listener of the feed was sent lately, by [`StreamItem::id`]: an event that
/// comes again (the same PCE event read by another pipeline's source) is not sent twice.
/// An alert that comes again under its id is an edited copy and is sent (a listener shows
/// it in place of the first). Bounded: the oldest ids are forgotten first.
#[derive(Debug, Default)]
pub struct SeenItems {
    order: VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl SeenItems {
    /// How many ids are remembered: far more than the copies of one event can be apart.
    const CAP: usize = 4096;

    /// Whether `item` is news to this listener (and remembers it).
    pub fn is_new(&mut self, item: &StreamItem) -> bool {
        let Some(id) = &item.id else { return true };
        if self.set.contains(id) {
            return item.kind == "alert";
        }
        if self.order.len() == Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.clone());
        self.set.insert(id.clone());
        true
    }
}

/// The ring of recent events and the live feed.
#[derive(Debug)]
pub struct Tap {
    /// Wakes polling sources waiting for their next interval (`POST /api/v1/run-once`).
    poll_now: tokio::sync::Notify,
    recent: Mutex<VecDeque<Recent>>,
    feed: broadcast::Sender<Arc<StreamItem>>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            poll_now: tokio::sync::Notify::new(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            feed: broadcast::channel(1024).0,
        }
    }
}

impl Tap {
    /// Events a source read.
    pub fn events(&self, events: &[Arc<Event>]) {
        // Of a big batch only its last events: at high rates the ring is a sample of the
        // traffic, and copying every event would cost the pipeline.
        let skip = events.len().saturating_sub(PER_BATCH);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for e in &events[skip..] {
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back(Recent::of(e));
            }
        }
        // The live feed gets the same sample: it is for people watching, and a source
        // handing on a PCE slice of 200,000 flows would otherwise push every audit event
        // and alert out of the stream (and lag every listener). Alerts always go.
        if self.feed.receiver_count() > 0 {
            for e in &events[skip..] {
                let _ = self.feed.send(Arc::new(StreamItem::of(e)));
            }
        }
    }

    /// Alerts a stage raised.
    pub fn alerts<'a>(&self, alerts: impl Iterator<Item = &'a Arc<Event>>) {
        if self.feed.receiver_count() == 0 {
            return;
        }
        for e in alerts {
            let _ = self.feed.send(Arc::new(StreamItem::of(e)));
        }
    }

    /// The recent events, newest first.
    pub fn recent(&self) -> Vec<StreamItem> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().map(Recent::item).collect()
    }

    /// Wakes every source waiting for its next poll: they poll now.
    pub fn poll_now(&self) {
        self.poll_now.notify_waiters();
    }

    /// Completes when [`Tap::poll_now`] is called.
    pub(crate) async fn polled(&self) {
        self.poll_now.notified().await;
    }

    /// Listens to the live feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamItem>> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &'static str, id: Option<&str>) -> StreamItem {
        StreamItem {
            kind,
            time: Timestamp::UNIX_EPOCH,
            source: "p.events".into(),
            pipeline: "p".into(),
            severity: None,
            title: None,
            record: Value::Null,
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn a_listener_gets_an_event_once_and_an_edited_alert_again() {
        let mut seen = SeenItems::default();
        let e = item("event", Some("event:/orgs/1/events/a"));
        assert!(seen.is_new(&e));
        assert!(!seen.is_new(&e), "the same PCE event from another source");
        let a = item("alert", Some("alert:x:firing:0"));
        assert!(
            seen.is_new(&a) && seen.is_new(&a),
            "an edited alert comes again"
        );
        let flow = item("event", None);
        assert!(
            seen.is_new(&flow) && seen.is_new(&flow),
            "no identity: always"
        );
        // Bounded: the oldest are forgotten.
        for i in 0..SeenItems::CAP {
            seen.is_new(&item("event", Some(&format!("event:{i}"))));
        }
        assert!(seen.is_new(&e), "forgotten after CAP newer ids");
        assert!(seen.order.len() <= SeenItems::CAP);
    }

    #[test]
    fn an_event_is_known_by_its_href() {
        let tap = Tap::default();
        let mut rx = tap.subscribe();
        let ev = Arc::new(Event::from_record(
            serde_json::json!({"href": "/orgs/1/events/9", "event_type": "x"}),
            Arc::from("p.events"),
            Timestamp::UNIX_EPOCH,
        ));
        tap.events(&[ev]);
        let got = rx.try_recv().expect("an item");
        assert_eq!(got.id.as_deref(), Some("event:/orgs/1/events/9"));
    }
}
