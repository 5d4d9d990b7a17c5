use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
use crate::event::flow_id::FlowId;
use crate::event::{Alert, Event, Timestamp};
use crate::node::{Stage, snapshot_text};
use crate::stages::alerting::AlertTemplates;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
}

fn at(s: i64) -> Timestamp {
    t0() + Duration::seconds(s)
}

fn iso(s: i64) -> String {
    at(s).to_rfc3339()
}

fn stage(v: Value) -> BandwidthStage {
    let mut base = json!({"inputs": ["in"], "window": "10m", "threshold": 100, "mode": "rate"});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    let c: BandwidthConfig = serde_json::from_value(base).unwrap();
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    let t = AlertTemplates::compile(
        &c.alert,
        &c.default_title(),
        &c.default_summary(),
        "p",
        "bw",
    )
    .unwrap();
    BandwidthStage::new(&c, t, chrono::Duration::minutes(1)).unwrap()
}

fn feed(s: &mut BandwidthStage, data: Value, secs: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(
        Arc::new(Event::from_record(data, "p.src".into(), at(secs))),
        &mut out,
    );
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

/// A PCE REST flow row with lifetime counters.
fn rest(src: &str, bi: u64, bo: u64, first: i64, last: i64) -> Value {
    json!({
        "src": {"ip": src}, "dst": {"ip": "10.0.0.9"},
        "service": {"port": 443, "proto": 6},
        "num_connections": 1,
        "timestamp_range": {"first_detected": iso(first), "last_detected": iso(last)},
        "dst_bi": bi, "dst_bo": bo, "policy_decision": "allowed"
    })
}

/// A syslog flow summary with delta counters.
fn syslog(src: &str, dbi: Value, dbo: Value, ddms: Value) -> Value {
    json!({"src_ip": src, "dst_ip": "10.0.0.9", "dst_port": 443, "proto": 6,
           "dbi": dbi, "dbo": dbo, "ddms": ddms})
}

#[test]
fn zero_byte_counters_are_unmeasured_and_never_alert() {
    let mut s = stage(json!({"threshold": 0.000001}));
    assert!(feed(&mut s, rest("10.0.0.1", 0, 0, 0, 0), 0).is_empty());
    assert!(feed(&mut s, syslog("10.0.0.1", json!(0), json!(0), json!(0)), 1).is_empty());
    assert!(feed(&mut s, json!({"src": {"ip": "10.0.0.1"}}), 2).is_empty());
    assert_eq!(s.skipped().unmeasured, 3);
    let text = snapshot_text(&s).unwrap();
    let snap: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(snap["skipped"]["unmeasured"], 3);
    assert!(!text.contains("NaN") && !text.contains("inf"));
    // Volume likewise.
    let mut s = stage(json!({"mode": "volume", "threshold": 0.000001}));
    assert!(feed(&mut s, rest("10.0.0.1", 0, 0, 0, 0), 0).is_empty());
    assert_eq!(s.skipped().unmeasured, 1);
}

#[test]
fn delta_counters_give_exact_mbps() {
    let mut s = stage(json!({"threshold": 1000, "group_by": ["dst_ip"]}));
    // 124,999,999 bytes in 1 s: 999.999992 Mbps, below.
    assert!(
        feed(
            &mut s,
            syslog("10.0.0.1", json!(0), json!(124_999_999), json!(1000)),
            0
        )
        .is_empty()
    );
    // The same flow's next interval replaces its rate: 125,000,000 bytes/s = 1000 Mbps.
    let a = feed(
        &mut s,
        syslog("10.0.0.1", json!(0), json!(125_000_000), json!(1000)),
        1,
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 1000.0);
    assert_eq!(a[0].threshold, 1000.0);
    assert_eq!(a[0].unit.as_deref(), Some("Mbps"));
    assert_eq!(a[0].estimate, None);
    assert_eq!(a[0].title, "1000 Mbps from dst_ip=10.0.0.9");
    // Two flows' rates add up: 600 + 400 Mbps over 2 s intervals.
    let mut s = stage(json!({"threshold": 1000}));
    assert!(
        feed(
            &mut s,
            syslog(
                "10.0.0.1",
                json!(100_000_000),
                json!(50_000_000),
                json!(2000)
            ),
            0
        )
        .is_empty()
    );
    let a = feed(
        &mut s,
        syslog("10.0.0.2", json!(100_000_000), json!(0), json!(2000)),
        0,
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 1000.0);
}

#[test]
fn direction_picks_the_counters() {
    let mut s = stage(json!({"threshold": 1000, "direction": "in"}));
    assert!(
        feed(
            &mut s,
            syslog("10.0.0.1", json!(1), json!(125_000_000), json!(1000)),
            0
        )
        .is_empty()
    );
    let mut s = stage(json!({"threshold": 1000, "direction": "out"}));
    assert_eq!(
        feed(
            &mut s,
            syslog("10.0.0.1", json!(1), json!(125_000_000), json!(1000)),
            0
        )
        .len(),
        1
    );
}

#[test]
fn counter_differences_between_two_observations_are_exact() {
    let mut s = stage(json!({"threshold": 80, "group_by": ["src.ip"]}));
    // First sighting: 1 MB over 100 s + 1 s: a low lower bound, no alert.
    assert!(feed(&mut s, rest("10.0.0.1", 0, 1_000_000, 0, 100), 100).is_empty());
    // 60 s later 600 MB more: 600e6·8/60 = 80 Mbps exactly; the flow's latest rate
    // replaces its first-sighting estimate.
    let a = feed(&mut s, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 80.0);
    assert_eq!(a[0].estimate, None);
    // The same observation again (a duplicate row) is skipped.
    assert!(feed(&mut s, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160).is_empty());
    assert_eq!(s.skipped().duplicates, 1);
    // An older one is stale.
    assert!(feed(&mut s, rest("10.0.0.1", 0, 500_000_000, 0, 150), 165).is_empty());
    assert_eq!(s.skipped().stale, 1);
}

#[test]
fn a_counter_that_went_down_was_reset() {
    let mut s = stage(json!({"mode": "volume", "threshold": 3}));
    let mib = 1_048_576u64;
    assert!(feed(&mut s, rest("10.0.0.1", 0, 2 * mib, 0, 10), 10).is_empty());
    // Counter reset: 1 MiB now counts as 1 MiB (not -1 MiB): 3 MiB in the window.
    let a = feed(&mut s, rest("10.0.0.1", 0, mib, 20, 30), 30);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 3.0);
    assert_eq!(a[0].unit.as_deref(), Some("MiB"));
    // The window used a first sighting: the value is marked.
    assert_eq!(a[0].estimate.as_deref(), Some("lower_bound"));
}

#[test]
fn a_first_sighting_is_a_marked_lower_bound() {
    let mut s = stage(json!({"threshold": 8}));
    // 10 MB over last − first + 1 s = 10 s: 8 Mbps, at least.
    let a = feed(&mut s, rest("10.0.0.1", 4_000_000, 6_000_000, 0, 9), 9);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 8.0);
    assert_eq!(a[0].estimate.as_deref(), Some("lower_bound"));
    assert_eq!(a[0].title, "at least 8 Mbps");
    assert!(
        a[0].summary.contains("estimate: lower_bound"),
        "{}",
        a[0].summary
    );
    // first == last: the span is 1 s, not 0.
    let mut s = stage(json!({"threshold": 8}));
    let a = feed(&mut s, rest("10.0.0.1", 0, 1_000_000, 5, 5), 5);
    assert_eq!(a[0].value, 8.0);
}

#[test]
fn missing_and_malformed_fields_are_handled() {
    let mut s = stage(json!({"threshold": 8}));
    // No timestamp_range on a first sighting: taken to span the whole window (600 s).
    let a = feed(
        &mut s,
        json!({"src": {"ip": "10.0.0.1"}, "dst_bo": 600_000_000}),
        0,
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 8.0);
    // Delta counter without ddms: 1 s.
    let mut s = stage(json!({"threshold": 8}));
    assert_eq!(
        feed(
            &mut s,
            syslog("a", json!(null), json!(1_000_000), json!(null)),
            0
        )
        .len(),
        1
    );
    // Strings and negative numbers: numeric strings count, negatives do not.
    let mut s = stage(json!({"threshold": 8}));
    assert!(feed(&mut s, syslog("a", json!(-5), json!("x"), json!(1000)), 0).is_empty());
    assert_eq!(s.skipped().unmeasured, 1);
    assert_eq!(
        feed(
            &mut s,
            syslog("a", json!("1000000"), json!(0), json!("1000")),
            1
        )
        .len(),
        1
    );
    // ddms 0: 1 s, no division by zero.
    let mut s = stage(json!({"threshold": 8}));
    let a = feed(&mut s, syslog("a", json!(1_000_000), json!(0), json!(0)), 0);
    assert_eq!(a[0].value, 8.0);
    assert!(a[0].value.is_finite());
}

#[test]
fn volume_threshold_boundary_in_mib() {
    let mib = 1_048_576i64;
    let mut s = stage(json!({"mode": "volume", "threshold": 10, "group_by": ["src_ip"]}));
    assert!(
        feed(
            &mut s,
            syslog("a", json!(5 * mib), json!(0), json!(1000)),
            0
        )
        .is_empty()
    );
    // One byte short of 10 MiB.
    assert!(
        feed(
            &mut s,
            syslog("a", json!(0), json!(5 * mib - 1), json!(1000)),
            1
        )
        .is_empty()
    );
    let a = feed(&mut s, syslog("a", json!(1), json!(0), json!(1000)), 2);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 10.0);
    assert_eq!(a[0].threshold, 10.0);
    assert_eq!(a[0].unit.as_deref(), Some("MiB"));
    assert_eq!(a[0].estimate, None);
    assert_eq!(a[0].title, "10 MiB from src_ip=a in 10m");
    assert_eq!(a[0].samples.len(), 3);
    assert_eq!(a[0].window.start, at(2 - 600));
    assert_eq!(a[0].window.end, at(2));
}

#[test]
fn window_boundary_and_late_events() {
    let mib = 1_048_576i64;
    let mut s = stage(json!({"mode": "volume", "threshold": 2}));
    assert!(feed(&mut s, syslog("a", json!(mib), json!(0), json!(1000)), 0).is_empty());
    // Exactly one window later: the first is out.
    assert!(feed(&mut s, syslog("a", json!(mib), json!(0), json!(1000)), 600).is_empty());
    // A late event (at or before watermark − window) is counted and not mixed in.
    assert!(
        feed(
            &mut s,
            syslog("a", json!(10 * mib), json!(0), json!(1000)),
            0
        )
        .is_empty()
    );
    assert_eq!(s.late(), 1);
    // Inside the window: fires.
    assert_eq!(
        feed(&mut s, syslog("a", json!(mib), json!(0), json!(1000)), 1199).len(),
        1
    );

    // Rate mode: a flow's rate leaves the window a window after it was measured.
    let mut s = stage(json!({"threshold": 16}));
    assert!(
        feed(
            &mut s,
            syslog("a", json!(1_000_000), json!(0), json!(1000)),
            0
        )
        .is_empty()
    );
    assert!(
        feed(
            &mut s,
            syslog("b", json!(1_000_000), json!(0), json!(1000)),
            600
        )
        .is_empty()
    );
    assert_eq!(
        feed(
            &mut s,
            syslog("c", json!(1_000_000), json!(0), json!(1000)),
            601
        )
        .len(),
        1
    );
    // The flow memory and windows expire on tick.
    feed(&mut s, syslog("d", json!(0), json!(0), json!(1000)), 5000);
    s.tick(at(5000), &mut Vec::new());
    assert_eq!(s.held(), (0, 0));
}

#[test]
fn snapshot_and_restore_keep_windows_and_flow_counters() {
    let cfg = json!({"threshold": 80, "group_by": ["src.ip"]});
    let mut s = stage(cfg.clone());
    assert!(feed(&mut s, rest("10.0.0.1", 0, 1_000_000, 0, 100), 100).is_empty());
    let snap = snapshot_text(&s).unwrap();
    let mut r = stage(cfg);
    r.restore(&snap, "p.bw");
    // The counters survived: the difference is exact.
    let a = feed(&mut r, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 80.0);
    assert_eq!(a[0].estimate, None);
    // A mode change resets: the next row is a first sighting.
    let mut r = stage(json!({"mode": "volume", "threshold": 80, "group_by": ["src.ip"]}));
    r.restore(&snap, "p.bw");
    assert_eq!(r.held(), (0, 0));
}

#[test]
fn volume_windows_survive_a_restore() {
    let mib = 1_048_576i64;
    let mut s = stage(json!({"mode": "volume", "threshold": 2}));
    assert!(feed(&mut s, syslog("a", json!(mib), json!(0), json!(1000)), 0).is_empty());
    let snap = snapshot_text(&s).unwrap();
    // Threshold change keeps the state.
    let mut r = stage(json!({"mode": "volume", "threshold": 1.5}));
    r.restore(&snap, "p.bw");
    assert_eq!(
        feed(
            &mut r,
            syslog("a", json!(mib / 2), json!(0), json!(1000)),
            1
        )
        .len(),
        1
    );
}

/// A PCE REST traffic row as the PCE returns it (workload, labels, service, range,
/// counters), the `i`-th of a set of distinct flows.
fn pce_row(i: u32, bi: u64, bo: u64) -> String {
    let [a, b, c, d] = i.to_be_bytes();
    let src = format!("10.{b}.{c}.{}", u16::from(d) + 1);
    let dst = format!("172.{}.{}.{}", 16 + a % 16, d, u16::from(c) + 1);
    let port = [443, 5432, 8080, 6379, 22, 80, 3306, 9092][(i % 8) as usize];
    let first = iso(i64::from(i % 3600));
    let last = iso(3600 + i64::from(i % 600));
    format!(
        concat!(
            r#"{{"src":{{"ip":"{src}","workload":{{"href":"/orgs/1/workloads/{i:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b","#,
            r#""name":"payments-api-{h:02}","hostname":"payments-api-{h:02}.fra.corp","labels":["#,
            r#"{{"href":"/orgs/1/labels/101","key":"role","value":"api"}},"#,
            r#"{{"href":"/orgs/1/labels/203","key":"app","value":"payments"}},"#,
            r#"{{"href":"/orgs/1/labels/301","key":"env","value":"prod"}}],"#,
            r#""managed":true,"os_type":"linux","enforcement_mode":"selective"}}}},"#,
            r#""dst":{{"ip":"{dst}","fqdn":"db-{h:02}.fra.corp"}},"#,
            r#""service":{{"port":{port},"proto":6,"process_name":"java"}},"#,
            r#""num_connections":3,"state":"A","#,
            r#""timestamp_range":{{"first_detected":"{first}","last_detected":"{last}"}},"#,
            r#""policy_decision":"allowed","flow_direction":"outbound","#,
            r#""dst_bi":{bi},"dst_bo":{bo},"timestamp":"{last}"}}"#
        ),
        src = src,
        i = i,
        h = i % 64,
        dst = dst,
        port = port,
        first = first,
        last = last,
        bi = bi,
        bo = bo,
    )
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The cost of measuring 200,000 distinct REST flows (a first PCE cycle), then the same
/// flows again (a second cycle: every one a continuation), as the stage calls it: flow
/// key into a reused buffer, then `measure`. Release mode:
/// `cargo test --release --lib bandwidth -- --ignored --nocapture measure_cost`.
#[test]
#[ignore = "timing; run in release mode"]
#[allow(clippy::print_stderr)]
fn measure_cost_of_200k_distinct_rest_flows() {
    use crate::event::Tape;
    const FLOWS: u32 = 200_000;
    let cfg: BandwidthConfig = serde_json::from_value(
        json!({"inputs": ["in"], "mode": "rate", "window": "10m", "threshold": 100}),
    )
    .unwrap();
    let cycle = |second: bool| -> Vec<Event> {
        (0..FLOWS)
            .map(|i| {
                let (bi, bo) = (1000 + u64::from(i), 5000 + u64::from(i) * 3);
                let (bi, bo) = if second { (bi * 2, bo * 2) } else { (bi, bo) };
                let mut row = pce_row(i, bi, bo);
                if second {
                    row = row.replace(&iso(3600 + i64::from(i % 600)), &iso(4300));
                }
                let tape = Tape::parse(bytes::Bytes::from(row)).unwrap();
                Event::from_tape(tape, "p.src".into(), at(0))
            })
            .collect()
    };
    let (one, two) = (cycle(false), cycle(true));
    let window = Duration::minutes(10);
    let mut best = [f64::MAX; 2];
    let mut per_flow = 0.0;
    for round in 0..5 {
        let mut m = super::measure::Measurer::new(&cfg).unwrap();
        let mut buf = String::new();
        let before = resident_bytes();
        for (pass, events) in [&one, &two].into_iter().enumerate() {
            let start = std::time::Instant::now();
            let mut estimates = 0usize;
            for e in events {
                m.flow_key(&mut buf, e);
                if let super::measure::Measured::Bytes { estimate, .. } =
                    m.measure(e, e.meta.time, FlowId::of(&buf), window)
                {
                    estimates += usize::from(estimate);
                }
            }
            let took = start.elapsed().as_secs_f64();
            best[pass] = best[pass].min(took);
            let want = if pass == 0 { FLOWS as usize } else { 0 };
            assert_eq!(estimates, want, "pass {pass}");
            if pass == 0 && round == 0 {
                per_flow = resident_bytes().saturating_sub(before) as f64 / f64::from(FLOWS);
            }
        }
        assert_eq!(m.flows.len(), FLOWS as usize);
    }
    eprintln!(
        "bandwidth measure, {FLOWS} distinct REST flows (best of 5): first cycle {:.1} ms \
         ({:.0} ns/flow), second cycle {:.1} ms ({:.0} ns/flow); resident growth of the \
         first cycle {per_flow:.0} bytes/flow",
        best[0] * 1e3,
        best[0] * 1e9 / f64::from(FLOWS),
        best[1] * 1e3,
        best[1] * 1e9 / f64::from(FLOWS),
    );
    // The parts: the flow key alone, and the map alone (by key text with SipHash, as
    // before flow ids, and by id), over the same keys.
    let m = super::measure::Measurer::new(&cfg).unwrap();
    let mut buf = String::new();
    let start = std::time::Instant::now();
    for e in &one {
        m.flow_key(&mut buf, e);
        std::hint::black_box(&buf);
    }
    let key_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(FLOWS);
    let keys: Vec<String> = one
        .iter()
        .map(|e| {
            m.flow_key(&mut buf, e);
            buf.clone()
        })
        .collect();
    let counters = super::measure::Counters {
        bi: 1.0,
        bo: 2.0,
        obs: at(0),
        seen: at(0),
    };
    let mut by_key_ns = [f64::MAX; 2];
    let mut by_id_ns = [f64::MAX; 2];
    for _ in 0..5 {
        let mut by_key = std::collections::HashMap::<String, super::measure::Counters>::new();
        let mut by_id = crate::event::flow_id::FlowMap::<super::measure::Counters>::default();
        for pass in 0..2 {
            let start = std::time::Instant::now();
            for k in &keys {
                match by_key.get_mut(k.as_str()) {
                    Some(c) => c.bi += 1.0,
                    None => {
                        by_key.insert(k.to_string(), counters.clone());
                    }
                }
            }
            let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(FLOWS);
            by_key_ns[pass] = by_key_ns[pass].min(ns);
            let start = std::time::Instant::now();
            for k in &keys {
                let id = FlowId::of(k);
                match by_id.get_mut(&id) {
                    Some(c) => c.bi += 1.0,
                    None => {
                        by_id.insert(id, counters.clone());
                    }
                }
            }
            let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(FLOWS);
            by_id_ns[pass] = by_id_ns[pass].min(ns);
        }
        assert_eq!((by_key.len(), by_id.len()), (keys.len(), keys.len()));
    }
    eprintln!(
        "  flow key alone {key_ns:.0} ns/flow; map by key text (SipHash, String per new \
         flow): first {:.0} ns, again {:.0} ns; map by flow id (xxh3-128 included): first \
         {:.0} ns, again {:.0} ns",
        by_key_ns[0], by_key_ns[1], by_id_ns[0], by_id_ns[1],
    );
}

/// The flow key of `rest("10.0.0.1", ..)`.
const REST_KEY: &str = "src.ip=10.0.0.1,dst.ip=10.0.0.9,service.port=443,service.proto=6";

/// What vigil saved before flow ids, for the config of
/// `snapshot_and_restore_keep_windows_and_flow_counters` after its first row (a rate
/// stage grouped by `src.ip`): the flow's counters and its rate in the group's window,
/// both under the flow key.
const SAVED_WITH_FLOW_KEYS: &str = r#"{"shape":{"alert_mode":"episode","mode":"rate","group_by":["src.ip"],"direction":"both","flow_key":null,"counters":["dst_bi","dst_bo","dbi","dbo","ddms"]},"watermark":{"newest":"2026-01-01T00:01:40Z","late":0},"skipped":{"unmeasured":0,"stale":0,"duplicates":0},"episodes":{"opened":0,"reported":0,"resolved":0,"updated":0},"flows":{"src.ip=10.0.0.1,dst.ip=10.0.0.9,service.port=443,service.proto=6":{"bi":0.0,"bo":1000000.0,"obs":"2026-01-01T00:01:40Z","seen":"2026-01-01T00:01:40Z"}},"volume":{},"rate":{"src.ip=10.0.0.1":{"flows":{"src.ip=10.0.0.1,dst.ip=10.0.0.9,service.port=443,service.proto=6":{"t":"2026-01-01T00:01:40Z","bps":79207.92079207921,"e":true}},"newest":"2026-01-01T00:01:40Z","samples":{"items":[{"time":"2026-01-01T00:01:40Z","source":"p.src","record":{"src":{"ip":"10.0.0.1"},"dst":{"ip":"10.0.0.9"},"service":{"port":443,"proto":6},"num_connections":1,"timestamp_range":{"first_detected":"2026-01-01T00:00:00+00:00","last_detected":"2026-01-01T00:01:40+00:00"},"dst_bi":0,"dst_bo":1000000,"policy_decision":"allowed"}}]}}}}"#;

#[test]
fn a_state_saved_with_flow_keys_restores_by_id() {
    let cfg = json!({"threshold": 80, "group_by": ["src.ip"]});
    let mut r = stage(cfg);
    assert!(r.restore(SAVED_WITH_FLOW_KEYS, "p.bw"));
    assert_eq!(r.held(), (1, 1));
    // The flow's next row continues it: the difference is exact (not its lifetime bytes
    // again, not an estimate), and its rate replaces the first sighting's in the window
    // (a second entry would make it 80.08).
    let a = feed(&mut r, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 80.0);
    assert_eq!(a[0].estimate, None);
    // Saved again, it is in the new form only.
    let snap: Value = serde_json::from_str(&snapshot_text(&r).unwrap()).unwrap();
    assert!(snap.get("flows").is_none(), "{snap}");
    let ids: Vec<&String> = snap["flow_ids"].as_object().unwrap().keys().collect();
    assert_eq!(ids, [&FlowId::of(REST_KEY).to_string()]);
    // A change of a field of the shape still resets such a state.
    let mut r = stage(json!({"mode": "volume", "threshold": 80, "group_by": ["src.ip"]}));
    assert!(!r.restore(SAVED_WITH_FLOW_KEYS, "p.bw"));
    assert_eq!(r.held(), (0, 0));
    // The row is a first sighting again.
    let a = feed(&mut r, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160);
    assert_eq!(a[0].estimate.as_deref(), Some("lower_bound"));
}

#[test]
fn a_state_saved_with_flow_ids_round_trips() {
    let cfg = json!({"threshold": 80, "group_by": ["src.ip"]});
    let mut s = stage(cfg.clone());
    assert!(feed(&mut s, rest("10.0.0.1", 0, 1_000_000, 0, 100), 100).is_empty());
    assert!(feed(&mut s, rest("10.0.0.2", 0, 1_000_000, 0, 100), 100).is_empty());
    let text = snapshot_text(&s).unwrap();
    let snap: Value = serde_json::from_str(&text).unwrap();
    let id = FlowId::of(REST_KEY).to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(snap["flow_ids"].as_object().unwrap().len(), 2);
    assert_eq!(snap["flow_ids"][&id]["bo"], 1_000_000.0);
    assert!(snap.get("flows").is_none());
    let window = &snap["rate"]["src.ip=10.0.0.1"];
    assert_eq!(window["flow_ids"][&id]["e"], true);
    assert!(window.get("flows").is_none());
    assert!(!text.contains(REST_KEY));
    // Restored, it saves the same again and carries on as the stage would have.
    let mut r = stage(cfg);
    assert!(r.restore(&text, "p.bw"));
    assert_eq!(r.held(), (2, 2));
    let again: Value = serde_json::from_str(&snapshot_text(&r).unwrap()).unwrap();
    assert_eq!(again, snap);
    for x in [&mut s, &mut r] {
        let a = feed(x, rest("10.0.0.1", 0, 601_000_000, 0, 160), 160);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].value, 80.0);
        assert_eq!(a[0].estimate, None);
    }
}

#[test]
fn a_remembered_flow_is_small() {
    use super::measure::Counters;
    use std::mem::{align_of, size_of};
    // Two counters and two exact times; the id; no allocation of its own.
    assert_eq!(size_of::<Counters>(), 40);
    assert_eq!(size_of::<FlowId>(), 16);
    assert_eq!(size_of::<(FlowId, Counters)>(), 56);
    assert_eq!(align_of::<(FlowId, Counters)>(), 8);
    // A flow's rate in a rate window.
    assert_eq!(size_of::<(FlowId, super::stage::FlowRate)>(), 48);
}
