use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::stage::{Rule, Spike};
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

const SEC: i64 = 1_000;
const MIN: i64 = 60_000;

fn cfg(v: Value) -> SpikeConfig {
    let mut base = json!({
        "inputs": ["in"], "window": "10m", "ratio": 2, "group_by": ["host"],
    });
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn problems(v: Value) -> Vec<String> {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    p.items.iter().map(|d| d.message.clone()).collect()
}

fn stage(v: Value) -> SpikeStage {
    let found = problems(v.clone());
    assert!(found.is_empty(), "{found:?}");
    let c = cfg(v);
    let t = AlertTemplates::compile(&c.alert, &c.default_title(), &c.default_summary(), "p", "s")
        .unwrap();
    SpikeStage::new(&c, t, Duration::minutes(1)).unwrap()
}

fn alerts(out: &[Arc<Event>]) -> Vec<Alert> {
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

/// Feeds an event of time `t` arriving at `arrival` (both in ms from t0).
fn feed_late(s: &mut SpikeStage, data: Value, t: i64, arrival: i64) -> Vec<Alert> {
    let mut e = Event::from_record(data, "p.src".into(), at(arrival));
    e.meta.time = at(t);
    let mut out = Vec::new();
    s.process(Arc::new(e), &mut out);
    alerts(&out)
}

fn feed(s: &mut SpikeStage, data: Value, t: i64) -> Vec<Alert> {
    feed_late(s, data, t, t)
}

fn tick(s: &mut SpikeStage, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(at(ms), &mut out);
    alerts(&out)
}

/// Runs the stage as `vigil test` does: ticks every `step` up to each event's arrival,
/// the event, and ticks on to `end`. Events: (time, arrival, record).
fn drive(s: &mut SpikeStage, events: &[(i64, i64, Value)], step: i64, end: i64) -> Vec<Alert> {
    let mut got = Vec::new();
    let mut next = 0;
    for (t, arrival, data) in events {
        while next <= *arrival {
            got.extend(tick(s, next));
            next += step;
        }
        got.extend(feed_late(s, data.clone(), *t, *arrival));
    }
    while next <= end {
        got.extend(tick(s, next));
        next += step;
    }
    got
}

/// `n` events of `host` a minute apart from minute `from` (time = arrival).
fn per_minute(host: &str, from: i64, n: i64) -> Vec<(i64, i64, Value)> {
    (0..n)
        .map(|i| {
            let t = (from + i) * MIN;
            (t, t, json!({"host": host}))
        })
        .collect()
}

/// 10 events in each of two 10-minute windows, then 20 in the third (two a minute).
fn ten_ten_twenty() -> Vec<(i64, i64, Value)> {
    let mut events = per_minute("a", 0, 20);
    for i in 0..20 {
        let t = 20 * MIN + i * 30 * SEC;
        events.push((t, t, json!({"host": "a"})));
    }
    events
}

fn firing(a: &[Alert]) -> Vec<&Alert> {
    a.iter()
        .filter(|a| a.status == AlertStatus::Firing && a.updates == 0)
        .collect()
}

#[test]
fn counts_10_10_20_with_ratio_2_make_exactly_one_up_spike() {
    let mut s = stage(json!({}));
    let got = drive(&mut s, &ten_ten_twenty(), 10 * SEC, 29 * MIN + 30 * SEC);
    let fired = firing(&got);
    assert_eq!(fired.len(), 1, "{got:#?}");
    let a = fired[0];
    // The 20th event of the third window, at 29:30: current (19:30, 29:30] holds 20,
    // the reference (9:30, 19:30] 10, and 20 ≥ 2 × 10.
    assert_eq!(a.value, 20.0);
    assert_eq!(a.threshold, 20.0);
    assert_eq!(a.fields["direction"], "up");
    assert_eq!(a.fields["reference"], 10.0);
    assert_eq!(a.first_seen, at(29 * MIN + 30 * SEC));
    assert_eq!(a.window.start, at(19 * MIN + 30 * SEC));
    assert_eq!(a.window.end, at(29 * MIN + 30 * SEC));
    assert_eq!(
        a.title,
        "Spike in events for host=a: 20 in 10m against 10 the 10m before"
    );
    assert!(
        a.summary.contains("at or over 20, a ratio of 2"),
        "{}",
        a.summary
    );
    assert_eq!(a.samples.len(), 5, "samples of the current window");
    assert!(a.samples.iter().all(|x| x.time > a.window.start));

    // With no more events, the 20:00 event leaves the current window at 30:00: the
    // spike no longer holds, and a tick resolves it, dated then.
    let r = tick(&mut s, 30 * MIN);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].id, a.id);
    assert_eq!(r[0].window.end, at(30 * MIN));
    assert_eq!(r[0].value, 19.0);
    assert_eq!(s.episodes().opened, 1);
    assert_eq!(s.episodes().resolved, 1);

    // Events alone (no tick at all) make the same single spike.
    let mut s = stage(json!({}));
    let mut got = Vec::new();
    for (t, _, data) in ten_ten_twenty() {
        got.extend(feed(&mut s, data, t));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].first_seen, at(29 * MIN + 30 * SEC));
}

#[test]
fn an_open_spike_is_updated_by_its_events_and_reported_once_per_history_interval() {
    let mut s = stage(json!({}));
    let got = drive(&mut s, &ten_ten_twenty(), 10 * SEC, 29 * MIN + 30 * SEC);
    assert_eq!(firing(&got).len(), 1);
    // Nine more events while it holds: updated in place, no report.
    for i in 1..10 {
        assert!(feed(&mut s, json!({"host": "a"}), 29 * MIN + 30 * SEC + i * SEC).is_empty());
    }
    assert_eq!(s.episodes().updated, 9);
    // A minute (history_interval) after it opened, a tick reports it again, measured at
    // the clock: current (20:30, 30:30] holds 27, the reference (10:30, 20:30] 11.
    assert!(tick(&mut s, 30 * MIN).is_empty());
    let r = tick(&mut s, 30 * MIN + 30 * SEC);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!((r[0].status, r[0].updates), (AlertStatus::Firing, 9));
    assert_eq!((r[0].value, r[0].threshold), (27.0, 22.0));
    assert_eq!(r[0].fields["reference"], 11.0);
    assert_eq!(r[0].window.end, at(30 * MIN + 30 * SEC));
    assert_eq!(r[0].last_seen, at(29 * MIN + 39 * SEC));
    assert_eq!(s.episodes().reported, 1);
}

#[test]
fn counts_10_10_0_make_one_down_spike_from_ticks() {
    let mut s = stage(json!({"direction": "down"}));
    let events = per_minute("a", 0, 20);
    // Events alone never show the drop: nothing arrives after minute 19.
    let got = drive(&mut s, &events, 10 * MIN * 100, 0);
    assert!(got.is_empty(), "{got:#?}");

    let mut s = stage(json!({"direction": "down"}));
    let got = drive(&mut s, &events, 10 * SEC, 60 * MIN);
    let fired = firing(&got);
    assert_eq!(fired.len(), 1, "{got:#?}");
    let a = fired[0];
    // At 24:00 the events of minutes 15 to 19 are the current window (5) and those of 5
    // to 14 the reference (10): 5 ≤ 10 / 2.
    assert_eq!(a.fields["direction"], "down");
    assert_eq!(a.first_seen, at(24 * MIN));
    assert_eq!(a.window.end, at(24 * MIN));
    assert_eq!((a.value, a.threshold), (5.0, 5.0));
    assert_eq!(a.fields["reference"], 10.0);
    assert!(
        a.title.starts_with("Drop in events for host=a: 5 in 10m"),
        "{}",
        a.title
    );
    // The silence fills the reference too: at 39:00 the last event (19:00) leaves it,
    // the reference is under `min_reference`, and the episode resolves.
    let resolved: Vec<&Alert> = got
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, a.id);
    assert_eq!(resolved[0].window.end, at(39 * MIN));
    assert!(resolved[0].summary.starts_with("Over: the down-spike"));

    // However seldom the clock ticks, the spike is dated at the instant it began.
    let mut s = stage(json!({"direction": "down"}));
    let got = drive(&mut s, &events, 7 * MIN, 60 * MIN);
    assert_eq!(firing(&got)[0].first_seen, at(24 * MIN));
    assert_eq!(firing(&got)[0].id, a.id);
}

#[test]
fn a_constant_rate_makes_no_spike() {
    let mut s = stage(json!({"direction": "both"}));
    let got = drive(&mut s, &per_minute("a", 0, 90), 10 * SEC, 89 * MIN);
    assert!(got.is_empty(), "{got:#?}");
    // Two events at a time, every other minute, is the same rate.
    let mut s = stage(json!({"direction": "both"}));
    let events: Vec<(i64, i64, Value)> = (0..45)
        .flat_map(|i| {
            let t = 2 * i * MIN;
            [(t, t, json!({"host": "a"})), (t, t, json!({"host": "a"}))]
        })
        .collect();
    let got = drive(&mut s, &events, 10 * SEC, 88 * MIN);
    assert!(got.is_empty(), "{got:#?}");
}

#[test]
fn a_reference_under_min_reference_never_alerts() {
    let mut s = stage(json!({"min_reference": 11}));
    let got = drive(&mut s, &ten_ten_twenty(), 10 * SEC, 29 * MIN + 30 * SEC);
    assert!(got.is_empty(), "{got:#?}");
    let mut s = stage(json!({"min_reference": 11, "direction": "down"}));
    let got = drive(&mut s, &per_minute("a", 0, 20), 10 * SEC, 60 * MIN);
    assert!(got.is_empty(), "{got:#?}");
    // 10 is enough when it is the minimum.
    let mut s = stage(json!({"min_reference": 10}));
    let got = drive(&mut s, &ten_ten_twenty(), 10 * SEC, 29 * MIN + 30 * SEC);
    assert_eq!(firing(&got).len(), 1);
}

#[test]
fn min_current_holds_back_small_up_spikes() {
    // 1 event against none is an up-spike of any ratio once `min_reference` is 0; not
    // under `min_current: 3`.
    let mut quiet = per_minute("a", 0, 1);
    quiet.extend(per_minute("b", 25, 1));
    let mut s = stage(json!({"min_reference": 0, "min_current": 3}));
    assert!(drive(&mut s, &quiet, 10 * SEC, 25 * MIN).is_empty());
    let mut s = stage(json!({"min_reference": 0}));
    let got = drive(&mut s, &quiet, 10 * SEC, 25 * MIN);
    assert_eq!(firing(&got).len(), 1, "{got:#?}");
    assert_eq!(firing(&got)[0].group_key, "host=b");
    assert_eq!(firing(&got)[0].fields["reference"], 0.0);
}

#[test]
fn nothing_alerts_before_the_reference_window_was_seen_whole() {
    // Traffic that starts high looks like a spike against the empty time before the
    // stage started: with `min_reference: 0` only the warm-up holds it back.
    let mut s = stage(json!({"min_reference": 0}));
    let got = drive(&mut s, &per_minute("a", 5, 10), 10 * SEC, 25 * MIN);
    assert!(got.is_empty(), "{got:#?}");
    // A new key once the stage is warm: its empty past is known to be empty.
    let got = drive(&mut s, &per_minute("b", 26, 1), 10 * SEC, 26 * MIN);
    assert_eq!(firing(&got).len(), 1, "{got:#?}");
}

#[test]
fn a_sum_spikes_like_a_count_and_events_without_a_number_add_nothing() {
    let mut s = stage(json!({"measure": {"sum": "bytes"}, "direction": "both", "group_by": []}));
    let mut events: Vec<(i64, i64, Value)> = (0..20)
        .map(|i| (i * MIN, i * MIN, json!({"bytes": 100})))
        .collect();
    events.push((20 * MIN, 20 * MIN, json!({"bytes": "no"})));
    events.push((20 * MIN, 20 * MIN, json!({})));
    events.push((21 * MIN, 21 * MIN, json!({"bytes": 1200.5})));
    let got = drive(&mut s, &events, 10 * SEC, 21 * MIN);
    assert_eq!(s.skipped(), 2);
    let fired = firing(&got);
    assert_eq!(fired.len(), 1, "{got:#?}");
    // Current (11:00, 21:00]: 8 × 100 (minutes 12 to 19) + 1200.5; the reference
    // (1:00, 11:00]: 10 × 100.
    assert_eq!(fired[0].value, 2000.5);
    assert_eq!(fired[0].threshold, 2000.0);
    assert_eq!(fired[0].group_key, "");
    assert_eq!(
        fired[0].title,
        "Spike in the sum of bytes: 2000.5 in 10m against 1000 the 10m before"
    );
}

#[test]
fn both_directions_are_separate_episodes() {
    let mut s = stage(json!({"direction": "both"}));
    let mut events = ten_ten_twenty();
    // Then silence: the up-spike ends, and later the drop begins.
    let got = drive(&mut s, &events, 10 * SEC, 60 * MIN);
    let kinds: Vec<(String, AlertStatus)> = got
        .iter()
        .filter(|a| a.updates == 0 || a.status == AlertStatus::Resolved)
        .map(|a| {
            (
                a.fields["direction"].as_str().unwrap().to_string(),
                a.status,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("up".into(), AlertStatus::Firing),
            ("up".into(), AlertStatus::Resolved),
            ("down".into(), AlertStatus::Firing),
            ("down".into(), AlertStatus::Resolved),
        ],
        "{got:#?}"
    );
    // A burst that moves to the reference window at once turns an up-spike into a drop
    // at one instant: one closes, the other opens, at the same time.
    let mut s = stage(json!({"direction": "both", "min_reference": 5}));
    events = per_minute("a", 0, 20);
    events.extend((0..20).map(|_| (25 * MIN, 25 * MIN, json!({"host": "a"}))));
    let got = drive(&mut s, &events, 10 * SEC, 36 * MIN);
    let at_35: Vec<(String, AlertStatus)> = got
        .iter()
        .filter(|a| a.window.end == at(35 * MIN))
        .map(|a| {
            (
                a.fields["direction"].as_str().unwrap().to_string(),
                a.status,
            )
        })
        .collect();
    assert_eq!(
        at_35,
        vec![
            ("up".into(), AlertStatus::Resolved),
            ("down".into(), AlertStatus::Firing),
        ],
        "{got:#?}"
    );
}

#[test]
fn a_steady_delay_is_no_drop_and_grace_covers_a_batched_source() {
    // Every event arrives 5 minutes after its time: the clock keeps the delay, so the
    // 5 minutes between an event's time and the next tick are no silence.
    let events: Vec<(i64, i64, Value)> = (0..40)
        .map(|i| (i * MIN, i * MIN + 5 * MIN, json!({"host": "a"})))
        .collect();
    let mut s = stage(json!({"direction": "down"}));
    let got = drive(&mut s, &events, 10 * SEC, 44 * MIN);
    assert!(got.is_empty(), "{got:#?}");
    // When the events stop, the drop is seen at the event time the windows show it
    // (minute 44 of event time, so the tick at minute 49).
    let got = drive(&mut s, &[], 10 * SEC, 60 * MIN);
    let fired = firing(&got);
    assert_eq!(fired.len(), 1, "{got:#?}");
    assert_eq!(fired[0].first_seen, at(44 * MIN));

    // A source that delivers the last 5 minutes every 5 minutes: between deliveries the
    // current window seems to empty. Without grace that reads as a drop…
    let batched: Vec<(i64, i64, Value)> = (0..60)
        .map(|i| {
            let t = i * MIN + 30 * SEC;
            (t, (i / 5 + 1) * 5 * MIN, json!({"host": "a"}))
        })
        .collect();
    let mut s = stage(json!({"direction": "down", "window": "5m", "ratio": 1.5}));
    assert!(!firing(&drive(&mut s, &batched, 10 * SEC, 60 * MIN)).is_empty());
    // … with the source's interval as grace it does not.
    let mut s = stage(json!({"direction": "down", "window": "5m", "ratio": 1.5, "grace": "5m"}));
    let got = drive(&mut s, &batched, 10 * SEC, 60 * MIN);
    assert!(got.is_empty(), "{got:#?}");
    // A real silence is still seen, `grace` later.
    let got = drive(&mut s, &[], 10 * SEC, 90 * MIN);
    assert_eq!(firing(&got).len(), 1, "{got:#?}");
}

#[test]
fn events_behind_both_windows_are_late() {
    let mut s = stage(json!({}));
    assert!(feed(&mut s, json!({"host": "a"}), 30 * MIN).is_empty());
    // At or before 30:00 − 20 min: late.
    assert!(feed(&mut s, json!({"host": "a"}), 10 * MIN).is_empty());
    assert_eq!(s.late(), 1);
    // Out of order inside the reference window: counted.
    assert!(feed(&mut s, json!({"host": "a"}), 10 * MIN + 1).is_empty());
    assert_eq!(s.late(), 1);
    // The clock a tick moved on counts too.
    assert!(tick(&mut s, 45 * MIN).is_empty());
    assert!(feed(&mut s, json!({"host": "a"}), 25 * MIN).is_empty());
    assert_eq!(s.late(), 2);
}

#[test]
fn keys_past_max_keys_are_forgotten_and_their_history_counts_as_unknown() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"max_keys": 10, "direction": "down"})).counting_into(counters.clone());
    // Key `a` drops and its episode is open when 10 more keys arrive.
    let got = drive(&mut s, &per_minute("a", 0, 20), 10 * SEC, 25 * MIN);
    assert_eq!(firing(&got).len(), 1);
    let mut got = Vec::new();
    for i in 0..10 {
        got.extend(feed(&mut s, json!({"host": format!("k{i}")}), 25 * MIN + i));
    }
    assert!(s.keys() <= 10);
    assert_eq!(
        counters.dropped_for(crate::node::internal_event::DropReason::Evicted),
        2
    );
    // `a` was seen least recently: forgotten, its episode resolved.
    let resolved: Vec<&Alert> = got
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{got:#?}");
    assert_eq!(resolved[0].group_key, "host=a");
    // `a` again: its past is unknown now, so its sudden traffic is not a spike until a
    // reference window after the forgetting has been seen.
    let mut s2 = stage(json!({"max_keys": 2, "min_reference": 0}));
    drive(&mut s2, &per_minute("x", 0, 30), 10 * SEC, 30 * MIN);
    feed(&mut s2, json!({"host": "y"}), 30 * MIN);
    feed(&mut s2, json!({"host": "z"}), 30 * MIN + 1);
    let got = feed(&mut s2, json!({"host": "x"}), 31 * MIN);
    assert!(firing(&got).is_empty(), "{got:#?}");
}

#[test]
fn state_survives_a_restart_and_the_downtime_is_no_silence() {
    let mut s = stage(json!({"direction": "both"}));
    let got = drive(&mut s, &ten_ten_twenty(), 10 * SEC, 29 * MIN + 30 * SEC);
    let opened = firing(&got)[0].clone();
    let snap = snapshot_text(&s).unwrap();

    let mut r = stage(json!({"direction": "both"}));
    assert!(r.restore(&snap, "p.s"));
    assert_eq!(r.episodes().opened, 1);
    assert_eq!(r.clock(), Some(at(29 * MIN + 30 * SEC)));
    // Back an hour later: the first tick does not take the hour as silence.
    assert!(tick(&mut r, 90 * MIN).is_empty());
    assert_eq!(r.clock(), Some(at(29 * MIN + 30 * SEC)));
    // The clock moves on from there: at 30:00 of event time the spike is over.
    let over = tick(&mut r, 90 * MIN + 30 * SEC);
    assert_eq!(over.len(), 1, "{over:#?}");
    assert_eq!(over[0].status, AlertStatus::Resolved);
    assert_eq!(over[0].id, opened.id);
    assert_eq!(over[0].window.end, at(30 * MIN));

    // A new ratio keeps the state; a new window or measure does not.
    let mut r = stage(json!({"ratio": 3}));
    assert!(r.restore(&snap, "p.s"));
    let mut r = stage(json!({"window": "5m"}));
    assert!(!r.restore(&snap, "p.s"));
    let mut r = stage(json!({"measure": {"sum": "bytes"}}));
    assert!(!r.restore(&snap, "p.s"));
}

#[test]
fn a_key_with_many_distinct_times_is_coarsened_and_every_event_still_counts() {
    let mut s = stage(json!({}));
    // 3000 events a fifth of a second apart (10 minutes) then 3000 more: 6000 distinct
    // times, past the bound of points a key holds.
    for i in 0..6000 {
        feed(&mut s, json!({"host": "a"}), i * 200);
    }
    assert!(s.coarsened() > 0);
    let snap: Value = serde_json::from_str(&snapshot_text(&s).unwrap()).unwrap();
    let points = snap["keys"]["host=a"]["points"].as_array().unwrap();
    assert!(
        points.len() <= crate::stages::series::MAX_POINTS,
        "{}",
        points.len()
    );
    // The windows end at 19:59.8 and reach back 20 minutes: every event is in them.
    let total: f64 = points.iter().map(|p| p["v"].as_f64().unwrap()).sum();
    assert_eq!(total, 6000.0);
}

#[test]
fn the_rule_compares_with_the_ratio_both_ways() {
    let rule = Rule {
        window: Duration::minutes(10),
        ratio: 2.0,
        up: true,
        down: true,
        min_reference: 1.0,
        min_current: 1.0,
    };
    assert_eq!(rule.spike(20.0, 10.0), Some(Spike::Up));
    assert_eq!(rule.spike(19.0, 10.0), None);
    assert_eq!(rule.spike(5.0, 10.0), Some(Spike::Down));
    assert_eq!(rule.spike(5.1, 10.0), None);
    assert_eq!(rule.spike(0.0, 0.5), None, "under min_reference");
    assert_eq!(rule.spike(1.5, 0.5), None, "under min_reference");
    let zero = Rule {
        min_reference: 0.0,
        min_current: 0.0,
        ..rule
    };
    assert_eq!(zero.spike(0.0, 0.0), None, "nothing against nothing");
    assert_eq!(zero.spike(1.0, 0.0), Some(Spike::Up));
    // Sums with rounding traces still meet the ratio: 2 × (0.1 + 0.05) is a hair over
    // 0.3.
    assert_eq!(zero.spike(0.3, 0.1 + 0.05), Some(Spike::Up));
    assert_eq!(zero.spike(0.1 + 0.05, 0.3), Some(Spike::Down));
}

#[test]
fn the_config_says_what_is_wrong() {
    let msgs = problems(json!({"ratio": 1}));
    assert!(
        msgs.iter()
            .any(|m| m.contains("`ratio` must be a number greater than 1")),
        "{msgs:?}"
    );
    let msgs = problems(json!({"min_reference": -1}));
    assert!(
        msgs.iter().any(|m| m.contains("`min_reference`")),
        "{msgs:?}"
    );
    let msgs = problems(json!({"grace": "-5m"}));
    assert!(
        msgs.iter()
            .any(|m| m.contains("`grace` must not be negative")),
        "{msgs:?}"
    );
    let msgs = problems(json!({"alert": {"mode": "each_crossing"}}));
    assert!(
        msgs.iter()
            .any(|m| m.contains("`alert.mode` does not apply to spike")),
        "{msgs:?}"
    );
    let msgs = problems(json!({"alert": {"resolve_after": "5m"}}));
    assert!(
        msgs.iter()
            .any(|m| m.contains("`alert.resolve_after` does not apply to spike")),
        "{msgs:?}"
    );
    // The stage's own variables render; a misspelt one is named with the list.
    assert!(
        problems(json!({"alert": {"title": "{{direction}} {{reference}} {{value}}"}})).is_empty()
    );
    let msgs = problems(json!({"alert": {"title": "{{referense}}"}}));
    assert!(
        msgs.iter()
            .any(|m| m.contains("does not render") && m.contains("direction, reference")),
        "{msgs:?}"
    );
    let err = serde_json::from_value::<SpikeConfig>(json!({
        "inputs": ["in"], "window": "1m", "ratio": 2, "measure": "sum"
    }))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown measure `sum`: use `count`, or `{sum: <field>}`"),
        "{err}"
    );
    let err = serde_json::from_value::<SpikeConfig>(json!({
        "inputs": ["in"], "window": "1m", "ratio": 2, "measure": {"sum": "bytes", "of": 1}
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("`measure` is not one"), "{err}");
    let ok: SpikeConfig = serde_json::from_value(json!({
        "inputs": ["in"], "window": "1m", "ratio": 2, "measure": {"sum": "bytes"}
    }))
    .unwrap();
    assert_eq!(ok.measure, Measure::Sum("bytes".into()));
}
