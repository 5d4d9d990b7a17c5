//! The writes a real PCE takes, as the `pce_action` sink makes them:
//!
//! - `PUT /api/v2/orgs/{org}/workloads/{uuid}` with `labels` (the whole new list of
//!   `{href}`) and/or `enforcement_mode` → 204; records `workload.update`.
//! - `POST /api/v2/orgs/{org}/labels` with `{key, value}` → 201 and the label; a label
//!   with the same key and value → 406; records `label.create`.
//! - `POST /api/v2/orgs/{org}/workloads/set_flow_reporting_frequency` with
//!   `{workloads: [{href}]}` (1 to 50) → 204; records
//!   `workloads.set_flow_reporting_frequency`.
//!
//! Also the reads that go with them: `GET` of one workload and of one label.
//!
//! Answers, in the order they are decided: 403 when the key is read-only
//! ([`super::Faults::read_only_key`], which also records `request.authorization_failed`);
//! 400 `invalid_json` for a body that is not JSON; 404 for a workload href in the path
//! that names no managed workload; 406 for a body of the wrong shape or values
//! (`input_validation_error`), a label or workload href in the body that names nothing
//! (`invalid_uri`), a duplicate label (`label_duplicate_value`). Every error body is the
//! PCE's `[{token, message}]`. Authentication, the org check and the injected faults
//! (429, 5xx, slow replies) come first, in the gate, exactly as for reads; a refused
//! request changes nothing and records no event.
//!
//! The error tokens other than `invalid_json`, the event type of the flow reporting
//! frequency and the shape of `changes.labels` are not confirmed against a real PCE (see
//! `pce-api.md`); a client must not depend on them.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::estate::{ENFORCEMENT_MODES, Estate};
use super::events::{SimEvent, Spec, recorded_event};
use super::server::{ApiError, RequestMeta, SimState, json_text};

/// The most workloads one `set_flow_reporting_frequency` request may name.
pub const MAX_FLOW_REPORTING_WORKLOADS: usize = 50;

/// The properties of a workload a PUT can change here.
const WORKLOAD_PROPERTIES: [&str; 2] = ["labels", "enforcement_mode"];

fn answer(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// A 406 for a body of the wrong shape.
fn invalid(details: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "input_validation_error",
        format!("Input validation failed. Details: {{{details}}}"),
    )
}

/// A 406 for hrefs in the body that name nothing.
fn invalid_uri(hrefs: &[&str]) -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "invalid_uri",
        format!("Invalid URI: {{{}}}", hrefs.join(", ")),
    )
}

fn not_found(what: &str, href: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} {href} not found"),
    )
}

/// The body as JSON: 400 when it is not.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The request body is not valid JSON: {e}"),
        )
    })
}

/// The body's JSON object: 406 for any other JSON value.
fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))
}

/// The `href` of `{href: "..."}` (other members are ignored).
fn href_of<'v>(item: &'v Value, what: &str) -> Result<&'v str, ApiError> {
    item.get("href").and_then(Value::as_str).ok_or_else(|| {
        invalid(format!(
            "each of {what} must be an object with a string href"
        ))
    })
}

/// `action` of an event the API key's request caused.
fn action(s: &SimState, meta: &RequestMeta, endpoint: &str, method: &str, code: u16) -> Value {
    json!({"uuid": meta.id, "info": {"api_key_id": api_key_id(s)}, "api_endpoint": endpoint,
           "api_method": method, "http_status_code": code, "src_ip": meta.src_ip})
}

/// The key id as events show it (without the `api_` prefix).
fn api_key_id(s: &SimState) -> &str {
    s.api_key.strip_prefix("api_").unwrap_or(&s.api_key)
}

fn created_by(estate: &Estate) -> Value {
    let u = estate.api_user();
    json!({"user": {"href": u.href, "username": u.username}})
}

fn label_json(estate: &Estate, i: usize) -> Value {
    let l = &estate.labels[i];
    json!({"href": l.href, "key": l.key, "value": l.value})
}

/// Records `event` (built from the estate now) at the simulator's time.
fn record(s: &SimState, estate: &Estate, spec: Spec<'_>) {
    let uuid = s.next_uuid();
    let event: SimEvent = recorded_event(estate, s.clock.now(), &uuid, spec);
    s.record(event);
}

/// 403 when the key may only read; the PCE records the refusal.
fn refuse_read_only(
    s: &SimState,
    meta: &RequestMeta,
    method: &str,
    endpoint: &str,
) -> Result<(), ApiError> {
    if !s.faults().read_only_key {
        return Ok(());
    }
    let estate = s.estate();
    let info = json!({"api_endpoint": endpoint, "api_method": method, "src_ip": meta.src_ip,
                      "api_key_id": api_key_id(s)});
    let note = json!([{"uuid": s.next_uuid(), "notification_type": "request.authorization_failed",
                       "info": info}]);
    record(
        s,
        &estate,
        Spec::org(
            "request.authorization_failed",
            Some("failure"),
            "err",
            created_by(&estate),
        )
        .notes(note),
    );
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "The API key {} is not authorized to {method} {endpoint}: it may only read",
            s.api_key
        ),
    ))
}

/// `GET /orgs/{org}/labels/{id}`.
pub(crate) async fn label(
    State(s): State<Arc<SimState>>,
    Path((_org, id)): Path<(String, String)>,
) -> Response {
    let href = format!("/orgs/{}/labels/{id}", s.org);
    let estate = s.estate();
    match estate.label_index(&href) {
        Some(i) => json_text(
            StatusCode::OK,
            estate.label_rest(&estate.labels[i]).to_string(),
        ),
        None => not_found("Label", &href).into_response(),
    }
}

/// `GET /orgs/{org}/workloads/{uuid}`.
pub(crate) async fn workload(
    State(s): State<Arc<SimState>>,
    Path((_org, id)): Path<(String, String)>,
) -> Response {
    let href = format!("/orgs/{}/workloads/{id}", s.org);
    let estate = s.estate();
    match estate.managed_workload_index(&href) {
        Some(i) => json_text(
            StatusCode::OK,
            estate.workload_rest(&estate.workloads[i]).to_string(),
        ),
        None => not_found("Workload", &href).into_response(),
    }
}

/// What a workload PUT changes.
#[derive(Debug)]
struct WorkloadChange {
    index: usize,
    labels_before: Vec<usize>,
    labels_after: Vec<usize>,
    mode_before: &'static str,
    mode_after: &'static str,
}

impl WorkloadChange {
    fn labels_changed(&self) -> bool {
        let sorted = |v: &[usize]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        sorted(&self.labels_before) != sorted(&self.labels_after)
    }

    fn changed(&self) -> bool {
        self.labels_changed() || self.mode_before != self.mode_after
    }
}

/// Checks a workload PUT against the estate: 404 for an unknown workload, then 406 for
/// what the body gets wrong.
fn plan_workload(estate: &Estate, href: &str, body: &Value) -> Result<WorkloadChange, ApiError> {
    let index = estate
        .managed_workload_index(href)
        .ok_or_else(|| not_found("Workload", href))?;
    let w = &estate.workloads[index];
    let mut change = WorkloadChange {
        index,
        labels_before: w.labels.clone(),
        labels_after: w.labels.clone(),
        mode_before: w.enforcement_mode,
        mode_after: w.enforcement_mode,
    };
    let body = object(body)?;
    if let Some(other) = body
        .keys()
        .find(|k| !WORKLOAD_PROPERTIES.contains(&k.as_str()))
    {
        return Err(invalid(format!(
            "the simulator's workload PUT takes only {}; {other:?} is not supported",
            WORKLOAD_PROPERTIES.join(" and ")
        )));
    }
    if let Some(mode) = body.get("enforcement_mode") {
        change.mode_after = mode
            .as_str()
            .and_then(|m| ENFORCEMENT_MODES.iter().find(|&&known| known == m))
            .copied()
            .ok_or_else(|| {
                invalid(format!(
                    "enforcement_mode must be one of {}; got {mode}",
                    ENFORCEMENT_MODES.join(", ")
                ))
            })?;
    }
    if let Some(labels) = body.get("labels") {
        change.labels_after = plan_labels(estate, labels)?;
    }
    Ok(change)
}

/// The new label list of a PUT: known hrefs, each once, at most one per key.
fn plan_labels(estate: &Estate, labels: &Value) -> Result<Vec<usize>, ApiError> {
    let items = labels
        .as_array()
        .ok_or_else(|| invalid("labels must be an array of {href} objects"))?;
    let hrefs = items
        .iter()
        .map(|item| href_of(item, "labels"))
        .collect::<Result<Vec<&str>, ApiError>>()?;
    let unknown: Vec<&str> = hrefs
        .iter()
        .copied()
        .filter(|h| estate.label_index(h).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(invalid_uri(&unknown));
    }
    let mut after: Vec<usize> = Vec::new();
    for h in hrefs {
        let i = estate.label_index(h).unwrap_or_default();
        if after.contains(&i) {
            continue;
        }
        let key = &estate.labels[i].key;
        if let Some(&j) = after.iter().find(|&&j| estate.labels[j].key == *key) {
            return Err(invalid(format!(
                "a workload has at most one label of each key: {} and {} are both {key}",
                estate.labels[j].href, estate.labels[i].href
            )));
        }
        after.push(i);
    }
    Ok(after)
}

/// `PUT /orgs/{org}/workloads/{uuid}`.
pub(crate) async fn update_workload(
    State(s): State<Arc<SimState>>,
    Extension(meta): Extension<RequestMeta>,
    Path((_org, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(put_workload(&s, &meta, &id, &body))
}

fn put_workload(
    s: &SimState,
    meta: &RequestMeta,
    id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let href = format!("/orgs/{}/workloads/{id}", s.org);
    let endpoint = format!("/api/v2{href}");
    refuse_read_only(s, meta, "PUT", &endpoint)?;
    let body = json_body(body)?;
    let now = s.clock.now();
    let (change, estate) = s.write_estate(
        |e| plan_workload(e, &href, &body),
        |e, c| {
            if c.changed() {
                e.update_workload(c.index, c.labels_after.clone(), c.mode_after, now);
            }
        },
    )?;
    if change.changed() {
        let spec = workload_update(s, meta, &estate, &change, &endpoint);
        record(s, &estate, spec);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The `workload.update` event of a change: `changes` has what changed, each as
/// `{before, after}` (labels as `{href, key, value}` lists).
fn workload_update(
    s: &SimState,
    meta: &RequestMeta,
    estate: &Estate,
    c: &WorkloadChange,
    endpoint: &str,
) -> Spec<'static> {
    let labels = |v: &[usize]| -> Vec<Value> { v.iter().map(|&i| label_json(estate, i)).collect() };
    let mut changes = Map::new();
    if c.labels_changed() {
        changes.insert(
            "labels".into(),
            json!({"before": labels(&c.labels_before), "after": labels(&c.labels_after)}),
        );
    }
    if c.mode_before != c.mode_after {
        changes.insert(
            "enforcement_mode".into(),
            json!({"before": c.mode_before, "after": c.mode_after}),
        );
    }
    let w = &estate.workloads[c.index];
    let rc = json!([{"uuid": s.next_uuid(),
        "resource": {"workload": {"href": w.href, "name": w.name, "hostname": w.hostname,
                                  "labels": labels(&w.labels)}},
        "changes": changes, "change_type": "update"}]);
    Spec::org(
        "workload.update",
        Some("success"),
        "info",
        created_by(estate),
    )
    .action(action(s, meta, endpoint, "PUT", 204))
    .changes(rc)
}

/// A label POST: its key and value.
#[derive(Debug)]
struct NewLabel {
    key: String,
    value: String,
    /// Where it goes in [`Estate::labels`].
    index: usize,
}

fn plan_label(estate: &Estate, body: &Value) -> Result<NewLabel, ApiError> {
    let body = object(body)?;
    if let Some(other) = body.keys().find(|k| *k != "key" && *k != "value") {
        return Err(invalid(format!(
            "the simulator's label POST takes only key and value; {other:?} is not supported"
        )));
    }
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| invalid(format!("{name} must be a non-empty string")))
    };
    let (key, value) = (text("key")?, text("value")?);
    if !estate.labels.iter().any(|l| l.key == key) {
        let mut keys: Vec<&str> = estate.labels.iter().map(|l| l.key.as_str()).collect();
        keys.dedup();
        return Err(invalid(format!(
            "no label dimension {key:?} (this PCE has {})",
            keys.join(", ")
        )));
    }
    if let Some(i) = estate.find_label(key, value) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "label_duplicate_value",
            format!(
                "A label with key {key:?} and value {value:?} already exists: {}",
                estate.labels[i].href
            ),
        ));
    }
    Ok(NewLabel {
        key: key.to_string(),
        value: value.to_string(),
        index: estate.labels.len(),
    })
}

/// `POST /orgs/{org}/labels`.
pub(crate) async fn create_label(
    State(s): State<Arc<SimState>>,
    Extension(meta): Extension<RequestMeta>,
    body: Bytes,
) -> Response {
    answer(post_label(&s, &meta, &body))
}

fn post_label(s: &SimState, meta: &RequestMeta, body: &Bytes) -> Result<Response, ApiError> {
    let endpoint = format!("/api/v2/orgs/{}/labels", s.org);
    refuse_read_only(s, meta, "POST", &endpoint)?;
    let body = json_body(body)?;
    let now = s.clock.now();
    let (new, estate) = s.write_estate(
        |e| plan_label(e, &body),
        |e, n| {
            e.add_label(&n.key, &n.value, now);
        },
    )?;
    let label = &estate.labels[new.index];
    let rc = json!([{"uuid": s.next_uuid(),
        "resource": {"label": {"href": label.href, "key": label.key, "value": label.value}},
        "changes": {"key": {"before": null, "after": label.key},
                    "value": {"before": null, "after": label.value}},
        "change_type": "create"}]);
    let spec = Spec::org("label.create", Some("success"), "info", created_by(&estate))
        .action(action(s, meta, &endpoint, "POST", 201))
        .changes(rc);
    record(s, &estate, spec);
    Ok(json_text(
        StatusCode::CREATED,
        estate.label_rest(label).to_string(),
    ))
}

/// The workloads (indexes) a `set_flow_reporting_frequency` body names.
fn plan_flow_reporting(estate: &Estate, body: &Value) -> Result<Vec<usize>, ApiError> {
    let items = object(body)?
        .get("workloads")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("workloads must be an array of {href} objects"))?;
    if items.is_empty() || items.len() > MAX_FLOW_REPORTING_WORKLOADS {
        return Err(invalid(format!(
            "workloads must name 1 to {MAX_FLOW_REPORTING_WORKLOADS} workloads; got {}",
            items.len()
        )));
    }
    let hrefs = items
        .iter()
        .map(|item| href_of(item, "workloads"))
        .collect::<Result<Vec<&str>, ApiError>>()?;
    let unknown: Vec<&str> = hrefs
        .iter()
        .copied()
        .filter(|h| estate.managed_workload_index(h).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(invalid_uri(&unknown));
    }
    let mut found: Vec<usize> = Vec::new();
    for h in hrefs {
        let i = estate.managed_workload_index(h).unwrap_or_default();
        if !found.contains(&i) {
            found.push(i);
        }
    }
    Ok(found)
}

/// `POST /orgs/{org}/workloads/set_flow_reporting_frequency`.
pub(crate) async fn set_flow_reporting_frequency(
    State(s): State<Arc<SimState>>,
    Extension(meta): Extension<RequestMeta>,
    body: Bytes,
) -> Response {
    answer(post_flow_reporting(&s, &meta, &body))
}

fn post_flow_reporting(
    s: &SimState,
    meta: &RequestMeta,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let endpoint = format!(
        "/api/v2/orgs/{}/workloads/set_flow_reporting_frequency",
        s.org
    );
    refuse_read_only(s, meta, "POST", &endpoint)?;
    let body = json_body(body)?;
    let estate = s.estate();
    let found = plan_flow_reporting(&estate, &body)?;
    let rc: Vec<Value> = found
        .iter()
        .map(|&i| {
            let w = &estate.workloads[i];
            json!({"uuid": s.next_uuid(),
                "resource": {"workload": {"href": w.href, "name": w.name, "hostname": w.hostname}},
                "changes": {}, "change_type": "update"})
        })
        .collect();
    let spec = Spec::org(
        "workloads.set_flow_reporting_frequency",
        Some("success"),
        "info",
        created_by(&estate),
    )
    .action(action(s, meta, &endpoint, "POST", 204))
    .changes(Value::Array(rc));
    record(s, &estate, spec);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estate() -> Estate {
        Estate::generate(3, 1)
    }

    fn status(r: Result<impl std::fmt::Debug, ApiError>) -> (u16, &'static str) {
        let e = r.expect_err("an error");
        (e.status.as_u16(), e.token)
    }

    #[test]
    fn a_put_replaces_the_whole_label_list_and_checks_each_href() {
        let e = estate();
        let w = &e.workloads[0];
        let web = e.find_label("role", "Web").expect("Web");
        let body = json!({"labels": [{"href": e.labels[web].href}]});
        let c = plan_workload(&e, &w.href, &body).expect("valid");
        assert_eq!(c.labels_after, vec![web]);
        assert!(c.labels_changed() && c.mode_after == w.enforcement_mode);

        let body = json!({"labels": [{"href": "/orgs/1/labels/999999"}]});
        assert_eq!(
            status(plan_workload(&e, &w.href, &body)),
            (406, "invalid_uri")
        );
        let app = e.find_label("role", "App").expect("App");
        let two_roles =
            json!({"labels": [{"href": e.labels[web].href}, {"href": e.labels[app].href}]});
        assert_eq!(
            status(plan_workload(&e, &w.href, &two_roles)),
            (406, "input_validation_error")
        );
        for bad in [
            json!({"labels": "Web"}),
            json!({"labels": [{"key": "role"}]}),
            json!({"enforcement_mode": "enforced"}),
            json!({"enforcement_mode": 3}),
            json!({"name": "renamed"}),
            json!([]),
        ] {
            assert_eq!(
                status(plan_workload(&e, &w.href, &bad)),
                (406, "input_validation_error"),
                "{bad}"
            );
        }
        assert_eq!(
            status(plan_workload(&e, "/orgs/1/workloads/nope", &json!({}))),
            (404, "not_found")
        );
        let same = json!({"enforcement_mode": w.enforcement_mode});
        assert!(!plan_workload(&e, &w.href, &same).expect("valid").changed());
    }

    #[test]
    fn labels_are_created_once_per_key_and_value() {
        let mut e = estate();
        let n = plan_label(&e, &json!({"key": "role", "value": "Quarantine"})).expect("new");
        let i = e.add_label(&n.key, &n.value, chrono::Utc::now());
        assert_eq!(i, n.index);
        assert!(e.labels[i].href.starts_with("/orgs/1/labels/"));
        assert!(e.labels[..i].iter().all(|l| l.href != e.labels[i].href));
        assert_eq!(
            status(plan_label(
                &e,
                &json!({"key": "role", "value": "Quarantine"})
            )),
            (406, "label_duplicate_value")
        );
        // Another case is another value.
        assert!(plan_label(&e, &json!({"key": "role", "value": "quarantine"})).is_ok());
        for bad in [
            json!({"key": "role"}),
            json!({"key": "role", "value": ""}),
            json!({"key": "colour", "value": "Red"}),
            json!({"key": "role", "value": 7}),
        ] {
            assert_eq!(
                status(plan_label(&e, &bad)),
                (406, "input_validation_error"),
                "{bad}"
            );
        }
    }

    #[test]
    fn flow_reporting_takes_one_to_fifty_known_workloads() {
        let e = estate();
        let managed: Vec<Value> = e
            .managed_workloads()
            .map(|w| json!({"href": w.href}))
            .collect();
        let hrefs: Vec<Value> = managed
            .iter()
            .cycle()
            .take(MAX_FLOW_REPORTING_WORKLOADS + 1)
            .cloned()
            .collect();
        let fifty = json!({"workloads": hrefs[..MAX_FLOW_REPORTING_WORKLOADS]});
        let found = plan_flow_reporting(&e, &fifty).expect("valid");
        assert!(!found.is_empty() && found.len() <= MAX_FLOW_REPORTING_WORKLOADS);
        assert_eq!(
            status(plan_flow_reporting(&e, &json!({"workloads": hrefs}))),
            (406, "input_validation_error")
        );
        assert_eq!(
            status(plan_flow_reporting(&e, &json!({"workloads": []}))),
            (406, "input_validation_error")
        );
        let k8s = e.workloads.iter().find(|w| w.kubernetes).expect("a pod");
        assert_eq!(
            status(plan_flow_reporting(
                &e,
                &json!({"workloads": [{"href": k8s.href}]})
            )),
            (406, "invalid_uri")
        );
    }
}
