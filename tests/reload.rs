//! Hot reload through the binary: `vigil run` keeps running while its pipeline files
//! change; what changed takes effect, window state carries over, an invalid edit leaves the
//! old graph running, and no event is lost or doubled.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::{bin, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

/// A `vigil run` on a temporary pipelines directory, its stdin open, its JSON log lines
/// collected as they come.
struct Running {
    dir: tempfile::TempDir,
    child: Child,
    stdin: Option<ChildStdin>,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Running {
    /// `vigil run --no-watch` (reloads on SIGHUP only).
    fn start(pipeline: &str) -> Running {
        Running::start_with(pipeline, false)
    }

    /// `vigil run`, reloading when the files change (`watch`) or on SIGHUP only.
    fn start_with(pipeline: &str, watch: bool) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("pipelines")).expect("mkdir");
        std::fs::write(
            dir.path().join("pipelines/settings.yaml"),
            format!(
                "kind: settings\nstate_dir: {}\ntick_interval: 100ms\n",
                dir.path().join("state").display()
            ),
        )
        .expect("write");
        let mut r = Running::in_dir(dir);
        r.write("p.yaml", pipeline);
        r.spawn(watch);
        r
    }

    fn in_dir(dir: tempfile::TempDir) -> Running {
        // Not started yet: a placeholder child that has already exited.
        let child = Command::new("true").spawn().expect("true runs");
        Running {
            dir,
            child,
            stdin: None,
            logs: Arc::default(),
        }
    }

    fn spawn(&mut self, watch: bool) {
        let mut cmd = Command::new(bin());
        cmd.args(["--log-format", "json", "run", "--pipelines"])
            .arg(self.pipelines());
        if !watch {
            cmd.arg("--no-watch");
        }
        let mut child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil starts");
        let stderr = child.stderr.take().expect("stderr");
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                logs.lock().unwrap().push(v);
            }
        });
        self.stdin = child.stdin.take();
        self.child = child;
        // Running once the graph is up (the source's first log line or the start line).
        wait_for("vigil to start", DEADLINE, || {
            self.log_lines("vigil running") > 0
        });
    }

    fn pipelines(&self) -> PathBuf {
        self.dir.path().join("pipelines")
    }

    fn write(&mut self, file: &str, text: &str) {
        std::fs::write(self.pipelines().join(file), text).expect("write");
    }

    fn send(&mut self, records: &[Value]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        for r in records {
            writeln!(stdin, "{r}").expect("write to vigil");
        }
        stdin.flush().expect("flush");
    }

    /// How many log lines have this message.
    fn log_lines(&self, message: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["fields"]["message"] == message)
            .count()
    }

    /// The log lines with this message.
    fn logs_with(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["fields"]["message"] == message)
            .cloned()
            .collect()
    }

    fn all_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reloads so far, successful or not.
    fn reloads(&self) -> usize {
        self.log_lines("reloaded")
            + self.log_lines("reload failed: the running pipelines are unchanged")
    }

    /// After a change to the files: waits for the reload it causes, then checks that no
    /// second one follows within a quiet period (five debounce intervals).
    fn one_reload_after(&self, before: usize, what: &str) {
        wait_for(&format!("a reload after {what}"), DEADLINE, || {
            self.reloads() > before
        });
        let settled = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < settled {
            assert_eq!(
                self.reloads(),
                before + 1,
                "{what} gave more than one reload:\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGHUP and waits for the reload it causes to finish (successfully or not).
    fn sighup(&self) {
        let before = self.log_lines("reloaded")
            + self.log_lines("reload failed: the running pipelines are unchanged");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP sent");
        wait_for("the reload", DEADLINE, || {
            self.log_lines("reloaded")
                + self.log_lines("reload failed: the running pipelines are unchanged")
                > before
        });
    }

    /// Closes stdin and waits for the run to end.
    fn finish(self) -> (Running, std::process::ExitStatus) {
        self.finish_with(false)
    }

    /// [`Running::finish`]; with `sigterm`, also asks it to stop (an `internal` source
    /// never ends on its own).
    fn finish_with(mut self, sigterm: bool) -> (Running, std::process::ExitStatus) {
        drop(self.stdin.take());
        if sigterm {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM sent");
        }
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (self, status);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "vigil did not finish:\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn event(i: usize, src: &str, port: u16) -> Value {
    json!({"id": i, "src": src, "port": port, "timestamp": format!("2026-11-21T10:{:02}:{:02}Z", i / 60 % 60, i % 60)})
}

fn burst_pipeline(out: &Path, threshold: u32, group_by: &str, extra_sink: &str) -> String {
    format!(
        r#"kind: pipeline
name: p
sources:
  in: {{type: stdin}}
stages:
  ssh:
    type: filter
    inputs: [in]
    match: {{port: 22}}
  burst:
    type: window_count
    inputs: [ssh]
    window: 1h
    threshold: {threshold}
    group_by: [{group_by}]
    alert: {{severity: high, title: "burst from {{{{group.src}}}}"}}
sinks:
  out:
    type: file
    inputs: [burst]
    path: {out}
{extra_sink}"#,
        out = out.display()
    )
}

/// A run of [`burst_pipeline`] (threshold 10, by `src`, alerts to `out`) with nine
/// events of one source in its window, and the extra sink that told when they got there
/// (a copy of the filter's output): events read after a reload would count in the new
/// window, so the nine must be in the old one first. Returns the run and that sink, to
/// keep in the new configuration.
fn nine_in_a_threshold_10_window(dir: &Path, out: &Path) -> (Running, String) {
    let seen = dir.join("seen.jsonl");
    let copy = format!(
        "  seen:\n    type: file\n    inputs: [ssh]\n    path: {}\n",
        seen.display()
    );
    let mut r = Running::start(&burst_pipeline(out, 10, "src", &copy));
    r.send(&(0..9).map(|i| event(i, "a", 22)).collect::<Vec<_>>());
    wait_for("the nine events through the filter", DEADLINE, || {
        lines(&seen).len() == 9
    });
    (r, copy)
}

fn report(r: &Running) -> Value {
    r.logs_with("reloaded").pop().expect("a reload report")["fields"].clone()
}

#[test]
fn a_threshold_change_keeps_the_window_and_fires_at_the_new_threshold() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let (mut r, copy) = nine_in_a_threshold_10_window(dir.path(), &out);
    r.write("p.yaml", &burst_pipeline(&out, 12, "src", &copy));
    r.sighup();
    let rep = report(&r);
    assert_eq!(rep["changed"], "[\"p.burst\"]", "{rep}");
    assert_eq!(rep["state_kept"], "[\"p.burst\"]", "{rep}");
    assert_eq!(rep["state_reset"], "[]", "{rep}");
    // The 10th event does not fire any more (threshold 12); the 12th does, counting the
    // nine from before the reload.
    r.send(&[event(9, "a", 22), event(10, "a", 22), event(11, "a", 22)]);
    let (_r, status) = r.finish();
    assert!(status.success());
    let alerts = lines(&out);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["value"], 12.0);
    assert_eq!(alerts[0]["threshold"], 12.0);
}

#[test]
fn an_unrelated_change_keeps_the_window() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let copy = dir.path().join("copy.jsonl");
    // The nine are through the filter before the reload (else some would reach the
    // added sink too).
    let (mut r, seen) = nine_in_a_threshold_10_window(dir.path(), &out);
    let extra = format!(
        "{seen}  copy:\n    type: file\n    inputs: [ssh]\n    path: {}\n",
        copy.display()
    );
    r.write("p.yaml", &burst_pipeline(&out, 10, "src", &extra));
    r.sighup();
    let rep = report(&r);
    assert_eq!(rep["added"], "[\"p.copy\"]", "{rep}");
    assert_eq!(rep["changed"], "[]", "{rep}");
    r.send(&[event(9, "a", 22)]);
    let (_r, status) = r.finish();
    assert!(status.success());
    let alerts = lines(&out);
    assert_eq!(alerts.len(), 1, "the 10th event fires: {alerts:?}");
    assert_eq!(alerts[0]["value"], 10.0);
    assert_eq!(
        lines(&copy).len(),
        1,
        "the added sink sees what came after the reload"
    );
}

#[test]
fn a_group_by_change_resets_the_window_and_says_so() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let (mut r, copy) = nine_in_a_threshold_10_window(dir.path(), &out);
    r.write("p.yaml", &burst_pipeline(&out, 10, "src, port", &copy));
    r.sighup();
    let rep = report(&r);
    assert_eq!(rep["state_reset"], "[\"p.burst\"]", "{rep}");
    r.send(&[event(9, "a", 22)]);
    let (_r, status) = r.finish();
    assert!(status.success());
    assert!(lines(&out).is_empty(), "the window started again");
}

#[test]
fn an_invalid_edit_leaves_the_old_graph_running_and_raises_an_internal_alert() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let internal = dir.path().join("internal.jsonl");
    let mut r = Running::start(&burst_pipeline(&out, 3, "src", ""));
    r.write(
        "vigil.yaml",
        &format!(
            "kind: pipeline\nname: vigil-alerts\nsources:\n  own: {{type: internal}}\nsinks:\n  log:\n    type: file\n    inputs: [own]\n    path: {}\n",
            internal.display()
        ),
    );
    r.sighup();
    assert_eq!(
        report(&r)["added"],
        "[\"vigil-alerts.log\", \"vigil-alerts.own\"]"
    );
    // Broken: `threshold: ten` (line 14 of p.yaml).
    r.write(
        "p.yaml",
        &burst_pipeline(&out, 3, "src", "").replace("threshold: 3", "threshold: ten"),
    );
    r.sighup();
    let failed = r.logs_with("reload failed: the running pipelines are unchanged");
    assert_eq!(failed.len(), 1);
    let logs = r.all_logs();
    assert!(
        logs.contains("p.yaml:14:16: error[wrong-type]"),
        "the error names its position: {logs}"
    );
    wait_for("the internal alert", DEADLINE, || {
        !lines(&internal).is_empty()
    });
    let alert = &lines(&internal)[0];
    assert_eq!(alert["pipeline"], "vigil");
    assert_eq!(alert["stage"], "reload_failed");
    assert!(
        alert["summary"].as_str().unwrap().contains("p.yaml:14:16"),
        "{alert}"
    );
    // The old graph (threshold 3) still runs.
    r.send(&(0..3).map(|i| event(i, "a", 22)).collect::<Vec<_>>());
    wait_for("the alert of the old graph", DEADLINE, || {
        lines(&out).len() == 1
    });
    let (_r, status) = r.finish_with(true);
    assert!(status.success());
    assert_eq!(lines(&out).len(), 1);
}

/// A "billion laughs" file (9 lines that would expand to 10^8 scalars) saved into the
/// watched directory: the reload reads it within its budget and refuses it with a
/// diagnostic, and the running pipeline goes on (before the budget, the process was
/// killed by the allocation: exit 134).
#[test]
fn an_alias_bomb_saved_into_the_watched_directory_is_refused_and_the_pipelines_go_on() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let mut r = Running::start_with(&burst_pipeline(&out, 3, "src", ""), true);
    let bomb = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/alias-bomb.yaml"),
    )
    .expect("the fixture");
    let before = r.reloads();
    std::fs::write(r.pipelines().join("bomb.yaml"), bomb).expect("write");
    wait_for("the refused reload", DEADLINE, || r.reloads() > before);
    assert_eq!(
        r.logs_with("reload failed: the running pipelines are unchanged")
            .len(),
        1,
        "{}",
        r.all_logs()
    );
    let logs = r.all_logs();
    assert!(
        logs.contains("bomb.yaml:14:20: error[too-large]"),
        "the refusal names the file, the place and the budget: {logs}"
    );
    // The pipeline that was running still counts and alerts.
    r.send(&(0..3).map(|i| event(i, "a", 22)).collect::<Vec<_>>());
    wait_for("the alert of the running pipeline", DEADLINE, || {
        lines(&out).len() == 1
    });
    let (_r, status) = r.finish_with(true);
    assert!(status.success(), "vigil exits cleanly");
}

/// A reload whose new node cannot be built (a file sink pointed at a directory: valid
/// YAML, but the file cannot be opened) changes nothing and says which node and why; the
/// old graph goes on delivering to the old path.
#[test]
fn a_reload_whose_new_sink_cannot_open_its_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let mut r = Running::start(&burst_pipeline(&out, 3, "src", ""));
    let blocked = dir.path().join("a-directory");
    std::fs::create_dir(&blocked).expect("mkdir");
    r.write(
        "p.yaml",
        &burst_pipeline(&out, 3, "src", "").replace(
            &format!("path: {}", out.display()),
            &format!("path: {}", blocked.display()),
        ),
    );
    r.sighup();
    let failed = r.logs_with("reload failed: the running pipelines are unchanged");
    assert_eq!(failed.len(), 1);
    let logs = r.all_logs();
    assert!(
        logs.contains(&format!("p.out: cannot open {}", blocked.display())),
        "the error names the node and the path: {logs}"
    );
    r.send(&(0..3).map(|i| event(i, "a", 22)).collect::<Vec<_>>());
    let (_r, status) = r.finish();
    assert!(status.success());
    assert_eq!(lines(&out).len(), 1, "the old sink delivered the alert");
}

#[test]
fn events_in_equal_events_out_through_a_reload() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("all.jsonl");
    let pipeline = |ports: &str| {
        format!(
            "kind: pipeline\nname: p\nsources:\n  in: {{type: stdin}}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {{port: [{ports}]}}\n  tag:\n    type: filter\n    inputs: [keep]\n    match: {{src: a}}\nsinks:\n  out:\n    type: file\n    inputs: [tag]\n    path: {}\n",
            out.display()
        )
    };
    let mut r = Running::start(&pipeline("22"));
    let events: Vec<Value> = (0..N).map(|i| event(i, "a", 22)).collect();
    r.send(&events[..N / 2]);
    // Mid-stream: the first filter is rebuilt while events flow through both.
    wait_for("some output", DEADLINE, || lines(&out).len() >= N / 4);
    r.write("p.yaml", &pipeline("22, 23"));
    // Keep feeding while the reload runs.
    let mut stdin = r.stdin.take().expect("stdin");
    let rest: Vec<Value> = events[N / 2..].to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in rest.chunks(50) {
            for e in chunk {
                writeln!(stdin, "{e}").expect("write");
            }
            stdin.flush().expect("flush");
        }
        // stdin closes here: the source ends once everything is read.
    });
    r.sighup();
    writer.join().expect("writer");
    let (r, status) = r.finish();
    assert!(status.success(), "{}", r.all_logs());
    let rep = report(&r);
    assert_eq!(rep["changed"], "[\"p.keep\"]", "{rep}");
    let got = lines(&out);
    let mut ids: Vec<u64> = got.iter().map(|v| v["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(got.len(), N, "events out");
    assert_eq!(ids.len(), N, "each event once");
}

/// Each way editors and tools save gives exactly one reload, and the edit takes effect.
#[test]
fn every_save_pattern_gives_exactly_one_reload() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("out.jsonl");
    let pipeline = |port: u16, name: &str| {
        format!(
            "kind: pipeline\nname: {name}\nsources:\n  in: {{type: stdin}}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {{port: {port}}}\nsinks:\n  out:\n    type: file\n    inputs: [keep]\n    path: {}\n",
            out.display()
        )
    };
    let mut r = Running::start_with(&pipeline(22, "p"), true);
    let pipes = r.pipelines();

    // Write in place.
    let before = r.reloads();
    std::fs::write(pipes.join("p.yaml"), pipeline(23, "p")).expect("write");
    r.one_reload_after(before, "a write in place");
    assert_eq!(report(&r)["changed"], "[\"p.keep\"]");
    // The edit took effect: port 23 passes, 22 no longer does.
    r.send(&[event(1, "a", 22), event(2, "a", 23)]);
    wait_for("the port-23 event", DEADLINE, || lines(&out).len() == 1);
    assert_eq!(lines(&out)[0]["port"], 23);

    // Write a temp file and rename it over (vim, VS Code).
    let before = r.reloads();
    std::fs::write(pipes.join(".p.yaml.tmp"), pipeline(24, "p")).expect("write");
    std::fs::rename(pipes.join(".p.yaml.tmp"), pipes.join("p.yaml")).expect("rename");
    r.one_reload_after(before, "a rename over the file");

    // Delete, then create.
    let before = r.reloads();
    std::fs::remove_file(pipes.join("p.yaml")).expect("remove");
    std::fs::write(pipes.join("p.yaml"), pipeline(25, "p")).expect("write");
    r.one_reload_after(before, "a delete and create");
    assert_eq!(report(&r)["changed"], "[\"p.keep\"]");

    // A new file.
    let before = r.reloads();
    let out_q = out.display().to_string().replace("out.jsonl", "q.jsonl");
    std::fs::write(
        pipes.join("q.yaml"),
        pipeline(26, "q").replace(&out.display().to_string(), &out_q),
    )
    .expect("write");
    r.one_reload_after(before, "a new file");
    assert_eq!(report(&r)["added"], "[\"q.in\", \"q.keep\", \"q.out\"]");

    // A deleted file.
    let before = r.reloads();
    std::fs::remove_file(pipes.join("q.yaml")).expect("remove");
    r.one_reload_after(before, "a deleted file");
    assert_eq!(report(&r)["removed"], "[\"q.in\", \"q.keep\", \"q.out\"]");

    // Many files at once (a `git checkout`): two pipelines and the settings' sibling.
    let before = r.reloads();
    for (name, port) in [("p", 27), ("x", 28), ("y", 29)] {
        let path = out
            .display()
            .to_string()
            .replace("out.jsonl", &format!("{name}.jsonl"));
        let text = pipeline(port, name).replace(&out.display().to_string(), &path);
        std::fs::write(pipes.join(format!("{name}.yaml")), text).expect("write");
    }
    r.one_reload_after(before, "a checkout of several files");
    let rep = report(&r);
    assert_eq!(rep["changed"], "[\"p.keep\", \"p.out\"]", "{rep}");
    assert_eq!(
        rep["added"], "[\"x.in\", \"x.keep\", \"x.out\", \"y.in\", \"y.keep\", \"y.out\"]",
        "{rep}"
    );
    let _ = r.finish_with(true);
}

/// 100 saves — every other one a settings edit, which rebuilds every node, the `file`
/// source included — while 100,000 lines are appended to the file it reads: every line
/// comes out exactly once (the rebuilt source goes on from the position its predecessor
/// saved once what it had handed on was delivered).
#[test]
fn a_file_source_loses_and_repeats_nothing_through_100_reloads_under_load() {
    const N: u64 = 100_000;
    const SAVES: usize = 100;
    let dir = tempfile::tempdir().expect("temp");
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let pipeline = |ports: &str| {
        format!(
            "kind: pipeline\nname: p\nsources:\n  in: {{type: file, path: {}, poll_interval: 10ms}}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {{port: [{ports}]}}\nsinks:\n  out:\n    type: file\n    inputs: [keep]\n    path: {}\n",
            input.display(),
            out.display()
        )
    };
    let mut r = Running::start(&pipeline("22"));
    let settings = std::fs::read_to_string(r.pipelines().join("settings.yaml")).expect("read");
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&input)
                .expect("open");
            for chunk in 0..(N / 500) {
                let mut text = String::new();
                for i in chunk * 500..(chunk + 1) * 500 {
                    text.push_str(&format!(
                        "{{\"id\":{i},\"src\":\"a\",\"port\":22,\"pad\":\"{}\"}}\n",
                        "x".repeat(50)
                    ));
                }
                f.write_all(text.as_bytes()).expect("append");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for save in 0..SAVES {
        if save % 2 == 0 {
            let tick = if save % 4 == 0 { "200ms" } else { "100ms" };
            r.write(
                "settings.yaml",
                &settings.replace("tick_interval: 100ms", &format!("tick_interval: {tick}")),
            );
        } else {
            r.write(
                "p.yaml",
                &pipeline(if save % 4 == 1 { "22, 23" } else { "22" }),
            );
        }
        r.sighup();
    }
    writer.join().expect("writer");
    wait_for("every line", Duration::from_secs(120), || {
        lines(&out).len() as u64 >= N
    });
    let (r, status) = r.finish_with(true);
    assert!(status.success(), "{}", r.all_logs());
    assert_eq!(r.logs_with("reloaded").len(), SAVES, "every save reloaded");
    let mut ids: Vec<u64> = lines(&out)
        .iter()
        .map(|v| v["id"].as_u64().expect("id"))
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, N, "every line came out");
    assert_eq!(total as u64, N, "no line came out twice");
}

/// A changed `web:` block cannot be applied by a reload (the listener keeps its address
/// and token): the reload says plainly that a restart is needed.
#[test]
fn a_changed_web_block_is_reported_as_needing_a_restart() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("alerts.jsonl");
    let mut r = Running::start(&burst_pipeline(&out, 3, "src", ""));
    let settings = std::fs::read_to_string(r.pipelines().join("settings.yaml")).expect("read");
    r.write(
        "settings.yaml",
        &format!("{settings}web: {{listen: \"127.0.0.1:0\"}}\n"),
    );
    r.sighup();
    let rep = report(&r);
    assert_eq!(rep["restart_needed"], "[\"web\"]", "{rep}");
    assert!(
        r.all_logs()
            .contains("the web: settings changed; they take effect when vigil is restarted")
    );
    let (_r, status) = r.finish();
    assert!(status.success());
}
