//! `vigil replay` through the binary: what the pipelines would have alerted over a
//! capture — the same alerts `vigil run` raises reading it — with the state directory
//! untouched, what delivering sinks would have sent written under `--out`, and clear
//! errors for what cannot be replayed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn vigil(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("PCE_URL")
        .output()
        .expect("vigil runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pipeline reading `capture.jsonl` (a `file` source: what `vigil run` reads), counting
/// SSH connections per source address in 10-minute windows, alerting at 5, into
/// `alerts.jsonl` and a mail sink.
fn setup(dir: &Path) {
    std::fs::write(
        dir.join("settings.yaml"),
        "kind: settings\nstate_dir: state\nconnections:\n  smtp:\n    relay: { host: 127.0.0.1, port: 9, tls: none, from: vigil@example.com }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ssh.yaml"),
        r#"
kind: pipeline
name: ssh
sources:
  capture: { type: file, path: capture.jsonl, follow: false }
stages:
  ssh:
    type: filter
    inputs: [capture]
    match: { service.port: 22 }
  burst:
    type: window_count
    inputs: [ssh]
    window: 10m
    threshold: 5
    group_by: [src.ip]
    alert: { severity: high, title: "{{value}} SSH connections from {{group.src.ip}}" }
sinks:
  alerts: { type: file, inputs: [burst], path: alerts.jsonl }
  mail:
    type: mail
    inputs: [burst]
    connection: relay
    to: [soc@example.com]
    group_wait: 30s
"#,
    )
    .unwrap();
}

/// A day of records: most are noise on port 443; each of 40 addresses makes a burst of 6
/// SSH connections inside 5 minutes at some time, and 40 others make 4 (below the
/// threshold) — 19,600 records, and two lines that are not JSON.
fn capture(dir: &Path) -> (PathBuf, BTreeSet<String>) {
    let mut lines = Vec::new();
    let mut expected = BTreeSet::new();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap();
    let at = |s: i64| (t0 + chrono::Duration::seconds(s)).to_rfc3339();
    for i in 0..19_200 {
        lines.push(json!({"timestamp": at(i * 4), "src": {"ip": format!("10.1.{}.{}", i % 7, i % 200)}, "service": {"port": 443}}).to_string());
    }
    for k in 0..80 {
        let ip = format!("10.9.0.{k}");
        let n = if k < 40 { 6 } else { 4 };
        let base = k * 900 + 17;
        for j in 0..n {
            lines.push(
                json!({"timestamp": at(base + j * 50), "src": {"ip": ip}, "service": {"port": 22}})
                    .to_string(),
            );
        }
        if k < 40 {
            expected.insert(format!("src.ip={ip}"));
        }
    }
    // In time order, as a capture is.
    lines.sort_by_key(|l| {
        serde_json::from_str::<Value>(l).unwrap()["timestamp"]
            .as_str()
            .unwrap()
            .to_string()
    });
    lines.insert(100, "this is not JSON".into());
    lines.insert(5000, "{\"truncated\": ".into());
    let path = dir.join("capture.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, expected)
}

fn firing(alerts: &[Value]) -> BTreeSet<(String, String, u64)> {
    alerts
        .iter()
        .filter(|a| a["status"] == "firing" && a["updates"] == 0)
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["group_key"].as_str().unwrap().to_string(),
                a["value"].as_f64().unwrap() as u64,
            )
        })
        .collect()
}

#[test]
fn replay_alerts_as_run_does_and_leaves_the_state_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (capture, expected) = capture(dir.path());

    let (code, stdout, stderr) = vigil(
        &[
            "replay",
            "--pipelines",
            ".",
            "--file",
            "ssh.capture=capture.jsonl",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("replayed 19600 records"), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["records"], 19_600);
    assert_eq!(report["malformed"], 2);
    let ssh = &report["pipelines"][0];
    assert_eq!(ssh["pipeline"], "ssh");
    let counts: Vec<(String, u64)> = ssh["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(counts.contains(&("capture".into(), 19_600)), "{counts:?}");
    assert!(counts.contains(&("ssh".into(), 400)), "{counts:?}");
    let replayed = firing(ssh["alerts"].as_array().unwrap());
    let keys: BTreeSet<String> = replayed.iter().map(|(_, k, _)| k.clone()).collect();
    assert_eq!(
        keys, expected,
        "one episode per bursting address, none for the others"
    );
    assert!(replayed.iter().all(|(_, _, v)| *v == 5), "{replayed:?}");
    let opened = ssh["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "firing" && a["updates"] == 0)
        .count();
    assert_eq!(
        opened, 40,
        "each episode listed once (not again by the sinks)"
    );
    assert_eq!(
        ssh["notifications"],
        json!([{"sink": "mail", "notifications": 40}]),
        "one mail per episode (group_wait 30 s, alerts an hour apart)"
    );
    // Nothing was read from or written to the state directory, nor by the sinks.
    assert!(!dir.path().join("state").exists());
    assert!(!dir.path().join("alerts.jsonl").exists());

    // `vigil run` reading the same capture raises the same alerts (ids included: they
    // are made of pipeline, stage, group and window).
    let (code, _, stderr) = vigil(&["run", "--pipelines", ".", "--no-watch"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let ran: Vec<Value> = std::fs::read_to_string(dir.path().join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(firing(&ran), replayed);

    // A second replay, now that the state directory holds the run's state: the same
    // answer (it reads none of it), and the directory is as the run left it.
    let listing = |p: &Path| {
        let mut all: Vec<(PathBuf, u64)> = walk(p);
        all.sort();
        all
    };
    let before = listing(&dir.path().join("state"));
    let (code, stdout, stderr) = vigil(
        &[
            "replay",
            "--file",
            &format!("ssh.capture={}", capture.display()),
            "--format",
            "json",
            "--pipelines",
            ".",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        firing(again["pipelines"][0]["alerts"].as_array().unwrap()),
        replayed
    );
    assert_eq!(listing(&dir.path().join("state")), before);
}

fn walk(p: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            let mtime = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            out.push((e.path(), meta.len() ^ mtime));
        }
    }
    out
}

#[test]
fn out_writes_the_mails_that_would_have_gone_and_the_table_lists_the_alerts() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    capture(dir.path());
    let (code, stdout, stderr) = vigil(
        &[
            "replay",
            "--pipelines",
            ".",
            "--file",
            "file=capture.jsonl",
            "--out",
            "out",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("19600 records (2 malformed, set aside)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "ssh.burst                        high     firing   5 SSH connections from 10.9.0.0"
        ),
        "{stdout}"
    );
    let mails: Vec<PathBuf> = walk(&dir.path().join("out/ssh/mail"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(mails.len(), 40, "{mails:?}");
    let first = std::fs::read_to_string(dir.path().join("out/ssh/mail/0001.eml")).unwrap();
    assert!(first.contains("To: soc@example.com"), "{first}");
    assert!(
        first.contains("Subject: [vigil] [HIGH] 5 SSH connections from 10.9.0.0"),
        "{first}"
    );
    // A second replay into the same directory would mix two runs' files: refused.
    let (code, _, stderr) = vigil(
        &[
            "replay",
            "--pipelines",
            ".",
            "--file",
            "file=capture.jsonl",
            "--out",
            "out",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("the directory is not empty"), "{stderr}");
}

#[test]
fn what_cannot_be_replayed_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    capture(dir.path());
    // A target that names no source lists the sources there are.
    let (code, _, stderr) = vigil(
        &[
            "replay",
            "--pipelines",
            ".",
            "--file",
            "pce_events=capture.jsonl",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "`pce_events` names no source of the pipelines; they have: ssh.capture (file)"
        ),
        "{stderr}"
    );
    // Records of no known shape, without a target.
    let (code, _, stderr) = vigil(
        &["replay", "--pipelines", ".", "--file", "capture.jsonl"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot tell which sources read these records"),
        "{stderr}"
    );
    assert!(stderr.contains("--file KIND=capture.jsonl"), "{stderr}");
    // A missing file.
    let (code, _, stderr) = vigil(
        &["replay", "--pipelines", ".", "--file", "file=nope.jsonl"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read nope.jsonl"), "{stderr}");
    // One JSON document that is not JSON.
    std::fs::write(dir.path().join("bad.json"), "[{\"a\": 1},").unwrap();
    let (code, _, stderr) = vigil(
        &["replay", "--pipelines", ".", "--file", "file=bad.json"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("bad.json: neither JSON lines nor one JSON document"),
        "{stderr}"
    );
}

/// The PCE's own shapes, told apart without a target: a JSON array of flows (a traffic
/// download) and an export wrapping audit events in `{"events": [...]}`.
#[test]
fn pce_flows_and_events_are_recognised_in_the_shapes_the_pce_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "kind: settings\nstate_dir: state\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
kind: pipeline
name: p
sources:
  flows: { type: pce_traffic, connection: pce, policy_decisions: [blocked] }
  events: { type: pce_events, connection: pce }
stages:
  blocked:
    type: window_count
    inputs: [flows]
    window: 1h
    threshold: 2
    group_by: [src.ip]
  logins:
    type: window_count
    inputs: [events]
    window: 1h
    threshold: 1
    group_by: [event_type]
sinks:
  out: { type: stdout, inputs: [blocked, logins] }
"#,
    )
    .unwrap();
    let flow = |ip: &str, decision: &str, t: &str| {
        json!({"src": {"ip": ip}, "dst": {"ip": "10.0.0.9"}, "service": {"port": 22, "proto": 6},
               "policy_decision": decision, "num_connections": 1,
               "timestamp_range": {"first_detected": t, "last_detected": t}})
    };
    let flows = json!([
        flow("10.0.0.1", "blocked", "2026-03-01T00:00:00Z"),
        flow("10.0.0.1", "allowed", "2026-03-01T00:01:00Z"),
        flow("10.0.0.1", "blocked", "2026-03-01T00:02:00Z"),
        flow("10.0.0.2", "blocked", "2026-03-01T00:03:00Z"),
    ]);
    std::fs::write(
        dir.path().join("flows.json"),
        serde_json::to_string_pretty(&flows).unwrap(),
    )
    .unwrap();
    let events = json!({"_note": "an export", "events": [
        {"href": "/orgs/1/events/1", "event_type": "user.login", "timestamp": "2026-03-01T00:00:30Z", "status": "success"},
    ]});
    std::fs::write(
        dir.path().join("events.json"),
        serde_json::to_string_pretty(&events).unwrap(),
    )
    .unwrap();
    // pce_events needs a connection to validate: the settings name one the replay never
    // reaches.
    std::fs::write(
        dir.path().join("settings.yaml"),
        "kind: settings\nstate_dir: state\nconnections:\n  pce:\n    pce: { url: https://pce.invalid:8443, org: 1, api_key_file: /nonexistent, api_secret_file: /nonexistent }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = vigil(
        &[
            "replay",
            "--pipelines",
            ".",
            "--file",
            "flows.json",
            "--file",
            "events.json",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["records"], 5);
    let alerts = report["pipelines"][0]["alerts"].as_array().unwrap();
    let got: Vec<(String, String, f64)> = alerts
        .iter()
        .map(|a| {
            (
                a["stage"].as_str().unwrap().to_string(),
                a["group_key"].as_str().unwrap().to_string(),
                a["value"].as_f64().unwrap(),
            )
        })
        .collect();
    // The allowed flow is not the source's: 10.0.0.1 reaches 2 with its two blocked ones.
    assert_eq!(
        got,
        vec![
            (
                "logins".to_string(),
                "event_type=user.login".to_string(),
                1.0
            ),
            ("blocked".to_string(), "src.ip=10.0.0.1".to_string(), 2.0),
        ]
    );
}
