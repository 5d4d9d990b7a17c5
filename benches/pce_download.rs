//! Time, CPU and peak memory to fetch and parse one 200,000-flow traffic download.
//!
//! The PCE simulator runs as its own process (`vigil pce-sim`), so this process's memory
//! and CPU are the client's alone. Everything runs twice, each time in a fresh process:
//! with plain downloads, then with gzip-compressed ones (`pce-sim --gzip-downloads`). Steps, each timed, with the CPU
//! seconds this process spent (user + system, every thread) and the peak resident set
//! (VmHWM, reset between steps) after each:
//! 1. the streaming client path the `pce_traffic` sources use (`traffic_stream`: the body
//!    is inflated and parsed as it arrives, one flow at a time);
//! 2. the whole-body client path: create the async query, poll it, download it, then read
//!    the flows one at a time (`traffic_download` + `records`), as a source hands them on
//!    (includes the simulator's fixed ~2 s "queued" time);
//! 3. the collecting client path (`traffic_query`: every flow parsed into one `Vec`);
//! 4. the download alone (HTTP GET of the result);
//! 5. parsing (and inflating) that body into flow records.
//!
//! `cargo bench --bench pce_download`

#![allow(missing_docs)]
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use vigil::config::Duration as CfgDuration;
use vigil::pce::client::{
    PceClient, PceConnectionConfig, Secret, TrafficQuery, parse_records_owned,
};
use vigil::runtime::{SharedClock, WallClock};

/// The same allocator as the `vigil` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "api_bench";
const SECRET: &str = "bench-secret";

mod common;
use common::{peak_mib, reset_peak, rss_mib};

/// CPU seconds this process has spent (user + system, every thread).
fn cpu() -> f64 {
    common::child::usage(std::process::id()).cpu
}

/// `vigil pce-sim` on a free port (gzip downloads when `gzip`); returns it and its URL.
fn start_sim(gzip: bool) -> (std::process::Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args([
        "pce-sim",
        "--listen",
        "127.0.0.1:0",
        "--scenario",
        "quiet",
        "--seed",
        "3",
    ])
    .args(["--api-key", KEY, "--api-secret", SECRET])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if gzip {
        cmd.arg("--gzip-downloads");
    }
    let mut sim = cmd.spawn().expect("the simulator starts");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the simulator prints its URL");
    (sim, first.trim().to_string())
}

/// Set (to `plain` or `gzip`) in the process that measures one kind of download.
const MODE: &str = "VIGIL_BENCH_PCE_DOWNLOADS";

fn main() {
    // Each kind of download is measured in a process of its own, so that one's memory
    // (the allocator keeps what it freed) does not hide the other's peak.
    let Ok(mode) = std::env::var(MODE) else {
        for mode in ["plain", "gzip"] {
            let status = Command::new(std::env::current_exe().expect("this bench"))
                .args(std::env::args_os().skip(1))
                .env(MODE, mode)
                .status()
                .expect("the bench runs");
            assert!(status.success(), "{mode}: {status}");
        }
        return;
    };
    let gzip = mode == "gzip";
    let (mut sim, url) = start_sim(gzip);
    println!(
        "--- {} downloads",
        if gzip { "gzip-compressed" } else { "plain" }
    );
    measure(&url);
    let _ = sim.kill();
    let _ = sim.wait();
}

/// The steps of the module documentation against the simulator at `url`.
fn measure(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cfg = PceConnectionConfig::new(url.to_string(), Secret::new(KEY), Secret::new(SECRET));
        cfg.insecure_http = true; // the simulator serves plain HTTP
        cfg.poll_interval_initial = CfgDuration::from_millis(100);
        cfg.poll_interval_max = CfgDuration::from_millis(250);
        let clock: SharedClock = Arc::new(WallClock);
        let client = PceClient::new(&cfg, clock).expect("client");
        let end = chrono::Utc::now();
        let query = TrafficQuery::new("bench", end - chrono::Duration::days(7), end, 200_000);

        println!("baseline RSS {:.0} MiB", rss_mib());
        reset_peak();
        let from = rss_mib();
        let (started, cpu0) = (Instant::now(), cpu());
        let mut stream = client.traffic_stream(&query).await.expect("traffic stream");
        let opened = started.elapsed();
        let (mut count, mut bytes) = (0u64, 0usize);
        while let Some(tape) = stream.next().await.expect("a flow") {
            count += 1;
            bytes += tape.raw().len();
        }
        drop(stream);
        println!(
            "client.traffic_stream: {count} flows ({:.1} MB) in {:.2} s (download started after {:.2} s, incl. the simulator's queue time), CPU {:.2} s, peak RSS {:.0} MiB (from {:.0} MiB)",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            opened.as_secs_f64(),
            cpu() - cpu0,
            peak_mib(),
            from
        );

        reset_peak();
        let from = rss_mib();
        let (started, cpu0) = (Instant::now(), cpu());
        let download = client.traffic_download(&query).await.expect("traffic download");
        let fetched = started.elapsed();
        let mut count = 0u64;
        let mut bytes = 0usize;
        for record in download.records() {
            let (flow, raw) = record.expect("a flow");
            count += u64::from(flow.is_object());
            bytes += raw.len();
        }
        println!(
            "client.traffic_download + records: {count} flows ({:.1} MB) in {:.2} s (download ready after {:.2} s, incl. the simulator's queue time), CPU {:.2} s, peak RSS {:.0} MiB (from {:.0} MiB)",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            fetched.as_secs_f64(),
            cpu() - cpu0,
            peak_mib(),
            from
        );
        drop(download);

        reset_peak();
        let from = rss_mib();
        let (started, cpu0) = (Instant::now(), cpu());
        let result = client.traffic_query(&query).await.expect("traffic query");
        let whole = started.elapsed();
        println!(
            "client.traffic_query: {} flows (matches {}) in {:.2} s (incl. the simulator's queue time), CPU {:.2} s, peak RSS {:.0} MiB (from {:.0} MiB)",
            result.flows.len(),
            result.matches_count,
            whole.as_secs_f64(),
            cpu() - cpu0,
            peak_mib(),
            from
        );
        let download = format!("{url}/api/v2{}/download", result.query_href);
        drop(result);

        reset_peak();
        let base = rss_mib();
        let http = reqwest::Client::new();
        let (started, cpu0) = (Instant::now(), cpu());
        let body = http
            .get(&download)
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("download")
            .bytes()
            .await
            .expect("body");
        let fetch = started.elapsed();
        println!(
            "fetch: {:.1} MB in {:.2} s, CPU {:.2} s, peak RSS {:.0} MiB ({:+.0} MiB)",
            body.len() as f64 / 1e6,
            fetch.as_secs_f64(),
            cpu() - cpu0,
            peak_mib(),
            peak_mib() - base
        );
        let (started, cpu0) = (Instant::now(), cpu());
        let flows = parse_records_owned(body.to_vec()).expect("parse");
        drop(body);
        let parse = started.elapsed();
        println!(
            "parse: {} flows in {:.2} s ({:.0} k flows/s), CPU {:.2} s, peak RSS {:.0} MiB ({:+.0} MiB over the start of the fetch)",
            flows.len(),
            parse.as_secs_f64(),
            flows.len() as f64 / parse.as_secs_f64() / 1e3,
            cpu() - cpu0,
            peak_mib(),
            peak_mib() - base
        );
        println!(
            "fetch + parse: {:.2} s",
            (fetch + parse).as_secs_f64()
        );
    });
}
