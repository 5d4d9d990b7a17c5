//! The state database through the binary: the alert history is pruned to the settings'
//! `retention` when vigil starts (and hourly after), and pages by cursor.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{KillOnDrop, Project, spawn_logged, wait_web_address};

const PIPELINE: &str = "kind: pipeline\nname: p\nsources:\n  in: { type: stdin }\nstages:\n  each:\n    type: window_count\n    inputs: [in]\n    window: 1h\n    threshold: 1\n    group_by: [n]\nsinks:\n  out: { type: file, path: out.jsonl, inputs: [each] }\n";

/// Five alerts from a first run; a second run whose settings keep two finds two, the
/// newest, and pages through them by cursor.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_is_pruned_to_the_retention_at_start() {
    let p = Project::new("web: { enabled: false }\n", PIPELINE);
    let input: String = (0..5)
        .map(|n| format!("{{\"n\":{n},\"timestamp\":\"2026-12-06T10:00:0{n}Z\"}}\n"))
        .collect();
    let out = p.run_with_input(&input, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let settings = p.pipelines().join("settings.yaml");
    let text = std::fs::read_to_string(&settings).expect("read");
    std::fs::write(
        &settings,
        text.replace(
            "web: { enabled: false }",
            "web: { listen: \"127.0.0.1:0\" }\nretention: { history_max_rows: 2 }",
        ),
    )
    .expect("write");
    let (child, logs) = spawn_logged(
        p.command(&["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(p.pipelines())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null()),
    );
    let _vigil = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = wait_web_address(&logs, Duration::from_secs(30)).await;
    let get = |q: String| {
        let url = format!("http://{addr}/api/v1/alerts?{q}");
        async move {
            reqwest::get(url)
                .await
                .expect("answer")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let mut all = get(String::new()).await;
    while all["alerts"].as_array().map_or(0, Vec::len) != 2 {
        assert!(Instant::now() < deadline, "not pruned: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        all = get(String::new()).await;
    }
    let groups: Vec<&str> = all["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["group_key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(groups, ["n=4", "n=3"], "the newest are kept");
    // One at a time, by cursor.
    let first = get("limit=1".into()).await;
    let next = first["next"].as_str().expect("a next page").to_string();
    let second = get(format!("limit=1&after={next}")).await;
    assert_eq!(second["alerts"][0]["group_key"], "n=3");
    let last = get(format!(
        "limit=1&after={}",
        second["next"].as_str().unwrap()
    ))
    .await;
    assert_eq!(last["alerts"].as_array().map(Vec::len), Some(0));
    assert_eq!(last["next"], Value::Null);
    let bad = reqwest::get(format!("http://{addr}/api/v1/alerts?after=nope"))
        .await
        .expect("answer");
    assert_eq!(bad.status().as_u16(), 400);
}

/// Issue "Hostile input": what vigil keeps under `state_dir` (raw events set aside, the
/// outbox and history in SQLite) is its user's only after a run: directories 0700, files
/// 0600 — a state directory made looser before is tightened, and the log says so.
#[cfg(unix)]
#[test]
fn the_state_dir_and_its_files_are_private_after_a_run() {
    use std::os::unix::fs::PermissionsExt as _;

    let p = Project::new("web: { enabled: false }\n", PIPELINE);
    let state = p.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // One alert (stored in the history), one line that is not JSON (set aside).
    let input = "{\"n\":1,\"timestamp\":\"2026-12-06T10:00:00Z\"}\nnot json\n";
    let out = p.run_with_input(input, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("its mode is now 0700") && stderr.contains("\"from\":\"0755\""),
        "the tightening is logged: {stderr}"
    );

    let mut seen = Vec::new();
    let mut todo = vec![state.clone()];
    while let Some(dir) = todo.pop() {
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                todo.push(path);
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
            seen.push(path.strip_prefix(&state).expect("inside").to_path_buf());
        }
    }
    for file in ["vigil.db", "rejected/p.in.jsonl"] {
        assert!(
            seen.iter().any(|s| s == std::path::Path::new(file)),
            "{file} written: {seen:?}"
        );
    }
}
