//! The `pce_*` sources running in a real graph against the PCE simulator over HTTP, on a
//! virtual clock the test moves (no sleeping: each step waits for the simulator to see
//! the next request, with a deadline).

mod common;

use common::{SECRET, lines, nudge_until};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::Value;
use vigil::pce::sim::{Faults, RunningSim, Scenario};
use vigil::runtime::{self, VirtualClock};

async fn sim(scenario: Scenario, clock: &VirtualClock) -> RunningSim {
    common::sim(scenario, 11, Faults::default(), Arc::new(clock.clone())).await
}

fn config(dir: &Path, sim: &RunningSim, pipeline: &str) -> vigil::config::Config {
    common::load(format!("{}{pipeline}", common::settings(dir, sim, "")))
}

/// Waits (yielding, up to a deadline) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pce_health_reports_each_change_of_a_degrading_pce() {
    let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
    let sim = sim(Scenario::DegradedPce, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("health.jsonl");
    let config = config(
        dir.path(),
        &sim,
        &format!(
            "kind: pipeline\nname: health\nsources:\n  pce: {{type: pce_health, connection: lab, interval: 1m}}\nsinks:\n  out: {{type: file, path: {}, inputs: [pce]}}\n",
            out.display()
        ),
    );
    let topology = runtime::start(&config, Arc::new(clock.clone())).expect("starts");
    let health_calls = || {
        sim.request_log()
            .iter()
            .filter(|r| r.path == "/api/v2/health")
            .count()
    };
    // 45 minutes of PCE life, one check a minute: the scenario goes normal → warning →
    // critical → normal in 10-minute phases.
    for minute in 1..=45 {
        let before = health_calls();
        clock.advance(Duration::from_secs(60));
        nudge_until(&clock, &format!("health check {minute}"), || {
            health_calls() > before
        })
        .await;
    }
    until("the last event written", || !lines(&out).is_empty()).await;
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);

    let events = lines(&out);
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    // Only changes are reported, each once.
    assert!(statuses.windows(2).all(|w| w[0] != w[1]), "{statuses:?}");
    let seq = statuses.join(">");
    assert!(seq.contains("warning>critical"), "{seq}");
    assert!(
        seq.contains("critical>normal") || seq.contains("critical>warning"),
        "{seq}"
    );
    assert_eq!(events[0]["previous_status"], Value::Null);
    assert!(
        events
            .iter()
            .skip(1)
            .all(|e| e["changed"] == true && e["previous_status"].is_string())
    );
    assert!(
        events
            .iter()
            .all(|e| e["connection"] == "lab" && e["source_type"] == "pce_health")
    );
    let degraded = events.iter().find(|e| e["status"] == "critical").unwrap();
    assert!(degraded["clusters"][0]["fqdn"].is_string());
    // Every request authenticated; the secret appears in no event.
    assert!(sim.request_log().iter().all(|r| r.authenticated));
    assert!(!std::fs::read_to_string(&out).unwrap().contains(SECRET));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pce_health_repeats_itself_and_reports_an_unreachable_pce() {
    let clock = VirtualClock::new(chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap());
    let sim = sim(Scenario::Quiet, &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("health.jsonl");
    let config = config(
        dir.path(),
        &sim,
        &format!(
            "kind: pipeline\nname: health\nsources:\n  pce: {{type: pce_health, connection: lab, interval: 1m, repeat: 5m}}\nsinks:\n  out: {{type: file, path: {}, inputs: [pce]}}\n",
            out.display()
        ),
    );
    let topology = runtime::start(&config, Arc::new(clock.clone())).expect("starts");
    until("the first status", || lines(&out).len() == 1).await;
    // Past `repeat` with no change: the status is reported again.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(60));
    }
    until("the reminder", || lines(&out).len() == 2).await;
    // The PCE goes away: after the client's retries the source says so.
    sim.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lines(&out).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no unreachable event");
        clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    topology.shutdown();
    topology.wait().await;
    let events = lines(&out);
    assert_eq!(events[0]["status"], "normal");
    assert_eq!(events[1]["status"], "normal");
    assert_eq!(events[1]["changed"], false);
    assert_eq!(events[2]["status"], "unreachable");
    assert_eq!(events[2]["previous_status"], "normal");
    let error = events[2]["error"].as_str().unwrap();
    assert!(!error.is_empty() && !error.contains(SECRET), "{error}");
}
