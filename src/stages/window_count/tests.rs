use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::event::{Alert, AlertStatus, Event, Timestamp};
use crate::node::{Stage, snapshot_text};

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
}

fn at(ms: i64) -> Timestamp {
    t0() + Duration::milliseconds(ms)
}

fn cfg(v: Value) -> WindowCountConfig {
    let mut base = json!({"inputs": ["in"], "window": "10s", "threshold": 3});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn stage(v: Value) -> WindowCountStage {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    let t = AlertTemplates::compile(
        &c.alert,
        &c.default_title(),
        &c.default_summary(),
        "p",
        "wc",
    )
    .unwrap();
    WindowCountStage::new(&c, t, Duration::minutes(1)).unwrap()
}

use crate::diagnostic::Problems;
use crate::stages::alerting::AlertTemplates;

fn ev(data: Value, ms: i64) -> Arc<Event> {
    Arc::new(Event::from_record(data, "p.src".into(), at(ms)))
}

fn feed(s: &mut WindowCountStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(ev(data, ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

#[test]
fn an_event_exactly_a_window_later_pushes_the_first_out() {
    // threshold 2, window 10 s: events at 0 and 10 s are not in one window.
    let mut s = stage(json!({"threshold": 2}));
    assert!(feed(&mut s, json!({}), 0).is_empty());
    assert!(feed(&mut s, json!({}), 10_000).is_empty());
    // ...but at 10 s and 19.999 s they are.
    let a = feed(&mut s, json!({}), 19_999);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 2.0);
    assert_eq!(a[0].window.end, at(19_999));
    assert_eq!(a[0].window.start, at(9_999));

    let mut s = stage(json!({"threshold": 2}));
    assert!(feed(&mut s, json!({}), 0).is_empty());
    let a = feed(&mut s, json!({}), 9_999);
    assert_eq!(a.len(), 1, "W - 1 ms apart is inside the window");
    assert_eq!(a[0].title, "2 events in 10s");
}

#[test]
fn out_of_order_events_inside_the_window_count() {
    let mut s = stage(json!({"threshold": 3}));
    assert!(feed(&mut s, json!({"n": 1}), 5_000).is_empty());
    assert!(feed(&mut s, json!({"n": 2}), 2_000).is_empty());
    let a = feed(&mut s, json!({"n": 3}), 4_000);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 3.0);
    let times: Vec<_> = a[0].samples.iter().map(|x| x.time).collect();
    assert_eq!(times, vec![at(2_000), at(4_000), at(5_000)]);
    assert_eq!(s.late(), 0);
}

#[test]
fn late_events_are_counted_and_not_mixed_in() {
    let mut s = stage(json!({"threshold": 2}));
    assert!(feed(&mut s, json!({}), 20_000).is_empty());
    // 10 s or more behind the watermark: late, even for another key.
    assert!(feed(&mut s, json!({}), 10_000).is_empty());
    assert!(feed(&mut s, json!({}), 1_000).is_empty());
    assert_eq!(s.late(), 2);
    let snap: Value = serde_json::from_str(&snapshot_text(&s).unwrap()).unwrap();
    assert_eq!(snap["watermark"]["late"], 2);
    // The window still holds only the first event: one more fires with value 2.
    let a = feed(&mut s, json!({}), 20_500);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 2.0);
}

#[test]
fn ten_thousand_keys_fire_independently() {
    let mut s = stage(json!({"threshold": 3, "group_by": ["src.ip"]}));
    let mut alerts = 0;
    for round in 0..3 {
        for k in 0..10_000 {
            let ip = format!("10.0.{}.{}", k / 256, k % 256);
            alerts += feed(&mut s, json!({"src": {"ip": ip}}), round * 100 + k % 7).len();
        }
    }
    assert_eq!(alerts, 10_000);
    // Two more rounds: no key reaches 3 again.
    for round in 3..5 {
        for k in 0..10_000 {
            let ip = format!("10.0.{}.{}", k / 256, k % 256);
            alerts += feed(&mut s, json!({"src": {"ip": ip}}), round * 100).len();
        }
    }
    assert_eq!(alerts, 10_000);
    assert_eq!(s.keys(), 10_000);
    // A tick after the window has passed (in event time) drops every key.
    feed(&mut s, json!({"src": {"ip": "192.0.2.1"}}), 60_000);
    s.tick(at(60_000), &mut Vec::new());
    assert_eq!(s.keys(), 1);
}

#[test]
fn a_missing_group_field_and_an_empty_string_are_different_keys() {
    let mut s = stage(json!({"threshold": 2, "group_by": ["user"]}));
    assert!(feed(&mut s, json!({"user": ""}), 0).is_empty());
    assert!(feed(&mut s, json!({}), 1).is_empty());
    let a = feed(&mut s, json!({"user": ""}), 2);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].group_key, "user=\"\"");
    assert_eq!(a[0].title, "2 events from user=\"\" in 10s");
    let a = feed(&mut s, json!({}), 3);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].group_key, "user=<missing>");
    assert_eq!(a[0].group, json!({"user": null}));
}

#[test]
fn sum_adds_a_field_and_skips_missing_or_bad_values() {
    let mut s = stage(json!({"threshold": 100, "sum": "num_connections", "group_by": ["src.ip"]}));
    let src = json!({"ip": "10.0.0.1"});
    assert!(feed(&mut s, json!({"src": src, "num_connections": 60}), 0).is_empty());
    assert!(feed(&mut s, json!({"src": src}), 1).is_empty());
    assert!(feed(&mut s, json!({"src": src, "num_connections": "lots"}), 2).is_empty());
    assert!(feed(&mut s, json!({"src": src, "num_connections": -500}), 3).is_empty());
    assert_eq!(s.skipped(), 3);
    let a = feed(&mut s, json!({"src": src, "num_connections": "40"}), 4);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 100.0);
    assert_eq!(a[0].threshold, 100.0);
    assert_eq!(
        a[0].title,
        "100 num_connections from src.ip=10.0.0.1 in 10s"
    );
    assert_eq!(a[0].samples.len(), 5);
}

#[test]
fn threshold_one_fires_on_the_first_event() {
    let mut s =
        stage(json!({"threshold": 1, "group_by": ["host"], "alert": {"mode": "each_crossing"}}));
    let a = feed(&mut s, json!({"host": "a"}), 0);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 1.0);
    assert_eq!(a[0].samples.len(), 1);
    assert_eq!(a[0].samples[0].value(), json!({"host": "a"}));
    assert_eq!(feed(&mut s, json!({"host": "a"}), 1).len(), 1);
    assert_eq!(feed(&mut s, json!({"host": "b"}), 1).len(), 1);
}

#[test]
fn the_window_restarts_after_firing_and_older_events_are_late_for_the_key() {
    let mut s = stage(json!({"threshold": 5, "alert": {"mode": "each_crossing"}}));
    let mut alerts = Vec::new();
    for i in 0..10 {
        alerts.extend(feed(&mut s, json!({"i": i}), 1_000 + i));
    }
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].value, 5.0);
    assert_eq!(alerts[1].value, 5.0);
    assert_eq!(alerts[1].samples[0].value(), json!({"i": 5}));
    assert_ne!(alerts[0].id, alerts[1].id);
    // Inside the window but before the last alert's end: late for the key.
    for i in 0..5 {
        assert!(feed(&mut s, json!({}), 1_000 + i).is_empty());
    }
    assert_eq!(s.late(), 5);
    // At or after the end: a new window.
    for i in 0..4 {
        assert!(feed(&mut s, json!({}), 1_009 + i).is_empty());
    }
    assert_eq!(feed(&mut s, json!({}), 1_020).len(), 1);
}

#[test]
fn snapshot_and_restore_keep_a_half_full_window() {
    let mut s = stage(json!({"threshold": 10, "group_by": ["src.ip"]}));
    for i in 0..9 {
        assert!(feed(&mut s, json!({"src": {"ip": "10.0.0.1"}}), i * 100).is_empty());
    }
    // JSON text, as the store keeps it.
    let snap = snapshot_text(&s).unwrap();
    let mut r = stage(json!({"threshold": 10, "group_by": ["src.ip"]}));
    r.restore(&snap, "p.wc");
    let a = feed(&mut r, json!({"src": {"ip": "10.0.0.1"}}), 1_000);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 10.0);
    assert_eq!(a[0].samples.len(), 5);
    assert_eq!(a[0].samples[0].time, at(0));

    // A threshold change keeps the state: 9 held, threshold 9 → the next event fires at 10.
    let mut r =
        stage(json!({"threshold": 9, "group_by": ["src.ip"], "alert": {"severity": "high"}}));
    r.restore(&snap, "p.wc");
    assert_eq!(
        feed(&mut r, json!({"src": {"ip": "10.0.0.1"}}), 1_000).len(),
        1
    );

    // A group_by change resets it.
    let mut r = stage(json!({"threshold": 10, "group_by": ["dst.ip"]}));
    r.restore(&snap, "p.wc");
    assert_eq!(r.keys(), 0);
    assert!(feed(&mut r, json!({"dst": {"ip": "10.0.0.1"}}), 1_000).is_empty());
    // So does adding `sum`.
    let mut r = stage(json!({"threshold": 10, "group_by": ["src.ip"], "sum": "n"}));
    r.restore(&snap, "p.wc");
    assert_eq!(r.keys(), 0);
}

/// A state saved by the version that built a JSON tree first (written by `vigil run`, a
/// 1 h window grouped by `src`: two events of `a`, one of `b`) restores, and snapshots
/// to the same state.
#[test]
fn a_state_saved_by_an_earlier_version_restores() {
    const SAVED: &str = r#"{"shape":{"group_by":["src"],"sum":null,"mode":"episode"},"watermark":{"newest":"2024-01-01T00:00:20Z","late":0},"skipped":0,"episodes":{"opened":0,"reported":0,"resolved":0,"updated":0},"keys":{"src=a":{"entries":[{"t":"2024-01-01T00:00:00Z","w":1.0},{"t":"2024-01-01T00:00:10Z","w":1.0}],"newest":"2024-01-01T00:00:10Z","samples":{"items":[{"time":"2024-01-01T00:00:00Z","source":"p.in","record":{"ts":"2024-01-01T00:00:00Z","src":"a"}}]}},"src=b":{"entries":[{"t":"2024-01-01T00:00:20Z","w":1.0}],"newest":"2024-01-01T00:00:20Z","samples":{"items":[{"time":"2024-01-01T00:00:20Z","source":"p.in","record":{"ts":"2024-01-01T00:00:20Z","src":"b"}}]}}}}"#;
    let mut s = stage(json!({"window": "1h", "group_by": ["src"], "alert": {"samples": 1}}));
    assert!(s.restore(SAVED, "p.wc"));
    assert_eq!(s.keys(), 2);
    // The same state (keys come out in the key map's order, not the saved one).
    let again: serde_json::Value =
        serde_json::from_str(&snapshot_text(&s).expect("a snapshot")).expect("JSON");
    let saved: serde_json::Value = serde_json::from_str(SAVED).expect("JSON");
    assert_eq!(again, saved);
    // The third event of `a` within the hour fires, counting the two saved.
    let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 30).single().unwrap();
    let mut out = Vec::new();
    s.process(
        Arc::new(Event::from_record(json!({"src": "a"}), "p.src".into(), t)),
        &mut out,
    );
    let alerts: Vec<f64> = out
        .iter()
        .filter_map(|e| e.alert())
        .map(|a| a.value)
        .collect();
    assert_eq!(alerts, vec![3.0]);
}

#[test]
fn build_restores_from_the_store() {
    let c = cfg(json!({"threshold": 2}));
    let store = Arc::new(crate::store::Store::in_memory().unwrap());
    let cx = crate::node::BuildContext {
        id: "p.wc".into(),
        pipeline: "p".into(),
        node: "wc".into(),
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
    s.process(ev(json!({}), 0), &mut out);
    store
        .set_stage_state(
            "p.wc",
            vec![snapshot_text(s.as_ref()).unwrap().into_bytes()],
        )
        .unwrap();
    let mut s = c.build(&cx).unwrap();
    s.process(ev(json!({}), 1), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn check_rejects_zero_window_and_threshold_and_bad_paths() {
    let c = cfg(json!({"window": "0s", "threshold": 0, "sum": "a..b", "group_by": ["x", ""]}));
    let mut p = Problems::default();
    c.check(&mut p);
    let pointers: Vec<&str> = p.items.iter().map(|i| i.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        vec!["/window", "/threshold", "/sum", "/group_by/1"]
    );
}

/// Feeds `data` at `ms` and ticks at the same time, as the runtime does every second.
fn feed_and_tick(s: &mut WindowCountStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(ev(data, ms), &mut out);
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn tick(s: &mut WindowCountStage, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

#[test]
fn a_key_held_over_the_threshold_for_an_hour_is_one_episode() {
    // One event a second for an hour, 30 in a minute alerts: one firing alert, an update
    // report at most once a minute (history_interval), one resolved alert.
    let mut s = stage(json!({"window": "1m", "threshold": 30, "group_by": ["src.ip"]}));
    let mut alerts = Vec::new();
    for i in 0..3600 {
        alerts.extend(feed_and_tick(
            &mut s,
            json!({"src": {"ip": "10.0.0.1"}}),
            i * 1000,
        ));
    }
    for i in 3600..3700 {
        alerts.extend(tick(&mut s, i * 1000));
    }
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing && a.updates == 0)
        .collect();
    let updates: Vec<&Alert> = alerts.iter().filter(|a| a.is_update()).collect();
    let resolved: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert_eq!(firing.len(), 1, "one firing alert");
    assert_eq!(resolved.len(), 1, "one resolved alert");
    assert_eq!(firing[0].value, 30.0, "the window's total when it opened");
    assert_eq!(firing[0].first_seen, at(29_000));
    // Every report is the same alert.
    assert!(alerts.iter().all(|a| a.id == firing[0].id));
    // Updates: at most one a minute, each with the window's total then (60 events).
    assert!(
        (55..=60).contains(&updates.len()),
        "{} update reports",
        updates.len()
    );
    for pair in updates.windows(2) {
        assert!(pair[1].updates > pair[0].updates);
        // One event a second: at least a minute's worth of updates between reports.
        assert!(pair[1].updates - pair[0].updates >= 30, "{pair:?}");
    }
    assert!(updates.iter().all(|a| a.value == 60.0));
    // Resolved a minute after the last event (resolve_after = window), with the last seen
    // time and the count of updates of the whole episode.
    assert_eq!(resolved[0].last_seen, at(3_599_000));
    assert_eq!(resolved[0].first_seen, at(29_000));
    assert_eq!(resolved[0].updates, 3570);
    assert_eq!(s.episodes().opened, 1);
    assert_eq!(s.episodes().resolved, 1);
    // An event a window later finds the window below the threshold: nothing fires.
    assert!(feed_and_tick(&mut s, json!({"src": {"ip": "10.0.0.1"}}), 3_700_000).is_empty());
}

#[test]
fn an_episode_resolves_when_its_window_falls_below_the_threshold() {
    let mut s = stage(json!({"window": "10s", "threshold": 3, "group_by": ["k"]}));
    let mut got = Vec::new();
    for ms in [0, 1_000, 2_000, 3_000] {
        got.extend(feed_and_tick(&mut s, json!({"k": "a"}), ms));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, AlertStatus::Firing);
    assert_eq!(got[0].value, 3.0);
    // Another key moves the watermark past the window: the episode of `a` resolves on
    // the next tick, with the id it opened with.
    let more = feed_and_tick(&mut s, json!({"k": "b"}), 12_500);
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0].status, AlertStatus::Resolved);
    assert_eq!(more[0].id, got[0].id);
    assert_eq!(more[0].group_key, "k=a");
    // Dated when it fell below: at 11 s the event at 1 s left the window, leaving 2.
    assert_eq!(more[0].window.end, at(11_000));
    assert_eq!(
        more[0].value, 2.0,
        "the events at 2 s and 3 s are in (1 s, 11 s]"
    );
    assert_eq!(more[0].updates, 1);
    // The key crossing again is a new episode with a new id.
    let mut again = Vec::new();
    for ms in [13_000, 13_100, 13_200] {
        again.extend(feed_and_tick(&mut s, json!({"k": "a"}), ms));
    }
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status, AlertStatus::Firing);
    assert_ne!(again[0].id, got[0].id);
}

#[test]
fn updates_make_no_report_until_the_history_interval_and_the_state_survives_a_restore() {
    let mut s = stage(json!({"window": "1h", "threshold": 2}));
    assert!(feed_and_tick(&mut s, json!({}), 0).is_empty());
    assert_eq!(feed_and_tick(&mut s, json!({}), 1_000).len(), 1);
    for i in 2..50 {
        assert!(feed_and_tick(&mut s, json!({}), i * 1_000).is_empty());
    }
    assert_eq!(s.episodes().updated, 48);
    // Restored elsewhere, the open episode goes on: no second firing alert.
    let snap = snapshot_text(&s).unwrap();
    let mut r = stage(json!({"window": "1h", "threshold": 2}));
    r.restore(&snap, "p.wc");
    assert!(feed_and_tick(&mut r, json!({}), 50_000).is_empty());
    let a = tick(&mut r, 61_000);
    assert_eq!(a.len(), 1, "an update a minute after the opening");
    assert!(a[0].is_update());
    assert_eq!(a[0].value, 51.0);
    assert_eq!(a[0].updates, 49);
}

#[test]
fn each_crossing_keeps_the_old_behaviour() {
    // 59 of 60 in an hour: fires once at the 59th, then the window starts again.
    let mut s = stage(json!({"window": "1h", "threshold": 59, "alert": {"mode": "each_crossing"}}));
    let mut alerts = Vec::new();
    for m in 0..60 {
        alerts.extend(feed_and_tick(&mut s, json!({}), m * 60_000));
    }
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].value, 59.0);
    assert_eq!(alerts[0].updates, 0);
    assert_eq!(alerts[0].first_seen, alerts[0].window.end);
    assert_eq!(s.episodes().opened, 0);
    let mut more = Vec::new();
    for m in 60..117 {
        more.extend(feed_and_tick(&mut s, json!({}), m * 60_000));
    }
    assert!(
        more.is_empty(),
        "the window was cleared: 59 more are needed"
    );
    assert_eq!(feed_and_tick(&mut s, json!({}), 117 * 60_000).len(), 1);
}

#[test]
fn an_episode_ends_when_its_window_fell_below_even_if_nothing_ticked_meanwhile() {
    // A replay: no tick between the events. The next event of the key, long after, finds
    // the episode ended 10 s after the event that made the window fall below — the same
    // resolution a live run with ticks makes.
    let mut s = stage(json!({"window": "10s", "threshold": 2, "group_by": ["k"]}));
    let mut got = Vec::new();
    for ms in [0, 1_000, 5_000] {
        got.extend(feed(&mut s, json!({"k": "a"}), ms));
    }
    assert_eq!(got.len(), 1);
    let late = feed(&mut s, json!({"k": "a"}), 60_000);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].status, AlertStatus::Resolved);
    assert_eq!(
        late[0].window.end,
        at(11_000),
        "the event at 1 s left at 11 s"
    );
    assert_eq!(late[0].value, 1.0);
    // And a live run with a tick at each event agrees.
    let mut live = stage(json!({"window": "10s", "threshold": 2, "group_by": ["k"]}));
    let mut ticked = Vec::new();
    for ms in [0, 1_000, 5_000] {
        ticked.extend(feed_and_tick(&mut live, json!({"k": "a"}), ms));
    }
    ticked.extend(feed_and_tick(&mut live, json!({"k": "b"}), 30_000));
    let resolved: Vec<&Alert> = ticked
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].window.end, late[0].window.end);
    assert_eq!(resolved[0].id, late[0].id);
}

/// Past `max_keys` the keys seen least recently go, a tenth at a time, counted as
/// evicted; an evicted key's open episode is resolved, not left open for ever; a key
/// seen lately stays.
#[test]
fn max_keys_evicts_the_least_recently_seen_and_resolves_their_episodes() {
    let counters = Arc::new(crate::node::NodeCounters::default());
    let mut s = stage(json!({"threshold": 1, "group_by": ["k"], "max_keys": 10, "window": "1h"}))
        .counting_into(counters.clone());
    // Key 0 opens an episode first; it is then the least recently seen.
    let opened = feed(&mut s, json!({"k": 0}), 0);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].status, AlertStatus::Firing);
    let mut resolved = Vec::new();
    for k in 1..=10 {
        for a in feed(&mut s, json!({"k": k}), k * 1000) {
            if a.status == AlertStatus::Resolved {
                resolved.push(a.group_key.clone());
            }
        }
    }
    // 11 keys > 10: the oldest tenth (keep 9) went: keys 0 and 1.
    assert_eq!(s.keys(), 9);
    assert_eq!(counters.dropped(), [("evicted", 2)]);
    assert!(resolved.iter().any(|k| k == "k=0"), "{resolved:?}");
    for k in 11..1000 {
        feed(&mut s, json!({"k": k}), k * 1000);
        assert!(s.keys() <= 10);
    }
    let evicted = counters.dropped()[0].1;
    assert_eq!(evicted, 1000 - s.keys() as u64);
    // The newest key is still held: another event of it makes no new key and evicts
    // nothing.
    let held = s.keys();
    feed(&mut s, json!({"k": 999}), 999_500);
    assert_eq!(s.keys(), held);
    assert_eq!(counters.dropped()[0].1, evicted);
}
