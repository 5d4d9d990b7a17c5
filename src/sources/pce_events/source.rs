//! The running `pce_events` source.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use super::checkpoint::EventsCheckpoint;
use super::config::{PceEventsConfig, StartAt};
use crate::event::{Event, Timestamp, ack_pair};
use crate::node::internal_event::{
    CheckpointNotStored, EventsNotDelivered, EventsVisibleLate, InternalEvent, PceEventsReadFailed,
};
use crate::node::{NodeResult, Source, SourceContext};
use crate::pce::client::{EventQuery, PceClient, PceError};
use crate::sources::json_lines::set_aside;
use crate::sources::send_batches;
use crate::store::Store;
use crate::store::rejected::{RejectedLog, RejectedRecord};

/// The smallest range a full page can be narrowed to (the PCE's timestamps have
/// millisecond precision).
const MIN_SPAN_MS: i64 = 1;

/// How a cycle ended.
enum Cycle {
    /// Read up to its end, or stopped by a PCE error (tried again next interval).
    Done,
    /// A shutdown was requested or nobody listens any more.
    Stopped,
}

/// One event as read, before de-duplication.
struct Read {
    href: String,
    at: Timestamp,
    data: Value,
}

/// Polls a PCE's audit events.
#[derive(Debug)]
pub struct PceEventsSource {
    cfg: PceEventsConfig,
    client: PceClient,
    store: Arc<Store>,
    rejected: RejectedLog,
    /// Records already set aside: the overlap returns them again, and they are set
    /// aside once (forgotten past [`REJECTED_MEMORY`] records, or at a restart).
    rejected_seen: HashSet<String>,
    id: Arc<str>,
    /// When the range behind the overlap was last read again (see [`Self::cycle`]).
    audited: Option<Timestamp>,
}

/// How many set-aside records are remembered to avoid setting them aside again.
const REJECTED_MEMORY: usize = 10_000;

impl PceEventsSource {
    pub(super) fn new(
        cfg: PceEventsConfig,
        client: PceClient,
        store: Arc<Store>,
        state_dir: &Path,
        rejected_max_bytes: u64,
        id: Arc<str>,
    ) -> Self {
        PceEventsSource {
            cfg,
            client,
            store,
            rejected: RejectedLog::new(state_dir, &id, rejected_max_bytes),
            rejected_seen: HashSet::new(),
            id,
            audited: None,
        }
    }

    fn overlap(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.overlap.get()).unwrap_or(chrono::Duration::zero())
    }

    fn interval(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.interval.get()).unwrap_or(chrono::Duration::zero())
    }

    /// How far behind the overlap a cycle reads again, once per `overlap` (or `interval`):
    /// `overlap + max(overlap, interval) + interval`, so that an event indexed up to twice
    /// the overlap late is still found whenever it becomes visible between two reads.
    fn audit_depth(&self) -> chrono::Duration {
        self.overlap() + self.overlap().max(self.interval()) + self.interval()
    }

    /// The stored state, or a fresh one per `start_at`.
    fn load(&self, now: Timestamp) -> Result<EventsCheckpoint, String> {
        let stored = self
            .store
            .checkpoint(&self.id)
            .map_err(|e| format!("reading the checkpoint: {e}"))?;
        if let Some(v) = stored {
            return EventsCheckpoint::from_json(&v).ok_or_else(|| {
                format!(
                    "the checkpoint `{}` is not a pce_events checkpoint (remove it to start afresh)",
                    self.id
                )
            });
        }
        let start = match self.cfg.start_at {
            StartAt::Now => now,
            StartAt::Lookback(d) => {
                now - chrono::Duration::from_std(d.get()).unwrap_or(chrono::Duration::zero())
            }
        };
        Ok(EventsCheckpoint::starting_at(start))
    }

    async fn save(&self, cx: &SourceContext, state: &EventsCheckpoint) {
        let written = self
            .store
            .queue_checkpoint(&self.id, &state.to_json())
            .await;
        if let Err(e) = written {
            CheckpointNotStored {
                source: &self.id,
                error: &e,
            }
            .emit(cx.counters());
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let mut state = self.load(cx.now())?;
        tracing::debug!(source = %self.id, watermark = %state.watermark, "pce_events starting");
        loop {
            if let Cycle::Stopped = self.cycle(cx, &mut state).await {
                return Ok(());
            }
            if !cx.sleep(self.cfg.interval.get()).await {
                return Ok(());
            }
        }
    }

    /// Reads `[watermark − overlap, now]`, narrowing full pages, handing on each settled
    /// range in time order and storing the checkpoint after each.
    ///
    /// Once per `overlap` (or `interval`, if longer) it also reads again the
    /// [`Self::audit_depth`] behind the overlap: an event found there that was not handed on
    /// became visible more than `overlap` after its timestamp. It is handed on now,
    /// counted as the source's error and reported with its lag, so that `overlap` can be
    /// raised; without this it would be lost unseen.
    async fn cycle(&mut self, cx: &mut SourceContext, state: &mut EventsCheckpoint) -> Cycle {
        let now = cx.now();
        let overlap = self.overlap();
        let from = (state.watermark - overlap).max(state.start);
        if from > now {
            return Cycle::Done;
        }
        // Ranges still to read, newest at the bottom: popping takes the oldest first.
        let mut todo = vec![(from, now)];
        let audit_from = (from - self.audit_depth()).max(state.start);
        let audit_due = self
            .audited
            .is_none_or(|t| now - t >= overlap.max(self.interval()));
        if audit_due && audit_from < from {
            todo.push((audit_from, from - chrono::Duration::milliseconds(1)));
            self.audited = Some(now);
        }
        while let Some((a, b)) = todo.pop() {
            let Some(answer) = cx.wait(fetch(&self.client, &self.cfg, a, b)).await else {
                return Cycle::Stopped;
            };
            let (records, full) = match answer {
                Ok(x) => x,
                Err(e) => {
                    PceEventsReadFailed {
                        source: &self.id,
                        error: &e,
                        from: &a,
                        until: &b,
                    }
                    .emit(cx.counters());
                    return Cycle::Done;
                }
            };
            if full {
                if (b - a).num_milliseconds() > MIN_SPAN_MS {
                    let mid = a + (b - a) / 2;
                    todo.push((mid + chrono::Duration::milliseconds(1), b));
                    todo.push((a, mid));
                    continue;
                }
                tracing::warn!(source = %self.id, at = %a, max_results = self.cfg.max_results, "more events in one millisecond than max_results; some may be missing (raise max_results)");
            }
            let fresh = self.settle(cx, state, records);
            let (guard, ack) = ack_pair();
            let events: Vec<Arc<Event>> = fresh
                .iter()
                .map(|r| {
                    Arc::new(
                        Event::from_record(r.data.clone(), self.id.clone(), now).with_ack(&guard),
                    )
                })
                .collect();
            drop(guard);
            if !send_batches(cx, events).await {
                return Cycle::Stopped;
            }
            // Wait until every sink has written them out (or a stage dropped them on
            // purpose). The graph drains on shutdown, so this also ends then.
            if !ack.delivered().await {
                EventsNotDelivered {
                    source: &self.id,
                    from: &a,
                    until: &b,
                }
                .emit(cx.counters());
                return Cycle::Done;
            }
            let late: Vec<Timestamp> = fresh.iter().filter(|r| r.at < from).map(|r| r.at).collect();
            if let Some(oldest) = late.iter().min() {
                EventsVisibleLate {
                    source: &self.id,
                    events: late.len(),
                    lag: (now - *oldest).to_std().unwrap_or_default(),
                    overlap: &self.cfg.overlap,
                }
                .emit(cx.counters());
            }
            // Delivered: now, and only now, they are done.
            for r in fresh {
                state.recent.insert(r.href, r.at);
            }
            state.watermark = state.watermark.max(b);
            // The hrefs behind the overlap are kept as far as it is read again (see
            // above).
            state.prune(state.watermark - overlap - self.audit_depth());
            self.save(cx, state).await;
        }
        Cycle::Done
    }

    /// Parses, sorts and de-duplicates one settled page; sets aside unusable records.
    fn settle(
        &mut self,
        cx: &SourceContext,
        state: &EventsCheckpoint,
        records: Vec<Value>,
    ) -> Vec<Read> {
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for data in records {
            match parse(&data) {
                Ok((href, at)) => good.push(Read { href, at, data }),
                Err(reason) => {
                    let raw = cut(&data.to_string());
                    if self.rejected_seen.len() >= REJECTED_MEMORY {
                        self.rejected_seen.clear();
                    }
                    if self.rejected_seen.insert(raw.clone()) {
                        bad.push(RejectedRecord {
                            time: cx.now(),
                            source: self.id.to_string(),
                            location: Some(format!("{}/events", self.client.api_base())),
                            line: None,
                            reason,
                            raw,
                        });
                    }
                }
            }
        }
        if !bad.is_empty() {
            set_aside(&mut self.rejected, cx.counters(), bad);
        }
        good.sort_by_key(|r| r.at);
        let mut seen = HashSet::new();
        good.retain(|r| !state.recent.contains_key(&r.href) && seen.insert(r.href.clone()));
        good
    }
}

/// Every event of `cfg`'s kinds in `[a, b]`, over one query per configured type; whether
/// any page was full.
pub(crate) async fn fetch(
    client: &PceClient,
    cfg: &PceEventsConfig,
    a: Timestamp,
    b: Timestamp,
) -> Result<(Vec<Value>, bool), PceError> {
    let base = EventQuery {
        since: Some(a),
        until: Some(b),
        event_types: Vec::new(),
        severity: cfg.severity.map(|s| s.as_str().to_string()),
        status: cfg.status.map(|s| s.as_str().to_string()),
        max_results: Some(cfg.max_results),
    };
    let queries: Vec<EventQuery> = match &cfg.event_types {
        Some(types) if !types.is_empty() => types
            .iter()
            .map(|t| EventQuery {
                event_types: vec![t.clone()],
                ..base.clone()
            })
            .collect(),
        _ => vec![base],
    };
    let mut all = Vec::new();
    let mut full = false;
    for q in &queries {
        let page = client.events(q).await?;
        full |= q.page_is_full(page.len());
        all.extend(page);
    }
    Ok((all, full))
}

/// Every event of `cfg`'s kinds in `[a, b]`, a full page narrowed until none is (as the
/// source reads), in time order, each href once. Records without an href or a time are
/// left out and counted in the second value.
pub(crate) async fn read_range(
    client: &PceClient,
    cfg: &PceEventsConfig,
    a: Timestamp,
    b: Timestamp,
) -> Result<(Vec<(Timestamp, Value)>, u64), PceError> {
    let mut todo = vec![(a, b)];
    let mut good = Vec::new();
    let mut unusable = 0;
    let mut seen = HashSet::new();
    while let Some((a, b)) = todo.pop() {
        let (records, full) = fetch(client, cfg, a, b).await?;
        if full && (b - a).num_milliseconds() > MIN_SPAN_MS {
            let mid = a + (b - a) / 2;
            todo.push((mid + chrono::Duration::milliseconds(1), b));
            todo.push((a, mid));
            continue;
        }
        for data in records {
            match parse(&data) {
                Ok((href, at)) => {
                    if seen.insert(href) {
                        good.push((at, data));
                    }
                }
                Err(_) => unusable += 1,
            }
        }
    }
    good.sort_by_key(|(at, _)| *at);
    Ok((good, unusable))
}

/// The identity and time of an event, or why it cannot be used.
fn parse(data: &Value) -> Result<(String, Timestamp), String> {
    let Some(obj) = data.as_object() else {
        return Err("an event that is not a JSON object".to_string());
    };
    let href = match obj.get("href") {
        Some(Value::String(h)) if !h.is_empty() => h.clone(),
        _ => return Err("an event without an href".to_string()),
    };
    let at = match obj.get("timestamp") {
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("event {href}: timestamp {t:?} is not RFC 3339: {e}"))?,
        _ => return Err(format!("event {href} has no timestamp")),
    };
    Ok((href, at))
}

/// At most 64 KiB of `text`, cut on a character boundary.
fn cut(text: &str) -> String {
    const MAX: usize = 64 * 1024;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Source for PceEventsSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_documented_variant_parses() {
        let variants = [
            json!({"href": "/orgs/1/events/a", "timestamp": "2026-03-02T09:00:00.123Z",
                   "status": null, "action": null, "created_by": {"system": {}}}),
            json!({"href": "/system_events/b", "timestamp": "2026-03-02T09:00:00.123Z",
                   "created_by": {"agent": {"href": "/orgs/1/agents/1", "hostname": "h"},
                                  "ven": {"href": "/orgs/1/vens/1", "hostname": "h"}},
                   "action": {"src_ip": "FILTERED", "api_endpoint": "FILTERED"}}),
            json!({"href": "/orgs/1/events/c", "timestamp": "2026-03-02T09:00:00Z",
                   "created_by": {"container_cluster": {"href": "/x", "name": "k"}},
                   "notifications": (0..500).map(|i| json!({"uuid": i, "notification_type": "sec_policy.workload_policy_changed"})).collect::<Vec<_>>()}),
            json!({"href": "/orgs/1/events/d", "timestamp": "2026-03-02T09:00:00.000+00:00"}),
        ];
        for v in &variants {
            assert!(parse(v).is_ok(), "{v}");
        }
        assert!(parse(&json!({"timestamp": "2026-03-02T09:00:00Z"})).is_err());
        assert!(parse(&json!({"href": "/orgs/1/events/e"})).is_err());
        assert!(parse(&json!({"href": "/orgs/1/events/e", "timestamp": "yesterday"})).is_err());
        assert!(parse(&json!({"href": 5, "timestamp": "2026-03-02T09:00:00Z"})).is_err());
        assert!(parse(&json!([1])).is_err());
    }

    #[test]
    fn long_records_are_cut_on_a_character_boundary() {
        let s = "é".repeat(40_000);
        let c = cut(&s);
        assert!(c.len() <= 64 * 1024 && s.starts_with(&c));
    }
}
