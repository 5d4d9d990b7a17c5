use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
use crate::event::{Alert, AlertStatus, Event, Timestamp};
use crate::node::{Stage, snapshot_text};
use crate::stages::alerting::AlertTemplates;
use crate::stages::filter::CompiledFilter;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
}

fn at(ms: i64) -> Timestamp {
    t0() + Duration::milliseconds(ms)
}

const MIN: i64 = 60_000;

fn cfg(v: Value) -> RatioConfig {
    let mut base = json!({
        "inputs": ["in"], "window": "10m",
        "match": {"policy_decision": ["blocked", "potentially_blocked"]},
        "threshold": 0.5, "min_count": 4, "group_by": ["src"],
    });
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn problems(v: Value) -> Vec<(String, String)> {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    p.items
        .iter()
        .map(|d| (d.pointer.clone(), d.message.clone()))
        .collect()
}

fn stage(v: Value) -> RatioStage {
    let found = problems(v.clone());
    assert!(found.is_empty(), "{found:?}");
    let c = cfg(v);
    let t = AlertTemplates::compile(&c.alert, &c.default_title(), &c.default_summary(), "p", "r")
        .unwrap();
    let m = CompiledFilter::conditions(&c.match_, &["match"]).unwrap();
    RatioStage::new(&c, m, t, Duration::minutes(1)).unwrap()
}

fn feed(s: &mut RatioStage, src: &str, decision: &str, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    let data = json!({"src": src, "policy_decision": decision, "n": ms});
    s.process(
        Arc::new(Event::from_record(data, "p.src".into(), at(ms))),
        &mut out,
    );
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn tick(s: &mut RatioStage, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

#[test]
fn three_of_four_blocked_alert_and_three_of_three_are_too_few() {
    let mut s = stage(json!({}));
    assert!(feed(&mut s, "a", "blocked", 0).is_empty());
    assert!(feed(&mut s, "a", "allowed", MIN).is_empty());
    assert!(feed(&mut s, "a", "potentially_blocked", 2 * MIN).is_empty());
    let a = feed(&mut s, "a", "blocked", 3 * MIN);
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.value, 0.75);
    assert_eq!(a.threshold, 0.5);
    assert_eq!(a.fields["matched"], 3);
    assert_eq!(a.fields["total"], 4);
    assert_eq!(a.group_key, "src=a");
    assert_eq!(
        a.title,
        "3 of 4 events of src=a match in 10m (share 0.75, alerts at 0.5)"
    );
    assert!(
        a.summary.starts_with(
            "3 of the 4 events in the window 2025-12-31T23:53:00Z to 2026-01-01T00:03:00Z match"
        ),
        "{}",
        a.summary
    );
    // Samples are of the matched events only.
    assert_eq!(a.samples.len(), 3);
    assert!(
        a.samples
            .iter()
            .all(|x| x.value()["policy_decision"] != "allowed")
    );

    // Three of three is a share of 1, but fewer than `min_count` events.
    let mut s = stage(json!({}));
    for i in 0..3 {
        assert!(feed(&mut s, "b", "blocked", i * MIN).is_empty());
    }
    assert!(tick(&mut s, 5 * MIN).is_empty());
    assert_eq!(s.episodes().opened, 0);
}

#[test]
fn a_share_falling_below_the_threshold_resolves_the_episode() {
    let mut s = stage(json!({}));
    let mut fired = Vec::new();
    for (i, d) in ["blocked", "blocked", "blocked", "allowed"]
        .iter()
        .enumerate()
    {
        fired.extend(feed(&mut s, "a", d, i as i64 * 1_000));
    }
    assert_eq!(fired.len(), 1);
    // 3 of 5: still at or over, updated in place.
    assert!(feed(&mut s, "a", "allowed", 4_000).is_empty());
    // 3 of 6 is exactly the threshold: still firing.
    assert!(feed(&mut s, "a", "allowed", 5_000).is_empty());
    // 3 of 7: under, resolved with the same id.
    let r = feed(&mut s, "a", "allowed", 6_000);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].id, fired[0].id);
    assert!((r[0].value - 3.0 / 7.0).abs() < 1e-12);
    assert_eq!(r[0].fields["matched"], 3);
    assert_eq!(r[0].fields["total"], 7);
    assert!(
        r[0].summary.starts_with("Over: 3 of the 7 events"),
        "{}",
        r[0].summary
    );
    assert_eq!(s.episodes().opened, 1);
    assert_eq!(s.episodes().resolved, 1);
}

#[test]
fn the_window_slides_and_old_events_leave_it() {
    let mut s = stage(json!({}));
    for (i, d) in ["blocked", "blocked", "blocked", "allowed"]
        .iter()
        .enumerate()
    {
        feed(&mut s, "a", d, i as i64 * MIN);
    }
    assert_eq!(s.episodes().opened, 1);
    // At 10:00 the event of minute 0 (blocked) left the window: 2 of 3, fewer than
    // `min_count`. An event at 11:30 resolves the episode, dated when it left.
    let r = feed(&mut s, "a", "allowed", 11 * MIN + 30_000);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].window.end, at(10 * MIN));

    // A tick closes an episode the same way when the key has no more events (another
    // key moves the watermark).
    let mut s = stage(json!({}));
    for (i, d) in ["blocked", "blocked", "blocked", "allowed"]
        .iter()
        .enumerate()
    {
        feed(&mut s, "a", d, i as i64 * MIN);
    }
    assert!(feed(&mut s, "b", "allowed", 12 * MIN).is_empty());
    let r = tick(&mut s, 12 * MIN);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].group_key, "src=a");
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].window.end, at(10 * MIN));

    // A fresh window later: the old events count no more.
    for (i, d) in ["blocked", "allowed", "allowed", "allowed"]
        .iter()
        .enumerate()
    {
        assert!(feed(&mut s, "a", d, 30 * MIN + i as i64 * 1_000).is_empty());
    }
    // Late: at or before the watermark − window.
    assert!(feed(&mut s, "a", "blocked", 20 * MIN).is_empty());
    assert_eq!(s.late(), 1);
}

#[test]
fn state_survives_a_restart_and_resets_when_match_changes() {
    let mut s = stage(json!({}));
    let mut fired = Vec::new();
    for (i, d) in ["blocked", "blocked", "blocked", "allowed"]
        .iter()
        .enumerate()
    {
        fired.extend(feed(&mut s, "a", d, i as i64 * 1_000));
    }
    assert_eq!(fired.len(), 1);
    let snap = snapshot_text(&s).unwrap();

    let mut r = stage(json!({}));
    assert!(r.restore(&snap, "p.r"));
    assert_eq!(r.episodes().opened, 1);
    assert_eq!(r.keys(), 1);
    // The window came back: 3 of 7 after three more allowed resolves the restored
    // episode, with its id.
    assert!(feed(&mut r, "a", "allowed", 4_000).is_empty());
    assert!(feed(&mut r, "a", "allowed", 5_000).is_empty());
    let back = feed(&mut r, "a", "allowed", 6_000);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].status, AlertStatus::Resolved);
    assert_eq!(back[0].id, fired[0].id);

    // A new threshold or window keeps the state; new conditions or grouping do not.
    let mut r = stage(json!({"threshold": 0.9, "window": "1h"}));
    assert!(r.restore(&snap, "p.r"));
    let mut r = stage(json!({"match": {"policy_decision": "blocked"}}));
    assert!(!r.restore(&snap, "p.r"));
    let mut r = stage(json!({"group_by": []}));
    assert!(!r.restore(&snap, "p.r"));
}

#[test]
fn each_crossing_alerts_at_every_crossing() {
    let mut s = stage(json!({"min_count": 2, "alert": {"mode": "each_crossing"}}));
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(feed(&mut s, "a", "blocked", i * 1_000));
    }
    // Two blocked of two fire, and the window starts again empty: three alerts.
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|a| !a.episode && a.value == 1.0));
    assert_eq!(got[0].fields["total"], 2);
}

#[test]
fn the_config_says_what_is_wrong() {
    let p = problems(json!({"match": {}}));
    assert!(
        p.iter()
            .any(|(at, m)| at == "/match" && m.contains("`match` has no condition")),
        "{p:?}"
    );
    let p = problems(json!({"match": {"src": {"regex": "("}}}));
    assert!(
        p.iter()
            .any(|(at, m)| at == "/match/src/regex" && m.contains("invalid regular expression")),
        "{p:?}"
    );
    let p = problems(json!({"match": {"src": "10.0.0.0/33"}}));
    assert!(p.iter().any(|(at, _)| at == "/match/src"), "{p:?}");
    for bad in [0.0, 1.5, -0.2] {
        let p = problems(json!({"threshold": bad}));
        assert!(
            p.iter()
                .any(|(at, m)| at == "/threshold" && m.contains("a share over 0 and at most 1")),
            "{p:?}"
        );
    }
    let p = problems(json!({"min_count": 0}));
    assert!(p.iter().any(|(at, _)| at == "/min_count"), "{p:?}");
    // The stage's own variables render.
    assert!(problems(json!({"alert": {"title": "{{matched}}/{{total}} {{value}}"}})).is_empty());
    let p = problems(json!({"alert": {"summary": "{{matches}}"}}));
    assert!(
        p.iter()
            .any(|(at, m)| at == "/alert/summary" && m.contains("matched, total")),
        "{p:?}"
    );
}

#[test]
fn a_key_with_many_distinct_times_is_coarsened_and_every_event_still_counts() {
    let mut s = stage(json!({"threshold": 0.9}));
    for i in 0..3000 {
        let decision = if i % 2 == 0 { "blocked" } else { "allowed" };
        assert!(feed(&mut s, "a", decision, i * 100).is_empty());
    }
    assert!(s.coarsened() > 0);
    let snap: Value = serde_json::from_str(&snapshot_text(&s).unwrap()).unwrap();
    let points = snap["keys"]["src=a"]["points"].as_array().unwrap();
    assert!(
        points.len() <= crate::stages::series::MAX_POINTS,
        "{}",
        points.len()
    );
    // Five minutes of events: all in the window, half of them matched.
    let sum = |k: &str| {
        points
            .iter()
            .map(|p| p["v"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("m"), sum("n")), (1500, 3000));
}
