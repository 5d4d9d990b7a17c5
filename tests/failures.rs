//! Failure domains through the binary: a node that fails is restarted with backoff, and
//! after too many failures its pipeline stops and is reported failed; every other
//! pipeline goes on delivering.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{KillOnDrop, Project, spawn_logged, web_address};

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
    let addr = loop {
        if let Some(a) = web_address(&logs.lock().unwrap()) {
            break a;
        }
        assert!(Instant::now() < deadline, "the API never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

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
