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
        "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m, start_at: 20m}}\nstages:\n  to_db:\n    type: filter\n    inputs: [flows]\n    match:\n      dst.labels.role: DB\n  corporate:\n    type: filter\n    inputs: [flows]\n    match:\n      src.ip: ip_list:Corporate\nsinks:\n  all: {{type: file, path: {}, inputs: [flows]}}\n  db: {{type: file, path: {}, inputs: [to_db]}}\n  corp: {{type: file, path: {}, inputs: [corporate]}}\n",
        all.display(),
        db.display(),
        corp.display()
    );
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    // The 20-minute lookback from 08:58: four slices are due at once, then one per interval.
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

/// `start_at` counts back from the newest settled time: a lookback of one interval is
/// one slice (it was two: the lookback plus a whole interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookback_of_one_interval_reads_exactly_one_slice() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 12m, settle: 2m, start_at: 12m}}\nsinks:\n  out: {{type: file, path: {}, inputs: [flows]}}\n",
        out.display()
    );
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    // The slice [08:46, 08:58) is read and the position stored at its end; the next one
    // ([08:58, 09:10)) is due at 09:12 only.
    let settled = t0() - chrono::Duration::minutes(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cursor_if_stored(dir.path()).is_none_or(|c| c < settled) {
        assert!(
            std::time::Instant::now() < deadline,
            "no slice read: {:?}",
            slices(&sim.request_log())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.advance(Duration::from_secs(1));
    }
    assert!(vigil::runtime::Clock::now(&clock) < t0() + chrono::Duration::minutes(12));
    stop(topology).await;
    let read = slices(&sim.request_log());
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0].start, t0() - chrono::Duration::minutes(14));
    assert_eq!(read[0].end, settled);
    assert_eq!(cursor(dir.path()), settled);
    sim.shutdown().await;
}

/// The stored slice cursor, if one was stored.
fn cursor_if_stored(dir: &Path) -> Option<DateTime<Utc>> {
    let store = vigil::store::Store::open(&dir.join("state")).ok()?;
    let stored = store.checkpoint("pce_traffic:lab").ok()??;
    let text = stored["next_start"].as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_survives_a_restart() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = config(dir.path(), &sim, &pipeline("t", ", start_at: 15m", &out));
    let topology = runtime::start(&config, Arc::new(clock.clone())).expect("starts");
    // 15 minutes back from 08:58 (settle 2m): the slices ending 08:48, 08:53, 08:58 are
    // due at 09:00; 09:03 at 09:05.
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
            ", start_at: 35m, policy_decisions: [blocked]",
            &blocked,
        ),
        pipeline(
            "a",
            ", start_at: 35m, policy_decisions: [allowed]",
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
async fn a_failed_query_is_retried_for_the_same_slice_a_minute_later() {
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
    // A minute later (not a whole interval): the same slice again, this time answered.
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
    let gap = all[2].at - all[1].at;
    assert!(
        gap >= chrono::Duration::minutes(1) && gap < chrono::Duration::minutes(5),
        "retried a minute later, before the next interval: {all:?}"
    );
    sim.shutdown().await;
}

/// A PCE answering 429 without `Retry-After`: the query's creation is retried with waits
/// that outlast the PCE's per-minute window (not seconds apart), and when the retries
/// are spent the slice is tried again a minute later, not a whole interval — all on the
/// virtual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_without_retry_after_is_outlasted_and_the_slice_retried_soon() {
    let One {
        clock,
        sim,
        dir,
        out: _out,
        topology,
    } = one_pipeline(Faults::default()).await;
    cycle(&clock, &sim, 0).await;
    quiesce(&clock, &sim, dir.path()).await;
    // The next 8 requests answer 429 without Retry-After: the 6 attempts of the next
    // query's creation (5 retries), then 2 more.
    sim.set_faults(Faults {
        rate_limit_storm: Some(vigil::pce::sim::RateLimitStorm {
            requests: 8,
            retry_after_secs: None,
        }),
        ..Faults::default()
    });
    let posts = || -> Vec<(u16, DateTime<Utc>)> {
        sim.request_log()
            .iter()
            .filter(|r| r.method == "POST" && r.path == QUERIES)
            .map(|r| (r.status, r.at))
            .collect()
    };
    clock.advance(Duration::from_secs(300));
    nudge_until(&clock, "the slice after the storm", || downloads(&sim) == 2).await;
    quiesce(&clock, &sim, dir.path()).await;
    stop(topology).await;
    let posts = posts();
    let statuses: Vec<u16> = posts.iter().map(|p| p.0).collect();
    // The creation's 6 attempts were refused; the last 2 refusals of the storm may go to
    // the retried creation or to a names refresh meanwhile.
    assert_eq!(
        statuses[..7],
        [202, 429, 429, 429, 429, 429, 429],
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&202), "{statuses:?}");
    // Each wait of the first creation's retries is seconds to a minute, and the first four
    // add up to more than the PCE's one-minute window (it was 7.4 s for all five).
    let first: Vec<DateTime<Utc>> = posts[1..7].iter().map(|p| p.1).collect();
    let waits: Vec<chrono::Duration> = first.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        waits
            .iter()
            .all(|w| *w >= chrono::Duration::milliseconds(7500)),
        "{waits:?}"
    );
    assert!(
        waits[..4].iter().copied().sum::<chrono::Duration>() > chrono::Duration::minutes(1),
        "{waits:?}"
    );
    // Given up, the slice is asked for again a minute later, well within the interval,
    // and it is the same slice.
    let again = posts[7].1 - posts[6].1;
    assert!(
        again >= chrono::Duration::minutes(1) && again < chrono::Duration::minutes(2),
        "{again:?}"
    );
    // The first query created after the storm (a later slice may follow it while the
    // test lets the clock run on to quiesce).
    let done = posts[7..]
        .iter()
        .find(|p| p.0 == 202)
        .expect("the slice fetched after the storm")
        .1;
    assert!(
        done - posts[1].1 < chrono::Duration::minutes(5) + chrono::Duration::minutes(1),
        "fetched about an interval after the first 429 at most: {posts:?}"
    );
    let all = slices(&sim.request_log());
    assert_eq!(all[1].start, all[0].end);
    // Every query until then asked for that same slice; anything later is the next one.
    let (retried, later): (Vec<_>, Vec<_>) = all[1..].iter().partition(|s| s.at <= done);
    assert!(retried.iter().all(|s| s.start == all[1].start), "{all:?}");
    assert!(later.iter().all(|s| s.start >= all[1].end), "{all:?}");
    sim.shutdown().await;
}

/// A flow's identity across rows: the ledger's key.
fn flow_key(e: &Value) -> String {
    format!(
        "{} {} {} {} {} {}",
        e["src"]["ip"],
        e["dst"]["ip"],
        e["service"]["port"],
        e["service"]["proto"],
        e["flow_direction"],
        e["timestamp_range"]["first_detected"]
    )
}

/// The sum of `num_connections` per flow.
fn sums(events: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        *out.entry(flow_key(e)).or_insert(0) += e["num_connections"].as_u64().expect("a count");
    }
    out
}

/// The stored slice cursor.
fn cursor(dir: &Path) -> DateTime<Utc> {
    let store = vigil::store::Store::open(&dir.join("state")).expect("state database");
    let v = store
        .checkpoint("pce_traffic:lab")
        .expect("readable")
        .expect("a cursor");
    DateTime::parse_from_rfc3339(v["next_start"].as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// What the simulator answers for `[start, end)` in one query: each flow's row as of the
/// end (independent of the slices and of vigil's ledger).
async fn whole_range(
    clock: &VirtualClock,
    sim: &RunningSim,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Value> {
    let http = reqwest::Client::new();
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = serde_json::json!({
        "query_name": "expected", "start_date": stamp(start), "end_date": stamp(end),
        "policy_decisions": [], "max_results": 200_000,
    });
    let get = |path: String| {
        http.get(format!("{}/api/v2{path}", sim.url()))
            .basic_auth("api_sim", Some(common::SECRET))
            .send()
    };
    let created: Value = http
        .post(format!("{}{QUERIES}", sim.url()))
        .basic_auth("api_sim", Some(common::SECRET))
        .json(&body)
        .send()
        .await
        .expect("the query is created")
        .json()
        .await
        .expect("JSON");
    let href = created["href"].as_str().expect("an href").to_string();
    clock.advance(Duration::from_secs(3));
    let status: Value = get(href).await.expect("status").json().await.expect("JSON");
    assert_eq!(status["status"], "completed", "{status}");
    assert!(status["matches_count"].as_u64() < Some(200_000));
    let result = status["result"].as_str().expect("a result").to_string();
    let flows: Value = get(result)
        .await
        .expect("download")
        .json()
        .await
        .expect("JSON");
    flows.as_array().expect("an array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_living_over_many_slices_is_summed_once() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    // One-minute slices: the simulator's flows last up to 10 minutes, so many of them come
    // back in three slices or more, each time with lifetime counters.
    let yaml = format!(
        "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 1m, settle: 2m, start_at: 21m}}\nsinks:\n  out: {{type: file, path: {}, inputs: [flows]}}\n",
        out.display()
    );
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    let services = topology.reloader().services().await;
    let counters = || services.pce["lab"].traffic_counters();
    nudge_until(&clock, "twenty slices", || {
        counters().is_some_and(|c| c.slices >= 20)
    })
    .await;
    quiesce(&clock, &sim, dir.path()).await;
    let counted = counters().expect("a hub");
    stop(topology).await;

    let queried = slices(&sim.request_log());
    let (start, end) = (queried[0].start, cursor(dir.path()));
    let events = lines(&out);
    for e in &events {
        let slice_end = DateTime::parse_from_rfc3339(e["vigil"]["slice"]["end"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
        assert!(slice_end <= end, "only acknowledged slices: {e}");
    }
    let expected = sums(&whole_range(&clock, &sim, start, end).await);
    let got = sums(&events);
    assert_eq!(got.len(), expected.len(), "every flow, once");
    for (flow, total) in &expected {
        assert_eq!(got.get(flow), Some(total), "{flow}");
    }
    // Some flows came back in three slices or more, counted as their increase there.
    let mut rows = std::collections::BTreeMap::<String, usize>::new();
    for e in &events {
        *rows.entry(flow_key(e)).or_default() += 1;
    }
    assert!(rows.values().filter(|&&n| n >= 3).count() >= 3, "{rows:?}");
    let continued: Vec<&Value> = events
        .iter()
        .filter(|e| e["vigil"]["num_connections_total"].is_u64())
        .collect();
    assert!(!continued.is_empty());
    assert!(
        continued
            .iter()
            .all(|e| e["vigil"]["num_connections_total"].as_u64() >= e["num_connections"].as_u64())
    );
    assert_eq!(counted.rows_continued, continued.len() as u64);
    assert_eq!(
        counted.rows_new + counted.rows_continued,
        events.len() as u64
    );
    assert_eq!(counted.rows_repeated, 0, "the simulator repeats no row");
    sim.shutdown().await;
}

/// A PCE (wiremock) that answers a traffic query by the start of its slice (`HH:MM` on the
/// test's day) with the rows given for it (none for others), already completed.
mod scripted {
    use std::collections::HashMap;
    use std::sync::Arc;

    use serde_json::{Value, json};
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    type Script = Arc<HashMap<String, Vec<Value>>>;

    struct Create(Script);

    impl Respond for Create {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            // `2026-03-02T08:38:00Z` → `0838`.
            let start: String = body["start_date"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .skip(11)
                .take(5)
                .filter(char::is_ascii_digit)
                .collect();
            let n = self.0.get(&start).map_or(0, Vec::len);
            let href = format!("/orgs/1/traffic_flows/async_queries/q{start}");
            ResponseTemplate::new(202).set_body_json(json!({
                "href": href, "status": "completed", "matches_count": n, "flows_count": n,
                "result": format!("{href}/download"),
            }))
        }
    }

    struct Download(Script);

    impl Respond for Download {
        fn respond(&self, req: &Request) -> ResponseTemplate {
            let start = req
                .url
                .path()
                .rsplit('/')
                .nth(1)
                .and_then(|q| q.strip_prefix('q'))
                .unwrap_or_default();
            let rows = self.0.get(start).cloned().unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(Value::Array(rows))
        }
    }

    pub(crate) async fn pce(slices: Vec<(&str, Vec<Value>)>) -> MockServer {
        let server = MockServer::start().await;
        let script: Script = Arc::new(
            slices
                .into_iter()
                .map(|(start, rows)| (start.replace(':', ""), rows))
                .collect(),
        );
        let api = "/api/v2/orgs/1";
        Mock::given(method("POST"))
            .and(path(format!("{api}/traffic_flows/async_queries")))
            .respond_with(Create(script.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(
                r"/traffic_flows/async_queries/q[0-9]+/download$",
            ))
            .respond_with(Download(script))
            .mount(&server)
            .await;
        for names in ["labels", "sec_policy/active/ip_lists", "workloads"] {
            Mock::given(method("GET"))
                .and(path(format!("{api}/{names}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
                .mount(&server)
                .await;
        }
        server
    }
}

/// A row of flow `src` → 10.1.0.9:5432, first detected at `first`, last at `last`
/// (`HH:MM:SS` on the test's day).
fn row(src: &str, first: &str, last: &str, n: u64) -> Value {
    serde_json::json!({
        "src": {"ip": src}, "dst": {"ip": "10.1.0.9"},
        "service": {"port": 5432, "proto": 6}, "flow_direction": "inbound",
        "policy_decision": "blocked", "num_connections": n, "dst_bi": 0, "dst_bo": 0,
        "timestamp_range": {
            "first_detected": format!("2026-03-02T{first}Z"),
            "last_detected": format!("2026-03-02T{last}Z"),
        },
    })
}

/// Runs a pipeline reading `pce` into `out` (state under `dir`) until `slices` slices were
/// handed on; returns the connection's counters then. The clock stays where it is (the
/// slices read are the ones already due).
async fn run_scripted(
    clock: &VirtualClock,
    url: &str,
    dir: &Path,
    out: &Path,
    slices: u64,
) -> vigil::sources::pce_traffic::TrafficCounters {
    // Starting 19 + 3 minutes back: three slices are due at 09:00, the fourth
    // ([08:53, 08:58) with 3 minutes to settle) only at 09:01.
    let pipeline = format!(
        "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 3m, start_at: 19m}}\nsinks:\n  out: {{type: file, path: {}, inputs: [flows]}}\n",
        out.display()
    );
    let yaml = format!(
        "kind: settings\nstate_dir: {state}\nconnections:\n  pce:\n    lab:\n      url: {url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n      backoff_base: 1s\n---\n{pipeline}",
        state = dir.join("state").display(),
    );
    let topology = runtime::start(&common::load(yaml), Arc::new(clock.clone())).expect("starts");
    let services = topology.reloader().services().await;
    let counters = || services.pce["lab"].traffic_counters();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counters().is_none_or(|c| c.slices < slices) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {:?}",
            counters()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let counted = counters().expect("a hub");
    stop(topology).await;
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rows_are_dropped_and_counted_and_the_ledger_survives_a_restart() {
    // The slices [08:38, 08:43), [08:43, 08:48), [08:48, 08:53) are due at 09:00;
    // [08:53, 08:58) at 09:01 (see `run_scripted`).
    let pce = scripted::pce(vec![
        // A, and the same row again in the same answer.
        (
            "08:38",
            vec![
                row("10.5.0.1", "08:40:10", "08:42:59", 5),
                row("10.5.0.1", "08:40:10", "08:42:59", 5),
            ],
        ),
        // A unchanged (a PCE repeating a row), B new, and a row without timestamps.
        (
            "08:43",
            vec![
                row("10.5.0.1", "08:40:10", "08:42:59", 5),
                row("10.5.0.2", "08:45:00", "08:47:30", 2),
                {
                    let mut bare = row("10.5.0.3", "08:45:00", "08:47:30", 1);
                    bare.as_object_mut().unwrap().remove("timestamp_range");
                    bare
                },
            ],
        ),
        // A continues (9 connections in all: 4 more); B unchanged.
        (
            "08:48",
            vec![
                row("10.5.0.1", "08:40:10", "08:52:59", 9),
                row("10.5.0.2", "08:45:00", "08:47:30", 2),
            ],
        ),
        // After the restart: A continues (12 in all: 3 more); B unchanged.
        (
            "08:53",
            vec![
                row("10.5.0.1", "08:40:10", "08:57:59", 12),
                row("10.5.0.2", "08:45:00", "08:47:30", 2),
            ],
        ),
    ])
    .await;
    let clock = VirtualClock::new(t0());
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("1.jsonl"), dir.path().join("2.jsonl"));

    let counted = run_scripted(&clock, &pce.uri(), dir.path(), &first, 3).await;
    assert_eq!(
        (
            counted.rows_new,
            counted.rows_continued,
            counted.rows_repeated
        ),
        (3, 1, 3),
        "{counted:?}"
    );
    let events = lines(&first);
    let counts: Vec<(&str, u64)> = events
        .iter()
        .map(|e| {
            (
                e["src"]["ip"].as_str().unwrap(),
                e["num_connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("10.5.0.1", 5),
            ("10.5.0.2", 2),
            ("10.5.0.3", 1),
            ("10.5.0.1", 4)
        ]
    );
    assert_eq!(events[3]["vigil"]["num_connections_total"], 9);
    assert!(
        events[..3]
            .iter()
            .all(|e| e["vigil"].get("num_connections_total").is_none())
    );

    // Down for five minutes; the ledger comes back with the cursor.
    clock.advance(Duration::from_secs(300));
    let counted = run_scripted(&clock, &pce.uri(), dir.path(), &second, 1).await;
    assert_eq!(
        (
            counted.rows_new,
            counted.rows_continued,
            counted.rows_repeated
        ),
        (0, 1, 1),
        "{counted:?}"
    );
    let events = lines(&second);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["src"]["ip"], "10.5.0.1");
    assert_eq!(events[0]["num_connections"], 3, "not counted whole again");
    assert_eq!(events[0]["vigil"]["num_connections_total"], 12);
    // 5 + 4 + 3: the PCE's total, once.
    let all: Vec<Value> = [lines(&first), events].concat();
    let a: u64 = all
        .iter()
        .filter(|e| e["src"]["ip"] == "10.5.0.1")
        .filter_map(|e| e["num_connections"].as_u64())
        .sum();
    assert_eq!(a, 12);
    let store = vigil::store::Store::open(&dir.path().join("state")).expect("state database");
    let saved = store
        .checkpoint("pce_traffic_flows:lab")
        .expect("readable")
        .expect("saved");
    assert_eq!(saved["v"], 2);
}

/// What one run of filtering pipelines saw: the query bodies the simulator received, the
/// flows their sources were handed, what their filters kept and the rows they kept (with
/// the alerts their rules raised) over the first six slices.
struct Narrowed {
    queries: Vec<Value>,
    handed: u64,
    kept: u64,
    flows: std::collections::BTreeSet<String>,
    kept_rows: Vec<Value>,
    alerts: std::collections::BTreeSet<(String, String, String)>,
}

/// The narrowed download held only flows some pipeline kept, and far fewer than the whole.
fn assert_fewer_and_all_kept(narrowed: &Narrowed, whole: &Narrowed) {
    assert_eq!(
        narrowed.handed, narrowed.kept,
        "every flow handed on was kept"
    );
    assert!(
        narrowed.handed * 2 < whole.handed,
        "{} flows downloaded, {} without narrowing",
        narrowed.handed,
        whole.handed
    );
}

impl Narrowed {
    /// The `key` part of every query (`services`, `destinations`, ...).
    fn asked(&self, key: &str) -> Vec<Value> {
        self.queries.iter().map(|q| q[key].clone()).collect()
    }
}

/// Runs `pipelines` (name, the YAML of its filter's conditions, indented for a stage) on
/// one connection, with or without `narrow`, over the lookback's six slices.
async fn narrowed_run(pipelines: &[(&str, &str)], narrow: bool) -> Narrowed {
    narrowed_run_with(pipelines, narrow, false).await
}

/// [`narrowed_run`], with a second PCE connection in the settings when `two_pces`.
async fn narrowed_run_with(pipelines: &[(&str, &str)], narrow: bool, two_pces: bool) -> Narrowed {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let option = if narrow { "" } else { ", narrow: false" };
    let pipe = |name: &str, conditions: &str| {
        let flows = dir.path().join(format!("{name}-flows.jsonl"));
        let alerts = dir.path().join(format!("{name}-alerts.jsonl"));
        format!(
            "kind: pipeline\nname: {name}\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m, start_at: 35m{option}}}\nstages:\n  keep:\n    type: filter\n    inputs: [flows]\n{conditions}\n  rule:\n    type: window_count\n    inputs: [keep]\n    window: 30m\n    group_by: [src.ip]\n    threshold: 2\n    alert: {{mode: each_crossing}}\nsinks:\n  kept: {{type: file, path: {}, inputs: [keep]}}\n  alerts: {{type: file, path: {}, inputs: [rule]}}\n",
            flows.display(),
            alerts.display()
        )
    };
    let yaml = pipelines
        .iter()
        .map(|(name, conditions)| pipe(name, conditions))
        .collect::<Vec<_>>()
        .join("---\n");
    let other = if two_pces {
        format!(
            "    other:\n      url: {}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n",
            sim.url()
        )
    } else {
        String::new()
    };
    let cfg = common::load(format!(
        "{}{yaml}",
        common::settings(dir.path(), &sim, &other)
    ));
    let topology = runtime::start(&cfg, Arc::new(clock.clone())).expect("starts");
    nudge_until(&clock, "the lookback", || downloads(&sim) >= 6).await;
    quiesce(&clock, &sim, dir.path()).await;
    let counter = |id: &str, f: fn(&vigil::runtime::NodeCounters) -> u64| {
        topology
            .counters()
            .iter()
            .filter(|(n, _)| n == id)
            .map(|(_, c)| f(c))
            .sum::<u64>()
    };
    let out =
        |c: &vigil::runtime::NodeCounters| c.events_out.load(std::sync::atomic::Ordering::Relaxed);
    // The rows the connection's download handed on (each source gets only the flows its
    // filter can keep, so no one source's count is the download's).
    let services = topology.reloader().services().await;
    let handed = services.pce["lab"]
        .traffic_counters()
        .map_or(0, |c| c.rows_new + c.rows_continued);
    let kept = pipelines
        .iter()
        .map(|(name, _)| counter(&format!("{name}.keep"), out))
        .sum();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(topology).await;
    let queries = sim
        .request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path == QUERIES)
        .map(|r| serde_json::from_str(&r.body).expect("a JSON query body"))
        .collect();
    // Both runs read at least the first six slices of the lookback (the last ends 7
    // minutes before the start); how many more depends on how the clock was nudged, so
    // only what those six hold is compared.
    let cutoff = t0() - chrono::Duration::minutes(7);
    let before = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t <= cutoff)
    };
    let mut flows = std::collections::BTreeSet::new();
    let mut kept_rows = Vec::new();
    let mut alerts = std::collections::BTreeSet::new();
    for (name, _) in pipelines {
        for f in lines(&dir.path().join(format!("{name}-flows.jsonl"))) {
            if before(&f["vigil"]["slice"]["end"]) {
                flows.insert(format!("{name} {}", flow_key(&f)));
                kept_rows.push(f);
            }
        }
        for a in lines(&dir.path().join(format!("{name}-alerts.jsonl"))) {
            if !before(&a["window"]["end"]) {
                continue;
            }
            alerts.insert((
                name.to_string(),
                a["group_key"].to_string(),
                a["value"].to_string(),
            ));
        }
    }
    sim.shutdown().await;
    Narrowed {
        queries,
        handed,
        kept,
        flows,
        kept_rows,
        alerts,
    }
}

/// Two pipelines keeping only some ports.
async fn ports_run(narrow: bool) -> Narrowed {
    let pipelines = [
        ("ssh", "    match:\n      service.port: [22]"),
        ("admin", "    match:\n      service.port: [3389, 445]"),
    ];
    narrowed_run(&pipelines, narrow).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_that_keep_only_some_ports_ask_the_pce_for_only_those_and_miss_nothing() {
    let narrowed = ports_run(true).await;
    let whole = ports_run(false).await;
    // Every query asked for the union of the two pipelines' ports...
    assert!(!narrowed.queries.is_empty());
    for s in &narrowed.asked("services") {
        let mut ports: Vec<u64> = s["include"]
            .as_array()
            .expect("a service list")
            .iter()
            .map(|x| x["port"].as_u64().expect("a port"))
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, [22, 445, 3389], "{s}");
    }
    assert!(
        whole
            .asked("services")
            .iter()
            .all(|s| s["include"].as_array().is_none_or(Vec::is_empty))
    );
    // ...so the download held only flows one of them keeps, and far fewer...
    assert_fewer_and_all_kept(&narrowed, &whole);
    // ...and the pipelines kept the same flows and raised the same alerts.
    assert!(!whole.flows.is_empty() && !whole.alerts.is_empty());
    assert_eq!(narrowed.flows, whole.flows);
    assert_eq!(narrowed.alerts, whole.alerts);
}

/// The href of the label `key: value` in the rows a run kept (as the PCE sent it).
fn label_href(rows: &[Value], side: &str, key: &str, value: &str) -> String {
    rows.iter()
        .flat_map(|r| {
            r[side]["workload"]["labels"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|l| l["key"] == key && l["value"] == value)
        .and_then(|l| l["href"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no kept row has the label {key}: {value}"))
}

/// Two pipelines looking only at the destination's role.
async fn roles_run(narrow: bool) -> Narrowed {
    let pipelines = [
        ("db", "    match:\n      dst.labels.role: DB"),
        (
            "cache",
            "    any:\n      - {dst.labels.role: Cache}\n      - {dst.labels.role: [Cache], service.proto: 17}",
        ),
    ];
    narrowed_run(&pipelines, narrow).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_that_look_only_at_destination_labels_ask_the_pce_for_those_and_miss_nothing() {
    let narrowed = roles_run(true).await;
    let whole = roles_run(false).await;
    assert!(!whole.flows.is_empty() && !whole.alerts.is_empty());
    // Every query named the two labels as destinations, each a group of its own (the
    // label hrefs are the PCE's, looked up in the name cache), and no service.
    let db = label_href(&whole.kept_rows, "dst", "role", "DB");
    let cache = label_href(&whole.kept_rows, "dst", "role", "Cache");
    assert!(!narrowed.queries.is_empty());
    for q in &narrowed.queries {
        let mut groups: Vec<Vec<String>> = q["destinations"]["include"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| {
                g.as_array()
                    .expect("a group")
                    .iter()
                    .map(|a| a["label"]["href"].as_str().expect("a label").to_string())
                    .collect()
            })
            .collect();
        groups.sort();
        let mut want = vec![vec![db.clone()], vec![cache.clone()]];
        want.sort();
        assert_eq!(groups, want, "{q}");
        assert_eq!(q["sources"]["include"], serde_json::json!([]), "{q}");
        assert_eq!(
            q["services"]["include"],
            serde_json::json!([]),
            "the pipelines keep every protocol: {q}"
        );
    }
    for q in &whole.queries {
        assert_eq!(q["destinations"]["include"], serde_json::json!([]), "{q}");
    }
    // The download held only flows to a DB or a Cache (each kept by one of them)...
    assert_fewer_and_all_kept(&narrowed, &whole);
    // ...and nothing a pipeline keeps was missed.
    assert_eq!(narrowed.flows, whole.flows);
    assert_eq!(narrowed.alerts, whole.alerts);
}

/// The simulator's catch-all IP list.
const ANY_LIST: &str = "Any (0.0.0.0/0 and ::/0)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_list_destination_is_asked_for_with_the_workloads_inside_it() {
    // Every destination is in the list, workloads included: a query that left workloads
    // out of IP-list matches (the PCE's default) would miss most flows.
    let conditions = format!("    match:\n      dst.ip: \"ip_list:{ANY_LIST}\"");
    let pipelines = [("out", conditions.as_str())];
    let narrowed = narrowed_run(&pipelines, true).await;
    let whole = narrowed_run(&pipelines, false).await;
    assert!(!narrowed.queries.is_empty());
    for q in &narrowed.queries {
        let include = q["destinations"]["include"].as_array().expect("groups");
        assert_eq!(include.len(), 1, "{q}");
        assert!(
            include[0][0]["ip_list"]["href"]
                .as_str()
                .is_some_and(|h| h.contains("/ip_lists/")),
            "{q}"
        );
        assert_eq!(q["exclude_workloads_from_ip_list_query"], false, "{q}");
    }
    assert!(
        whole
            .kept_rows
            .iter()
            .any(|r| r["dst"]["workload"].is_object()),
        "workloads are among the destinations"
    );
    // Every flow is in the list: each run keeps all it is handed. (How many slices a run
    // reads past the first six depends on the clock's nudges, so the totals of the two
    // runs are not compared; what the first six hold is, below.)
    assert_eq!(
        narrowed.handed, narrowed.kept,
        "every flow handed on was kept"
    );
    assert_eq!(whole.handed, whole.kept, "every flow handed on was kept");
    assert_eq!(narrowed.flows, whole.flows);
    assert_eq!(narrowed.alerts, whole.alerts);
}

/// Two pipelines looking only at sources in IP lists.
async fn lists_run(narrow: bool) -> Narrowed {
    lists_run_with(narrow, false).await
}

/// [`lists_run`], with a second PCE connection when `two_pces`.
async fn lists_run_with(narrow: bool, two_pces: bool) -> Narrowed {
    let pipelines = [
        ("corp", "    match:\n      src.ip: \"ip_list:Corporate\""),
        ("scan", "    match:\n      src.ip: [\"ip_list:Scanners\"]"),
    ];
    narrowed_run_with(&pipelines, narrow, two_pces).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_that_look_only_at_source_ip_lists_ask_the_pce_for_those_and_miss_nothing() {
    let narrowed = lists_run(true).await;
    let whole = lists_run(false).await;
    assert!(!whole.flows.is_empty());
    for q in &narrowed.queries {
        assert_eq!(
            q["sources"]["include"].as_array().map(Vec::len),
            Some(2),
            "{q}"
        );
        assert_eq!(q["exclude_workloads_from_ip_list_query"], false, "{q}");
    }
    assert_fewer_and_all_kept(&narrowed, &whole);
    assert_eq!(narrowed.flows, whole.flows);
    assert_eq!(narrowed.alerts, whole.alerts);
}

/// Filters look `ip_list:` names up in every connection's names, so with a second PCE
/// the list a filter matches may be that PCE's: the query does not narrow by IP lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_second_pce_ip_lists_narrow_nothing() {
    let run = lists_run_with(true, true).await;
    assert!(!run.queries.is_empty());
    for q in &run.queries {
        assert_eq!(q["sources"]["include"], serde_json::json!([]), "{q}");
        assert_eq!(q["exclude_workloads_from_ip_list_query"], true, "{q}");
    }
    assert!(!run.flows.is_empty());
    assert!(run.handed > run.kept, "every flow was downloaded");
}

/// The shipped `admin-ports` rule, run twice on the same simulated PCE — once on its REST
/// traffic (`pce_traffic`), once on its syslog export (`syslog`, `decode: pce`) — alerts
/// on the same pairs with the same titles.
///
/// The two paths do not see the same flows at their edges: REST reads rows of every flow
/// overlapping its slices (a flow still going is cut at the slice's end), syslog gets each
/// flow once, when it ends, from the moment the export started. So the comparison is over
/// the alerts whose first flow lies where both saw everything: from ten minutes (the
/// longest flow) after the export started to ten minutes before REST's last slice ended.
/// A pair alerted there on one path has a flow the other path saw too.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_admin_ports_rule_fires_the_same_on_rest_and_on_the_syslog_export() {
    use std::sync::atomic::Ordering;
    use vigil::pce::sim::{PceSim, SimConfig, SyslogExport, SyslogMode};

    let clock = VirtualClock::new(t0());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let sim = PceSim::start(
        SimConfig {
            scenario: Scenario::VenTampering,
            seed: 11,
            api_secret: common::SECRET.into(),
            syslog: Some(SyslogExport {
                to: ([127, 0, 0, 1], port).into(),
                mode: SyslogMode::Tcp,
                flow_summaries: true,
            }),
            ..SimConfig::default()
        },
        Arc::new(clock.clone()),
        "127.0.0.1:0".parse().expect("address"),
    )
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    // The shipped rule's stages, as they are; its sources and sinks replaced.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/admin-ports.yaml"),
    )
    .expect("the shipped rule");
    let stages = &shipped[shipped.find("\nstages:\n").expect("stages") + 1
        ..shipped.find("\nsinks:\n").expect("sinks") + 1];
    let rest_out = dir.path().join("rest.jsonl");
    let sys_out = dir.path().join("sys.jsonl");
    let sys_all = dir.path().join("sys-all.jsonl");
    let yaml = format!(
        "kind: pipeline\nname: rest\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m, policy_decisions: [potentially_blocked, blocked]}}\n{stages}sinks:\n  out: {{type: file, path: {rest}, inputs: [pair]}}\n---\nkind: pipeline\nname: sys\nsources:\n  flows: {{type: syslog, address: \"127.0.0.1:{port}\", mode: tcp, decode: pce}}\n{stages}sinks:\n  out: {{type: file, path: {sys}, inputs: [pair]}}\n  all: {{type: file, path: {all}, inputs: [flows]}}\n",
        rest = rest_out.display(),
        sys = sys_out.display(),
        all = sys_all.display(),
    );
    let topology =
        runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone())).expect("starts");
    // An hour of simulated time, a REST cycle every five minutes.
    cycle(&clock, &sim, 0).await;
    for n in 1..=12 {
        cycle(&clock, &sim, n).await;
    }
    quiesce(&clock, &sim, dir.path()).await;
    // Every message the export sent reached the syslog pipeline (none was dropped).
    let counters = sim.syslog_counters();
    assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    let sent = counters.sent.load(Ordering::Relaxed) as usize;
    assert!(sent > 100, "{sent} messages exported");
    nudge_until(&clock, "every exported message read", || {
        lines(&sys_all).len() >= sent
    })
    .await;
    stop(topology).await;

    let rest_end = slices(&sim.request_log()).last().expect("slices").end;
    let from = t0() + chrono::Duration::minutes(11);
    let to = rest_end - chrono::Duration::minutes(11);
    let first_seen = |a: &Value| -> DateTime<Utc> {
        a["first_seen"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .expect("first_seen")
            .with_timezone(&Utc)
    };
    let titles = |alerts: &[Value], middle: bool| -> std::collections::BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| !middle || (first_seen(a) >= from && first_seen(a) < to))
            .map(|a| a["title"].as_str().expect("title").to_string())
            .collect()
    };
    let (rest, sys) = (lines(&rest_out), lines(&sys_out));
    let (rest_all, sys_all) = (titles(&rest, false), titles(&sys, false));
    let (rest_mid, sys_mid) = (titles(&rest, true), titles(&sys, true));
    // (23 and 24 of them when this was written.)
    assert!(
        rest_mid.len() >= 5 && sys_mid.len() >= 5,
        "too few alerts to compare: {rest:?} {sys:?}"
    );
    let missing_in_sys: Vec<_> = rest_mid.difference(&sys_all).collect();
    let missing_in_rest: Vec<_> = sys_mid.difference(&rest_all).collect();
    assert!(
        missing_in_sys.is_empty() && missing_in_rest.is_empty(),
        "alerted on REST only: {missing_in_sys:?}\nalerted on syslog only: {missing_in_rest:?}"
    );
    sim.shutdown().await;
}

/// A reload that changes only a pipeline's filter reaches its source: the connection's
/// query asks for the ports the filter now keeps, and their flows are handed on (the
/// source, which asks for and hands on only what its filters keep, is rebuilt with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_only_a_filter_changes_what_its_source_asks_for_and_hands_on() {
    let clock = VirtualClock::new(t0());
    let sim = sim(&clock, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kept.jsonl");
    let pipe = |ports: &str| {
        let yaml = format!(
            "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m, start_at: 35m}}\nstages:\n  keep: {{type: filter, inputs: [flows], match: {{service.port: {ports}}}}}\nsinks:\n  out: {{type: file, path: {}, inputs: [keep]}}\n",
            out.display()
        );
        config(dir.path(), &sim, &yaml)
    };
    let topology = runtime::start(&pipe("[22]"), Arc::new(clock.clone())).expect("starts");
    nudge_until(&clock, "the lookback", || downloads(&sim) >= 6).await;
    quiesce(&clock, &sim, dir.path()).await;
    let before = lines(&out).len();
    let queried = slices(&sim.request_log()).len();
    // The retired filter hands on what it holds at its next tick: time moves meanwhile.
    let reloader = topology.reloader();
    let new = pipe("[3389, 445]");
    let reload = tokio::spawn(async move { reloader.reload(&new).await });
    nudge_until(&clock, "the reload", || reload.is_finished()).await;
    reload
        .await
        .expect("the reload ends")
        .expect("the reload applies");
    // The ports each traffic query asked for, in order.
    let asked_of = |sim: &RunningSim| -> Vec<Vec<u64>> {
        sim.request_log()
            .iter()
            .filter(|r| r.method == "POST" && r.path == QUERIES)
            .map(|r| {
                let body: Value = serde_json::from_str(&r.body).expect("a JSON query body");
                let mut ports: Vec<u64> = body["services"]["include"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["port"].as_u64())
                    .collect();
                ports.sort_unstable();
                ports
            })
            .collect()
    };
    for n in 1..=4 {
        cycle(&clock, &sim, n).await;
    }
    nudge_until(&clock, "four slices of the new ports", || {
        asked_of(&sim).iter().filter(|p| *p == &[445, 3389]).count() >= 4
    })
    .await;
    quiesce(&clock, &sim, dir.path()).await;
    stop(topology).await;
    let asked = asked_of(&sim);
    // The old source may still ask for a slice while the reload hands over (the clock
    // moves meanwhile): the queries are the old ports up to a point, then only the new.
    let switch = asked.iter().position(|p| p != &[22]).unwrap_or(asked.len());
    assert!(switch >= queried, "{asked:?}");
    assert!(
        asked[switch..].len() >= 4 && asked[switch..].iter().all(|p| p == &[445, 3389]),
        "{asked:?}"
    );
    let kept = lines(&out);
    let port = |f: &Value| f["service"]["port"].as_u64();
    assert!(kept[..before].iter().all(|f| port(f) == Some(22)));
    // Flows of a slice the old source read during the hand-over come first, of its port.
    let after: Vec<_> = kept[before..].iter().map(port).collect();
    let new_from = after
        .iter()
        .position(|p| p != &Some(22))
        .unwrap_or(after.len());
    assert!(
        new_from < after.len(),
        "flows of the new ports were handed on: {after:?}"
    );
    assert!(
        after[new_from..]
            .iter()
            .all(|p| matches!(p, Some(445 | 3389))),
        "{after:?}"
    );
    sim.shutdown().await;
}

/// The `(src.ip, dst.ip)` pairs of some flows.
fn pairs(flows: &[Value]) -> std::collections::BTreeSet<(String, String)> {
    flows
        .iter()
        .map(|f| {
            (
                f["src"]["ip"].as_str().unwrap_or_default().to_string(),
                f["dst"]["ip"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A `new_term` stage warmed up from the PCE's last hour of traffic (`warm_up.pce`) knows
/// every pair of addresses in it: once the history is read, exactly the pairs that are
/// not in it alert (an independent query of the simulator says which), where the same
/// stage without a warm-up alerts on every pair it meets. (That the state notes the
/// history, so a restart does not read it again, is a unit test of the stage.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_term_stage_warmed_up_from_the_pce_alerts_only_on_what_its_history_lacks() {
    let run = |warm: bool| async move {
        let clock = VirtualClock::new(t0());
        let sim = sim(&clock, Faults::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alerts.jsonl");
        // Without a warm-up, `learn` must not be 0s (validation warns); a millisecond of
        // the first slice is as good as nothing.
        let warm_up = if warm {
            "0s\n    warm_up: {pce: {connection: lab, lookback: 1h}}"
        } else {
            "1ms"
        };
        let yaml = format!(
            "kind: pipeline\nname: t\nsources:\n  flows: {{type: pce_traffic, connection: lab, interval: 5m, settle: 2m}}\nstages:\n  pairs:\n    type: new_term\n    inputs: [flows]\n    field: [src.ip, dst.ip]\n    learn: {warm_up}\nsinks:\n  out: {{type: file, path: {}, inputs: [pairs]}}\n",
            out.display()
        );
        let topology = runtime::start(&config(dir.path(), &sim, &yaml), Arc::new(clock.clone()))
            .expect("starts");
        cycle(&clock, &sim, 0).await;
        if warm {
            // The history is read (a query of [08:00, 09:00)) and the stage has taken it
            // all: its saved state notes it.
            // The clock moves a second at a time, so that the next slice (due at 09:05)
            // is not read before then.
            let store = vigil::store::Store::open(&dir.path().join("state")).expect("state");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !store
                .stage_state("t.pairs")
                .ok()
                .flatten()
                .is_some_and(|s| s.contains("pce_warmed"))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the history was not learned"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                clock.advance(Duration::from_secs(1));
            }
            assert!(
                vigil::runtime::Clock::now(&clock) < t0() + chrono::Duration::minutes(5),
                "learned before the next slice"
            );
        }
        // The first slice: [08:53, 08:58).
        let from = t0() - chrono::Duration::minutes(7);
        for n in 1..=2 {
            cycle(&clock, &sim, n).await;
        }
        quiesce(&clock, &sim, dir.path()).await;
        let to = cursor(dir.path());
        stop(topology).await;
        let terms: std::collections::BTreeSet<(String, String)> = lines(&out)
            .iter()
            .map(|a| {
                let t = &a["fields"]["term"];
                (
                    t[0].as_str().unwrap_or_default().to_string(),
                    t[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        // The daemon's queries, before the test's own.
        let queries = slices(&sim.request_log());
        let history =
            pairs(&whole_range(&clock, &sim, t0() - chrono::Duration::hours(1), t0()).await);
        let read = pairs(&whole_range(&clock, &sim, from, to).await);
        sim.shutdown().await;
        (terms, history, read, queries)
    };
    let (terms, history, read, queries) = run(true).await;
    let expected: std::collections::BTreeSet<_> = read.difference(&history).cloned().collect();
    assert!(
        !expected.is_empty() && expected.len() < read.len(),
        "{} of {}",
        expected.len(),
        read.len()
    );
    assert_eq!(terms, expected, "exactly the pairs the last hour lacks");
    let asked: Vec<_> = queries
        .iter()
        .filter(|q| q.end - q.start == chrono::Duration::hours(1))
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "the history is one query of an hour: {queries:?}"
    );
    assert_eq!(asked[0].end, t0());
    assert!(
        asked[0].decisions.is_empty(),
        "every decision: {:?}",
        asked[0]
    );

    // Without it, every pair not met in the first slice alerts: those too.
    let (cold, _, _, _) = run(false).await;
    assert!(
        terms.is_subset(&cold) && cold.len() > terms.len(),
        "{} alerts warm, {} cold",
        terms.len(),
        cold.len()
    );
}
