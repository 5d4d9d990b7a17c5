//! Long-running work: async traffic queries and async collection jobs, whose status
//! moves on with (simulator) time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::traffic::{QueryResult, TrafficQuery};

/// A traffic query is `queued` this long, then `working` until [`QUERY_DONE_AFTER`].
const QUERY_WORKING_AFTER: Duration = Duration::seconds(1);
/// When a traffic query completes, counted from its creation.
const QUERY_DONE_AFTER: Duration = Duration::seconds(2);
/// A job is `pending` this long, then `running` until [`JOB_DONE_AFTER`].
const JOB_RUNNING_AFTER: Duration = Duration::seconds(1);
/// When a job is done, counted from its creation.
const JOB_DONE_AFTER: Duration = Duration::seconds(3);

/// An async traffic query.
#[derive(Debug)]
pub(crate) struct AsyncQuery {
    pub(crate) href: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) query: TrafficQuery,
    /// The request body, echoed as `query_parameters`.
    pub(crate) body: Value,
    pub(crate) result: OnceCell<Arc<QueryResult>>,
    pub(crate) downloads: AtomicU32,
}

/// The lifecycle stage of an async query at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryStage {
    Queued,
    Working,
    Completed,
}

impl AsyncQuery {
    /// A new query created at `now`.
    pub(crate) fn new(
        href: String,
        now: DateTime<Utc>,
        query: TrafficQuery,
        body: Value,
    ) -> AsyncQuery {
        AsyncQuery {
            href,
            created_at: now,
            query,
            body,
            result: OnceCell::new(),
            downloads: AtomicU32::new(0),
        }
    }

    /// The stage at `now`.
    pub(crate) fn stage(&self, now: DateTime<Utc>) -> QueryStage {
        let age = now - self.created_at;
        if age >= QUERY_DONE_AFTER {
            QueryStage::Completed
        } else if age >= QUERY_WORKING_AFTER {
            QueryStage::Working
        } else {
            QueryStage::Queued
        }
    }

    /// Counts one download; returns how many came before it.
    pub(crate) fn count_download(&self) -> u32 {
        self.downloads.fetch_add(1, Ordering::SeqCst)
    }

    /// The status document; `result` is given once the query has completed.
    pub(crate) fn status_json(&self, now: DateTime<Utc>, result: Option<&QueryResult>) -> Value {
        let stage = self.stage(now);
        let status = match stage {
            QueryStage::Queued => "queued",
            QueryStage::Working => "working",
            QueryStage::Completed => "completed",
        };
        let created = self.created_at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut v = json!({
            "href": self.href,
            "query_parameters": self.body,
            "status": status,
            "created_at": created,
            "updated_at": now.min(self.created_at + QUERY_DONE_AFTER).to_rfc3339_opts(SecondsFormat::Millis, true),
            "created_by": {"href": "/users/11"},
        });
        if let (QueryStage::Completed, Some(r), Some(o)) = (stage, result, v.as_object_mut()) {
            o.insert("matches_count".into(), json!(r.matches_count));
            o.insert("flows_count".into(), json!(r.flows.len()));
            o.insert("result".into(), json!(format!("{}/download", self.href)));
        }
        v
    }
}

/// An async collection job (`Prefer: respond-async`).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) href: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) datafile_href: String,
    pub(crate) description: String,
}

impl Job {
    /// The job document at `now`.
    pub(crate) fn status_json(&self, now: DateTime<Utc>) -> Value {
        let age = now - self.created_at;
        let status = if age >= JOB_DONE_AFTER {
            "done"
        } else if age >= JOB_RUNNING_AFTER {
            "running"
        } else {
            "pending"
        };
        let mut v = json!({
            "href": self.href,
            "job_type": "async_request",
            "description": self.description,
            "status": status,
            "requested_at": self.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "requested_by": {"href": "/users/11"},
        });
        if status == "done" {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "terminated_at".into(),
                    json!(
                        (self.created_at + JOB_DONE_AFTER)
                            .to_rfc3339_opts(SecondsFormat::Millis, true)
                    ),
                );
                o.insert("result".into(), json!({"href": self.datafile_href}));
            }
        }
        v
    }
}
