//! The PCE client against the PCE simulator over real HTTP: the same code paths a real PCE
//! would see. Client and simulator share one [`JumpClock`]: every wait the client asks for
//! (polling an async query, a `Retry-After`) moves the simulator's time too, so query
//! lifecycles complete without sleeping.

use std::sync::Arc;

use chrono::TimeZone;
use vigil::config::Duration as CfgDuration;
use vigil::pce::client::{
    EventQuery, PceClient, PceConnectionConfig, PolicyDecision, PolicyVersion, Secret,
    TrafficQuery, WorkloadQuery,
};
use vigil::pce::sim::{Faults, PceSim, RateLimitStorm, RunningSim, Scenario, SimConfig};
use vigil::runtime::{JumpClock, SharedClock};

struct Harness {
    sim: RunningSim,
    client: PceClient,
    clock: Arc<JumpClock>,
}

impl Harness {
    /// A traffic query for the simulated PCE's last 30 minutes.
    fn last_half_hour(&self) -> TrafficQuery {
        let end = vigil::runtime::Clock::now(self.clock.virtual_clock());
        TrafficQuery::new(
            "vigil-test",
            end - chrono::Duration::minutes(30),
            end,
            200_000,
        )
    }
}

async fn start(scenario: Scenario, faults: Faults) -> Harness {
    let start = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    let clock = JumpClock::new(start);
    let sim_clock: SharedClock = Arc::new(clock.virtual_clock().clone());
    let cfg = SimConfig {
        scenario,
        seed: 7,
        faults,
        ..SimConfig::default()
    };
    let (key, secret) = (cfg.api_key.clone(), cfg.api_secret.clone());
    let sim = PceSim::start(cfg, sim_clock, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts");
    let mut conn = PceConnectionConfig::new(sim.url(), Secret::new(key), Secret::new(secret));
    conn.insecure_http = true; // the simulator serves plain HTTP
    conn.request_timeout = CfgDuration::from_secs(10);
    let client_clock: SharedClock = clock.clone();
    let client = PceClient::new(&conn, client_clock).expect("client builds");
    // Let some scenario time pass so there is history to read.
    clock
        .virtual_clock()
        .advance(std::time::Duration::from_secs(30 * 60));
    Harness { sim, client, clock }
}

#[tokio::test]
async fn brute_force_events_through_the_client() {
    let h = start(Scenario::BruteForce, Faults::default()).await;
    let now = h.clock.virtual_clock().clone();
    let end = vigil::runtime::Clock::now(&now);
    let q = EventQuery {
        since: Some(end - chrono::Duration::minutes(30)),
        until: Some(end),
        max_results: Some(10_000),
        ..EventQuery::default()
    };
    let events = h.client.events(&q).await.expect("events");
    let failed_logins = events
        .iter()
        .filter(|e| {
            e["status"] == "failure"
                && e["notifications"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|n| n["notification_type"] == "user.login_failed")
                })
        })
        .count();
    assert!(
        failed_logins >= 5,
        "brute force shows as failed logins ({failed_logins})"
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn async_traffic_query_completes_and_downloads() {
    let h = start(Scenario::PortScan, Faults::default()).await;
    let end = vigil::runtime::Clock::now(h.clock.virtual_clock());
    let mut q = TrafficQuery::new(
        "vigil-test",
        end - chrono::Duration::minutes(20),
        end,
        200_000,
    );
    q.policy_decisions = vec![PolicyDecision::Blocked, PolicyDecision::PotentiallyBlocked];
    let result = h.client.traffic_query(&q).await.expect("traffic query");
    assert!(!result.flows.is_empty());
    assert!(!result.truncated);
    assert_eq!(result.flows.len() as u64, result.matches_count);
    assert!(result.flows.iter().all(|f| {
        ["blocked", "potentially_blocked"].contains(&f["policy_decision"].as_str().unwrap_or(""))
    }));
    // The client polled with its growing interval on the shared clock.
    assert!(!h.clock.waits().is_empty());
    let log = h.sim.request_log();
    assert!(log.iter().any(|r| r.method == "POST" && r.status == 202));
    assert!(
        log.iter()
            .any(|r| r.path.ends_with("/download") && r.status == 200)
    );
    assert!(log.iter().all(|r| r.authenticated));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_download_is_read_one_flow_at_a_time_with_its_bytes() {
    let h = start(Scenario::Exfiltration, Faults::default()).await;
    let q = h.last_half_hour();
    let download = h.client.traffic_download(&q).await.expect("download");
    let mut n = 0u64;
    for record in download.records() {
        let (flow, raw) = record.expect("a flow");
        let reparsed: serde_json::Value =
            serde_json::from_slice(&raw).expect("raw bytes are the flow");
        assert_eq!(reparsed, flow);
        n += 1;
    }
    assert_eq!(n, download.matches_count);
    assert!(!download.is_truncated(n));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn gzip_empty_first_download_and_truncation() {
    let faults = Faults {
        gzip_downloads: true,
        empty_first_download: true,
        truncate_results: true,
        ..Faults::default()
    };
    let h = start(Scenario::Quiet, faults).await;
    let q = h.last_half_hour();
    let result = h.client.traffic_query(&q).await.expect("traffic query");
    assert!(result.truncated, "matches_count > max_results is flagged");
    assert!(result.matches_count > result.flows.len() as u64);
    assert!(
        !result.flows.is_empty(),
        "the empty first download was retried"
    );
    let downloads = h
        .sim
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/download"))
        .count();
    assert!(
        downloads >= 2,
        "downloaded again after the empty one ({downloads})"
    );
    h.sim.shutdown().await;
}

/// The flows of a gzip download read as it arrives (`traffic_stream`, as the
/// `pce_traffic` sources read it; the inflating runs off the async workers) are the flows
/// of the plain download, byte for byte and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_download_read_as_it_arrives_gives_the_plain_downloads_flows() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let q = h.last_half_hour();
    let read = |q: TrafficQuery| {
        let client = h.client.clone();
        async move {
            let mut stream = client.traffic_stream(&q).await.expect("traffic stream");
            let mut flows = Vec::new();
            while let Some(tape) = stream.next().await.expect("a flow") {
                flows.push(tape.raw());
            }
            flows
        }
    };
    let plain = read(q.clone()).await;
    h.sim.set_faults(Faults {
        gzip_downloads: true,
        ..Faults::default()
    });
    let zipped = read(q).await;
    assert!(plain.len() > 100, "{} flows", plain.len());
    assert_eq!(zipped, plain);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_storm_is_ridden_out_honouring_retry_after() {
    let faults = Faults {
        rate_limit_storm: Some(RateLimitStorm {
            requests: 2,
            retry_after_secs: Some(7),
        }),
        ..Faults::default()
    };
    let h = start(Scenario::Quiet, faults).await;
    let health = h.client.health().await.expect("health after the storm");
    assert_eq!(health.len(), 1);
    assert!(h.clock.waits().iter().filter(|w| w.as_secs() == 7).count() >= 2);
    let statuses: Vec<u16> = h.sim.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn names_labels_ip_lists_and_workloads() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let labels = h.client.labels(Some("role"), None).await.expect("labels");
    assert!(!labels.is_empty() && labels.iter().all(|l| l["key"] == "role"));
    let lists = h
        .client
        .ip_lists(PolicyVersion::Active)
        .await
        .expect("ip lists");
    assert!(lists.iter().any(|l| l["name"] == "Scanners"));
    let workloads = h
        .client
        .workloads(&WorkloadQuery::default())
        .await
        .expect("workloads");
    assert!(!workloads.is_empty() && workloads.len() <= h.sim.estate().workloads.len());
    assert!(workloads.iter().all(|w| {
        w["href"]
            .as_str()
            .is_some_and(|h| h.contains("/workloads/"))
    }));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_is_a_clear_error() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let mut conn =
        PceConnectionConfig::new(h.sim.url(), Secret::new("api_sim"), Secret::new("wrong"));
    conn.insecure_http = true; // the simulator serves plain HTTP
    conn.request_timeout = CfgDuration::from_secs(10);
    let clock: SharedClock = h.clock.clone();
    let client = PceClient::new(&conn, clock).unwrap();
    let err = client.health().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let text = err.to_string();
    assert!(
        text.contains("api_key") || text.contains("secret"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the secret is not echoed: {text}");
    h.sim.shutdown().await;
}
