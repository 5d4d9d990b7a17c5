//! The simulator's syslog export (`--syslog-to`): the events and traffic flow summaries it
//! serves over REST, sent as a PCE sends them, as they happen in simulated time.
//!
//! Every [`TICK_SECS`] of simulated time the exporter sends the events whose time fell in
//! the tick and one flow summary for each flow that ended in it (the flow's whole life:
//! `count`, totals `tbi`/`tbo` and the same bytes as the deltas `dbi`/`dbo` over `ddms`, so
//! a summary carries exactly what the flow's last REST row does). Messages are RFC 5424
//! like a real PCE's: app name `illumio_pce/collector` for flows and
//! `illumio_pce/agent|login|api` for events, `[meta sequenceId="…"]` numbered per node
//! (events from node `core0`, flows from `core1`), the `sec=… sev=… pid=… tid=… rid=…`
//! prefix, then the JSON (version 4 for flows, 2 for events).
//!
//! Over TCP each message is framed by octet counting (RFC 6587); over UDP it is one
//! datagram. Delivery is fire-and-forget, as a PCE's: when the receiver cannot be reached
//! the messages of that tick are dropped (logged) and their sequence numbers skipped, so
//! the receiver sees the gap; the connection is tried again next tick.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt as _;

use super::events::events_in_minute;
use super::scenario::minute_of;
use super::server::SimState;
use super::traffic::{self, Generator};

/// How often (simulated seconds) the exporter sends what happened.
pub const TICK_SECS: i64 = 10;

/// How the syslog export is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogMode {
    /// TCP with octet-counting framing (RFC 6587).
    #[default]
    Tcp,
    /// One UDP datagram per message.
    Udp,
}

impl std::str::FromStr for SyslogMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SyslogMode, String> {
        match s {
            "tcp" => Ok(SyslogMode::Tcp),
            "udp" => Ok(SyslogMode::Udp),
            _ => Err(format!("unknown syslog mode {s:?} (expected tcp or udp)")),
        }
    }
}

/// Where the simulator sends its syslog export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogExport {
    /// The receiver.
    pub to: SocketAddr,
    /// TCP or UDP.
    pub mode: SyslogMode,
    /// Whether traffic flow summaries are sent too (a PCE's
    /// `export_flow_summaries_to_syslog`), or only audit events.
    pub flow_summaries: bool,
}

/// What the export has done so far.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Ticks of simulated time handled (sent or not).
    pub ticks: AtomicU64,
    /// Messages handed to the transport.
    pub sent: AtomicU64,
    /// Messages dropped because the receiver could not be reached.
    pub dropped: AtomicU64,
}

/// The node that sends events, and the one that sends flow summaries.
const EVENT_NODE: usize = 0;
const FLOW_NODE: usize = 1;

/// The open transport.
enum Link {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
}

/// The second the export starts from: the next whole second of simulated time.
pub(crate) fn first_second(state: &SimState) -> i64 {
    state.clock.now().timestamp() + 1
}

/// Sends the export of what happens from second `t0` on; runs until aborted (the
/// simulator aborts it at shutdown).
pub(crate) async fn run(
    state: Arc<SimState>,
    export: SyslogExport,
    mut t0: i64,
    counters: Arc<ExportCounters>,
) {
    let mut link: Option<Link> = None;
    // An outage is logged once (a receiver that is not up yet would otherwise be named
    // every tick); the drops are counted all along.
    let mut in_outage = false;
    let mut ever_reached = false;
    let mut seq = [0u64; 2];
    let mut minutes = Minutes::default();
    loop {
        let t1 = t0 + TICK_SECS;
        state
            .clock
            .sleep_until(DateTime::from_timestamp(t1, 0).unwrap_or_default())
            .await;
        // Generating flows is CPU work: off the runtime's threads.
        let st = state.clone();
        let flows = export.flow_summaries;
        let Ok((messages, s, m)) = tokio::task::spawn_blocking(move || {
            let messages = tick(&st, t0, t1, &mut seq, &mut minutes, flows);
            (messages, seq, minutes)
        })
        .await
        else {
            return;
        };
        (seq, minutes) = (s, m);
        t0 = t1;
        if !messages.is_empty() {
            if link.is_none() {
                link = connect(export).await;
            }
            let n = messages.len() as u64;
            match link.as_mut() {
                None => {
                    counters.dropped.fetch_add(n, Ordering::Relaxed);
                    // A receiver not up yet (it starts after the simulator) is no news.
                    if !in_outage && ever_reached {
                        tracing::warn!(to = %export.to, dropped = n, "PCE simulator: the syslog receiver cannot be reached; messages dropped (and counted) until it can");
                    } else if !in_outage {
                        tracing::debug!(to = %export.to, dropped = n, "PCE simulator: the syslog receiver is not up yet; messages dropped (and counted)");
                    }
                    in_outage = true;
                }
                Some(l) => match send(l, export.to, &messages).await {
                    Ok(()) => {
                        counters.sent.fetch_add(n, Ordering::Relaxed);
                        if in_outage && ever_reached {
                            tracing::info!(to = %export.to, "PCE simulator: the syslog receiver is reached again");
                        }
                        in_outage = false;
                        ever_reached = true;
                    }
                    Err(e) => {
                        counters.dropped.fetch_add(n, Ordering::Relaxed);
                        if !in_outage {
                            tracing::warn!(to = %export.to, error = %e, dropped = n, "PCE simulator: sending syslog failed; messages dropped (and counted) until a reconnection");
                        }
                        in_outage = true;
                        link = None;
                    }
                },
            }
        }
        counters.ticks.fetch_add(1, Ordering::Release);
    }
}

async fn connect(export: SyslogExport) -> Option<Link> {
    let link = match export.mode {
        SyslogMode::Tcp => tokio::net::TcpStream::connect(export.to)
            .await
            .map(Link::Tcp),
        SyslogMode::Udp => {
            let any: SocketAddr = if export.to.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            tokio::net::UdpSocket::bind(any).await.map(Link::Udp)
        }
    };
    link.map_err(|e| tracing::debug!(to = %export.to, error = %e, "PCE simulator: no syslog link"))
        .ok()
}

async fn send(link: &mut Link, to: SocketAddr, messages: &[String]) -> std::io::Result<()> {
    match link {
        Link::Tcp(s) => {
            let mut buf = Vec::new();
            for m in messages {
                buf.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
            }
            s.write_all(&buf).await?;
            s.flush().await
        }
        Link::Udp(s) => {
            for m in messages {
                s.send_to(m.as_bytes(), to).await?;
            }
            Ok(())
        }
    }
}

/// The flows of the minutes a tick reads, generated once each (a flow summary is sent
/// when the flow ends, up to [`traffic::MAX_FLOW_SECS`] after its minute).
#[derive(Debug, Default)]
pub(crate) struct Minutes(std::collections::BTreeMap<i64, Vec<traffic::Flow>>);

/// The messages of `[t0, t1)` (seconds), numbered from `seq`.
pub(crate) fn tick(
    state: &SimState,
    t0: i64,
    t1: i64,
    seq: &mut [u64; 2],
    minutes: &mut Minutes,
    with_flows: bool,
) -> Vec<String> {
    let estate = state.estate();
    let fqdn = estate.pce_fqdn.clone();
    let mut out = Vec::new();
    let from = DateTime::from_timestamp(t0, 0).unwrap_or_default();
    let until = DateTime::from_timestamp(t1, 0).unwrap_or_default();
    let mut events = Vec::new();
    for m in minute_of(from)..=minute_of(until - chrono::Duration::milliseconds(1)) {
        events.extend(
            events_in_minute(&estate, state.seed, state.scenario, m)
                .into_iter()
                .filter(|e| e.at >= from && e.at < until),
        );
    }
    // What the API's writes recorded in the tick, in time order with the rest.
    let recorded = state.recorded.between(from, until);
    if !recorded.is_empty() {
        events.extend(recorded);
        events.sort_by_key(|e| e.at);
    }
    for e in events {
        let mut json = e.json;
        let app = event_app(json["event_type"].as_str().unwrap_or(""));
        if let Some(o) = json.as_object_mut() {
            if let Some(t) = o.remove("timestamp") {
                o.insert("time".into(), t);
            }
            o.insert("version".into(), json!(2));
        }
        seq[EVENT_NODE] += 1;
        out.push(message(
            e.at,
            &format!("core0.{fqdn}"),
            app,
            seq[EVENT_NODE],
            &json,
        ));
    }
    if !with_flows {
        return out;
    }
    for (at, summary) in flow_summaries(state, t0, t1, minutes) {
        seq[FLOW_NODE] += 1;
        out.push(message(
            at,
            &format!("core1.{fqdn}"),
            "illumio_pce/collector",
            seq[FLOW_NODE],
            &summary,
        ));
    }
    out
}

/// The app name a PCE logs an event type under.
fn event_app(event_type: &str) -> &'static str {
    if event_type.starts_with("user.sign") || event_type.starts_with("user.log") {
        "illumio_pce/login"
    } else if event_type.starts_with("agent")
        || event_type.starts_with("system_task")
        || event_type.starts_with("lost_agent")
    {
        "illumio_pce/agent"
    } else {
        "illumio_pce/api"
    }
}

/// One RFC 5424 message as a PCE writes it.
fn message(at: DateTime<Utc>, host: &str, app: &str, seq: u64, json: &Value) -> String {
    let ts = at.to_rfc3339_opts(SecondsFormat::Micros, false);
    let secs = at.timestamp_millis() as f64 / 1000.0;
    format!(
        "<14>1 {ts} {host} {app} 4242 - [meta sequenceId=\"{seq}\"] sec={secs:.3} sev=INFO  pid=4242 tid=1 rid=00000000-0000-4000-8000-{seq:012} {json}"
    )
}

/// The summary of every flow that ended in `[t0, t1)`, with its end time, in a fixed
/// order: the flow's last REST row, as the PCE's collector summarises it.
pub(crate) fn flow_summaries(
    state: &SimState,
    t0: i64,
    t1: i64,
    minutes: &mut Minutes,
) -> Vec<(DateTime<Utc>, Value)> {
    let estate = state.estate();
    let generator = Generator {
        estate: &estate,
        seed: state.seed,
        scenario: state.scenario,
        per_minute: state.flows_per_minute,
    };
    let secs = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
    let mut out = Vec::new();
    let first_minute = minute_of(secs(t0 - traffic::MAX_FLOW_SECS));
    // Minutes no later tick reads are forgotten: the cache holds about 12.
    minutes.0.retain(|m, _| *m >= first_minute);
    for m in first_minute..=minute_of(secs(t1 - 1)) {
        let flows = minutes.0.entry(m).or_insert_with(|| generator.minute(m));
        for f in flows.iter() {
            if f.last < t0 || f.last >= t1 {
                continue;
            }
            let mut text = String::new();
            traffic::write_flow(&estate, f, &mut text);
            let Ok(row) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            out.push((secs(f.last), summary_of(&row, f.first, f.last)));
        }
    }
    out
}

/// A REST flow row as a version-4 flow summary.
fn summary_of(row: &Value, first: i64, last: i64) -> Value {
    let mut s = Map::new();
    let ms = (last - first).max(0) * 1000;
    let put = |s: &mut Map<String, Value>, k: &str, v: &Value| {
        if !v.is_null() {
            s.insert(k.into(), v.clone());
        }
    };
    s.insert("interval_sec".into(), json!(600));
    put(&mut s, "count", &row["num_connections"]);
    for (to, from) in [
        ("tbi", "dst_bi"),
        ("tbo", "dst_bo"),
        ("dbi", "dst_bi"),
        ("dbo", "dst_bo"),
    ] {
        put(&mut s, to, &row[from]);
    }
    s.insert("ddms".into(), json!(ms));
    s.insert("tdms".into(), json!(ms));
    for side in ["src", "dst"] {
        let ep = &row[side];
        put(&mut s, &format!("{side}_ip"), &ep["ip"]);
        let wl = &ep["workload"];
        if wl.is_object() {
            put(&mut s, &format!("{side}_hostname"), &wl["hostname"]);
            put(&mut s, &format!("{side}_href"), &wl["href"]);
            let labels: Map<String, Value> = wl["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| Some((l["key"].as_str()?.to_string(), l["value"].clone())))
                .collect();
            s.insert(format!("{side}_labels"), Value::Object(labels));
        }
    }
    s.insert("class".into(), json!("U"));
    let dir = if row["flow_direction"] == "inbound" {
        "I"
    } else {
        "O"
    };
    s.insert("dir".into(), json!(dir));
    let time = DateTime::from_timestamp(last, 0).unwrap_or_default();
    s.insert(
        "time".into(),
        json!(time.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    put(&mut s, "proto", &row["service"]["proto"]);
    if row["service"]["port"].is_u64() {
        put(&mut s, "dst_port", &row["service"]["port"]);
    }
    put(&mut s, "pn", &row["service"]["process_name"]);
    put(&mut s, "un", &row["service"]["user_name"]);
    let state = match row["state"].as_str() {
        Some("active") => "A",
        Some("closed") => "C",
        Some("timed out") => "T",
        Some("snapshot") => "S",
        _ => "N",
    };
    s.insert("state".into(), json!(state));
    let pd = match row["policy_decision"].as_str() {
        Some("allowed") => 0,
        Some("potentially_blocked") => 1,
        Some("blocked") => 2,
        _ => 3,
    };
    s.insert("pd".into(), json!(pd));
    s.insert("version".into(), json!(4));
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pce::sim::scenario::SimClock;
    use crate::pce::sim::{Scenario, SimConfig};
    use crate::time::VirtualClock;
    use tokio::io::AsyncReadExt as _;

    /// Reads octet-counted frames from `buf`, leaving a partial one.
    fn frames(buf: &mut Vec<u8>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let Ok(len) = std::str::from_utf8(&buf[..sp]).unwrap().parse::<usize>() else {
                panic!("not octet counting: {:?}", String::from_utf8_lossy(buf));
            };
            if buf.len() < sp + 1 + len {
                break;
            }
            out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
            buf.drain(..sp + 1 + len);
        }
        out
    }

    #[tokio::test]
    async fn every_flow_served_over_rest_arrives_once_over_syslog() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let start: DateTime<Utc> = "2026-03-02T09:00:00.500Z".parse().unwrap();
        let clock = VirtualClock::new(start);
        let cfg = SimConfig {
            scenario: Scenario::PortScan,
            ..SimConfig::default()
        };
        let state = Arc::new(SimState::new(
            &cfg,
            SimClock::new(Arc::new(clock.clone()), 1.0),
        ));
        let t0 = first_second(&state);
        let task = tokio::spawn(run(
            state.clone(),
            SyslogExport {
                to,
                mode: SyslogMode::Tcp,
                flow_summaries: true,
            },
            t0,
            Arc::default(),
        ));
        // Twenty minutes of simulated time: exactly `ticks` ticks end by then.
        let ticks = 120;
        let end = t0 + ticks * TICK_SECS;
        clock.advance(std::time::Duration::from_secs(
            (ticks * TICK_SECS) as u64 + 1,
        ));
        // What REST serves: a query over the span, answered once every flow has ended.
        let estate = state.estate();
        let generator = Generator {
            estate: &estate,
            seed: state.seed,
            scenario: state.scenario,
            per_minute: state.flows_per_minute,
        };
        let body = json!({
            "start_date": DateTime::from_timestamp(t0 - traffic::MAX_FLOW_SECS, 0).unwrap().to_rfc3339(),
            // Past `end`: rows of flows still going at a query's end are cut there.
            "end_date": DateTime::from_timestamp(end + traffic::MAX_FLOW_SECS, 0).unwrap().to_rfc3339(),
        });
        let q = traffic::TrafficQuery::parse(&estate, &body).unwrap();
        let answered = DateTime::from_timestamp(end + 2 * traffic::MAX_FLOW_SECS, 0).unwrap();
        let rest = traffic::run_query(&generator, &q, answered, traffic::MAX_RESULTS);
        let key = |ip_s: &Value,
                   ip_d: &Value,
                   port: &Value,
                   proto: &Value,
                   last: &str,
                   n: &Value,
                   bi: &Value,
                   bo: &Value| {
            format!("{ip_s} {ip_d} {port} {proto} {last} {n} {bi} {bo}")
        };
        let mut want: Vec<String> = Vec::new();
        for f in rest.flows.iter().filter(|f| f.last >= t0 && f.last < end) {
            let mut text = String::new();
            traffic::write_flow(&estate, f, &mut text);
            let r: Value = serde_json::from_str(&text).unwrap();
            let port = if r["service"]["port"].is_u64() {
                r["service"]["port"].clone()
            } else {
                Value::Null
            };
            want.push(key(
                &r["src"]["ip"],
                &r["dst"]["ip"],
                &port,
                &r["service"]["proto"],
                r["timestamp_range"]["last_detected"].as_str().unwrap(),
                &r["num_connections"],
                &r["dst_bi"],
                &r["dst_bo"],
            ));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let (mut peer, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .expect("the simulator connects")
            .unwrap();
        let mut buf = Vec::new();
        let mut got: Vec<String> = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut task = Some(task);
        loop {
            let flows = got
                .iter()
                .filter(|m| m.contains(" illumio_pce/collector "))
                .count();
            if flows >= want.len() {
                // Everything expected is in: stop the exporter and read what it sent to the end.
                if let Some(t) = task.take() {
                    t.abort();
                    let _ = t.await;
                }
            }
            let n = match tokio::time::timeout_at(deadline, peer.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) => break,
                // Fewer than expected arrived: the comparison below says which.
                Err(_) => break,
            };
            buf.extend_from_slice(&chunk[..n]);
            got.extend(frames(&mut buf));
        }
        assert!(buf.is_empty(), "a partial frame at the end");
        let mut have: Vec<String> = Vec::new();
        let mut seqs = Vec::new();
        for m in got.iter().filter(|m| m.contains(" illumio_pce/collector ")) {
            let parsed = syslog_loose::parse_message(m, syslog_loose::Variant::RFC5424);
            assert_eq!(parsed.appname, Some("illumio_pce/collector"));
            let sd = &parsed.structured_data[0];
            seqs.push(sd.params[0].1.parse::<u64>().unwrap());
            let j: Value = serde_json::from_str(&m[m.find(" {").unwrap() + 1..]).unwrap();
            assert_eq!(j["version"], 4);
            assert!(m.contains(" sec=") && m.contains(" rid="));
            have.push(key(
                &j["src_ip"],
                &j["dst_ip"],
                j.get("dst_port").unwrap_or(&Value::Null),
                &j["proto"],
                j["time"].as_str().unwrap(),
                &j["count"],
                &j["tbi"],
                &j["tbo"],
            ));
        }
        assert!(want.len() > 100, "{} flows over REST", want.len());
        want.sort();
        have.sort();
        assert_eq!(have, want, "each flow once, with the same facts");
        // One sequence per node, without gaps.
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        // Events are sent too, from another node with its own numbering.
        let events: Vec<&String> = got.iter().filter(|m| m.contains("\"version\":2")).collect();
        assert!(!events.is_empty());
        for m in events {
            assert!(m.contains(" core0."), "{m}");
            let j: Value = serde_json::from_str(&m[m.find(" {").unwrap() + 1..]).unwrap();
            assert!(j.get("timestamp").is_none() && j["time"].is_string(), "{m}");
        }
    }

    #[test]
    fn a_summary_carries_what_the_flows_last_rest_row_does() {
        let state = SimState::new(
            &SimConfig::default(),
            SimClock::new(Arc::new(VirtualClock::new(Utc::now())), 1.0),
        );
        let t0 = 1_772_442_000;
        let summaries = flow_summaries(&state, t0, t0 + 600, &mut Minutes::default());
        assert!(!summaries.is_empty());
        for (at, s) in &summaries {
            assert!(at.timestamp() >= t0 && at.timestamp() < t0 + 600);
            assert_eq!(s["version"], 4);
            assert!(s["pd"].as_u64().unwrap() <= 3);
            assert_eq!(s["tbi"], s["dbi"]);
            assert!(s["src_ip"].is_string() && s["dst_ip"].is_string());
        }
    }

    #[test]
    fn events_the_api_recorded_are_exported_in_their_tick_in_time_order() {
        let state = SimState::new(
            &SimConfig::default(),
            SimClock::new(Arc::new(VirtualClock::new(Utc::now())), 1.0),
        );
        let t0 = 1_772_442_000;
        let at = DateTime::from_timestamp(t0 + 4, 0).unwrap();
        let estate = state.estate();
        let spec = crate::pce::sim::events::Spec::org(
            "label.create",
            Some("success"),
            "info",
            json!({"system": {}}),
        );
        state.record(crate::pce::sim::events::recorded_event(
            &estate, at, "written", spec,
        ));
        let mut seq = [0, 0];
        let messages = tick(
            &state,
            t0,
            t0 + TICK_SECS,
            &mut seq,
            &mut Minutes::default(),
            false,
        );
        let written: Vec<&String> = messages
            .iter()
            .filter(|m| m.contains("/events/written"))
            .collect();
        assert_eq!(written.len(), 1, "{messages:?}");
        assert!(written[0].contains(" illumio_pce/api ") && written[0].contains("\"time\""));
        let times: Vec<&str> = messages
            .iter()
            .filter_map(|m| m.split(' ').nth(1))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        // Not in the next tick.
        let next = tick(
            &state,
            t0 + TICK_SECS,
            t0 + 2 * TICK_SECS,
            &mut seq,
            &mut Minutes::default(),
            false,
        );
        assert!(next.iter().all(|m| !m.contains("/events/written")));
    }
}
