//! Failure domains through the binary: a node that fails is restarted with backoff, and
//! after too many failures its pipeline stops and is reported failed; every other
//! pipeline goes on delivering.

mod common;

use std::io::Write as _;
use std::path::Path;
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
            "---\nkind: pipeline\nname: spin{i}\nsources:\n  in: {{ type: file, path: spin{i}.jsonl, poll_interval: 20ms }}\nstages:\n  spin:\n    type: script\n    inputs: [in]\n    file: ../spin.rhai\n    max_operations: 100000000\n    timeout: 1s\nsinks:\n  out: {{ type: file, path: spin{i}-out.jsonl, inputs: [spin] }}\n"
        ));
    }
    let p = Project::new("web: { enabled: false }\n", &yaml);
    std::fs::write(p.path().join("spin.rhai"), "loop {}\n").expect("write");
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
/// is stopped: the reload completes at once, says so, and the message it was sending
/// stays in the outbox for the new sink, which sends it — nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_does_not_hand_over_in_time_is_stopped_and_nothing_is_lost() {
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
    // The new sink sends the message the stopped one could not finish.
    let delivered = || {
        run.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"delivered\"") && l.contains("p.hook"))
    };
    while run.hook.received_requests().await.unwrap_or_default().len() < 2 || !delivered() {
        assert!(Instant::now() < deadline, "the message was lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(run.stdin);
}
