//! The `new_term` stage at 100,000 keys: new destinations per source (`field: dst.ip`,
//! `group_by: [src.ip]`, `learn: 1h`, `forget_after: 30d`) over flow lines, in this
//! process (the stage as the engine runs it: each line parsed into the engine's tape,
//! then handed to the stage).
//!
//! The events cover two hours, round after round over 100,000 source addresses; each
//! source talks to four destinations of its own, again and again — except one source in
//! 1,000, which reaches a destination never seen before with every event. The first hour
//! is the learn period: what is new in the second alerts (1 event in 1,000 there).
//!
//! It reports events a second through parse and stage, the same lines parsed alone, and
//! what the stage alone takes from that (its own rate); the peak resident memory during
//! the run (VmHWM, reset before) and the memory held at the end, less what the process
//! held before; the keys and values held; the alerts against the number expected; the
//! size and time of a snapshot of the state. Then it writes the first hour's lines to a
//! file, warms a fresh stage (`learn: 0s`) up from it, reports records a second, and
//! checks that the second hour then makes the same alerts.
//!
//! `cargo bench --bench new_term` (`VIGIL_BENCH_RECORDS` sets the number of events,
//! default 1,000,000). Under `cargo test --benches` it runs 20,000 events (2,000 keys)
//! once, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vigil::event::{Event, Tape, Timestamp};
use vigil::node::Stage;
use vigil::stages::alerting::AlertTemplates;
use vigil::stages::new_term::{NewTermConfig, NewTermStage};

/// The same allocator as the `vigil` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

/// Source addresses at full size.
const KEYS: u64 = 100_000;
/// Milliseconds the events cover (the learn period is the first half).
const SPAN_MS: u64 = 7_200_000;
/// One source in this many reaches a new destination with every event.
const NEW_EVERY: u64 = 1_000;

/// Whether the events of key `key` bring new destinations.
fn roams(key: u64) -> bool {
    key % NEW_EVERY == NEW_EVERY - 1
}

fn base() -> Timestamp {
    Timestamp::from_timestamp(1_767_225_600, 0).expect("a time")
}

fn addr(prefix: u8, n: u64) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// Event `i` of `n` over `keys` keys: its line and its time.
fn line(out: &mut String, i: u64, n: u64, keys: u64) -> Timestamp {
    out.clear();
    let key = i % keys;
    let round = i / keys;
    let dst = if roams(key) {
        addr(11, i)
    } else {
        addr(12, key * 4 + round % 4)
    };
    let t = base() + chrono::Duration::milliseconds((i * SPAN_MS / n) as i64);
    let _ = write!(
        out,
        "{{\"timestamp\":\"{}\",\"src\":{{\"ip\":\"{}\"}},\"dst\":{{\"ip\":\"{dst}\"}},\"service\":{{\"port\":443,\"proto\":6}},\"policy_decision\":\"allowed\",\"num_connections\":1}}",
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        addr(10, key),
    );
    t
}

fn event(text: &str, t: Timestamp) -> Arc<Event> {
    let tape = Tape::parse(bytes::Bytes::copy_from_slice(text.as_bytes())).expect("a record");
    Arc::new(Event::from_tape(tape, "bench.flows".into(), t))
}

fn stage(learn: &str) -> NewTermStage {
    let cfg: NewTermConfig = serde_json::from_value(json!({
        "inputs": ["flows"],
        "field": "dst.ip",
        "group_by": ["src.ip"],
        "learn": learn,
        "forget_after": "30d",
    }))
    .expect("a config");
    let templates: AlertTemplates = cfg.alert_templates("bench", "new").expect("templates");
    NewTermStage::new(&cfg, templates)
        .expect("a stage")
        .with_hash_key(1, 2)
}

/// Feeds events `from..to` of `n`; the alerts made.
fn feed(s: &mut NewTermStage, from: u64, to: u64, n: u64, keys: u64) -> usize {
    let mut text = String::new();
    let mut out = Vec::new();
    let mut alerts = 0;
    for i in from..to {
        let t = line(&mut text, i, n, keys);
        s.process(event(&text, t), &mut out);
        alerts += out.iter().filter(|e| e.alert().is_some()).count();
        out.clear();
    }
    alerts
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("new_term: bench");
        return;
    }
    let n = common::records(1_000_000, 20_000);
    let keys = (n / 10).clamp(1, KEYS);
    let half = n.div_ceil(2);
    let expected = (half..n).filter(|i| roams(i % keys)).count();
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
    let mut s = stage("1h");
    let started = Instant::now();
    let alerts = feed(&mut s, 0, n, n, keys);
    let total_s = started.elapsed().as_secs_f64();
    let peak = common::peak_mib();
    let after = common::rss_mib();

    let stage_s = (total_s - parse_s).max(f64::EPSILON);
    eprintln!(
        "new_term, {n} events over {keys} keys (field dst.ip, group_by src.ip, learn 1h of 2h, 1 source in {NEW_EVERY} roaming to new values):"
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
    eprintln!(
        "  keys held: {}; values held: {} ({:.0} bytes a value with its key's share); alerts: {alerts} (expected {expected})",
        s.keys(),
        s.values(),
        (after - before) * 1_048_576.0 / s.values().max(1) as f64
    );
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
    assert_eq!(s.keys() as u64, keys);
    assert_eq!(alerts, expected, "one alert per value new after learning");
    drop(snapshot);
    drop(s);

    // The first hour as a warm-up file, then the second hour live.
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("history.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("created"));
        for i in 0..half {
            line(&mut text, i, n, keys);
            writeln!(file, "{text}").expect("written");
        }
        file.flush().expect("flushed");
    }
    let mut warm = stage("0s");
    let mut rejected = vigil::store::rejected::RejectedLog::new(dir.path(), "bench.new", 1 << 20);
    let started = Instant::now();
    let summary = warm
        .warm_up(&path, None, base(), &mut rejected)
        .expect("the warm-up file reads");
    let warm_s = started.elapsed().as_secs_f64();
    eprintln!(
        "  warm-up: {} records in {:.2} s ({:.0} records/s), {} values learned",
        summary.records,
        warm_s,
        summary.records as f64 / warm_s.max(f64::EPSILON),
        summary.learned
    );
    assert_eq!(summary.records, half);
    assert_eq!(summary.malformed, 0);
    let warm_alerts = feed(&mut warm, half, n, n, keys);
    assert_eq!(
        warm_alerts, expected,
        "warmed up from the first hour, the second makes the alerts learning it made"
    );
}
