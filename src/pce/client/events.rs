//! `GET /orgs/{org}/events`.

use chrono::SecondsFormat;
use serde_json::Value;

use super::{Call, PceClient, PceError};
use crate::event::Timestamp;

/// The largest `max_results` the events API accepts.
pub const MAX_EVENT_RESULTS: u32 = 10_000;

/// The PCE's `max_results` when none is given.
pub const DEFAULT_EVENT_RESULTS: u32 = 100;

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// `timestamp[gte]`: events at or after this time (the boundary event comes back).
    pub since: Option<Timestamp>,
    /// `timestamp[lte]`: events at or before this time.
    pub until: Option<Timestamp>,
    /// `event_type` values (one parameter each), e.g. `agent.tampering`.
    pub event_types: Vec<String>,
    /// `severity`: `info`, `warning` or `err`.
    pub severity: Option<String>,
    /// `status`: `success` or `failure`.
    pub status: Option<String>,
    /// `max_results` (the PCE's default is 100, its maximum 10000). A full page means there
    /// may be more: narrow the range and ask again.
    pub max_results: Option<u32>,
}

/// A timestamp as the PCE wants it: RFC 3339, milliseconds, `Z` (never a bare date).
pub(crate) fn pce_time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl EventQuery {
    /// Whether a response of `len` events filled the page (`max_results`, or the PCE's
    /// default of 100): there may be more, so narrow the range and ask again.
    pub fn page_is_full(&self, len: usize) -> bool {
        len >= self.max_results.unwrap_or(DEFAULT_EVENT_RESULTS) as usize
    }

    fn params(&self) -> Result<Vec<(String, String)>, PceError> {
        let mut q = Vec::new();
        if let (Some(since), Some(until)) = (&self.since, &self.until) {
            if since > until {
                return Err(PceError::InvalidQuery(format!(
                    "events: since {} is after until {}",
                    pce_time(since),
                    pce_time(until)
                )));
            }
        }
        if let Some(since) = &self.since {
            q.push(("timestamp[gte]".to_string(), pce_time(since)));
        }
        if let Some(until) = &self.until {
            q.push(("timestamp[lte]".to_string(), pce_time(until)));
        }
        for t in &self.event_types {
            q.push(("event_type".to_string(), t.clone()));
        }
        if let Some(s) = &self.severity {
            q.push(("severity".to_string(), s.clone()));
        }
        if let Some(s) = &self.status {
            q.push(("status".to_string(), s.clone()));
        }
        if let Some(n) = self.max_results {
            if n == 0 || n > MAX_EVENT_RESULTS {
                return Err(PceError::InvalidQuery(format!(
                    "events: max_results {n} must be between 1 and {MAX_EVENT_RESULTS}"
                )));
            }
            q.push(("max_results".to_string(), n.to_string()));
        }
        Ok(q)
    }
}

/// The first `limit` elements of a JSON array, and how many more it had (skipped
/// without being kept).
struct Page {
    limit: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Page {
    type Value = (Vec<Value>, usize);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Page {
    type Value = (Vec<Value>, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::with_capacity(self.limit.min(1024));
        let mut more = 0usize;
        loop {
            if kept.len() < self.limit {
                match seq.next_element::<Value>()? {
                    Some(v) => kept.push(v),
                    None => break,
                }
            } else if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                more += 1;
            } else {
                break;
            }
        }
        Ok((kept, more))
    }
}

impl PceClient {
    /// `GET /orgs/{org}/events`: the events, in the order the PCE sent them (sort them
    /// yourself; the order is not documented). Never more than the page asked for: a PCE
    /// that sends more has them set aside (counted in a warning); the page is full, so
    /// the caller narrows the range and reads them again.
    pub async fn events(&self, query: &EventQuery) -> Result<Vec<Value>, PceError> {
        use serde::de::DeserializeSeed as _;
        let call = Call::get(self.org_path("/events")).query(query.params()?);
        let reply = self.execute(&call).await?;
        let limit = query.max_results.unwrap_or(DEFAULT_EVENT_RESULTS) as usize;
        let mut de = serde_json::Deserializer::from_slice(&reply.body);
        let (events, more) = Page { limit }
            .deserialize(&mut de)
            .and_then(|page| de.end().map(|()| page))
            .map_err(|e| PceError::Decode {
                what: "events".to_string(),
                request_id: reply.request_id.clone(),
                message: e.to_string(),
            })?;
        if more > 0 {
            tracing::warn!(
                asked = limit,
                more,
                request_id = %reply.request_id,
                "the PCE sent more events than the page asked for; the extra ones were set aside and are read again with a narrower range"
            );
        }
        Ok(events)
    }
}
