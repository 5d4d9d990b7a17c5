//! The `distinct_count` stage at 100,000 keys: a port scan rule (`field: service.port`,
//! `group_by: [src.ip]`, window 15m, threshold 25, `exact_up_to` at its default 10,000)
//! over flow lines, in this process (the stage as the engine runs it: each line parsed
//! into the engine's tape, then handed to the stage).
//!
//! Nine events in ten spread over 100,000 source addresses, round after round (a few
//! ports each, repeats included: none reaches the threshold); every tenth goes to one of
//! 5 scanners, each with a new port — 20,000 distinct ports a scanner at 1,000,000
//! events, so they pass `exact_up_to` and are estimated, and each fires once. Event times
//! cover 10 minutes, so no key expires: every key is held at the end.
//!
//! It reports events a second through parse and stage, the same lines parsed alone, and
//! what the stage alone takes from that (its own rate); the peak resident memory during
//! the run (VmHWM, reset before) and the memory held at the end, less what the process
//! held before; the keys held; each scanner's count against the truth; and the size and
//! time of a snapshot of the state.
//!
//! `cargo bench --bench distinct` (`VIGIL_BENCH_RECORDS` sets the number of events,
//! default 1,000,000). Under `cargo test --benches` it runs 20,000 events (2,000 keys)
//! once, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vigil::event::{Event, Tape, Timestamp};
use vigil::node::Stage;
use vigil::stages::distinct_count::{DistinctCountConfig, DistinctCountStage};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

/// Source addresses at full size.
const KEYS: u64 = 100_000;
/// Scanners.
const SCANNERS: u64 = 5;
/// Milliseconds the events cover (the window is 15 minutes).
const SPAN_MS: u64 = 600_000;

fn base() -> Timestamp {
    Timestamp::from_timestamp(1_767_225_600, 0).expect("a time")
}

/// Event `i` of `n` over `keys` keys: its line and its time.
fn line(out: &mut String, i: u64, n: u64, keys: u64) -> Timestamp {
    out.clear();
    let (src, port) = if i % 10 == 9 {
        let s = i / 10;
        // Each scanner its own ports (numbers past 65535 stand for more of them).
        (
            format!("192.0.2.{}", s % SCANNERS),
            s / SCANNERS + (s % SCANNERS) * 1_000_000,
        )
    } else {
        let m = i - i / 10;
        let key = m % keys;
        let round = m / keys;
        (
            format!(
                "10.{}.{}.{}",
                (key >> 16) & 0xff,
                (key >> 8) & 0xff,
                key & 0xff
            ),
            (key * 7 + (round % 4) * 13) % 200,
        )
    };
    let _ = write!(
        out,
        "{{\"src\":{{\"ip\":\"{src}\"}},\"dst\":{{\"ip\":\"10.200.0.1\"}},\"service\":{{\"port\":{port},\"proto\":6}},\"policy_decision\":\"blocked\",\"num_connections\":1}}"
    );
    base() + chrono::Duration::milliseconds((i * SPAN_MS / n) as i64)
}

fn event(text: &str, t: Timestamp) -> Arc<Event> {
    let tape = Tape::parse(bytes::Bytes::copy_from_slice(text.as_bytes())).expect("a record");
    Arc::new(Event::from_tape(tape, "bench.flows".into(), t))
}

fn stage() -> DistinctCountStage {
    let cfg: DistinctCountConfig = serde_json::from_value(json!({
        "inputs": ["flows"],
        "field": "service.port",
        "group_by": ["src.ip"],
        "window": "15m",
        "threshold": 25,
        "max_keys": 1_000_000,
    }))
    .expect("a config");
    let templates = cfg.alert_templates("bench", "scan").expect("templates");
    DistinctCountStage::new(&cfg, templates, chrono::Duration::minutes(1))
        .expect("a stage")
        .with_hash_key(1, 2)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("distinct: bench");
        return;
    }
    let n = common::records(1_000_000, 20_000);
    let keys = (n / 10).clamp(1, KEYS);
    let mut text = String::new();

    // The lines parsed alone: what the stage's rate is measured against.
    let started = Instant::now();
    let mut held = 0usize;
    for i in 0..n {
        let t = line(&mut text, i, n, keys);
        held += usize::from(event(&text, t).meta.time == t);
    }
    let parse_s = started.elapsed().as_secs_f64();
    assert_eq!(held as u64, n);

    let before = common::rss_mib();
    common::reset_peak();
    let mut s = stage();
    let mut out = Vec::new();
    let mut alerts = 0usize;
    let started = Instant::now();
    for i in 0..n {
        let t = line(&mut text, i, n, keys);
        s.process(event(&text, t), &mut out);
        alerts += out.iter().filter(|e| e.alert().is_some()).count();
        out.clear();
    }
    let total_s = started.elapsed().as_secs_f64();
    let peak = common::peak_mib();
    let after = common::rss_mib();

    let stage_s = (total_s - parse_s).max(f64::EPSILON);
    eprintln!(
        "distinct_count, {n} events over {keys} keys + {SCANNERS} scanners (window 15m, threshold 25, exact_up_to 10000):"
    );
    eprintln!(
        "  parse + stage: {:.0} events/s; parse alone: {:.0} events/s; the stage alone: {:.0} events/s",
        n as f64 / total_s,
        n as f64 / parse_s,
        n as f64 / stage_s
    );
    eprintln!(
        "  memory: peak {peak:.1} MiB during the run, {after:.1} MiB at the end ({:.1} MiB held by the stage; {before:.1} MiB before)",
        after - before
    );
    eprintln!("  keys held: {}; alerts: {alerts}", s.keys());
    let per_scanner = (n / 10) / SCANNERS;
    for sc in 0..SCANNERS {
        let key = format!("src.ip=192.0.2.{sc}");
        let (count, estimated) = s.count_of(&key).expect("the scanner is held");
        let truth = per_scanner + u64::from(sc < (n / 10) % SCANNERS);
        let err = (count as f64 - truth as f64) / truth as f64 * 100.0;
        eprintln!(
            "  scanner {sc}: {count} distinct ports ({}), truth {truth} ({err:+.2}%)",
            if estimated { "estimated" } else { "exact" }
        );
        assert!(err.abs() < 5.0, "scanner {sc}: {count} for {truth}");
    }
    let started = Instant::now();
    let snapshot = s
        .snapshot(u64::MAX)
        .and_then(vigil::node::Snapshot::into_text)
        .expect("a snapshot");
    eprintln!(
        "  snapshot: {:.1} MiB of JSON in {:.0} ms",
        snapshot.len() as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(s.keys() as u64, keys + SCANNERS.min(n / 10));
    assert_eq!(alerts as u64, SCANNERS, "each scanner fires once");
}
