//! The request log: every request the simulator answered, for tests to inspect.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, e.g. `/api/v2/orgs/1/events`.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// The request body as text (POST bodies, e.g. a traffic query; empty otherwise).
    pub body: String,
    /// The status answered.
    pub status: u16,
    /// Whether the request carried the right credentials.
    pub authenticated: bool,
    /// When it was answered (simulator time).
    pub at: DateTime<Utc>,
}

/// A shared, append-only log.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Vec<LoggedRequest>>,
}

impl RequestLog {
    /// Appends one entry.
    pub(crate) fn push(&self, entry: LoggedRequest) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// A copy of every entry.
    pub(crate) fn snapshot(&self) -> Vec<LoggedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets every entry.
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
