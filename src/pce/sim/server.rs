//! The HTTP side: axum routes, authentication, fault injection and the request log. The
//! writes (`PUT` a workload, `POST` a label, raising the flow reporting frequency) are in
//! the `writes` module.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::estate::{Estate, det_uuid, stream_rng};
use super::events::{self, EventQuery, QueryError, Recorded, SimEvent};
use super::faults::{FaultState, Faults, Injected};
use super::jobs::{AsyncQuery, Job, QueryStage};
use super::log::{LoggedRequest, RequestLog};
use super::scenario::{Health, Scenario, SimClock, health_at, minute_of};
use super::traffic::{self, QueryResult, TrafficQuery};
use super::writes;

/// Plain collection GETs return at most this many objects.
const MAX_COLLECTION: usize = 500;

/// The largest event-index lag applied (a year).
const MAX_EVENT_LAG_SECS: u64 = 365 * 24 * 3600;

/// Query pairs as axum extracts them.
type Pairs = Vec<(String, String)>;

/// Everything the routes share.
pub(crate) struct SimState {
    pub(crate) scenario: Scenario,
    pub(crate) seed: u64,
    /// Background flows first detected per minute.
    pub(crate) flows_per_minute: u32,
    pub(crate) org: u64,
    pub(crate) api_key: String,
    pub(crate) api_secret: String,
    /// The estate as it is now: writes replace it (see [`SimState::estate`]).
    estate: Mutex<Arc<Estate>>,
    pub(crate) clock: SimClock,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) log: RequestLog,
    /// The events the API's writes recorded.
    pub(crate) recorded: Recorded,
    ids: Mutex<ChaCha8Rng>,
    requests: AtomicU64,
    queries: Mutex<HashMap<String, Arc<AsyncQuery>>>,
    jobs: Mutex<HashMap<String, Job>>,
    datafiles: Mutex<HashMap<String, Arc<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    /// State for one simulator.
    pub(crate) fn new(cfg: &super::SimConfig, clock: SimClock) -> SimState {
        SimState {
            scenario: cfg.scenario,
            seed: cfg.seed,
            flows_per_minute: cfg.flows_per_minute,
            org: cfg.org,
            api_key: cfg.api_key.clone(),
            api_secret: cfg.api_secret.clone(),
            estate: Mutex::new(Arc::new(Estate::generate(cfg.seed, cfg.org))),
            clock,
            faults: Mutex::new(FaultState::new(cfg.faults.clone())),
            log: RequestLog::default(),
            recorded: Recorded::default(),
            ids: Mutex::new(stream_rng(cfg.seed, 0x1D5, 0)),
            requests: AtomicU64::new(0),
            queries: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            datafiles: Mutex::new(HashMap::new()),
        }
    }

    /// The estate now: a snapshot that later writes do not change.
    pub(crate) fn estate(&self) -> Arc<Estate> {
        lock(&self.estate).clone()
    }

    /// Changes the estate: `check` decides from the estate now what to change (or the
    /// error to answer), then `apply` changes it. Writes are serialized; snapshots taken
    /// before keep the old estate. Returns the plan and the estate after the change.
    pub(crate) fn write_estate<P, E>(
        &self,
        check: impl FnOnce(&Estate) -> Result<P, E>,
        apply: impl FnOnce(&mut Estate, &P),
    ) -> Result<(P, Arc<Estate>), E> {
        let mut current = lock(&self.estate);
        let plan = check(&current)?;
        apply(Arc::make_mut(&mut current), &plan);
        Ok((plan, current.clone()))
    }

    /// Records an event a write caused.
    pub(crate) fn record(&self, e: SimEvent) {
        self.recorded.push(e);
    }

    /// A fresh identifier, deterministic for a given sequence of requests.
    pub(crate) fn next_uuid(&self) -> String {
        det_uuid(&mut *lock(&self.ids)).to_string()
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).faults.clone()
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.api_key, self.api_secret);
        decoded == expected.as_bytes()
    }
}

/// The router, with the gate (auth, faults, logging) around every route.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    let org = "/api/v2/orgs/{org}";
    Router::new()
        .route("/api/v2/node_available", get(node_available))
        .route("/api/v2/health", get(health))
        .route(&format!("{org}/events"), get(list_events))
        .route(
            &format!("{org}/traffic_flows/async_queries"),
            post(create_query),
        )
        .route(
            &format!("{org}/traffic_flows/async_queries/{{id}}"),
            get(query_status),
        )
        .route(
            &format!("{org}/traffic_flows/async_queries/{{id}}/download"),
            get(download),
        )
        .route(
            &format!("{org}/labels"),
            get(labels).post(writes::create_label),
        )
        .route(&format!("{org}/labels/{{id}}"), get(writes::label))
        .route(
            &format!("{org}/sec_policy/{{pstate}}/ip_lists"),
            get(ip_lists),
        )
        .route(&format!("{org}/workloads"), get(workloads))
        .route(
            &format!("{org}/workloads/set_flow_reporting_frequency"),
            post(writes::set_flow_reporting_frequency),
        )
        .route(
            &format!("{org}/workloads/{{id}}"),
            get(writes::workload).put(writes::update_workload),
        )
        .route(&format!("{org}/jobs/{{id}}"), get(job))
        .route(&format!("{org}/datafiles/{{id}}"), get(datafile))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// A JSON error body `[{token, message}]`.
pub(crate) fn error(status: StatusCode, token: &str, message: impl Into<String>) -> Response {
    let body = json!([{"token": token, "message": message.into()}]);
    (status, axum::Json(body)).into_response()
}

/// An error answer: a status and a `[{token, message}]` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) token: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        token: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            token,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.token, self.message)
    }
}

/// A JSON body already serialized.
pub(crate) fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// What the gate tells the routes about a request (a request extension).
#[derive(Debug, Clone)]
pub(crate) struct RequestMeta {
    /// The `X-Request-Id` answered.
    pub(crate) id: String,
    /// The client's address, `"FILTERED"` when unknown.
    pub(crate) src_ip: String,
}

/// Logs, authenticates and injects faults around every request.
async fn gate(State(s): State<Arc<SimState>>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let authenticated = s.authenticated(req.headers());
    let request_id = s.next_uuid();
    let src_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "FILTERED".to_string(), |c| c.0.ip().to_string());
    req.extensions_mut().insert(RequestMeta {
        id: request_id.clone(),
        src_ip,
    });
    let (req, body) = if method != "GET" && method != "HEAD" {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            text,
        )
    } else {
        (req, String::new())
    };
    let mut resp = admit(&s, &path, authenticated, req, next).await;
    resp.headers_mut()
        .insert("x-request-id", header_value(&request_id));
    s.log.push(LoggedRequest {
        method,
        path,
        query,
        body,
        status: resp.status().as_u16(),
        authenticated,
        at: s.clock.now(),
        request_id,
    });
    resp
}

async fn admit(
    s: &SimState,
    path: &str,
    authenticated: bool,
    req: Request,
    next: Next,
) -> Response {
    if path == "/api/v2/node_available" {
        return next.run(req).await;
    }
    if !authenticated {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "Authentication failed: invalid API key or secret",
        );
    }
    let slow = s.faults().slow_reply_ms;
    if slow > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(slow)).await;
    }
    let injected = lock(&s.faults).next_injection();
    if let Some(resp) = injected.map(injected_response) {
        return resp;
    }
    if let Some(resp) = degraded_failure(s, path) {
        return resp;
    }
    if let Some(org) = path
        .strip_prefix("/api/v2/orgs/")
        .and_then(|p| p.split('/').next())
    {
        if org != s.org.to_string() {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("No access to org {org}"),
            );
        }
    }
    next.run(req).await
}

fn injected_response(i: Injected) -> Response {
    match i {
        Injected::RateLimited(retry) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "API rate limit exceeded",
            );
            if let Some(secs) = retry {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header_value(&secs.to_string()));
            }
            r
        }
        Injected::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(
                status,
                "internal_server_error",
                "Something went wrong on the PCE",
            )
        }
    }
}

/// In degraded-pce, while the cluster is critical, every fourth API call fails with 503.
fn degraded_failure(s: &SimState, path: &str) -> Option<Response> {
    if s.scenario != Scenario::DegradedPce || path == "/api/v2/health" {
        return None;
    }
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    let critical = health_at(s.scenario, minute_of(s.clock.now())) == Health::Critical;
    (critical && n % 4 == 3).then(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The PCE is temporarily unavailable",
        )
    })
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "No such resource")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed on this resource",
    )
}

async fn node_available() -> Response {
    StatusCode::OK.into_response()
}

fn pairs(q: Result<Query<Pairs>, QueryRejection>) -> Result<Pairs, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
}

fn param<'p>(pairs: &'p Pairs, name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn max_results(pairs: &Pairs, default: usize) -> Result<usize, ApiError> {
    match param(pairs, "max_results") {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("max_results: {v:?} is not a number"),
            )
        }),
    }
}

async fn list_events(
    State(s): State<Arc<SimState>>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Response {
    let pairs = match pairs(q) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let query = match EventQuery::parse(&pairs) {
        Ok(q) => q,
        Err(e @ QueryError::BareDate(_)) => {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                "invalid_timestamp",
                e.to_string(),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()),
    };
    // A lag beyond the lookback hides everything; clamping keeps the arithmetic in range.
    let lag_secs = s.faults().event_index_lag_secs.min(MAX_EVENT_LAG_SECS);
    let visible = s.clock.now() - chrono::Duration::seconds(lag_secs as i64);
    let (estate, recorded) = (s.estate(), s.recorded.snapshot());
    let (seed, scenario) = (s.seed, s.scenario);
    let found = tokio::task::spawn_blocking(move || {
        events::query(&estate, seed, scenario, &query, visible, &recorded)
    })
    .await;
    match found {
        Ok(list) => json_text(StatusCode::OK, Value::Array(list).to_string()),
        Err(e) => internal_error(e),
    }
}

async fn create_query(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    let query = match TrafficQuery::parse(&s.estate(), &body) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::NOT_ACCEPTABLE, "invalid_payload", e.to_string()),
    };
    let id = s.next_uuid();
    let href = format!("/orgs/{}/traffic_flows/async_queries/{id}", s.org);
    let now = s.clock.now();
    let q = Arc::new(AsyncQuery::new(href, now, query, body));
    lock(&s.queries).insert(id, q.clone());
    json_text(StatusCode::ACCEPTED, q.status_json(now, None).to_string())
}

fn find_query(s: &SimState, id: &str) -> Result<Arc<AsyncQuery>, ApiError> {
    lock(&s.queries).get(id).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No async query {id}"),
        )
    })
}

/// The query's result, computed once on a blocking thread.
async fn query_result(s: &Arc<SimState>, q: &Arc<AsyncQuery>) -> Arc<QueryResult> {
    q.result
        .get_or_init(|| {
            let (st, q) = (s.clone(), q.clone());
            let truncate = s.faults().truncate_results;
            async move {
                let computed = tokio::task::spawn_blocking(move || {
                    let estate = st.estate();
                    let generator = traffic::Generator {
                        estate: &estate,
                        seed: st.seed,
                        scenario: st.scenario,
                        per_minute: st.flows_per_minute,
                    };
                    let mut r =
                        traffic::run_query(&generator, &q.query, q.created_at, q.query.max_results);
                    if truncate && r.matches_count > 1 {
                        r.flows.truncate(r.matches_count / 2);
                    }
                    r
                })
                .await;
                Arc::new(computed.unwrap_or_default())
            }
        })
        .await
        .clone()
}

async fn query_status(
    State(s): State<Arc<SimState>>,
    Path((_org, id)): Path<(String, String)>,
) -> Response {
    let q = match find_query(&s, &id) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let now = s.clock.now();
    let result = match q.stage(now) {
        QueryStage::Completed => Some(query_result(&s, &q).await),
        _ => None,
    };
    json_text(
        StatusCode::OK,
        q.status_json(now, result.as_deref()).to_string(),
    )
}

async fn download(
    State(s): State<Arc<SimState>>,
    Path((_org, id)): Path<(String, String)>,
) -> Response {
    let q = match find_query(&s, &id) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    if q.stage(s.clock.now()) != QueryStage::Completed {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The query has not completed",
        );
    }
    let result = query_result(&s, &q).await;
    let faults = s.faults();
    if q.count_download() == 0 && faults.empty_first_download && result.matches_count > 0 {
        return json_text(StatusCode::OK, String::new());
    }
    let estate = s.estate();
    let gzipped = faults.gzip_downloads;
    tokio::task::spawn_blocking(move || download_body(&estate, &result.flows, gzipped))
        .await
        .unwrap_or_else(internal_error)
}

/// The flows as a JSON array, gzip-compressed (with `Content-Encoding: gzip`) when asked.
fn download_body(estate: &Estate, flows: &[traffic::Flow], gzipped: bool) -> Response {
    let text = traffic::render(estate, flows);
    if !gzipped {
        return json_text(StatusCode::OK, text);
    }
    match gzip(text.as_bytes()) {
        Ok(gz) => {
            let headers = [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
            ];
            (StatusCode::OK, headers, Body::from(gz)).into_response()
        }
        Err(e) => internal_error(e),
    }
}

fn internal_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_server_error",
        e.to_string(),
    )
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// The query of a collection GET and its `max_results` (at most 500).
fn collection_query(
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<(Pairs, usize), Box<Response>> {
    let pairs = pairs(q).map_err(|r| Box::new(r.into_response()))?;
    let limit = max_results(&pairs, MAX_COLLECTION).map_err(|r| Box::new(r.into_response()))?;
    Ok((pairs, limit))
}

/// A collection answer: at most 500 objects, `X-Total-Count` = the unfiltered total.
fn collection(items: Vec<Value>, limit: usize, total: usize) -> Response {
    let items: Vec<Value> = items.into_iter().take(limit.min(MAX_COLLECTION)).collect();
    let mut r = json_text(StatusCode::OK, Value::Array(items).to_string());
    r.headers_mut()
        .insert("x-total-count", header_value(&total.to_string()));
    r
}

async fn labels(
    State(s): State<Arc<SimState>>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Response {
    let (pairs, limit) = match collection_query(q) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let key = param(&pairs, "key");
    let value = param(&pairs, "value").map(str::to_lowercase);
    let estate = s.estate();
    let items = estate
        .labels
        .iter()
        .filter(|l| key.is_none_or(|k| l.key == k))
        .filter(|l| {
            value
                .as_deref()
                .is_none_or(|v| l.value.to_lowercase().contains(v))
        })
        .map(|l| estate.label_rest(l))
        .collect();
    collection(items, limit, estate.labels.len())
}

async fn ip_lists(
    State(s): State<Arc<SimState>>,
    Path((_org, pstate)): Path<(String, String)>,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Response {
    if pstate != "draft" && pstate != "active" {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Unknown policy state {pstate:?}"),
        );
    }
    let pairs = match pairs(q) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let name = param(&pairs, "name").map(str::to_lowercase);
    let estate = s.estate();
    let items = estate
        .ip_lists
        .iter()
        .filter(|l| {
            name.as_deref()
                .is_none_or(|n| l.name.to_lowercase().contains(n))
        })
        .map(|l| estate.ip_list_rest(l, &pstate))
        .collect();
    collection(items, MAX_COLLECTION, estate.ip_lists.len())
}

/// The `labels` parameter: a JSON list of lists of label hrefs (OR of AND-groups).
fn label_groups(pairs: &Pairs) -> Result<Option<Vec<Vec<String>>>, ApiError> {
    param(pairs, "labels")
        .map(|v| {
            serde_json::from_str::<Vec<Vec<String>>>(v).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("labels must be a JSON list of lists of hrefs: {e}"),
                )
            })
        })
        .transpose()
}

fn workload_items(estate: &Estate, pairs: &Pairs) -> Result<Vec<Value>, ApiError> {
    let hostname = param(pairs, "hostname");
    let ip = param(pairs, "ip_address");
    let groups = label_groups(pairs)?;
    let has_labels = |w: &super::estate::Workload| {
        groups.as_ref().is_none_or(|groups| {
            groups.iter().any(|g| {
                g.iter()
                    .all(|href| w.labels.iter().any(|&i| estate.labels[i].href == *href))
            })
        })
    };
    Ok(estate
        .managed_workloads()
        .filter(|w| hostname.is_none_or(|h| w.hostname.as_deref().is_some_and(|x| x.contains(h))))
        .filter(|w| ip.is_none_or(|ip| w.ip.to_string() == ip))
        .filter(|w| has_labels(w))
        .map(|w| estate.workload_rest(w))
        .collect())
}

async fn workloads(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Response {
    let (pairs, limit) = match collection_query(q) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let estate = s.estate();
    let items = match workload_items(&estate, &pairs) {
        Ok(items) => items,
        Err(r) => return r.into_response(),
    };
    let asynchronous = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("respond-async"));
    if asynchronous {
        return start_job(&s, items, "/workloads");
    }
    collection(items, limit, estate.managed_workloads().count())
}

fn start_job(s: &SimState, items: Vec<Value>, what: &str) -> Response {
    let job_id = s.next_uuid();
    let file_id = s.next_uuid();
    let job = Job {
        href: format!("/orgs/{}/jobs/{job_id}", s.org),
        created_at: s.clock.now(),
        datafile_href: format!("/orgs/{}/datafiles/{file_id}", s.org),
        description: format!("/orgs/{}{what}", s.org),
    };
    lock(&s.datafiles).insert(file_id, Arc::new(Value::Array(items).to_string()));
    let location = job.href.clone();
    lock(&s.jobs).insert(job_id, job);
    let headers = [
        (header::LOCATION, header_value(&location)),
        (header::RETRY_AFTER, HeaderValue::from_static("5")),
    ];
    (StatusCode::ACCEPTED, headers).into_response()
}

async fn job(State(s): State<Arc<SimState>>, Path((_org, id)): Path<(String, String)>) -> Response {
    let job = lock(&s.jobs).get(&id).cloned();
    match job {
        Some(j) => json_text(StatusCode::OK, j.status_json(s.clock.now()).to_string()),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("No job {id}")),
    }
}

async fn datafile(
    State(s): State<Arc<SimState>>,
    Path((_org, id)): Path<(String, String)>,
) -> Response {
    let file = lock(&s.datafiles).get(&id).cloned();
    match file {
        Some(f) => json_text(StatusCode::OK, f.as_str().to_string()),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No datafile {id}"),
        ),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn health(State(s): State<Arc<SimState>>) -> Response {
    let now = s.clock.now();
    let status = health_at(s.scenario, minute_of(now));
    let notifications = match status {
        Health::Normal => json!([]),
        Health::Warning => {
            json!([{"status": "warning", "token": "pce_health.disk_usage", "message": "Disk usage on data0 is above 85%"}])
        }
        Health::Critical => json!([
            {"status": "critical", "token": "pce_health.service_down", "message": "Service traffic_worker is not running on core1"},
            {"status": "warning", "token": "pce_health.disk_usage", "message": "Disk usage on data0 is above 95%"}
        ]),
    };
    let node = |name: &str, kind: &str, ip: &str, cpu: u32| {
        json!({"hostname": name, "ip_address": ip, "type": kind, "runlevel": 5, "uptime_seconds": 1_209_600,
               "cpu": {"status": "normal", "percent": cpu}, "memory": {"status": "normal", "percent": 61},
               "disk": [{"location": "disk0", "value": {"status": status.as_str(), "percent": if status == Health::Normal { 52 } else { 91 }}}],
               "services": {"status": status.as_str(), "running": ["agent_service", "traffic_worker", "search_index"], "not_running": []},
               "generated_at": stamp(now)})
    };
    let body = json!([{
        "status": status.as_str(),
        "type": "standalone",
        "fqdn": s.estate().pce_fqdn,
        "available_seconds": (now.timestamp() - 1_700_000_000).max(0),
        "notifications": notifications,
        "nodes": [node("core0", "core", "10.0.0.10", 23), node("core1", "core", "10.0.0.11", 31),
                  node("data0", "data0", "10.0.0.20", 17), node("data1", "data1", "10.0.0.21", 12)],
        "network": {"replication": []},
        "generated_at": stamp(now),
    }]);
    json_text(StatusCode::OK, body.to_string())
}
