//! Notification grouping and inhibition through the binary: a real `vigil run`, its
//! stages' alerts shown to the engine's inhibitor, a webhook sink's groups looked at on
//! the wall clock, and a real HTTP receiver.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::cli::{KillOnDrop, Project, hook_receiver, spawn_logged};

const DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver got: for each call, the stage and change of each alert.
async fn calls(hook: &wiremock::MockServer) -> Vec<Vec<(String, String)>> {
    hook.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let b: Value = serde_json::from_slice(&r.body).expect("JSON");
            b["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    (
                        a["stage"].as_str().unwrap_or_default().to_string(),
                        a["change"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Waits (with a deadline) until the calls received satisfy `done`.
async fn wait_calls(
    hook: &wiremock::MockServer,
    what: &str,
    done: impl Fn(&[Vec<(String, String)>]) -> bool,
) -> Vec<Vec<(String, String)>> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = calls(hook).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{got:?}: waited for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn one(stage: &str, change: &str) -> Vec<(String, String)> {
    vec![(stage.to_string(), change.to_string())]
}

async fn wait_log(logs: &std::sync::Mutex<Vec<String>>, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| pred(&v))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no log line: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "PCE unreachable mutes every traffic rule of that PCE": while the `pce_down` alert
/// fires, the traffic alert waits in its group; once `pce_down` resolves, the traffic
/// alert goes out at its group's next look, as new.
#[tokio::test(flavor = "multi_thread")]
async fn an_inhibited_alert_goes_out_once_its_source_resolves() {
    let (hook, url) = hook_receiver().await;
    let p = Project::new(
        &format!(
            "web: {{ enabled: false }}\nconnections:\n  webhook:\n    soc: {{ url: \"{url}\" }}\ninhibit:\n  - source: {{ stage: pce_down }}\n    target: {{ stage: traffic }}\n"
        ),
        r#"kind: pipeline
name: p
sources:
  in: { type: stdin }
stages:
  health:
    type: filter
    inputs: [in]
    match: { status: unreachable }
  pce_down:
    type: window_count
    inputs: [health]
    window: 3s
    threshold: 1
    alert: { severity: critical, title: "PCE unreachable", resolve_after: 3s }
  flows:
    type: filter
    inputs: [in]
    match: { src: { exists: true } }
  traffic:
    type: window_count
    inputs: [flows]
    window: 1h
    threshold: 1
    group_by: [src]
    alert: { severity: high, title: "traffic from {{group.src}}" }
sinks:
  hook:
    type: webhook
    inputs: [pce_down, traffic]
    connection: soc
    group_by: [stage]
    group_interval: 1s
"#,
    );
    let (mut child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null()),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let _vigil = KillOnDrop(child);
    writeln!(stdin, "{}", json!({"status": "unreachable"})).expect("write");
    stdin.flush().expect("flush");

    // The source alert goes out. The two rules run side by side, so the traffic line is
    // written only once the source fires, as it would come after a PCE went down.
    let first = wait_calls(&hook, "the first call", |c| !c.is_empty()).await;
    assert_eq!(first[0], one("pce_down", "new"));
    writeln!(stdin, "{}", json!({"src": "10.0.0.1"})).expect("write");
    stdin.flush().expect("flush");

    // The target is muted at its group's look.
    wait_log(&logs, "the traffic alert inhibited", |v| {
        v["fields"]["message"] == "inhibited by a firing alert; not sent"
    })
    .await;
    assert_eq!(
        calls(&hook).await.len(),
        1,
        "nothing else went out while muted"
    );

    // Nothing more arrives: three seconds later `pce_down` resolves; the traffic alert is
    // new at its group's next look.
    let got = wait_calls(&hook, "the traffic alert", |c| {
        c.iter()
            .any(|call| call.iter().any(|(stage, _)| stage == "traffic"))
    })
    .await;
    let traffic: Vec<_> = got
        .iter()
        .filter(|c| c.iter().any(|(stage, _)| stage == "traffic"))
        .collect();
    assert_eq!(traffic, [&one("traffic", "new")], "{got:?}");
    // The source's resolution is told too (a webhook sends resolutions).
    wait_calls(&hook, "the source's resolution", |c| {
        c.contains(&one("pce_down", "resolved"))
    })
    .await;
    drop(stdin);
}
