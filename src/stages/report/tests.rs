use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
use crate::event::{Alert, AlertWindow, Event, Severity, Timestamp};
use crate::node::internal_event::DropReason;
use crate::node::{NodeCounters, Stage, snapshot_text};

fn utc(s: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&Utc)
}

fn cfg(v: Value) -> ReportConfig {
    let mut base = json!({"inputs": ["ports"], "period": "monthly"});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn problems(v: Value) -> Vec<(String, String)> {
    let mut p = Problems::default();
    cfg(v).check(&mut p);
    p.items
        .into_iter()
        .map(|i| (i.pointer, i.message))
        .collect()
}

fn stage(v: Value) -> (ReportStage, Arc<NodeCounters>) {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    let counters = Arc::new(NodeCounters::default());
    let s = c.stage("p", "rep").unwrap().counting_into(counters.clone());
    (s, counters)
}

fn ev(data: Value, at: &str) -> Arc<Event> {
    Arc::new(Event::from_record(data, "p.ports".into(), utc(at)))
}

fn feed(s: &mut ReportStage, data: Value, at: &str) {
    let mut out = Vec::new();
    s.process(ev(data, at), &mut out);
    assert!(out.is_empty(), "events are not handed on");
}

fn tick(s: &mut ReportStage, at: &str) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(utc(at), &mut out);
    alerts(&out)
}

fn finish(s: &mut ReportStage) -> Vec<Alert> {
    let mut out = Vec::new();
    s.finish(&mut out);
    alerts(&out)
}

fn alerts(out: &[Arc<Event>]) -> Vec<Alert> {
    for e in out {
        let a = e.alert().expect("an alert");
        assert_eq!(e.meta.time, a.window.end, "dated at the period's end");
    }
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn window(start: &str, end: &str) -> AlertWindow {
    AlertWindow {
        start: utc(start),
        end: utc(end),
    }
}

fn ports() -> Value {
    json!({
        "time_zone": "Europe/Berlin", "group_by": ["port"],
        "sum": ["bytes_in", "bytes_out"], "unit": "B",
    })
}

/// A month in Berlin (CET, then CEST from March 29) is the local calendar month; it is
/// reported `grace` after its end, one alert per key in key order, with its totals.
#[test]
fn a_month_is_local_and_reported_grace_after_its_end_one_alert_per_key() {
    let (mut s, _) = stage(ports());
    // February 28 23:30 local: February.
    feed(
        &mut s,
        json!({"port": 22, "bytes_in": 1, "bytes_out": 1}),
        "2026-02-28T22:30:00Z",
    );
    // March 1 00:30 local (CET) and March 31 23:59 local (CEST): March.
    feed(
        &mut s,
        json!({"port": 22, "bytes_in": 100, "bytes_out": 10}),
        "2026-02-28T23:30:00Z",
    );
    feed(
        &mut s,
        json!({"port": 22, "bytes_in": 50, "bytes_out": 5}),
        "2026-03-31T21:59:00Z",
    );
    // A numeric string counts; a missing field adds nothing and is counted.
    feed(
        &mut s,
        json!({"port": 8080, "bytes_in": "7"}),
        "2026-03-15T12:00:00Z",
    );
    feed(
        &mut s,
        json!({"port": 8080, "bytes_in": 3, "bytes_out": 2048}),
        "2026-03-16T12:00:00Z",
    );
    // April 1 00:00 local: April.
    feed(
        &mut s,
        json!({"port": 22, "bytes_in": 9, "bytes_out": 9}),
        "2026-03-31T22:00:00Z",
    );

    // February ends at 23:00Z; with 5 minutes' grace it is reported at 23:05Z.
    assert!(tick(&mut s, "2026-02-28T23:04:59Z").is_empty());
    let feb = tick(&mut s, "2026-02-28T23:05:00Z");
    assert_eq!(feb.len(), 1);
    assert_eq!(feb[0].fields["period"], json!("2026-02"));
    assert_eq!(feb[0].value, 1.0);

    assert!(tick(&mut s, "2026-03-31T22:04:59Z").is_empty());
    let march = tick(&mut s, "2026-03-31T22:05:00Z");
    let keys: Vec<&str> = march.iter().map(|a| a.group_key.as_str()).collect();
    assert_eq!(keys, vec!["port=22", "port=8080"]);
    let w = window("2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z");
    let a = &march[0];
    assert_eq!(a.window, w);
    assert_eq!(a.value, 150.0);
    assert_eq!(a.threshold, 0.0);
    assert_eq!(a.unit.as_deref(), Some("B"));
    assert_eq!(a.severity, Severity::Info);
    assert!(!a.episode);
    assert_eq!(a.group, json!({"port": 22}));
    assert!(a.samples.is_empty());
    assert_eq!(a.id, Alert::make_id("p", "rep", "port=22", &w));
    assert_eq!(
        Value::Object(a.fields.clone()),
        json!({
            "period": "2026-03", "time_zone": "Europe/Berlin", "count": 2,
            "totals": {"bytes_in": 150, "bytes_out": 15},
            "unmeasured": {"bytes_in": 0, "bytes_out": 0},
        })
    );
    assert_eq!(a.title, "port=22: 150 B in 2026-03");
    assert_eq!(
        a.summary,
        "p.rep: 150 B from 2 events in the month 2026-03 (Europe/Berlin, 2026-02-28T23:00:00Z to 2026-03-31T22:00:00Z). Totals: bytes_in 150, bytes_out 15."
    );
    let b = &march[1];
    assert_eq!(b.value, 10.0);
    assert_eq!(
        b.fields["totals"],
        json!({"bytes_in": 10, "bytes_out": 2048})
    );
    assert_eq!(
        b.fields["unmeasured"],
        json!({"bytes_in": 0, "bytes_out": 1})
    );
    assert!(
        b.summary.ends_with(" 1 events had no number at bytes_out."),
        "{}",
        b.summary
    );

    let april = finish(&mut s);
    assert_eq!(april.len(), 1);
    assert_eq!(april[0].fields["period"], json!("2026-04"));
    assert_eq!(
        april[0].window,
        window("2026-03-31T22:00:00Z", "2026-04-30T22:00:00Z")
    );
    assert_eq!(s.reports(), 3);
    assert_eq!(s.unmeasured(), 1);
}

/// The day the clocks go forward is 23 hours long, the day they go back 25.
#[test]
fn dst_days_are_23_and_25_hours_long() {
    let (mut s, _) = stage(json!({
        "period": "daily", "time_zone": "Europe/Berlin", "group_by": ["port"], "grace": "0s",
    }));
    for at in [
        "2026-03-28T23:00:00Z", // March 29 00:00 local
        "2026-03-29T21:59:59Z", // March 29 23:59:59 local (CEST)
        "2026-03-29T22:00:00Z", // March 30
        "2026-10-24T22:00:00Z", // October 25 00:00 local (CEST)
        "2026-10-25T22:59:59Z", // October 25 23:59:59 local (CET)
    ] {
        feed(&mut s, json!({"port": 22}), at);
    }
    let got = finish(&mut s);
    let days: Vec<(String, i64, f64)> = got
        .iter()
        .map(|a| {
            (
                a.fields["period"].as_str().unwrap().to_string(),
                (a.window.end - a.window.start).num_hours(),
                a.value,
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-03-29".into(), 23, 2.0),
            ("2026-03-30".into(), 24, 1.0),
            ("2026-10-25".into(), 25, 2.0),
        ]
    );
    assert_eq!(got[0].title, "port=22: 2 events in 2026-03-29");
    assert!(
        got[0]
            .summary
            .contains("in the day 2026-03-29 (Europe/Berlin"),
        "{}",
        got[0].summary
    );
}

/// Months of every length, in a zone without daylight saving time.
#[test]
fn months_have_their_lengths() {
    let (mut s, _) = stage(json!({"time_zone": "Asia/Taipei"}));
    // The last second of each month of 2028 (a leap year), local time (UTC+8).
    let ends = [
        "2028-01-31T15:59:59Z",
        "2028-02-29T15:59:59Z",
        "2028-03-31T15:59:59Z",
        "2028-04-30T15:59:59Z",
    ];
    for at in ends {
        feed(&mut s, json!({}), at);
    }
    let got = finish(&mut s);
    let days: Vec<(String, i64)> = got
        .iter()
        .map(|a| {
            (
                a.fields["period"].as_str().unwrap().to_string(),
                (a.window.end - a.window.start).num_days(),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2028-01".into(), 31),
            ("2028-02".into(), 29),
            ("2028-03".into(), 31),
            ("2028-04".into(), 30),
        ]
    );
    assert_eq!(got[1].window.start, utc("2028-01-31T16:00:00Z"));
    assert_eq!(
        got[0].title, "1 events in 2028-01",
        "no group_by: no key in the title"
    );
}

/// An event for a reported period, or for one that ended `grace` before the clock, is
/// late: counted, added nowhere.
#[test]
fn late_events_are_counted_and_added_nowhere() {
    let (mut s, counters) = stage(json!({"period": "daily", "sum": "bytes", "group_by": ["port"]}));
    feed(
        &mut s,
        json!({"port": 1, "bytes": 10}),
        "2026-05-01T10:00:00Z",
    );
    feed(
        &mut s,
        json!({"port": 1, "bytes": 10}),
        "2026-05-02T10:00:00Z",
    );
    let got = tick(&mut s, "2026-05-02T00:05:00Z");
    assert_eq!(got.len(), 1, "May 1 reported");
    // Within the grace, the day still counts; after it the day is late.
    feed(
        &mut s,
        json!({"port": 1, "bytes": 5}),
        "2026-05-02T23:59:00Z",
    );
    assert!(tick(&mut s, "2026-05-03T00:04:59Z").is_empty());
    feed(
        &mut s,
        json!({"port": 1, "bytes": 7}),
        "2026-05-02T23:59:59Z",
    );
    // May 1 was reported: late.
    feed(
        &mut s,
        json!({"port": 1, "bytes": 100}),
        "2026-05-01T23:00:00Z",
    );
    let got = tick(&mut s, "2026-05-03T00:05:00Z");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, 22.0);
    // April 20 had no events, and ended long before the clock: late too.
    feed(
        &mut s,
        json!({"port": 1, "bytes": 100}),
        "2026-04-20T12:00:00Z",
    );
    // May 2 was reported.
    feed(
        &mut s,
        json!({"port": 2, "bytes": 100}),
        "2026-05-02T12:00:00Z",
    );
    assert!(finish(&mut s).is_empty(), "nothing open");
    assert_eq!(s.late(), 3);
    assert_eq!(counters.dropped_for(DropReason::Late), 3);
}

/// A period holds `max_keys` keys: events of further keys are counted (evicted), never
/// totalled, and the top alert says how many; the next period starts afresh.
#[test]
fn keys_past_max_keys_are_counted_and_not_totalled() {
    let (mut s, counters) = stage(json!({
        "period": "daily", "group_by": ["k"], "max_keys": 2, "top": 5,
    }));
    let logs = crate::node::internal_event::capture::logs(|| {
        for k in ["a", "b", "c", "a", "d", "c"] {
            feed(&mut s, json!({"k": k}), "2026-05-01T10:00:00Z");
        }
        feed(&mut s, json!({"k": "c"}), "2026-05-02T10:00:00Z");
    });
    assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
    assert!(logs.contains("period=2026-05-01"), "{logs}");
    assert_eq!(counters.dropped_for(DropReason::Evicted), 3);
    assert_eq!(s.ignored(), 3);
    let got = finish(&mut s);
    let keys: Vec<&str> = got.iter().map(|a| a.group_key.as_str()).collect();
    assert_eq!(keys, vec!["k=a", "k=b", "", "k=c", ""]);
    assert_eq!(got[0].value, 2.0);
    assert_eq!(got[2].fields["ignored"], json!(3));
    assert_eq!(got[2].fields["keys"], json!(2));
    assert!(
        got[2]
            .summary
            .ends_with(" 3 events of keys past max_keys were not counted."),
        "{}",
        got[2].summary
    );
    assert_eq!(got[4].fields["ignored"], json!(0));
}

/// `top: N` adds one alert per period: the N biggest keys by the first measure, ties in
/// key order, with the total and the number of keys over all of them.
#[test]
fn the_top_alert_ranks_the_periods_keys() {
    let mut c = ports();
    c["top"] = json!(2);
    c["time_zone"] = json!("UTC");
    let (mut s, _) = stage(c);
    for (port, bytes, at) in [
        (json!(443), 300, "2026-06-01T00:00:00Z"),
        (json!(22), 500, "2026-06-10T00:00:00Z"),
        (json!(80), 500, "2026-06-11T00:00:00Z"),
        (json!(8080), 100, "2026-06-30T23:59:59Z"),
    ] {
        feed(
            &mut s,
            json!({"port": port, "bytes_in": bytes, "bytes_out": 1}),
            at,
        );
    }
    feed(&mut s, json!({"bytes_in": 5}), "2026-06-12T00:00:00Z");
    let got = tick(&mut s, "2026-07-01T00:05:00Z");
    assert_eq!(got.len(), 6, "five keys and the top alert");
    let top = &got[5];
    let w = window("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z");
    assert_eq!(top.group_key, "");
    assert_eq!(top.group, json!({}));
    assert_eq!(top.value, 1405.0);
    assert_eq!(top.unit.as_deref(), Some("B"));
    assert_eq!(top.window, w);
    assert_eq!(top.id, Alert::make_id("p", "rep", "<top>", &w));
    assert!(got[..5].iter().all(|a| a.id != top.id));
    assert_eq!(top.title, "Top 2 port in 2026-06 by bytes_in");
    assert_eq!(
        top.summary,
        "p.rep: 1.37 KiB in total from 5 events of 5 keys in the month 2026-06 (UTC, 2026-06-01T00:00:00Z to 2026-07-01T00:00:00Z)."
    );
    let table = top.top.as_ref().expect("a top table");
    assert_eq!(table.by, vec!["port"]);
    assert_eq!(table.measure, "bytes_in");
    assert_eq!(table.window, w);
    let rows: Vec<(Vec<Value>, f64)> = table
        .rows
        .iter()
        .map(|r| (r.key.clone(), r.value))
        .collect();
    assert_eq!(
        rows,
        vec![(vec![json!(22)], 500.0), (vec![json!(80)], 500.0)],
        "ties in key order: `port=22` before `port=80`"
    );
    assert_eq!((table.total, table.keys), (1405.0, 5));
    assert_eq!(
        Value::Object(top.fields.clone()),
        json!({
            "period": "2026-06", "time_zone": "UTC", "count": 5, "keys": 5, "ignored": 0,
            "totals": {"bytes_in": 1405, "bytes_out": 4},
            "unmeasured": {"bytes_in": 0, "bytes_out": 1},
        })
    );
    // The missing key's row reads null.
    let (mut s, _) = stage(json!({"group_by": ["port"], "top": 1}));
    feed(&mut s, json!({}), "2026-06-12T00:00:00Z");
    let got = finish(&mut s);
    assert_eq!(got[1].top.as_ref().unwrap().rows[0].key, vec![Value::Null]);
    assert_eq!(got[1].title, "Top 1 port in 2026-06 by events");
}

/// Whole numbers stay exact up to 2^53; others keep their fraction; a negative or
/// non-numeric value is unmeasured.
#[test]
fn totals_of_whole_numbers_stay_exact() {
    let (mut s, _) = stage(json!({"sum": "bytes"}));
    let big = 1u64 << 52;
    feed(&mut s, json!({"bytes": big}), "2026-06-01T00:00:00Z");
    feed(&mut s, json!({"bytes": big - 1}), "2026-06-01T00:00:00Z");
    feed(&mut s, json!({"bytes": 1}), "2026-06-01T00:00:00Z");
    feed(&mut s, json!({"bytes": -5}), "2026-06-01T00:00:00Z");
    feed(&mut s, json!({"bytes": "n/a"}), "2026-06-01T00:00:00Z");
    feed(&mut s, json!({"bytes": 0.25}), "2026-07-01T00:00:00Z");
    feed(&mut s, json!({"bytes": 0.5}), "2026-07-01T00:00:00Z");
    let got = finish(&mut s);
    assert_eq!(got[0].fields["totals"]["bytes"], json!(1u64 << 53));
    assert_eq!(
        got[0].fields["totals"]["bytes"].to_string(),
        "9007199254740992"
    );
    assert_eq!(got[0].fields["unmeasured"]["bytes"], json!(2));
    assert_eq!(got[0].fields["count"], json!(5));
    assert_eq!(got[1].fields["totals"]["bytes"], json!(0.75));
    assert_eq!(got[1].title, "0.75 bytes in 2026-07");
}

/// The open periods survive a restart when `group_by`, `sum`, `period` and `time_zone`
/// are the same; otherwise the stage starts empty.
#[test]
fn open_periods_survive_a_restart_unless_the_shape_changes() {
    let c = json!({"period": "daily", "group_by": ["port"], "sum": "bytes", "time_zone": "Asia/Taipei"});
    let (mut s, _) = stage(c.clone());
    feed(
        &mut s,
        json!({"port": 1, "bytes": 10}),
        "2026-05-01T10:00:00Z",
    );
    feed(
        &mut s,
        json!({"port": 1, "bytes": 10}),
        "2026-05-02T10:00:00Z",
    );
    assert_eq!(
        tick(&mut s, "2026-05-01T16:05:00Z").len(),
        1,
        "May 1 (local) reported"
    );
    let saved = snapshot_text(&s).unwrap();

    // A reload changing what the reports read, not what the totals mean: kept.
    let mut same = c.clone();
    same["top"] = json!(3);
    same["grace"] = json!("1h");
    same["alert"] = json!({"severity": "low"});
    let (mut again, counters) = stage(same);
    assert!(again.restore("p.rep", &saved));
    feed(
        &mut again,
        json!({"port": 1, "bytes": 5}),
        "2026-05-02T11:00:00Z",
    );
    feed(
        &mut again,
        json!({"port": 1, "bytes": 100}),
        "2026-05-01T11:00:00Z",
    );
    assert_eq!(
        counters.dropped_for(DropReason::Late),
        1,
        "May 1 was reported before"
    );
    let got = finish(&mut again);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].value, got[0].severity), (15.0, Severity::Low));

    for changed in [
        json!({"time_zone": "UTC"}),
        json!({"period": "monthly"}),
        json!({"sum": ["bytes", "packets"]}),
        json!({"group_by": ["host"]}),
    ] {
        let mut other = c.clone();
        for (k, v) in changed.as_object().unwrap() {
            other[k] = v.clone();
        }
        let (mut fresh, _) = stage(other);
        assert!(!fresh.restore("p.rep", &saved), "{changed}");
        assert!(finish(&mut fresh).is_empty(), "{changed}: nothing open");
    }
}

/// At the end of the input every open period is reported, and the same events make the
/// same alerts (ids included) run after run.
#[test]
fn finish_reports_every_open_period_with_stable_ids() {
    let run = || {
        let (mut s, _) = stage(json!({"period": "weekly", "group_by": ["port"], "top": 1}));
        feed(&mut s, json!({"port": 1}), "2026-01-01T00:00:00Z");
        feed(&mut s, json!({"port": 2}), "2026-01-05T00:00:00Z");
        feed(&mut s, json!({"port": 2}), "2026-01-06T00:00:00Z");
        finish(&mut s)
    };
    let first = run();
    let periods: Vec<(&str, &str)> = first
        .iter()
        .map(|a| (a.fields["period"].as_str().unwrap(), a.group_key.as_str()))
        .collect();
    assert_eq!(
        periods,
        vec![
            ("2026-W01", "port=1"),
            ("2026-W01", ""),
            ("2026-W02", "port=2"),
            ("2026-W02", "")
        ]
    );
    let ids = |v: &[Alert]| v.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&run()));
}

#[test]
fn the_config_is_checked_at_its_keys() {
    let errors = problems(json!({
        "time_zone": "Europe/Berln",
        "sum": ["bytes", "bytes", "a..b"],
        "top": 0,
        "max_keys": 0,
        "grace": "-1m",
    }));
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "/time_zone",
                "`Europe/Berln` is not an IANA time zone name; did you mean `Europe/Berlin`?"
            ),
            (
                "/sum/1",
                "`bytes` is listed twice in `sum`: total each field once"
            ),
            (
                "/sum/2",
                "`a..b` is not a field path: it has an empty segment (two dots, or a dot at an end)"
            ),
            ("/grace", "`grace` must not be negative, not `-1m`"),
            ("/max_keys", "`max_keys` must be at least 1"),
            ("/top", "`top` must be at least 1"),
        ]
    );
    let errors = problems(json!({"top": 3, "alert": {"top_title": "x"}}));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "/top");
    assert!(errors[0].1.contains("add `group_by`"), "{}", errors[0].1);

    let errors = problems(json!({"alert": {"top_summary": "x"}}));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "/alert/top_summary");

    // Templates are checked against the report's own values, the top one's at its key.
    let errors = problems(json!({
        "group_by": ["port"], "top": 3,
        "alert": {
            "title": "{{group.port}} {{period}} {{totals.bytes}} {{fields.time_zone}} {{count}}",
            "top_title": "{{fields.keys}} {{ignored}} {{fields.perod}}",
        },
        "sum": "bytes",
    }));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "/alert/top_title");
    assert!(errors[0].1.contains("fields.perod"), "{}", errors[0].1);

    // A size needs a size unit.
    let errors = problems(json!({"alert": {"title": "{{size value unit=unit}}"}}));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "/alert/title");
    assert!(
        problems(json!({"unit": "B", "alert": {"title": "{{size value unit=unit}}"}})).is_empty()
    );
    assert!(problems(json!({"unit": "packets"})).is_empty());
}

/// The stage's documented example validates, and `alert.severity` defaults to `info`.
#[test]
fn the_defaults() {
    let c = cfg(json!({}));
    assert_eq!(c.time_zone, "UTC");
    assert_eq!(c.grace.to_string(), "5m");
    assert_eq!(c.max_keys, 100_000);
    assert_eq!(c.alert.severity, Severity::Info);
    assert!(c.sum.paths().is_empty());
    let one: ReportConfig =
        serde_json::from_value(json!({"inputs": ["x"], "period": "daily", "sum": "bytes"}))
            .unwrap();
    assert_eq!(one.sum.paths(), ["bytes"]);
}
