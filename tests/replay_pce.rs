//! `vigil replay --pce`: a day of the PCE simulator's traffic and audit events, read over
//! HTTP through the real client, raises the same alerts as the daemon reading the same
//! day live on a virtual clock; the state directory is untouched; and the command prints
//! its progress and table.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use vigil::pce::sim::{Faults, Scenario};
use vigil::runtime::{self, JumpClock, ScaledClock, SharedClock, VirtualClock};
use vigil::testing::replay::{self, Options, PceRange, Progress, ProgressUnit};

const SEED: u64 = 7;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

fn t1() -> DateTime<Utc> {
    t0() + chrono::Duration::days(1)
}

/// Two pipelines on connection `lab`: port scans, connection volumes and blocked bursts in
/// the traffic, and busy event types in the audit events; each writes its alerts to a
/// file. `resolve_after` (quiet in engine time, so it depends on when a slice arrives) is
/// not a multiple of the 5-minute slices: an episode does not end on the very second the
/// next slice is due, where the daemon's few seconds of querying would decide it.
fn pipelines(dir: &Path) -> String {
    format!(
        r#"kind: pipeline
name: scans
sources:
  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m}}
stages:
  ports:
    type: distinct_count
    inputs: [flows]
    field: service.port
    group_by: [src.ip]
    window: 10m
    threshold: 10
    alert: {{resolve_after: 12m}}
  connections:
    type: metric
    inputs: [flows]
    field: num_connections
    aggregate: sum
    window: 10m
    above: 50
    group_by: [src.ip]
    alert: {{resolve_after: 12m}}
  blocked:
    type: filter
    inputs: [flows]
    match: {{policy_decision: blocked}}
  burst:
    type: window_count
    inputs: [blocked]
    window: 10m
    threshold: 20
    group_by: [src.ip]
    alert: {{resolve_after: 12m}}
  top:
    type: top_n
    inputs: [blocked, burst]
    by: [dst.ip]
    within: [src.ip]
    n: 3
sinks:
  out: {{type: file, inputs: [ports, connections, top], path: {scans}}}
---
kind: pipeline
name: changes
sources:
  events: {{type: pce_events, connection: lab, interval: 5m, start_at: 7m}}
stages:
  busy:
    type: window_count
    inputs: [events]
    window: 1h
    threshold: 4
    group_by: [event_type]
    alert: {{resolve_after: 3h}}
sinks:
  out: {{type: file, inputs: [busy], path: {changes}}}
"#,
        scans = dir.join("scans.jsonl").display(),
        changes = dir.join("changes.jsonl").display(),
    )
}

/// The episodes opened before `end`: (stage, id, group, value). Ids are made of pipeline,
/// stage, group and window.
fn opened(alerts: &[Value], end: DateTime<Utc>) -> BTreeSet<(String, String, String, u64)> {
    alerts
        .iter()
        .filter(|a| a["status"] == "firing" && a["updates"] == 0)
        .filter(|a| {
            let t = a["window"]["end"].as_str().expect("a window end");
            DateTime::parse_from_rfc3339(t).expect("RFC 3339") < end
        })
        .map(|a| {
            (
                a["stage"].as_str().expect("a stage").to_string(),
                a["id"].as_str().expect("an id").to_string(),
                a["group_key"].as_str().unwrap_or_default().to_string(),
                a["value"].as_f64().expect("a value") as u64,
            )
        })
        .collect()
}

fn checkpoint(store: &vigil::store::Store, key: &str, field: &str) -> Option<DateTime<Utc>> {
    let v = store.checkpoint(key).ok()??;
    DateTime::parse_from_rfc3339(v[field].as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The daemon reading the day live: the clock moves a slice at a time and waits until the
/// slice's flows and the audit events up to it are delivered.
type Opened = BTreeSet<(String, String, String, u64)>;

async fn live(dir: &Path) -> (Opened, Opened) {
    let clock = VirtualClock::new(t0() + chrono::Duration::minutes(7));
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = common::sim(Scenario::PortScan, SEED, Faults::default(), shared.clone()).await;
    let config = common::load(format!(
        "{}{}",
        common::settings(dir, &sim, ""),
        pipelines(dir)
    ));
    let topology = runtime::start(&config, shared).expect("starts");
    let store = vigil::store::Store::open(&dir.join("state")).expect("the state database");
    // Each slice: the clock goes to when it is due (the hub asks for it), then on by the
    // 2 s the simulator takes to answer (the hub's poll finds it done), and then stands
    // still while the slice is handed on — as `vigil replay` presents a slice, all at one
    // time. It is nudged only if nothing moves for a while.
    let downloads = |sim: &vigil::pce::sim::RunningSim| {
        sim.request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/download"))
            .count()
    };
    let mut slice_end = t0() + chrono::Duration::minutes(5);
    while slice_end <= t1() {
        let due = slice_end + chrono::Duration::minutes(2);
        let now = vigil::runtime::Clock::now(&clock);
        if now < due {
            clock.advance((due - now).to_std().expect("forward"));
        }
        let before = downloads(&sim);
        let done =
            || checkpoint(&store, "pce_traffic:lab", "next_start").is_some_and(|c| c >= slice_end);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut idle = 0;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "the slice ending {slice_end} was not handed on"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            idle += 1;
            // Until the download starts, the clock moves a second at a time (the hub
            // reads the names, an async job, and polls its query, each taking simulator
            // time); while the slice is handed on, only if it is stuck.
            let downloading = downloads(&sim) > before;
            if idle % (if downloading { 250 } else { 5 }) == 0 {
                clock.advance(Duration::from_secs(1));
            }
        }
        slice_end += chrono::Duration::minutes(5);
    }
    // The audit events source reads on its own interval: up to the end of the day too.
    common::nudge_until(&clock, "the audit events of the day", || {
        checkpoint(&store, "changes.events", "watermark").is_some_and(|w| w >= t1())
    })
    .await;
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    sim.shutdown().await;
    (
        opened(&common::lines(&dir.join("scans.jsonl")), t1()),
        opened(&common::lines(&dir.join("changes.jsonl")), t1()),
    )
}

/// Fails naming the alerts only one side raised.
fn same(pipeline: &str, replayed: &Opened, live: &Opened) {
    let only_replayed: Vec<_> = replayed.difference(live).collect();
    let only_live: Vec<_> = live.difference(replayed).collect();
    assert!(
        only_replayed.is_empty() && only_live.is_empty(),
        "{pipeline}: {} alerts only in the replay: {only_replayed:?}\n{} only live: {only_live:?}",
        only_replayed.len(),
        only_live.len()
    );
}

/// Every file under `p` with its size and modification time.
fn listing(p: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut all = Vec::new();
    let mut todo = vec![p.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                all.push((e.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_replayed_from_the_pce_alerts_as_the_daemon_reading_it_live() {
    let dir = tempfile::tempdir().unwrap();
    let (scans, changes) = live(dir.path()).await;
    assert!(
        scans.len() >= 3 && changes.len() >= 3,
        "the day must alert in both pipelines for the comparison to mean something: {} scans, {} changes",
        scans.len(),
        changes.len()
    );
    for stage in ["ports", "connections", "burst"] {
        assert!(
            scans.iter().filter(|a| a.0 == stage).count() >= 3,
            "every stage must alert for the comparison to mean something: {stage}"
        );
    }
    let before = listing(&dir.path().join("state"));
    assert!(!before.is_empty());

    // The replay, a day later, against a simulator of the same estate and seed; its
    // client waits on a clock that jumps (the request budget and polls cost nothing).
    let clock = JumpClock::new(t1() + chrono::Duration::hours(1));
    let shared: SharedClock = clock.clone();
    let sim = common::sim(Scenario::PortScan, SEED, Faults::default(), shared.clone()).await;
    let config = common::load(format!(
        "{}{}",
        common::settings(dir.path(), &sim, ""),
        pipelines(dir.path())
    ));
    let opts = Options {
        pce: Some(PceRange {
            connection: "lab".into(),
            from: t0(),
            to: t1(),
        }),
        peer_clock: Some(shared),
        ..Options::default()
    };
    let mut seen: Vec<Progress> = Vec::new();
    let report = tokio::task::spawn_blocking(move || {
        let r = replay::replay(&config, &opts, &mut |p| seen.push(p));
        (r, seen)
    })
    .await
    .expect("the replay ends");
    let (report, seen) = report;
    let report = report.expect("the replay runs");
    sim.shutdown().await;

    let alerts = |name: &str| -> Vec<Value> {
        let p = report
            .pipelines
            .iter()
            .find(|p| p.pipeline == name)
            .expect("the pipeline was replayed");
        p.alerts
            .iter()
            .map(|a| serde_json::to_value(a).expect("JSON"))
            .collect()
    };
    // Each alert report once (not again for each node that handed it on).
    for name in ["scans", "changes"] {
        let all = alerts(name);
        let distinct: BTreeSet<String> = all
            .iter()
            .map(|a| {
                format!(
                    "{} {} {} {}",
                    a["id"], a["status"], a["updates"], a["value"]
                )
            })
            .collect();
        assert_eq!(distinct.len(), all.len(), "{name}: an alert listed twice");
    }
    same("scans", &opened(&alerts("scans"), t1()), &scans);
    same("changes", &opened(&alerts("changes"), t1()), &changes);
    let pce = report.pce.as_ref().expect("what was read from the PCE");
    assert_eq!(pce.slices, 288, "a day of 5-minute slices: {pce:?}");
    assert!(pce.flows > 10_000 && pce.events > 100, "{pce:?}");

    // Progress counts the range's seconds, and reaches its end.
    assert!(seen.len() >= 2, "{}", seen.len());
    assert!(
        seen.iter()
            .all(|p| p.unit == ProgressUnit::Seconds && p.total == 86_400)
    );
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(seen.last().map(|p| p.done), Some(86_400));

    // Nothing in the state directory changed.
    assert_eq!(listing(&dir.path().join("state")), before);
}

/// The command itself, on a terminal (through `script`), against a simulator running a
/// thousand times faster than real time: a progress bar on standard error, the table on
/// standard output, and clear errors for a range it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_shows_progress_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ScaledClock::starting_at(
        1000.0,
        t1() + chrono::Duration::hours(1),
    ));
    let sim = common::sim(Scenario::PortScan, SEED, Faults::default(), clock).await;
    let key = dir.path().join("key");
    let secret = dir.path().join("secret");
    std::fs::write(&key, "api_sim").unwrap();
    std::fs::write(&secret, common::SECRET).unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(
        dir.path().join("p/settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {state}\nconnections:\n  pce:\n    lab:\n      url: {url}\n      insecure_http: true\n      api_key_file: {key}\n      api_secret_file: {secret}\n      poll_interval_initial: 10ms\n",
            state = dir.path().join("state").display(),
            url = sim.url(),
            key = key.display(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("p/pipelines.yaml"), pipelines(dir.path())).unwrap();
    let bin = env!("CARGO_BIN_EXE_vigil");
    let from = t0() + chrono::Duration::hours(9);
    let to = from + chrono::Duration::hours(1);
    // The bar is drawn on a terminal only: `script` gives the command one (standard
    // error, and what it prints there, land in `tty`); the table goes to a file.
    let command = format!(
        "{bin} replay --pipelines {p} --pce lab --from {from} --to {to} > {out}",
        p = dir.path().join("p").display(),
        from = from.to_rfc3339(),
        to = to.to_rfc3339(),
        out = dir.path().join("stdout").display(),
    );
    let out = tokio::process::Command::new("script")
        .args([
            "-qefc",
            &command,
            &dir.path().join("tty").display().to_string(),
        ])
        .output()
        .await
        .expect("script runs (util-linux)");
    sim.shutdown().await;
    let tty = std::fs::read_to_string(dir.path().join("tty")).unwrap_or_default();
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap_or_default();
    assert!(out.status.success(), "{tty}\n{stdout}\n{out:?}");
    assert!(tty.contains("of the range"), "a progress bar: {tty}");
    assert!(tty.contains("replayed"), "{tty}");
    assert!(
        stdout.contains("PCE `lab`: 12 traffic slices (0 truncated)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scans") && stdout.contains("changes"),
        "{stdout}"
    );
    assert!(!dir.path().join("state").exists(), "no state written");
    assert!(
        !dir.path().join("scans.jsonl").exists(),
        "nothing delivered"
    );

    // A connection that is not there, a range that ends before it starts, and a time
    // that is not one: refused, saying why.
    let p = dir.path().join("p").display().to_string();
    let refused = |range: [&str; 3], code: i32, says: &[&str]| {
        let mut args = vec![
            "replay",
            "--pipelines",
            &p,
            "--pce",
            range[0],
            "--from",
            range[1],
        ];
        if !range[2].is_empty() {
            args.extend(["--to", range[2]]);
        }
        let o = std::process::Command::new(bin)
            .args(&args)
            .output()
            .expect("vigil runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        for s in says {
            assert!(err.contains(s), "{err}");
        }
    };
    refused(
        ["prod", "2026-03-02", "2026-03-03"],
        1,
        &["no PCE connection `prod`", "lab"],
    );
    refused(
        ["lab", "2026-03-03", "2026-03-02"],
        1,
        &["is not before --to"],
    );
    refused(["lab", "yesterday", ""], 2, &["is not a time"]);
}
