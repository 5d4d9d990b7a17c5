//! vigil's HTTP server (axum): the JSON API, Prometheus `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! - `GET /healthz`: the process answers. `GET /readyz`: the graph runs (503 naming
//!   every pipeline stopped because a node of it failed too often).
//! - `GET /metrics`: Prometheus text format (see [`metrics`]).
//! - `GET /api/v1/pipelines`: every pipeline (running or failed) with its nodes (kind,
//!   inputs, counters, state, restarts, last error) and the last reload's outcome.
//! - `GET /api/v1/stats`: totals.
//! - `POST /api/v1/reload`: reloads the pipelines directory now (200 with the report, 422
//!   with the errors when the files do not validate; the running graph is then unchanged).
//! - `GET`/`POST /api/v1/bans`, `DELETE /api/v1/bans/{address}`: the bans of the
//!   `nftables_ban` sinks (see [`bans`]).
//!
//! - `GET /` and `GET /assets/*`: the dashboard (see [`dashboard`]).
//!
//! With a `token` configured every route but `/healthz`, `/readyz` and the dashboard's
//! static files needs `Authorization: Bearer <token>` (the live stream also takes
//! `?token=`, percent-decoded: a browser's `EventSource` cannot send headers); without one,
//! vigil listens on loopback only (checked by `vigil validate`). No route ever returns a
//! secret.
//!
//! Hostile clients ([`server`], [`guard`]): connections are bounded and timed out before
//! any request is read; every request but the health checks must name this server in its
//! `Host` (421 otherwise: DNS rebinding); without a token, a browser's request that
//! changes something must come from this server's own pages (403 otherwise: cross-site
//! forms). Bodies are limited (`web.max_body_bytes`, 413), requests timed out
//! (`web.request_timeout`, 408; never the live stream), a panicking handler answers 500,
//! and every answer carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer` and a Content-Security-Policy. Everything refused is
//! counted (`vigil_web_refused_total{reason}`).

mod bans;
mod dashboard;
mod guard;
mod metrics;
mod server;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::model::WebConfig;
use crate::pce::client::Secret;
use crate::runtime::{ReloadDriver, Reloader};
use guard::HostPolicy;
use stats::{Refusal, WebStats};

/// The web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `web.listen` is not an address.
    #[error("web.listen `{0}` is not an address and port (`127.0.0.1:5001`)")]
    Address(String),
    /// The token file cannot be read.
    #[error("web: {0}")]
    Token(String),
    /// The address is taken or not allowed.
    #[error(
        "cannot listen on {addr}: {source} (set web.listen to a free address, or web.enabled: false)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A `web.allowed_hosts` entry is not a host.
    #[error(transparent)]
    AllowedHost(#[from] guard::BadAllowedHost),
    /// A limit of the `web:` settings is zero.
    #[error("web.{0} must be greater than zero (the default is {1})")]
    Zero(&'static str, &'static str),
}

/// What the routes read.
#[derive(Clone)]
struct AppState {
    reloader: Reloader,
    driver: ReloadDriver,
    token: Option<Arc<Secret>>,
    hosts: Arc<HostPolicy>,
    stats: Arc<WebStats>,
    limits: RequestLimits,
}

/// The limits of one request (for the messages that name them).
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    max_body_bytes: usize,
    request_timeout: Duration,
}

/// A running server.
pub struct Server {
    /// The address it listens on (the actual port when `:0` was asked for).
    pub addr: SocketAddr,
    /// Its task; it ends when the shutdown token given to [`serve`] is cancelled.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the server of `cfg` for the graph behind `reloader`, until `shutdown`.
/// `public_url` (the settings' `public_url`) is one of the names it answers to.
pub async fn serve(
    cfg: &WebConfig,
    public_url: &str,
    reloader: Reloader,
    driver: ReloadDriver,
    shutdown: CancellationToken,
) -> Result<Server, WebError> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| WebError::Address(cfg.listen.clone()))?;
    for (name, value, default) in [
        ("header_read_timeout", &cfg.header_read_timeout, "10s"),
        ("request_timeout", &cfg.request_timeout, "30s"),
        ("idle_timeout", &cfg.idle_timeout, "60s"),
    ] {
        if !value.is_positive() {
            return Err(WebError::Zero(name, default));
        }
    }
    if cfg.max_connections == 0 {
        return Err(WebError::Zero("max_connections", "1024"));
    }
    if cfg.max_body_bytes == 0 {
        return Err(WebError::Zero("max_body_bytes", "65536"));
    }
    let token = if cfg.token.is_some() || cfg.token_file.is_some() {
        let t = crate::pce::client::resolve_secret("token", &cfg.token, cfg.token_file.as_deref())
            .map_err(WebError::Token)?;
        Some(Arc::new(t))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WebError::Bind { addr, source })?;
    let hosts = HostPolicy::new(addr, public_url, &cfg.allowed_hosts)?;
    let stats = Arc::new(WebStats::default());
    let state = AppState {
        reloader,
        driver,
        token,
        hosts: Arc::new(hosts),
        stats: stats.clone(),
        limits: RequestLimits {
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: cfg.request_timeout.get(),
        },
    };
    let app = router(state);
    let limits = server::Limits {
        max_connections: server::room_for(cfg.max_connections),
        header_read_timeout: cfg.header_read_timeout.get(),
        idle_timeout: cfg.idle_timeout.get(),
    };
    if limits.idle_timeout <= cfg.request_timeout.get() {
        tracing::warn!(
            idle_timeout = %cfg.idle_timeout,
            request_timeout = %cfg.request_timeout,
            "web: idle_timeout is not above request_timeout: a slow request is cut without an answer (raise web.idle_timeout)"
        );
    }
    let task = tokio::spawn(server::run(listener, app, limits, stats, shutdown));
    tracing::info!(address = %addr, url = %format!("http://{addr}/"), "web: listening");
    Ok(Server { addr, task })
}

/// Every API route: (method, path). `schemas/openapi.json` describes exactly these (a
/// test checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/pipelines"),
    ("get", "/api/v1/stats"),
    ("post", "/api/v1/reload"),
    ("post", "/api/v1/run-once"),
    ("get", "/api/v1/alerts"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/stream"),
    ("get", "/api/v1/silences"),
    ("post", "/api/v1/silences"),
    ("delete", "/api/v1/silences/{id}"),
    ("get", "/api/v1/bans"),
    ("post", "/api/v1/bans"),
    ("delete", "/api/v1/bans/{address}"),
];

fn router(state: AppState) -> Router {
    // Everything but the live stream is answered within `request_timeout`.
    let timed = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/api/v1/pipelines", get(pipelines))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/run-once", post(run_once))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/events", get(events))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .route("/api/v1/bans", get(bans::list).post(bans::add))
        .route(
            "/api/v1/bans/{address}",
            axum::routing::delete(bans::remove),
        )
        .merge(dashboard::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.limits.request_timeout,
        ));
    let app = timed
        .route("/api/v1/stream", get(stream))
        .layer(RequestBodyLimitLayer::new(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    hardened(app, state.stats.clone(), state.limits)
}

/// The layers every answer goes through, outermost last: a panic answered 500, refusals
/// counted and told in JSON, security headers.
fn hardened(app: Router, stats: Arc<WebStats>, limits: RequestLimits) -> Router {
    let on_panic = {
        let stats = stats.clone();
        move |panic: Box<dyn std::any::Any + Send + 'static>| {
            stats.panicked();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "web: a request handler panicked");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "vigil failed to answer this request (a bug: the log has the details)",
            )
        }
    };
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    app.layer(CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn_with_state(
            (stats, limits),
            told_in_json,
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        // The API's answers are data, never a page: nothing may load from them. The
        // dashboard's files carry their own policy (see `dashboard`).
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// Counts the bodies too large and the requests timed out (answered by tower-http's layers
/// or an extractor) and tells them in JSON, with the setting to change.
async fn told_in_json(
    State((stats, limits)): State<(Arc<WebStats>, RequestLimits)>,
    req: Request,
    next: Next,
) -> Response {
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            stats.refuse(Refusal::BodyTooLarge);
            if !json {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the request body is larger than web.max_body_bytes ({} bytes)",
                        limits.max_body_bytes
                    ),
                );
            }
        }
        StatusCode::REQUEST_TIMEOUT => {
            stats.refuse(Refusal::RequestTimeout);
            if !json {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request was not answered within web.request_timeout ({}): send the body at once, or raise web.request_timeout",
                        humantime::format_duration(limits.request_timeout)
                    ),
                );
            }
        }
        _ => {}
    }
    resp
}

/// Who may ask: the `Host` must name this server (but for the health checks); without a
/// token a browser's change must come from this server's own pages; with one, every route
/// but the health checks and the dashboard's files needs it.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let health = matches!(path, "/healthz" | "/readyz");
    if !health {
        let header_host = req.headers().get(header::HOST).map(|v| v.to_str());
        // An absolute request target (`GET http://name/ HTTP/1.1`) names a host too.
        let names = [header_host, req.uri().authority().map(|a| Ok(a.as_str()))];
        let refused = match names {
            [None, None] => Some("send a `Host` header naming this server".to_string()),
            _ => names.into_iter().flatten().find_map(|name| match name {
                Ok(h) if state.hosts.allows(h) => None,
                other => {
                    let named: String = other.unwrap_or("").chars().take(100).collect();
                    Some(format!(
                        "vigil does not answer to the name `{named}`: open it at its web.listen address or public_url, or add the name to web.allowed_hosts (a request naming another host may come from a web page rebinding its DNS name)"
                    ))
                }
            }),
        };
        if let Some(message) = refused {
            state.stats.refuse(Refusal::Host);
            return error(StatusCode::MISDIRECTED_REQUEST, &message);
        }
    }
    let Some(token) = &state.token else {
        if !guard::only_reads(req.method()) && state.hosts.cross_origin(req.headers()) {
            state.stats.refuse(Refusal::Origin);
            return error(
                StatusCode::FORBIDDEN,
                "a web page of another origin cannot change vigil: use the dashboard at vigil's own address, or configure web.token and send it (tools that send no Origin header, like curl, are served)",
            );
        }
        return next.run(req).await;
    };
    // The dashboard's static files hold no data.
    if health || path == "/" || path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    // A browser's EventSource cannot send headers: the stream takes `?token=` too,
    // percent-decoded (a base64 token has `+`, `/` and `=`).
    let from_query = || {
        (path == "/api/v1/stream")
            .then(|| {
                axum::extract::Query::<TokenQuery>::try_from_uri(req.uri())
                    .ok()
                    .and_then(|q| q.0.token)
            })
            .flatten()
    };
    let given = from_header.or_else(from_query).unwrap_or_default();
    if guard::token_matches(&given, token.expose()) {
        return next.run(req).await;
    }
    state.stats.refuse(Refusal::Token);
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "send the configured token: `Authorization: Bearer <token>`",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// `?token=` of the live stream.
#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Ready while no pipeline was stopped by a node that failed too often and no PCE
/// refuses its connection's API key (503 naming them otherwise).
async fn readyz(State(state): State<AppState>) -> Response {
    let nodes = state.reloader.nodes().await;
    let mut failed: Vec<String> = nodes
        .iter()
        .filter(|n| n.state == crate::runtime::NodeState::Failed)
        // Why is for `/api/v1/pipelines` (behind the token): no error text here.
        .map(|n| format!("pipeline {} is stopped: node {} failed", n.pipeline, n.id))
        .collect();
    for (name, refused) in pce_credentials(&state).await {
        if let Some(status) = refused {
            failed.push(format!(
                "PCE connection {name} refuses the API key ({})",
                refusal(status)
            ));
        }
    }
    if failed.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failed.join("; ")),
        )
            .into_response()
    }
}

/// Each PCE connection in use, with the status its PCE refuses the API key with (401 or
/// 403), if it does.
async fn pce_credentials(state: &AppState) -> Vec<(String, Option<u16>)> {
    let services = state.reloader.services().await;
    services
        .pce
        .iter()
        .map(|(name, p)| (name.clone(), p.client().credentials_refused()))
        .collect()
}

/// `401 unauthorized` / `403 forbidden`.
fn refusal(status: u16) -> String {
    match status {
        401 => "401 unauthorized".into(),
        403 => "403 forbidden".into(),
        other => other.to_string(),
    }
}

async fn pipelines(State(state): State<AppState>) -> Response {
    let nodes = state.reloader.nodes().await;
    let pipelines: Vec<serde_json::Value> = state
        .reloader
        .pipelines()
        .await
        .into_iter()
        .map(|(name, description)| {
            let mine: Vec<&crate::runtime::NodeStatus> =
                nodes.iter().filter(|n| n.pipeline == name).collect();
            let failed = mine
                .iter()
                .any(|n| n.state == crate::runtime::NodeState::Failed);
            let state = if failed { "failed" } else { "running" };
            json!({"name": name, "description": description, "state": state, "nodes": mine})
        })
        .collect();
    let (last, reloads, failures) = state.driver.status();
    let consoles: serde_json::Map<String, serde_json::Value> = state
        .reloader
        .services()
        .await
        .pce
        .iter()
        .filter_map(|(name, p)| Some((name.clone(), p.client().console_base()?.into())))
        .collect();
    axum::Json(json!({
        "pipelines": pipelines,
        "reload": {"last": last, "reloads": reloads, "failures": failures},
        "pce_consoles": consoles,
    }))
    .into_response()
}

async fn stats(State(state): State<AppState>) -> Response {
    let nodes = state.reloader.nodes().await;
    let sum = |role: &str, f: fn(&crate::runtime::NodeStatus) -> u64| -> u64 {
        nodes.iter().filter(|n| n.role == role).map(f).sum()
    };
    let store = state.reloader.store().await;
    let outbox: serde_json::Map<String, serde_json::Value> = store
        .outbox_counts()
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n.into()))
        .collect();
    let (_, reloads, failures) = state.driver.status();
    let pce: serde_json::Map<String, serde_json::Value> = pce_credentials(&state)
        .await
        .into_iter()
        .map(|(name, refused)| {
            let credentials = match refused {
                None => "accepted",
                Some(401) => "unauthorized",
                Some(_) => "forbidden",
            };
            (name, json!({"credentials": credentials}))
        })
        .collect();
    axum::Json(json!({
        "pipelines": state.reloader.pipelines().await.len(),
        "pce": pce,
        "nodes": nodes.len(),
        "events_read": sum("source", |n| n.events_out),
        "events_delivered": sum("sink", |n| n.events_out),
        "errors": nodes.iter().map(|n| n.errors).sum::<u64>(),
        "outbox": outbox,
        "reloads": reloads,
        "reload_failures": failures,
    }))
    .into_response()
}

/// Wakes the polling sources (`pce_events`, `pce_health`) to poll now instead of at their
/// next interval. Traffic sources keep their schedule of consecutive time slices.
async fn run_once(State(state): State<AppState>) -> Response {
    state.reloader.tap().await.poll_now();
    tracing::info!("run-once: the polling sources poll now");
    (StatusCode::ACCEPTED, axum::Json(json!({"polling": true}))).into_response()
}

async fn reload(State(state): State<AppState>) -> Response {
    // On its own task: a request timeout or a client that hangs up does not stop a reload
    // half-way.
    let driver = state.driver.clone();
    let Ok(outcome) = tokio::spawn(async move { driver.reload("API").await }).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the reload task failed (the log has the details)",
        );
    };
    let status = if outcome.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(outcome)).into_response()
}

/// `?pipeline=&severity=&status=&limit=&after=&offset=` of `/api/v1/alerts`.
#[derive(Debug, serde::Deserialize)]
struct AlertQuery {
    pipeline: Option<String>,
    severity: Option<crate::event::Severity>,
    status: Option<crate::event::AlertStatus>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
    /// The `next` of the page before: pages at any depth cost the same.
    after: Option<String>,
}

fn default_limit() -> usize {
    50
}

async fn alerts(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: pipeline=NAME, severity=info|low|medium|high|critical, status=firing|resolved, limit=N (at most 500), offset=N, after=CURSOR (a page's `next`)",
        );
    };
    let after = match q
        .after
        .as_deref()
        .map(str::parse::<crate::store::history::Cursor>)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let store = state.reloader.store().await;
    let now = state.reloader.clock().await.now().timestamp_millis();
    let limit = q.limit.min(500);
    // The database is read on the blocking pool, not on the server's workers.
    let page = tokio::task::spawn_blocking(move || {
        let filter = crate::store::history::AlertQuery {
            pipeline: q.pipeline.as_deref(),
            min_severity: q.severity,
            status: q.status,
            after: after.as_ref(),
        };
        let mut page = store.alerts(&filter, limit, q.offset)?;
        mark_silenced(&mut page.alerts, &store.active_silences(now)?);
        Ok::<_, crate::store::StoreError>((page, q.offset))
    })
    .await;
    match page {
        Ok(Ok((page, offset))) => axum::Json(json!({
            "alerts": page.alerts,
            "limit": limit,
            "offset": offset,
            "next": page.next.map(|c| c.to_string()),
            "total": page.total,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the history query failed",
        ),
    }
}

/// Adds `silenced` to each alert an active silence matches: the ids of those silences and
/// when the last of them ends (`{"by": [..], "until": ms}`), so the list can say that a
/// firing alert is not being notified.
fn mark_silenced(alerts: &mut [serde_json::Value], active: &[crate::store::Silence]) {
    if active.is_empty() {
        return;
    }
    for alert in alerts {
        let matching: Vec<_> = active.iter().filter(|s| s.matches_value(alert)).collect();
        let Some(until) = matching.iter().map(|s| s.expires_at).max() else {
            continue;
        };
        let by: Vec<&str> = matching.iter().map(|s| s.id.as_str()).collect();
        if let Some(o) = alert.as_object_mut() {
            o.insert("silenced".into(), json!({"by": by, "until": until}));
        }
    }
}

/// `?source=&limit=` of `/api/v1/events`.
#[derive(Debug, serde::Deserialize)]
struct EventQuery {
    source: Option<String>,
    pipeline: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// The recent events the sources read, newest first.
async fn events(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: source=PIPELINE.NODE, pipeline=NAME, limit=N (at most 500)",
        );
    };
    let items: Vec<crate::runtime::StreamItem> = state
        .reloader
        .tap()
        .await
        .recent()
        .into_iter()
        .filter(|i| q.source.as_deref().is_none_or(|s| i.source == s))
        .filter(|i| q.pipeline.as_deref().is_none_or(|p| i.pipeline == p))
        .take(q.limit.min(500))
        .collect();
    axum::Json(json!({"events": items})).into_response()
}

/// `?type=&severity=&pipeline=` of `/api/v1/stream`.
#[derive(Debug, serde::Deserialize)]
struct StreamQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    severity: Option<crate::event::Severity>,
    pipeline: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
}

/// Events and alerts as they happen, as Server-Sent Events (`event: alert` / `event:
/// event`, JSON data); `severity` keeps alerts at or above it (and drops plain events).
/// Each event comes once; an alert that a later stage edited (a top-N table added) comes
/// again with the same `id`, to be shown in place of the first.
async fn stream(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query: type=event|alert, severity=info|low|medium|high|critical, pipeline=NAME",
        );
    };
    if q.kind
        .as_deref()
        .is_some_and(|k| k != "event" && k != "alert")
    {
        return error(StatusCode::BAD_REQUEST, "type is `event` or `alert`");
    }
    let rx = state.reloader.tap().await.subscribe();
    // A listener that falls behind skips what it missed (`None`) rather than ending.
    let items = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(item) => Some((Some(item), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    // Each event once (a PCE event is read by every pipeline's `pce_events` source), after
    // this listener's filters (so a pipeline's view keeps its own copy).
    let mut seen = crate::runtime::SeenItems::default();
    let events = futures::StreamExt::filter_map(items, move |item| {
        let keep = item.filter(|i| {
            q.kind.as_deref().is_none_or(|k| i.kind == k)
                && q.pipeline.as_deref().is_none_or(|p| i.pipeline == p)
                && q.severity
                    .is_none_or(|min| i.severity.is_some_and(|s| s >= min))
                && seen.is_new(i)
        });
        let event = keep.map(|i| {
            Ok::<_, std::convert::Infallible>(
                axum::response::sse::Event::default()
                    .event(i.kind)
                    .data(serde_json::to_string(&*i).unwrap_or_default()),
            )
        });
        std::future::ready(event)
    });
    axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

async fn silences(State(state): State<AppState>) -> Response {
    let store = state.reloader.store().await;
    let now = state.reloader.clock().await.now().timestamp_millis();
    match store.silences() {
        Ok(list) => {
            let list: Vec<serde_json::Value> = list
                .into_iter()
                .map(|s| {
                    let active = s.created_at <= now && s.expires_at > now;
                    let mut v = serde_json::to_value(&s).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("active".into(), active.into());
                    }
                    v
                })
                .collect();
            axum::Json(json!({"silences": list})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The body of `POST /api/v1/silences`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<crate::store::Matcher>,
    /// How long from now (`2h`); or `expires_at` (RFC 3339).
    duration: Option<String>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    created_by: String,
}

async fn add_silence(
    State(state): State<AppState>,
    body: Result<axum::Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(new) = match body {
        Ok(b) => b,
        // 413 for a body past `max_body_bytes`, 400/415/422 for the rest.
        Err(e) => return error(e.status(), &e.body_text()),
    };
    if new.matchers.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence needs at least one matcher",
        );
    }
    for m in &new.matchers {
        if let Err(e) = m.check() {
            return error(StatusCode::BAD_REQUEST, &e);
        }
    }
    let now = state.reloader.clock().await.now();
    let expires = match (&new.duration, new.expires_at) {
        (Some(d), None) => {
            let end = crate::time::parse_length(d).and_then(|length| {
                chrono::Duration::from_std(length)
                    .ok()
                    .and_then(|length| now.checked_add_signed(length))
                    .ok_or_else(|| format!("`{d}` reaches past the last date vigil can hold"))
            });
            match end {
                Ok(t) => t,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("duration: {e}")),
            }
        }
        (None, Some(t)) => t,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either `duration` (`2h`) or `expires_at` (RFC 3339)",
            );
        }
    };
    if expires <= now {
        return error(
            StatusCode::BAD_REQUEST,
            "the silence would end before it starts",
        );
    }
    let silence = crate::store::Silence {
        id: uuid::Uuid::new_v4().to_string(),
        created_at: now.timestamp_millis(),
        expires_at: expires.timestamp_millis(),
        matchers: new.matchers,
        comment: new.comment,
        created_by: if new.created_by.is_empty() {
            "api".into()
        } else {
            new.created_by
        },
    };
    let store = state.reloader.store().await;
    match store.add_silence(&silence) {
        Ok(()) => {
            tracing::info!(silence = %silence.id, comment = %silence.comment, "silence created");
            (StatusCode::CREATED, axum::Json(silence)).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn expire_silence(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let store = state.reloader.store().await;
    let now = state.reloader.clock().await.now().timestamp_millis();
    match store.expire_silence(&id, now) {
        Ok(true) => axum::Json(json!({"expired": id})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no active silence with this id"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn metrics_route(State(state): State<AppState>) -> Response {
    let nodes = state.reloader.nodes().await;
    let store = state.reloader.store().await;
    let (_, reloads, failures) = state.driver.status();
    let counts = metrics::Counts {
        outbox: store.outbox_counts().unwrap_or_default(),
        deliveries: store.deliveries_by_sink().unwrap_or_default(),
        alerts: store.alert_counts().unwrap_or_default(),
        reloads: (reloads, failures),
        writer: store.writer_counts(),
        web: state.stats.counts(),
        pce: {
            let services = state.reloader.services().await;
            services
                .pce
                .iter()
                .map(|(n, p)| {
                    let stats = p.client().request_stats();
                    (n.clone(), stats, p.traffic_counters())
                })
                .collect()
        },
    };
    let snapshot = metrics::Snapshot {
        nodes,
        counts,
        process: metrics::Process::read(),
    };
    match metrics::render(snapshot) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            )],
            body,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("on purpose")
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    }

    /// The outer layers: a panic is answered 500, a request past its time 408, a body past
    /// its size 413, each in JSON naming what to change, counted, with the security
    /// headers.
    #[tokio::test]
    async fn panics_timeouts_and_large_bodies_are_answered_in_json_and_counted() {
        let stats = Arc::new(WebStats::default());
        let limits = RequestLimits {
            max_body_bytes: 16,
            request_timeout: Duration::from_millis(100),
        };
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/slow", get(slow))
            .route("/echo", post(|body: String| async move { body }))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            ))
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes));
        let app = hardened(app, stats.clone(), limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for (method, path, status, says) in [
            ("GET", "/boom", 500, "a bug"),
            ("GET", "/slow", 408, "web.request_timeout (100ms)"),
            ("POST", "/echo", 413, "web.max_body_bytes (16 bytes)"),
        ] {
            let req = match method {
                "GET" => client.get(format!("http://{addr}{path}")),
                _ => client
                    .post(format!("http://{addr}{path}"))
                    .body("x".repeat(100)),
            };
            let resp = req.send().await.expect("answer");
            assert_eq!(resp.status().as_u16(), status, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
            let body: serde_json::Value = resp.json().await.expect("JSON");
            let message = body["error"].as_str().expect("error");
            assert!(message.contains(says), "{path}: {message}");
        }
        let counts = stats.counts();
        assert_eq!(counts.panics, 1);
        let refused = |reason: &str| {
            counts
                .refused
                .iter()
                .find(|(r, _)| *r == reason)
                .map(|(_, n)| *n)
        };
        assert_eq!(refused("request_timeout"), Some(1));
        assert_eq!(refused("body_too_large"), Some(1));
    }

    /// The OpenAPI description in `schemas/` lists exactly the routes served.
    #[test]
    fn the_openapi_description_matches_the_routes() {
        let text = include_str!("../../schemas/openapi.json");
        let spec: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let mut documented: Vec<(String, String)> = spec["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(|m| (m.clone(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
