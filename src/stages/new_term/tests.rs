use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::diagnostic::Problems;
use crate::event::{Alert, AlertStatus, AlertWindow, Event, Timestamp};
use crate::node::{BuildContext, NodeCounters, Stage, snapshot_text};
use crate::stages::alerting::AlertTemplates;

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
}

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn at(ms: i64) -> Timestamp {
    t0() + Duration::milliseconds(ms)
}

fn cfg(v: Value) -> NewTermConfig {
    let mut base = json!({"inputs": ["in"], "field": ["a", "b"], "learn": "1m"});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn templates(c: &NewTermConfig) -> AlertTemplates {
    AlertTemplates::compile(
        &c.alert,
        &c.default_title(),
        &c.default_summary(),
        "p",
        "nt",
    )
    .unwrap()
}

/// A stage of `v` (over the defaults above), hashing under a fixed key.
fn stage(v: Value) -> NewTermStage {
    let c = cfg(v);
    let mut p = Problems::default();
    c.check(&mut p);
    assert!(!p.has_errors(), "{:?}", p.items);
    NewTermStage::new(&c, templates(&c))
        .unwrap()
        .with_hash_key(7, 11)
}

fn ev(data: Value, ms: i64) -> Arc<Event> {
    Arc::new(Event::from_record(data, "p.src".into(), at(ms)))
}

fn feed(s: &mut NewTermStage, data: Value, ms: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.process(ev(data, ms), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

fn pair(a: &str, b: &str) -> Value {
    json!({"a": a, "b": b})
}

/// Issue 18's acceptance case: 8 × (good, yes), then (bad, no) → exactly one alert, for
/// (bad, no). The learn period (1m) takes the first (good, yes); the seven after it are
/// known.
#[test]
fn eight_good_yes_then_bad_no_alert_once_for_bad_no() {
    let mut s = stage(json!({}));
    let mut alerts = Vec::new();
    for i in 0..8 {
        alerts.extend(feed(&mut s, pair("good", "yes"), i * MIN));
    }
    assert!(alerts.is_empty(), "{alerts:?}");
    alerts.extend(feed(&mut s, pair("bad", "no"), 8 * MIN));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.status, AlertStatus::Firing);
    assert!(!a.episode, "a one-off: nothing to resolve");
    assert_eq!((a.value, a.threshold), (1.0, 1.0));
    assert_eq!(a.fields["term"], json!(["bad", "no"]));
    assert_eq!(a.fields["learning_since"], "2026-01-01T00:00:00Z");
    assert_eq!(a.group_key, "");
    assert_eq!(
        a.window,
        AlertWindow {
            start: at(8 * MIN),
            end: at(8 * MIN)
        }
    );
    assert_eq!((a.first_seen, a.last_seen), (at(8 * MIN), at(8 * MIN)));
    assert_eq!(a.samples.len(), 1);
    assert_eq!(a.samples[0].value(), pair("bad", "no"));
    assert_eq!(a.title, "New (a, b) (bad, no)");
    assert_eq!(
        a.summary,
        "(a, b) (bad, no) at 2026-01-01T00:08:00Z: never seen before (values learned since 2026-01-01T00:00:00Z)."
    );
    // Seen again: known.
    assert!(feed(&mut s, pair("bad", "no"), 9 * MIN).is_empty());
    assert_eq!(
        s.counts(),
        Counts {
            alerted: 1,
            learned: 1,
            ..Counts::default()
        }
    );

    // Without a learn period the very first value alerts too: two alerts.
    let mut s = stage(json!({"learn": "0s", "warm_up": null}));
    let mut alerts = Vec::new();
    for i in 0..8 {
        alerts.extend(feed(&mut s, pair("good", "yes"), i * MIN));
    }
    alerts.extend(feed(&mut s, pair("bad", "no"), 8 * MIN));
    let terms: Vec<&Value> = alerts.iter().map(|a| &a.fields["term"]).collect();
    assert_eq!(terms, [&json!(["good", "yes"]), &json!(["bad", "no"])]);
}

/// Issue 18's acceptance case: a learn period covering the first values → no alert for
/// them; the period is half-open, measured in each event's own time from the first
/// event's.
#[test]
fn a_learn_period_covering_the_first_values_keeps_them_quiet() {
    let mut s = stage(json!({"learn": "1h"}));
    assert!(feed(&mut s, pair("good", "yes"), 0).is_empty());
    assert!(feed(&mut s, pair("bad", "no"), 30 * MIN).is_empty());
    assert!(feed(&mut s, pair("odd", "maybe"), HOUR - 1).is_empty());
    // After it, what was learned stays quiet; a value first seen exactly at its end is
    // news.
    assert!(feed(&mut s, pair("bad", "no"), 2 * HOUR).is_empty());
    let got = feed(&mut s, pair("new", "one"), HOUR);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].fields["term"], json!(["new", "one"]));
    // An event of the learn period that arrives late is learned, not alerted on.
    assert!(feed(&mut s, pair("late", "learner"), 59 * MIN).is_empty());
    assert!(feed(&mut s, pair("late", "learner"), 3 * HOUR).is_empty());
    assert_eq!(s.counts().learned, 4);
    assert_eq!(s.counts().alerted, 1);
}

#[test]
fn each_key_learns_its_own_values() {
    let mut s = stage(json!({"field": "dst.ip", "group_by": ["src.ip"]}));
    let flow = |src: &str, dst: &str| json!({"src": {"ip": src}, "dst": {"ip": dst}});
    assert!(feed(&mut s, flow("10.0.0.1", "10.9.9.9"), 0).is_empty());
    // After learning: the destination is known for .1, new for .2 (a key first seen now).
    assert!(feed(&mut s, flow("10.0.0.1", "10.9.9.9"), 2 * MIN).is_empty());
    let got = feed(&mut s, flow("10.0.0.2", "10.9.9.9"), 3 * MIN);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].group_key, "src.ip=10.0.0.2");
    assert_eq!(got[0].group, json!({"src": {"ip": "10.0.0.2"}}));
    assert_eq!(got[0].fields["term"], "10.9.9.9");
    assert_eq!(got[0].title, "New dst.ip 10.9.9.9 for src.ip=10.0.0.2");
    assert_eq!(s.keys(), 2);
    assert_eq!(s.values_of("src.ip=10.0.0.1"), Some(1));
    // Numbers show as numbers; `22` and `"22"` are one value.
    let mut s = stage(json!({"field": "port", "learn": "0s"}));
    let got = feed(&mut s, json!({"port": 22}), 0);
    assert_eq!(got[0].fields["term"], json!(22));
    assert!(feed(&mut s, json!({"port": "22"}), 1).is_empty());
}

/// Two new values of one key at the same time are two alerts with their own ids; the
/// same event read again from the same state (a restart before the state was saved)
/// makes the same alert, so it is delivered once.
#[test]
fn alert_ids_name_the_key_the_value_and_the_time() {
    let mut s = stage(json!({"learn": "0s"}));
    let before = snapshot_text(&s).unwrap();
    let x = feed(&mut s, pair("x", "1"), 0);
    let y = feed(&mut s, pair("y", "1"), 0);
    assert_ne!(x[0].id, y[0].id);
    let mut again = stage(json!({"learn": "0s"}));
    assert!(again.restore(&before, "p.nt"));
    let x2 = feed(&mut again, pair("x", "1"), 0);
    assert_eq!(x2[0].id, x[0].id);
}

/// Issue 18's case: a value seen in the warm-up file does not alert. A line that is
/// not a record is counted, set aside under the state directory, and skipped.
#[test]
fn a_value_seen_in_warm_up_does_not_alert() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("history.jsonl"),
        "{\"a\": \"good\", \"b\": \"yes\", \"timestamp\": \"2025-12-01T00:00:00Z\"}\nnot a record\n{\"a\": \"old\"}\n",
    )
    .unwrap();
    let c = cfg(json!({"learn": "0s", "warm_up": {"file": "history.jsonl"}}));
    let mut p = Problems::in_dir(dir.path());
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    let cx = context(dir.path(), false);
    let mut s = c.build(&cx, &no_history).unwrap();
    let mut out = Vec::new();
    s.process(ev(pair("good", "yes"), 0), &mut out);
    assert!(out.is_empty(), "known from the warm-up");
    s.process(ev(pair("bad", "no"), MIN), &mut out);
    assert_eq!(out.len(), 1);
    let a = out[0].alert().unwrap();
    assert_eq!(a.fields["term"], json!(["bad", "no"]));
    assert_eq!(
        a.fields["learning_since"], "2025-12-01T00:00:00Z",
        "the oldest warm-up record"
    );
    assert_eq!(cx.counters.errors_by_reason(), [("malformed", 1)]);
    let rejected = std::fs::read_to_string(dir.path().join("var/rejected/p.nt.jsonl")).unwrap();
    let line: Value = serde_json::from_str(rejected.lines().next().unwrap()).unwrap();
    assert_eq!(line["line"], 2);
    assert_eq!(line["raw"], "not a record");
    assert!(
        line["location"]
            .as_str()
            .unwrap()
            .ends_with("history.jsonl")
    );
}

/// Warm-up records count as seen at their own time (`time_field`, else `timestamp`,
/// `time` or `@timestamp`, else when the stage is built): one older than `forget_after`
/// is forgotten already. A JSON array works as JSON lines do.
#[test]
fn warm_up_records_count_as_seen_at_their_own_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("history.json"),
        r#"[
          {"a": "x", "b": 1, "seen": "2025-01-01T00:00:00Z", "timestamp": "2025-12-31T00:00:00Z"},
          {"a": "y", "b": 1},
          {"a": "z", "b": 1, "seen": 1767139200}
        ]"#,
    )
    .unwrap();
    let c = cfg(json!({
        "learn": "0s",
        "forget_after": "30d",
        "warm_up": {"file": "history.json", "time_field": "seen"}
    }));
    let mut s = c.build(&context(dir.path(), false), &no_history).unwrap();
    let mut out = Vec::new();
    // x was seen a year ago (its `timestamp` is not the field named): forgotten.
    s.process(ev(pair("x", "1"), 0), &mut out);
    assert_eq!(out.len(), 1);
    // y has no time: seen when the stage was built. z: epoch seconds, 2025-12-31.
    s.process(ev(pair("y", "1"), MIN), &mut out);
    s.process(ev(pair("z", "1"), MIN), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
}

/// With `forget_after`, a value not seen for that long alerts again when it returns.
#[test]
fn forget_after_realerts_after_the_gap() {
    let mut s = stage(json!({"forget_after": "1h"}));
    assert!(feed(&mut s, pair("a", "1"), 0).is_empty(), "learning");
    assert!(feed(&mut s, pair("a", "1"), 30 * MIN).is_empty());
    // Other traffic moves the stage's time on: 90m is exactly an hour after (a, 1) was
    // last seen, so it is forgotten by then.
    let got = feed(&mut s, pair("b", "2"), 90 * MIN);
    assert_eq!(got.len(), 1);
    let got = feed(&mut s, pair("a", "1"), 90 * MIN);
    assert_eq!(got.len(), 1, "back after the gap: new again");
    assert_eq!(
        got[0].fields["term"],
        json!(["a", 1]),
        "parts that read as numbers are numbers"
    );
    assert!(feed(&mut s, pair("a", "1"), 100 * MIN).is_empty());
    // Just short of the gap: still known.
    assert!(feed(&mut s, pair("b", "2"), 90 * MIN + HOUR - 1).is_empty());
    // A long gap: the sweep frees the values, and they are news when they come back.
    assert!(feed(&mut s, pair("c", "3"), 10 * HOUR).len() == 1);
    assert_eq!(s.values(), 1, "only (c, 3) is held");
    assert!(s.counts().forgotten >= 2);
    assert_eq!(feed(&mut s, pair("a", "1"), 10 * HOUR + 1).len(), 1);
    // Without `forget_after` a value is known for good.
    let mut s = stage(json!({}));
    feed(&mut s, pair("a", "1"), 0);
    assert!(feed(&mut s, pair("a", "1"), 1_000 * HOUR).is_empty());
}

/// Issue 18's case: a restart (snapshot, then restore) keeps the values learned, the
/// learn period's start and the hash key; a new `field` or `group_by` starts over.
#[test]
fn a_restart_keeps_what_was_learned() {
    let mut s = stage(json!({"learn": "10m"}));
    feed(&mut s, pair("good", "yes"), 0);
    let saved = snapshot_text(&s).unwrap();
    let saved_json: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved_json["learn_start"], "2026-01-01T00:00:00Z");
    assert_eq!(saved_json["keys"][""].as_array().map(Vec::len), Some(1));

    // Another process: another random hash key until the state brings its own.
    let c = cfg(json!({"learn": "10m"}));
    let mut r = NewTermStage::new(&c, templates(&c)).unwrap();
    assert!(r.restore(&saved, "p.nt"));
    assert!(feed(&mut r, pair("good", "yes"), 20 * MIN).is_empty());
    // The learn period is not started again: a new value 20 minutes in alerts.
    assert_eq!(feed(&mut r, pair("bad", "no"), 20 * MIN).len(), 1);
    assert_eq!(r.counts().learned, 1);

    // `learn`, `forget_after` and bounds may change; `field` or `group_by` reset.
    let mut r = stage(json!({"learn": "1h", "forget_after": "30d", "max_terms": 5}));
    assert!(r.restore(&saved, "p.nt"));
    let mut r = stage(json!({"field": ["a", "c"]}));
    assert!(!r.restore(&saved, "p.nt"));
    assert_eq!(r.values(), 0);
    let mut r = stage(json!({"group_by": ["a"]}));
    assert!(!r.restore(&saved, "p.nt"));
    assert!(!r.restore("{not json", "p.nt"));
}

fn context(dir: &Path, keep_state: bool) -> BuildContext {
    BuildContext {
        id: "p.nt".into(),
        pipeline: "p".into(),
        node: "nt".into(),
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("var"),
        rejected_max_bytes: 1 << 24,
        clock: Arc::new(crate::time::VirtualClock::new(t0())),
        store: Arc::new(crate::store::Store::in_memory().unwrap()),
        keep_state,
        public_url: crate::sinks::delivery::DEFAULT_PUBLIC_URL.into(),
        history_interval: chrono::Duration::minutes(1),
        rebuilt: false,
        counters: Default::default(),
    }
}

/// Built again with its state saved, the stage restores it and does not read the
/// warm-up file again — unless the file changed.
#[test]
fn build_restores_and_reads_the_warm_up_file_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    std::fs::write(&history, "{\"a\": \"good\", \"b\": \"yes\"}\nbroken\n").unwrap();
    let c = cfg(json!({"learn": "0s", "warm_up": {"file": "history.jsonl"}}));
    let mut cx = context(dir.path(), true);
    let s = c.build(&cx, &no_history).unwrap();
    assert_eq!(cx.counters.errors_by_reason(), [("malformed", 1)]);
    let save = |cx: &BuildContext, s: &dyn Stage| {
        cx.store
            .set_stage_state("p.nt", vec![snapshot_text(s).unwrap().into_bytes()])
            .unwrap();
    };
    save(&cx, s.as_ref());

    cx.counters = Arc::new(NodeCounters::default());
    let mut s = c.build(&cx, &no_history).unwrap();
    assert!(
        cx.counters.errors_by_reason().is_empty(),
        "the file was not read again"
    );
    let mut out = Vec::new();
    s.process(ev(pair("good", "yes"), 0), &mut out);
    assert!(out.is_empty(), "known from the saved state");
    save(&cx, s.as_ref());

    // The file grows: read again, what the state learned is kept.
    std::fs::write(
        &history,
        "{\"a\": \"good\", \"b\": \"yes\"}\nbroken\n{\"a\": \"more\", \"b\": \"history\"}\n",
    )
    .unwrap();
    cx.counters = Arc::new(NodeCounters::default());
    let mut s = c.build(&cx, &no_history).unwrap();
    assert_eq!(cx.counters.errors_by_reason(), [("malformed", 1)]);
    s.process(ev(pair("more", "history"), MIN), &mut out);
    s.process(ev(pair("good", "yes"), MIN), &mut out);
    assert!(out.is_empty(), "{out:?}");

    // A missing file fails the build, saying what to do.
    std::fs::remove_file(&history).unwrap();
    let e = c.build(&cx, &no_history).err().unwrap().to_string();
    assert!(e.contains("cannot read the warm-up file"), "{e}");
    assert!(e.contains("or remove `warm_up`"), "{e}");
}

/// Issue 18's rule: a missing field (or any part of a tuple missing or null) is no
/// value: counted, never learned nor alerted on.
#[test]
fn a_missing_or_null_field_is_counted_not_a_value() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"learn": "0s"})).counting_into(counters.clone());
    assert!(feed(&mut s, json!({"a": "x"}), 0).is_empty());
    assert!(feed(&mut s, json!({"a": "x", "b": null}), 1).is_empty());
    assert!(feed(&mut s, json!({"b": "y"}), 2).is_empty());
    assert_eq!(s.counts().missing, 3);
    assert_eq!(s.values(), 0);
    assert_eq!(counters.dropped(), [("unmeasured", 3)]);
    // An empty string is a value.
    assert_eq!(feed(&mut s, pair("", ""), 3).len(), 1);
}

/// Bounds evict the least recently seen values (or keys), counted as evicted; an
/// evicted value alerts again when it is next seen.
#[test]
fn bounds_evict_the_least_recently_seen_and_count_them() {
    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"field": "v", "learn": "0s", "max_terms": 10}))
        .counting_into(counters.clone());
    for i in 0..10 {
        assert_eq!(feed(&mut s, json!({"v": i}), i).len(), 1);
    }
    assert_eq!(s.values(), 10);
    // One more: the key goes down to 9 (10 less a tenth), the two seen first leave.
    assert_eq!(feed(&mut s, json!({"v": 10}), 10).len(), 1);
    assert_eq!(s.values(), 9);
    assert_eq!(counters.dropped(), [("evicted", 2)]);
    assert_eq!(
        feed(&mut s, json!({"v": 0}), 11).len(),
        1,
        "evicted: new again"
    );
    assert!(feed(&mut s, json!({"v": 10}), 12).is_empty(), "kept");

    let counters = Arc::new(NodeCounters::default());
    let mut s = stage(json!({"field": "v", "group_by": ["k"], "learn": "0s", "max_keys": 10}))
        .counting_into(counters.clone());
    for k in 0..11 {
        feed(&mut s, json!({"k": k, "v": 1}), k);
    }
    assert_eq!(s.keys(), 9);
    assert_eq!(counters.dropped(), [("evicted", 2)]);
    assert_eq!(s.counts().evicted, 2);

    let counters = Arc::new(NodeCounters::default());
    let mut s =
        stage(json!({"field": "v", "group_by": ["k"], "learn": "0s", "max_total_terms": 20}))
            .counting_into(counters.clone());
    for i in 0..21 {
        feed(&mut s, json!({"k": i % 3, "v": i}), i);
    }
    assert_eq!(s.values(), 18);
    assert_eq!(counters.dropped(), [("evicted", 3)]);
}

#[test]
fn check_names_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let check = |v: Value| {
        let mut p = Problems::in_dir(dir.path());
        cfg(v).check(&mut p);
        p.items
            .iter()
            .map(|i| (i.pointer.clone(), i.message.clone(), i.severity))
            .collect::<Vec<_>>()
    };
    let got = check(json!({"field": [], "group_by": [""], "max_terms": 0, "forget_after": "0s"}));
    let pointers: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        ["/field", "/group_by/0", "/forget_after", "/max_terms"]
    );
    assert!(got[0].1.contains("lists no field"), "{}", got[0].1);

    let got = check(json!({"learn": "0s"}));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "/learn");
    assert_eq!(got[0].2, crate::diagnostic::Severity::Warning);
    assert!(got[0].1.contains("every value alerts"), "{}", got[0].1);

    let got = check(json!({"alert": {"mode": "each_crossing", "resolve_after": "1h"}}));
    let pointers: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(pointers, ["/alert/mode", "/alert/resolve_after"]);

    let got = check(json!({"warm_up": {"file": "../elsewhere.jsonl"}}));
    assert_eq!(got[0].0, "/warm_up/file");
    assert!(got[0].1.contains("`..` step"), "{}", got[0].1);
    let got = check(json!({"warm_up": {"file": "missing.jsonl", "time_field": "a..b"}}));
    let pointers: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(pointers, ["/warm_up/time_field", "/warm_up/file"]);
    assert!(
        got[1].1.contains("cannot read the warm-up file"),
        "{}",
        got[1].1
    );
    std::fs::write(dir.path().join("empty.jsonl"), "\n").unwrap();
    let got = check(json!({"warm_up": {"file": "empty.jsonl"}}));
    assert_eq!(got.len(), 1);
    assert!(got[0].1.contains("is empty"), "{}", got[0].1);

    // Templates may use the value's parts; a misspelt field is an error.
    let got = check(
        json!({"alert": {"title": "{{fields.term.[0]}} → {{fields.term.[1]}} since {{fields.learning_since}}"}}),
    );
    assert!(got.is_empty(), "{got:?}");
    let got = check(json!({"alert": {"title": "{{fields.terms}}"}}));
    assert_eq!(got[0].0, "/alert/title");
}

/// Where no PCE history can be read (as in `vigil test`).
fn no_history(_: &super::PceWarmUp) -> Result<Option<super::HistoryFeed>, crate::node::NodeError> {
    Ok(None)
}

/// The PCE's history arrives while the stage runs: until it is all read the stage learns
/// every value and alerts on none; then values from the history and from meanwhile are
/// known, a new one alerts, and the state notes the history so a restart does not read
/// it again. A history that cannot be read leaves the stage alerting as without it, and
/// noting nothing.
#[test]
fn the_pce_history_is_learned_as_it_arrives_and_noted_once_read() {
    let dir = tempfile::tempdir().unwrap();
    let c =
        cfg(json!({"learn": "0s", "warm_up": {"pce": {"connection": "lab", "lookback": "1d"}}}));
    let mut p = Problems::in_dir(dir.path());
    c.check(&mut p);
    assert!(p.items.is_empty(), "{:?}", p.items);
    let cx = context(dir.path(), true);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let asked = std::sync::Mutex::new(Vec::new());
    let history = |w: &PceWarmUp| {
        asked.lock().unwrap().push(w.clone());
        Ok(rx.lock().unwrap().take())
    };
    let mut s = c.build(&cx, &history).unwrap();
    assert_eq!(asked.lock().unwrap()[0].connection, "lab");
    let old = |a: &str, b: &str| Event::from_record(pair(a, b), "pce".into(), at(-HOUR));
    tx.try_send(HistoryMsg::Events(vec![
        old("web", "db"),
        old("web", "dns"),
    ]))
    .unwrap();
    let mut out = Vec::new();
    s.process(ev(pair("ops", "db"), 0), &mut out);
    assert!(out.is_empty(), "learned while the history is read");
    tx.try_send(HistoryMsg::Events(vec![old("app", "db")]))
        .unwrap();
    tx.try_send(HistoryMsg::Done).unwrap();
    s.tick(at(1), &mut out);
    for (a, b) in [("web", "db"), ("app", "db"), ("ops", "db")] {
        s.process(ev(pair(a, b), MIN), &mut out);
    }
    assert!(out.is_empty(), "known from the history or from meanwhile");
    s.process(ev(pair("new", "db"), 2 * MIN), &mut out);
    assert_eq!(out.len(), 1);
    let saved = snapshot_text(s.as_ref()).unwrap();
    assert!(saved.contains("\"pce_warmed\":\"lab traffic 1"), "{saved}");
    // Built again with that state: the history is not asked for again.
    cx.store
        .set_stage_state("p.nt", vec![saved.into_bytes()])
        .unwrap();
    let _ = c.build(&cx, &history).unwrap();
    assert_eq!(asked.lock().unwrap().len(), 1, "read once");

    // A history that fails part way.
    let cx = context(dir.path(), false);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let mut s = c.build(&cx, &|_| Ok(rx.lock().unwrap().take())).unwrap();
    tx.try_send(HistoryMsg::Events(vec![old("web", "db")]))
        .unwrap();
    tx.try_send(HistoryMsg::Failed("PCE unreachable".into()))
        .unwrap();
    let mut out = Vec::new();
    s.tick(at(0), &mut out);
    s.process(ev(pair("web", "db"), MIN), &mut out);
    assert!(out.is_empty(), "what came before the failure is learned");
    s.process(ev(pair("new", "db"), MIN), &mut out);
    assert_eq!(out.len(), 1, "alerting as without the history");
    let saved = snapshot_text(s.as_ref()).unwrap();
    assert!(!saved.contains("pce_warmed"), "{saved}");
}
