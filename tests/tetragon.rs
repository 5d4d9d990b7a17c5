//! The Tetragon starter pack (`pipelines/tetragon/`) over the real Tetragon events in
//! `../shared/fixtures/real/tetragon/`, through the binary (`vigil replay`, which makes
//! each record into the event its `file` source makes with `decode: tetragon`): each rule
//! fires on the events it is for (a throttled cgroup included), and the benign ones (a netserver, a whoami, a Python
//! server listening) raise nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("../shared/fixtures/real/tetragon")
}

/// The starter pack and a settings document with the mail relay it names, in `dir`.
fn pack(dir: &Path) {
    for entry in std::fs::read_dir(root().join("pipelines/tetragon")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("settings.yaml"),
        "kind: settings\nstate_dir: state\nconnections:\n  smtp:\n    relay: { host: 127.0.0.1, port: 9, tls: none, from: vigil@example.com }\n",
    )
    .unwrap();
}

/// The titles of the episodes each pipeline opened, replaying `files` (each read by every
/// `file` source).
fn replay(dir: &Path, files: &[PathBuf]) -> BTreeMap<String, BTreeSet<String>> {
    let mut args = vec![
        "replay".to_string(),
        "--pipelines".into(),
        ".".into(),
        "--format".into(),
        "json".into(),
    ];
    for f in files {
        args.push("--file".into());
        args.push(format!("file={}", f.display()));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("vigil runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["malformed"], 0, "every record is a Tetragon event");
    let mut fired = BTreeMap::new();
    for p in report["pipelines"].as_array().unwrap() {
        let titles: BTreeSet<String> = p["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == "firing" && a["updates"] == 0)
            .map(|a| {
                format!(
                    "{} {}",
                    a["severity"].as_str().unwrap(),
                    a["title"].as_str().unwrap()
                )
            })
            .collect();
        if !titles.is_empty() {
            fired.insert(p["pipeline"].as_str().unwrap().to_string(), titles);
        }
    }
    fired
}

#[test]
fn the_starter_rules_fire_on_the_real_events_they_are_for() {
    let dir = tempfile::tempdir().unwrap();
    pack(dir.path());
    let mut files = vec![
        fixtures().join("docs_use_cases_events.jsonl"),
        fixtures().join("testdata_events.jsonl"),
    ];
    let mut book: Vec<PathBuf> = std::fs::read_dir(fixtures().join("oreilly_book_examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    book.sort();
    files.extend(book);
    let fired = replay(dir.path(), &files);
    let names: BTreeSet<&str> = fired.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "tetragon-capability-use",
            "tetragon-dropping-events",
            "tetragon-kernel-module",
            "tetragon-namespace-change",
            "tetragon-network-tools",
            "tetragon-sensitive-files",
            "tetragon-setuid-root",
        ]),
        "{fired:#?}"
    );
    let has = |pipeline: &str, title: &str| {
        assert!(
            fired[pipeline].contains(title),
            "{pipeline}: no `{title}` in {:#?}",
            fired[pipeline]
        );
    };
    has(
        "tetragon-sensitive-files",
        "critical /etc/passwd opened by /bin/vi on tetragon-dev-control-plane",
    );
    has(
        "tetragon-setuid-root",
        "critical /tmp/su became root on kind-control-plane",
    );
    has(
        "tetragon-namespace-change",
        "high /usr/bin/nsenter entered another namespace on tetragon-dev-control-plane",
    );
    has(
        "tetragon-dropping-events",
        "high Tetragon is dropping events for cgroup session-429.scope on ubuntu-22",
    );
    has(
        "tetragon-capability-use",
        "medium /bin/dmesg used CAP_SYSLOG on kind-control-plane",
    );
    assert_eq!(
        fired["tetragon-kernel-module"].len(),
        3,
        "insmod loading, mount requesting, modprobe loading: {:#?}",
        fired["tetragon-kernel-module"]
    );
    assert!(
        fired["tetragon-network-tools"]
            .iter()
            .all(|t| t.starts_with("high /usr/bin/curl executed on")),
        "{:#?}",
        fired["tetragon-network-tools"]
    );

    // The benign events alone raise nothing.
    let benign = replay(
        dir.path(),
        &[
            fixtures().join("testdata_events.jsonl"),
            fixtures().join("oreilly_book_examples/process_listen.json"),
        ],
    );
    assert!(benign.is_empty(), "{benign:#?}");
}
