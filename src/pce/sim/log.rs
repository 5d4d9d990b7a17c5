//! The request log: the requests the simulator answered, for tests to inspect.
//!
//! It is bounded: it keeps the newest [`LOG_CAPACITY`] requests and counts the ones it
//! let go, and it keeps at most [`MAX_LOGGED_BODY`] bytes of each body, so a simulator
//! that runs for days (`vigil demo`) holds a bounded amount of memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// How many requests the log keeps (the oldest go first).
pub const LOG_CAPACITY: usize = 10_000;

/// How many bytes of a request body the log keeps.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, `PUT`, ...
    pub method: String,
    /// The path, e.g. `/api/v2/orgs/1/events`.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// The request body as text (empty for GET and HEAD), cut after
    /// [`MAX_LOGGED_BODY`] bytes.
    pub body: String,
    /// The status answered.
    pub status: u16,
    /// Whether the request carried the right credentials.
    pub authenticated: bool,
    /// When it was answered (simulator time).
    pub at: DateTime<Utc>,
    /// The `X-Request-Id` answered (a written event's `action.uuid` is the same).
    pub request_id: String,
}

impl LoggedRequest {
    /// True for a request that asks to change the PCE: PUT, PATCH, DELETE, or a POST
    /// other than a traffic query (which only reads).
    pub fn is_write(&self) -> bool {
        match self.method.as_str() {
            "PUT" | "PATCH" | "DELETE" => true,
            "POST" => {
                !(self.path.ends_with("/traffic_flows/async_queries")
                    || self
                        .path
                        .ends_with("/traffic_flows/traffic_analysis_queries"))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    kept: VecDeque<LoggedRequest>,
    dropped: u64,
}

/// A shared, bounded log.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Entries>,
}

impl RequestLog {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry, letting the oldest go when full.
    pub(crate) fn push(&self, mut entry: LoggedRequest) {
        cut(&mut entry.body, MAX_LOGGED_BODY);
        let mut e = self.entries();
        if e.kept.len() == LOG_CAPACITY {
            e.kept.pop_front();
            e.dropped += 1;
        }
        e.kept.push_back(entry);
    }

    /// A copy of every entry kept, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries().kept.iter().cloned().collect()
    }

    /// How many entries the bound let go since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.entries().dropped
    }

    /// Forgets every entry (the count of dropped ones stays).
    pub(crate) fn clear(&self) {
        self.entries().kept.clear();
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> LoggedRequest {
        LoggedRequest {
            method: "GET".into(),
            path: format!("/api/v2/orgs/1/labels/{n}"),
            query: String::new(),
            body: String::new(),
            status: 200,
            authenticated: true,
            at: DateTime::<Utc>::default(),
            request_id: String::new(),
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_the_dropped() {
        let log = RequestLog::default();
        for n in 0..LOG_CAPACITY + 3 {
            log.push(entry(n));
        }
        let kept = log.snapshot();
        assert_eq!(kept.len(), LOG_CAPACITY);
        assert_eq!(kept[0].path, "/api/v2/orgs/1/labels/3");
        assert_eq!(log.dropped(), 3);
        log.clear();
        assert!(log.snapshot().is_empty());
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let log = RequestLog::default();
        let mut e = entry(0);
        e.body = "é".repeat(MAX_LOGGED_BODY);
        log.push(e);
        let body = &log.snapshot()[0].body;
        assert!(body.len() <= MAX_LOGGED_BODY && body.len() >= MAX_LOGGED_BODY - 1);
    }

    #[test]
    fn writes_are_told_from_reads() {
        let mut e = entry(0);
        assert!(!e.is_write());
        e.method = "PUT".into();
        assert!(e.is_write());
        e.method = "POST".into();
        e.path = "/api/v2/orgs/1/traffic_flows/async_queries".into();
        assert!(!e.is_write());
        e.path = "/api/v2/orgs/1/labels".into();
        assert!(e.is_write());
    }
}
