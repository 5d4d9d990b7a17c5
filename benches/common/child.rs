//! A `vigil` process under measurement: which binary, how to stop it, its web address,
//! its metrics, and what `/proc` says of it.

#![allow(clippy::print_stderr)] // echoes the child's warnings

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStderr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The vigil under test: this build's, or `VIGIL_BENCH_BIN` (another build, to compare).
pub(crate) fn vigil_bin() -> PathBuf {
    std::env::var_os("VIGIL_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vigil")), PathBuf::from)
}

/// Whether this is `cargo bench` (not `cargo test --benches`).
pub(crate) fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads vigil's JSON log on `stderr` (on a thread of its own), echoing warnings and
/// errors, and waits until its web server says where it listens: `http://host:port`.
pub(crate) fn web_address(stderr: ChildStderr, deadline: Instant) -> String {
    let address: Arc<Mutex<Option<String>>> = Arc::default();
    let found = address.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "web: listening"
                && let Some(a) = v["fields"]["address"].as_str()
            {
                *found.lock().unwrap() = Some(a.to_string());
            }
            if v["level"] == "ERROR" || v["level"] == "WARN" {
                eprintln!("  vigil: {line}");
            }
        }
    });
    loop {
        if let Some(a) = address.lock().unwrap().clone() {
            return format!("http://{a}");
        }
        assert!(
            Instant::now() < deadline,
            "vigil's web server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP GET of `url` (`http://host:port/path`): the body of a 200 answer.
pub(crate) fn get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.lines()
        .next()
        .is_some_and(|status| status.contains(" 200"))
        .then(|| body.to_string())
}

/// A metric's value summed over the series whose labels include `labels`.
pub(crate) fn metric(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What `/proc` says of a process at one moment: resident and peak memory (MiB), CPU
/// seconds (user + system).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) rss: f64,
    pub(crate) peak: f64,
    pub(crate) cpu: f64,
}

/// The usage of process `pid` now (Linux).
pub(crate) fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses) start at field 3: utime is field 14
    // (index 11), stime 15; in USER_HZ (100) ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    Usage {
        rss: mib("VmRSS:"),
        peak: mib("VmHWM:"),
        cpu,
    }
}
