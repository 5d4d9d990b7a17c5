//! Memory of a detection stage's group keys: `vigil run` (the real binary, its own
//! process) reading 1,000,000 JSON lines on stdin, each with a distinct `src`, into a
//! `window_count` grouped by `src` whose threshold is never reached (window 1h; event
//! times 1 ms apart, so no key expires and eviction order is well defined).
//!
//! Three runs: `max_keys` left at its default (every key stays live) with
//! `keep_state: false` (no snapshot at all), the same with states kept (the default), and
//! `max_keys: 100000`. For each it reports the vigil process's resident set (`VmRSS`)
//! and peak (`VmHWM`) from `/proc/<pid>/status` and its CPU seconds (user + system,
//! `/proc/<pid>/stat`) once 10%, 50% and 100% of the lines have been counted by the
//! stage (read from `/metrics`), the events a second over the feed, and
//! `vigil_node_dropped_total{reason="evicted"}`. When states are kept it then waits for
//! the stage's periodic snapshot of all its keys (`snapshot_interval`, 30 s by default,
//! so none is taken during the feed) and reports the peak and CPU again, snapshot
//! included, and what the snapshot added to both.
//!
//! `cargo bench --bench keys` (release build); `VIGIL_BENCH_BIN=<path>` measures another
//! vigil build; `VIGIL_BENCH_RECORDS` changes the number of lines. Under
//! `cargo test --benches` it feeds 20,000 lines once (snapshots every 2 s), to check that
//! it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod common;

use common::child::{Proc, Usage, bench_mode, get, metric, usage, vigil_bin, web_address};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(300);

fn pipeline(max_keys: Option<usize>, out: &Path) -> String {
    let cap = max_keys.map_or(String::new(), |n| format!("    max_keys: {n}\n"));
    format!(
        "kind: pipeline\nname: keys\nsources:\n  in: {{type: stdin, time_field: ts}}\nstages:\n  count:\n    type: window_count\n    inputs: [in]\n    window: 1h\n    threshold: 1000000000\n    group_by: [src]\n{cap}sinks:\n  out:\n    type: file\n    inputs: [count]\n    path: {}\n",
        common::yaml_str(out)
    )
}

/// One line: a distinct source address per `i`, times 1 ms apart.
fn write_line(out: &mut String, i: u64) {
    use std::fmt::Write as _;
    let ms = i % 1000;
    let ts = common::flows::rfc3339(common::flows::BASE_EPOCH + (i / 1000) as i64);
    let ts = ts.trim_end_matches('Z');
    let _ = writeln!(
        out,
        "{{\"ts\":\"{ts}.{ms:03}Z\",\"src\":\"10.{}.{}.{}\",\"dst\":\"192.0.2.7\",\"port\":443,\"action\":\"blocked\"}}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff,
    );
}

struct Run {
    label: String,
    /// (lines counted, usage then).
    points: Vec<(u64, Usage)>,
    events_per_s: f64,
    evicted: f64,
    /// A snapshot was saved before the last line was counted.
    saved_during_feed: bool,
    keys_state: Option<usize>,
    after_snapshot: Option<Usage>,
}

fn run(label: &str, max_keys: Option<usize>, keep_state: bool, lines: u64) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipes = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipes).expect("mkdir");
    let state = dir.path().join("state");
    std::fs::write(
        pipes.join("settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {}\nweb: {{ listen: 127.0.0.1:0 }}\nkeep_state: {keep_state}\n{}",
            common::yaml_str(&state),
            // A quick check saves sooner than the default 30 s.
            if bench_mode() {
                ""
            } else {
                "snapshot_interval: 2s\n"
            }
        ),
    )
    .expect("write");
    std::fs::write(
        pipes.join("keys.yaml"),
        pipeline(max_keys, &dir.path().join("out.jsonl")),
    )
    .expect("write");
    let mut child = Command::new(vigil_bin())
        .args(["--log-format", "json", "run", "--no-watch", "--pipelines"])
        .arg(&pipes)
        .env("VIGIL_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let mut stdin = child.stdin.take().expect("stdin");
    let vigil = Proc(child);
    let deadline = Instant::now() + DEADLINE;
    let base = web_address(stderr, deadline);
    let counted = |scrape: &str| {
        metric(
            scrape,
            "vigil_node_events_in_total",
            &["node=\"keys.count\""],
        )
    };
    let wait_for = |n: u64| -> String {
        loop {
            assert!(
                Instant::now() < deadline,
                "the stage never counted {n} lines"
            );
            if let Some(scrape) = get(&format!("{base}/metrics"))
                && counted(&scrape) >= n as f64
            {
                return scrape;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // The lines of each stretch, made before the clock starts.
    let marks = [lines / 10, lines / 2, lines];
    let mut from = 0;
    let stretches: Vec<(u64, String)> = marks
        .iter()
        .map(|&mark| {
            let mut text = String::new();
            for i in from..mark {
                write_line(&mut text, i);
            }
            from = mark;
            (mark, text)
        })
        .collect();
    // Before the first line: what vigil holds with no key.
    let mut points = vec![(0, usage(pid))];
    let started = Instant::now();
    let mut idle = Duration::ZERO;
    let mut scrape = String::new();
    for (mark, text) in &stretches {
        stdin.write_all(text.as_bytes()).expect("vigil reads stdin");
        stdin.flush().expect("flush");
        scrape = wait_for(*mark);
        let at = Instant::now();
        points.push((*mark, usage(pid)));
        idle += at.elapsed();
    }
    drop(stretches);
    let fed = started.elapsed() - idle;
    let evicted = metric(
        &scrape,
        "vigil_node_dropped_total",
        &["node=\"keys.count\"", "reason=\"evicted\""],
    );

    // The periodic snapshot after the feed: the stage serialises every key it holds (all
    // the lines' without a cap; with one, between 90% and 100% of it).
    let held = max_keys.map_or(lines, |m| (m - m / 10) as u64);
    let db = state.join("vigil.db");
    let saved = || -> Option<String> {
        let conn = rusqlite::Connection::open(&db).ok()?;
        conn.query_row(
            "SELECT CAST(value AS TEXT) FROM stage_state WHERE node = 'keys.count'",
            [],
            |r| r.get(0),
        )
        .ok()
    };
    let saved_during_feed = saved().is_some();
    let snapshot_done = || -> Option<usize> {
        let v: Value = serde_json::from_str(&saved()?).ok()?;
        let keys = v["keys"].as_object().map_or(0, serde_json::Map::len);
        (keys as u64 >= held).then_some(keys)
    };
    let mut keys_state = None;
    let snapshot_deadline = Instant::now() + Duration::from_secs(90);
    while keep_state && Instant::now() < snapshot_deadline {
        if let Some(n) = snapshot_done() {
            keys_state = Some(n);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after_snapshot = keys_state.map(|_| usage(pid));
    drop(stdin);
    drop(vigil);
    Run {
        label: label.to_string(),
        points,
        events_per_s: lines as f64 / fed.as_secs_f64(),
        evicted,
        saved_during_feed,
        keys_state,
        after_snapshot,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("keys: bench");
        return;
    }
    let lines = common::records(1_000_000, 20_000);
    let cap = (lines / 10) as usize;
    let mut report = Vec::new();
    for (label, max_keys, keep_state) in [
        (
            "max_keys default (no cap), keep_state: false (no snapshot)".to_string(),
            None,
            false,
        ),
        ("max_keys default (no cap)".to_string(), None, true),
        (format!("max_keys: {cap}"), Some(cap), true),
    ] {
        let r = run(&label, max_keys, keep_state, lines);
        let cpu = r.points.last().map_or(0.0, |p| p.1.cpu) - r.points[0].1.cpu;
        eprintln!(
            "{}: {lines} lines, {:.0} events/s, {cpu:.2} CPU s over the feed",
            r.label, r.events_per_s
        );
        for (n, u) in &r.points {
            eprintln!(
                "  at {n:>9} lines: RSS {:7.1} MiB, peak {:7.1} MiB, CPU {:6.2} s",
                u.rss, u.peak, u.cpu
            );
        }
        eprintln!(
            "  evicted (vigil_node_dropped_total{{reason=\"evicted\"}}): {}",
            r.evicted
        );
        if r.saved_during_feed {
            eprintln!("  (a snapshot was saved during the feed: the points above include it)");
        }
        let fed = r.points.last().map(|p| p.1);
        match (r.keys_state, r.after_snapshot, fed) {
            _ if !keep_state => {}
            (Some(k), Some(u), Some(fed)) => {
                eprintln!(
                    "  after the periodic snapshot ({k} keys saved): RSS {:7.1} MiB, peak {:7.1} MiB, CPU {:6.2} s",
                    u.rss, u.peak, u.cpu
                );
                eprintln!(
                    "  the snapshot added: peak +{:.1} MiB, CPU +{:.2} s",
                    u.peak - fed.peak,
                    u.cpu - fed.cpu
                );
            }
            _ => eprintln!("  no snapshot seen within 90 s"),
        }
        report.push(r);
    }
    if let Some(r) = report.last() {
        assert!(
            r.evicted > 0.0,
            "the capped run evicted nothing: is max_keys applied?"
        );
    }
}
