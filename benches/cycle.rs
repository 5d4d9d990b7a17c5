//! One PCE traffic cycle as a user runs it: `vigil run` (its own process) against the PCE
//! simulator (another process) serving one 12-minute slice of ~200,000 flows, through the
//! traffic pack of `benches/traffic-pack/` — 5 rules (K = 0) and 25 rules (K = 20) —
//! mailing to a loopback SMTP server. Thresholds fire for about 5% of the keys.
//!
//! For each K it reports what the issue asks for: alerts raised inside the graph (episodes
//! opened, update reports, resolutions, and in-place updates that made no alert), the
//! distinct keys that crossed, history rows written and the database's size, mails sent,
//! and the vigil process's CPU seconds (user + system, from `/proc/<pid>/stat`, taken
//! when the cycle is done) and peak RSS (`VmHWM`). Numbers go to stderr and to
//! `target/bench-cycle.json`.
//!
//! Each K runs twice: `quiet` (every threshold a million times higher: nothing fires, the
//! cost of reading and evaluating) and `firing` (the pack as it is). The simulator serves
//! the download gzip-compressed, as real PCEs may (`VIGIL_BENCH_GZIP=0`: plain).
//!
//! `cargo bench --bench cycle` (release build); `VIGIL_BENCH_BIN=<path>` measures another
//! vigil build against the same simulator. Under `cargo test --benches` it runs a
//! small slice (500 flows a minute) once, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::child::{Proc, Usage, bench_mode, get, metric, usage, vigil_bin, web_address};

const PACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/traffic-pack");
const DEADLINE: Duration = Duration::from_secs(900);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

/// Flows a minute: ~200,000 rows in a 12-minute slice (see `vigil pce-sim --help`).
fn flows_per_minute() -> u32 {
    match std::env::var("VIGIL_BENCH_FLOWS_PER_MINUTE") {
        Ok(v) => v.trim().parse().expect("a number of flows a minute"),
        Err(_) if bench_mode() => 14_250,
        Err(_) => 500,
    }
}

/// Whether the simulator serves its traffic downloads gzip-compressed, as real PCEs may
/// (`VIGIL_BENCH_GZIP=0` turns it off; on by default).
fn gzip() -> bool {
    std::env::var("VIGIL_BENCH_GZIP").map_or(true, |v| v.trim() != "0")
}

/// `vigil pce-sim` on a free port; its URL.
fn start_sim() -> (Proc, String) {
    let mut child = Command::new(bin())
        .args(["pce-sim", "--listen", "127.0.0.1:0", "--flows-per-minute"])
        .arg(flows_per_minute().to_string())
        .args(gzip().then_some("--gzip-downloads"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pce-sim starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the simulator prints its URL");
    (Proc(child), first.trim().to_string())
}

/// The settings of one run: the simulator, the relay, a state directory.
fn settings(dir: &Path, sim: &str, smtp: std::net::SocketAddr) -> String {
    format!(
        "kind: settings\nstate_dir: {state}\nweb: {{ listen: 127.0.0.1:0 }}\nconnections:\n  pce:\n    pce:\n      url: {sim}\n      insecure_http: true\n      org: 1\n      api_key_file: {dir}/key\n      api_secret_file: {dir}/secret\n  smtp:\n    relay: {{ host: {host}, port: {port}, tls: none, from: vigil@example.com }}\n",
        state = dir.join("state").display(),
        dir = dir.display(),
        host = smtp.ip(),
        port = smtp.port(),
    )
}

#[derive(Debug, Default)]
struct Outcome {
    k: usize,
    rules: usize,
    rows: f64,
    cpu: f64,
    peak: f64,
    wall: f64,
    opened: u64,
    reported: u64,
    resolved: u64,
    updated: u64,
    keys_crossed: usize,
    history_rows: u64,
    db_mib: f64,
    mails: usize,
    messages_sent: u64,
}

/// The pack with every threshold a million times higher: nothing fires.
fn silence(pack: &str) -> String {
    pack.lines()
        .map(|l| match l.split_once("threshold: ") {
            Some((head, n)) if n.trim().parse::<u64>().is_ok() => {
                format!("{head}threshold: {n}000000")
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one cycle with the base pack and, for K = 20, the extra rules.
fn cycle(k: usize, quiet: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("temp");
    let pipes = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipes).expect("mkdir");
    let mails = dir.path().join("mail");
    std::fs::create_dir_all(&mails).expect("mkdir");
    let capture = vigil::demo::MailCapture::start(&mails).expect("the SMTP capture starts");
    let (_sim, sim) = start_sim();
    std::fs::write(dir.path().join("key"), "api_sim").expect("write");
    std::fs::write(dir.path().join("secret"), "sim-secret").expect("write");
    std::fs::write(
        pipes.join("settings.yaml"),
        settings(dir.path(), &sim, capture.addr),
    )
    .expect("write");
    let mut rules = 0;
    for (file, on) in [("base.yaml", true), ("extra.yaml", k > 0)] {
        if on {
            let mut text = std::fs::read_to_string(Path::new(PACK).join(file)).expect("the pack");
            if quiet {
                text = silence(&text);
            }
            rules += text.matches("kind: pipeline").count();
            std::fs::write(pipes.join(file), text).expect("write");
        }
    }
    let started = Instant::now();
    let mut child = Command::new(vigil_bin())
        .args(["--log-format", "json", "run", "--no-watch", "--pipelines"])
        .arg(&pipes)
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let vigil = Proc(child);
    let deadline = Instant::now() + DEADLINE;
    let base = web_address(stderr, deadline);
    // Done: the slice was queried and handed on, every node is still, and nothing waits
    // in the outbox.
    let mut last = (f64::NAN, f64::NAN);
    let mut still_since = Instant::now();
    let rows;
    loop {
        assert!(Instant::now() < deadline, "the cycle did not finish");
        std::thread::sleep(Duration::from_millis(250));
        let Some(scrape) = get(&format!("{base}/metrics")) else {
            continue;
        };
        let slices = metric(&scrape, "vigil_pce_traffic_slices_total", &[]);
        let moved = metric(&scrape, "vigil_node_events_in_total", &[]);
        let waiting = metric(&scrape, "vigil_outbox_messages", &["state=\"pending\""]);
        let now = (slices, moved);
        if now != last {
            last = now;
            still_since = Instant::now();
            continue;
        }
        if slices >= 1.0 && waiting == 0.0 && still_since.elapsed() > Duration::from_secs(3) {
            rows = metric(&scrape, "vigil_pce_traffic_rows_new_total", &[])
                + metric(&scrape, "vigil_pce_traffic_rows_continued_total", &[]);
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let Usage { cpu, peak, .. } = usage(pid);
    // Stop it (SIGTERM: stages save their state, which holds the episode counters).
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut vigil = vigil;
    let _ = vigil.0.wait();
    drop(vigil);

    let db = dir.path().join("state").join("vigil.db");
    let conn = rusqlite::Connection::open(&db).expect("the state database");
    let count = |sql: &str| -> u64 {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    };
    let mut out = Outcome {
        k,
        rules,
        rows,
        cpu,
        peak,
        wall,
        history_rows: count("SELECT COUNT(*) FROM alerts"),
        messages_sent: count("SELECT COUNT(*) FROM outbox WHERE state = 'sent'"),
        db_mib: std::fs::metadata(&db).map_or(0.0, |m| m.len() as f64 / 1_048_576.0)
            + std::fs::metadata(db.with_extension("db-wal"))
                .map_or(0.0, |m| m.len() as f64 / 1_048_576.0),
        mails: capture.count.load(std::sync::atomic::Ordering::SeqCst),
        keys_crossed: count(
            "SELECT COUNT(*) FROM (SELECT DISTINCT stage, pipeline, json_extract(alert, '$.group_key') FROM alerts)",
        ) as usize,
        ..Outcome::default()
    };
    let mut stmt = conn
        .prepare("SELECT CAST(value AS TEXT) FROM stage_state")
        .expect("stage_state");
    let states: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("rows")
        .filter_map(Result::ok)
        .collect();
    for s in states {
        let v: Value = serde_json::from_str(&s).unwrap_or_default();
        let e = &v["episodes"];
        let n = |k: &str| e[k].as_u64().unwrap_or(0);
        out.opened += n("opened");
        out.reported += n("reported");
        out.resolved += n("resolved");
        out.updated += n("updated");
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cycle: bench");
        return;
    }
    // `VIGIL_BENCH_MODES=quiet,firing` (the default) and `VIGIL_BENCH_K=0,20` choose runs.
    let list = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.to_string())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let ks: Vec<usize> = list("VIGIL_BENCH_K", "0,20")
        .iter()
        .map(|k| k.parse().expect("VIGIL_BENCH_K: numbers"))
        .collect();
    let mut results = Vec::new();
    for mode in list("VIGIL_BENCH_MODES", "quiet,firing") {
        let quiet = mode == "quiet";
        let mut cpus = Vec::new();
        for &k in &ks {
            let o = cycle(k, quiet);
            let internal = o.opened + o.reported + o.resolved;
            eprintln!(
                "cycle {mode} K={:2} ({} rules{}): {:.0} rows; CPU {:.2} s, peak RSS {:.0} MiB, wall {:.1} s; \
                 alerts inside the graph {} (opened {}, update reports {}, resolved {}; {} in-place updates made none) \
                 for {} keys that crossed; history rows {} ({:.1} MiB database); mails {} ({} messages sent)",
                o.k,
                o.rules,
                if gzip() { ", gzip" } else { "" },
                o.rows,
                o.cpu,
                o.peak,
                o.wall,
                internal,
                o.opened,
                o.reported,
                o.resolved,
                o.updated,
                o.keys_crossed,
                o.history_rows,
                o.db_mib,
                o.mails,
                o.messages_sent,
            );
            cpus.push(o.cpu);
            results.push(json!({
                "mode": mode, "k": o.k, "rules": o.rules, "gzip": gzip(), "rows": o.rows,
                "cpu_seconds": o.cpu, "peak_rss_mib": o.peak, "wall_seconds": o.wall,
                "alerts_inside_graph": internal, "opened": o.opened, "update_reports": o.reported,
                "resolved": o.resolved, "in_place_updates": o.updated,
                "keys_crossed": o.keys_crossed, "history_rows": o.history_rows, "db_mib": o.db_mib,
                "mails": o.mails, "messages_sent": o.messages_sent,
            }));
        }
        if let [a, .., b] = cpus.as_slice() {
            eprintln!(
                "{mode}: CPU at the last K / CPU at the first K: {:.2}",
                b / a
            );
        }
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(
        target.join("bench-cycle.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    );
}
