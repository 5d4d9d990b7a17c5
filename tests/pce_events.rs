//! The `pce_events` source in a real graph against the PCE simulator over HTTP, on a
//! virtual clock the test moves. Each test compares what reached the file sink with a
//! direct client query of the same range: every event exactly once, none missing.

mod common;

use std::collections::{HashMap, HashSet};

use common::{SECRET, lines, nudge_until};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::Value;
use vigil::event::Timestamp;
use vigil::pce::client::{EventQuery, PceClient, PceConnectionConfig, Secret};
use vigil::pce::sim::{Faults, RunningSim, Scenario};
use vigil::runtime::{self, Clock, SharedClock, VirtualClock};
use vigil::sources::pce_events::EventsCheckpoint;
use vigil::store::Store;

const NODE: &str = "audit.pce";

fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

async fn sim(scenario: Scenario, faults: Faults, clock: SharedClock) -> RunningSim {
    common::sim(scenario, 11, faults, clock).await
}

/// Settings and one pipeline `audit` with a `pce_events` source `pce` (extra options in
/// `options`) feeding a file sink at `out`.
fn yaml(dir: &Path, sim: &RunningSim, options: &str, out: &Path) -> String {
    format!(
        "{settings}kind: pipeline\nname: audit\nsources:\n  pce: {{type: pce_events, connection: lab, {options}}}\nsinks:\n  out: {{type: file, path: {out}, inputs: [pce]}}\n",
        settings = common::settings(dir, sim, "      requests_per_minute: 450\n"),
        out = out.display(),
    )
}

fn config(yaml: String) -> vigil::config::Config {
    common::load(yaml)
}

fn events_requests(sim: &RunningSim) -> usize {
    sim.request_log()
        .iter()
        .filter(|r| r.path.ends_with("/events"))
        .count()
}

/// Lets `minutes` polling cycles happen: moves the clock a minute at a time, in steps of
/// five seconds with a pause between (the request budget refills on this clock), and
/// waits for the source to ask the PCE again each minute.
async fn run_minutes(clock: &VirtualClock, sim: &RunningSim, minutes: usize) {
    for m in 0..minutes {
        let before = events_requests(sim);
        for _ in 0..12 {
            clock.advance(Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        nudge_until(clock, &format!("cycle {m}"), || {
            events_requests(sim) > before
        })
        .await;
    }
}

fn checkpoint(dir: &Path) -> EventsCheckpoint {
    let store = Store::open(&dir.join("state")).expect("state database");
    let v = store.checkpoint(NODE).unwrap().expect("a checkpoint");
    EventsCheckpoint::from_json(&v).expect("a pce_events checkpoint")
}

/// Every event the PCE holds in `[since, until]`, read directly (one big page, checked not
/// to be full), in timestamp order.
async fn direct(
    sim: &RunningSim,
    clock: SharedClock,
    since: Timestamp,
    until: Timestamp,
) -> Vec<Value> {
    let mut cfg = PceConnectionConfig::new(sim.url(), Secret::new("api_sim"), Secret::new(SECRET));
    cfg.insecure_http = true; // the simulator serves plain HTTP
    let client = PceClient::new(&cfg, clock).expect("client");
    let q = EventQuery {
        since: Some(since),
        until: Some(until),
        max_results: Some(10_000),
        ..EventQuery::default()
    };
    let mut all = client.events(&q).await.expect("direct query");
    assert!(
        !q.page_is_full(all.len()),
        "the reference query is complete"
    );
    all.sort_by_key(|e| e["timestamp"].as_str().unwrap_or_default().to_string());
    all
}

fn hrefs(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["href"].as_str().expect("href").to_string())
        .collect()
}

/// Exactly once: no duplicate href, the same set as `expected`.
fn assert_exactly_once(got: &[Value], expected: &[Value]) {
    let got_h = hrefs(got);
    let unique: HashSet<&String> = got_h.iter().collect();
    assert_eq!(unique.len(), got_h.len(), "duplicates in the output");
    let want: HashSet<String> = hrefs(expected).into_iter().collect();
    let got_set: HashSet<String> = got_h.into_iter().collect();
    let missing: Vec<_> = want.difference(&got_set).collect();
    let extra: Vec<_> = got_set.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
}

fn assert_time_ordered(events: &[Value]) {
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "output not in timestamp order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_events_arrive_exactly_once_in_timestamp_order() {
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = sim(Scenario::BruteForce, Faults::default(), shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = config(yaml(dir.path(), &sim, "start_at: 1h", &out));
    let topology = runtime::start(&cfg, shared.clone()).expect("starts");
    run_minutes(&clock, &sim, 25).await;
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);

    let cp = checkpoint(dir.path());
    let lookback = cp.start - (t0() - chrono::Duration::hours(1));
    assert!(lookback >= chrono::Duration::zero() && lookback < chrono::Duration::minutes(1));
    assert!(cp.watermark >= t0() + chrono::Duration::minutes(24));
    let expected = direct(&sim, shared, cp.start, cp.watermark).await;
    let got = lines(&out);
    assert!(
        expected.len() > 100,
        "a meaningful sample: {}",
        expected.len()
    );
    assert_exactly_once(&got, &expected);
    assert_time_ordered(&got);
    // Failed logins arrive as the PCE's JSON, unchanged and matchable.
    let failed = got
        .iter()
        .find(|e| e["status"] == "failure" && e["event_type"] == "user.sign_in")
        .expect("a failed sign-in");
    assert_eq!(
        failed["notifications"][0]["notification_type"],
        "user.login_failed"
    );
    let by_href: HashMap<&str, &Value> = expected
        .iter()
        .map(|e| (e["href"].as_str().unwrap(), e))
        .collect();
    for e in &got {
        let want = by_href[e["href"].as_str().unwrap()];
        assert_eq!(e.to_string(), want.to_string(), "changed or reordered JSON");
    }
    assert!(
        got.iter()
            .any(|e| e["href"].as_str().unwrap().starts_with("/system_events/"))
    );
    sim.shutdown().await;
}

/// Late-indexed events (150 s here) are caught once: by the overlap when it is long
/// enough (5 min: nothing counted), and when it is not (1 min, with a 1 min interval) they
/// are not lost either: the range behind the overlap is read again once per overlap,
/// and what turns up there is handed on — once — and counted as the source's error (and
/// logged with its lag), so a too-short overlap shows. With an overlap long enough the
/// count stays zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_indexed_later_than_the_overlap_are_handed_on_and_counted() {
    for (overlap, late_expected) in [("1m", true), ("5m", false)] {
        let clock = VirtualClock::new(t0());
        let shared: SharedClock = Arc::new(clock.clone());
        let lag = Faults {
            event_index_lag_secs: 150,
            ..Faults::default()
        };
        let sim = sim(Scenario::BruteForce, lag, shared.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.jsonl");
        let options = format!("start_at: 30m, overlap: {overlap}");
        let cfg = config(yaml(dir.path(), &sim, &options, &out));
        let topology = runtime::start(&cfg, shared.clone()).expect("starts");
        run_minutes(&clock, &sim, 25).await;
        let errors: u64 = topology
            .reloader()
            .nodes()
            .await
            .iter()
            .filter(|n| n.id == "audit.pce")
            .map(|n| n.errors)
            .sum();
        topology.shutdown();
        assert!(!topology.wait().await.failed());

        let cp = checkpoint(dir.path());
        let got = lines(&out);
        let lag = chrono::Duration::seconds(150);
        let expected = direct(&sim, shared.clone(), cp.start, cp.watermark - lag).await;
        let got_h: Vec<String> = hrefs(&got);
        let got_set: HashSet<&String> = got_h.iter().collect();
        assert_eq!(
            got_set.len(),
            got_h.len(),
            "duplicates in the output ({overlap})"
        );
        for h in hrefs(&expected) {
            assert!(
                got_set.contains(&h),
                "{h} never arrived (overlap {overlap})"
            );
        }
        // And without the fault, nothing beyond the range was invented.
        sim.set_faults(Faults::default());
        let all = direct(&sim, shared, cp.start, cp.watermark).await;
        let all: HashSet<String> = hrefs(&all).into_iter().collect();
        assert!(got_h.iter().all(|h| all.contains(h)));
        assert!(expected.len() > 50, "{}", expected.len());
        if late_expected {
            assert!(
                errors > 0,
                "the late events were counted (overlap {overlap})"
            );
        } else {
            assert_eq!(errors, 0, "nothing was late past overlap {overlap}");
        }
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pages_are_narrowed_and_nothing_is_lost() {
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = sim(Scenario::BruteForce, Faults::default(), shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = config(yaml(
        dir.path(),
        &sim,
        "start_at: 30m, max_results: 5",
        &out,
    ));
    let topology = runtime::start(&cfg, shared.clone()).expect("starts");
    run_minutes(&clock, &sim, 12).await;
    topology.shutdown();
    assert!(!topology.wait().await.failed());

    let cp = checkpoint(dir.path());
    let expected = direct(&sim, shared, cp.start, cp.watermark).await;
    assert!(
        expected.len() > 40,
        "{} {:?} {}",
        expected.len(),
        cp,
        sim.request_log()
            .iter()
            .map(|r| format!("{} {}\n", r.at, r.query))
            .collect::<String>()
    );
    let got = lines(&out);
    assert_exactly_once(&got, &expected);
    assert_time_ordered(&got);
    // Narrowing happened: many more queries than cycles, every one with the page size.
    let queries: Vec<_> = sim
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/events") && r.query.contains("max_results=5"))
        .collect();
    assert!(
        queries.len() > expected.len() / 5,
        "{} queries",
        queries.len()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_from_the_checkpoint_without_gaps_or_duplicates() {
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = sim(Scenario::BruteForce, Faults::default(), shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = config(yaml(dir.path(), &sim, "start_at: 1h, max_results: 5", &out));

    // First run: stopped in the middle of its first (narrowed) catch-up cycle.
    let first = runtime::start(&cfg, shared.clone()).expect("starts");
    nudge_until(&clock, "some events", || lines(&out).len() >= 20).await;
    first.shutdown();
    assert!(!first.wait().await.failed());
    let stopped_at = checkpoint(dir.path()).watermark;
    let after_first = lines(&out).len();
    assert!(after_first >= 20);
    assert!(
        stopped_at < clock.now(),
        "stopped before catching up (watermark {stopped_at})"
    );

    // Second run on the same state: continues, then follows for a few cycles.
    let second = runtime::start(&cfg, shared.clone()).expect("starts again");
    run_minutes(&clock, &sim, 8).await;
    second.shutdown();
    assert!(!second.wait().await.failed());

    let cp = checkpoint(dir.path());
    assert_eq!(cp.start, t0() - chrono::Duration::hours(1));
    let expected = direct(&sim, shared, cp.start, cp.watermark).await;
    let got = lines(&out);
    assert!(got.len() > after_first);
    assert_exactly_once(&got, &expected);
    sim.shutdown().await;
}

/// Waits (asynchronously, so the in-process simulator keeps serving) until `cond` holds.
async fn wait_real(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_vigil(dir: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--pipelines"])
        .arg(dir.join("pipelines"))
        .current_dir(dir)
        .env("PCE_KEY", "api_sim")
        .env("PCE_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vigil starts")
}

fn stored_checkpoint(dir: &Path) -> Option<EventsCheckpoint> {
    let store = Store::open(&dir.join("state")).ok()?;
    let v = store.checkpoint(NODE).ok()??;
    EventsCheckpoint::from_json(&v)
}

/// `vigil run` killed with SIGKILL in the middle of its catch-up, then started again on
/// the same state: no event is missing, and only the batch handed on but not yet
/// checkpointed when the process died (at most one page, `max_results` events) appears
/// twice. That is the documented window; downstream de-duplication by href covers it.
///
/// The source checkpoints a batch only once every sink has flushed it (the runtime's
/// end-to-end acknowledgement), so a SIGKILL cannot lose a checkpointed event that was
/// still in a channel or a sink's buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_catch_up_loses_nothing_and_repeats_at_most_one_batch() {
    const PAGE: usize = 50;
    let wall: SharedClock = Arc::new(vigil::runtime::WallClock);
    let sim = sim(Scenario::BruteForce, Faults::default(), wall.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    let text = yaml(
        dir.path(),
        &sim,
        &format!("start_at: 6h, interval: 1s, max_results: {PAGE}"),
        &out,
    );
    std::fs::write(dir.path().join("pipelines/p.yaml"), text).unwrap();

    let mut first = spawn_vigil(dir.path());
    wait_real("the first events", Duration::from_secs(15), || {
        if let Ok(Some(status)) = first.try_wait() {
            panic!("vigil exited early: {status}");
        }
        lines(&out).len() >= 3 * PAGE
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let at_kill = lines(&out).len();
    let killed_at = stored_checkpoint(dir.path()).expect("checkpointed before the kill");
    assert!(
        killed_at.watermark < chrono::Utc::now() - chrono::Duration::minutes(1),
        "killed in the middle of the catch-up (watermark {})",
        killed_at.watermark
    );

    let restarted_at = chrono::Utc::now();
    let mut second = spawn_vigil(dir.path());
    wait_real(
        "the restarted run to catch up",
        Duration::from_secs(15),
        || stored_checkpoint(dir.path()).is_some_and(|c| c.watermark >= restarted_at),
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_real("vigil to stop", Duration::from_secs(15), || {
        second.try_wait().ok().flatten().is_some()
    })
    .await;
    let output = second.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let cp = stored_checkpoint(dir.path()).expect("a checkpoint");
    let expected = direct(&sim, wall, cp.start, cp.watermark).await;
    let got = lines(&out);
    assert!(got.len() > at_kill, "the second run added events");
    let want: HashSet<String> = hrefs(&expected).into_iter().collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    for h in hrefs(&got) {
        *count.entry(h).or_default() += 1;
    }
    let missing: Vec<_> = want.iter().filter(|h| !count.contains_key(*h)).collect();
    assert!(missing.is_empty(), "missing after the kill: {missing:?}");
    assert!(
        count.keys().all(|h| want.contains(h)),
        "events outside the range"
    );
    let repeated: usize = count.values().map(|n| n - 1).sum();
    assert!(
        repeated <= PAGE,
        "{repeated} events repeated: more than the one batch in flight at the kill"
    );
    sim.shutdown().await;
}

/// `vigil validate` accepts a `pce_events` pipeline and points at a misspelt key.
#[test]
fn validate_accepts_pce_events_and_rejects_a_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = |extra: &str| {
        format!(
            "kind: settings\nconnections:\n  pce:\n    prod:\n      url: https://pce.example.com:8443\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n---\nkind: pipeline\nname: audit\nsources:\n  pce:\n    type: pce_events\n    connection: prod\n    event_types: [agent.tampering, user.sign_in]\n    severity: err\n    status: failure\n    start_at: 24h\n    max_results: 500\n    {extra}: 5m\nsinks:\n  out: {{type: stdout, inputs: [pce]}}\n"
        )
    };
    let run = |text: String| {
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["validate", "--no-env"])
            .arg(&path)
            .output()
            .expect("vigil runs")
    };
    let ok = run(file("overlap"));
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = run(file("overlapp"));
    assert!(!bad.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        text.contains("unknown-key") && text.contains("overlap"),
        "{text}"
    );
}

/// A PCE that keeps failing (5xx beyond the client's retries) does not stop the source:
/// the cycle is counted as an error, the watermark stays, and once the PCE recovers
/// everything arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pce_errors_are_retried_next_interval_without_moving_the_watermark() {
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let failing = Faults {
        server_errors: 14,
        ..Faults::default()
    };
    let sim = sim(Scenario::BruteForce, failing, shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let cfg = config(yaml(dir.path(), &sim, "start_at: 20m", &out));
    let topology = runtime::start(&cfg, shared.clone()).expect("starts");
    // 14 errors = two whole failed cycles (1 + 5 retries each) and a retried request.
    run_minutes(&clock, &sim, 10).await;
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    let source = report.nodes.iter().find(|n| n.id == NODE).unwrap();
    assert!(source.errors >= 2, "{source:?}");
    assert!(sim.request_log().iter().any(|r| r.status >= 500));

    let cp = checkpoint(dir.path());
    let expected = direct(&sim, shared, cp.start, cp.watermark).await;
    assert!(expected.len() > 20, "{}", expected.len());
    assert_exactly_once(&lines(&out), &expected);
    sim.shutdown().await;
}

/// Every documented variant passes through unchanged; a record without href or timestamp
/// is counted and set aside (once, although the overlap returns it again), never fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_records_are_set_aside_and_every_documented_variant_passes() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    let at = |s: u32| format!("2026-03-02T08:59:{s:02}.000Z");
    let body = serde_json::json!([
        {"href": "/system_events/b", "timestamp": at(20), "pce_fqdn": "pce", "event_type": "user.sign_in",
         "status": "failure", "severity": "err", "created_by": {"system": {}},
         "action": {"uuid": "u", "api_endpoint": "FILTERED", "api_method": "POST", "http_status_code": 401, "src_ip": "FILTERED"},
         "notifications": [{"uuid": "n", "notification_type": "user.login_failed",
                            "info": {"associated_user": {"supplied_username": "admin"}}}]},
        {"timestamp": at(21), "event_type": "no.href"},
        {"href": "/orgs/1/events/c", "event_type": "no.timestamp"},
        {"href": "/orgs/1/events/a", "timestamp": at(10), "event_type": "agent.tampering",
         "status": null, "action": null,
         "created_by": {"agent": {"href": "/orgs/1/agents/7", "hostname": "db1"}, "ven": {"href": "/orgs/1/vens/7", "hostname": "db1"}}},
        {"href": "/orgs/1/events/d", "timestamp": at(30), "event_type": "container_cluster.security_policy_applied",
         "created_by": {"container_cluster": {"href": "/orgs/1/container_clusters/1", "name": "k8s"}}},
        {"href": "/orgs/1/events/e", "timestamp": at(40), "event_type": "sec_policy.create",
         "created_by": {"user": {"href": "/users/1", "username": "alice@corp.example"}},
         "notifications": (0..300).map(|i| serde_json::json!({"uuid": i, "notification_type": "sec_policy.workload_policy_changed"})).collect::<Vec<_>>()}
    ]);
    Mock::given(method("GET"))
        .and(path("/api/v2/orgs/1/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
        .mount(&server)
        .await;

    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let text = format!(
        "kind: settings\nstate_dir: {state}\nconnections:\n  pce:\n    lab:\n      url: {url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n---\nkind: pipeline\nname: audit\nsources:\n  pce: {{type: pce_events, connection: lab, start_at: 10m}}\nsinks:\n  out: {{type: file, path: {out}, inputs: [pce]}}\n",
        state = dir.path().join("state").display(),
        url = server.uri(),
        out = out.display(),
    );
    let topology = runtime::start(&config(text), shared).expect("starts");
    let requests =
        || futures::executor::block_on(server.received_requests()).map_or(0, |r| r.len());
    nudge_until(&clock, "the first cycle", || lines(&out).len() == 4).await;
    let before = requests();
    clock.advance(Duration::from_secs(60));
    nudge_until(&clock, "a second cycle", || requests() > before).await;
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    let source = report.nodes.iter().find(|n| n.id == NODE).unwrap();
    assert_eq!(source.errors, 2, "{source:?}");

    let got = lines(&out);
    assert_eq!(
        hrefs(&got),
        [
            "/orgs/1/events/a",
            "/system_events/b",
            "/orgs/1/events/d",
            "/orgs/1/events/e"
        ],
        "sorted by timestamp, each once"
    );
    let originals: HashMap<&str, &Value> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e.get("href")?.as_str()?, e)))
        .collect();
    for e in &got {
        assert_eq!(
            e.to_string(),
            originals[e["href"].as_str().unwrap()].to_string()
        );
    }
    let rejected = std::fs::read_to_string(dir.path().join(format!("state/rejected/{NODE}.jsonl")))
        .expect("a set-aside file");
    let rejected: Vec<Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("href"));
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("timestamp")
    );
}
