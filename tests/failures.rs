//! Failure domains through the binary: a node that fails is restarted with backoff, and
//! after too many failures its pipeline stops and is reported failed; every other
//! pipeline goes on delivering.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{KillOnDrop, Project, spawn_logged, wait_web_address};

const DEADLINE: Duration = Duration::from_secs(60);

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for l in lines {
        writeln!(f, "{l}").expect("append");
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// An HTTP receiver that answers every POST with 200 after `delay`.
async fn slow_receiver(delay: Duration) -> wiremock::MockServer {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay))
        .mount(&hook)
        .await;
    hook
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("the API answers");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// A file sink writing to `/dev/full` (every flush fails with ENOSPC) is restarted twice,
/// then its pipeline is reported failed — in `vigil.node_failed` alerts on an `internal`
/// source, `/api/v1/pipelines`, `/metrics` and `/readyz` — while another pipeline delivers
/// every event it reads, and the process stays up.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_cannot_write_fails_its_pipeline_alone() {
    let p = Project::new(
        "web: { listen: \"127.0.0.1:0\" }\nrestarts: { max_failures: 2, within: 10m, backoff: 100ms, max_backoff: 200ms }\n",
        r#"kind: pipeline
name: broken
sources:
  in: { type: file, path: broken.jsonl, poll_interval: 20ms }
sinks:
  out: { type: file, path: /dev/full, inputs: [in] }
---
kind: pipeline
name: healthy
sources:
  in: { type: file, path: healthy.jsonl, poll_interval: 20ms }
sinks:
  out: { type: file, path: healthy-out.jsonl, inputs: [in] }
---
kind: pipeline
name: alarms
sources:
  vigil: { type: internal }
sinks:
  out: { type: file, path: alarms.jsonl, inputs: [vigil] }
"#,
    );
    let (child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    let mut vigil = KillOnDrop(child);
    let deadline = Instant::now() + DEADLINE;
    let addr = wait_web_address(&logs, DEADLINE).await;

    // Both pipelines get lines as long as the broken one is not reported failed.
    let (broken, healthy) = (
        p.path().join("broken.jsonl"),
        p.path().join("healthy.jsonl"),
    );
    let alarms = p.path().join("alarms.jsonl");
    let mut sent = 0u64;
    let pipelines = loop {
        append(&broken, [format!("{{\"n\":{sent}}}")]);
        append(
            &healthy,
            (sent..sent + 50).map(|n| format!("{{\"n\":{n}}}")),
        );
        sent += 50;
        let (_, body) = get(&format!("http://{addr}/api/v1/pipelines")).await;
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let failed = v["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .any(|p| p["name"] == "broken" && p["state"] == "failed");
        if failed {
            break v;
        }
        assert!(Instant::now() < deadline, "broken never failed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = pipelines["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["nodes"].as_array().unwrap())
        .find(|n| n["id"] == "broken.out")
        .expect("broken.out")
        .clone();
    assert_eq!(node["state"], "failed", "{node}");
    assert_eq!(node["restarts"], 2, "{node}");
    assert!(
        node["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left on device"),
        "{node}"
    );
    for name in ["healthy", "alarms"] {
        let state = pipelines["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["state"].clone());
        assert_eq!(state, Some("running".into()), "{pipelines}");
    }

    // Every failure was told on the internal source: twice restarting, then failed.
    let mut told = Vec::new();
    while Instant::now() < deadline {
        told = read_lines(&alarms);
        if told.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let states: Vec<&str> = told
        .iter()
        .filter(|a| a["stage"] == "node_failed" && a["fields"]["node"] == "broken.out")
        .map(|a| a["fields"]["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["restarting", "restarting", "failed"], "{told:?}");
    assert_eq!(told[2]["severity"], "critical");

    // Ready no more, and the metrics say why.
    let (status, body) = get(&format!("http://{addr}/readyz")).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("pipeline broken is stopped: node broken.out failed"),
        "{body}"
    );
    let (_, metrics) = get(&format!("http://{addr}/metrics")).await;
    assert!(
        metrics.contains(
            "vigil_node_state{node=\"broken.out\",pipeline=\"broken\",role=\"sink\",kind=\"file\",state=\"failed\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "vigil_node_restarts_total{node=\"broken.out\",pipeline=\"broken\",role=\"sink\",kind=\"file\"} 2"
        ),
        "{metrics}"
    );

    // The healthy pipeline delivered every line it was given, and still does.
    append(&healthy, [format!("{{\"n\":{sent}}}")]);
    sent += 1;
    let mut got = 0;
    while Instant::now() < deadline {
        got = read_lines(&p.path().join("healthy-out.jsonl")).len() as u64;
        if got == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, sent, "the healthy pipeline lost events");
    assert!(
        vigil.0.try_wait().expect("wait").is_none(),
        "vigil exited: {:?}",
        logs.lock().unwrap()
    );
}

/// Node `id` as `/api/v1/pipelines` shows it.
async fn node_status(addr: &str, id: &str) -> Value {
    let (_, body) = get(&format!("http://{addr}/api/v1/pipelines")).await;
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["nodes"].as_array().cloned().unwrap_or_default())
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id}: {v}"))
}

/// A stage that panics on the first two events it is handed (the debug-build test hook
/// `VIGIL_FAULT_PANIC`) is restarted after each panic: `/api/v1/pipelines` shows it
/// `restarting` during the backoff, then `running` again with the panic as its last error;
/// each panic raises a `vigil.node_failed` alert, with the panic's message, that reaches
/// a file sink on an `internal` source; `/metrics` counts both restarts; the stage then
/// hands on what comes next (the two events it panicked on are set aside and counted).
/// A sink that panics on its first batch is restarted the same way; the line it failed
/// on is read again by its `file` source and written, then what comes next. Another pipeline delivers every event throughout, and SIGTERM then stops vigil
/// cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_stage_is_restarted_and_reported() {
    if !cfg!(debug_assertions) {
        say(format_args!(
            "skipped: the panic hook exists in debug builds only"
        ));
        return;
    }
    let p = Project::new(
        "web: { listen: \"127.0.0.1:0\" }\nrestarts: { max_failures: 3, within: 10m, backoff: 1s, max_backoff: 1s }\n",
        r#"kind: pipeline
name: crashy
sources:
  in: { type: file, path: crashy.jsonl, poll_interval: 20ms }
stages:
  pass:
    type: filter
    inputs: [in]
    match: { n: { exists: true } }
sinks:
  out: { type: file, path: crashy-out.jsonl, inputs: [pass] }
---
kind: pipeline
name: sinky
sources:
  in: { type: file, path: sinky.jsonl, poll_interval: 20ms }
sinks:
  out: { type: file, path: sinky-out.jsonl, inputs: [in] }
---
kind: pipeline
name: healthy
sources:
  in: { type: file, path: healthy.jsonl, poll_interval: 20ms }
sinks:
  out: { type: file, path: healthy-out.jsonl, inputs: [in] }
---
kind: pipeline
name: alarms
sources:
  vigil: { type: internal }
sinks:
  out: { type: file, path: alarms.jsonl, inputs: [vigil] }
"#,
    )
    .env("VIGIL_FAULT_PANIC", "crashy.pass:2,sinky.out");
    let (child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    let mut vigil = KillOnDrop(child);
    let deadline = Instant::now() + DEADLINE;
    let addr = wait_web_address(&logs, DEADLINE).await;
    let (crashy, healthy) = (
        p.path().join("crashy.jsonl"),
        p.path().join("healthy.jsonl"),
    );
    let mut sent = 0u64;
    // The sink panics on its first batch (and is restarted while the stage panics).
    let sinky = p.path().join("sinky.jsonl");
    append(&sinky, ["{\"n\":1}".to_string()]);
    let mut feed_healthy = || {
        append(
            &healthy,
            (sent..sent + 10).map(|n| format!("{{\"n\":{n}}}")),
        );
        sent += 10;
    };

    // Each of the first two events makes the stage panic: it waits out its backoff
    // (`restarting`), then runs again.
    for panics in 1..=2u64 {
        append(&crashy, [format!("{{\"n\":{panics}}}")]);
        let mut seen = Vec::new();
        loop {
            feed_healthy();
            let node = node_status(&addr, "crashy.pass").await;
            let state = node["state"].as_str().unwrap_or_default().to_string();
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "running" && node["restarts"] == panics {
                assert_eq!(
                    seen.iter().filter(|s| *s == "restarting").count(),
                    1,
                    "panic {panics}: {seen:?}"
                );
                assert!(
                    node["last_error"].as_str().unwrap_or_default().contains(
                        "panicked: VIGIL_FAULT_PANIC: stage crashy.pass panics on an event"
                    ),
                    "{node}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "panic {panics}: never restarted ({seen:?}): {node}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The third event goes through; the two it panicked on were set aside and counted.
    append(&crashy, ["{\"n\":3}".to_string()]);
    let crashy_out = p.path().join("crashy-out.jsonl");
    while read_lines(&crashy_out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restarted stage never handed on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out: Vec<Value> = read_lines(&crashy_out)
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(out, [3], "only the event after the panics");
    let node = node_status(&addr, "crashy.pass").await;
    assert_eq!(
        (
            node["state"].as_str(),
            node["restarts"].as_u64(),
            node["errors"].as_u64()
        ),
        (Some("running"), Some(2), Some(2)),
        "{node}"
    );

    // The sink, once restarted, writes the next batch; the one it panicked on was failed
    // and counted.
    loop {
        let node = node_status(&addr, "sinky.out").await;
        if node["restarts"] == 1 && node["state"] == "running" {
            assert_eq!(node["errors"], 1, "{node}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink never restarted: {node}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sinky_out = p.path().join("sinky-out.jsonl");
    // The line it failed on is read again by its source (`file` waits on its batches),
    // without waiting for a new line.
    while read_lines(&sinky_out).is_empty() {
        assert!(Instant::now() < deadline, "the restarted sink never wrote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append(&sinky, ["{\"n\":2}".to_string()]);
    while read_lines(&sinky_out).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted sink wrote no more"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out: Vec<Value> = read_lines(&sinky_out)
        .iter()
        .map(|r| r["n"].clone())
        .collect();
    assert_eq!(out, [1, 2], "the failed line again, then the next");

    // Each panic was told on the internal source, with its message.
    let alarms = p.path().join("alarms.jsonl");
    let mut told = Vec::new();
    while told.len() < 3 {
        told = read_lines(&alarms)
            .into_iter()
            .filter(|a| a["stage"] == "node_failed")
            .collect();
        assert!(Instant::now() < deadline, "no node_failed alerts: {told:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let of = |node: &str| -> Vec<&Value> {
        told.iter()
            .filter(|a| a["fields"]["node"] == node)
            .collect()
    };
    let (stage, sink) = (of("crashy.pass"), of("sinky.out"));
    assert_eq!((stage.len(), sink.len()), (2, 1), "{told:?}");
    for (i, a) in stage.iter().enumerate() {
        assert_eq!(a["fields"]["state"], "restarting", "{a}");
        assert_eq!(a["fields"]["failures"], i as u64 + 1, "{a}");
        assert_eq!(a["severity"], "high", "{a}");
        assert_eq!(
            a["fields"]["error"],
            "panicked: VIGIL_FAULT_PANIC: stage crashy.pass panics on an event (test hook)",
            "{a}"
        );
    }
    assert_eq!(sink[0]["fields"]["state"], "restarting", "{}", sink[0]);
    assert_eq!(
        sink[0]["fields"]["error"],
        "panicked: VIGIL_FAULT_PANIC: sink sinky.out panics on a batch (test hook)",
        "{}",
        sink[0]
    );

    // `/metrics` counts the restarts; the node runs and vigil is ready.
    let (_, metrics) = get(&format!("http://{addr}/metrics")).await;
    let labels = "node=\"crashy.pass\",pipeline=\"crashy\",role=\"stage\",kind=\"filter\"";
    assert_eq!(
        metric(&metrics, &format!("vigil_node_restarts_total{{{labels}}}")),
        Some(2),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("vigil_node_state{{{labels},state=\"running\"}}")
        ),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "vigil_node_restarts_total{node=\"sinky.out\",pipeline=\"sinky\",role=\"sink\",kind=\"file\"}"
        ),
        Some(1),
        "{metrics}"
    );
    let (status, body) = get(&format!("http://{addr}/readyz")).await;
    assert_eq!(status, 200, "{body}");

    // The healthy pipeline delivered every line it was given.
    let healthy_out = p.path().join("healthy-out.jsonl");
    let mut got = 0;
    while Instant::now() < deadline {
        got = read_lines(&healthy_out).len() as u64;
        if got == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, sent, "the healthy pipeline lost events");

    // SIGTERM: vigil drains and exits, successfully.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let (status, took) = wait_exit(&mut vigil.0, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}: {:?}", logs.lock().unwrap());
    say(format_args!("exited {took:?} after SIGTERM"));
}

/// Scripts that run to their limit on every event (`loop {}`, held to the 1 s `timeout`),
/// one pipeline of them per core, do not hold up another pipeline: its alert comes out
/// within a second of its line being written.
#[tokio::test(flavor = "multi_thread")]
async fn endless_scripts_do_not_delay_another_pipelines_alert() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("spin.rhai"), "loop {}\n").expect("write");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut yaml = String::from(
        "kind: pipeline\nname: quick\nsources:\n  in: { type: file, path: quick.jsonl, poll_interval: 20ms }\nstages:\n  any:\n    type: window_count\n    inputs: [in]\n    window: 1h\n    threshold: 1\n    alert: { title: \"seen\" }\nsinks:\n  out: { type: file, path: quick-out.jsonl, inputs: [any] }\n",
    );
    for i in 0..cores {
        yaml.push_str(&format!(
            "---\nkind: pipeline\nname: spin{i}\nsources:\n  in: {{ type: file, path: spin{i}.jsonl, poll_interval: 20ms }}\nstages:\n  spin:\n    type: script\n    inputs: [in]\n    file: spin.rhai\n    max_operations: 100000000\n    timeout: 1s\nsinks:\n  out: {{ type: file, path: spin{i}-out.jsonl, inputs: [spin] }}\n"
        ));
    }
    let p = Project::new("web: { enabled: false }\n", &yaml);
    std::fs::write(p.pipelines().join("spin.rhai"), "loop {}\n").expect("write");
    let (child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    let _vigil = KillOnDrop(child);
    let deadline = Instant::now() + DEADLINE;
    while !logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("vigil running"))
    {
        assert!(
            Instant::now() < deadline,
            "vigil never ran: {:?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every spinning pipeline gets five events: five seconds of work each.
    for i in 0..cores {
        append(
            &p.path().join(format!("spin{i}.jsonl")),
            (0..5).map(|n| format!("{{\"n\":{n}}}")),
        );
    }
    // Once they spin (their first event is in), the quick pipeline gets one line.
    while !(0..cores).all(|i| {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("spin{i}.spin")) && l.contains("timeout"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the scripts never spun: {:?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = Instant::now();
    append(&p.path().join("quick.jsonl"), ["{\"a\":1}".to_string()]);
    let out = p.path().join("quick-out.jsonl");
    while read_lines(&out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the quick pipeline never alerted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = written.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the alert took {took:?} while the scripts spun"
    );
}

/// SIGTERM with a backlog on a slow webhook (1 s an answer, 30 messages): vigil sends for
/// at most `drain_timeout` (2 s; a send under way finishes) and exits; the next start
/// sends the rest. Every alert reaches the receiver exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_slow_webhook_for_at_most_drain_timeout() {
    use wiremock::matchers::method;
    use wiremock::{Mock, ResponseTemplate};
    const N: usize = 30;
    let hook = slow_receiver(Duration::from_secs(1)).await;
    let p = Project::new(
        &format!(
            "web: {{ enabled: false }}\nconnections:\n  webhook:\n    soc: {{ url: \"{}/hook\" }}\n",
            hook.uri()
        ),
        "kind: pipeline\nname: p\nsources:\n  in: { type: stdin }\nsinks:\n  hook:\n    type: webhook\n    inputs: [in]\n    connection: soc\n    group_by: [id]\n    group_wait: 10ms\n    timeout: 5s\n    drain_timeout: 2s\n",
    );
    let (mut child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null()),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    for n in 0..N {
        writeln!(stdin, "{{\"n\":{n}}}").expect("write");
    }
    stdin.flush().expect("flush");
    let mut vigil = KillOnDrop(child);
    // Every alert is in the outbox and the first send is under way.
    let deadline = Instant::now() + DEADLINE;
    while p.outbox().len() < N
        || hook
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no backlog: {:?}",
            logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = loop {
        if let Some(s) = vigil.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "vigil kept draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = asked.elapsed();
    drop(stdin);
    assert!(status.success(), "{:?}", logs.lock().unwrap());
    // drain_timeout (2 s) + the send under way (≤ 1 s here, ≤ timeout 5 s) + slack.
    assert!(took < Duration::from_secs(7), "exit took {took:?}");
    let sent_first = hook.received_requests().await.unwrap_or_default().len();
    assert!(
        sent_first < N,
        "the backlog was cut short ({sent_first} of {N} sent)"
    );

    // The receiver answers at once now. The next start sends the rest; its stdin is
    // closed at once, so the run ends after it.
    let mut received = hook.received_requests().await.unwrap_or_default();
    hook.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let out = p.run_with_input("", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    received.extend(hook.received_requests().await.unwrap_or_default());
    let mut ns: Vec<u64> = received
        .iter()
        .flat_map(|r| {
            let b: Value = serde_json::from_slice(&r.body).expect("JSON");
            b["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a["samples"][0]["record"]["n"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect();
    ns.sort_unstable();
    assert_eq!(
        ns,
        (0..N as u64).collect::<Vec<_>>(),
        "each alert exactly once"
    );
}

/// A run of stdin → webhook whose receiver answers in 8 s, one alert's send under way;
/// `settings` goes into its settings. Reloads change the sink's `timeout` (20 s → 21 s).
struct SlowSend {
    hook: wiremock::MockServer,
    p: Project,
    vigil: KillOnDrop,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdin: std::process::ChildStdin,
}

fn slow_send_pipeline(timeout: &str) -> String {
    format!(
        "kind: pipeline\nname: p\nsources:\n  in: {{ type: stdin }}\nsinks:\n  hook:\n    type: webhook\n    inputs: [in]\n    connection: soc\n    group_wait: 10ms\n    timeout: {timeout}\n"
    )
}

impl SlowSend {
    async fn start(settings: &str) -> SlowSend {
        let hook = slow_receiver(Duration::from_secs(8)).await;
        let p = Project::new(
            &format!(
                "{settings}connections:\n  webhook:\n    soc: {{ url: \"{}/hook\" }}\n",
                hook.uri()
            ),
            &slow_send_pipeline("20s"),
        );
        let (mut child, logs) = spawn_logged(
            p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
                .arg(p.pipelines())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null()),
        );
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{{\"n\":1}}").expect("write");
        stdin.flush().expect("flush");
        let deadline = Instant::now() + DEADLINE;
        while hook
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "nothing was sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SlowSend {
            hook,
            p,
            vigil: KillOnDrop(child),
            logs,
            stdin,
        }
    }

    /// Changes the sink and sends SIGHUP.
    fn reload(&self) {
        std::fs::write(self.p.pipelines().join("p.yaml"), slow_send_pipeline("21s"))
            .expect("write");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.vigil.0.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    }

    /// The fields of the `reloaded` log line, once there is one.
    fn reloaded(&self) -> Option<Value> {
        self.logs.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "reloaded").then(|| v["fields"].clone())
        })
    }
}

/// A reload whose retired webhook sink takes 8 s to hand over (its receiver answers the
/// send under way that late): `/metrics` and `/api/v1/pipelines` answer within a second
/// all along, the reload completes, and the alert is delivered once.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_while_a_reload_waits_for_a_slow_hand_over() {
    let run = SlowSend::start("web: { listen: \"127.0.0.1:0\" }\n").await;
    let addr = wait_web_address(&run.logs, DEADLINE).await;
    run.reload();
    let deadline = Instant::now() + DEADLINE;
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while run.reloaded().is_none() {
        assert!(Instant::now() < deadline, "the reload never completed");
        for path in ["/metrics", "/api/v1/pipelines"] {
            let started = Instant::now();
            let answer = client
                .get(format!("http://{addr}{path}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let took = started.elapsed();
            assert!(answer.is_ok_and(|r| r.status().is_success()), "{path}");
            slowest = slowest.max(took);
            asked += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        asked > 20,
        "the hand-over was short ({asked} requests): nothing was tested"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "an answer took {slowest:?}"
    );
    // The alert went out once: the send under way finished, the new sink had nothing to
    // send again.
    let sends = run.hook.received_requests().await.unwrap_or_default().len();
    assert_eq!(sends, 1);
    drop(run.stdin);
}

/// A retired sink still busy after `handover_timeout` (2 s; its receiver answers in 8 s)
/// is stopped: the reload completes at once and says so. The send under way is not cut
/// off (the receiver has the message already): it finishes in the background, is
/// recorded as sent, and the new sink does not send it again — nothing is lost, nothing
/// is sent twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_does_not_hand_over_in_time_is_stopped_and_its_send_is_not_repeated() {
    let run = SlowSend::start("web: { enabled: false }\nhandover_timeout: 2s\n").await;
    let asked = Instant::now();
    run.reload();
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        if let Some(r) = run.reloaded() {
            break r;
        }
        assert!(Instant::now() < deadline, "the reload never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(6), "the reload took {took:?}");
    assert_eq!(report["aborted"], "[\"p.hook\"]", "{report}");
    // The message is being sent (by the stopped sink) until the receiver answers; then it
    // is sent, and nothing sends it again.
    let outbox = loop {
        let outbox = run.p.outbox();
        if outbox.iter().all(|m| m["state"] == "sent") {
            break outbox;
        }
        assert!(
            outbox.iter().all(|m| m["state"] == "sending"),
            "another sink took the message under way: {outbox:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the message was lost: {outbox:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(outbox[0]["attempts"], 1, "{outbox:?}");
    assert!(
        run.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"delivered\"") && l.contains("p.hook")),
        "{:?}",
        run.logs.lock().unwrap()
    );
    let sends = run.hook.received_requests().await.unwrap_or_default().len();
    assert_eq!(sends, 1, "the message was sent again");
    drop(run.stdin);
}

/// A webhook receiver that counts, per alert, how often it received it (by the `n` of the
/// alert's first raw record, as the request arrives) and answers every POST with 200 after
/// its current delay. It keeps no copy of the requests.
struct CountingReceiver {
    server: wiremock::MockServer,
    tally: Arc<Tally>,
}

/// What a [`CountingReceiver`] saw, and how long it waits to answer.
#[derive(Default)]
struct Tally {
    /// Per alert (`n`), how many times it arrived.
    counts: Mutex<HashMap<u64, u32>>,
    /// How many requests arrived.
    requests: AtomicUsize,
    /// The delay of each answer, in milliseconds.
    delay_ms: AtomicU64,
}

/// Counts into a [`Tally`] and answers.
struct Responder(Arc<Tally>);

impl wiremock::Respond for Responder {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let tally = &self.0;
        tally.requests.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let mut counts = tally.counts.lock().unwrap();
        for a in body["alerts"].as_array().into_iter().flatten() {
            // An alert without the record's `n` counts as `u64::MAX`: never expected.
            let n = a["samples"][0]["record"]["n"].as_u64().unwrap_or(u64::MAX);
            *counts.entry(n).or_default() += 1;
        }
        wiremock::ResponseTemplate::new(200)
            .set_delay(Duration::from_millis(tally.delay_ms.load(Ordering::SeqCst)))
    }
}

impl CountingReceiver {
    async fn start(delay: Duration) -> CountingReceiver {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer};
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let tally = Arc::new(Tally::default());
        tally.set_delay(delay);
        Mock::given(method("POST"))
            .respond_with(Responder(tally.clone()))
            .mount(&server)
            .await;
        CountingReceiver { server, tally }
    }

    /// How many requests arrived.
    fn requests(&self) -> usize {
        self.tally.requests.load(Ordering::SeqCst)
    }

    /// How many distinct alerts arrived.
    fn distinct(&self) -> usize {
        self.tally.counts.lock().unwrap().len()
    }
}

impl Tally {
    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// The value of metric line `name` (labels included) in a `/metrics` answer.
fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Prints a line for whoever runs the test with `--nocapture` (timings; never asserted).
#[allow(clippy::print_stderr)]
fn say(line: std::fmt::Arguments<'_>) {
    eprintln!("{line}");
}

/// Waits until `child` exits, up to `limit`; how long that took.
async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let asked = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return (s, asked.elapsed());
        }
        assert!(
            asked.elapsed() < limit,
            "vigil did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 14: SIGTERM with a backlog of 50,000 alerts (one notification each) on a webhook
/// whose receiver answers in 5 s. vigil exits within `drain_timeout` (2 s) + the send under
/// way (5 s) + 2 s for the process to stop on a loaded machine; the next start, the
/// receiver answering at once, delivers the rest: every alert reaches the receiver
/// exactly once, over both runs. SIGTERM comes just as a send starts: `drain_timeout`
/// counts from the signal, that send included (had it counted from the end of that send,
/// one more 5 s send would start and the exit would come after 10 s). The sink's
/// `timeout`, 10 s, is above the receiver's 5 s: a send given up on while the receiver
/// has it would be sent twice.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_50000_alert_backlog_stops_in_time_and_the_restart_sends_each_once() {
    const N: u64 = 50_000;
    const DRAIN: Duration = Duration::from_secs(2);
    const ANSWER: Duration = Duration::from_secs(5);
    const SLACK: Duration = Duration::from_secs(2);
    // Storing 50,000 notifications takes a while on a slow disk (each is durable before
    // anything is sent), and so does sending them one after the other.
    const PHASE: Duration = Duration::from_secs(900);
    let hook = CountingReceiver::start(ANSWER).await;
    let p = Project::new(
        &format!(
            "web: {{ listen: \"127.0.0.1:0\" }}\nconnections:\n  webhook:\n    soc: {{ url: \"{}/hook\" }}\n",
            hook.server.uri()
        ),
        "kind: pipeline\nname: p\nsources:\n  in: { type: stdin }\nsinks:\n  hook:\n    type: webhook\n    inputs: [in]\n    connection: soc\n    group_by: [id]\n    group_wait: 10ms\n    timeout: 10s\n    drain_timeout: 2s\n",
    );
    let spawn = || {
        spawn_logged(
            p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
                .arg(p.pipelines())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null()),
        )
    };
    let (mut child, logs) = spawn();
    let stdin = child.stdin.take().expect("stdin");
    let mut vigil = KillOnDrop(child);
    let started = Instant::now();
    // The lines are written on a thread of their own (the pipe fills up); stdin stays open,
    // so it is the signal that ends the run.
    let writer = std::thread::spawn(move || {
        let mut stdin = std::io::BufWriter::new(stdin);
        for n in 0..N {
            writeln!(stdin, "{{\"n\":{n}}}").expect("write");
        }
        stdin.into_inner().expect("flush")
    });
    let addr = wait_web_address(&logs, DEADLINE).await;
    // The whole backlog is in the outbox (pending, or sent already) and sends are under
    // way.
    let deadline = Instant::now() + PHASE;
    let mut last = String::new();
    loop {
        let (_, metrics) = get(&format!("http://{addr}/metrics")).await;
        let stored = ["pending", "sent"]
            .iter()
            .filter_map(|s| metric(&metrics, &format!("vigil_outbox_messages{{state=\"{s}\"}}")))
            .sum::<u64>();
        if stored >= N && hook.requests() > 0 {
            assert_eq!(stored, N, "more messages than alerts");
            break;
        }
        last = format!("{stored} stored");
        assert!(
            Instant::now() < deadline,
            "the backlog never reached the outbox ({last}): {:?}",
            logs.lock()
                .unwrap()
                .iter()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stdin = writer.join().expect("writer");
    say(format_args!(
        "the {N} alerts were in the outbox after {:?} ({last} at the poll before)",
        started.elapsed()
    ));
    // SIGTERM as the next send starts.
    let before = hook.requests();
    while hook.requests() == before {
        assert!(Instant::now() < deadline, "no more sends");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let (status, took) = wait_exit(&mut vigil.0, DEADLINE).await;
    drop(stdin);
    let first_run = hook.requests();
    say(format_args!(
        "SIGTERM to exit: {took:?}; {first_run} requests in the first run"
    ));
    assert!(status.success(), "{:?}", logs.lock().unwrap());
    assert!(
        took < DRAIN + ANSWER + SLACK,
        "exit took {took:?}, over drain_timeout {DRAIN:?} + the send under way {ANSWER:?} + {SLACK:?}"
    );
    assert!(
        (first_run as u64) < N,
        "the backlog was all sent before SIGTERM: nothing was tested"
    );
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("stopping with messages still to send")),
        "vigil did not say it left messages in the outbox"
    );

    // The next start, the receiver answering at once, sends the rest. Its stdin stays open
    // until everything arrived, then closes: the run ends (nothing is left to drain).
    hook.tally.set_delay(Duration::ZERO);
    let restarted = Instant::now();
    let (mut child, logs) = spawn();
    let stdin = child.stdin.take().expect("stdin");
    let mut vigil = KillOnDrop(child);
    let deadline = Instant::now() + PHASE;
    while hook.distinct() < N as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} alerts arrived: {:?}",
            hook.distinct(),
            logs.lock()
                .unwrap()
                .iter()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
        );
        assert!(
            vigil.0.try_wait().expect("wait").is_none(),
            "vigil exited: {:?}",
            logs.lock()
                .unwrap()
                .iter()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(format_args!(
        "the restart delivered the remaining {} alerts in {:?}",
        N as usize - first_run,
        restarted.elapsed()
    ));
    drop(stdin);
    let (status, _) = wait_exit(&mut vigil.0, DEADLINE).await;
    assert!(status.success(), "{:?}", logs.lock().unwrap());
    // Both runs have ended: nothing more can arrive.
    let counts = hook.tally.counts.lock().unwrap();
    let missing: Vec<u64> = (0..N)
        .filter(|n| !counts.contains_key(n))
        .take(10)
        .collect();
    let twice: Vec<(u64, u32)> = counts
        .iter()
        .filter(|(_, c)| **c != 1)
        .map(|(n, c)| (*n, *c))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "alerts never delivered: {missing:?}");
    assert!(
        twice.is_empty(),
        "alerts delivered more than once: {twice:?}"
    );
    assert_eq!(counts.len() as u64, N, "unexpected alerts arrived");
}

/// The fields of vigil's `reloaded` log line, once there is one.
fn reloaded(logs: &std::sync::Mutex<Vec<String>>) -> Option<Value> {
    logs.lock().unwrap().iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["fields"]["message"] == "reloaded").then(|| v["fields"].clone())
    })
}

/// Asks `/metrics` and `/api/v1/pipelines` of a running vigil: each must answer, and
/// within a second.
struct Api {
    client: reqwest::Client,
    addr: String,
    /// The slowest answer so far.
    slowest: Duration,
    /// How many requests were answered.
    asked: usize,
}

impl Api {
    fn new(addr: String) -> Api {
        Api {
            client: reqwest::Client::new(),
            addr,
            slowest: Duration::ZERO,
            asked: 0,
        }
    }

    async fn ask(&mut self) {
        for path in ["/metrics", "/api/v1/pipelines"] {
            let started = Instant::now();
            let answer = self
                .client
                .get(format!("http://{}{path}", self.addr))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let took = started.elapsed();
            assert!(answer.is_ok_and(|r| r.status().is_success()), "{path}");
            assert!(took < Duration::from_secs(1), "{path} took {took:?}");
            self.slowest = self.slowest.max(took);
            self.asked += 1;
        }
    }
}

/// The event numbers (`evt-NNNNN` in the raw record) a mail carries, and its subject.
fn mail_events(received: &common::smtp::Received) -> (Vec<u64>, String) {
    use mail_parser::MessageParser;
    let msg = MessageParser::default()
        .parse(&received.data)
        .expect("a mail");
    let text = msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let mut events: Vec<u64> = text
        .match_indices("evt-")
        .filter_map(|(i, _)| text.get(i + 4..i + 9)?.parse().ok())
        .collect();
    events.sort_unstable();
    events.dedup();
    (events, msg.subject().unwrap_or_default().to_string())
}

/// Issue 14: a reload while the retired mail sink's SMTP server answers only after 90 s
/// (the default `handover_timeout` being 60 s). Scaled down by default: `handover_timeout`
/// is 4 s and the server answers the end of DATA after 6 s, the same 3:2 ratio, the
/// answer coming after the retired sink was stopped. `VIGIL_TEST_FULL_SCALE=1` runs it as
/// the issue says (the default 60 s, an answer after 90 s; about 2 minutes). The server
/// has taken the mail before it waits, so the mail under way when the sink is stopped
/// would arrive twice if anything sent it again; the sink's and the connection's
/// `timeout` are above the wait, so vigil itself does not give up on it. Events flow
/// before, during and after the reload; `/metrics` and `/api/v1/pipelines` answer within
/// a second throughout; the reload completes, reporting the sink stopped; every event's
/// mail arrives, none twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_the_retired_mail_sinks_server_is_slow_loses_nothing_and_sends_nothing_twice()
 {
    use common::smtp::{Behaviour, Options, SmtpServer};
    let full_scale = std::env::var_os("VIGIL_TEST_FULL_SCALE").is_some();
    let (slow, handover, timeout) = if full_scale {
        (Duration::from_secs(90), "", "120s")
    } else {
        (Duration::from_secs(6), "handover_timeout: 4s\n", "20s")
    };
    let deadline_for_all = DEADLINE + slow;
    let server = SmtpServer::start(Options::default());
    let pipeline = |subject: &str| {
        format!(
            "kind: pipeline\nname: p\nsources:\n  in: {{ type: file, path: events.jsonl, poll_interval: 20ms }}\nsinks:\n  mail:\n    type: mail\n    inputs: [in]\n    connection: relay\n    to: [\"soc@example.com\"]\n    subject: \"{subject}\"\n    group_by: [id]\n    group_wait: 10ms\n    timeout: {timeout}\n    retry: {{ initial: 100ms, max: 1s }}\n"
        )
    };
    let p = Project::new(
        &format!(
            "web: {{ listen: \"127.0.0.1:0\" }}\n{handover}connections:\n  smtp:\n    relay:\n      host: 127.0.0.1\n      port: {}\n      tls: none\n      from: \"vigil <vigil@example.com>\"\n      timeout: {timeout}\n",
            server.port
        ),
        &pipeline("before {{alert.title}}"),
    );
    let events = p.path().join("events.jsonl");
    let mut sent = 0u64;
    let mut send = |k: u64| {
        append(
            &events,
            (sent..sent + k).map(|n| format!("{{\"evt\":\"evt-{n:05}\"}}")),
        );
        sent += k;
        sent
    };
    let (child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null()),
    );
    let mut vigil = KillOnDrop(child);
    let addr = wait_web_address(&logs, DEADLINE).await;
    let mut api = Api::new(addr);

    // Events flow, mail goes out at once.
    let first = send(10);
    server.wait_received(first as usize, DEADLINE);
    // The server turns slow: the next mail is taken, its answer held back.
    server.set(Behaviour {
        answer_data_after: slow,
        ..Behaviour::default()
    });
    send(10);
    let deadline = Instant::now() + deadline_for_all;
    while server.received().len() <= first as usize {
        assert!(Instant::now() < deadline, "no mail reached the slow server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A changed subject retires the sink mid-send.
    std::fs::write(
        p.pipelines().join("p.yaml"),
        pipeline("after {{alert.title}}"),
    )
    .expect("write");
    let reload_asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let report = loop {
        if let Some(r) = reloaded(&logs) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the reload never completed: {:?}",
            logs.lock().unwrap()
        );
        send(1);
        api.ask().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reload_took = reload_asked.elapsed();
    assert_eq!(report["aborted"], "[\"p.mail\"]", "{report}");
    assert!(
        api.asked >= 20,
        "the reload was short ({} requests): nothing was tested",
        api.asked
    );
    // The server is quick again; events still flow.
    server.set(Behaviour::default());
    let total = send(10);
    let deadline = Instant::now() + deadline_for_all;
    let arrived = |server: &SmtpServer| {
        server
            .received()
            .iter()
            .flat_map(|r| mail_events(r).0)
            .collect::<std::collections::BTreeSet<u64>>()
            .len() as u64
    };
    while arrived(&server) < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} events were mailed: {:?}",
            arrived(&server),
            logs.lock().unwrap()
        );
        api.ask().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every message is recorded as sent, the one the stopped sink had under way included
    // (once the server answered it).
    loop {
        let outbox = p.outbox();
        if outbox.iter().all(|m| m["state"] == "sent") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "messages not sent: {:?}",
            outbox
                .iter()
                .filter(|m| m["state"] != "sent")
                .collect::<Vec<_>>()
        );
        api.ask().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("the sink was stopped during a send")),
        "the sink was not stopped during a send: nothing was tested"
    );
    // vigil stops, so nothing more can arrive.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vigil.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let (status, _) = wait_exit(&mut vigil.0, DEADLINE).await;
    assert!(status.success(), "{:?}", logs.lock().unwrap());
    say(format_args!(
        "reload took {reload_took:?}; {} API requests, the slowest {:?}; {total} events",
        api.asked, api.slowest
    ));

    let mut per_event: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut subjects = Vec::new();
    for r in server.received() {
        let (events, subject) = mail_events(&r);
        assert_eq!(events.len(), 1, "one event a mail: {subject} {events:?}");
        per_event
            .entry(events[0])
            .or_default()
            .push(subject.clone());
        subjects.push(subject);
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(twice.is_empty(), "mailed more than once: {twice:?}");
    assert_eq!(
        per_event.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>(),
        "every event mailed"
    );
    // The new sink did the sending after the reload.
    assert!(
        subjects.iter().any(|s| s.starts_with("after")),
        "{subjects:?}"
    );
}
