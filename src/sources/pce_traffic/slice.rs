//! Reading one slice of a connection's traffic: the shared query (decisions and
//! narrowing), its download read as it arrives, each row counted through the flow ledger
//! and made into an event. The hub reads every slice through this, and `vigil replay
//! --pce` reads a time range through it slice by slice, so both make the same events of
//! the same rows.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::config::PceTrafficConfig;
use super::hub::{LabelCache, enrich_tape};
use super::ledger::{Ledger, Pending, Sighting};
use super::narrow::{Narrowing, Restriction};
use super::route::Route;
use crate::event::{Event, FieldPath, Timestamp, time_from_field};
use crate::pce::client::{PceClient, PceError, PolicyDecision, TrafficQuery, TrafficStream};
use crate::pce::names::{NameCache, Names};
use crate::stages::filter::FilterConfig;

/// Where a flow says when it was last detected (its event time).
static LAST_DETECTED: std::sync::LazyLock<Option<FieldPath>> =
    std::sync::LazyLock::new(|| FieldPath::parse("timestamp_range.last_detected").ok());

/// How the sources of one connection read it, combined: the shortest interval, the
/// longest settle, the union of what they ask for.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) interval: chrono::Duration,
    pub(crate) settle: chrono::Duration,
    pub(crate) max_results: u32,
    pub(crate) names_refresh: chrono::Duration,
    pub(crate) lookback: chrono::Duration,
    /// Empty: every decision.
    pub(crate) decisions: Vec<PolicyDecision>,
    /// What to ask for: the union of the sources' restrictions (resolved to hrefs
    /// through the name cache when each slice's query is built).
    pub(crate) restriction: Restriction,
    pub(crate) flow_memory: std::time::Duration,
    pub(crate) max_flows: usize,
}

impl Plan {
    /// The plan of the sources `subs` (their settings and restrictions); `None` when
    /// there is none.
    pub(crate) fn of<'a>(
        subs: impl IntoIterator<Item = (&'a PceTrafficConfig, &'a Restriction)>,
    ) -> Option<Plan> {
        let to =
            |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut plan: Option<Plan> = None;
        let mut restrictions = Vec::new();
        let mut all = false;
        let mut union = Vec::new();
        for (cfg, restriction) in subs {
            restrictions.push(restriction.clone());
            let p = plan.get_or_insert_with(|| Plan {
                interval: to(cfg.interval.get()),
                settle: to(cfg.settle.get()),
                max_results: cfg.max_results,
                names_refresh: to(cfg.names_refresh.get()),
                lookback: to(cfg.lookback().unwrap_or_default()),
                decisions: Vec::new(),
                restriction: Restriction::everything(),
                flow_memory: cfg.flow_memory.get(),
                max_flows: cfg.max_flows as usize,
            });
            p.interval = p.interval.min(to(cfg.interval.get()));
            p.settle = p.settle.max(to(cfg.settle.get()));
            p.max_results = p.max_results.max(cfg.max_results);
            p.names_refresh = p.names_refresh.min(to(cfg.names_refresh.get()));
            p.lookback = p.lookback.max(to(cfg.lookback().unwrap_or_default()));
            p.flow_memory = p.flow_memory.max(cfg.flow_memory.get());
            p.max_flows = p.max_flows.max(cfg.max_flows as usize);
            match &cfg.policy_decisions {
                None => all = true,
                Some(d) => {
                    for d in d {
                        let q = d.to_query();
                        if !union.contains(&q) {
                            union.push(q);
                        }
                    }
                }
            }
        }
        let mut plan = plan?;
        plan.restriction = super::narrow::union(&restrictions);
        if plan.interval <= chrono::Duration::zero() {
            plan.interval = chrono::Duration::minutes(5);
        }
        if plan.names_refresh <= chrono::Duration::zero() {
            plan.names_refresh = chrono::Duration::minutes(10);
        }
        plan.max_flows = plan.max_flows.max(1);
        if !all {
            plan.decisions = union;
        }
        Some(plan)
    }
}

/// The route of a source: the flows its decisions and (when every reader is one) its
/// filter stages can keep.
pub(crate) fn route_of(cfg: &PceTrafficConfig, readers: Option<&[FilterConfig]>) -> Route {
    let decisions: Option<HashSet<&'static str>> = cfg
        .policy_decisions
        .as_ref()
        .map(|d| d.iter().map(|d| d.as_str()).collect());
    Route::new(decisions, readers)
}

/// One slice being read: `[start, end)` asked for as `plan` says, its rows handed out as
/// events one at a time.
pub(crate) struct SliceRead {
    download: TrafficStream,
    names: Arc<Names>,
    vigil: Arc<Value>,
    labels: LabelCache,
    pending: Pending,
    source: Arc<str>,
    ingest: Timestamp,
    /// The PCE said up front that it held fewer flows than matched.
    truncated: bool,
    read: u64,
}

impl std::fmt::Debug for SliceRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceRead")
            .field("truncated", &self.truncated)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl SliceRead {
    /// Queries `[start, end)` of `connection` through `client` and starts its download;
    /// the events are made for `source` at `ingest`. Also returns what the query was
    /// narrowed to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        client: &PceClient,
        connection: &str,
        plan: &Plan,
        names: &NameCache,
        ledger: &Ledger,
        (start, end): (Timestamp, Timestamp),
        source: Arc<str>,
        ingest: Timestamp,
    ) -> Result<(SliceRead, Narrowing), PceError> {
        let mut query = TrafficQuery::new(
            format!("vigil pce_traffic {connection}"),
            start,
            end,
            plan.max_results,
        );
        query.policy_decisions = plan.decisions.clone();
        // Label and IP list hrefs from the names as they are now.
        let names = names.snapshot();
        let narrowing = plan.restriction.query(&names);
        narrowing.apply(&mut query);
        let download = client.traffic_stream(&query).await?;
        let held = download.flows_count.unwrap_or(download.matches_count);
        let truncated = download.is_truncated(held);
        let vigil = Arc::new(json!({
            "source_type": "pce_traffic",
            "connection": connection,
            "slice": {"start": fmt_time(&start), "end": fmt_time(&end)},
            "truncated": truncated,
        }));
        let pending = ledger.begin(end, usize::try_from(held).unwrap_or(0));
        Ok((
            SliceRead {
                download,
                names,
                vigil,
                labels: LabelCache::default(),
                pending,
                source,
                ingest,
                truncated,
                read: 0,
            },
            narrowing,
        ))
    }

    /// Makes the next events as read at `ingest` (the hub: once the download started).
    pub(crate) fn set_ingest(&mut self, ingest: Timestamp) {
        self.ingest = ingest;
    }

    /// Whether the PCE said up front that the result holds fewer flows than matched
    /// (every flow is then marked `vigil.truncated`).
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// How many flows matched, and how many the result holds (if the PCE said).
    pub(crate) fn counts(&self) -> (u64, Option<u64>) {
        (self.download.matches_count, self.download.flows_count)
    }

    /// The next row's event; a row already counted (a repeat) is passed over. `None` at
    /// the end of the download.
    pub(crate) async fn next(&mut self, ledger: &Ledger) -> Result<Option<Event>, PceError> {
        while let Some(mut flow) = self.download.next().await? {
            self.read += 1;
            let sighting = self.pending.observe(ledger, &mut flow);
            match sighting {
                Sighting::Repeat => continue,
                Sighting::Continuation { total: Some(total) } => {
                    let mut vigil = Value::clone(&self.vigil);
                    if let Some(v) = vigil.as_object_mut() {
                        v.insert("num_connections_total".to_string(), Value::from(total));
                    }
                    enrich_tape(&mut flow, &self.names, &Arc::new(vigil), &mut self.labels);
                }
                _ => enrich_tape(&mut flow, &self.names, &self.vigil, &mut self.labels),
            }
            let mut event = Event::from_tape(flow, self.source.clone(), self.ingest);
            if let Some(t) = LAST_DETECTED
                .as_ref()
                .and_then(|p| p.first_in(&event))
                .and_then(|f| time_from_field(&f))
            {
                event.meta.time = t;
            }
            return Ok(Some(event));
        }
        Ok(None)
    }

    /// Ends the read: what the slice taught the ledger (to commit once its flows are
    /// delivered), and whether the result turned out short without the PCE having said
    /// so up front (its flows were handed on unmarked).
    pub(crate) fn finish(self) -> (Pending, bool) {
        let short = !self.truncated
            && self.download.flows_count.is_none()
            && self.download.is_truncated(self.read);
        (self.pending, short)
    }

    /// Rows read so far (repeats included).
    pub(crate) fn rows_read(&self) -> u64 {
        self.read
    }
}

pub(crate) fn fmt_time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
