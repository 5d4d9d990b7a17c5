//! What `pce_events` stores between runs: the watermark and the hrefs handed on recently.

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use crate::event::Timestamp;

/// The state of a `pce_events` source, stored under its node id.
///
/// Stored as `{"start": t, "watermark": t, "recent": {href: t, ...}}` with RFC 3339
/// times (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsCheckpoint {
    /// Where the very first run started: no query reaches further back.
    pub start: Timestamp,
    /// Every event up to here (that the PCE showed when asked) has been handed on.
    pub watermark: Timestamp,
    /// The hrefs handed on recently (as far back as a cycle reads), with their
    /// timestamps.
    pub recent: IndexMap<String, Timestamp>,
}

fn time_text(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl EventsCheckpoint {
    /// A fresh state starting at `start`.
    pub fn starting_at(start: Timestamp) -> EventsCheckpoint {
        EventsCheckpoint {
            start,
            watermark: start,
            recent: IndexMap::new(),
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> Value {
        let recent: Map<String, Value> = self
            .recent
            .iter()
            .map(|(href, t)| (href.clone(), Value::String(time_text(t))))
            .collect();
        json!({
            "start": time_text(&self.start),
            "watermark": time_text(&self.watermark),
            "recent": recent,
        })
    }

    /// Reads the stored form; `None` when it is not one (a damaged or foreign value).
    pub fn from_json(v: &Value) -> Option<EventsCheckpoint> {
        let watermark = parse_time(v.get("watermark")?)?;
        let start = v.get("start").and_then(parse_time).unwrap_or(watermark);
        let mut recent = IndexMap::new();
        if let Some(map) = v.get("recent").and_then(Value::as_object) {
            for (href, t) in map {
                if let Some(t) = parse_time(t) {
                    recent.insert(href.clone(), t);
                }
            }
        }
        Some(EventsCheckpoint {
            start,
            watermark,
            recent,
        })
    }

    /// Forgets the hrefs of events older than `before`: no query reaches them any more.
    pub fn prune(&mut self, before: Timestamp) {
        self.recent.retain(|_, t| *t >= before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trips_and_prunes() {
        let t = |s| Utc.timestamp_opt(s, 0).single().unwrap();
        let mut c = EventsCheckpoint::starting_at(t(100));
        c.watermark = t(500);
        c.recent.insert("/orgs/1/events/a".into(), t(200));
        c.recent.insert("/system_events/b".into(), t(450));
        let back = EventsCheckpoint::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        c.prune(t(300));
        assert_eq!(
            c.recent.keys().collect::<Vec<_>>(),
            vec!["/system_events/b"]
        );
        assert_eq!(EventsCheckpoint::from_json(&json!({"x": 1})), None);
    }
}
