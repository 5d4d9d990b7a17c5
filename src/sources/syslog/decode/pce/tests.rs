#![allow(clippy::print_stderr)] // the fixture skip notice is printed for whoever runs them

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use syslog_loose::Variant;

use super::*;
use crate::event::flow_id::FlowId;
use crate::stages::bandwidth::BandwidthConfig;
use crate::stages::bandwidth::measure::{Measured, Measurer};

fn received() -> Timestamp {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

/// Decodes `line` as the syslog source would hand it over.
fn decode(d: &mut PceDecoder, line: &str) -> Result<Vec<Event>, DecodeError> {
    let parsed = syslog_loose::parse_message(line, Variant::Either);
    let source: Arc<str> = Arc::from("p.syslog");
    let peer: SocketAddr = "192.0.2.7:5514".parse().unwrap();
    let msg = Message {
        peer,
        raw: line.as_bytes(),
        parsed: &parsed,
        received: received(),
        source: &source,
    };
    let mut out = Vec::new();
    d.decode(&msg, &mut out)?;
    Ok(out)
}

fn decoder() -> (PceDecoder, tokio::sync::broadcast::Receiver<Alert>) {
    let internal = InternalAlerts::default();
    let rx = internal.subscribe();
    (PceDecoder::new(internal, DEFAULT_MAX_NODES), rx)
}

fn flow_line(host: &str, seq: u64, json: &Value) -> String {
    format!(
        "<14>1 2026-03-02T08:59:59.000000+00:00 {host} illumio_pce/collector 30673 - [meta sequenceId=\"{seq}\"] sec=591411.996 sev=INFO  pid=30673 tid=17441900 rid=0f301a1a-acfc-494f-bc79-0123456789ab {json}"
    )
}

fn event_line(host: &str, seq: u64, json: &Value) -> String {
    format!(
        "<14>1 2026-03-02T08:59:59.000000+00:00 {host} illumio_pce/agent 31897 - [meta sequenceId=\"{seq}\"] sec=661888.107 sev=INFO  pid=32277 tid=38674900 rid=48f4eb55-b309-4d38-8737-83393ae43c0c {json}"
    )
}

fn summary() -> Value {
    json!({"interval_sec": 600, "count": 3, "tbi": 1000, "tbo": 5000, "dbi": 100, "dbo": 900,
           "ddms": 600000, "tdms": 1200000, "pn": "nginx", "un": "www", "src_ip": "10.0.0.1",
           "dst_ip": "10.0.0.2", "class": "U", "dir": "I", "time": "2026-03-02T10:00:00+01:00",
           "proto": 6, "dst_port": 443, "state": "A", "src_hostname": "web1",
           "src_href": "/orgs/1/workloads/w1", "src_labels": {"env": "prod", "app": "shop"},
           "dst_hostname": "db1", "dst_href": "/orgs/1/workloads/w2",
           "dst_labels": {"role": "db"}, "pd": 1, "version": 4})
}

fn audit_event() -> Value {
    json!({"href": "/orgs/1/events/e1", "time": "2026-03-02T08:59:58.123Z",
           "pce_fqdn": "pce.example.com", "created_by": {"system": {}},
           "event_type": "agent.tampering", "status": "success", "severity": "warning",
           "action": null, "resource_changes": [], "notifications": [], "version": 2})
}

#[test]
fn a_flow_summary_becomes_a_rest_shaped_flow() {
    let (mut d, _rx) = decoder();
    let out = decode(&mut d, &flow_line("core0", 10, &summary())).unwrap();
    assert_eq!(out.len(), 1);
    let e = &out[0];
    let v = e.data();
    assert_eq!(v["src"]["ip"], "10.0.0.1");
    assert_eq!(v["dst"]["ip"], "10.0.0.2");
    assert_eq!(v["src"]["labels"], json!({"env": "prod", "app": "shop"}));
    assert_eq!(v["src"]["workload"]["labels_by_key"]["env"], "prod");
    assert_eq!(v["src"]["workload"]["href"], "/orgs/1/workloads/w1");
    assert_eq!(v["src"]["workload"]["hostname"], "web1");
    assert_eq!(v["dst"]["labels"], json!({"role": "db"}));
    assert_eq!(v["src"]["ip_list_names"], json!([]));
    assert_eq!(
        v["service"],
        json!({"port": 443, "proto": 6, "process_name": "nginx", "user_name": "www"})
    );
    assert_eq!(v["num_connections"], 3);
    assert_eq!(v["policy_decision"], "potentially_blocked");
    assert_eq!(v["flow_direction"], "inbound");
    assert_eq!(v["state"], "active");
    assert_eq!(v["dst_bi"], 1000);
    assert_eq!(v["dst_bo"], 5000);
    assert_eq!(v["dbi"], 100);
    assert_eq!(v["dbo"], 900);
    assert_eq!(v["ddms"], 600000);
    assert_eq!(v["interval_sec"], 600);
    assert_eq!(
        v["timestamp_range"]["last_detected"],
        "2026-03-02T09:00:00Z"
    );
    assert_eq!(
        v["timestamp_range"]["first_detected"], "2026-03-02T08:40:00Z",
        "time − tdms"
    );
    assert_eq!(v["vigil"]["source_type"], "syslog");
    assert_eq!(v["vigil"]["syslog"]["sequence_id"], 10);
    assert_eq!(v["vigil"]["syslog"]["host"], "core0");
    assert_eq!(
        e.meta.time,
        "2026-03-02T09:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert!(v.get("time").is_none() && v.get("src_ip").is_none() && v.get("pd").is_none());
    assert_eq!(d.stats().flows, 1);
}

#[test]
fn policy_decisions_and_the_20_2_counters_map_like_rest() {
    let (mut d, _rx) = decoder();
    for (pd, name) in [
        (0, "allowed"),
        (1, "potentially_blocked"),
        (2, "blocked"),
        (3, "unknown"),
    ] {
        let mut s = summary();
        s["pd"] = json!(pd);
        let out = decode(&mut d, &flow_line("n", 1, &s)).unwrap();
        assert_eq!(out[0].data()["policy_decision"], name);
    }
    let mut s = summary();
    s["pd"] = json!(7);
    let err = decode(&mut d, &flow_line("n", 1, &s)).unwrap_err();
    assert!(err.to_string().contains("`pd` 7"), "{err}");
    let mut s = summary();
    let o = s.as_object_mut().unwrap();
    for k in ["tbi", "tbo", "dbi", "dbo", "dst_port"] {
        o.remove(k);
    }
    o.insert("dst_tbi".into(), json!(11));
    o.insert("dst_tbo".into(), json!(22));
    o.insert("dst_dbi".into(), json!(3));
    o.insert("dst_dbo".into(), json!(4));
    o.insert("dst_prt".into(), json!(8443));
    let out = decode(&mut d, &flow_line("n", 2, &s)).unwrap();
    let v = out[0].data();
    assert_eq!(
        (&v["dst_bi"], &v["dst_bo"], &v["dbi"], &v["dbo"]),
        (&json!(11), &json!(22), &json!(3), &json!(4))
    );
    assert_eq!(v["service"]["port"], 8443);
}

#[test]
fn an_audit_event_keeps_the_pce_record_with_its_rest_time_field() {
    let (mut d, _rx) = decoder();
    let out = decode(&mut d, &event_line("core0", 5, &audit_event())).unwrap();
    let v = out[0].data();
    assert_eq!(v["timestamp"], "2026-03-02T08:59:58.123Z");
    assert!(v.get("time").is_none());
    assert_eq!(v["event_type"], "agent.tampering");
    assert_eq!(v["pce_fqdn"], "pce.example.com");
    assert_eq!(v["href"], "/orgs/1/events/e1");
    assert_eq!(v["vigil"]["syslog"]["sequence_id"], 5);
    assert_eq!(v["vigil"]["syslog"]["app"], "illumio_pce/agent");
    assert_eq!(
        out[0].meta.time,
        "2026-03-02T08:59:58.123Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(d.stats().events, 1);
}

#[test]
fn other_versions_and_broken_records_are_malformed_and_counted() {
    let (mut d, _rx) = decoder();
    let mut s = summary();
    s["version"] = json!(3);
    let err = decode(&mut d, &flow_line("n", 1, &s)).unwrap_err();
    assert!(
        err.to_string()
            .contains("traffic flow summary of version 3")
            && err.to_string().contains("version 4"),
        "{err}"
    );
    let mut e = audit_event();
    e["version"] = json!(4);
    let err = decode(&mut d, &event_line("n", 2, &e)).unwrap_err();
    assert!(
        err.to_string().contains("audit event of version 4"),
        "{err}"
    );
    let mut e = audit_event();
    e.as_object_mut().unwrap().remove("version");
    assert!(decode(&mut d, &event_line("n", 3, &e)).is_err());
    assert_eq!(d.stats().unknown_version, 3);
    let err = decode(
        &mut d,
        "<14>1 2026-03-02T08:59:59Z h illumio_pce/agent 1 - - sec=1 sev=INFO {\"href\": ",
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(
        decode(
            &mut d,
            "<14>1 2026-03-02T08:59:59Z h illumio_pce/agent 1 - - hello"
        )
        .is_err()
    );
    let mut e = audit_event();
    e["time"] = json!("yesterday");
    assert!(decode(&mut d, &event_line("n", 4, &e)).is_err());
    let mut e = audit_event();
    e.as_object_mut().unwrap().remove("href");
    assert!(decode(&mut d, &event_line("n", 5, &e)).is_err());
    let mut s = summary();
    s.as_object_mut().unwrap().remove("time");
    assert!(decode(&mut d, &flow_line("n", 6, &s)).is_err());
    assert_eq!(d.stats().malformed, 8);
    assert_eq!(d.stats().flows + d.stats().events, 0);
}

#[test]
fn a_gap_in_a_nodes_sequence_raises_vigil_syslog_gap_and_a_restart_does_not() {
    let (mut d, mut rx) = decoder();
    for seq in [5, 6, 9] {
        decode(&mut d, &event_line("core0", seq, &audit_event())).unwrap();
    }
    let alert = rx.try_recv().unwrap();
    assert_eq!(alert.pipeline, "vigil");
    assert_eq!(alert.stage, "syslog_gap");
    assert_eq!(alert.fields["node"], "core0");
    assert_eq!(alert.fields["missing"], 2);
    assert_eq!(alert.fields["source"], "p.syslog");
    assert!(alert.title.contains("core0") && alert.title.contains('2'));
    assert!(rx.try_recv().is_err(), "one gap, one alert");
    // Another node has its own sequence; a far lower number is a restart, a little lower
    // one a late arrival; a repeat is no gap.
    for (node, seq) in [
        ("core1", 100),
        ("core1", 98),
        ("core1", 101),
        ("core1", 2),
        ("core1", 3),
        ("core1", 3),
    ] {
        decode(&mut d, &flow_line(node, seq, &summary())).unwrap();
    }
    assert!(rx.try_recv().is_err());
    let s = d.stats();
    assert_eq!((s.gaps, s.missing, s.restarts, s.late), (1, 2, 1, 1));
    // A message whose record is unusable still arrived: no gap for it.
    let mut broken = audit_event();
    broken["version"] = json!(1);
    decode(&mut d, &event_line("core0", 10, &broken)).unwrap_err();
    decode(&mut d, &event_line("core0", 11, &audit_event())).unwrap();
    assert!(rx.try_recv().is_err());
    // No sequenceId is fine too.
    let no_sd = format!(
        "<14>1 2026-03-02T08:59:59Z core0 illumio_pce/agent 1 - - {}",
        audit_event()
    );
    decode(&mut d, &no_sd).unwrap();
    decode(&mut d, &event_line("core0", 12, &audit_event())).unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(d.stats().gaps, 1);
}

#[test]
fn the_nodes_followed_are_bounded_and_evictions_counted() {
    let internal = InternalAlerts::default();
    let mut rx = internal.subscribe();
    let mut d = PceDecoder::new(internal, 2);
    decode(&mut d, &event_line("a", 1, &audit_event())).unwrap();
    decode(&mut d, &event_line("b", 1, &audit_event())).unwrap();
    decode(&mut d, &event_line("a", 2, &audit_event())).unwrap();
    decode(&mut d, &event_line("c", 1, &audit_event())).unwrap();
    assert_eq!(d.nodes(), 2);
    assert_eq!(d.stats().nodes_evicted, 1);
    // `b` was heard from least recently: forgotten, it starts afresh (no gap).
    decode(&mut d, &event_line("b", 50, &audit_event())).unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(d.stats().nodes_evicted, 2);
    // `a` was evicted by `b`; `c` is still followed.
    decode(&mut d, &event_line("c", 5, &audit_event())).unwrap();
    assert_eq!(rx.try_recv().unwrap().fields["missing"], 3);
}

/// The measurer of a `bandwidth` stage with its default counters.
fn measurer() -> Measurer {
    let cfg: BandwidthConfig = serde_json::from_value(
        json!({"inputs": ["s"], "mode": "volume", "window": "10m", "threshold": 1.0}),
    )
    .unwrap();
    Measurer::new(&cfg).unwrap()
}

#[test]
fn bandwidth_takes_a_summarys_delta_as_it_is() {
    let (mut d, _rx) = decoder();
    let mut m = measurer();
    for seq in 1..=2 {
        let e = &decode(&mut d, &flow_line("n", seq, &summary())).unwrap()[0];
        let mut key = String::new();
        m.flow_key(&mut key, e);
        // The same deltas twice are two intervals' bytes, not a duplicate or a difference.
        assert_eq!(
            m.measure(
                e,
                e.meta.time,
                FlowId::of(&key),
                chrono::Duration::minutes(10)
            ),
            Measured::Bytes {
                bytes: 1000.0,
                span: 600.0,
                estimate: false
            }
        );
    }
}

#[test]
fn bandwidth_takes_totals_without_deltas_as_lifetime_counters() {
    let (mut d, _rx) = decoder();
    let mut m = measurer();
    let mut s = summary();
    let o = s.as_object_mut().unwrap();
    for k in ["dbi", "dbo", "ddms"] {
        o.remove(k);
    }
    let e = &decode(&mut d, &flow_line("n", 1, &s)).unwrap()[0];
    let mut key = String::new();
    m.flow_key(&mut key, e);
    // First sighting: the totals over the flow's whole duration (tdms), a lower bound.
    assert_eq!(
        m.measure(
            e,
            e.meta.time,
            FlowId::of(&key),
            chrono::Duration::minutes(10)
        ),
        Measured::Bytes {
            bytes: 6000.0,
            span: 1201.0,
            estimate: true
        }
    );
    s["tbi"] = json!(1500);
    s["tbo"] = json!(6500);
    s["time"] = json!("2026-03-02T10:10:00+01:00");
    let e = &decode(&mut d, &flow_line("n", 2, &s)).unwrap()[0];
    assert_eq!(
        m.measure(
            e,
            e.meta.time,
            FlowId::of(&key),
            chrono::Duration::minutes(10)
        ),
        Measured::Bytes {
            bytes: 2000.0,
            span: 600.0,
            estimate: false
        }
    );
}

/// Every leaf path of `v` (list elements under the list's path), with the JSON type.
fn shape(v: &Value, at: String, out: &mut BTreeMap<String, &'static str>) {
    let kind = match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                shape(x, p, out);
            }
            return;
        }
        Value::Array(a) => {
            for x in a {
                shape(x, at.clone(), out);
            }
            "list"
        }
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    };
    out.entry(at).or_insert(kind);
}

/// A REST flow as the simulator serves it (see `write_flow` in `src/pce/sim/traffic.rs`),
/// enriched as `pce_traffic` does.
fn rest_flow() -> Value {
    let row = json!({
        "src": {"ip": "10.0.0.1", "workload": {"href": "/orgs/1/workloads/w1", "name": "web1",
                "hostname": "web1", "labels": [{"href": "/orgs/1/labels/1", "key": "env", "value": "prod"}],
                "managed": true, "os_type": "linux", "enforcement_mode": "full"}},
        "dst": {"ip": "10.0.0.2", "workload": {"href": "/orgs/1/workloads/w2", "name": "db1",
                "hostname": "db1", "labels": [{"href": "/orgs/1/labels/2", "key": "role", "value": "db"}],
                "managed": true, "os_type": "linux", "enforcement_mode": "full"}},
        "service": {"port": 443, "proto": 6, "process_name": "nginx", "user_name": "www"},
        "num_connections": 3, "policy_decision": "allowed", "state": "active",
        "flow_direction": "inbound", "dst_bi": 1, "dst_bo": 2,
        "timestamp_range": {"first_detected": "2026-03-02T08:00:00Z", "last_detected": "2026-03-02T09:00:00Z"},
        "network": {"href": "/orgs/1/networks/1", "name": "Corporate"},
        "seq_id": 1, "client_type": "server", "caps": ["write"]
    });
    crate::sources::pce_traffic::enrich_flow(
        row,
        &Names::default(),
        &json!({"source_type": "pce_traffic", "connection": "pce", "truncated": false,
                "slice": {"start": "s", "end": "e"}}),
    )
}

/// What a syslog flow has that a REST flow has no place for.
const SYSLOG_ONLY: &[&str] = &[
    "interval_sec",
    "tdms",
    "ddms",
    "dbi",
    "dbo",
    "class",
    "version",
    "vigil.decoder",
    "vigil.syslog.",
    "service.windows_service_name",
];

/// Checks that every fact of the syslog flow `v` sits where a REST flow has it, with the
/// same JSON type.
fn assert_rest_shape(v: &Value) {
    let mut rest = BTreeMap::new();
    shape(&rest_flow(), String::new(), &mut rest);
    let mut ours = BTreeMap::new();
    shape(v, String::new(), &mut ours);
    for (path, kind) in &ours {
        if SYSLOG_ONLY.iter().any(|s| path.starts_with(s)) {
            continue;
        }
        // Label maps hold whatever keys the estate has.
        let general = path
            .split_once(".labels.")
            .or_else(|| path.split_once(".labels_by_key."))
            .map(|(a, _)| a);
        if let Some(side) = general {
            let rest_has = rest
                .keys()
                .any(|p| p.starts_with(&format!("{side}.labels")));
            assert!(rest_has, "REST flows have no labels at {side}");
            continue;
        }
        assert_eq!(rest.get(path), Some(kind), "{path} in {v}");
    }
}

#[test]
fn a_syslog_flow_has_the_field_paths_of_a_rest_flow() {
    let (mut d, _rx) = decoder();
    let out = decode(&mut d, &flow_line("n", 1, &summary())).unwrap();
    assert_rest_shape(out[0].data());
    // And the shape check itself catches a fact in the wrong place.
    let mut bad = out[0].data().clone();
    bad["src_ip"] = json!("10.0.0.1");
    let caught = std::panic::catch_unwind(|| assert_rest_shape(&bad));
    assert!(caught.is_err());
}

/// The real samples of the Illumio Splunk TA, their placeholders filled in.
fn real_samples(file: &str) -> Option<Vec<String>> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real/illumio-splunk-ta");
    let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
        eprintln!(
            "skipped: {} is absent (real-data fixtures are not part of the project)",
            dir.join(file).display()
        );
        return None;
    };
    let fills = [
        ("@@COUNT", "4"),
        ("@@PD", "2"),
        ("@@PORT", "53"),
        ("@@DIR", "O"),
        ("@@SRC_IP", "10.1.0.1"),
        ("@@DST_IP", "10.1.0.2"),
        ("@@IP", "10.1.0.3"),
    ];
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut l = l.to_string();
                for (k, v) in fills {
                    l = l.replace(k, v);
                }
                // The rest are inside strings: any name will do.
                while let Some(at) = l.find("@@") {
                    let end = l[at + 2..]
                        .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                        .map_or(l.len(), |e| at + 2 + e);
                    l.replace_range(at..end, "sample");
                }
                l
            })
            .collect(),
    )
}

/// The JSON record of a sample line.
fn record_of(line: &str) -> Map<String, Value> {
    let at = line.find(" {").unwrap();
    serde_json::from_str(&line[at + 1..]).unwrap()
}

#[test]
fn every_real_flow_summary_decodes_into_a_rest_shaped_flow() {
    let Some(lines) = real_samples("illumio-pce-collector-v2.samples") else {
        return;
    };
    assert!(!lines.is_empty());
    for line in &lines {
        let (mut d, _rx) = decoder();
        let out = decode(&mut d, line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let v = out[0].data();
        let r = record_of(line);
        assert_eq!(v["src"]["ip"], r["src_ip"]);
        assert_eq!(v["dst"]["ip"], r["dst_ip"]);
        assert_eq!(v["service"]["port"], r["dst_port"]);
        assert_eq!(v["service"]["proto"], r["proto"]);
        assert_eq!(v["num_connections"], r["count"]);
        assert_eq!(v["policy_decision"], "blocked");
        assert_eq!(v["flow_direction"], "outbound");
        assert_eq!(v["state"], "timed out");
        assert_eq!(v["dst_bi"], r["tbi"]);
        assert_eq!(v["dst_bo"], r["tbo"]);
        assert_eq!(v["interval_sec"], r["interval_sec"]);
        for side in ["src", "dst"] {
            if let Some(labels) = r.get(&format!("{side}_labels")) {
                assert_eq!(&v[side]["labels"], labels);
                assert_eq!(v[side]["workload"]["href"], r[&format!("{side}_href")]);
                assert_eq!(
                    v[side]["workload"]["hostname"],
                    r[&format!("{side}_hostname")]
                );
            }
        }
        let time = parse_time(r["time"].as_str().unwrap()).unwrap();
        assert_eq!(out[0].meta.time, time);
        assert_eq!(v["timestamp_range"]["last_detected"], stamp(&time));
        let seq: u64 = line
            .split("sequenceId=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(v["vigil"]["syslog"]["sequence_id"], seq);
        assert_rest_shape(v);
    }
}

#[test]
fn every_real_audit_event_decodes_into_the_rest_record() {
    let Some(lines) = real_samples("illumio-pce-v2.samples") else {
        return;
    };
    assert!(!lines.is_empty());
    for line in &lines {
        let (mut d, _rx) = decoder();
        let out = decode(&mut d, line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let v = out[0].data().as_object().unwrap();
        let mut r = record_of(line);
        let time = r.remove("time").unwrap();
        assert_eq!(v["timestamp"], time);
        assert_eq!(
            out[0].meta.time,
            parse_time(time.as_str().unwrap()).unwrap()
        );
        // Every other field exactly as the PCE sent it, as `pce_events` hands it on.
        for (k, x) in &r {
            assert_eq!(&v[k], x, "{k}");
        }
        let extra: Vec<&String> = v
            .keys()
            .filter(|k| !r.contains_key(*k) && *k != "timestamp")
            .collect();
        assert_eq!(extra, ["vigil"]);
        assert!(v["pce_fqdn"].as_str().is_some());
    }
}

/// The PCE simulator's syslog export, decoded: what `vigil pce-sim --syslog-to` sends is
/// what a PCE sends, as far as this decoder can tell.
#[cfg(feature = "demo")]
mod simulated {
    use super::*;
    use crate::pce::sim::{
        PceSim, SYSLOG_TICK_SECS, Scenario, SimConfig, SyslogExport, SyslogMode,
    };
    use crate::time::VirtualClock;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    /// Octet-counted frames read from `peer` until `enough` says so or the deadline.
    async fn read_frames(
        peer: &mut TcpStream,
        buf: &mut Vec<u8>,
        enough: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        while !enough(&out) {
            let n = match tokio::time::timeout_at(deadline, peer.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                if buf.len() < sp + 1 + len {
                    break;
                }
                out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
                buf.drain(..sp + 1 + len);
            }
        }
        out
    }

    fn tick() -> std::time::Duration {
        std::time::Duration::from_secs(SYSLOG_TICK_SECS as u64)
    }

    async fn sim(clock: &VirtualClock, to: SocketAddr) -> crate::pce::sim::RunningSim {
        let cfg = SimConfig {
            scenario: Scenario::PortScan,
            syslog: Some(SyslogExport {
                to,
                mode: SyslogMode::Tcp,
                flow_summaries: true,
            }),
            ..SimConfig::default()
        };
        PceSim::start(cfg, Arc::new(clock.clone()), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_message_of_the_simulator_decodes_into_rest_shaped_events() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = VirtualClock::new("2026-03-02T09:00:00Z".parse().unwrap());
        let sim = sim(&clock, listener.local_addr().unwrap()).await;
        clock.advance(tick() * 60);
        let (mut peer, _) =
            tokio::time::timeout(std::time::Duration::from_secs(20), listener.accept())
                .await
                .unwrap()
                .unwrap();
        let mut buf = Vec::new();
        let frames = read_frames(&mut peer, &mut buf, |f| {
            f.iter()
                .filter(|m| m.contains("illumio_pce/collector"))
                .count()
                >= 200
                && f.iter().any(|m| m.contains("\"version\":2"))
        })
        .await;
        sim.shutdown().await;
        let (mut d, mut rx) = decoder();
        let (mut flows, mut events) = (0, 0);
        for f in &frames {
            let out = decode(&mut d, f).unwrap_or_else(|e| panic!("{e}: {f}"));
            let v = out[0].data();
            if v.get("src").is_some() {
                flows += 1;
                assert_rest_shape(v);
            } else {
                events += 1;
                assert!(
                    v["timestamp"].is_string() && v["event_type"].is_string(),
                    "{v}"
                );
            }
        }
        assert!(flows >= 200 && events > 0, "{flows} flows, {events} events");
        assert!(rx.try_recv().is_err(), "no gap on a working link");
        assert_eq!(d.stats().malformed, 0);
    }

    /// Waits (on the exporter's progress, not a timer) until it has handled `ticks`.
    async fn handled(sim: &crate::pce::sim::RunningSim, ticks: u64) {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while sim.syslog_counters().ticks.load(Ordering::Acquire) < ticks {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the exporter is stuck"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn messages_lost_while_the_receiver_was_away_raise_a_gap() {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let clock = VirtualClock::new("2026-03-02T09:00:00Z".parse().unwrap());
        let sim = sim(&clock, to).await;
        let mut ticks = 30;
        // The export starts at the second after the start.
        clock.advance(tick() * 30 + std::time::Duration::from_secs(1));
        let (mut peer, _) =
            tokio::time::timeout(std::time::Duration::from_secs(20), listener.accept())
                .await
                .unwrap()
                .unwrap();
        handled(&sim, ticks).await;
        let mut buf = Vec::new();
        let sent = sim.syslog_counters().sent.load(Ordering::Relaxed) as usize;
        let mut frames = read_frames(&mut peer, &mut buf, |f| f.len() >= sent).await;
        assert_eq!(frames.len(), sent);
        // The receiver goes away: the exporter drops what it cannot send.
        drop(peer);
        drop(listener);
        while sim.syslog_counters().dropped.load(Ordering::Relaxed) == 0 {
            assert!(ticks < 300, "nothing was dropped");
            ticks += 1;
            clock.advance(tick());
            handled(&sim, ticks).await;
        }
        clock.advance(tick() * 3);
        ticks += 3;
        handled(&sim, ticks).await;
        // It comes back on the same address.
        let sent_away = sim.syslog_counters().sent.load(Ordering::Relaxed) as usize;
        let listener = TcpListener::bind(to).await.unwrap();
        clock.advance(tick() * 30);
        let (mut peer, _) =
            tokio::time::timeout(std::time::Duration::from_secs(20), listener.accept())
                .await
                .unwrap()
                .unwrap();
        ticks += 30;
        handled(&sim, ticks).await;
        let c = sim.syslog_counters();
        let total = c.sent.load(Ordering::Relaxed) as usize - sent_away;
        let dropped = c.dropped.load(Ordering::Relaxed);
        let later = read_frames(&mut peer, &mut buf, |f| f.len() >= total).await;
        assert!(!later.is_empty());
        frames.extend(later);
        sim.shutdown().await;
        let (mut d, mut rx) = decoder();
        for f in &frames {
            decode(&mut d, f).unwrap_or_else(|e| panic!("{e}: {f}"));
        }
        let s = d.stats();
        assert!(s.gaps >= 1, "{s:?}");
        // Lost: what the exporter dropped, and what it wrote into the closed connection.
        assert!(s.missing >= dropped, "{s:?}, {dropped} dropped");
        let alert = rx.try_recv().unwrap();
        assert_eq!(alert.stage, "syslog_gap");
        assert!(
            alert.fields["node"].as_str().unwrap().contains(".pce."),
            "{:?}",
            alert.fields
        );
        assert_eq!(s.restarts, 0);
    }
}
