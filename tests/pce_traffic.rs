//! The `pce_traffic` source in real graphs against the PCE simulator over HTTP, on a
//! virtual clock the test moves (`nudge_until` steps time safely, with a deadline).

mod common;

use common::{lines, nudge_until};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use vigil::pce::sim::{Faults, LoggedRequest, RunningSim, Scenario};
use vigil::runtime::{self, RunningTopology, VirtualClock};

const QUERIES: &str = "/api/v2/orgs/1/traffic_flows/async_queries";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

async fn sim(clock: &VirtualClock, faults: Faults) -> RunningSim {
    common::sim(Scenario::Quiet, 11, faults, Arc::new(clock.clone())).await
}

fn config(dir: &Path, sim: &RunningSim, pipelines: &str) -> vigil::config::Config {
    common::load(format!("{}{pipelines}", common::settings(dir, sim, "")))
}

/// One pipeline `t` reading the simulator's traffic into `out`, running on `clock`.
struct One {
    clock: VirtualClock,
    sim: RunningSim,
    dir: tempfile::TempDir,
    out: PathBuf,
    topology: RunningTopology,
}

async fn one_pipeline(faults: Faults) -> One {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, faults).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let topology = runtime::start(
        &config(dir.path(), &sim, &pipeline("t", "", &out)),
        Arc::new(clock.clone()),
    )
    .expect("starts");
    One {
        clock,
        sim,
        dir,
        out,
        topology,
    }
}

/// A pipeline `name` reading `lab` traffic with `options` into `out`.
fn pipeline(name: &str, options: &str, out: &Path) -> String {
    format!(
        "kind: pipeline\nname: {name}\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m{options}}}\nsinks:\n  out: {{type: file, path: {}, inputs: [flows]}}\n",
        out.display()
    )
}

/// A traffic query the simulator received: its slice and decisions.
#[derive(Debug, Clone, PartialEq)]
struct Slice {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    decisions: Vec<String>,
    at: DateTime<Utc>,
}

fn slices(log: &[LoggedRequest]) -> Vec<Slice> {
    log.iter()
        .filter(|r| r.method == "POST" && r.path == QUERIES)
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).expect("a JSON query body");
            let time = |k: &str| {
                DateTime::parse_from_rfc3339(body[k].as_str().expect("a date"))
                    .expect("RFC 3339")
                    .with_timezone(&Utc)
            };
            let mut decisions: Vec<String> = body["policy_decisions"]
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            decisions.sort();
            Slice {
                start: time("start_date"),
                end: time("end_date"),
                decisions,
                at: r.at,
            }
        })
        .collect()
}

/// Every download done (the last cycle's flows are out of the PCE).
fn downloads(sim: &RunningSim) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/download"))
        .count()
}

/// Moves the clock one interval and waits for the cycle's download.
async fn cycle(clock: &VirtualClock, sim: &RunningSim, n: usize) {
    let before = downloads(sim);
    if n > 0 {
        clock.advance(Duration::from_secs(300));
    }
    nudge_until(clock, &format!("cycle {n}"), || downloads(sim) > before).await;
}

/// Waits until the stored cursor has moved past the last slice the PCE answered: its flows
/// were handed to every pipeline. Nudges the clock a second at a time meanwhile (a query
/// still being polled needs time to move).
async fn quiesce(clock: &VirtualClock, sim: &RunningSim, dir: &Path) {
    let store = vigil::store::Store::open(&dir.join("state")).expect("state database");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = sim.request_log();
        let answered: Vec<Slice> = slices(&log)
            .into_iter()
            .zip(
                log.iter()
                    .filter(|r| r.method == "POST" && r.path == QUERIES)
                    .map(|r| r.status),
            )
            .filter(|(_, status)| *status < 300)
            .map(|(s, _)| s)
            .collect();
        let stored = store
            .checkpoint("pce_traffic:lab")
            .expect("readable")
            .and_then(|v| v["next_start"].as_str().map(str::to_string));
        let done = match (answered.last(), stored) {
            (None, _) => true,
            (Some(last), Some(cursor)) => {
                DateTime::parse_from_rfc3339(&cursor).expect("RFC 3339") >= last.end
            }
            (Some(_), None) => false,
        };
        if done && downloads(sim) >= answered.len() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the last slice was not handed on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.advance(Duration::from_secs(1));
    }
}

async fn stop(topology: RunningTopology) {
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
}

fn assert_contiguous(slices: &[Slice]) {
    for w in slices.windows(2) {
        assert_eq!(w[0].end, w[1].start, "slices contiguous: {slices:?}");
    }
    for s in slices {
        assert_eq!((s.end - s.start).num_seconds(), 300, "{s:?}");
        assert!(
            s.at >= s.end + chrono::Duration::minutes(2),
            "queried before it settled: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pipeline_reads_contiguous_slices_with_a_labels_map_to_filter_on() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.jsonl");
    let db = dir.path().join("db.jsonl");
    let corp = dir.path().join("corp.jsonl");
    let yaml = format!(
        "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m, start_at: 15m}}\nstages:\n  to_db:\n    type: filter\n    inputs: [flows]\n    match:\n      dst.labels.role: DB\n  corporate:\n    type: filter\n    inputs: [flows]\n    match:\n      src.ip: ip_list:Corporate\nsinks:\n  all: {{type: file, path: {}, inputs: [flows]}}\n  db: {{type: file, path: {}, inputs: [to_db]}}\n  corp: {{type: file, path: {}, inputs: [corporate]}}\n",
        all.display(),
        db.display(),
        corp.display()
    );
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    // The 15-minute lookback: three slices are due at once, then one per interval.
    nudge_until(&clock, "the lookback", || downloads(&sim) >= 3).await;
    for n in 1..=2 {
        cycle(&clock, &sim, n).await;
    }
    nudge_until(&clock, "flows written", || !lines(&all).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(topology).await;

    let slices = slices(&sim.request_log());
    assert!(slices.len() >= 5, "{slices:?}");
    assert_contiguous(&slices);
    assert!(
        slices.iter().all(|s| s.decisions.is_empty()),
        "all decisions"
    );
    assert!(
        slices[0].start <= t0() - chrono::Duration::minutes(15),
        "{slices:?}"
    );

    let events = lines(&all);
    assert!(!events.is_empty());
    for e in &events {
        assert!(e["src"]["labels"].is_object(), "{e}");
        assert!(e["dst"]["labels"].is_object(), "{e}");
        assert!(e["dst"]["ip_list_names"].is_array(), "{e}");
        assert_eq!(e["vigil"]["source_type"], "pce_traffic");
        assert_eq!(e["vigil"]["connection"], "lab");
        assert_eq!(e["vigil"]["truncated"], false);
        // The map agrees with the raw list, which stays.
        if let Some(list) = e["src"]["workload"]["labels"].as_array() {
            for l in list {
                let key = l["key"].as_str().unwrap();
                assert_eq!(e["src"]["labels"][key], l["value"], "{e}");
                assert_eq!(e["src"]["workload"]["labels_by_key"][key], l["value"]);
            }
        }
    }
    let to_db = events
        .iter()
        .filter(|e| e["dst"]["labels"]["role"] == "DB")
        .count();
    let kept = lines(&db);
    assert!(to_db > 0, "some flows go to databases");
    assert!(to_db < events.len(), "and some do not");
    assert_eq!(kept.len(), to_db);
    assert!(kept.iter().all(|e| e["dst"]["labels"]["role"] == "DB"));
    // `ip_list:Corporate` resolves through the name cache (192.168.0.0/16 except
    // 192.168.99.0-255).
    let in_corporate = |e: &Value| {
        let ip: std::net::Ipv4Addr = match e["src"]["ip"].as_str().and_then(|s| s.parse().ok()) {
            Some(ip) => ip,
            None => return false,
        };
        let o = ip.octets();
        o[0] == 192 && o[1] == 168 && o[2] != 99
    };
    let corporate = lines(&corp);
    assert_eq!(
        corporate.len(),
        events.iter().filter(|e| in_corporate(e)).count()
    );
    assert!(corporate.iter().all(in_corporate));
    assert!(
        !corporate.is_empty(),
        "some flows come from corporate ranges"
    );
    sim.shutdown().await;
}

/// Requests the PCE saw in each of `cycles` cycles with `n` pipelines reading the same
/// connection: (all, query creations, downloads, name collections).
async fn requests_per_cycle(n: usize, cycles: usize) -> Vec<(usize, usize, usize, usize)> {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let pipelines: Vec<String> = (0..n)
        .map(|i| pipeline(&format!("p{i}"), "", &dir.path().join(format!("{i}.jsonl"))))
        .collect();
    let topology = runtime::start(
        &config(dir.path(), &sim, &pipelines.join("---\n")),
        Arc::new(clock.clone()),
    )
    .expect("starts");
    let mut per_cycle = Vec::new();
    for c in 0..cycles {
        cycle(&clock, &sim, c).await;
        let log = sim.request_log();
        sim.clear_log();
        let creates = slices(&log).len();
        let downloads = log.iter().filter(|r| r.path.ends_with("/download")).count();
        let names = log
            .iter()
            .filter(|r| {
                r.path.ends_with("/labels")
                    || r.path.ends_with("/ip_lists")
                    || r.path.ends_with("/workloads")
            })
            .count();
        per_cycle.push((log.len(), creates, downloads, names));
    }
    // Every pipeline got the flows.
    for i in 0..n {
        let path = dir.path().join(format!("{i}.jsonl"));
        nudge_until(&clock, "every pipeline's flows", || {
            !lines(&path).is_empty()
        })
        .await;
    }
    stop(topology).await;
    sim.shutdown().await;
    per_cycle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_pipelines_make_the_same_pce_requests_per_cycle_as_one() {
    let one = requests_per_cycle(1, 3).await;
    let twenty = requests_per_cycle(20, 3).await;
    assert_eq!(one, twenty);
    // One query and one download per cycle; the names once (in the first cycle).
    assert!(one.iter().all(|&(_, c, d, _)| c == 1 && d == 1), "{one:?}");
    assert_eq!(one[0].3, 3, "{one:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_slice_is_queried_before_it_settled() {
    let One {
        clock,
        sim,
        dir: _dir,
        out: _out,
        topology,
    } = one_pipeline(Faults::default()).await;
    cycle(&clock, &sim, 0).await;
    let first = slices(&sim.request_log());
    assert_eq!(first.len(), 1);
    // The next slice ends at first.end + 5m: it is due 2 minutes later, not before.
    let due = first[0].end + chrono::Duration::minutes(7);
    let now = vigil::runtime::Clock::now(&clock);
    let short = (due - now - chrono::Duration::seconds(10))
        .to_std()
        .unwrap();
    clock.advance(short);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slices(&sim.request_log()).len(), 1, "queried too early");
    nudge_until(&clock, "the next slice", || {
        slices(&sim.request_log()).len() == 2
    })
    .await;
    stop(topology).await;
    let all = slices(&sim.request_log());
    assert_contiguous(&all);
    assert!(all[1].at >= due, "{all:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_survives_a_restart() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = config(dir.path(), &sim, &pipeline("t", ", start_at: 10m", &out));
    let topology = runtime::start(&config, Arc::new(clock.clone())).expect("starts");
    // 10 minutes back: the slices ending 08:48, 08:53, 08:58 are due at 09:00; 09:03 at
    // 09:05.
    nudge_until(&clock, "the lookback", || downloads(&sim) >= 3).await;
    cycle(&clock, &sim, 1).await;
    quiesce(&clock, &sim, dir.path()).await;
    stop(topology).await;
    let before = slices(&sim.request_log());
    // Down for a while; the start_at of the configuration no longer matters.
    clock.advance(Duration::from_secs(600));
    let topology = runtime::start(&config, Arc::new(clock.clone())).expect("restarts");
    let n = before.len();
    nudge_until(&clock, "slices after the restart", || {
        slices(&sim.request_log()).len() >= n + 2
    })
    .await;
    stop(topology).await;
    let all = slices(&sim.request_log());
    assert_eq!(
        all[n].start,
        before[n - 1].end,
        "continues where it stopped"
    );
    assert_contiguous(&all);
    let mut starts: Vec<_> = all.iter().map(|s| s.start).collect();
    starts.dedup();
    assert_eq!(starts.len(), all.len(), "no slice queried twice: {all:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_results_are_marked_on_every_flow() {
    let faults = Faults {
        truncate_results: true,
        ..Faults::default()
    };
    let One {
        clock,
        sim,
        dir: _dir,
        out,
        topology,
    } = one_pipeline(faults).await;
    cycle(&clock, &sim, 0).await;
    nudge_until(&clock, "flows written", || !lines(&out).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(topology).await;
    let events = lines(&out);
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["vigil"]["truncated"] == true),
        "every flow of a truncated slice says so"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_asks_for_the_union_of_decisions_and_each_pipeline_gets_its_own() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked.jsonl");
    let allowed = dir.path().join("allowed.jsonl");
    let yaml = [
        pipeline(
            "b",
            ", start_at: 30m, policy_decisions: [blocked]",
            &blocked,
        ),
        pipeline(
            "a",
            ", start_at: 30m, policy_decisions: [allowed]",
            &allowed,
        ),
    ]
    .join("---\n");
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    nudge_until(&clock, "the lookback", || downloads(&sim) >= 6).await;
    nudge_until(&clock, "flows written", || !lines(&allowed).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(topology).await;
    let slices = slices(&sim.request_log());
    assert_contiguous(&slices);
    assert!(
        slices
            .iter()
            .all(|s| s.decisions == vec!["allowed".to_string(), "blocked".to_string()]),
        "{slices:?}"
    );
    let (b, a) = (lines(&blocked), lines(&allowed));
    assert!(!a.is_empty());
    assert!(b.iter().all(|e| e["policy_decision"] == "blocked"), "{b:?}");
    assert!(a.iter().all(|e| e["policy_decision"] == "allowed"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_query_is_retried_for_the_same_slice_next_cycle() {
    let One {
        clock,
        sim,
        dir,
        out: _out,
        topology,
    } = one_pipeline(Faults::default()).await;
    cycle(&clock, &sim, 0).await;
    quiesce(&clock, &sim, dir.path()).await;
    // The next query's creation answers 500 (a POST is not retried by the client).
    sim.set_faults(Faults {
        server_errors: 1,
        ..Faults::default()
    });
    let posts = || {
        sim.request_log()
            .iter()
            .filter(|r| r.method == "POST" && r.path == QUERIES)
            .count()
    };
    clock.advance(Duration::from_secs(300));
    nudge_until(&clock, "the failing query", || posts() == 2).await;
    // Next cycle: the same slice again, this time answered.
    nudge_until(&clock, "the retry", || downloads(&sim) == 2).await;
    quiesce(&clock, &sim, dir.path()).await;
    stop(topology).await;
    let log = sim.request_log();
    let statuses: Vec<u16> = log
        .iter()
        .filter(|r| r.method == "POST" && r.path == QUERIES)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[..3], [202, 500, 202], "{statuses:?}");
    let all = slices(&log);
    assert_eq!(all[1].start, all[0].end);
    assert_eq!(
        all[2].start, all[1].start,
        "the failed slice is queried again"
    );
    assert_eq!(all[2].end, all[1].end);
    assert!(
        (all[2].at - all[1].at) >= chrono::Duration::minutes(5),
        "retried next cycle: {all:?}"
    );
    sim.shutdown().await;
}
