//! `decode: pce`: what an Illumio PCE exports over syslog, as the same events the REST
//! sources make.
//!
//! A PCE message is an RFC 5424 envelope (`[meta sequenceId="…"]`), a text prefix
//! (`sec=… sev=… pid=… tid=… rid=…`) and a JSON record:
//!
//! - app name `illumio_pce/collector`: a **traffic flow summary** (JSON `version` 4). It
//!   becomes a flow shaped like a `pce_traffic` row, enriched by the same code
//!   ([`crate::sources::pce_traffic::enrich_flow`]): `src`/`dst` `{ip, workload {href,
//!   hostname, labels}}` with `labels` (key → value) and `ip_list_names`, `service {port,
//!   proto, process_name, user_name, windows_service_name}`, `num_connections` (`count`),
//!   `policy_decision` (`pd` 0–3 → `allowed`, `potentially_blocked`, `blocked`,
//!   `unknown`), `flow_direction` (`dir`), `state`, `timestamp_range` (`last_detected` =
//!   `time`, `first_detected` = `time − tdms`, else `time − interval_sec`), and the byte
//!   counters: totals (`tbi`/`tbo`, `dst_tbi`/`dst_tbo` from 20.2) as the lifetime
//!   counters `dst_bi`/`dst_bo`, and the interval's deltas (`dbi`/`dbo`,
//!   `dst_dbi`/`dst_dbo`) as `dbi`/`dbo` with `ddms`, which the `bandwidth` stage takes as
//!   they are (exact). Fields the summary has and a REST row has not (`interval_sec`,
//!   `tdms`, `class`, …) are kept at the top level as sent. The event time is `time`.
//! - any other app name: an **audit event** (JSON `version` 2), kept as the PCE sent it
//!   with `time` renamed `timestamp` (as the REST API names it), so rules written for
//!   `pce_events` match.
//!
//! Both carry `vigil.source_type: syslog` and `vigil.syslog {host, app, sequence_id}`.
//!
//! **Sequence numbers.** Each PCE node numbers its messages (`sequenceId`). When a node's
//! number jumps by more than one, the messages between were lost (UDP, a full buffer, a
//! dropped connection): the decoder raises the internal alert `vigil.syslog_gap` naming
//! the node and how many are missing. A number at most [`REORDER_WINDOW`] lower is a
//! message overtaken on the way (UDP; if its number was reported missing, that report
//! was one too many), a far lower one the PCE restarting its count, an equal one a repeat:
//! none is a gap. At most `max_nodes` nodes are followed; past
//! that the one heard from least recently is forgotten (counted in
//! [`PceStats::nodes_evicted`]).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{DecodeError, Decoder, Message};
use crate::event::{Alert, AlertStatus, AlertWindow, Event, Severity, Timestamp};
use crate::pce::names::Names;
use crate::sources::internal::InternalAlerts;
use crate::sources::pce_traffic::enrich_flow;

/// The app name of the PCE's traffic flow summaries.
pub const FLOW_APP: &str = "illumio_pce/collector";
/// The JSON `version` of the flow summaries this decoder reads.
pub const FLOW_VERSION: u64 = 4;
/// The JSON `version` of the audit events this decoder reads.
pub const EVENT_VERSION: u64 = 2;
/// How far below a node's last sequence number a message is taken for one overtaken on
/// the way rather than the PCE counting from the start again.
pub const REORDER_WINDOW: u64 = 64;
/// How many PCE nodes' sequence numbers are followed by default.
pub const DEFAULT_MAX_NODES: usize = 1024;

/// What the PCE decoder has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PceStats {
    /// Flow summaries decoded.
    pub flows: u64,
    /// Audit events decoded.
    pub events: u64,
    /// Messages that were not PCE records (each also returned as an error).
    pub malformed: u64,
    /// Of those, records of a JSON `version` this decoder does not read.
    pub unknown_version: u64,
    /// Gaps found in the nodes' sequence numbers (each raised `vigil.syslog_gap`).
    pub gaps: u64,
    /// Messages missing in those gaps, in all.
    pub missing: u64,
    /// Times a node's sequence number went down far (a PCE restart; not a gap).
    pub restarts: u64,
    /// Messages a little older than their node's last (overtaken on the way).
    pub late: u64,
    /// Nodes forgotten to stay within `max_nodes`.
    pub nodes_evicted: u64,
}

/// The last sequence number of one PCE node.
#[derive(Debug, Clone, Copy)]
struct Seq {
    last: u64,
    /// When it was last heard from (the decoder's message count), for eviction.
    heard: u64,
}

/// Decodes PCE syslog exports (see the module documentation).
#[derive(Debug)]
pub struct PceDecoder {
    internal: InternalAlerts,
    max_nodes: usize,
    nodes: HashMap<String, Seq>,
    tick: u64,
    stats: PceStats,
    /// Names for the flows' enrichment: none (syslog records carry labels as key → value).
    names: Names,
}

impl PceDecoder {
    /// A decoder raising its gap alerts on `internal`, following at most `max_nodes`
    /// nodes (at least one).
    pub fn new(internal: InternalAlerts, max_nodes: usize) -> PceDecoder {
        PceDecoder {
            internal,
            max_nodes: max_nodes.max(1),
            nodes: HashMap::new(),
            tick: 0,
            stats: PceStats::default(),
            names: Names::default(),
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> PceStats {
        self.stats
    }

    /// How many nodes' sequence numbers it holds.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn malformed(&mut self, why: String) -> DecodeError {
        self.stats.malformed += 1;
        DecodeError::Malformed(why)
    }

    /// Follows `node`'s sequence number `seq`; raises `vigil.syslog_gap` on a gap.
    fn follow(&mut self, node: &str, seq: u64, msg: &Message<'_>) {
        self.tick += 1;
        let tick = self.tick;
        let previous = match self.nodes.get_mut(node) {
            Some(s) => {
                let last = s.last;
                s.heard = tick;
                // A little lower: a message overtaken on the way (UDP); the node's
                // sequence goes on from `last`.
                if seq < last && last - seq <= REORDER_WINDOW {
                    self.stats.late += 1;
                    return;
                }
                s.last = seq;
                Some(last)
            }
            None => {
                if self.nodes.len() >= self.max_nodes {
                    let oldest = self
                        .nodes
                        .iter()
                        .min_by_key(|(_, s)| s.heard)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.nodes.remove(&k);
                        self.stats.nodes_evicted += 1;
                    }
                }
                self.nodes.insert(
                    node.to_string(),
                    Seq {
                        last: seq,
                        heard: tick,
                    },
                );
                None
            }
        };
        let Some(last) = previous else { return };
        if seq < last {
            self.stats.restarts += 1;
            tracing::debug!(source = %msg.source, node, last, seq, "a PCE node's syslog sequence started again");
            return;
        }
        if seq <= last.saturating_add(1) {
            return;
        }
        let missing = seq - last - 1;
        self.stats.gaps += 1;
        self.stats.missing = self.stats.missing.saturating_add(missing);
        tracing::warn!(source = %msg.source, node, missing, after = last, next = seq, peer = %msg.peer, "messages from a PCE node were lost on the way (syslog sequence gap)");
        self.internal.publish(gap_alert(
            msg.received,
            msg.source,
            node,
            last,
            seq,
            missing,
        ));
    }

    fn flow(
        &mut self,
        rec: Map<String, Value>,
        syslog: Value,
        msg: &Message<'_>,
    ) -> Result<Event, DecodeError> {
        let (flow, at) = flow_record(rec).map_err(|e| self.malformed(e))?;
        // The REST sources' enrichment: `labels` maps, `ip_list_names`, `vigil`.
        let flow = enrich_flow(flow, &self.names, &vigil(syslog));
        let mut event = Event::from_record(flow, msg.source.clone(), msg.received);
        event.meta.time = at;
        self.stats.flows += 1;
        Ok(event)
    }

    fn event(
        &mut self,
        mut rec: Map<String, Value>,
        syslog: Value,
        msg: &Message<'_>,
    ) -> Result<Event, DecodeError> {
        let href = match rec.get("href") {
            Some(Value::String(h)) if !h.is_empty() => h.clone(),
            _ => return Err(self.malformed("a PCE event without an href".into())),
        };
        let time = rec.remove("time").or_else(|| rec.remove("timestamp"));
        let at = match time.as_ref().and_then(Value::as_str).map(parse_time) {
            Some(Some(t)) => t,
            _ => {
                return Err(self.malformed(format!("PCE event {href} has no RFC 3339 `time`")));
            }
        };
        if let Some(t) = time {
            rec.insert("timestamp".into(), t);
        }
        rec.insert("vigil".into(), vigil(syslog));
        let mut event = Event::from_record(Value::Object(rec), msg.source.clone(), msg.received);
        event.meta.time = at;
        self.stats.events += 1;
        Ok(event)
    }
}

/// The `vigil` field of a decoded record.
fn vigil(syslog: Value) -> Value {
    json!({"source_type": "syslog", "decoder": "pce", "syslog": syslog})
}

impl Decoder for PceDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let m = msg.parsed;
        let node = match m.hostname {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => msg.peer.ip().to_string(),
        };
        let sequence = sequence_id(m);
        // A message that arrived counts for the sequence even when its record is unusable:
        // only messages that never came make a gap.
        if let Some(seq) = sequence {
            self.follow(&node, seq, msg);
        }
        let event = self.record(msg, node, sequence)?;
        out.push(event);
        Ok(())
    }
}

impl PceDecoder {
    /// The event of one message's record.
    fn record(
        &mut self,
        msg: &Message<'_>,
        node: String,
        sequence: Option<u64>,
    ) -> Result<Event, DecodeError> {
        let m = msg.parsed;
        let app = m.appname.unwrap_or("");
        let text = m.msg;
        // The record is the JSON after the `sec=… sev=… pid=… tid=… rid=…` prefix.
        let Some(start) = text.find('{') else {
            return Err(self.malformed(format!(
                "message from {app:?} carries no JSON record (is the source's `decode` right?)"
            )));
        };
        let rec: Map<String, Value> = match serde_json::from_str(&text[start..]) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return Err(self.malformed(format!(
                    "message from {app:?}: the record is not a JSON object"
                )));
            }
            Err(e) => {
                return Err(self.malformed(format!(
                    "message from {app:?}: the record is not valid JSON (at line {} column {})",
                    e.line(),
                    e.column()
                )));
            }
        };
        let is_flow = app == FLOW_APP;
        let want = if is_flow { FLOW_VERSION } else { EVENT_VERSION };
        let version = rec.get("version").and_then(Value::as_u64);
        if version != Some(want) {
            self.stats.unknown_version += 1;
            let what = if is_flow {
                "traffic flow summary"
            } else {
                "audit event"
            };
            let got = rec
                .get("version")
                .map_or_else(|| "none".to_string(), Value::to_string);
            return Err(self.malformed(format!(
                "PCE {what} of version {got}: vigil reads version {want} (from app {app:?})"
            )));
        }
        let syslog = json!({"host": node, "app": app, "sequence_id": sequence});
        if is_flow {
            self.flow(rec, syslog, msg)
        } else {
            self.event(rec, syslog, msg)
        }
    }
}

/// `[meta sequenceId="…"]`, when present and a number.
fn sequence_id(m: &syslog_loose::Message<&str>) -> Option<u64> {
    m.structured_data
        .iter()
        .filter(|e| e.id == "meta")
        .flat_map(|e| e.params.iter())
        .find(|(k, _)| *k == "sequenceId")
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn parse_time(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn stamp(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The policy decision names of REST flows, by the summaries' `pd`.
pub fn policy_decision(pd: u64) -> Option<&'static str> {
    match pd {
        0 => Some("allowed"),
        1 => Some("potentially_blocked"),
        2 => Some("blocked"),
        3 => Some("unknown"),
        _ => None,
    }
}

/// The REST `state` of a summary's one-letter state.
fn state_name(s: &str) -> Option<&'static str> {
    match s {
        "A" => Some("active"),
        "C" => Some("closed"),
        "T" => Some("timed out"),
        "S" => Some("snapshot"),
        "N" => Some("new"),
        _ => None,
    }
}

/// A flow summary as a REST flow row (not yet enriched), and its time.
fn flow_record(mut r: Map<String, Value>) -> Result<(Value, Timestamp), String> {
    let time = r.remove("time").or_else(|| r.remove("timestamp"));
    let Some(at) = time.as_ref().and_then(Value::as_str).and_then(parse_time) else {
        return Err("a PCE flow summary without an RFC 3339 `time`".into());
    };
    let mut take = |k: &str| r.remove(k);
    let mut flow = Map::new();
    for side in ["src", "dst"] {
        let mut ep = Map::new();
        if let Some(ip) = take(&format!("{side}_ip")) {
            ep.insert("ip".into(), ip);
        }
        let href = take(&format!("{side}_href"));
        let hostname = take(&format!("{side}_hostname"));
        let labels = take(&format!("{side}_labels"));
        if href.is_some() || hostname.is_some() || labels.is_some() {
            let mut wl = Map::new();
            if let Some(h) = href {
                wl.insert("href".into(), h);
            }
            if let Some(h) = hostname {
                wl.insert("hostname".into(), h);
            }
            let list: Vec<Value> = match labels {
                Some(Value::Object(m)) => m
                    .into_iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(format!(
                        "a PCE flow summary whose `{side}_labels` is not a key → value map"
                    ));
                }
            };
            wl.insert("labels".into(), Value::Array(list));
            ep.insert("workload".into(), Value::Object(wl));
        }
        flow.insert(side.into(), Value::Object(ep));
    }
    let mut service = Map::new();
    if let Some(p) = take("dst_port").or_else(|| take("dst_prt")) {
        service.insert("port".into(), p);
    }
    for (from, to) in [
        ("proto", "proto"),
        ("pn", "process_name"),
        ("un", "user_name"),
        ("sn", "windows_service_name"),
    ] {
        if let Some(v) = take(from) {
            service.insert(to.into(), v);
        }
    }
    flow.insert("service".into(), Value::Object(service));
    if let Some(c) = take("count") {
        flow.insert("num_connections".into(), c);
    }
    match take("pd") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let name = v.as_u64().and_then(policy_decision).ok_or_else(|| {
                format!("a PCE flow summary with policy decision `pd` {v}: expected 0 to 3")
            })?;
            flow.insert("policy_decision".into(), name.into());
        }
    }
    if let Some(d) = take("dir") {
        let dir = match d.as_str() {
            Some("I") => Value::from("inbound"),
            Some("O") => Value::from("outbound"),
            _ => d,
        };
        flow.insert("flow_direction".into(), dir);
    }
    if let Some(s) = take("state") {
        let st = s.as_str().and_then(state_name).map_or(s, Value::from);
        flow.insert("state".into(), st);
    }
    // Totals are the connection's lifetime counters, as REST rows carry them.
    for (names, to) in [
        (["dst_tbi", "tbi"], "dst_bi"),
        (["dst_tbo", "tbo"], "dst_bo"),
    ] {
        if let Some(v) = names.iter().find_map(|k| take(k)) {
            flow.insert(to.into(), v);
        }
    }
    // Deltas: the bytes of this interval, read as they are by `bandwidth`.
    for (names, to) in [(["dst_dbi", "dbi"], "dbi"), (["dst_dbo", "dbo"], "dbo")] {
        if let Some(v) = names.iter().find_map(|k| take(k)) {
            flow.insert(to.into(), v);
        }
    }
    let back_ms = r
        .get("tdms")
        .and_then(Value::as_i64)
        .or_else(|| {
            r.get("interval_sec")
                .and_then(Value::as_i64)
                .map(|s| s.saturating_mul(1000))
        })
        .unwrap_or(0)
        .max(0);
    let first = at - chrono::Duration::milliseconds(back_ms);
    flow.insert(
        "timestamp_range".into(),
        json!({"first_detected": stamp(&first), "last_detected": stamp(&at)}),
    );
    // What a REST row has no place for stays as sent.
    for (k, v) in r {
        flow.entry(k).or_insert(v);
    }
    Ok((Value::Object(flow), at))
}

/// The `vigil.syslog_gap` alert.
fn gap_alert(at: Timestamp, source: &str, node: &str, last: u64, next: u64, missing: u64) -> Alert {
    let window = AlertWindow { start: at, end: at };
    let group_key = format!("source={source},node={node}");
    let mut fields = Map::new();
    fields.insert("source".into(), source.into());
    fields.insert("node".into(), node.into());
    fields.insert("missing".into(), missing.into());
    fields.insert("after_sequence_id".into(), last.into());
    fields.insert("next_sequence_id".into(), next.into());
    Alert {
        id: Alert::make_id(
            "vigil",
            "syslog_gap",
            &format!("{group_key},after={last}"),
            &window,
        ),
        status: AlertStatus::Firing,
        pipeline: "vigil".into(),
        stage: "syslog_gap".into(),
        severity: Severity::Medium,
        title: format!(
            "vigil: {missing} syslog message(s) from PCE node {node} were lost (source {source})"
        ),
        summary: format!(
            "PCE node {node} numbered its messages {last} then {next}: {missing} never arrived at source {source}. Events or flows in them are missing; check the network path, or use TCP."
        ),
        group: json!({"source": source, "node": node}),
        group_key,
        value: missing as f64,
        threshold: 1.0,
        unit: None,
        estimate: None,
        window,
        first_seen: at,
        last_seen: at,
        updates: 0,
        episode: false,
        samples: Vec::new(),
        top: None,
        fields,
    }
}

#[cfg(test)]
mod tests;
