use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::stage::{Reading, Rule};
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

fn cfg(v: Value) -> MetricConfig {
    let mut base = json!({
        "inputs": ["in"], "field": "ratio", "aggregate": "avg", "window": "15m",
        "above": 0.8, "below": 0.1, "group_by": ["host"],
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

fn stage(v: Value) -> MetricStage {
    let found = problems(v.clone());
    assert!(found.is_empty(), "{found:?}");
    let c = cfg(v);
    let t = AlertTemplates::compile(&c.alert, &c.default_title(), &c.default_summary(), "p", "m")
        .unwrap();
    MetricStage::new(&c, t, Duration::minutes(1)).unwrap()
}

fn feed(s: &mut MetricStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(
        Arc::new(Event::from_record(data, "p.src".into(), at(ms))),
        &mut out,
    );
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn tick(s: &mut MetricStage, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(at(ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

#[test]
fn values_outside_the_bounds_alert_and_values_inside_or_missing_do_not() {
    // Bounds 0.1 / 0.8 (strict): 0.05 and 0.95 are out, each for its host.
    let mut s = stage(json!({}));
    let a = feed(&mut s, json!({"host": "a", "ratio": 0.05}), 0);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].status, AlertStatus::Firing);
    assert_eq!(a[0].value, 0.05);
    assert_eq!(a[0].group_key, "host=a");
    assert_eq!(
        a[0].title,
        "avg of ratio 0.05 for host=a, outside 0.1 to 0.8 in 15m"
    );
    let b = feed(&mut s, json!({"host": "b", "ratio": "0.95"}), 1_000);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].value, 0.95);

    // 0.10 and 0.79 are inside (the bounds are strict); a missing or non-numeric value
    // never alerts.
    let mut s = stage(json!({}));
    assert!(feed(&mut s, json!({"host": "c", "ratio": 0.10}), 0).is_empty());
    assert!(feed(&mut s, json!({"host": "d", "ratio": 0.79}), 0).is_empty());
    assert!(feed(&mut s, json!({"host": "e"}), 0).is_empty());
    assert!(feed(&mut s, json!({"host": "e", "ratio": "high"}), 0).is_empty());
    assert!(feed(&mut s, json!({"host": "e", "ratio": null}), 0).is_empty());
    assert_eq!(s.skipped(), 3);
    assert_eq!(s.keys(), 2, "a key without a value holds nothing");
    assert!(tick(&mut s, 60 * MIN).is_empty());
}

#[test]
fn an_episode_is_one_alert_and_resolves_when_the_aggregate_is_back_inside() {
    let mut s = stage(json!({"below": null}));
    let a = feed(&mut s, json!({"host": "a", "ratio": 0.9}), 0);
    assert_eq!(a.len(), 1);
    let id = a[0].id.clone();
    // Still above: updated in place, no new alert.
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.85}), MIN).is_empty());
    // avg(0.9, 0.85, 0.1) = 0.6167: back inside, resolved with the same id.
    let r = feed(&mut s, json!({"host": "a", "ratio": 0.1}), 2 * MIN);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].id, id);
    assert!((r[0].value - (0.9 + 0.85 + 0.1) / 3.0).abs() < 1e-12);
    assert_eq!(s.episodes().opened, 1);
    assert_eq!(s.episodes().resolved, 1);
}

#[test]
fn the_window_slides_and_an_episode_ends_when_its_values_leave() {
    let mut s = stage(json!({"below": null, "aggregate": "max"}));
    assert_eq!(feed(&mut s, json!({"host": "a", "ratio": 0.9}), 0).len(), 1);
    // 15 min later the 0.9 has left: max is 0.5, inside. The episode closes, dated when
    // the 0.9 left the window.
    let r = feed(&mut s, json!({"host": "a", "ratio": 0.5}), 16 * MIN);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].window.end, at(15 * MIN));

    // With no more events of the key, a tick closes it the same way.
    let mut s = stage(json!({"below": null, "aggregate": "max"}));
    assert_eq!(feed(&mut s, json!({"host": "a", "ratio": 0.9}), 0).len(), 1);
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.5}), 10 * MIN).is_empty());
    // The open episode changed: reported again (history_interval is a minute).
    let update = tick(&mut s, 10 * MIN);
    assert_eq!(update.len(), 1);
    assert_eq!(
        (update[0].status, update[0].updates),
        (AlertStatus::Firing, 1)
    );
    // Another key moves the watermark to 16 min: the 0.9 is out of the window.
    assert!(feed(&mut s, json!({"host": "b", "ratio": 0.5}), 16 * MIN).is_empty());
    let r = tick(&mut s, 16 * MIN);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, AlertStatus::Resolved);
    assert_eq!(r[0].group_key, "host=a");
    assert_eq!(r[0].window.end, at(15 * MIN));
    assert_eq!(r[0].value, 0.5);
}

#[test]
fn percentiles_are_nearest_rank() {
    let agg = |name: &str, values: &[f64]| {
        let rule = Rule {
            aggregate: Aggregate::parse(name).unwrap(),
            above: Some(0.0),
            below: None,
            min_values: 1,
        };
        let readings: Vec<_> = values.iter().map(|v| Reading { t: t0(), v: *v }).collect();
        rule.aggregate(readings.iter())
    };
    assert_eq!(agg("p50", &[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    assert_eq!(agg("p75", &[4.0, 1.0, 3.0, 2.0]), Some(3.0));
    assert_eq!(agg("p99", &[4.0, 1.0, 3.0, 2.0]), Some(4.0));
    assert_eq!(agg("p1", &[4.0, 1.0, 3.0, 2.0]), Some(1.0));
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(agg("p95", &hundred), Some(95.0));
    assert_eq!(agg("p99", &hundred), Some(99.0));
    assert_eq!(agg("avg", &[1.0, 2.0]), Some(1.5));
    assert_eq!(agg("sum", &[1.0, -2.0]), Some(-1.0));
    assert_eq!(agg("min", &[1.0, -2.0]), Some(-2.0));
    assert_eq!(agg("max", &[1.0, -2.0]), Some(1.0));
    assert_eq!(agg("avg", &[]), None);
    for bad in ["p0", "p100", "p05", "mean", "p", "p1.5"] {
        assert_eq!(Aggregate::parse(bad), None, "{bad}");
    }
}

#[test]
fn too_few_values_do_not_alert() {
    let mut s = stage(json!({"min_values": 3, "below": null}));
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.9}), 0).is_empty());
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.9}), 1_000).is_empty());
    assert_eq!(
        feed(&mut s, json!({"host": "a", "ratio": 0.9}), 2_000).len(),
        1
    );
}

#[test]
fn a_full_window_drops_its_oldest_value_counts_it_and_marks_the_estimate() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"max_values": 3, "below": null, "aggregate": "sum", "above": 10}))
        .counting_into(counters.clone());
    for i in 0..4 {
        assert!(feed(&mut s, json!({"host": "a", "ratio": 3}), i * 1_000).is_empty());
    }
    assert_eq!(
        counters.dropped_for(crate::node::internal_event::DropReason::Evicted),
        1
    );
    // 3 + 3 + 6 = 12 > 10 (the first two 3s left early): the sum is an estimate.
    let a = feed(&mut s, json!({"host": "a", "ratio": 6.0}), 4_000);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 12.0);
    assert_eq!(a[0].estimate.as_deref(), Some("approximate"));
    assert_eq!(a[0].fields["values"], 3);
    assert_eq!(a[0].fields["aggregate"], "sum");
    assert_eq!(
        counters.dropped_for(crate::node::internal_event::DropReason::Evicted),
        2
    );
}

#[test]
fn out_of_order_and_late_values() {
    let mut s = stage(json!({"below": null, "aggregate": "p50"}));
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.1}), 10 * MIN).is_empty());
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.9}), 5 * MIN).is_empty());
    // Out of order but inside the window: counted. p50 of 0.1, 0.9, 0.95 is 0.9.
    let a = feed(&mut s, json!({"host": "a", "ratio": 0.95}), 7 * MIN);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].value, 0.9);
    // At or before the watermark - window: late, never mixed in.
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.0}), -5 * MIN).is_empty());
    assert_eq!(s.late(), 1);
}

#[test]
fn state_survives_a_restart_and_resets_when_the_field_changes() {
    let mut s = stage(json!({"below": null}));
    assert!(feed(&mut s, json!({"host": "a", "ratio": 0.7}), 0).is_empty());
    let a = feed(&mut s, json!({"host": "a", "ratio": 1.0}), MIN);
    assert_eq!(a.len(), 1);
    let snap = snapshot_text(&s).unwrap();

    let mut r = stage(json!({"below": null}));
    assert!(r.restore(&snap, "p.m"));
    assert_eq!(r.episodes().opened, 1);
    // The window came back: avg(0.7, 1.0, 0.1) = 0.6 resolves the restored episode.
    let back = feed(&mut r, json!({"host": "a", "ratio": 0.1}), 2 * MIN);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].status, AlertStatus::Resolved);
    assert_eq!(back[0].id, a[0].id);

    // A new bound keeps the state; a new field does not.
    let mut r = stage(json!({"below": null, "above": 0.5}));
    assert!(r.restore(&snap, "p.m"));
    let mut r = stage(json!({"below": null, "field": "other"}));
    assert!(!r.restore(&snap, "p.m"));
}

#[test]
fn the_config_says_what_is_wrong() {
    let none = problems(json!({"above": null, "below": null}));
    assert!(
        none.iter()
            .any(|m| m.contains("needs `above`, `below`, or both")),
        "{none:?}"
    );
    let swapped = problems(json!({"above": 0.1, "below": 0.8}));
    assert!(
        swapped.iter().any(|m| m.contains("swap them")),
        "{swapped:?}"
    );
    let err = serde_json::from_value::<MetricConfig>(json!({
        "inputs": ["in"], "field": "x", "aggregate": "median", "window": "1m", "above": 1
    }))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "unknown aggregate `median`: use avg, min, max, sum, or a percentile p1 to p99"
        ),
        "{err}"
    );
}
