use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
use crate::event::{Alert, AlertStatus, Event, Timestamp};
use crate::node::{NodeCounters, Stage, snapshot_text};
use crate::stages::alerting::AlertTemplates;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
}

fn at(ms: i64) -> Timestamp {
    t0() + Duration::milliseconds(ms)
}

const MIN: i64 = 60_000;

fn cfg(v: Value) -> DistinctCountConfig {
    let mut base = json!({"inputs": ["in"], "field": "user", "window": "15m", "threshold": 5});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn templates(c: &DistinctCountConfig) -> AlertTemplates {
    AlertTemplates::compile(
        &c.alert,
        &c.default_title(),
        &c.default_summary(),
        "p",
        "dc",
    )
    .unwrap()
}

/// A stage of `v` (over the defaults above), hashing under a fixed key.
fn stage(v: Value) -> DistinctCountStage {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(!p.has_errors(), "{:?}", p.items);
    DistinctCountStage::new(&c, templates(&c), Duration::minutes(1))
        .unwrap()
        .with_hash_key(7, 11)
}

fn ev(data: Value, ms: i64) -> Arc<Event> {
    Arc::new(Event::from_record(data, "p.src".into(), at(ms)))
}

fn feed(s: &mut DistinctCountStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(ev(data, ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn feed_and_tick(s: &mut DistinctCountStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(ev(data, ms), &mut out);
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn tick(s: &mut DistinctCountStage, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn login(user: &str, src: &str) -> Value {
    json!({"user": user, "src": {"ip": src}})
}

/// Issue 18's acceptance case: 4 users, a repeat, a 5th → one alert, on the 5th; values
/// 15 minutes later start a fresh window.
#[test]
fn four_users_a_repeat_and_a_fifth_fire_once_on_the_fifth() {
    let mut s = stage(json!({"group_by": ["src.ip"]}));
    let mut alerts = Vec::new();
    for (i, user) in ["alice", "bob", "carol", "dave", "bob"].iter().enumerate() {
        let got = feed_and_tick(&mut s, login(user, "10.0.0.1"), i as i64 * 1_000);
        assert!(got.is_empty(), "{user}: {got:?}");
    }
    alerts.extend(feed_and_tick(&mut s, login("erin", "10.0.0.1"), 5_000));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.value, 5.0);
    assert_eq!(a.threshold, 5.0);
    assert_eq!(a.estimate, None, "counted exactly");
    assert_eq!(a.first_seen, at(5_000), "the 5th value's event");
    assert_eq!(a.group_key, "src.ip=10.0.0.1");
    assert_eq!(
        a.fields["distinct_values"],
        json!(["alice", "bob", "carol", "dave", "erin"])
    );
    assert_eq!(a.fields["distinct_values_omitted"], 0);
    assert_eq!(a.fields["distinct_method"], "exact");
    assert_eq!(a.title, "5 distinct user from src.ip=10.0.0.1 in 15m");
    assert!(
        a.summary
            .ends_with("reached the threshold 5 in the window 2025-12-31T23:45:05Z to 2026-01-01T00:00:05Z: alice, bob, carol, dave, erin."),
        "{}",
        a.summary
    );
    // More of the same values, and a 6th: the episode goes on, no new alert.
    assert!(feed_and_tick(&mut s, login("alice", "10.0.0.1"), 6_000).is_empty());
    assert!(feed_and_tick(&mut s, login("frank", "10.0.0.1"), 7_000).is_empty());

    // A fresh source: four values, then 15 minutes later four more. The first four are
    // out of the window (an event exactly a window older than the newest is out): no
    // alert from them.
    for (i, user) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
        assert!(feed(&mut s, login(user, "10.0.0.2"), 10_000 + i as i64).is_empty());
    }
    for (i, user) in ["u5", "u6", "u7", "u8"].iter().enumerate() {
        let got = feed(
            &mut s,
            login(user, "10.0.0.2"),
            10_000 + 15 * MIN + i as i64,
        );
        assert!(
            got.iter().all(|a| a.group_key != "src.ip=10.0.0.2"),
            "{user}: {got:?}"
        );
    }
    assert_eq!(s.count_of("src.ip=10.0.0.2"), Some((4, false)));
    // A fifth value in the new window fires, with the new window's values only.
    let got = feed(&mut s, login("u9", "10.0.0.2"), 10_000 + 15 * MIN + 10);
    let fired: Vec<&Alert> = got
        .iter()
        .filter(|a| a.group_key == "src.ip=10.0.0.2")
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].fields["distinct_values"],
        json!(["u5", "u6", "u7", "u8", "u9"])
    );
}

#[test]
fn a_value_seen_again_stays_in_the_window_and_one_not_seen_leaves() {
    let mut s = stage(json!({"threshold": 3, "window": "10s"}));
    assert!(feed(&mut s, json!({"user": "a"}), 0).is_empty());
    assert!(feed(&mut s, json!({"user": "b"}), 1_000).is_empty());
    // `a` again at 9 s: it stays in after 10 s, `b` leaves at 11 s.
    assert!(feed(&mut s, json!({"user": "a"}), 9_000).is_empty());
    let a = feed(&mut s, json!({"user": "c"}), 10_500);
    assert_eq!(
        a.len(),
        1,
        "a (9 s), b (1 s) and c (10.5 s) are in (0.5 s, 10.5 s]"
    );
    assert_eq!(a[0].value, 3.0);
    let mut s = stage(json!({"threshold": 3, "window": "10s"}));
    for (user, ms) in [("a", 0), ("b", 1_000), ("a", 9_000)] {
        feed(&mut s, json!({"user": user}), ms);
    }
    assert!(
        feed(&mut s, json!({"user": "c"}), 11_000).is_empty(),
        "b left at 11 s"
    );
    assert_eq!(s.count_of(""), Some((2, false)));
}

#[test]
fn a_number_and_its_string_are_one_value_and_tuples_count_pairs() {
    let mut s = stage(json!({"field": "service.port", "threshold": 3}));
    for (port, ms) in [(json!(22), 0), (json!("22"), 1), (json!(23), 2)] {
        assert!(feed(&mut s, json!({"service": {"port": port}}), ms).is_empty());
    }
    assert_eq!(s.count_of(""), Some((2, false)));
    let a = feed(&mut s, json!({"service": {"port": "80"}}), 3);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].fields["distinct_values"], json!([22, 23, 80]));

    let mut s = stage(json!({"field": ["dst.ip", "service.port"], "threshold": 3}));
    for (dst, port) in [("10.0.0.1", 22), ("10.0.0.1", 22), ("10.0.0.2", 22)] {
        assert!(
            feed(
                &mut s,
                json!({"dst": {"ip": dst}, "service": {"port": port}}),
                0
            )
            .is_empty()
        );
    }
    let a = feed(
        &mut s,
        json!({"dst": {"ip": "10.0.0.1"}, "service": {"port": 80}}),
        1,
    );
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].fields["distinct_values"],
        json!([["10.0.0.1", 22], ["10.0.0.2", 22], ["10.0.0.1", 80]])
    );
    assert_eq!(a[0].title, "3 distinct (dst.ip, service.port) in 15m");
    assert!(
        a[0].summary
            .ends_with(": (10.0.0.1, 22), (10.0.0.2, 22), (10.0.0.1, 80)."),
        "{}",
        a[0].summary
    );
}

#[test]
fn events_without_the_field_are_counted_and_count_no_value() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"field": ["user", "host"], "threshold": 1, "group_by": ["src"]}))
        .counting_into(counters.clone());
    assert!(feed(&mut s, json!({"src": "a", "user": "x"}), 0).is_empty());
    assert!(feed(&mut s, json!({"src": "a", "user": null, "host": "h"}), 1).is_empty());
    assert!(feed(&mut s, json!({"src": "a"}), 2).is_empty());
    assert_eq!(s.missing(), 3);
    assert_eq!(s.keys(), 0, "no key is made for an event without a value");
    assert_eq!(counters.dropped(), [("unmeasured", 3)]);
    // An empty string is a value.
    assert_eq!(
        feed(&mut s, json!({"src": "a", "user": "", "host": "h"}), 3).len(),
        1
    );
    let snap: Value = serde_json::from_str(&snapshot_text(&s).unwrap()).unwrap();
    assert_eq!(snap["missing"], 3);
}

#[test]
fn values_shown_are_bounded_and_the_rest_counted() {
    let mut s = stage(json!({"threshold": 30, "values_shown": 20}));
    let mut alerts = Vec::new();
    for i in 0..30 {
        alerts.extend(feed(&mut s, json!({"user": format!("u{i:02}")}), i));
    }
    assert_eq!(alerts.len(), 1);
    let values = alerts[0].fields["distinct_values"].as_array().unwrap();
    assert_eq!(values.len(), 20);
    assert_eq!(values[0], "u00");
    assert_eq!(values[19], "u19");
    assert_eq!(alerts[0].fields["distinct_values_omitted"], 10);
    assert!(
        alerts[0].summary.ends_with("u19 and 10 more."),
        "{}",
        alerts[0].summary
    );
}

/// The truth and an estimate: within `pct` percent.
fn within(estimate: f64, truth: f64, pct: f64) -> bool {
    (estimate - truth).abs() <= truth * pct / 100.0
}

/// Past `exact_up_to` a key is estimated: its alerts say so, and 100,000 distinct values
/// are counted within a few percent (the standard error is 0.81%: 3% is over 3.5 of it).
#[test]
fn past_exact_up_to_the_count_is_an_estimate_within_a_few_percent() {
    let mut s = stage(json!({
        "field": "service.port",
        "window": "1h",
        "threshold": 50_000,
        "exact_up_to": 1_000,
        "group_by": ["src.ip"]
    }));
    let key = "src.ip=10.9.9.9";
    let mut alerts = Vec::new();
    let mut fired_at = None;
    for i in 0..100_000i64 {
        let got = feed(
            &mut s,
            json!({"src": {"ip": "10.9.9.9"}, "service": {"port": i}}),
            i / 100,
        );
        if !got.is_empty() && fired_at.is_none() {
            fired_at = Some(i + 1);
        }
        alerts.extend(got);
        if i == 999 {
            assert_eq!(s.count_of(key), Some((1_000, false)), "exact up to 1000");
        }
        if i == 1_000 {
            let (n, estimated) = s.count_of(key).unwrap();
            assert!(estimated, "the 1001st value switches to the estimate");
            assert!(within(n as f64, 1_001.0, 3.0), "{n}");
        }
    }
    let (n, estimated) = s.count_of(key).unwrap();
    assert!(estimated);
    assert!(within(n as f64, 100_000.0, 3.0), "{n} for 100,000");
    // One alert, at about the 50,000th value, marked as an estimate.
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.estimate.as_deref(), Some("approximate"));
    assert_eq!(a.fields["distinct_method"], "hyperloglog");
    assert!(a.value >= 50_000.0);
    let truth = fired_at.unwrap() as f64;
    assert!(
        within(a.value, truth, 3.0),
        "{} when {truth} were seen",
        a.value
    );
    assert!(
        a.summary.contains("(estimated, within about 2%)"),
        "{}",
        a.summary
    );
    // The first values seen are still listed (20 by default).
    assert_eq!(
        a.fields["distinct_values"].as_array().map(Vec::len),
        Some(20)
    );
    assert_eq!(a.fields["distinct_values"][0], 0);

    // An hour on, every bucket has left: the key counts exactly again from its new values.
    for i in 0..3 {
        feed(
            &mut s,
            json!({"src": {"ip": "10.9.9.9"}, "service": {"port": i}}),
            2 * 60 * MIN + i,
        );
    }
    assert_eq!(s.count_of(key), Some((3, false)));
}

/// The estimate slides: values older than the window leave, a bucket at a time.
#[test]
fn an_estimated_key_forgets_values_as_the_window_slides() {
    let mut s = stage(json!({"window": "16m", "threshold": 1_000_000, "exact_up_to": 100}));
    // 5,000 values in the first 4 minutes, then 1,000 in minute 10.
    for i in 0..5_000i64 {
        feed(&mut s, json!({"user": i}), i * 48);
    }
    for i in 0..1_000i64 {
        feed(&mut s, json!({"user": 10_000 + i}), 10 * MIN + i * 60);
    }
    let (n, estimated) = s.count_of("").unwrap();
    assert!(estimated && within(n as f64, 6_000.0, 3.0), "{n}");
    // At 21 min the window is (5 min, 21 min]: the first 4 minutes have left (their
    // buckets end by 5 min), minute 10's values are in.
    feed(&mut s, json!({"user": "late-comer"}), 21 * MIN);
    let (n, _) = s.count_of("").unwrap();
    assert!(within(n as f64, 1_001.0, 3.0), "{n}");
}

#[test]
fn a_restart_keeps_the_counts_exact_and_estimated() {
    let shape = json!({"group_by": ["src.ip"], "threshold": 5, "exact_up_to": 500});
    let mut s = stage(shape.clone());
    for user in ["a", "b", "c"] {
        assert!(feed(&mut s, login(user, "10.0.0.1"), 0).is_empty());
    }
    for i in 0..2_000 {
        feed(&mut s, login(&format!("x{i}"), "10.0.0.2"), 1);
    }
    let big = s.count_of("src.ip=10.0.0.2").unwrap();
    assert!(big.1);
    let snap = snapshot_text(&s).unwrap();

    // Restored in a stage that drew another hash key: the saved key is used, so the
    // values seen before are recognised.
    let c = cfg(shape.clone());
    let mut r = DistinctCountStage::new(&c, templates(&c), Duration::minutes(1)).unwrap();
    assert!(r.restore(&snap, "p.dc"));
    assert_eq!(r.count_of("src.ip=10.0.0.1"), Some((3, false)));
    assert_eq!(r.count_of("src.ip=10.0.0.2"), Some(big));
    assert!(
        feed(&mut r, login("a", "10.0.0.1"), 2).is_empty(),
        "a repeat"
    );
    assert!(feed(&mut r, login("d", "10.0.0.1"), 3).is_empty());
    let a = feed(&mut r, login("e", "10.0.0.1"), 4);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 5.0);
    assert_eq!(
        a[0].fields["distinct_values"],
        json!(["a", "b", "c", "d", "e"])
    );
    // The estimated key: its values again add (almost) nothing.
    for i in 0..2_000 {
        feed(&mut r, login(&format!("x{i}"), "10.0.0.2"), 5);
    }
    assert_eq!(r.count_of("src.ip=10.0.0.2"), Some(big));

    // A threshold change keeps the state; a change of field resets it.
    let mut r = stage(json!({"group_by": ["src.ip"], "threshold": 4}));
    assert!(r.restore(&snap, "p.dc"));
    assert_eq!(feed(&mut r, login("d", "10.0.0.1"), 2).len(), 1);
    let mut r = stage(json!({"group_by": ["src.ip"], "field": "host"}));
    assert!(!r.restore(&snap, "p.dc"));
    assert_eq!(r.keys(), 0);
}

#[test]
fn build_restores_from_the_store() {
    let c = cfg(json!({"threshold": 2}));
    let store = Arc::new(crate::store::Store::in_memory().unwrap());
    let cx = crate::node::BuildContext {
        id: "p.dc".into(),
        pipeline: "p".into(),
        node: "dc".into(),
        base_dir: ".".into(),
        state_dir: ".".into(),
        rejected_max_bytes: 1 << 24,
        clock: Arc::new(crate::time::WallClock),
        store: store.clone(),
        keep_state: true,
        public_url: crate::sinks::delivery::DEFAULT_PUBLIC_URL.into(),
        history_interval: chrono::Duration::minutes(1),
        rebuilt: false,
        counters: Default::default(),
    };
    let mut s = c.build(&cx).unwrap();
    let mut out = Vec::new();
    s.process(ev(json!({"user": "a"}), 0), &mut out);
    store
        .set_stage_state(
            "p.dc",
            vec![snapshot_text(s.as_ref()).unwrap().into_bytes()],
        )
        .unwrap();
    let mut s = c.build(&cx).unwrap();
    s.process(ev(json!({"user": "a"}), 1), &mut out);
    assert!(out.is_empty(), "the same value after a restart");
    s.process(ev(json!({"user": "b"}), 2), &mut out);
    assert_eq!(out.len(), 1);
}

/// Past `max_keys` the keys seen least recently go, a tenth at a time, counted as
/// evicted; an evicted key's open episode is resolved.
#[test]
fn max_keys_evicts_the_least_recently_seen_and_counts_them() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"threshold": 1, "group_by": ["k"], "max_keys": 10, "window": "1h"}))
        .counting_into(counters.clone());
    let opened = feed(&mut s, json!({"k": 0, "user": "a"}), 0);
    assert_eq!(opened.len(), 1);
    let mut resolved = Vec::new();
    for k in 1..=10 {
        for a in feed(&mut s, json!({"k": k, "user": "a"}), k * 1000) {
            if a.status == AlertStatus::Resolved {
                resolved.push(a.group_key.clone());
            }
        }
    }
    assert_eq!(s.keys(), 9);
    assert_eq!(counters.dropped(), [("evicted", 2)]);
    assert!(resolved.iter().any(|k| k == "k=0"), "{resolved:?}");
    for k in 11..1000 {
        feed(&mut s, json!({"k": k, "user": "a"}), k * 1000);
        assert!(s.keys() <= 10);
    }
    assert_eq!(counters.dropped()[0].1, 1000 - s.keys() as u64);
}

#[test]
fn an_episode_resolves_when_values_leave_and_the_next_crossing_is_new() {
    let mut s = stage(json!({"window": "10s", "threshold": 3, "group_by": ["k"]}));
    let mut got = Vec::new();
    for (user, ms) in [("a", 0), ("b", 1_000), ("c", 2_000), ("c", 3_000)] {
        got.extend(feed_and_tick(&mut s, json!({"k": "x", "user": user}), ms));
    }
    assert_eq!(got.len(), 1);
    // Another key moves the watermark on: `a` left at 10 s, so the episode ended then.
    let more = feed_and_tick(&mut s, json!({"k": "y", "user": "a"}), 12_500);
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].status, AlertStatus::Resolved);
    assert_eq!(more[0].id, got[0].id);
    assert_eq!(more[0].window.end, at(10_000));
    assert_eq!(more[0].value, 2.0);
    // Crossing again: a new episode.
    let mut again = Vec::new();
    for user in ["d", "e", "f"] {
        again.extend(feed_and_tick(
            &mut s,
            json!({"k": "x", "user": user}),
            13_000,
        ));
    }
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, got[0].id);
    // Quiet for `resolve_after` (the window): resolved on a tick.
    let end = tick(&mut s, 13_000 + 10_000);
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].status, AlertStatus::Resolved);
}

#[test]
fn each_crossing_fires_and_starts_the_window_again() {
    let mut s = stage(json!({"threshold": 2, "alert": {"mode": "each_crossing"}}));
    let mut alerts = Vec::new();
    for (i, user) in ["a", "b", "a", "b", "c"].iter().enumerate() {
        alerts.extend(feed(&mut s, json!({"user": user}), i as i64 * 1_000));
    }
    // a, b → fires; the window starts again: a, b → fires; c alone → nothing.
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts.iter().all(|a| a.value == 2.0 && a.updates == 0));
    assert_eq!(s.episodes().opened, 0);
    // Before the last alert's end: late for the key.
    assert!(feed(&mut s, json!({"user": "z"}), 2_500).is_empty());
    assert_eq!(s.late(), 1);
}

#[test]
fn late_events_are_counted_and_not_mixed_in() {
    let mut s = stage(json!({"threshold": 2, "window": "10s"}));
    assert!(feed(&mut s, json!({"user": "a"}), 20_000).is_empty());
    assert!(feed(&mut s, json!({"user": "b"}), 10_000).is_empty());
    assert_eq!(s.late(), 1);
    assert_eq!(s.count_of(""), Some((1, false)));
}

#[test]
fn check_names_what_to_fix() {
    let c = cfg(json!({"field": [], "window": "0s", "threshold": 0, "group_by": ["x", ""]}));
    let mut p = Problems::default();
    c.check(&mut p);
    let pointers: Vec<&str> = p.items.iter().map(|i| i.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        vec!["/field", "/window", "/threshold", "/group_by/1"]
    );
    assert!(
        p.items[0].message.contains("lists no field"),
        "{}",
        p.items[0].message
    );
    let c = cfg(json!({"field": ["a", "b..c"]}));
    let mut p = Problems::default();
    c.check(&mut p);
    assert_eq!(p.items[0].pointer, "/field/1");
    // A template may list the values.
    let c =
        cfg(json!({"alert": {"summary": "{{#each fields.distinct_values}}{{this}} {{/each}}"}}));
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    // A threshold only an estimate can reach is allowed, with a warning.
    let c = cfg(json!({"threshold": 20_000}));
    let mut p = Problems::default();
    c.check(&mut p);
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].pointer, "/threshold");
    assert!(
        p.items[0].message.contains("above `exact_up_to` 10000"),
        "{}",
        p.items[0].message
    );
    assert!(!p.has_errors());
    let c = cfg(json!({"alert": {"summary": "{{fields.nope}}"}}));
    let mut p = Problems::default();
    c.check(&mut p);
    assert_eq!(p.items[0].pointer, "/alert/summary");
}
