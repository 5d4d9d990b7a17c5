//! Throughput of the engine's hot path: `file` source → `filter` stage → `file` sink, for
//! flow-shaped JSON records (Illumio PCE traffic flows, ~840 bytes a line with every field
//! of the shape filled), next to the bare `serde_json` parse rate of the same bytes.
//!
//! `VIGIL_BENCH_RECORDS` sets the number of records (default 1,000,000 under `cargo bench`);
//! `VIGIL_BENCH_RECORDS=20000 cargo bench --bench pipeline` is a quick smoke run.

#![allow(missing_docs)]
#![allow(clippy::print_stderr)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::config::{Config, Env, LoadOptions, load_sources};
use vigil::runtime::{self, WallClock};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_RECORDS: u64 = 1_000_000;
/// Without `--bench` (`cargo test --benches`), criterion runs each benchmark once as a
/// test: a small input keeps that quick.
const TEST_MODE_RECORDS: u64 = 10_000;

/// 2024-05-01T00:00:00Z.
const BASE_EPOCH: i64 = 1_714_521_600;

fn records() -> u64 {
    match std::env::var("VIGIL_BENCH_RECORDS") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .expect("VIGIL_BENCH_RECORDS must be a positive integer"),
        Err(_) if std::env::args().any(|a| a == "--bench") => DEFAULT_RECORDS,
        Err(_) => TEST_MODE_RECORDS,
    }
}

/// SplitMix64: a deterministic, well-mixed value per index.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pick<'a>(items: &[&'a str], h: u64) -> &'a str {
    items[(h % items.len() as u64) as usize]
}

fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .expect("in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const ROLES: &[&str] = &[
    "web", "api", "db", "cache", "queue", "batch", "proxy", "auth",
];
const APPS: &[&str] = &[
    "payments", "checkout", "crm", "erp", "billing", "identity", "hr", "shop",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "qa"];
const LOCS: &[&str] = &["fra", "iad", "aws-euw1", "az-wus2"];
const OS: &[&str] = &["linux", "linux", "linux", "windows"];
const MODES: &[&str] = &["visibility_only", "selective", "full", "idle"];
const PROCESSES: &[&str] = &[
    "nginx",
    "postgres",
    "java",
    "redis-server",
    "sshd",
    "httpd",
    "mysqld",
    "svchost.exe",
    "node",
    "envoy",
];
const PORTS: &[u16] = &[443, 5432, 8080, 6379, 22, 80, 3306, 3389, 9092, 8443];
const STATES: &[&str] = &["A", "C", "T", "S"];
const DIRECTIONS: &[&str] = &["outbound", "inbound"];

/// One flow record, one line, without its newline. Values vary by index; nothing is
/// random. The source address is always in 10.0.0.0/8, never in 192.0.2.0/24.
fn write_flow(out: &mut String, i: u64) {
    let h = mix(i);
    let h2 = mix(i ^ 0xdead_beef_cafe_f00d);
    let role_i = h % ROLES.len() as u64;
    let app_i = (h >> 8) % APPS.len() as u64;
    let env_i = (h >> 16) % ENVS.len() as u64;
    let loc_i = (h >> 24) % LOCS.len() as u64;
    let role = ROLES[role_i as usize];
    let app = APPS[app_i as usize];
    let env = ENVS[env_i as usize];
    let loc = LOCS[loc_i as usize];
    let host_n = (h >> 32) % 64;
    let name = format!("{app}-{role}-{host_n:02}");
    let hostname = format!("{name}.{loc}.corp");
    let src_ip = format!(
        "10.{}.{}.{}",
        (h >> 40) % 256,
        (h >> 48) % 256,
        1 + (h >> 56) % 254
    );
    let dst_ip = format!(
        "10.{}.{}.{}",
        h2 % 256,
        (h2 >> 8) % 256,
        1 + (h2 >> 16) % 254
    );
    let port_i = (h2 >> 24) % PORTS.len() as u64;
    let port = PORTS[port_i as usize];
    let process = PROCESSES[port_i as usize % PROCESSES.len()];
    let proto = if (h2 >> 28) % 10 == 0 { 17 } else { 6 };
    let decision = match (h2 >> 32) % 20 {
        0..=12 => "allowed",
        13..=16 => "potentially_blocked",
        17..=18 => "blocked",
        _ => "unknown",
    };
    let last = BASE_EPOCH + (i / 16) as i64;
    let first = last - ((h2 >> 40) % 3600) as i64;

    out.push_str("{\"src\":{\"ip\":\"");
    out.push_str(&src_ip);
    let _ = write!(
        out,
        "\",\"workload\":{{\"href\":\"/orgs/1/workloads/{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}\"",
        h as u32,
        (h >> 32) as u16,
        (h >> 48) & 0xfff,
        h2 & 0xfff,
        (h2 >> 16) & 0xffff_ffff_ffff
    );
    let _ = write!(
        out,
        ",\"name\":\"{name}\",\"hostname\":\"{hostname}\",\"labels\":[\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"role\",\"value\":\"{role}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"app\",\"value\":\"{app}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"env\",\"value\":\"{env}\"}},\
         {{\"href\":\"/orgs/1/labels/{}\",\"key\":\"loc\",\"value\":\"{loc}\"}}],",
        100 + role_i,
        200 + app_i,
        300 + env_i,
        400 + loc_i
    );
    let _ = write!(
        out,
        "\"managed\":{},\"os_type\":\"{}\",\"enforcement_mode\":\"{}\"}}}},",
        (h >> 20) % 8 != 0,
        pick(OS, h >> 36),
        pick(MODES, h >> 44)
    );
    out.push_str("\"dst\":{\"ip\":\"");
    out.push_str(&dst_ip);
    out.push('"');
    if (h2 >> 36) % 2 == 0 {
        let dst_role = pick(ROLES, h2 >> 4);
        let dst_app = pick(APPS, h2 >> 12);
        let _ = write!(
            out,
            ",\"fqdn\":\"{dst_app}-{dst_role}-{:02}.{loc}.corp\"",
            (h2 >> 20) % 64
        );
    }
    let _ = write!(
        out,
        "}},\"service\":{{\"port\":{port},\"proto\":{proto},\"process_name\":\"{process}\"}},\
         \"num_connections\":{},\"state\":\"{}\",\
         \"timestamp_range\":{{\"first_detected\":\"{}\",\"last_detected\":\"{}\"}},\
         \"policy_decision\":\"{decision}\",\"flow_direction\":\"{}\",\
         \"dst_bi\":{},\"dst_bo\":{},\"timestamp\":\"{}\"}}",
        1 + (h2 >> 44) % 50,
        pick(STATES, h >> 52),
        rfc3339(first),
        rfc3339(last),
        pick(DIRECTIONS, h2 >> 58),
        (h2 >> 8) % 2_000_000,
        (h >> 8) % 5_000_000,
        rfc3339(last),
    );
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

fn yaml_str(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("UTF-8 temp path")).expect("string")
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
    let loaded = load_sources(
        &[(PathBuf::from("bench.yaml"), yaml)],
        &LoadOptions {
            env: Env::Map(Default::default()),
        },
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.config.expect("a valid configuration")
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
