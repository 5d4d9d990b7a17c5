//! Syslog messages over TCP on loopback: `syslog` source (octet counting) → `file` sink,
//! over one connection and over 16, the senders being threads of this process.
//!
//! For each it reports messages a second (wall, from the first byte sent to the last
//! event written), the CPU seconds the process spent (senders included) and its peak
//! resident memory during the run (VmHWM, reset before each). `VIGIL_BENCH_RECORDS` sets
//! the number of messages (default 1,000,000 under `cargo bench`; 10,000 under
//! `cargo test --benches`); `VIGIL_SYSLOG_BENCH_DECODE` the decoder (`raw`, `json`,
//! `pce`; default `json`).

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil::config::Config;
use vigil::runtime::{self, WallClock};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use common::yaml_str;

/// Messages in the block each sender writes over and over.
const BLOCK: u64 = 1000;

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn config(state: &Path, output: &Path, port: u16, decode: &str) -> Config {
    let (state, output) = (yaml_str(state), yaml_str(output));
    let yaml = format!(
        r#"
kind: settings
state_dir: {state}
keep_state: false
---
kind: pipeline
name: bench
sources:
  in: {{type: syslog, mode: tcp, address: "127.0.0.1:{port}", framing: octet_counting, decode: {decode}}}
sinks:
  out: {{type: file, path: {output}, append: false, inputs: [in]}}
"#
    );
    common::load(yaml)
}

/// One message as the PCE sends an audit event (the JSON body alone for `json`; with
/// the PCE's `sec=… sev=…` prefix otherwise), octet-counted.
fn message(i: u64, decode: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"href":"/orgs/1/events/{i:08x}-37ef-4356-9bb1-008b5b00a003","timestamp":"2026-06-04T15:24:48.080Z","pce_fqdn":"pce.example.com","created_by":{{"user":{{"href":"/users/2","username":"abc@example.com"}}}},"event_type":"user.sign_in","status":"success","severity":"info","action":{{"api_endpoint":"/login/users/sign_in","api_method":"POST","http_status_code":302,"src_ip":"10.1.{}.{}"}},"resource_changes":[],"notifications":[],"version":2}}"#,
        (i / 256) % 256,
        i % 256
    );
    let payload = if decode == "json" {
        body
    } else {
        format!("sec=661888.107 sev=INFO pid=32277 tid=38674900 rid=48f4eb55 {body}")
    };
    let msg = format!(
        "<14>1 2026-06-04T15:24:48.000000+00:00 core0 illumio_pce/login 21077 - [meta sequenceId=\"{i}\"] {payload}"
    );
    format!("{} {msg}", msg.len()).into_bytes()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends `n` messages over `connections`, waits until the sink wrote them; (wall seconds,
/// CPU seconds, peak RSS in MiB).
fn run(dir: &Path, n: u64, connections: u64, decode: &str) -> (u64, f64, f64, f64) {
    let port = free_port();
    let state = dir.join(format!("state-{connections}"));
    let output = dir.join(format!("out-{connections}.jsonl"));
    let cfg = config(&state, &output, port, decode);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let block: Arc<Vec<u8>> = Arc::new((0..BLOCK).flat_map(|i| message(i, decode)).collect());
    rt.block_on(async {
        let topology = runtime::start(&cfg, Arc::new(WallClock)).expect("start");
        let out = topology
            .counters()
            .into_iter()
            .find(|(id, _)| id == "bench.out")
            .map(|(_, c)| c)
            .expect("the sink's counters");
        let listening = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                listening.elapsed() < Duration::from_secs(10),
                "not listening"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        common::reset_peak();
        let cpu = cpu_seconds();
        let started = Instant::now();
        // Whole blocks per connection.
        let per = (n / connections / BLOCK).max(1) * BLOCK;
        let senders: Vec<_> = (0..connections)
            .map(|_| {
                let block = block.clone();
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    for _ in 0..per / BLOCK {
                        s.write_all(&block).expect("send");
                    }
                })
            })
            .collect();
        let total = per * connections;
        while out.get().1 < total {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "only {} of {total} written",
                out.get().1
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let peak = common::peak_mib();
        for s in senders {
            s.join().expect("sender");
        }
        topology.shutdown();
        let report = topology.wait().await;
        assert!(!report.failed(), "{:?}", report.nodes);
        (total, wall, cpu, peak)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("syslog: bench");
        return;
    }
    let n = common::records(1_000_000, 10_000);
    let decode = std::env::var("VIGIL_SYSLOG_BENCH_DECODE").unwrap_or_else(|_| "json".into());
    let dir = tempfile::TempDir::new().expect("temp dir");
    eprintln!(
        "syslog bench: {n} messages of {} bytes, decode: {decode}; {} cores",
        message(0, &decode).len(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    for connections in [1, 16] {
        let (sent, wall, cpu, peak) = run(dir.path(), n, connections, &decode);
        eprintln!(
            "  {connections:>2} connection(s), {sent} messages: {:>10.0} msgs/s  ({wall:.2} s wall, {cpu:.2} s CPU, peak RSS {peak:.0} MiB)",
            sent as f64 / wall
        );
    }
}
