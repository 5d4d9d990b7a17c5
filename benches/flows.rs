//! Flow lines through a whole pipeline: `file` source → `filter` → `window_count` (10,000
//! keys) → `top_n` → `file` sink, with all cores and on one thread, with and without a
//! Rhai `where:` in the filter — next to the bare parse rate of the same bytes (the tape
//! the engine parses into, and a `serde_json::Value` for comparison), in the same run.
//!
//! For each it reports records a second (wall), the CPU seconds the process spent and
//! its peak resident memory during the run (VmHWM, reset before each).
//! `VIGIL_BENCH_RECORDS` sets the number of lines (default 1,000,000 under `cargo bench`);
//! under `cargo test --benches` it runs 10,000 once, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vigil::config::Config;
use vigil::runtime::{self, WallClock};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use common::flows::write_flow_keys;
use common::yaml_str;

/// Distinct source addresses: the window's keys.
const KEYS: u64 = 10_000;

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn config(state: &Path, input: &Path, output: &Path, script: bool) -> Config {
    let (state, input, output) = (yaml_str(state), yaml_str(input), yaml_str(output));
    let where_ = if script {
        "\n    where: 'event.num_connections >= 0 && event.service.port != 1'"
    } else {
        ""
    };
    let yaml = format!(
        r#"
kind: settings
state_dir: {state}
keep_state: false
---
kind: pipeline
name: bench
sources:
  flows: {{type: file, path: {input}, follow: false}}
stages:
  keep:
    type: filter
    inputs: [flows]
    match:
      policy_decision: [blocked, potentially_blocked, allowed, unknown]
    exclude:
      src.ip: 192.0.2.0/24{where_}
  rule:
    type: window_count
    inputs: [keep]
    window: 10m
    threshold: 300
    sum: num_connections
    group_by: [src.ip]
  top:
    type: top_n
    inputs: [keep, rule]
    by: [dst.ip, service.port]
    sum: num_connections
    within: [src.ip]
    n: 5
sinks:
  out: {{type: file, path: {output}, append: false, inputs: [top]}}
"#
    );
    common::load(yaml)
}

/// Runs the pipeline once; (wall seconds, CPU seconds, peak RSS in MiB).
fn run(config: &Config, threads: Option<usize>, n: u64) -> (f64, f64, f64) {
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(k) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(k)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    common::reset_peak();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let report = rt.block_on(async {
        let topology = runtime::start(config, Arc::new(WallClock)).expect("start");
        topology.wait().await
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    assert!(!report.failed(), "{:?}", report.nodes);
    let kept = report.node("bench.keep").expect("the filter").events_out;
    assert_eq!(kept, n, "every line passed the filter");
    (wall, cpu, common::peak_mib())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("flows: bench");
        return;
    }
    let n = common::records(1_000_000, 10_000);
    let dir = tempfile::TempDir::new().expect("temp dir");
    let input = dir.path().join("flows.jsonl");
    // Written line by line: the pipelines run first, with nothing else held, so their
    // peak memory is their own; the bare parse reads the file back afterwards.
    let mut size = 0usize;
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
        let mut line = String::with_capacity(1024);
        for i in 0..n {
            line.clear();
            write_flow_keys(&mut line, i, Some(KEYS));
            line.push('\n');
            out.write_all(line.as_bytes()).expect("write the input");
            size += line.len();
        }
        out.flush().expect("write the input");
    }
    eprintln!(
        "flows bench: {n} lines, {:.1} MB, {KEYS} keys; {} cores",
        size as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let size = size as f64;
    let report = |what: &str, wall: f64, cpu: f64| {
        eprintln!(
            "  {what:<44} {:>10.0} records/s  ({wall:.2} s wall, {cpu:.2} s CPU, {:.0} MB/s)",
            n as f64 / wall,
            size / wall / 1e6
        );
    };

    let mut results = Vec::new();
    for script in [false, true] {
        for threads in [None, Some(1)] {
            let state = dir.path().join(format!("state-{script}-{threads:?}"));
            let output = dir.path().join(format!("out-{script}-{threads:?}.jsonl"));
            let cfg = config(&state, &input, &output, script);
            let (wall, cpu, peak) = run(&cfg, threads, n);
            let what = format!(
                "pipeline{}, {}",
                if script { " with a Rhai where:" } else { "" },
                if threads.is_some() {
                    "one thread"
                } else {
                    "all cores"
                }
            );
            report(&what, wall, cpu);
            eprintln!("  {:<44} peak RSS {peak:.0} MiB", "");
            results.push(serde_json::json!({
                "what": what, "records": n, "wall_seconds": wall, "cpu_seconds": cpu,
                "peak_rss_mib": peak,
                "records_per_second": n as f64 / wall,
            }));
        }
    }

    let data = std::fs::read(&input).expect("read the input back");
    let lines: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let parse = |tape: bool| {
        let cpu = cpu_seconds();
        let started = Instant::now();
        for l in &lines {
            if tape {
                let t = vigil::event::Tape::parse(bytes::Bytes::copy_from_slice(l));
                std::hint::black_box(t.expect("valid JSON"));
            } else {
                let v = serde_json::from_slice::<serde_json::Value>(l);
                std::hint::black_box(v.expect("valid JSON"));
            }
        }
        (started.elapsed().as_secs_f64(), cpu_seconds() - cpu)
    };
    let (w, c) = parse(true);
    report("bare parse into a tape (one thread)", w, c);
    let (w, c) = parse(false);
    report("bare parse into a serde_json Value (one thread)", w, c);
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join("bench-flows.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    );
}
