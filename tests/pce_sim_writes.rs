//! The PCE simulator's writes over real HTTP (issue 21): relabelling a workload, changing
//! its enforcement mode, creating labels, raising the flow reporting frequency — what later
//! reads show, the errors a client must handle, the request log and the audit events.

#![cfg(feature = "demo")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use vigil::pce::sim::{Faults, MAX_FLOW_REPORTING_WORKLOADS, RateLimitStorm, Scenario};
use vigil::runtime::{Clock as _, VirtualClock};

use common::sim_http::{Harness, Reply, read};

const KEY: &str = "api_sim";

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-09-11T09:00:30Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn start(scenario: Scenario, faults: Faults) -> Harness {
    let clock = VirtualClock::new(start_time());
    let sim = common::sim(scenario, 5, faults, Arc::new(clock.clone())).await;
    Harness {
        sim,
        clock,
        http: reqwest::Client::new(),
        key: KEY,
        secret: common::SECRET,
    }
}

impl Harness {
    /// A request with a raw body (not necessarily JSON).
    async fn raw(&self, method: reqwest::Method, path: &str, body: &'static str) -> Reply {
        let req = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The first managed workloads, as `GET /workloads` serves them.
    async fn workloads(&self, n: usize) -> Vec<Value> {
        let r = self
            .get_query("/orgs/1/workloads", &[("max_results", &n.to_string())])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json().as_array().cloned().expect("array")
    }

    /// The label with exactly this key and value.
    async fn label(&self, key: &str, value: &str) -> Value {
        let r = self
            .get_query("/orgs/1/labels", &[("key", key), ("value", value)])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()
            .as_array()
            .expect("array")
            .iter()
            .find(|l| l["value"] == value)
            .cloned()
            .unwrap_or_else(|| panic!("no label {key}={value}"))
    }

    /// The events of `event_type` of the last day.
    async fn events(&self, event_type: &str) -> Vec<Value> {
        let since = stamp(self.now() - chrono::Duration::days(1));
        let r = self
            .get_query(
                "/orgs/1/events",
                &[
                    ("event_type", event_type),
                    ("timestamp[gte]", &since),
                    ("max_results", "10000"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json().as_array().cloned().expect("array")
    }
}

fn href(v: &Value) -> &str {
    v["href"].as_str().expect("href")
}

fn label_hrefs(workload: &Value) -> Vec<String> {
    let mut hrefs: Vec<String> = workload["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| href(l).to_string())
        .collect();
    hrefs.sort();
    hrefs
}

/// A label of `key` the workload does not have.
async fn other_label(h: &Harness, workload: &Value, key: &str) -> Value {
    let r = h.get_query("/orgs/1/labels", &[("key", key)]).await;
    let have = label_hrefs(workload);
    r.json()
        .as_array()
        .expect("array")
        .iter()
        .find(|l| !have.iter().any(|x| x == href(l)))
        .cloned()
        .expect("another label")
}

#[tokio::test]
async fn a_put_replaces_the_labels_and_every_later_read_shows_them() {
    let h = start(Scenario::Quiet, Faults::default()).await;

    // A workload that has flows in the last hour, so traffic can show its new labels.
    let now = h.now();
    let query = json!({
        "start_date": stamp(now - chrono::Duration::hours(1)), "end_date": stamp(now),
        "policy_decisions": [], "max_results": 10_000,
    });
    let flows = traffic(&h, &query).await;
    let w_href = flows
        .iter()
        .filter_map(|f| f["dst"]["workload"]["href"].as_str())
        .find(|h| h.starts_with("/orgs/1/workloads/"))
        .expect("a flow to a managed workload")
        .to_string();
    let before = h.get(&w_href).await;
    assert_eq!(before.status, StatusCode::OK);
    let before = before.json();
    assert_eq!(before["labels"].as_array().map(Vec::len), Some(4));

    let role = other_label(&h, &before, "role").await;
    let env = other_label(&h, &before, "env").await;
    let put = h
        .put(
            &w_href,
            &json!({"labels": [{"href": href(&role)}, {"href": href(&env)}]}),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert!(put.body.is_empty());

    // The whole list is replaced: app and loc are gone, the mode is untouched.
    let after = h.get(&w_href).await.json();
    let mut want = vec![href(&role).to_string(), href(&env).to_string()];
    want.sort();
    assert_eq!(label_hrefs(&after), want);
    assert_eq!(after["enforcement_mode"], before["enforcement_mode"]);
    assert_eq!(after["updated_at"], stamp(h.now()));
    assert!(
        after["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .all(|l| { l["key"].is_string() && l["value"].is_string() })
    );

    // The list, and its label filter.
    let listed = h.workloads(500).await;
    let listed = listed
        .iter()
        .find(|w| w["href"] == w_href.as_str())
        .expect("listed");
    assert_eq!(label_hrefs(listed), want);
    let groups = json!([[href(&role), href(&env)]]).to_string();
    let filtered = h
        .get_query("/orgs/1/workloads", &[("labels", &groups)])
        .await
        .json();
    assert!(
        filtered
            .as_array()
            .expect("array")
            .iter()
            .any(|w| w["href"] == w_href.as_str())
    );

    // Flows show the workload with its new labels.
    let mut by_workload = query.clone();
    by_workload["destinations"] =
        json!({"include": [[{"workload": {"href": w_href}}]], "exclude": []});
    let flows = traffic(&h, &by_workload).await;
    assert!(!flows.is_empty());
    for f in &flows {
        assert_eq!(label_hrefs(&f["dst"]["workload"]), want, "{f}");
    }

    // An empty list takes every label off.
    let cleared = h.put(&w_href, &json!({"labels": []})).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(label_hrefs(&h.get(&w_href).await.json()).is_empty());
    h.sim.shutdown().await;
}

/// Creates a traffic query, lets it complete and downloads its flows.
async fn traffic(h: &Harness, body: &Value) -> Vec<Value> {
    let created = h.post("/orgs/1/traffic_flows/async_queries", body).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let q = href(&created.json()).to_string();
    h.clock.advance(Duration::from_secs(3));
    let status = h.get(&q).await.json();
    assert_eq!(status["status"], "completed", "{status}");
    let result = status["result"].as_str().expect("result");
    h.get(result)
        .await
        .json()
        .as_array()
        .cloned()
        .expect("array")
}

#[tokio::test]
async fn enforcement_mode_and_the_errors_a_client_must_handle() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let w = h.workloads(1).await.remove(0);
    let w_href = href(&w).to_string();
    let mode = w["enforcement_mode"].as_str().expect("mode");
    let next = ["idle", "visibility_only", "selective", "full"]
        .into_iter()
        .find(|m| *m != mode)
        .expect("another mode");

    let r = h.put(&w_href, &json!({"enforcement_mode": next})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let after = h.get(&w_href).await.json();
    assert_eq!(after["enforcement_mode"], next);
    assert_eq!(label_hrefs(&after), label_hrefs(&w), "labels untouched");

    // Both at once.
    let role = other_label(&h, &after, "role").await;
    let r = h
        .put(
            &w_href,
            &json!({"enforcement_mode": "full", "labels": [{"href": href(&role)}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let after = h.get(&w_href).await.json();
    assert_eq!(after["enforcement_mode"], "full");
    assert_eq!(label_hrefs(&after), vec![href(&role).to_string()]);

    // Refused: the PCE's error body, and nothing changes.
    let cases: [(Value, StatusCode, &str); 6] = [
        (
            json!({"enforcement_mode": "enforced"}),
            StatusCode::NOT_ACCEPTABLE,
            "input_validation_error",
        ),
        (
            json!({"enforcement_mode": 2}),
            StatusCode::NOT_ACCEPTABLE,
            "input_validation_error",
        ),
        (
            json!({"labels": "Web"}),
            StatusCode::NOT_ACCEPTABLE,
            "input_validation_error",
        ),
        (
            json!({"labels": [{"href": "/orgs/1/labels/987654"}]}),
            StatusCode::NOT_ACCEPTABLE,
            "invalid_uri",
        ),
        (
            json!({"labels": [{"value": "Web"}]}),
            StatusCode::NOT_ACCEPTABLE,
            "input_validation_error",
        ),
        (
            json!({"name": "renamed"}),
            StatusCode::NOT_ACCEPTABLE,
            "input_validation_error",
        ),
    ];
    for (body, status, token) in cases {
        let r = h.put(&w_href, &body).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.error_token(), token, "{body}");
    }
    let not_json = h.raw(reqwest::Method::PUT, &w_href, "{labels: [").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.error_token(), "invalid_json");
    let unknown = h
        .put(
            "/orgs/1/workloads/00000000-0000-4000-8000-000000000000",
            &json!({"enforcement_mode": "idle"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_token(), "not_found");
    assert_eq!(
        h.get("/orgs/1/workloads/00000000-0000-4000-8000-000000000000")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.get(&w_href).await.json(), after, "nothing changed");

    // Without credentials, or for another org: refused before anything else.
    let anonymous = read(
        h.http
            .put(h.url(&w_href))
            .json(&json!({"enforcement_mode": "idle"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let other_org = w_href.replacen("/orgs/1/", "/orgs/2/", 1);
    let r = h
        .put(&other_org, &json!({"enforcement_mode": "idle"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(h.get(&w_href).await.json(), after, "nothing changed");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn labels_are_created_once_and_found_by_key_and_partial_value() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let total = |r: &Reply| -> u64 {
        r.header("x-total-count")
            .and_then(|v| v.parse().ok())
            .expect("X-Total-Count")
    };
    let before = total(&h.get("/orgs/1/labels").await);

    // The value matches partially, the key exactly: compare values exactly yourself.
    let prod = h
        .get_query("/orgs/1/labels", &[("key", "env"), ("value", "Prod")])
        .await
        .json();
    let values: Vec<&str> = prod
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["value"].as_str())
        .collect();
    assert_eq!(values, ["Production"]);
    let middle = h
        .get_query("/orgs/1/labels", &[("key", "env"), ("value", "duct")])
        .await
        .json();
    assert_eq!(middle.as_array().map(Vec::len), Some(1));
    let short_key = h.get_query("/orgs/1/labels", &[("key", "en")]).await.json();
    assert_eq!(short_key.as_array().map(Vec::len), Some(0));

    let created = h
        .post(
            "/orgs/1/labels",
            &json!({"key": "role", "value": "Quarantine"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let label = created.json();
    assert_eq!(label["key"], "role");
    assert_eq!(label["value"], "Quarantine");
    let l_href = href(&label).to_string();
    let id = l_href
        .strip_prefix("/orgs/1/labels/")
        .expect("an org label href");
    assert!(id.parse::<u64>().is_ok(), "{l_href}");
    assert_eq!(label["created_at"], stamp(h.now()));

    // Reads see it: the list, the partial query, the label itself.
    let all = h.get("/orgs/1/labels").await;
    assert_eq!(total(&all), before + 1);
    assert!(
        all.json()
            .as_array()
            .expect("array")
            .iter()
            .any(|l| href(l) == l_href)
    );
    assert_eq!(href(&h.label("role", "Quarantine").await), l_href);
    let partial = h
        .get_query("/orgs/1/labels", &[("key", "role"), ("value", "Quarant")])
        .await
        .json();
    assert_eq!(partial.as_array().map(Vec::len), Some(1));
    let one = h.get(&l_href).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json(), label);

    // The same key and value again: 406 and no second label.
    let duplicate = h
        .post(
            "/orgs/1/labels",
            &json!({"key": "role", "value": "Quarantine"}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(duplicate.error_token(), "label_duplicate_value");
    assert_eq!(total(&h.get("/orgs/1/labels").await), before + 1);
    for bad in [
        json!({"key": "role"}),
        json!({"key": "role", "value": 5}),
        json!({"key": "no_such_dimension", "value": "X"}),
        json!(["role", "Quarantine"]),
    ] {
        let r = h.post("/orgs/1/labels", &bad).await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{bad}");
        assert_eq!(r.error_token(), "input_validation_error", "{bad}");
    }
    let not_json = h
        .raw(reqwest::Method::POST, "/orgs/1/labels", "key=role")
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.error_token(), "invalid_json");
    assert_eq!(
        h.get("/orgs/1/labels/987654").await.status,
        StatusCode::NOT_FOUND
    );

    // The new label quarantines a workload.
    let w = h.workloads(1).await.remove(0);
    let mut labels: Vec<Value> = w["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter(|l| l["key"] != "role")
        .map(|l| json!({"href": href(l)}))
        .collect();
    labels.push(json!({"href": l_href}));
    let r = h.put(href(&w), &json!({"labels": labels})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let after = h.get(href(&w)).await.json();
    assert!(
        after["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .any(|l| { l["href"] == l_href.as_str() && l["value"] == "Quarantine" })
    );
    assert_eq!(after["labels"].as_array().map(Vec::len), Some(4));
    h.sim.shutdown().await;
}

#[tokio::test]
async fn flow_reporting_frequency_takes_at_most_fifty_workloads() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    assert_eq!(MAX_FLOW_REPORTING_WORKLOADS, 50);
    let path = "/orgs/1/workloads/set_flow_reporting_frequency";
    let managed: Vec<Value> = h
        .workloads(500)
        .await
        .iter()
        .map(|w| json!({"href": href(w)}))
        .collect();
    let hrefs: Vec<Value> = managed.iter().cycle().take(51).cloned().collect();

    let fifty = h.post(path, &json!({"workloads": hrefs[..50]})).await;
    assert_eq!(fifty.status, StatusCode::NO_CONTENT);
    assert!(fifty.body.is_empty());
    let one = h.post(path, &json!({"workloads": hrefs[..1]})).await;
    assert_eq!(one.status, StatusCode::NO_CONTENT);

    let fifty_one = h.post(path, &json!({"workloads": hrefs})).await;
    assert_eq!(fifty_one.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(fifty_one.error_token(), "input_validation_error");
    let none = h.post(path, &json!({"workloads": []})).await;
    assert_eq!(none.status, StatusCode::NOT_ACCEPTABLE);
    let unknown = h
        .post(
            path,
            &json!({"workloads": [{"href": "/orgs/1/workloads/00000000-0000-4000-8000-000000000000"}]}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(unknown.error_token(), "invalid_uri");
    let bare = h
        .post(path, &json!({"workloads": [href(&managed[0])]}))
        .await;
    assert_eq!(bare.status, StatusCode::NOT_ACCEPTABLE);
    let not_json = h.raw(reqwest::Method::POST, path, "workloads").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_json.error_token(), "invalid_json");
    assert_eq!(
        h.get(path).await.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "the action is not a workload"
    );

    // Two accepted requests, two events; the refused ones record nothing.
    let events = h.events("workloads.set_flow_reporting_frequency").await;
    assert_eq!(events.len(), 2);
    let mut sizes: Vec<usize> = events
        .iter()
        .map(|e| e["resource_changes"].as_array().map_or(0, Vec::len))
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, managed.len().min(50)]);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_read_only_key_gets_403_for_every_write_and_reads_still_work() {
    let faults = Faults {
        read_only_key: true,
        ..Faults::default()
    };
    let h = start(Scenario::Quiet, faults).await;
    let w = h.workloads(1).await.remove(0);
    let w_href = href(&w).to_string();
    let writes = [
        h.put(&w_href, &json!({"enforcement_mode": "full"})).await,
        h.post(
            "/orgs/1/labels",
            &json!({"key": "role", "value": "Quarantine"}),
        )
        .await,
        h.post(
            "/orgs/1/workloads/set_flow_reporting_frequency",
            &json!({"workloads": [{"href": w_href}]}),
        )
        .await,
        // Refused before the body is even read.
        h.raw(reqwest::Method::PUT, &w_href, "not json").await,
    ];
    for r in &writes {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.error_token(), "forbidden");
        assert!(r.header("x-request-id").is_some());
    }
    assert_eq!(h.get(&w_href).await.json(), w, "nothing changed");
    assert!(
        h.get_query("/orgs/1/labels", &[("value", "Quarantine")])
            .await
            .json()
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    // Reading, traffic queries included, still works.
    let now = h.now();
    let query =
        json!({"start_date": stamp(now - chrono::Duration::minutes(5)), "end_date": stamp(now)});
    assert_eq!(
        h.post("/orgs/1/traffic_flows/async_queries", &query)
            .await
            .status,
        StatusCode::ACCEPTED
    );

    // The PCE records each refusal, not the writes.
    let refused = h.events("request.authorization_failed").await;
    assert_eq!(refused.len(), writes.len());
    for e in &refused {
        assert_eq!(e["status"], "failure");
        assert_eq!(e["severity"], "err");
        let note = &e["notifications"][0];
        assert_eq!(note["notification_type"], "request.authorization_failed");
        assert!(
            note["info"]["api_endpoint"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/v2/orgs/1/"))
        );
        assert_eq!(note["info"]["src_ip"], "127.0.0.1");
    }
    assert!(h.events("workload.update").await.is_empty());

    // A key that may write again.
    h.sim.set_faults(Faults::default());
    let r = h.put(&w_href, &json!({"enforcement_mode": "full"})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn writes_are_in_the_request_log_and_recorded_as_audit_events() {
    let h = start(Scenario::BruteForce, Faults::default()).await;
    let w = h.workloads(1).await.remove(0);
    let w_href = href(&w).to_string();
    let _ = h.get("/orgs/1/events?max_results=5").await;
    assert!(
        h.sim.request_log().iter().all(|r| !r.is_write()),
        "reads are no writes"
    );

    let role = other_label(&h, &w, "role").await;
    let mut labels: Vec<Value> = w["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter(|l| l["key"] != "role")
        .map(|l| json!({"href": href(l)}))
        .collect();
    labels.push(json!({"href": href(&role)}));
    let mode = if w["enforcement_mode"] == "full" {
        "idle"
    } else {
        "full"
    };
    let body = json!({"labels": labels, "enforcement_mode": mode});
    h.clock.advance(Duration::from_secs(42));
    let put = h.put(&w_href, &body).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let put_at = h.now();
    let request_id = put
        .header("x-request-id")
        .expect("X-Request-Id")
        .to_string();
    let created = h
        .post(
            "/orgs/1/labels",
            &json!({"key": "app", "value": "Forensics"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    // The same values again: accepted, but nothing changes and nothing is recorded.
    assert_eq!(h.put(&w_href, &body).await.status, StatusCode::NO_CONTENT);

    // The request log: method, path, body, status, time.
    let log = h.sim.request_log();
    let writes: Vec<_> = log.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 3);
    let logged = writes[0];
    assert_eq!(logged.method, "PUT");
    assert_eq!(logged.path, format!("/api/v2{w_href}"));
    assert_eq!(
        serde_json::from_str::<Value>(&logged.body).expect("JSON"),
        body
    );
    assert_eq!(logged.status, 204);
    assert_eq!(logged.at, put_at);
    assert_eq!(logged.request_id, request_id);
    assert!(logged.authenticated);
    assert_eq!((writes[1].method.as_str(), writes[1].status), ("POST", 201));
    assert_eq!(h.sim.requests_dropped(), 0);

    // The audit events, as the pce_events source reads them.
    let updates = h.events("workload.update").await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    let e = &updates[0];
    assert!(href(e).starts_with("/orgs/1/events/"));
    assert_eq!(e["timestamp"], stamp(put_at));
    assert_eq!(e["status"], "success");
    assert_eq!(e["severity"], "info");
    assert!(e["created_by"]["user"]["username"].is_string());
    assert_eq!(e["action"]["uuid"], request_id.as_str());
    assert_eq!(e["action"]["api_method"], "PUT");
    assert_eq!(e["action"]["api_endpoint"], format!("/api/v2{w_href}"));
    assert_eq!(e["action"]["http_status_code"], 204);
    assert_eq!(e["action"]["src_ip"], "127.0.0.1");
    let rc = &e["resource_changes"][0];
    assert_eq!(rc["change_type"], "update");
    assert_eq!(rc["resource"]["workload"]["href"], w_href.as_str());
    let changes = &rc["changes"];
    assert_eq!(changes["enforcement_mode"]["before"], w["enforcement_mode"]);
    assert_eq!(changes["enforcement_mode"]["after"], mode);
    let set = |v: &Value| {
        let mut hrefs: Vec<String> = v
            .as_array()
            .expect("a label list")
            .iter()
            .map(|l| href(l).to_string())
            .collect();
        hrefs.sort();
        hrefs
    };
    assert_eq!(set(&changes["labels"]["before"]), label_hrefs(&w));
    assert_eq!(
        set(&changes["labels"]["after"]),
        label_hrefs(&h.get(&w_href).await.json())
    );

    let creates = h.events("label.create").await;
    assert_eq!(creates.len(), 1);
    let rc = &creates[0]["resource_changes"][0];
    assert_eq!(rc["change_type"], "create");
    assert_eq!(rc["resource"]["label"]["value"], "Forensics");
    assert_eq!(rc["changes"]["key"]["after"], "app");
    assert_eq!(creates[0]["action"]["http_status_code"], 201);

    // Among the scenario's own events, within the time filters, and still there later.
    let window = h
        .get_query(
            "/orgs/1/events",
            &[
                ("timestamp[gte]", &stamp(put_at)),
                ("timestamp[lte]", &stamp(put_at)),
            ],
        )
        .await
        .json();
    let types: Vec<&str> = window
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(
        types.contains(&"workload.update") && types.contains(&"label.create"),
        "{types:?}"
    );
    let earlier = h
        .get_query(
            "/orgs/1/events",
            &[
                (
                    "timestamp[lte]",
                    stamp(put_at - chrono::Duration::seconds(1)).as_str(),
                ),
                ("event_type", "workload.update"),
            ],
        )
        .await
        .json();
    assert_eq!(earlier.as_array().map(Vec::len), Some(0));
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(h.events("workload.update").await.len(), 1);
    assert_eq!(h.sim.recorded_events().len(), 2);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_lagging_event_index_hides_written_events_for_a_while() {
    let faults = Faults {
        event_index_lag_secs: 120,
        ..Faults::default()
    };
    let h = start(Scenario::Quiet, faults).await;
    let created = h
        .post("/orgs/1/labels", &json!({"key": "loc", "value": "Nagoya"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(h.events("label.create").await.is_empty());
    h.clock.advance(Duration::from_secs(121));
    assert_eq!(h.events("label.create").await.len(), 1);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_apply_to_writes_too() {
    let h = start(Scenario::Quiet, Faults::default()).await;
    let w = h.workloads(1).await.remove(0);
    let w_href = href(&w).to_string();
    let mode = if w["enforcement_mode"] == "idle" {
        "full"
    } else {
        "idle"
    };

    h.sim.set_faults(Faults {
        rate_limit_storm: Some(RateLimitStorm {
            requests: 2,
            retry_after_secs: Some(7),
        }),
        ..Faults::default()
    });
    for _ in 0..2 {
        let r = h.put(&w_href, &json!({"enforcement_mode": mode})).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.error_token(), "too_many_requests");
    }
    // A 429'd request was not processed.
    assert_eq!(h.get(&w_href).await.json(), w);
    assert!(h.events("workload.update").await.is_empty());
    let r = h.put(&w_href, &json!({"enforcement_mode": mode})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(h.get(&w_href).await.json()["enforcement_mode"], mode);

    h.sim.set_faults(Faults {
        server_errors: 1,
        ..Faults::default()
    });
    let label = json!({"key": "env", "value": "DisasterRecovery"});
    let failed = h.post("/orgs/1/labels", &label).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.error_token().len() > 1);
    assert!(
        h.get_query("/orgs/1/labels", &[("value", "DisasterRecovery")])
            .await
            .json()
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    assert_eq!(
        h.post("/orgs/1/labels", &label).await.status,
        StatusCode::CREATED
    );

    let statuses: Vec<(String, u16)> = h
        .sim
        .request_log()
        .iter()
        .filter(|r| r.is_write())
        .map(|r| (r.method.clone(), r.status))
        .collect();
    let want: Vec<(String, u16)> = [
        ("PUT", 429),
        ("PUT", 429),
        ("PUT", 204),
        ("POST", 500),
        ("POST", 201),
    ]
    .iter()
    .map(|(m, s)| (m.to_string(), *s))
    .collect();
    assert_eq!(statuses, want);
    h.sim.shutdown().await;
}
