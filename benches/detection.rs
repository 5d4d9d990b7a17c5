//! Detection throughput and memory: 1,000,000 flow records through
//! `file` → `filter` → `window_count` (10,000 keys) → `top_n` → `file`, with the filter
//! declarative, and again with a Rhai `where:` expression added to it. Reports events/s
//! (criterion) and the peak resident memory of one run of each (VmHWM, reset between runs).
//!
//! `VIGIL_BENCH_RECORDS` sets the number of records (default 1,000,000 under `cargo bench`).

#![allow(missing_docs)]
#![allow(clippy::print_stderr)]

use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::config::{Config, Env, LoadOptions, load_sources};
use vigil::runtime::{self, WallClock};

mod common;
use common::flows::write_flow_keys;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_RECORDS: u64 = 1_000_000;
const TEST_MODE_RECORDS: u64 = 10_000;
const KEYS: u64 = 10_000;

fn records() -> u64 {
    common::records(DEFAULT_RECORDS, TEST_MODE_RECORDS)
}

fn generate(path: &Path, n: u64) -> u64 {
    let mut data: Vec<u8> = Vec::with_capacity(n as usize * 860);
    let mut line = String::with_capacity(1024);
    for i in 0..n {
        line.clear();
        write_flow_keys(&mut line, i, Some(KEYS));
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
    }
    let mut file = std::fs::File::create(path).expect("create input file");
    file.write_all(&data).expect("write input file");
    data.len() as u64
}

fn config(state: &Path, input: &Path, output: &Path, rhai: bool) -> Config {
    let q = |p: &Path| serde_json::to_string(p.to_str().expect("UTF-8 path")).expect("string");
    let (state, input, output) = (q(state), q(input), q(output));
    let where_ = if rhai {
        r#"    where: 'event.num_connections >= 1 && event.service.port != 1 && event.src.ip != "192.0.2.1"'"#
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
      src.ip: 192.0.2.0/24
{where_}
  burst:
    type: window_count
    inputs: [keep]
    window: 10m
    threshold: 300
    sum: num_connections
    group_by: [src.ip]
  talkers:
    type: top_n
    inputs: [keep, burst]
    by: [dst.ip, service.port]
    sum: num_connections
    within: [src.ip]
    n: 5
sinks:
  out: {{type: file, path: {output}, append: false, inputs: [talkers]}}
"#
    );
    let loaded = load_sources(
        &[(PathBuf::from("bench.yaml"), yaml)],
        &LoadOptions {
            env: Env::Map(Default::default()),
        },
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.config.expect("a valid configuration")
}

fn run_once(rt: &tokio::runtime::Runtime, config: &Config) -> (u64, u64) {
    let report = rt.block_on(async {
        let topology = runtime::start(config, Arc::new(WallClock)).expect("start");
        topology.wait().await
    });
    assert!(!report.failed(), "{:?}", report.nodes);
    let keep = report.node("bench.keep").expect("filter").events_out;
    let alerts = report.node("bench.out").expect("sink").events_out;
    (keep, alerts)
}

fn detection(c: &mut Criterion) {
    let n = records();
    let dir = tempfile::TempDir::new().expect("temp dir");
    let input = dir.path().join("flows.jsonl");
    let bytes = generate(&input, n);
    eprintln!(
        "detection bench: {n} records, {KEYS} source addresses, {bytes} bytes ({:.0} per line)",
        bytes as f64 / n as f64
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut group = c.benchmark_group("detection");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(40))
        .throughput(Throughput::Elements(n));
    let configs: Vec<(&str, Config)> = [
        ("filter_window_count_top_n", false),
        ("rhai_where_window_count_top_n", true),
    ]
    .into_iter()
    .map(|(name, rhai)| {
        let state = dir.path().join(format!("state-{name}"));
        let output = dir.path().join(format!("out-{name}.jsonl"));
        (name, config(&state, &input, &output, rhai))
    })
    .collect();
    // One measured run of each first, for memory: the peak resident set of that run alone.
    for (name, cfg) in &configs {
        common::reset_peak();
        let before = common::peak_mib();
        let t = Instant::now();
        let (kept, alerts) = run_once(&rt, cfg);
        let took = t.elapsed();
        let peak = common::peak_mib();
        eprintln!(
            "detection bench {name}: one run {:.2} s ({:.0} events/s), {kept} events kept, {alerts} alerts, peak RSS {:.0} MiB (before the run {:.0} MiB)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            peak,
            before
        );
        assert_eq!(kept, n, "the filter keeps every record");
        // Threshold 300 over 10 minutes is crossed only with the full million records.
        assert!(
            alerts > 0 || n < DEFAULT_RECORDS,
            "some keys cross the threshold"
        );
    }
    for (name, cfg) in &configs {
        group.bench_function(*name, |b| b.iter(|| black_box(run_once(&rt, cfg))));
    }
    group.finish();
}

criterion_group!(benches, detection);
criterion_main!(benches);
