//! The PCE simulator over real HTTP on loopback, driven by a virtual clock.

mod common;

use std::collections::HashSet;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use vigil::pce::sim::{Faults, PceSim, RateLimitStorm, Scenario, SimConfig};
use vigil::runtime::VirtualClock;

use common::sim_http::{Harness, Reply, read};

const KEY: &str = "api_test";
const SECRET: &str = "test-secret";

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-09-11T09:00:30Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn start_with(scenario: Scenario, seed: u64, faults: Faults) -> Harness {
    let clock = VirtualClock::new(start_time());
    let cfg = SimConfig {
        scenario,
        seed,
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        faults,
        ..SimConfig::default()
    };
    let sim = PceSim::start(
        cfg,
        Arc::new(clock.clone()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("simulator starts");
    Harness {
        sim,
        clock,
        http: reqwest::Client::new(),
        key: KEY,
        secret: SECRET,
    }
}

async fn start(scenario: Scenario) -> Harness {
    start_with(scenario, 1, Faults::default()).await
}

impl Harness {
    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Events in the last `minutes` minutes, up to 10,000.
    async fn recent_events(&self, minutes: i64, extra: &[(&str, String)]) -> Vec<Value> {
        let now = start_time().max(self.clock_now());
        let mut q = vec![
            (
                "timestamp[gte]",
                stamp(now - chrono::Duration::minutes(minutes)),
            ),
            ("max_results", "10000".to_string()),
        ];
        q.extend(extra.iter().cloned());
        let r = self.get_query("/orgs/1/events", &q).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json().as_array().cloned().expect("array")
    }

    fn clock_now(&self) -> DateTime<Utc> {
        use vigil::runtime::Clock as _;
        self.clock.now()
    }

    /// Creates a traffic query, lets it complete and returns its final status.
    async fn completed_query(&self, body: &Value) -> Value {
        let created = self.post("/orgs/1/traffic_flows/async_queries", body).await;
        assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.json());
        let href = created.json()["href"].as_str().expect("href").to_string();
        self.advance(3);
        let status = self.get(&href).await.json();
        assert_eq!(status["status"], "completed");
        status
    }

    async fn download(&self, status: &Value) -> Reply {
        let result = status["result"].as_str().expect("result href");
        self.get(result).await
    }
}

fn last_hour_query(h: &Harness) -> Value {
    let now = h.clock_now();
    json!({
        "query_name": "test",
        "start_date": stamp(now - chrono::Duration::hours(1)),
        "end_date": stamp(now),
        "policy_decisions": [],
        "max_results": 100_000,
        "sources": {"include": [], "exclude": []},
        "destinations": {"include": [], "exclude": []},
    })
}

#[tokio::test]
async fn auth_wrong_org_unknown_path_and_node_available() {
    let h = start(Scenario::Quiet).await;
    let ok = h.get("/orgs/1/events?max_results=1").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.header("x-request-id").is_some());

    for auth in [None, Some("wrong")] {
        let mut req = h.http.get(h.url("/orgs/1/events"));
        if let Some(pw) = auth {
            req = req.basic_auth(KEY, Some(pw));
        }
        let r = read(req.send().await.expect("request")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()[0]["token"], "authentication_failed");
        assert!(r.json()[0]["message"].is_string());
        assert!(r.header("x-request-id").is_some());
    }

    let forbidden = h.get("/orgs/2/events").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert!(forbidden.json()[0]["token"].is_string());

    let missing = h.get("/orgs/1/no_such_thing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.header("x-request-id").is_some());

    let wrong_method = read(
        h.http
            .delete(h.url("/orgs/1/events"))
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.json()[0]["token"].is_string());

    let open = read(
        h.http
            .get(h.url("/node_available"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(open.status, StatusCode::OK);
    h.sim.shutdown().await;
}

fn created_by_shape(e: &Value) -> String {
    let mut keys: Vec<&str> = e["created_by"]
        .as_object()
        .expect("created_by object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys.join("+")
}

#[tokio::test]
async fn events_have_every_real_shape() {
    let h = start(Scenario::VenTampering).await;
    let events = h.recent_events(24 * 60, &[]).await;
    assert!(events.len() > 500, "a day of events: {}", events.len());
    let shapes: HashSet<String> = events.iter().map(created_by_shape).collect();
    for want in ["system", "user", "agent+ven", "container_cluster"] {
        assert!(
            shapes.contains(want),
            "created_by {want} missing: {shapes:?}"
        );
    }
    assert!(events.iter().any(|e| {
        e["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("/system_events/"))
    }));
    assert!(events.iter().any(|e| {
        e["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("/orgs/1/events/"))
    }));
    assert!(events.iter().any(|e| e["status"].is_null()));
    assert!(events.iter().any(|e| e["action"].is_null()));
    assert!(events.iter().any(|e| e["action"]["src_ip"] == "FILTERED"));
    assert!(
        events
            .iter()
            .any(|e| e["action"]["api_endpoint"] == "FILTERED")
    );
    assert!(
        events
            .iter()
            .any(|e| e["notifications"].as_array().is_some_and(|n| n.len() >= 20))
    );
    let types: HashSet<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    for t in [
        "agent.tampering",
        "agent.suspend",
        "system_task.agent_missed_heartbeats_check",
        "system_task.agent_offline_check",
        "sec_policy.create",
        "rule_set.update",
        "rule_sets.delete",
        "sec_rule.delete",
        "api_key.create",
        "user.sign_in",
        "user.login",
    ] {
        assert!(types.contains(t), "{t} missing");
    }
    for e in &events {
        let ts = e["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.ends_with('Z') && ts.len() == 24,
            "millisecond UTC timestamp: {ts}"
        );
        for field in [
            "href",
            "pce_fqdn",
            "event_type",
            "severity",
            "resource_changes",
        ] {
            assert!(!e[field].is_null(), "{field} in {e}");
        }
        assert_eq!(
            e["created_by"].as_object().map(|o| o.len().min(2)),
            Some(if created_by_shape(e) == "agent+ven" {
                2
            } else {
                1
            })
        );
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn events_filters_max_results_and_bare_date() {
    let h = start(Scenario::BruteForce).await;
    let five = h.get("/orgs/1/events?max_results=5").await;
    assert_eq!(five.json().as_array().map(Vec::len), Some(5));

    let failures = h.recent_events(60, &[("status", "failure".into())]).await;
    assert!(!failures.is_empty());
    assert!(failures.iter().all(|e| e["status"] == "failure"));

    let typed = h
        .recent_events(6 * 60, &[("event_type", "sec_policy.create".into())])
        .await;
    assert!(!typed.is_empty());
    assert!(typed.iter().all(|e| e["event_type"] == "sec_policy.create"));

    let errs = h.recent_events(60, &[("severity", "err".into())]).await;
    assert!(errs.iter().all(|e| e["severity"] == "err"));

    let now = h.clock_now();
    let bounded = h
        .get_query(
            "/orgs/1/events",
            &[
                ("timestamp[gte]", stamp(now - chrono::Duration::minutes(30))),
                ("timestamp[lte]", stamp(now - chrono::Duration::minutes(20))),
                ("max_results", "10000".into()),
            ],
        )
        .await
        .json();
    for e in bounded.as_array().expect("array") {
        let t =
            DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts")).expect("rfc3339");
        assert!(
            t >= now - chrono::Duration::minutes(30) && t <= now - chrono::Duration::minutes(20)
        );
    }

    let bare = h.get("/orgs/1/events?timestamp%5Bgte%5D=2026-09-10").await;
    assert_eq!(bare.status, StatusCode::NOT_ACCEPTABLE);
    assert!(bare.json()[0]["token"].is_string());
    let garbage = h.get("/orgs/1/events?max_results=lots").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(garbage.json()[0]["message"].is_string());
    h.sim.shutdown().await;
}

fn is_failed_login(e: &Value) -> bool {
    e["status"] == "failure"
        && e["created_by"].get("system").is_some()
        && matches!(
            e["event_type"].as_str(),
            Some("user.sign_in" | "user.login")
        )
        && e["notifications"].as_array().is_some_and(|n| {
            n.iter().any(|n| {
                n["notification_type"] == "user.login_failed"
                    && n["info"]["associated_user"]["supplied_username"].is_string()
            })
        })
}

#[tokio::test]
async fn brute_force_fails_logins_and_api_keys() {
    let h = start(Scenario::BruteForce).await;
    for _ in 0..3 {
        let events = h.recent_events(10, &[]).await;
        let failed = events.iter().filter(|e| is_failed_login(e)).count();
        assert!(failed >= 5, "{failed} failed logins in 10 minutes");
        assert!(
            events
                .iter()
                .any(|e| e["event_type"] == "request.authentication_failed")
        );
        h.advance(7 * 60);
    }
    let quiet = start(Scenario::Quiet).await;
    let events = quiet.recent_events(60, &[]).await;
    assert_eq!(events.iter().filter(|e| is_failed_login(e)).count(), 0);
    h.sim.shutdown().await;
    quiet.sim.shutdown().await;
}

#[tokio::test]
async fn new_events_appear_as_the_clock_advances_after_the_index_lag() {
    let lag = Faults {
        event_index_lag_secs: 300,
        ..Faults::default()
    };
    let h = start_with(Scenario::Quiet, 1, lag).await;
    let since = start_time();
    let q = [
        ("timestamp[gte]", stamp(since)),
        ("max_results", "10000".to_string()),
    ];
    let before = h.get_query("/orgs/1/events", &q).await.json();
    assert_eq!(
        before.as_array().map(Vec::len),
        Some(0),
        "nothing after now"
    );
    h.advance(30 * 60);
    let after = h.get_query("/orgs/1/events", &q).await.json();
    let after = after.as_array().expect("array");
    assert!(!after.is_empty(), "new events appear");
    let newest = after
        .iter()
        .filter_map(|e| DateTime::parse_from_rfc3339(e["timestamp"].as_str()?).ok())
        .max()
        .expect("timestamps");
    assert!(
        newest <= h.clock_now() - chrono::Duration::seconds(300),
        "lagged index"
    );
    h.sim.set_faults(Faults {
        event_index_lag_secs: u64::MAX,
        ..Faults::default()
    });
    let hidden = h.get_query("/orgs/1/events", &q).await;
    assert_eq!(hidden.status, StatusCode::OK);
    assert_eq!(hidden.json().as_array().map(Vec::len), Some(0));
    h.sim.set_faults(Faults::default());
    let fresh = h.get_query("/orgs/1/events", &q).await.json();
    assert!(fresh.as_array().map(Vec::len) >= Some(after.len()));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn async_traffic_query_lifecycle() {
    let h = start(Scenario::Quiet).await;
    let body = last_hour_query(&h);
    let created = h.post("/orgs/1/traffic_flows/async_queries", &body).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let c = created.json();
    assert_eq!(c["status"], "queued");
    let href = c["href"].as_str().expect("href").to_string();
    assert!(href.starts_with("/orgs/1/traffic_flows/async_queries/"));
    assert!(c["created_at"].is_string());
    assert_eq!(c["query_parameters"]["query_name"], "test");
    assert!(c.get("result").is_none());

    assert_eq!(h.get(&href).await.json()["status"], "queued");
    assert_eq!(
        h.get(&format!("{href}/download")).await.status,
        StatusCode::NOT_FOUND
    );
    h.clock.advance(Duration::from_millis(1500));
    assert_eq!(h.get(&href).await.json()["status"], "working");
    h.clock.advance(Duration::from_millis(1000));
    let done = h.get(&href).await.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], format!("{href}/download"));
    let matches = done["matches_count"].as_u64().expect("matches_count");
    assert!(matches >= 1000, "an hour of flows: {matches}");
    assert_eq!(done["flows_count"].as_u64(), Some(matches));

    let flows = h.download(&done).await.json();
    let flows = flows.as_array().expect("array");
    assert_eq!(flows.len() as u64, matches);
    check_flow_shapes(flows);
    h.sim.shutdown().await;
}

fn check_flow_shapes(flows: &[Value]) {
    let decisions: HashSet<&str> = flows
        .iter()
        .filter_map(|f| f["policy_decision"].as_str())
        .collect();
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    let states: HashSet<&str> = flows.iter().filter_map(|f| f["state"].as_str()).collect();
    for s in ["active", "closed", "timed out", "snapshot", "new"] {
        assert!(states.contains(s), "state {s}");
    }
    let ports: HashSet<u64> = flows
        .iter()
        .filter_map(|f| f["service"]["port"].as_u64())
        .collect();
    for p in [22, 3389, 5985, 443, 53, 5432] {
        assert!(ports.contains(&p), "port {p}");
    }
    let icmp: Vec<&Value> = flows
        .iter()
        .filter(|f| f["service"]["proto"] == 1)
        .collect();
    assert!(!icmp.is_empty());
    assert!(
        icmp.iter()
            .all(|f| f["icmp_type"] == 8 && !f["service"]["port"].is_u64())
    );
    assert!(flows.iter().any(|f| f["service"]["proto"] == 17));
    assert!(
        flows
            .iter()
            .any(|f| f["dst"]["fqdn"].is_string() && f["dst"].get("workload").is_none())
    );
    assert!(
        flows
            .iter()
            .any(|f| f["src"].get("workload").is_none() && f["src"]["ip_lists"].is_array())
    );
    assert!(flows.iter().any(|f| {
        f["src"]["workload"]["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("/orgs/1/kubernetes_workloads/"))
            && f["src"]["workload"]["hostname"].is_null()
    }));
    assert!(flows.iter().any(|f| {
        f["state"] == "snapshot"
            && f.get("boundary_decision") == Some(&Value::Null)
            && f["icmp_code"] == 0
    }));
    let zero = flows.iter().filter(|f| f["dst_bo"] == 0).count();
    assert!(zero * 2 > flows.len(), "bytes mostly 0");
    assert!(
        flows.iter().any(|f| f["dst_bo"].as_u64() > Some(1 << 30)),
        "some huge lifetime counters"
    );
    for f in flows {
        let tr = &f["timestamp_range"];
        for k in ["first_detected", "last_detected"] {
            let t = tr[k].as_str().expect("timestamp");
            assert_eq!(t.len(), 20, "seconds precision: {t}");
        }
        assert!(f["num_connections"].as_u64() >= Some(1));
        assert!(matches!(
            f["flow_direction"].as_str(),
            Some("inbound" | "outbound")
        ));
        if let Some(w) = f["src"].get("workload") {
            assert!(w["labels"].as_array().is_some_and(|l| {
                l.iter()
                    .all(|l| l["href"].is_string() && l["key"].is_string())
            }));
        }
    }
}

#[tokio::test]
async fn traffic_filters_by_actor_decision_and_service() {
    let h = start(Scenario::PortScan).await;
    let estate = h.sim.estate();
    let scanners = &estate.ip_lists[1];
    assert_eq!(scanners.name, "Scanners");
    let mut body = last_hour_query(&h);
    body["sources"]["include"] = json!([[{"ip_list": {"href": scanners.href(1, "active")}}]]);
    body["policy_decisions"] = json!(["blocked", "potentially_blocked"]);
    let status = h.completed_query(&body).await;
    let flows = h.download(&status).await.json();
    let flows = flows.as_array().expect("array");
    assert!(flows.len() >= 100, "a port scan: {}", flows.len());
    let src_ips: HashSet<&str> = flows
        .iter()
        .filter_map(|f| f["src"]["ip"].as_str())
        .collect();
    let dst_ports: HashSet<u64> = flows
        .iter()
        .filter_map(|f| f["service"]["port"].as_u64())
        .collect();
    let dst_hosts: HashSet<&str> = flows
        .iter()
        .filter_map(|f| f["dst"]["ip"].as_str())
        .collect();
    assert!(src_ips.len() <= 3 && dst_ports.len() > 50 && dst_hosts.len() > 10);
    assert!(flows.iter().all(|f| matches!(
        f["policy_decision"].as_str(),
        Some("blocked" | "potentially_blocked")
    )));

    let db = estate
        .labels
        .iter()
        .find(|l| l.key == "role" && l.value == "DB")
        .expect("DB label");
    let mut body = last_hour_query(&h);
    body["destinations"]["include"] = json!([[{"label": {"href": db.href}}]]);
    body["services"] = json!({"include": [{"port": 5432, "proto": 6}], "exclude": []});
    let flows = h.download(&h.completed_query(&body).await).await.json();
    let flows = flows.as_array().expect("array");
    assert!(!flows.is_empty());
    for f in flows {
        assert_eq!(f["service"]["port"], 5432);
        let labels = f["dst"]["workload"]["labels"].as_array().expect("labels");
        assert!(labels.iter().any(|l| l["href"] == db.href.as_str()));
    }

    let mut body = last_hour_query(&h);
    body["sources"]["exclude"] = json!([{"ip_list": {"href": scanners.href(1, "draft")}}]);
    let flows = h.download(&h.completed_query(&body).await).await.json();
    assert!(flows.as_array().expect("array").iter().all(|f| {
        !f["src"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("203.0.113."))
    }));

    let bad = h
        .post(
            "/orgs/1/traffic_flows/async_queries",
            &json!({"start_date": "2026-09-11T00:00:00Z"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::NOT_ACCEPTABLE);
    assert!(bad.json()[0]["token"].is_string());
    h.sim.shutdown().await;
}

#[tokio::test]
async fn exfiltration_sends_large_volumes_to_an_internet_fqdn() {
    let h = start(Scenario::Exfiltration).await;
    let estate = h.sim.estate();
    let source = &estate.workloads[estate.exfil_source];
    let mut body = last_hour_query(&h);
    body["sources"]["include"] = json!([[{"workload": {"href": source.href}}]]);
    let flows = h.download(&h.completed_query(&body).await).await.json();
    let big: Vec<&Value> = flows
        .as_array()
        .expect("array")
        .iter()
        .filter(|f| f["dst_bo"].as_u64() > Some(1_000_000_000))
        .collect();
    assert!(!big.is_empty());
    assert!(big.iter().any(|f| f["dst"]["fqdn"].is_string()));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn gzip_and_empty_first_downloads() {
    let faults = Faults {
        gzip_downloads: true,
        empty_first_download: true,
        ..Faults::default()
    };
    let h = start_with(Scenario::Quiet, 1, faults).await;
    let status = h.completed_query(&last_hour_query(&h)).await;
    assert!(status["matches_count"].as_u64() > Some(0));
    let first = h.download(&status).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.is_empty(), "empty first download");
    let second = h.download(&status).await;
    assert_eq!(second.header("content-encoding"), Some("gzip"));
    assert_eq!(&second.body[..2], &[0x1f, 0x8b]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&second.body[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    let flows: Value = serde_json::from_str(&text).expect("JSON inside");
    assert_eq!(
        flows.as_array().map(Vec::len) as Option<usize>,
        status["flows_count"].as_u64().map(|n| n as usize)
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn truncated_results_report_the_full_count() {
    let h = start(Scenario::Quiet).await;
    let mut body = last_hour_query(&h);
    body["max_results"] = json!(5);
    let status = h.completed_query(&body).await;
    assert!(status["matches_count"].as_u64() > Some(5));
    assert_eq!(status["flows_count"], 5);
    assert_eq!(
        h.download(&status).await.json().as_array().map(Vec::len),
        Some(5)
    );

    h.sim.set_faults(Faults {
        truncate_results: true,
        ..Faults::default()
    });
    let status = h.completed_query(&last_hour_query(&h)).await;
    let matches = status["matches_count"].as_u64().expect("count");
    let flows = status["flows_count"].as_u64().expect("count");
    assert!(matches > flows && flows > 0, "{matches} > {flows}");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn long_ranges_scale_to_200k_flows() {
    let h = start(Scenario::Quiet).await;
    let now = h.clock_now();
    let body = json!({
        "start_date": stamp(now - chrono::Duration::days(7)),
        "end_date": stamp(now),
        "policy_decisions": [],
        "max_results": 200_000,
    });
    let created = h.post("/orgs/1/traffic_flows/async_queries", &body).await;
    let href = created.json()["href"].as_str().expect("href").to_string();
    h.advance(3);
    let status = h.get(&href).await.json();
    assert!(
        status["matches_count"].as_u64() >= Some(200_000),
        "{status}"
    );
    assert_eq!(status["flows_count"], 200_000);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_storms_with_and_without_retry_after() {
    let h = start(Scenario::Quiet).await;
    for retry in [Some(7), None] {
        h.sim.set_faults(Faults {
            rate_limit_storm: Some(RateLimitStorm {
                requests: 3,
                retry_after_secs: retry,
            }),
            ..Faults::default()
        });
        for _ in 0..3 {
            let r = h.get("/orgs/1/labels").await;
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                r.header("retry-after"),
                retry.map(|s| s.to_string()).as_deref()
            );
            assert!(r.json()[0]["token"].is_string());
        }
        assert_eq!(h.get("/orgs/1/labels").await.status, StatusCode::OK);
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_then_recovery_and_slow_replies() {
    let faults = Faults {
        server_errors: 3,
        ..Faults::default()
    };
    let h = start_with(Scenario::Quiet, 1, faults).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = h.get("/orgs/1/events?max_results=1").await;
        assert!(r.status.is_server_error());
        assert!(r.json()[0]["message"].is_string());
        seen.push(r.status.as_u16());
    }
    assert_eq!(seen, [500, 502, 503]);
    assert_eq!(
        h.get("/orgs/1/events?max_results=1").await.status,
        StatusCode::OK
    );

    h.sim.set_faults(Faults {
        slow_reply_ms: 150,
        ..Faults::default()
    });
    let began = std::time::Instant::now();
    assert_eq!(h.get("/orgs/1/labels").await.status, StatusCode::OK);
    assert!(began.elapsed() >= Duration::from_millis(150));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn labels_ip_lists_workloads_and_the_async_job() {
    let h = start(Scenario::Quiet).await;
    let roles = h.get("/orgs/1/labels?key=role").await.json();
    let roles = roles.as_array().expect("array");
    assert!(roles.len() >= 4 && roles.iter().all(|l| l["key"] == "role"));
    assert!(roles.iter().all(|l| {
        l["href"]
            .as_str()
            .is_some_and(|h| h.starts_with("/orgs/1/labels/"))
    }));
    let partial = h.get("/orgs/1/labels?key=role&value=dom").await.json();
    assert_eq!(partial.as_array().map(Vec::len), Some(1));
    assert_eq!(partial[0]["value"], "DomainController");

    for pstate in ["draft", "active"] {
        let lists = h
            .get(&format!("/orgs/1/sec_policy/{pstate}/ip_lists"))
            .await
            .json();
        let names: Vec<&str> = lists
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|l| l["name"].as_str())
            .collect();
        assert!(
            names.contains(&"Any (0.0.0.0/0 and ::/0)")
                && names.contains(&"Scanners")
                && names.contains(&"Corporate")
        );
        let corporate = lists
            .as_array()
            .expect("array")
            .iter()
            .find(|l| l["name"] == "Corporate")
            .expect("Corporate");
        assert!(
            corporate["href"]
                .as_str()
                .is_some_and(|h| h.contains(pstate))
        );
        assert!(
            corporate["ip_ranges"][0]["from_ip"].is_string()
                && corporate["fqdns"][0]["fqdn"].is_string()
        );
    }
    assert_eq!(
        h.get("/orgs/1/sec_policy/bogus/ip_lists").await.status,
        StatusCode::NOT_FOUND
    );

    let plain = h.get("/orgs/1/workloads?max_results=10").await;
    let total: usize = plain
        .header("x-total-count")
        .and_then(|v| v.parse().ok())
        .expect("X-Total-Count");
    assert!((40..=80).contains(&total), "{total} workloads");
    assert_eq!(plain.json().as_array().map(Vec::len), Some(10));
    assert!(plain.json()[0]["labels"][0]["key"].is_string());

    let db = h
        .sim
        .estate()
        .labels
        .iter()
        .find(|l| l.key == "role" && l.value == "DB")
        .expect("DB label")
        .href
        .clone();
    let dbs = h
        .get_query(
            "/orgs/1/workloads",
            &[("labels", json!([[db]]).to_string())],
        )
        .await;
    let dbs = dbs.json();
    let dbs = dbs.as_array().expect("array");
    assert!(!dbs.is_empty() && dbs.len() < total);
    assert!(dbs.iter().all(|w| {
        w["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["href"] == db.as_str()))
    }));
    let bad = h
        .get_query("/orgs/1/workloads", &[("labels", "role=db".to_string())])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let accepted = read(
        h.http
            .get(h.url("/orgs/1/workloads"))
            .basic_auth(KEY, Some(SECRET))
            .header("Prefer", "respond-async")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(accepted.header("retry-after"), Some("5"));
    let job = accepted.header("location").expect("Location").to_string();
    assert!(job.starts_with("/orgs/1/jobs/"));
    assert_eq!(h.get(&job).await.json()["status"], "pending");
    h.advance(2);
    assert_eq!(h.get(&job).await.json()["status"], "running");
    h.advance(2);
    let done = h.get(&job).await.json();
    assert_eq!(done["status"], "done");
    let file = done["result"]["href"].as_str().expect("datafile href");
    assert!(file.starts_with("/orgs/1/datafiles/"));
    assert_eq!(
        h.get(file).await.json().as_array().map(Vec::len),
        Some(total)
    );
    h.sim.shutdown().await;
}

#[tokio::test]
async fn health_is_normal_or_degrades_over_time() {
    let h = start(Scenario::Quiet).await;
    let r = h.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    let cluster = &r.json()[0];
    assert_eq!(cluster["status"], "normal");
    for k in [
        "type",
        "fqdn",
        "available_seconds",
        "notifications",
        "nodes",
        "generated_at",
    ] {
        assert!(!cluster[k].is_null(), "{k}");
    }
    assert!(
        read(h.http.get(h.url("/health")).send().await.expect("request"))
            .await
            .status
            == StatusCode::UNAUTHORIZED
    );

    let d = start(Scenario::DegradedPce).await;
    let mut statuses = HashSet::new();
    let mut failures = 0;
    for _ in 0..6 {
        let r = d.get("/health").await;
        assert_eq!(r.status, StatusCode::OK);
        let c = &r.json()[0];
        statuses.insert(c["status"].as_str().expect("status").to_string());
        if c["status"] != "normal" {
            assert!(c["notifications"][0]["token"].is_string());
        }
        for _ in 0..4 {
            if d.get("/orgs/1/labels").await.status.is_server_error() {
                failures += 1;
            }
        }
        d.advance(6 * 60);
    }
    for s in ["normal", "warning", "critical"] {
        assert!(statuses.contains(s), "{s} in {statuses:?}");
    }
    assert!(failures > 0, "some 5xx while critical");
    h.sim.shutdown().await;
    d.sim.shutdown().await;
}

/// A fixed sequence of requests; their bodies and request ids.
async fn transcript(h: &Harness) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/orgs/1/events?max_results=200",
        "/orgs/1/labels",
        "/orgs/1/workloads",
        "/orgs/1/sec_policy/active/ip_lists",
    ] {
        let r = h.get(path).await;
        out.push(String::from_utf8_lossy(&r.body).into_owned());
        out.push(r.header("x-request-id").unwrap_or_default().to_string());
    }
    let status = h.completed_query(&last_hour_query(h)).await;
    out.push(status.to_string());
    out.push(String::from_utf8_lossy(&h.download(&status).await.body).into_owned());
    out
}

#[tokio::test]
async fn same_seed_same_answers_different_seed_different_answers() {
    let a = start_with(Scenario::PortScan, 42, Faults::default()).await;
    let b = start_with(Scenario::PortScan, 42, Faults::default()).await;
    let c = start_with(Scenario::PortScan, 43, Faults::default()).await;
    let (ta, tb, tc) = (
        transcript(&a).await,
        transcript(&b).await,
        transcript(&c).await,
    );
    assert_eq!(ta, tb);
    for i in [0, 2, 4, 9] {
        assert_ne!(ta[i], tc[i], "part {i} differs across seeds");
    }
    for h in [a, b, c] {
        h.sim.shutdown().await;
    }
}

#[tokio::test]
async fn the_request_log_records_each_request() {
    let h = start(Scenario::Quiet).await;
    h.get("/orgs/1/labels?key=env").await;
    let _ = read(
        h.http
            .get(h.url("/orgs/1/labels"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    h.post("/orgs/1/traffic_flows/async_queries", &last_hour_query(&h))
        .await;
    let log = h.sim.request_log();
    assert_eq!(log.len(), 3);
    assert_eq!(
        (
            log[0].method.as_str(),
            log[0].path.as_str(),
            log[0].query.as_str()
        ),
        ("GET", "/api/v2/orgs/1/labels", "key=env")
    );
    assert_eq!((log[0].status, log[0].authenticated), (200, true));
    assert_eq!((log[1].status, log[1].authenticated), (401, false));
    assert_eq!((log[2].method.as_str(), log[2].status), ("POST", 202));
    assert_eq!(log[2].at, start_time());
    h.sim.clear_log();
    assert!(h.sim.request_log().is_empty());
    h.sim.shutdown().await;
}

/// `vigil pce-sim --listen 127.0.0.1:0` with `args`, and the URL it prints.
async fn spawn_sim_cli(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["pce-sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("VIGIL_SIM_API_KEY", KEY)
        .env("VIGIL_SIM_API_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("vigil starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the URL within 30 s")
        .expect("read stdout")
        .expect("a first line");
    (child, url)
}

#[tokio::test]
async fn the_cli_serves_a_brute_force_pce() {
    let (mut child, url) = spawn_sim_cli(&["--scenario", "brute-force"]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::Client::new();
    let events_url = format!("{url}/api/v2/orgs/1/events?max_results=5");
    let ok = read(
        http.get(&events_url)
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let events = ok.json();
    assert_eq!(events.as_array().map(Vec::len), Some(5));
    assert!(events[0]["href"].is_string() && events[0]["created_by"].is_object());
    let denied = read(
        http.get(&events_url)
            .basic_auth(KEY, Some("wrong"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    child.kill().await.expect("stop the simulator");
}

/// `vigil pce-sim --gzip-downloads` serves traffic downloads gzip-compressed, and the
/// client reads them as it reads plain ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_serves_gzip_downloads_when_asked() {
    use vigil::pce::client::{PceClient, PceConnectionConfig, Secret, TrafficQuery};
    let (mut child, url) = spawn_sim_cli(&["--gzip-downloads"]).await;
    let mut cfg = PceConnectionConfig::new(url.clone(), Secret::new(KEY), Secret::new(SECRET));
    cfg.insecure_http = true; // the simulator serves plain HTTP
    cfg.poll_interval_initial = vigil::config::Duration::from_millis(100);
    cfg.poll_interval_max = vigil::config::Duration::from_millis(250);
    let client = PceClient::new(&cfg, Arc::new(vigil::runtime::WallClock)).expect("client");
    let end = Utc::now();
    let query = TrafficQuery::new("t", end - chrono::Duration::hours(1), end, 200_000);
    let download = client.traffic_download(&query).await.expect("download");
    let flows = download.records().count();
    assert!(flows > 0);
    let raw = read(
        reqwest::Client::new()
            .get(format!("{url}/api/v2{}/download", download.query_href))
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(raw.header("content-encoding"), Some("gzip"));
    assert_eq!(&raw.body[..2], &[0x1f, 0x8b]);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw.body[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    let inside: Value = serde_json::from_str(&text).expect("JSON inside");
    assert_eq!(inside.as_array().map(Vec::len), Some(flows));
    child.kill().await.expect("stop the simulator");
}

#[tokio::test]
async fn the_cli_sends_its_syslog_export_over_udp() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let to = socket.local_addr().expect("addr").to_string();
    // 600 times real time: a 10-second export tick every 1/60 s.
    let (mut child, _url) = spawn_sim_cli(&[
        "--scenario",
        "port-scan",
        "--time-scale",
        "600",
        "--syslog-to",
        &to,
        "--syslog-mode",
        "udp",
    ])
    .await;
    let mut buf = vec![0u8; 65536];
    let mut apps = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while apps.len() < 2 {
        let (n, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .expect("flows and events within 30 s")
            .expect("recv");
        let text = std::str::from_utf8(&buf[..n]).expect("UTF-8");
        // One RFC 5424 message per datagram, no octet count.
        assert!(text.starts_with("<14>1 "), "{text}");
        assert!(text.contains("[meta sequenceId=\"") && text.contains(" sec="));
        let json: Value = serde_json::from_str(&text[text.find(" {").expect("JSON") + 1..])
            .expect("a JSON record");
        let app = text.split(' ').nth(3).expect("app name").to_string();
        match json["version"].as_u64() {
            Some(4) => assert_eq!(app, "illumio_pce/collector"),
            Some(2) => assert!(app.starts_with("illumio_pce/") && app != "illumio_pce/collector"),
            v => panic!("version {v:?}: {text}"),
        }
        apps.insert(json["version"].as_u64());
    }
    child.kill().await.expect("stop the simulator");
}

#[test]
fn the_cli_refuses_a_syslog_mode_without_a_destination() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["pce-sim", "--syslog-mode", "udp"])
        .output()
        .expect("vigil runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--syslog-to"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "pce-sim",
            "--syslog-to",
            "127.0.0.1:1",
            "--syslog-mode",
            "tls",
        ])
        .output()
        .expect("vigil runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcp or udp"), "{err}");
}
