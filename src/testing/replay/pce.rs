//! `vigil replay --pce`: a PCE connection's traffic and audit events over a time range,
//! read through the real client as the sources read them.
//!
//! Traffic is read slice by slice, `[from, from + interval)` onwards (the shortest
//! `interval` of the connection's `pce_traffic` sources, the last slice ending at `to`),
//! with the one shared query a connection's hub asks (the union of the sources' policy
//! decisions and narrowing), each row counted through a flow ledger as the hub counts it,
//! and each flow handed to the sources that can use it when the hub would have read its
//! slice: at the slice's end plus `settle`. Audit events are read an hour at a time per
//! `pce_events` source (its event types, severity and status), full pages narrowed as
//! the source narrows them, each handed on at its own time.
//!
//! What depends on when events arrive rather than on their own time — an episode resolved
//! after `resolve_after` of quiet, a script's timer — is decided as if every slice
//! arrived as soon as it was due and every audit event at its own time. A daemon that
//! read a slice late (a slow query, a PCE that was down) may have resolved such an
//! episode a little differently.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::{Head, ReplayError};
use crate::components::SourceConfig;
use crate::config::Config;
use crate::event::{Event, Timestamp};
use crate::pce::client::{PceClient, PceError};
use crate::pce::names::NameCache;
use crate::sources::pce_events::{PceEventsConfig, read_range};
use crate::sources::pce_traffic::slice::{Plan, SliceRead, fmt_time, route_of};
use crate::sources::pce_traffic::{Ledger, Route};

/// How much of the audit events one request reads (full pages are narrowed further).
const EVENTS_CHUNK: chrono::Duration = chrono::Duration::hours(1);

/// The PCE range to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct PceRange {
    /// The connection (under `connections: pce:`).
    pub connection: String,
    /// The start of the range (inclusive).
    pub from: Timestamp,
    /// The end of the range (exclusive).
    pub to: Timestamp,
}

/// What was read from the PCE.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PceReport {
    /// The connection.
    pub connection: String,
    /// Traffic slices read.
    pub slices: u64,
    /// Slices whose result held fewer flows than matched (`max_results`).
    pub truncated_slices: u64,
    /// Flow events handed on (rows already counted in an earlier slice are not).
    pub flows: u64,
    /// Audit events handed on (each source's own).
    pub events: u64,
    /// Audit event records without an href or a time, left out.
    pub unusable_events: u64,
}

/// A tokio runtime for the client's calls, driven from the replay's loop.
pub(super) type Runtime = Arc<tokio::runtime::Runtime>;

/// A source fed with the connection's flows, and the flows it can use.
struct TrafficTarget {
    pipeline: usize,
    source: String,
    route: Route,
}

/// The traffic of one connection, slice by slice.
pub(super) struct TrafficFeed {
    rt: Runtime,
    client: PceClient,
    names: Arc<NameCache>,
    connection: String,
    /// The hub's id, the flows' source (as live).
    id: Arc<str>,
    plan: Plan,
    ledger: Ledger,
    /// The start of the next slice.
    cursor: Timestamp,
    to: Timestamp,
    /// The slice being read, and its end.
    read: Option<(SliceRead, Timestamp)>,
    targets: Vec<TrafficTarget>,
    pub(super) head: Option<Head>,
}

/// One `pce_events` source's audit events, an hour at a time.
pub(super) struct EventsFeed {
    rt: Runtime,
    client: PceClient,
    cfg: PceEventsConfig,
    pipeline: usize,
    source: String,
    id: Arc<str>,
    cursor: Timestamp,
    to: Timestamp,
    buffer: VecDeque<(Timestamp, Value)>,
    pub(super) head: Option<Head>,
}

fn pce_error(connection: &str, e: PceError) -> ReplayError {
    ReplayError::Pce {
        connection: connection.to_string(),
        message: e.to_string(),
    }
}

/// The feeds of `range`: one for the connection's traffic (if a `pce_traffic` source
/// reads it) and one per `pce_events` source reading it. `own_lists`: the connection is
/// the only one whose IP lists filters can name (as live).
pub(super) fn feeds(
    config: &Config,
    range: &PceRange,
    client: &PceClient,
    names: &Arc<NameCache>,
    rt: &Runtime,
) -> Result<(Option<TrafficFeed>, Vec<EventsFeed>), ReplayError> {
    let conn = range.connection.as_str();
    let mut traffic = Vec::new();
    let mut events = Vec::new();
    for (pi, p) in config.pipelines.iter().enumerate() {
        for (name, src) in &p.config.sources {
            match src {
                SourceConfig::PceTraffic(c) if c.connection == conn => {
                    let readers = p.config.filter_readers(name);
                    let restriction = c.restriction(readers.as_deref(), true);
                    let route = route_of(c, c.routed_by(readers.as_deref()));
                    traffic.push((pi, name.clone(), c.clone(), restriction, route));
                }
                SourceConfig::PceEvents(c) if c.connection == conn => {
                    events.push(EventsFeed {
                        rt: rt.clone(),
                        client: client.clone(),
                        cfg: c.clone(),
                        pipeline: pi,
                        source: name.clone(),
                        id: format!("{}.{name}", p.config.name).into(),
                        cursor: range.from,
                        to: range.to,
                        buffer: VecDeque::new(),
                        head: None,
                    });
                }
                _ => {}
            }
        }
    }
    if traffic.is_empty() && events.is_empty() {
        return Err(ReplayError::Target(format!(
            "no pce_traffic or pce_events source of the pipelines reads connection `{conn}`"
        )));
    }
    let traffic = Plan::of(traffic.iter().map(|(_, _, c, r, _)| (c, r))).map(|plan| TrafficFeed {
        rt: rt.clone(),
        client: client.clone(),
        names: names.clone(),
        connection: conn.to_string(),
        id: format!("pce_traffic:{conn}").into(),
        ledger: Ledger::new(plan.flow_memory, plan.max_flows),
        plan,
        cursor: range.from,
        to: range.to,
        read: None,
        targets: traffic
            .into_iter()
            .map(|(pipeline, source, _, _, route)| TrafficTarget {
                pipeline,
                source,
                route,
            })
            .collect(),
        head: None,
    });
    Ok((traffic, events))
}

impl TrafficFeed {
    /// The pipelines it feeds.
    pub(super) fn pipelines(&self) -> impl Iterator<Item = usize> + '_ {
        self.targets.iter().map(|t| t.pipeline)
    }

    /// Reads on until a flow some source can use (or the range ends).
    pub(super) fn advance(&mut self, report: &mut PceReport) -> Result<(), ReplayError> {
        self.head = None;
        loop {
            let Some((read, end)) = &mut self.read else {
                if self.cursor >= self.to {
                    return Ok(());
                }
                let end = crate::time::later_by(self.cursor, self.plan.interval).min(self.to);
                let ingest = crate::time::later_by(end, self.plan.settle);
                let opened = self.rt.block_on(SliceRead::open(
                    &self.client,
                    &self.connection,
                    &self.plan,
                    &self.names,
                    &self.ledger,
                    (self.cursor, end),
                    self.id.clone(),
                    ingest,
                ));
                let (read, _) = opened.map_err(|e| pce_error(&self.connection, e))?;
                if read.truncated() {
                    report.truncated_slices += 1;
                    tracing::warn!(
                        connection = %self.connection, start = %fmt_time(&self.cursor), end = %fmt_time(&end),
                        "replay: slice truncated (more flows matched than max_results); its flows are marked vigil.truncated"
                    );
                }
                self.read = Some((read, end));
                continue;
            };
            let end = *end;
            match self.rt.block_on(read.next(&self.ledger)) {
                Err(e) => return Err(pce_error(&self.connection, e)),
                Ok(Some(event)) => {
                    let events: Vec<(usize, String, Event)> = self
                        .targets
                        .iter()
                        .filter(|t| t.route.wants(&event))
                        .map(|t| (t.pipeline, t.source.clone(), event.clone()))
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    report.flows += 1;
                    self.head = Some(Head {
                        time: crate::time::later_by(end, self.plan.settle),
                        events,
                    });
                    return Ok(());
                }
                Ok(None) => {
                    let Some((read, _)) = self.read.take() else {
                        continue;
                    };
                    let (pending, short) = read.finish();
                    if short {
                        report.truncated_slices += 1;
                    }
                    self.ledger.commit(pending);
                    report.slices += 1;
                    self.cursor = end;
                }
            }
        }
    }
}

impl EventsFeed {
    /// The pipeline it feeds.
    pub(super) fn pipeline(&self) -> usize {
        self.pipeline
    }

    /// The next event (`head` is `None` at the end of the range).
    pub(super) fn advance(&mut self, report: &mut PceReport) -> Result<(), ReplayError> {
        self.head = None;
        loop {
            if let Some((at, data)) = self.buffer.pop_front() {
                report.events += 1;
                let event = Event::from_record(data, self.id.clone(), at);
                self.head = Some(Head {
                    time: at,
                    events: vec![(self.pipeline, self.source.clone(), event)],
                });
                return Ok(());
            }
            if self.cursor >= self.to {
                return Ok(());
            }
            let end = (self.cursor + EVENTS_CHUNK).min(self.to);
            // The events API's range is inclusive; the next chunk starts at `end`.
            let last = end - chrono::Duration::milliseconds(1);
            let (records, unusable) = self
                .rt
                .block_on(read_range(&self.client, &self.cfg, self.cursor, last))
                .map_err(|e| pce_error(&self.cfg.connection, e))?;
            report.unusable_events += unusable;
            self.buffer.extend(records);
            self.cursor = end;
        }
    }
}
