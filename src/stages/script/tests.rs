use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::event::{Alert, AlertStatus, Event, Severity};
use crate::node::{BuildContext, Stage, snapshot_text};
use crate::store::Store;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap()
}

fn cx(dir: &Path, store: Arc<Store>) -> BuildContext {
    BuildContext {
        id: "p.s".into(),
        pipeline: "p".into(),
        node: "s".into(),
        base_dir: dir.to_path_buf(),
        state_dir: dir.to_path_buf(),
        rejected_max_bytes: 1 << 24,
        clock: Arc::new(crate::time::WallClock),
        store,
        keep_state: true,
        public_url: crate::sinks::delivery::DEFAULT_PUBLIC_URL.into(),
        history_interval: chrono::Duration::minutes(1),
        rebuilt: false,
        counters: Default::default(),
    }
}

fn config(extra: Value) -> ScriptConfig {
    let mut cfg = json!({"inputs": ["in"], "file": "s.rhai"});
    if let (Value::Object(c), Value::Object(e)) = (&mut cfg, extra) {
        c.extend(e);
    }
    serde_json::from_value(cfg).expect("valid config")
}

/// A stage running `script`, written to a fresh directory.
fn stage_with(script: &str, extra: Value) -> (ScriptStage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), script).unwrap();
    let cfg = config(extra);
    let store = Arc::new(Store::in_memory().unwrap());
    let path = dir.path().join("s.rhai");
    let stage = ScriptStage::new(&cfg, &cx(dir.path(), store), &path, script).expect("compiles");
    (stage, dir)
}

fn stage(script: &str) -> ScriptStage {
    stage_with(script, json!({})).0
}

fn ev(data: Value, secs: i64) -> Arc<Event> {
    Arc::new(Event::from_record(
        data,
        "p.in".into(),
        t0() + Duration::seconds(secs),
    ))
}

fn run(stage: &mut dyn Stage, event: Arc<Event>) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    stage.process(event, &mut out);
    out
}

#[test]
fn drop_keep_and_modify() {
    let mut s = stage(
        r#"
        if event.action == "drop" { return false; }
        if event.action == "tag" { event.tag = "seen"; event.n += 1; }
        "#,
    );
    assert!(run(&mut s, ev(json!({"action": "drop"}), 0)).is_empty());

    let kept = ev(json!({"action": "keep", "n": 1}), 0);
    let out = run(&mut s, kept.clone());
    assert_eq!(out.len(), 1);
    assert!(Arc::ptr_eq(&out[0], &kept), "unchanged: the same event");

    let out = run(&mut s, ev(json!({"z": 0, "action": "tag", "n": 1}), 0));
    assert_eq!(
        out[0].data(),
        &json!({"z": 0, "action": "tag", "n": 2, "tag": "seen"})
    );
    let keys: Vec<&String> = out[0].data().as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "action", "n", "tag"], "original key order kept");
    assert_eq!(out[0].meta.time, t0());
    assert_eq!(s.errors(), 0);
}

#[test]
fn endless_loop_is_stopped_and_the_next_event_is_handled() {
    let mut s = stage("if event.spin { loop {} }\nevent.ok = true;");
    let spinning = ev(json!({"spin": true}), 0);
    let out = run(&mut s, spinning.clone());
    assert_eq!(out.len(), 1, "a failing script does not lose the event");
    assert!(Arc::ptr_eq(&out[0], &spinning), "passed on unchanged");
    assert_eq!(s.errors(), 1);
    let out = run(&mut s, ev(json!({"spin": false}), 1));
    assert_eq!(out[0].data(), &json!({"spin": false, "ok": true}));
    assert_eq!(s.errors(), 1);
}

#[test]
fn endless_loop_is_stopped_by_the_timeout_too() {
    let (mut s, _dir) = stage_with(
        "loop {}",
        json!({"max_operations": 1_000_000_000_000u64, "timeout": "20ms"}),
    );
    assert_eq!(run(&mut s, ev(json!({"a": 1}), 0)).len(), 1);
    assert_eq!(s.errors(), 1);
}

#[test]
fn alerts_carry_the_fields_the_script_gives_and_defaults() {
    let (mut s, _dir) = stage_with(
        r#"
        if event.n > 10 {
            alert(#{ title: "too many", severity: "high", group: #{ "src.ip": event.ip },
                     value: event.n, threshold: 10, summary: "n is high", unit: "conns",
                     fields: #{ why: "test" }, window_start: event_time() - 30.0 });
        }
        if event.n > 20 { alert(#{}); }
        "#,
        json!({"alert": {"severity": "low", "title": "default title"}}),
    );
    assert_eq!(
        run(&mut s, ev(json!({"n": 5, "ip": "10.0.0.1"}), 0)).len(),
        1
    );
    let out = run(&mut s, ev(json!({"n": 12, "ip": "10.0.0.1"}), 60));
    assert_eq!(out.len(), 2, "the event, then the alert");
    assert!(out[0].alert().is_none());
    let a = out[1].alert().expect("an alert event");
    assert_eq!(a.title, "too many");
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.group, json!({"src": {"ip": "10.0.0.1"}}));
    assert_eq!(a.group_key, "src.ip=10.0.0.1");
    assert_eq!((a.value, a.threshold), (12.0, 10.0));
    assert_eq!(a.summary, "n is high");
    assert_eq!(a.unit.as_deref(), Some("conns"));
    assert_eq!(a.fields.get("why"), Some(&json!("test")));
    assert_eq!(a.window.start, t0() + Duration::seconds(30));
    assert_eq!(a.window.end, t0() + Duration::seconds(60));
    assert_eq!(a.samples.len(), 1);
    assert_eq!(a.samples[0].value(), json!({"n": 12, "ip": "10.0.0.1"}));
    assert_eq!((a.pipeline.as_str(), a.stage.as_str()), ("p", "s"));
    assert_eq!(out[1].meta.source.as_ref(), "p.s");
    assert_eq!(out[1].meta.time, t0() + Duration::seconds(60));

    // The same again: the same id (stable for stage, group, window).
    let again = run(&mut s, ev(json!({"n": 12, "ip": "10.0.0.1"}), 60));
    assert_eq!(again[1].alert().unwrap().id, a.id);

    let out = run(&mut s, ev(json!({"n": 25, "ip": "10.0.0.2"}), 60));
    assert_eq!(out.len(), 3);
    let d = out[2].alert().unwrap();
    assert_eq!(d.title, "default title");
    assert_eq!(d.severity, Severity::Low);
    assert_eq!(d.group, json!({}));
    assert_eq!(d.window.start, d.window.end);
    assert_eq!(s.errors(), 0);
}

#[test]
fn bad_alerts_are_errors_and_the_event_goes_on() {
    let mut s = stage(
        r#"
        if event.k == 1 { alert(#{ severity: "urgent" }); }
        if event.k == 2 { alert(#{ titel: "x" }); }
        if event.k == 3 { alert(#{ value: "many" }); }
        "#,
    );
    for k in 1..=3 {
        let out = run(&mut s, ev(json!({"k": k}), 0));
        assert_eq!(out.len(), 1, "k={k}");
        assert!(out[0].alert().is_none());
    }
    assert_eq!(s.errors(), 3);
}

#[test]
fn state_counts_and_survives_snapshot_and_restore() {
    let script = r#"
        let n = (state_get(event.user) ?? 0) + 1;
        state_set(event.user, n);
        event.count = n;
    "#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), script).unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let cx = cx(dir.path(), store.clone());
    let cfg = config(json!({}));

    let mut first = cfg.build(&cx).unwrap();
    for _ in 0..3 {
        run(first.as_mut(), ev(json!({"user": "ann"}), 0));
    }
    run(first.as_mut(), ev(json!({"user": "bob"}), 0));
    let saved = snapshot_text(first.as_ref()).expect("state kept");
    let state: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(state["state"], json!({"ann": 3, "bob": 1}));
    store
        .set_stage_state("p.s", vec![saved.into_bytes()])
        .unwrap();

    let mut second = cfg.build(&cx).unwrap();
    let out = run(second.as_mut(), ev(json!({"user": "ann"}), 0));
    assert_eq!(out[0].data()["count"], json!(4), "counting went on");

    // Another script file: the state starts over.
    std::fs::write(dir.path().join("t.rhai"), script).unwrap();
    let other = config(json!({"file": "t.rhai"}));
    let mut third = other.build(&cx).unwrap();
    let out = run(third.as_mut(), ev(json!({"user": "ann"}), 0));
    assert_eq!(out[0].data()["count"], json!(1));
}

#[test]
fn state_is_bounded_and_can_be_off() {
    let (mut s, _dir) = stage_with("state_set(event.k, true);", json!({"max_state_keys": 2}));
    for k in ["a", "b", "a", "c"] {
        assert_eq!(run(&mut s, ev(json!({"k": k}), 0)).len(), 1);
    }
    assert_eq!(s.errors(), 1, "a third key is refused");
    let saved: Value = serde_json::from_str(&snapshot_text(&s).unwrap()).unwrap();
    assert_eq!(saved["state"], json!({"a": true, "b": true}));

    let (mut off, _dir) = stage_with("state_set(\"x\", 1);", json!({"state": false}));
    assert_eq!(run(&mut off, ev(json!({}), 0)).len(), 1);
    assert_eq!(off.errors(), 1);
    assert!(snapshot_text(&off).is_none());
}

#[test]
fn an_alert_stays_an_alert_when_a_script_edits_it() {
    let mut s = stage(r#"event.title = "[lab] " + event.title;"#);
    let mut raise = stage(r#"alert(#{ title: "x", group: #{ host: "h1" } });"#);
    let alert = run(&mut raise, ev(json!({"a": 1}), 0)).pop().unwrap();
    assert!(alert.alert().is_some());
    let out = run(&mut s, alert);
    let a = out[0].alert().expect("still an alert");
    assert_eq!(a.title, "[lab] x");
}

#[test]
fn event_time_is_epoch_seconds_and_log_works() {
    let mut s = stage(r#"log("hello"); print("p"); debug(1); event.t = event_time();"#);
    let out = run(
        &mut s,
        ev(json!({"timestamp": "2026-03-01T12:00:01.5Z"}), 0),
    );
    assert_eq!(out[0].data()["t"], json!(t0().timestamp() as f64 + 1.5));
}

fn plugins() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

fn port_scan() -> Box<dyn Stage> {
    // As the plugins' README says: the script copied beside the pipelines.
    let pipelines = tempfile::tempdir().unwrap();
    std::fs::create_dir(pipelines.path().join("scripts")).unwrap();
    std::fs::copy(
        plugins().join("port-scan.rhai"),
        pipelines.path().join("scripts/port-scan.rhai"),
    )
    .unwrap();
    let cfg: ScriptConfig = serde_json::from_value(json!({
        "inputs": ["flows"],
        "file": "scripts/port-scan.rhai"
    }))
    .unwrap();
    let mut p = crate::diagnostic::Problems::in_dir(pipelines.path());
    cfg.check(&mut p);
    assert!(!p.has_errors(), "{:?} {:?}", p.items, p.external);
    cfg.build(&cx(pipelines.path(), Arc::new(Store::in_memory().unwrap())))
        .expect("builds")
}

/// Issue "Hostile input": `file:` stays inside the pipeline file's directory.
#[test]
fn a_script_outside_the_pipeline_directory_is_refused() {
    let pipelines = tempfile::tempdir().unwrap();
    for file in ["../plugins/port-scan.rhai", "/etc/passwd"] {
        let cfg: ScriptConfig =
            serde_json::from_value(json!({"inputs": ["flows"], "file": file})).unwrap();
        let mut p = crate::diagnostic::Problems::in_dir(pipelines.path());
        cfg.check(&mut p);
        assert_eq!(p.items.len(), 1, "{file}: {:?}", p.items);
        assert_eq!(p.items[0].pointer, "/file");
        assert_eq!(p.items[0].code, crate::diagnostic::codes::OUTSIDE_DIR);
        assert!(p.items[0].message.starts_with(&format!("script `{file}`")));
        let Err(e) = cfg.build(&cx(pipelines.path(), Arc::new(Store::in_memory().unwrap()))) else {
            panic!("{file} built");
        };
        assert!(
            e.to_string().contains("outside") || e.to_string().contains("`..`"),
            "{e}"
        );
    }
}

fn flow(src: &str, port: u16, secs: i64) -> Arc<Event> {
    ev(
        json!({"src": {"ip": src}, "dst": {"ip": "10.9.9.9", "port": port}}),
        secs,
    )
}

#[test]
fn port_scan_plugin_alerts_at_twenty_distinct_ports_within_a_minute() {
    let mut s = port_scan();
    let mut alerts = Vec::new();
    // 19 distinct ports (and repeats) from one source, noise from another.
    for i in 0..19u16 {
        for out in run(s.as_mut(), flow("10.0.0.1", 1000 + i, i64::from(i))) {
            alerts.extend(out.alert().cloned());
        }
        for out in run(s.as_mut(), flow("10.0.0.1", 1000, i64::from(i))) {
            alerts.extend(out.alert().cloned());
        }
        run(s.as_mut(), flow("10.0.0.2", 2000 + i, i64::from(i)));
    }
    assert!(alerts.is_empty());
    let out = run(s.as_mut(), flow("10.0.0.1", 2222, 30));
    assert_eq!(out.len(), 2, "the flow, then the alert");
    let a = out[1].alert().unwrap();
    assert_eq!(a.severity, Severity::High);
    assert_eq!(a.group, json!({"src": {"ip": "10.0.0.1"}}));
    assert_eq!((a.value, a.threshold), (20.0, 20.0));
    // Port 1000 was last seen at 18 s (repeated); the oldest last-seen is port 1001 at 1 s.
    assert_eq!(a.window.start, t0() + Duration::seconds(1));
    assert_eq!(a.window.end, t0() + Duration::seconds(30));
    assert_eq!(a.fields["ports"].as_array().unwrap().len(), 20);
    assert_eq!(a.title, "Port scan from 10.0.0.1");
}

#[test]
fn port_scan_plugin_forgets_ports_older_than_the_window() {
    let mut s = port_scan();
    // One new port every 4 s: at most 15 within any 60 s.
    for i in 0..40u16 {
        let out = run(s.as_mut(), flow("10.0.0.1", 1000 + i, i64::from(i) * 4));
        assert_eq!(out.len(), 1, "no alert at port {i}");
    }
    // Events without the fields pass through.
    assert_eq!(run(s.as_mut(), ev(json!({"msg": "x"}), 200)).len(), 1);
    let saved: Value = serde_json::from_str(&snapshot_text(s.as_ref()).unwrap()).unwrap();
    let ports = saved["state"]["port-scan:10.0.0.1"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(ports, 15, "ports seen at 100..156 s, the newest at 156 s");
}

/// `fire()` keeps one alert per group: the first call opens the episode, later ones
/// update it in place (reported at most once per `history_interval` on a tick), and
/// `resolve()` — or `resolve_after` without a `fire()` — closes it with the same id.
#[test]
fn fire_keeps_one_episode_per_group_and_resolve_closes_it() {
    let (mut s, _dir) = stage_with(
        r#"
        if event.over { fire(#{ group: #{ host: event.host }, value: event.n, title: "hot " + event.host }); }
        else { resolve(#{ host: event.host }); }
        "#,
        json!({"resolve_after": "10m"}),
    );
    let alerts = |out: &[Arc<Event>]| -> Vec<Alert> {
        out.iter().filter_map(|e| e.alert().cloned()).collect()
    };
    let opened = alerts(&run(
        &mut s,
        ev(json!({"over": true, "host": "a", "n": 1}), 0),
    ));
    assert_eq!(opened.len(), 1);
    assert!(opened[0].episode && opened[0].updates == 0);
    // Fired again: updated in place, nothing handed on...
    for (i, secs) in [10, 20, 30].into_iter().enumerate() {
        let out = run(
            &mut s,
            ev(json!({"over": true, "host": "a", "n": i + 2}), secs),
        );
        assert!(alerts(&out).is_empty());
    }
    // ...until a tick a history_interval after the opening reports the newest form.
    let mut out = Vec::new();
    s.tick(t0() + Duration::seconds(59), &mut out);
    assert!(out.is_empty());
    s.tick(t0() + Duration::seconds(60), &mut out);
    let update = alerts(&out);
    assert_eq!(update.len(), 1);
    assert_eq!(
        (update[0].id.clone(), update[0].updates, update[0].value),
        (opened[0].id.clone(), 3, 4.0)
    );
    // A snapshot keeps the open episode.
    let snap = snapshot_text(&s).unwrap();
    let (mut again, _d2) = stage_with(
        r#"
        if event.over { fire(#{ group: #{ host: event.host }, value: event.n }); }
        else { resolve(#{ host: event.host }); }
        "#,
        json!({"resolve_after": "10m"}),
    );
    again.restore(&snap);
    let closed = alerts(&run(
        &mut again,
        ev(json!({"over": false, "host": "a"}), 90),
    ));
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, AlertStatus::Resolved);
    assert_eq!(closed[0].id, opened[0].id);
    assert!(
        alerts(&run(
            &mut again,
            ev(json!({"over": false, "host": "a"}), 95)
        ))
        .is_empty(),
        "nothing open any more"
    );
    // An episode not fired again for resolve_after resolves on a tick.
    let b = alerts(&run(
        &mut again,
        ev(json!({"over": true, "host": "b", "n": 1}), 100),
    ));
    let mut out = Vec::new();
    again.tick(
        t0() + Duration::seconds(100) + Duration::minutes(10),
        &mut out,
    );
    let over = alerts(&out);
    assert_eq!(over.len(), 1);
    assert_eq!(
        (over[0].status, over[0].id.clone()),
        (AlertStatus::Resolved, b[0].id.clone())
    );
}

/// A script may not ask to hold its pipeline for long: `timeout` is at most 1 s and
/// `max_operations` at most 100,000,000, each refused with a message that says so.
#[test]
fn runaway_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.rhai"), "event").unwrap();
    let check = |extra: Value| {
        let mut p = crate::diagnostic::Problems::in_dir(dir.path());
        config(extra).check(&mut p);
        p.items
            .iter()
            .map(|i| format!("{} {}", i.pointer, i.message))
            .collect::<Vec<_>>()
    };
    assert!(check(json!({"timeout": "1s", "max_operations": 100_000_000})).is_empty());
    let errs = check(json!({"timeout": "2s", "max_operations": 100_000_001}));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("/max_operations max_operations is at most 100000000"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("/timeout timeout is at most 1s, not `2s`"),
        "{errs:?}"
    );
}

/// A drop to silence, which only a timer can see: `on_tick(state, now)` fires for a host
/// quiet for a minute and the host's next event resolves it.
const SILENCE: &str = r#"
let host = event.host;
state_set(host, event_time());
resolve(#{ host: host });

fn on_tick(state, now) {
    for host in state.keys() {
        if now - state[host] >= 60.0 {
            fire(#{ title: `${host} went quiet`, group: #{ host: host }, value: now - state[host] });
        }
    }
}
"#;

fn tick_alerts(s: &mut ScriptStage, secs: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    s.tick(t0() + Duration::seconds(secs), &mut out);
    out.iter().map(|e| e.alert().unwrap().clone()).collect()
}

#[test]
fn on_tick_raises_and_the_next_event_resolves() {
    let mut s = stage(SILENCE);
    assert_eq!(run(&mut s, ev(json!({"host": "a"}), 0)).len(), 1);
    assert_eq!(run(&mut s, ev(json!({"host": "b"}), 30)).len(), 1);
    assert!(tick_alerts(&mut s, 59).is_empty());
    // a has been quiet for 60 s, b for 30 s.
    let a = tick_alerts(&mut s, 60);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].status, AlertStatus::Firing);
    assert_eq!(a[0].title, "a went quiet");
    assert_eq!(a[0].group_key, "host=a");
    assert_eq!(a[0].value, 60.0);
    assert_eq!(a[0].window.end, t0() + Duration::seconds(60));
    assert!(a[0].samples.is_empty(), "a tick has no event to sample");
    // Still quiet: the episode is updated in place, not raised again.
    assert!(tick_alerts(&mut s, 61).is_empty());
    // b goes quiet too.
    let b = tick_alerts(&mut s, 90);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].group_key, "host=b");
    // a speaks again: its episode resolves, with the same id.
    let back = run(&mut s, ev(json!({"host": "a"}), 100));
    let resolved: Vec<&Alert> = back.iter().filter_map(|e| e.alert()).collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].status, AlertStatus::Resolved);
    assert_eq!(resolved[0].id, a[0].id);
    assert_eq!(s.errors(), 0);
}

#[test]
fn a_failing_on_tick_is_counted_and_events_still_flow() {
    let mut s = stage(
        r#"
        fn on_tick(state, now) { throw "broken timer"; }
        "#,
    );
    assert!(tick_alerts(&mut s, 1).is_empty());
    assert!(tick_alerts(&mut s, 2).is_empty());
    assert_eq!(s.errors(), 2);
    assert_eq!(run(&mut s, ev(json!({"host": "a"}), 3)).len(), 1);
    // An endless loop in on_tick stops at the operations limit.
    let (mut s, _dir) = stage_with(
        "fn on_tick(state, now) { loop {} }",
        json!({"max_operations": 10_000}),
    );
    assert!(tick_alerts(&mut s, 1).is_empty());
    assert_eq!(s.errors(), 1);
}

#[test]
fn on_tick_with_other_parameters_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let script = "fn on_tick(now) { }";
    std::fs::write(dir.path().join("s.rhai"), script).unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let path = dir.path().join("s.rhai");
    let err = ScriptStage::new(&config(json!({})), &cx(dir.path(), store), &path, script)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("s.rhai: `fn on_tick` takes two parameters, `(state, now)`, not 1"),
        "{err}"
    );
}

/// A script without `on_tick` costs a tick nothing but the episode housekeeping.
#[test]
fn without_on_tick_a_tick_runs_no_script() {
    let mut s = stage("throw \"runs only on events\";");
    assert!(tick_alerts(&mut s, 1).is_empty());
    assert_eq!(s.errors(), 0);
}
