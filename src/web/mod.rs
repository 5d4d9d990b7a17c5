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
//!
//! - `GET /` and `GET /assets/*`: the dashboard (see [`dashboard`]).
//!
//! With a `token` configured every route but `/healthz`, `/readyz` and the dashboard's
//! static files needs `Authorization: Bearer <token>` (the live stream also takes
//! `?token=`: a browser's `EventSource` cannot send headers); without one, vigil listens on
//! loopback only (checked by `vigil validate`). No route ever returns a secret.

mod dashboard;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::model::WebConfig;
use crate::pce::client::Secret;
use crate::runtime::{ReloadDriver, Reloader};

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
}

/// What the routes read.
#[derive(Clone)]
struct AppState {
    reloader: Reloader,
    driver: ReloadDriver,
    token: Option<Arc<Secret>>,
}

/// A running server.
pub struct Server {
    /// The address it listens on (the actual port when `:0` was asked for).
    pub addr: SocketAddr,
    /// Its task; it ends when the shutdown token given to [`serve`] is cancelled.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the server of `cfg` for the graph behind `reloader`, until `shutdown`.
pub async fn serve(
    cfg: &WebConfig,
    reloader: Reloader,
    driver: ReloadDriver,
    shutdown: CancellationToken,
) -> Result<Server, WebError> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|_| WebError::Address(cfg.listen.clone()))?;
    let token = if cfg.token.is_some() || cfg.token_file.is_some() {
        let t = crate::pce::client::resolve_secret("token", &cfg.token, cfg.token_file.as_deref())
            .map_err(WebError::Token)?;
        Some(Arc::new(t))
    } else {
        None
    };
    let state = AppState {
        reloader,
        driver,
        token,
    };
    let app = router(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WebError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "the web server stopped");
        }
    });
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
];

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/api/v1/pipelines", get(pipelines))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/run-once", post(run_once))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/events", get(events))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .merge(dashboard::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// With a token configured: every route but the health checks needs it.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    // The health checks, and the dashboard's static files (they hold no data).
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/") || path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A browser's EventSource cannot send headers: the stream takes `?token=` too.
    let from_query = (req.uri().path() == "/api/v1/stream")
        .then(|| {
            req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(|t| t.to_string())
            })
        })
        .flatten();
    let given = from_header
        .map(str::to_string)
        .or(from_query)
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "send the configured token: `Authorization: Bearer <token>`",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Compares without stopping at the first difference (no timing hint at the token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ready while no pipeline was stopped by a node that failed too often (503 naming
/// them otherwise).
async fn readyz(State(state): State<AppState>) -> Response {
    let nodes = state.reloader.nodes().await;
    let failed: Vec<String> = nodes
        .iter()
        .filter(|n| n.state == crate::runtime::NodeState::Failed)
        // Why is for `/api/v1/pipelines` (behind the token): no error text here.
        .map(|n| format!("pipeline {} is stopped: node {} failed", n.pipeline, n.id))
        .collect();
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
    axum::Json(json!({
        "pipelines": pipelines,
        "reload": {"last": last, "reloads": reloads, "failures": failures},
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
    axum::Json(json!({
        "pipelines": state.reloader.pipelines().await.len(),
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
    let outcome = state.driver.reload("API").await;
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
    let limit = q.limit.min(500);
    // The database is read on the blocking pool, not on the server's workers.
    let page = tokio::task::spawn_blocking(move || {
        let filter = crate::store::history::AlertQuery {
            pipeline: q.pipeline.as_deref(),
            min_severity: q.severity,
            status: q.status,
            after: after.as_ref(),
        };
        store
            .alerts(&filter, limit, q.offset)
            .map(|p| (p, q.offset))
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
    let events = futures::StreamExt::filter_map(items, move |item| {
        let keep = item.filter(|i| {
            q.kind.as_deref().is_none_or(|k| i.kind == k)
                && q.pipeline.as_deref().is_none_or(|p| i.pipeline == p)
                && q.severity
                    .is_none_or(|min| i.severity.is_some_and(|s| s >= min))
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
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
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

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
