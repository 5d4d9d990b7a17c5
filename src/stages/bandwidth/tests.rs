use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
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
