//! The `host_metrics` source through the runtime, on a captured `/proc` the test rewrites
//! between scrapes and the virtual clock: the shipped CPU rule (`pipelines/host/`) fires
//! after three busy scrapes running and resolves at the first quiet one; a `/proc` without
//! `stat` is counted as a failed read and the source goes on.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{lines, load};
use vigil::runtime::{self, SharedClock, VirtualClock};

fn t0() -> chrono::DateTime<chrono::Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

/// Writes a `/proc` at `uptime` seconds whose CPU counters total `busy` and `idle` ticks.
fn capture(dir: &Path, uptime: u64, busy: u64, idle: u64) {
    std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(dir.join("sys/kernel/hostname"), "web-01\n").unwrap();
    std::fs::write(dir.join("uptime"), format!("{uptime}.00 0.00\n")).unwrap();
    std::fs::write(
        dir.join("stat"),
        format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\nctxt 1\nbtime 1700000000\nprocesses 1\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("meminfo"),
        "MemTotal: 1000 kB\nMemFree: 500 kB\nMemAvailable: 500 kB\nBuffers: 0 kB\nCached: 0 kB\n",
    )
    .unwrap();
    std::fs::write(dir.join("loadavg"), "0.10 0.20 0.30 1/10 100\n").unwrap();
    std::fs::write(dir.join("diskstats"), "").unwrap();
    std::fs::write(dir.join("net/dev"), "Inter-|\n face |\n").unwrap();
}

/// The shipped CPU rule, its mail sink replaced by a file.
fn cpu_rule(proc_root: &Path, out: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/host/cpu-high.yaml"),
    )
    .unwrap();
    let (head, _) = shipped.split_once("sinks:\n").unwrap();
    format!(
        "{}sinks:\n  out:\n    type: file\n    inputs: [alert]\n    path: {}\n",
        head.replace(
            "    interval: 10s\n",
            &format!(
                "    interval: 10s\n    proc_root: {}\n",
                proc_root.display()
            )
        ),
        out.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_rule_fires_after_three_busy_scrapes_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    let out = dir.path().join("alerts.jsonl");
    capture(&proc_root, 1000, 0, 0);
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let cfg = load(format!(
        "kind: settings\nstate_dir: {}\n---\n{}",
        dir.path().join("state").display(),
        cpu_rule(&proc_root, &out)
    ));
    let topology = runtime::start(&cfg, shared).expect("starts");
    let reloader = topology.reloader();
    let scraped = |n: u64| {
        let reloader = reloader.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let nodes = reloader.nodes().await;
                let host = nodes.iter().find(|s| s.id == "host-cpu-high.host").unwrap();
                if host.events_out + host.errors >= n {
                    return;
                }
                assert!(Instant::now() < deadline, "scrape {n}: {host:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    scraped(1).await;
    // Scrapes 1–3: 95 % busy (950 of 1000 ticks in 10 s); 4: 20 %; 5: /proc/stat gone;
    // 6–7: 10 %.
    let (mut busy, mut idle) = (0, 0);
    let steps: [Option<(u64, u64)>; 7] = [
        Some((950, 50)),
        Some((950, 50)),
        Some((950, 50)),
        Some((200, 800)),
        None,
        Some((100, 900)),
        Some((100, 900)),
    ];
    for (i, step) in steps.iter().enumerate() {
        let uptime = 1000 + 10 * (i as u64 + 1);
        match step {
            Some((b, d)) => {
                busy += b;
                idle += d;
                capture(&proc_root, uptime, busy, idle);
            }
            None => std::fs::remove_file(proc_root.join("stat")).unwrap(),
        }
        clock.advance(Duration::from_secs(10));
        scraped(i as u64 + 2).await;
        if i == 2 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while lines(&out).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "no alert after three busy scrapes"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    // The resolution is dated at the window's fall; let the clock pass it.
    clock.advance(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines(&out).iter().any(|a| a["status"] == "resolved") {
        assert!(
            Instant::now() < deadline,
            "never resolved: {:?}",
            lines(&out)
        );
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    topology.shutdown();
    let report = topology.wait().await;
    let alerts = lines(&out);
    let firing: Vec<_> = alerts.iter().filter(|a| a["status"] == "firing").collect();
    assert_eq!(firing.len(), 1, "{alerts:?}");
    assert_eq!(firing[0]["title"], "CPU above 80 % on web-01");
    assert_eq!(firing[0]["value"], 3.0);
    // The scrape's record is the sample: the CPU as the rule saw it.
    assert_eq!(firing[0]["samples"][0]["record"]["cpu"]["percent"], 95.0);
    assert_eq!(
        alerts.iter().filter(|a| a["status"] == "resolved").count(),
        1
    );
    // The scrape without /proc/stat was counted, and the source went on.
    let host = report.node("host-cpu-high.host").unwrap();
    assert_eq!(host.errors, 1, "{host:?}");
    assert!(host.failure.is_none());
}
