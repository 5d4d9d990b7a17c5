//! `vigil run` under a service manager: the `sd_notify` datagrams it sends to the socket
//! named by `NOTIFY_SOCKET` (here one the test binds, as systemd would), against what a
//! client of its API sees at that moment.

#![cfg(unix)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{KillOnDrop, Project, spawn_logged, web_address};

const PIPELINE: &str = "kind: pipeline\nname: p\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n";

/// The service manager's end: a datagram socket in `dir`.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { socket, path }
    }

    /// The next datagram, waiting at most until `deadline`.
    fn next(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Datagrams until one holds `line`; all of them, that one last.
    fn until(&self, line: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let Some(d) = self.next(deadline) else {
                panic!("no `{line}` within {limit:?}; got {got:?}");
            };
            let done = d.lines().any(|l| l == line);
            got.push(d);
            if done {
                return got;
            }
        }
    }
}

fn project() -> Project {
    Project::new("web:\n  listen: 127.0.0.1:0\n", PIPELINE)
}

/// `GET path` on `addr`: the status line and the body.
fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the API accepts a connection");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn ready_is_sent_once_the_api_answers_ready_and_stopping_at_sigterm() {
    let p = project();
    let manager = Manager::bind(p.path());
    let mut cmd = p.command(&["--log-format", "json", "run", "--pipelines"]);
    cmd.arg(p.pipelines())
        .env("NOTIFY_SOCKET", &manager.path)
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let (child, logs) = spawn_logged(&mut cmd);
    let mut child = KillOnDrop(child);

    let before = manager.until("READY=1", Duration::from_secs(30));
    assert_eq!(before.len(), 1, "datagrams before READY=1: {before:?}");
    assert!(
        before[0]
            .lines()
            .any(|l| l == "STATUS=running 1 pipeline(s)"),
        "{before:?}"
    );
    // The API's address is logged before READY=1 is sent; the log reader may lag.
    let mut addr = None;
    common::cli::wait_for(
        "the API's address in the log",
        Duration::from_secs(10),
        || {
            addr = web_address(&logs.lock().unwrap());
            addr.is_some()
        },
    );
    let addr = addr.expect("address");
    let answer = get(&addr, "/readyz");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ready\n"),
        "/readyz right after READY=1: {answer}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let after = manager.until("STOPPING=1", Duration::from_secs(30));
    assert!(
        after.iter().all(|d| !d.contains("READY=1")),
        "READY=1 sent twice: {after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "vigil did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "vigil run after SIGTERM: {status:?}");
    // STOPPING=1 is sent once, however the run ended.
    let rest: Vec<String> =
        std::iter::from_fn(|| manager.next(Instant::now() + Duration::from_millis(200))).collect();
    assert!(
        rest.iter().all(|d| !d.contains("STOPPING=1")),
        "STOPPING=1 sent twice: {rest:?}"
    );
}

#[test]
fn the_watchdog_is_pinged_at_half_its_period_while_the_engine_runs() {
    let p = project();
    let manager = Manager::bind(p.path());
    let mut cmd = p.command(&["--log-format", "json", "run", "--pipelines"]);
    cmd.arg(p.pipelines())
        .env("NOTIFY_SOCKET", &manager.path)
        // 400 ms: a ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let (child, _logs) = spawn_logged(&mut cmd);
    let _child = KillOnDrop(child);

    manager.until("READY=1", Duration::from_secs(30));
    let start = Instant::now();
    let mut pings = Vec::new();
    while pings.len() < 5 {
        let d = manager
            .next(start + Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} watchdog ping(s) in 20 s", pings.len()));
        if d.lines().any(|l| l == "WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    // Five pings at 200 ms take 800 ms at least (the first is at once); well under the
    // 400 ms period apart each, on a loaded machine too.
    let spread = pings[4] - pings[0];
    assert!(
        spread >= Duration::from_millis(600),
        "pings came too fast: {spread:?}"
    );
}

#[test]
fn without_a_notify_socket_or_with_a_dead_one_the_run_goes_on() {
    let p = project();
    // No NOTIFY_SOCKET: nothing to notify, nothing said about it.
    let out = p.run_with_input("{\"a\":1}\n", Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("NOTIFY_SOCKET"), "{stderr}");

    // A socket nobody listens on: one warning, and the run ends as usual.
    let p = project().env(
        "NOTIFY_SOCKET",
        &p.path().join("nobody.sock").display().to_string(),
    );
    let out = p.run_with_input("{\"a\":1}\n", Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("cannot notify the service manager").count(),
        1,
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"a\":1"));
}
