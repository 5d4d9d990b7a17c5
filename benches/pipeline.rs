//! Throughput of the engine's hot path: `file` source → `filter` stage → `file` sink, for
//! flow-shaped JSON records (Illumio PCE traffic flows, ~840 bytes a line with every field
//! of the shape filled), next to the bare `serde_json` parse rate of the same bytes.
//!
//! `VIGIL_BENCH_RECORDS` sets the number of records (default 1,000,000 under `cargo bench`);
//! `VIGIL_BENCH_RECORDS=20000 cargo bench --bench pipeline` is a quick smoke run.

#![allow(missing_docs)]
#![allow(clippy::print_stderr)]

use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::config::Config;
use vigil::runtime::{self, WallClock};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_RECORDS: u64 = 1_000_000;
/// Without `--bench` (`cargo test --benches`), criterion runs each benchmark once as a
/// test: a small input keeps that quick.
const TEST_MODE_RECORDS: u64 = 10_000;

mod common;
use common::flows::write_flow;
use common::yaml_str;

fn records() -> u64 {
    common::records(DEFAULT_RECORDS, TEST_MODE_RECORDS)
}

/// Writes `n` records to `path` and returns the bytes written (for the bare parse bench).
fn generate(path: &Path, n: u64) -> Vec<u8> {
    let mut data: Vec<u8> = Vec::with_capacity(n as usize * 720);
    let mut line = String::with_capacity(1024);
    for i in 0..n {
        line.clear();
        write_flow(&mut line, i);
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
    }
    let mut file = std::fs::File::create(path).expect("create input file");
    file.write_all(&data).expect("write input file");
    file.sync_all().expect("sync input file");
    data
}

fn load_config(state: &Path, input: &Path, output: &Path) -> Config {
    let (state, input, output) = (yaml_str(state), yaml_str(input), yaml_str(output));
    let yaml = format!(
        r#"
kind: settings
state_dir: {state}
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
sinks:
  out: {{type: file, path: {output}, append: false, inputs: [keep]}}
"#
    );
    common::load(yaml)
}

fn pipeline(c: &mut Criterion) {
    let n = records();
    assert!(n > 0, "VIGIL_BENCH_RECORDS must be positive");
    let dir = tempfile::TempDir::new().expect("temp dir");
    let input = dir.path().join("flows.jsonl");
    let output = dir.path().join("out.jsonl");
    let state = dir.path().join("state");

    let data = generate(&input, n);
    eprintln!(
        "pipeline bench: {n} records, {} bytes, average line {:.1} bytes (incl. newline)",
        data.len(),
        data.len() as f64 / n as f64
    );
    let lines: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len() as u64, n);

    let config = load_config(&state, &input, &output);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(5))
        .measurement_time(Duration::from_secs(35))
        .throughput(Throughput::Elements(n));

    group.bench_function("file_filter_file", |b| {
        b.iter(|| {
            let report = rt.block_on(async {
                let topology = runtime::start(&config, Arc::new(WallClock)).expect("start");
                topology.wait().await
            });
            assert!(!report.failed(), "{:?}", report.nodes);
            let written = report.node("bench.out").expect("sink report").events_out;
            assert_eq!(written, n, "the sink wrote every record");
            black_box(report)
        });
    });

    group.bench_function("serde_json_parse_value", |b| {
        b.iter(|| {
            for line in &lines {
                let parsed = serde_json::from_slice::<serde_json::Value>(black_box(line));
                black_box(parsed.expect("valid JSON"));
            }
        });
    });

    group.finish();

    let out_len = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    eprintln!("pipeline bench: last output file {out_len} bytes");
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
