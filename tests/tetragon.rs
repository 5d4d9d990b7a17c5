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

/// A Tetragon event line with exec id `n`.
fn exec_line(n: usize) -> String {
    format!(
        "{{\"process_exec\":{{\"process\":{{\"exec_id\":\"id-{n}\",\"pid\":{n},\"uid\":0,\"binary\":\"/usr/bin/true\"}}}},\"node_name\":\"node-1\",\"time\":\"2026-01-01T00:00:{:02}Z\"}}\n",
        n % 60
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The exec ids the sink wrote, in order (it writes each event's line as Tetragon wrote
/// it).
fn written(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v["process_exec"]["process"]["exec_id"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn run(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--no-watch", "--pipelines", "p"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vigil starts")
}

fn stop(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal sent");
    let status = child.wait().expect("vigil stops");
    assert!(status.success(), "{status}");
}

/// The export file rotated while vigil is stopped: Tetragon wrote more to the old file,
/// renamed it (`export.log.1`) and began a new one. After the restart the rest of the old
/// file is read, then the new one: every line once, in order.
#[test]
fn an_export_file_rotated_while_vigil_was_stopped_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(
        dir.path().join("p/p.yaml"),
        "kind: settings\nstate_dir: state\n---\nkind: pipeline\nname: t\nsources:\n  tetragon: {type: file, path: export.log, decode: tetragon, poll_interval: 20ms}\nsinks:\n  out: {type: file, inputs: [tetragon], path: out.jsonl}\n",
    )
    .unwrap();
    let export = dir.path().join("export.log");
    let out = dir.path().join("out.jsonl");
    append(&export, &(1..=3).map(exec_line).collect::<String>());
    let vigil = run(dir.path());
    wait_for("the first three lines", || written(&out).len() == 3);
    stop(vigil);

    // While vigil is stopped: two more lines, the rotation, two lines in the new file.
    append(&export, &(4..=5).map(exec_line).collect::<String>());
    std::fs::rename(&export, dir.path().join("export.log.1")).unwrap();
    append(&export, &(6..=7).map(exec_line).collect::<String>());

    let vigil = run(dir.path());
    wait_for("all seven lines", || written(&out).len() >= 7);
    // A little more line-reading time would show a line read twice.
    append(&export, &exec_line(8));
    wait_for("the eighth line", || written(&out).len() >= 8);
    stop(vigil);
    let ids = written(&out);
    let want: Vec<String> = (1..=8).map(|n| format!("id-{n}")).collect();
    assert_eq!(ids, want, "every line once, in order");
}
