//! `vigil run` end to end through the binary: files in, files out, signals, following a
//! growing file, fan-out and fan-in; plus `vigil graph`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// Waits for `cond` to hold, up to `limit`; fails the test with `what` otherwise.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("output line is JSON"))
        .collect()
}

/// Complete lines written so far (a reader may see a half-written last line).
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// The `node summary` log lines of a run (`--log-format json`), by node id:
/// (events_in, events_out, errors).
fn summaries(stderr: &str) -> std::collections::HashMap<String, (u64, u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "node summary")
        .map(|v| {
            let f = &v["fields"];
            (
                f["node"].as_str().unwrap().to_string(),
                (
                    f["events_in"].as_u64().unwrap(),
                    f["events_out"].as_u64().unwrap(),
                    f["errors"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// A temporary working directory with `pipelines/p.yaml` holding `yaml`.
fn project(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    write(&dir.path().join("pipelines/p.yaml"), yaml);
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn spawn_run(dir: &Path) -> Child {
    Command::new(bin())
        .args(["--log-format", "json", "run", "--pipelines"])
        .arg(dir.join("pipelines"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts")
}

/// Waits for the process to exit, up to `limit`; fails the test with `what` otherwise.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal sent");
}

fn flow(i: usize) -> Value {
    let decisions = ["allowed", "blocked", "potentially_blocked", "unknown"];
    let ports = [22, 443, 3389, 53];
    json!({
        "id": i,
        "src": {"ip": format!("10.{}.{}.{}", i % 3 * 10, (i / 256) % 256, i % 256)},
        "dst": {"ip": "10.1.2.3"},
        "service": {"port": ports[i % 4], "proto": 6},
        "policy_decision": decisions[(i / 4) % 4],
        "num_connections": i % 7,
    })
}

/// The rule of the pipeline below, computed independently of vigil.
fn expected_by_rule(v: &Value) -> bool {
    let ip: std::net::Ipv4Addr = v["src"]["ip"].as_str().unwrap().parse().unwrap();
    let in_10_20 = ip.octets()[0] == 10 && ip.octets()[1] == 20;
    ["blocked", "potentially_blocked"].contains(&v["policy_decision"].as_str().unwrap())
        && [22, 3389].contains(&v["service"]["port"].as_i64().unwrap())
        && !in_10_20
}

const FILTER_PIPELINE: &str = r#"
kind: settings
state_dir: state
---
kind: pipeline
name: e2e
sources:
  flows: {type: file, path: in.jsonl, follow: false}
stages:
  admin:
    type: filter
    inputs: [flows]
    match:
      policy_decision: [blocked, potentially_blocked]
      service.port: [22, 3389]
    exclude:
      src.ip: 10.20.0.0/16
sinks:
  out: {type: file, path: out/admin.jsonl, inputs: [admin]}
"#;

#[test]
fn run_file_filter_file_writes_exactly_the_expected_records() {
    let dir = project(FILTER_PIPELINE);
    let mut input = String::new();
    let mut records = Vec::new();
    for i in 0..2000 {
        let f = flow(i);
        input.push_str(&f.to_string());
        input.push('\n');
        records.push(f);
        if i == 500 {
            input.push_str("{\"broken\": \n"); // malformed: line 502
        }
    }
    write(&dir.path().join("in.jsonl"), &input);

    let out = Command::new(bin())
        .args(["--log-format", "json", "run", "-p", "pipelines"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let expected: Vec<Value> = records
        .iter()
        .filter(|r| expected_by_rule(r))
        .cloned()
        .collect();
    assert!(
        expected.len() > 100 && expected.len() < 1000,
        "the rule selects a real subset"
    );
    let written = read_lines(&dir.path().join("out/admin.jsonl"));
    assert_eq!(written, expected, "exactly the matching records, in order");

    let s = summaries(&stderr);
    assert_eq!(s["e2e.flows"], (0, 2000, 1));
    assert_eq!(s["e2e.admin"], (2000, expected.len() as u64, 0));
    assert_eq!(
        s["e2e.out"],
        (expected.len() as u64, expected.len() as u64, 0)
    );

    // The malformed line is set aside with its line number, not lost.
    let rejected = read_lines(&dir.path().join("state/rejected/e2e.flows.jsonl"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 502);
    assert_eq!(rejected[0]["raw"], "{\"broken\": ");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );
}

#[test]
fn sigterm_mid_input_loses_none_of_the_records_already_read() {
    let dir = project(
        r#"
kind: settings
state_dir: state
---
kind: pipeline
name: sig
sources:
  big: {type: file, path: big.jsonl}
stages:
  even:
    type: filter
    inputs: [big]
    match: {parity: even}
sinks:
  out: {type: file, path: out.jsonl, inputs: [even]}
"#,
    );
    let total = 600_000usize;
    {
        let f = std::fs::File::create(dir.path().join("big.jsonl")).unwrap();
        let mut w = std::io::BufWriter::new(f);
        for i in 0..total {
            let parity = if i % 2 == 0 { "even" } else { "odd" };
            writeln!(
                w,
                "{{\"id\":{i},\"parity\":\"{parity}\",\"pad\":\"{}\"}}",
                "x".repeat(60)
            )
            .unwrap();
        }
    }
    let mut child = spawn_run(dir.path());
    let out_path = dir.path().join("out.jsonl");
    wait_for(
        "the first records to arrive",
        Duration::from_secs(60),
        || complete_lines(&out_path) > 0,
    );
    sigterm(&child);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(60),
        "vigil did not stop after SIGTERM",
    );
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "{stderr}");
    let s = summaries(&stderr);
    let read = s["sig.big"].1 as usize;
    assert!(
        read > 0 && read < total,
        "stopped mid-input (read {read} of {total})"
    );

    // Everything read was handed on: the output is exactly the even records among the
    // first `read` input records — no gap, no loss, no duplicate.
    let written = read_lines(&out_path);
    let ids: Vec<u64> = written.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..read as u64).filter(|i| i % 2 == 0).collect();
    assert_eq!(ids.len(), expected.len(), "records read: {read}");
    assert!(
        ids == expected,
        "output is not the even prefix of what was read"
    );
    assert_eq!(s["sig.even"], (read as u64, expected.len() as u64, 0));
    assert_eq!(s["sig.out"].1, expected.len() as u64);
}

#[test]
fn follows_a_growing_file_and_waits_for_a_partial_last_line() {
    let dir = project(
        r#"
kind: settings
state_dir: state
---
kind: pipeline
name: tail
sources:
  live: {type: file, path: live.jsonl, poll_interval: 20ms}
sinks:
  out: {type: file, path: out.jsonl, inputs: [live]}
"#,
    );
    let live = dir.path().join("live.jsonl");
    write(&live, "{\"n\":1}\n{\"n\":2}\n{\"n\":");
    let mut child = spawn_run(dir.path());
    let out = dir.path().join("out.jsonl");
    wait_for("the two complete lines", Duration::from_secs(30), || {
        complete_lines(&out) == 2
    });
    // The half line is held, not parsed and not set aside.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(complete_lines(&out), 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(b"3}\n{\"n\":4}\n").unwrap();
    f.sync_all().unwrap();
    wait_for("the appended lines", Duration::from_secs(30), || {
        complete_lines(&out) == 4
    });
    // Rotation: the file is replaced; the new one is read from its start.
    let rotated = dir.path().join("live.jsonl.1");
    std::fs::rename(&live, &rotated).unwrap();
    write(&live, "{\"n\":5}\n");
    wait_for("the rotated file's line", Duration::from_secs(30), || {
        complete_lines(&out) == 5
    });
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success());
    let ns: Vec<i64> = read_lines(&out)
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 3, 4, 5]);
    assert!(
        !dir.path().join("state/rejected/tail.live.jsonl").exists(),
        "nothing was set aside"
    );
}

#[test]
fn fan_out_and_fan_in() {
    let dir = project(
        r#"
kind: settings
state_dir: state
---
kind: pipeline
name: fan
sources:
  a: {type: file, path: a.jsonl, follow: false}
  b: {type: file, path: b.jsonl, follow: false}
stages:
  odd:
    type: filter
    inputs: [a, b]
    match: {n: [1, 3, 5, 7, 9]}
sinks:
  all: {type: file, path: all.jsonl, inputs: [a, b]}
  odd1: {type: file, path: odd1.jsonl, inputs: [odd]}
  odd2: {type: file, path: odd2.jsonl, inputs: [odd]}
"#,
    );
    write(
        &dir.path().join("a.jsonl"),
        &(0..5)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>(),
    );
    write(
        &dir.path().join("b.jsonl"),
        &(5..10)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>(),
    );
    let out = Command::new(bin())
        .args(["run", "-p", "pipelines"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sorted = |p: &str| {
        let mut v: Vec<i64> = read_lines(&dir.path().join(p))
            .iter()
            .map(|v| v["n"].as_i64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(sorted("all.jsonl"), (0..10).collect::<Vec<_>>());
    assert_eq!(sorted("odd1.jsonl"), vec![1, 3, 5, 7, 9]);
    assert_eq!(sorted("odd2.jsonl"), vec![1, 3, 5, 7, 9]);
}

#[test]
fn stdin_to_stdout() {
    let dir = project(
        "kind: settings\nstate_dir: state\n---\nkind: pipeline\nname: pipe\nsources:\n  in: {type: stdin}\nstages:\n  f: {type: filter, inputs: [in], match: {level: {in: [high, critical]}}}\nsinks:\n  out: {type: stdout, inputs: [f]}\n",
    );
    let mut child = Command::new(bin())
        .args(["run", "-p", "pipelines"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"level\":\"low\"}\n{\"level\":\"high\",\"x\":1}\nnope\n{\"level\":\"critical\"}",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"level\":\"high\",\"x\":1}\n{\"level\":\"critical\"}\n"
    );
    let rejected = read_lines(&dir.path().join("state/rejected/pipe.in.jsonl"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 3);
}

#[test]
fn invalid_config_does_not_start() {
    let out = Command::new(bin())
        .args(["run", "-p", "tests/fixtures/invalid/cycle.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/fixtures/invalid/cycle.yaml:9:18: error[cycle]"),
        "{err}"
    );
}

#[test]
fn graph_as_dot_and_mermaid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dot = Command::new(bin())
        .args(["graph", "--pipelines", "examples/sample-flows"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(dot.status.success());
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph vigil {"), "{dot}");
    assert!(
        dot.contains("\"blocked-admin-ports.flows\" -> \"blocked-admin-ports.admin_ports\";"),
        "{dot}"
    );
    assert!(
        dot.contains("\"blocked-admin-ports.destinations\" -> \"blocked-admin-ports.console\";"),
        "{dot}"
    );
    let mm = Command::new(bin())
        .args([
            "graph",
            "--pipelines",
            "examples/sample-flows",
            "--format",
            "mermaid",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(mm.status.success());
    let mm = String::from_utf8(mm.stdout).unwrap();
    assert!(mm.starts_with("flowchart LR\n"), "{mm}");
    assert!(
        mm.contains("n0 --> n1") && mm.contains("n2 --> n3") && mm.contains("n3 --> n4"),
        "{mm}"
    );
}

/// A sink whose file cannot be opened is refused when vigil starts, naming the node and
/// the path, instead of starting a pipeline that cannot deliver.
#[test]
fn a_sink_that_cannot_open_its_file_is_refused_at_start() {
    let dir = project(
        "kind: settings\nstate_dir: state\n---\nkind: pipeline\nname: broken\nsources:\n  in: {type: file, path: in.jsonl}\nsinks:\n  out: {type: file, path: out, inputs: [in]}\n",
    );
    write(&dir.path().join("in.jsonl"), "{\"a\":1}\n");
    // The sink's path is a directory: it cannot open it.
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let mut child = spawn_run(dir.path());
    let status = wait_exit(
        &mut child,
        Duration::from_secs(30),
        "vigil started with a sink that cannot write",
    );
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.out: cannot open out"), "{stderr}");
}

#[test]
fn start_at_end_reads_only_what_is_appended() {
    let dir = project(
        "kind: settings\nstate_dir: state\n---\nkind: pipeline\nname: tailend\nsources:\n  live: {type: file, path: live.jsonl, start_at: end, poll_interval: 20ms}\nsinks:\n  out: {type: file, path: out.jsonl, inputs: [live]}\n",
    );
    let live = dir.path().join("live.jsonl");
    write(&live, "{\"n\":1}\n{\"n\":2}\n");
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "run", "--pipelines", "pipelines"])
        .env("VIGIL_LOG", "vigil=debug")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the source has opened the file and moved to its end: the debug line
    // `reading` names the offset.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let opened = loop {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the source opens the file");
        if v["fields"]["message"] == "reading" {
            break v;
        }
    };
    assert_eq!(
        opened["fields"]["offset"], 16,
        "positioned at the end of the existing lines"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(b"{\"n\":3}\n").unwrap();
    let out = dir.path().join("out.jsonl");
    wait_for("the appended line", Duration::from_secs(30), || {
        complete_lines(&out) == 1
    });
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30), "vigil did not stop").success());
    let ns: Vec<i64> = read_lines(&out)
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![3]);
}

/// The README's first command: the sample pipeline prints alerts — the same ones on every
/// run — each with its raw flows and the source's top destinations: each burst one
/// firing alert, and its resolution once the window fell below the threshold.
#[test]
fn the_sample_pipeline_prints_the_same_alerts_with_samples_and_top_destinations() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = || {
        let out = Command::new(bin())
            .args(["run", "--pipelines", "examples/sample-flows"])
            .current_dir(root)
            .env("VIGIL_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    let alerts: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
    let resolved = alerts.iter().filter(|a| a["status"] == "resolved").count();
    assert!(firing >= 5 && resolved >= 5, "{first}");
    for a in &alerts {
        assert_eq!(a["severity"], "high");
        let value = a["value"].as_f64().unwrap();
        if a["status"] == "firing" {
            assert!(value >= 10.0, "{a}");
        } else {
            assert!(
                value < 10.0,
                "resolved: its window fell below the threshold: {a}"
            );
        }
        let samples = a["samples"].as_array().unwrap();
        assert!(!samples.is_empty() && samples.len() <= 3, "{a}");
        let ip = &a["group"]["src"]["ip"];
        for s in samples {
            assert_eq!(
                &s["record"]["src"]["ip"], ip,
                "samples are the group's raw flows"
            );
        }
        let top = &a["top"];
        let total: f64 = top["total"].as_f64().unwrap();
        // The table covers the alert's window as known a tick later: events that arrived
        // after the alert (out of order) are in it, so it may exceed the alert's value.
        assert!(total >= a["value"].as_f64().unwrap(), "{a}");
        let rows = top["rows"].as_array().unwrap();
        // A resolution can leave an empty window (its last flows just left it).
        assert!(rows.len() <= 3 && (!rows.is_empty() || total == 0.0), "{a}");
        let shown: f64 = rows.iter().map(|r| r["value"].as_f64().unwrap()).sum();
        assert!(shown <= total);
    }
    // The same alerts again. Their order on stdout, and how much of a window top_n had
    // seen when it annotated an alert (it does so at the next tick), depend on when the
    // wall clock ticked during the run; what was alerted does not.
    let digest = |out: &str| {
        let mut v: Vec<String> = out
            .lines()
            .map(|l| {
                let a: Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {} {} {} {} {}",
                    a["id"], a["status"], a["value"], a["updates"], a["window"], a["samples"]
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        digest(&run()),
        digest(&first),
        "a second run prints the same alerts"
    );
}

/// A restart keeps a half-full window: 9 events in one run, 1 in the next, threshold 10
/// → the alert fires in the second run, counting all ten. With `keep_state: false` it
/// does not.
#[test]
fn a_restart_keeps_window_state() {
    let pipeline = |keep: bool| {
        format!(
            r#"
kind: settings
state_dir: state
keep_state: {keep}
---
kind: pipeline
name: p
sources:
  events: {{ type: stdin }}
stages:
  burst:
    type: window_count
    inputs: [events]
    window: 10m
    threshold: 10
    group_by: [user]
sinks:
  out: {{ type: stdout, inputs: [burst] }}
"#
        )
    };
    let feed = |dir: &Path, from: u32, to: u32| -> String {
        let mut child = Command::new(bin())
            .args(["run", "--pipelines", "pipelines"])
            .current_dir(dir)
            .env("VIGIL_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for i in from..to {
            writeln!(
                stdin,
                r#"{{"user": "alice", "timestamp": "2026-01-01T00:00:{i:02}Z"}}"#
            )
            .unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for keep in [true, false] {
        let dir = project(&pipeline(keep));
        assert_eq!(feed(dir.path(), 0, 9), "", "nine events do not fire");
        let second = feed(dir.path(), 9, 10);
        if keep {
            let alert: Value = serde_json::from_str(second.trim()).expect(&second);
            assert_eq!(alert["value"], json!(10.0));
            assert_eq!(
                alert["samples"][0]["record"]["timestamp"],
                "2026-01-01T00:00:00Z"
            );
        } else {
            assert_eq!(second, "", "without kept state the window starts empty");
        }
    }
}

/// `vigil run` reading a standard input that stays open (a pipe nobody closes) exits on
/// SIGTERM, having delivered what it read.
#[test]
fn a_run_reading_an_open_stdin_exits_on_sigterm() {
    use std::io::Write as _;
    let dir = project(
        "kind: settings\nstate_dir: state\nweb: {enabled: false}\n---\nkind: pipeline\nname: tty\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: file, path: out.jsonl, inputs: [in]}\n",
    );
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "run", "--pipelines"])
        .arg(dir.path().join("pipelines"))
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{{\"n\":1}}").unwrap();
    stdin.flush().unwrap();
    let out = dir.path().join("out.jsonl");
    wait_for("the line to be delivered", Duration::from_secs(30), || {
        complete_lines(&out) == 1
    });
    sigterm(&child);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(10),
        "vigil kept running after SIGTERM with its stdin open",
    );
    drop(stdin);
    assert!(status.success(), "{status:?}");
}

/// The ids in a JSON-lines output, counted.
fn id_counts(path: &Path) -> std::collections::HashMap<u64, usize> {
    let mut counts = std::collections::HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        if let Some(id) = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["id"].as_u64())
        {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// The most lines a `file` source hands on under one acknowledgement (`ACK_LINES`).
const FILE_ACK_LINES: usize = 2048;

/// A `file` source keeps its position: after a clean stop the next run reads only what
/// was appended; after a kill -9 mid-file no line is lost and at most one batch comes
/// again (the source hands a batch on only once the position after the one before is on
/// disk).
#[test]
fn a_file_source_goes_on_where_it_stopped_after_a_stop_and_a_kill() {
    let dir = project(
        "kind: settings\nstate_dir: state\nweb: {enabled: false}\n---\nkind: pipeline\nname: tail\nsources:\n  in: {type: file, path: in.jsonl, poll_interval: 20ms}\nsinks:\n  out: {type: file, path: out.jsonl, inputs: [in]}\n",
    );
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let lines = |from: u64, to: u64| -> String {
        (from..to)
            .map(|i| format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(100)))
            .collect()
    };
    write(&input, &lines(0, 1000));
    // A clean stop, then a restart: nothing read twice, the new lines read.
    let mut child = spawn_run(dir.path());
    wait_for("the first 1000 lines", Duration::from_secs(30), || {
        complete_lines(&out) == 1000
    });
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30), "no stop").success());
    append(&input, &lines(1000, 1500));
    let mut child = spawn_run(dir.path());
    wait_for("the 500 new lines", Duration::from_secs(30), || {
        complete_lines(&out) >= 1500
    });
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30), "no stop").success());
    let counts = id_counts(&out);
    assert_eq!(counts.len(), 1500);
    assert!(counts.values().all(|n| *n == 1), "a line was read twice");

    // A big append, killed mid-way, then a restart.
    append(&input, &lines(1500, 400_000));
    let mut child = spawn_run(dir.path());
    wait_for("some of the big append", Duration::from_secs(60), || {
        complete_lines(&out) > 20_000
    });
    let _ = child.kill();
    let _ = child.wait();
    let before = complete_lines(&out);
    assert!(before < 400_000, "killed mid-file ({before} lines out)");
    let mut child = spawn_run(dir.path());
    wait_for("every line", Duration::from_secs(120), || {
        id_counts(&out).len() == 400_000
    });
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30), "no stop").success());
    let counts = id_counts(&out);
    assert_eq!(counts.len(), 400_000, "no line lost");
    let repeated = counts.values().filter(|n| **n > 1).count();
    #[allow(clippy::print_stderr)] // for whoever runs it with --nocapture; never asserted
    {
        eprintln!("after the kill -9: {repeated} of {before} lines read again");
    }
    assert!(
        repeated <= FILE_ACK_LINES,
        "at most one batch ({FILE_ACK_LINES} lines) comes again after a kill -9: {repeated} of {before} read again"
    );
}

/// A batch a sink could not deliver (here it panics on it, twice: the test hook) is read
/// again by the `file` source once the sink is back: no line is lost.
#[test]
fn lines_a_sink_failed_on_are_read_again() {
    let dir = project(
        "kind: settings\nstate_dir: state\nweb: {enabled: false}\n---\nkind: pipeline\nname: tail\nsources:\n  in: {type: file, path: in.jsonl, poll_interval: 20ms}\nsinks:\n  out: {type: file, path: out.jsonl, inputs: [in]}\n",
    );
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let total = 10_000;
    write(
        &input,
        &(0..total)
            .map(|i| format!("{{\"id\":{i}}}\n"))
            .collect::<String>(),
    );
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "run", "--pipelines"])
        .arg(dir.path().join("pipelines"))
        .current_dir(dir.path())
        .env("VIGIL_FAULT_PANIC", "tail.out:2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    wait_for("every line", Duration::from_secs(60), || {
        id_counts(&out).len() == total
    });
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30), "no stop");
    let mut log = String::new();
    use std::io::Read as _;
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("some lines were not delivered; reading them again"),
        "the source says it reads lines again:\n{log}"
    );
    let counts = id_counts(&out);
    assert_eq!(counts.len(), total, "no line lost");
    let repeated = counts.values().filter(|n| **n > 1).count();
    assert!(
        repeated <= 2 * FILE_ACK_LINES,
        "at most the two failed batches come twice: {repeated} repeated"
    );
}
