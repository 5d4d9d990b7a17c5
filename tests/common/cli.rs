//! Running the `vigil` binary in a temporary project: for the end-to-end delivery tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// Waits for `cond` to hold, up to `limit`; fails the test with `what` otherwise. (A
/// deadline on a condition, not a fixed sleep: the short pause only paces the polling.)
pub(crate) fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary project: `pipelines/settings.yaml` (state under `state/`) and
/// `pipelines/p.yaml`.
pub(crate) struct Project {
    /// The temporary directory (removed on drop).
    pub(crate) dir: tempfile::TempDir,
    /// Environment variables every command of the project runs with.
    pub(crate) env: Vec<(String, String)>,
}

impl Project {
    /// A project whose settings are `settings` (the `state_dir` line is added) and whose
    /// pipeline file is `pipeline`.
    pub(crate) fn new(settings: &str, pipeline: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("pipelines")).expect("mkdir");
        let settings = format!(
            "kind: settings\nstate_dir: {}\n{settings}",
            dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("pipelines/settings.yaml"), settings).expect("write");
        std::fs::write(dir.path().join("pipelines/p.yaml"), pipeline).expect("write");
        Project {
            dir,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every command of the project.
    pub(crate) fn env(mut self, k: &str, v: &str) -> Project {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The project's root.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The pipelines directory.
    pub(crate) fn pipelines(&self) -> PathBuf {
        self.dir.path().join("pipelines")
    }

    /// A `vigil` command in the project, with its environment.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).current_dir(self.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// `vigil --log-format json run` with `input` on its standard input (closed after, so
    /// a `stdin` source ends and the run drains and exits).
    pub(crate) fn run_with_input(&self, input: &str, limit: Duration) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(&["--log-format", "json", "run", "--pipelines"])
            .arg(self.pipelines())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil starts");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        let start = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "vigil run did not finish within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `vigil --log-format json run`, its standard input kept open (the run goes on until
    /// killed or its stdin is closed).
    pub(crate) fn spawn_run(&self) -> Child {
        self.command(&["--log-format", "json", "run", "--pipelines"])
            .arg(self.pipelines())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil starts")
    }

    /// Every message in the outbox (`vigil outbox list --state all --format json`).
    pub(crate) fn outbox(&self) -> Vec<Value> {
        let out = self
            .command(&[
                "outbox",
                "list",
                "--state",
                "all",
                "--format",
                "json",
                "--pipelines",
            ])
            .arg(self.pipelines())
            .output()
            .expect("vigil outbox runs");
        assert!(
            out.status.success(),
            "vigil outbox list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("outbox JSON")
    }

    /// The outbox messages in `state` (`sent`, `dead`, `pending`, `gathering`).
    pub(crate) fn outbox_in(&self, state: &str) -> Vec<Value> {
        self.outbox()
            .into_iter()
            .filter(|m| m["state"] == state)
            .collect()
    }
}

/// JSON lines, one record per event, for a `stdin` source.
pub(crate) fn jsonl(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// Sends SIGKILL: the process dies at once, with no chance to clean up.
pub(crate) fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `cmd` with its standard error collected line by line (for JSON log lines).
pub(crate) fn spawn_logged(
    cmd: &mut Command,
) -> (Child, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::BufRead as _;
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr");
    let logs: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    (child, logs)
}

/// The address of the web server from vigil's JSON log lines (`web: listening`).
pub(crate) fn web_address(logs: &[String]) -> Option<String> {
    logs.iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["fields"]["message"] == "web: listening")
            .then(|| v["fields"]["address"].as_str().map(str::to_string))
            .flatten()
    })
}

/// Waits (with a deadline) until vigil's JSON log lines name its web server's address.
pub(crate) async fn wait_web_address(
    logs: &std::sync::Mutex<Vec<String>>,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(a) = web_address(&logs.lock().unwrap()) {
            return a;
        }
        assert!(Instant::now() < deadline, "the API never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `vigil pce-sim` on a free port with `args` and `env`; returns it and its URL.
#[cfg(feature = "demo")]
pub(crate) fn pce_sim(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    use std::io::BufRead as _;
    let mut cmd = Command::new(bin());
    cmd.args(["pce-sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut sim = cmd.spawn().expect("pce-sim starts");
    let mut first = String::new();
    std::io::BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the simulator prints its URL");
    (sim, first.trim().to_string())
}

/// The first `.eml` file in `dir`, waiting up to `limit` for one.
pub(crate) fn first_mail(dir: &Path, limit: Duration) -> PathBuf {
    let mut found = None;
    wait_for("a mail", limit, || {
        found = std::fs::read_dir(dir).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        found.is_some()
    });
    found.expect("found")
}

/// A child process killed when dropped (also when a test fails half-way).
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vigil --log-format json demo --listen 127.0.0.1:0 --out OUT`, its log lines collected.
#[cfg(feature = "demo")]
pub(crate) fn spawn_demo(
    out: &Path,
) -> (KillOnDrop, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    spawn_demo_with(out, &[])
}

/// The same, with `extra` arguments to `demo`.
#[cfg(feature = "demo")]
pub(crate) fn spawn_demo_with(
    out: &Path,
    extra: &[&str],
) -> (KillOnDrop, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let (child, logs) = spawn_logged(
        Command::new(bin())
            .args([
                "--log-format",
                "json",
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--out",
            ])
            .arg(out)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    (KillOnDrop(child), logs)
}

/// A webhook receiver answering `200 ok` to every POST on `/hook`; returns it and the URL.
pub(crate) async fn hook_receiver() -> (wiremock::MockServer, String) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&hook)
        .await;
    let url = format!("{}/hook", hook.uri());
    (hook, url)
}
