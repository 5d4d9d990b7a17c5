//! Time and peak memory to fetch and parse one 200,000-flow traffic download.
//!
//! The PCE simulator runs as its own process (`vigil pce-sim`), so this process's memory is
//! the client's alone. Steps, each timed, with the peak resident set (VmHWM, reset between
//! steps) after each:
//! 1. the streaming client path: create the async query, poll it, download it, then read
//!    the flows one at a time (`traffic_download` + `records`), as a source hands them on
//!    (includes the simulator's fixed ~2 s "queued" time);
//! 2. the collecting client path (`traffic_query`: every flow parsed into one `Vec`);
//! 3. the download alone (HTTP GET of the result);
//! 4. parsing that body into flow records.
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

fn main() {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
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
        .stderr(Stdio::null())
        .spawn()
        .expect("the simulator starts");
    let mut first = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the simulator prints its URL");
    let url = first.trim().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cfg = PceConnectionConfig::new(url.clone(), Secret::new(KEY), Secret::new(SECRET));
        cfg.poll_interval_initial = CfgDuration::from_millis(100);
        cfg.poll_interval_max = CfgDuration::from_millis(250);
        let clock: SharedClock = Arc::new(WallClock);
        let client = PceClient::new(&cfg, clock).expect("client");
        let end = chrono::Utc::now();
        let query = TrafficQuery::new("bench", end - chrono::Duration::days(7), end, 200_000);

        println!("baseline RSS {:.0} MiB", rss_mib());
        reset_peak();
        let started = Instant::now();
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
            "client.traffic_download + records: {count} flows ({:.1} MB) in {:.2} s (download ready after {:.2} s, incl. the simulator's queue time), peak RSS {:.0} MiB",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            fetched.as_secs_f64(),
            peak_mib()
        );
        drop(download);

        reset_peak();
        let started = Instant::now();
        let result = client.traffic_query(&query).await.expect("traffic query");
        let whole = started.elapsed();
        println!(
            "client.traffic_query: {} flows (matches {}) in {:.2} s (incl. the simulator's queue time), peak RSS {:.0} MiB",
            result.flows.len(),
            result.matches_count,
            whole.as_secs_f64(),
            peak_mib()
        );
        let download = format!("{url}/api/v2{}/download", result.query_href);
        drop(result);

        reset_peak();
        let base = rss_mib();
        let http = reqwest::Client::new();
        let started = Instant::now();
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
            "fetch: {:.1} MB in {:.2} s, peak RSS {:.0} MiB ({:+.0} MiB)",
            body.len() as f64 / 1e6,
            fetch.as_secs_f64(),
            peak_mib(),
            peak_mib() - base
        );
        let started = Instant::now();
        let flows = parse_records_owned(body.to_vec()).expect("parse");
        drop(body);
        let parse = started.elapsed();
        println!(
            "parse: {} flows in {:.2} s ({:.0} k flows/s), peak RSS {:.0} MiB ({:+.0} MiB over the start of the fetch)",
            flows.len(),
            parse.as_secs_f64(),
            flows.len() as f64 / parse.as_secs_f64() / 1e3,
            peak_mib(),
            peak_mib() - base
        );
        println!(
            "fetch + parse: {:.2} s",
            (fetch + parse).as_secs_f64()
        );
    });
    let _ = sim.kill();
    let _ = sim.wait();
}
