//! The `exec` source with real commands: a script that prints events and dies is started
//! again after a backoff that doubles, observed on the virtual clock, and every line it
//! printed arrives once, in order (a last line without its newline included); stopping
//! vigil stops the command; a flood of 100,000 lines arrives whole; Tetragon's events
//! read from a command are normalised, and Tetragon throttling a cgroup is an internal
//! alert; a command that is not there is a clear error at
//! `vigil validate` and at run time, and stops nothing else.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{lines, load};
use serde_json::Value;
use vigil::runtime::{self, SharedClock, VirtualClock};

fn t0() -> chrono::DateTime<chrono::Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

/// Waits, in real time and without moving the clock, until `cond` holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How often `reason` was counted for node `id`.
fn errors(topology: &runtime::RunningTopology, id: &str, reason: &str) -> u64 {
    topology
        .counters()
        .into_iter()
        .find(|(n, _)| n == id)
        .map(|(_, c)| {
            c.errors_by_reason()
                .into_iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| n)
        })
        .unwrap_or(0)
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Each run prints the next 5 numbers (it keeps its place in `next`: a command that can
/// go on where it stopped), says so on its standard error, and exits 3 — the second run
/// with its last line unterminated. The fourth run stays up.
const FEED: &str = r#"#!/bin/sh
cd "$(dirname "$0")"
runs=$(( $(cat runs 2>/dev/null || echo 0) + 1 ))
echo $runs > runs
n=$(cat next 2>/dev/null || echo 1)
echo "run $runs starting at $n" >&2
i=0
while [ $i -lt 5 ]; do
  if [ $runs -eq 2 ] && [ $i -eq 4 ]; then
    printf '{"n":%d,"run":%d}' $n $runs
  else
    printf '{"n":%d,"run":%d}\n' $n $runs
  fi
  n=$((n+1)); echo $n > next; i=$((i+1))
done
if [ $runs -ge 4 ]; then
  echo $$ > pid
  exec sleep 1000
fi
exit 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_dies_is_restarted_with_backoff_and_no_line_is_lost_or_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("feed.sh");
    write_script(&script, FEED);
    let out = dir.path().join("out.jsonl");
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let cfg = load(format!(
        "kind: settings\nstate_dir: {state}\n---\nkind: pipeline\nname: p\nsources:\n  feed:\n    type: exec\n    command: [{script}]\n    restart_backoff: 1s\n    max_restart_backoff: 4s\nsinks:\n  out:\n    type: file\n    inputs: [feed]\n    path: {out}\n",
        state = dir.path().join("state").display(),
        script = script.display(),
        out = out.display(),
    ));
    let topology = runtime::start(&cfg, shared).expect("starts");
    let runs = || read_number(&dir.path().join("runs"));
    let exited = |t: &runtime::RunningTopology| errors(t, "p.feed", "command_exited");

    // Run 1 prints 1..=5 and exits; the clock has not moved, so it is not run again.
    wait_until("run 1's lines and its exit", || {
        lines(&out).len() == 5 && exited(&topology) == 1
    })
    .await;
    clock.advance(Duration::from_millis(999));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(), 1, "started again before its 1 s backoff");
    clock.advance(Duration::from_millis(1));
    wait_until("run 2, after 1 s", || {
        lines(&out).len() == 10 && exited(&topology) == 2
    })
    .await;
    assert_eq!(runs(), 2);

    // The backoff doubles: 2 s.
    clock.advance(Duration::from_millis(1999));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(), 2, "started again before its 2 s backoff");
    clock.advance(Duration::from_millis(1));
    wait_until("run 3, after 2 s", || {
        lines(&out).len() == 15 && exited(&topology) == 3
    })
    .await;

    // Then 4 s, the longest allowed; run 4 stays up.
    clock.advance(Duration::from_millis(3999));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs(), 3, "started again before its 4 s backoff");
    clock.advance(Duration::from_millis(1));
    wait_until("run 4's lines", || lines(&out).len() == 20).await;
    let pid = dir.path().join("pid");
    wait_until("run 4 to stay up", || read_number(&pid) > 0).await;
    let pid = read_number(&pid);

    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    // Stopping vigil stopped the command.
    wait_until("the command to be gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    })
    .await;

    let got: Vec<(u64, u64)> = lines(&out)
        .iter()
        .map(|e| (e["n"].as_u64().unwrap(), e["run"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = (1..=20).map(|n| (n, (n - 1) / 5 + 1)).collect();
    assert_eq!(got, want, "every line once, in order");
    assert_eq!(
        report.node("p.feed").map(|n| n.errors),
        Some(3),
        "three exits counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lines_arrives_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let clock = VirtualClock::new(t0());
    let cfg = load(format!(
        "kind: settings\nstate_dir: {state}\n---\nkind: pipeline\nname: p\nsources:\n  feed:\n    type: exec\n    shell: \"seq 1 100000 | sed 's/.*/{{\\\"n\\\":&}}/'; echo not-json\"\n    restart: never\nsinks:\n  out:\n    type: file\n    inputs: [feed]\n    path: {out}\n",
        state = dir.path().join("state").display(),
        out = out.display(),
    ));
    let topology = runtime::start(&cfg, Arc::new(clock.clone())).expect("starts");
    // `restart: never`: the source, and so the pipeline, ends with the command.
    let report = tokio::time::timeout(Duration::from_secs(60), topology.wait())
        .await
        .expect("the run ends with the command");
    assert!(!report.failed(), "{:?}", report.nodes);
    let got = lines(&out);
    assert_eq!(got.len(), 100_000);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, e)| e["n"].as_u64() == Some(i as u64 + 1)),
        "in order"
    );
    let feed = report.node("p.feed").unwrap();
    // The line that is not JSON is set aside, and the one exit counted.
    assert_eq!(feed.errors, 2, "{feed:?}");
    let rejected = std::fs::read_dir(dir.path().join("state/rejected"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(rejected.contains("not-json"), "{rejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tetragon_events_from_a_command_are_normalised() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real/tetragon");
    let file = fixtures.join("docs_use_cases_events.jsonl");
    let total = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let execs = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("process_exec").is_some()))
        .count();
    assert!(execs > 0 && total > execs);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let internal = dir.path().join("internal.jsonl");
    let cfg = load(format!(
        "kind: settings\nstate_dir: {state}\n---\nkind: pipeline\nname: p\nsources:\n  tetra:\n    type: exec\n    command: [cat, {file}]\n    decode: tetragon\n    restart: never\nstages:\n  execs:\n    type: filter\n    inputs: [tetra]\n    match:\n      event.type: process_exec\n      process.binary: {{exists: true}}\nsinks:\n  out:\n    type: file\n    inputs: [execs]\n    path: {out}\n---\nkind: pipeline\nname: own\nsources:\n  vigil: {{type: internal}}\nsinks:\n  out:\n    type: file\n    inputs: [vigil]\n    path: {internal}\n",
        state = dir.path().join("state").display(),
        file = file.display(),
        out = out.display(),
        internal = internal.display(),
    ));
    let topology = runtime::start(&cfg, Arc::new(VirtualClock::new(t0()))).expect("starts");
    let reloader = topology.reloader();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = reloader.nodes().await;
        let sink = nodes.iter().find(|n| n.id == "p.out").unwrap();
        if sink.events_in == execs as u64 && !lines(&internal).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    assert_eq!(report.node("p.tetra").unwrap().events_out, total as u64);
    // The sink writes each event's line as Tetragon wrote it.
    let got = lines(&out);
    assert_eq!(got.len(), execs);
    assert!(got.iter().all(|e| e.get("process_exec").is_some()));
    // The fixtures' throttled cgroup is an internal alert, once: its THROTTLE_STOP is not.
    let own = lines(&internal);
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(
        own[0]["title"],
        "Tetragon is dropping events for cgroup session-429.scope on ubuntu-22"
    );
    assert_eq!(own[0]["severity"], "high");
    assert!(
        own[0]["samples"][0]["record"]["process_throttle"].is_object(),
        "{}",
        own[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_a_clear_error_and_stops_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "kind: settings\nstate_dir: {state}\nrestarts: {{max_failures: 2, within: 1h, backoff: 1s, max_backoff: 1s}}\n---\nkind: pipeline\nname: tetra\nsources:\n  feed:\n    type: exec\n    command: [no-such-vigil-tool, getevents]\nsinks:\n  out:\n    type: stdout\n    inputs: [feed]\n---\nkind: pipeline\nname: other\nsources:\n  in:\n    type: file\n    path: {input}\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n",
        state = dir.path().join("state").display(),
        input = input.display(),
        out = out.display(),
    );

    // `vigil validate` warns where the command is named.
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&validate.stdout).into_owned()
        + &*String::from_utf8_lossy(&validate.stderr);
    assert!(validate.status.success(), "a warning only: {text}");
    assert!(
        text.contains("p.yaml:10:15")
            && text.contains("command-not-found")
            && text.contains("the command `no-such-vigil-tool` was not found in PATH"),
        "{text}"
    );

    // Running, the node fails with the same words; the other pipeline goes on.
    let clock = VirtualClock::new(t0());
    let loaded = vigil::config::load_sources(
        &[(file.clone(), yaml)],
        &vigil::config::LoadOptions::default(),
    );
    assert!(loaded.diagnostics.iter().all(|d| !d.is_error()));
    let cfg = loaded.config.expect("valid");
    let topology = runtime::start(&cfg, Arc::new(clock.clone())).expect("starts");
    let reloader = topology.reloader();
    common::nudge_until(&clock, "the other pipeline's line", || {
        lines(&out).len() == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let nodes = reloader.nodes().await;
        let feed = nodes.into_iter().find(|n| n.id == "tetra.feed").unwrap();
        if feed.state == runtime::NodeState::Failed {
            break feed;
        }
        assert!(Instant::now() < deadline, "never failed: {feed:?}");
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let why = status.last_error.unwrap_or_default();
    assert!(
        why.contains("the command `no-such-vigil-tool` was not found in PATH")
            && why.contains("install it, or give its full path"),
        "{why}"
    );
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}\n").unwrap();
    common::nudge_until(&clock, "the other pipeline's next line", || {
        lines(&out).len() == 2
    })
    .await;
    topology.shutdown();
    topology.wait().await;
}
