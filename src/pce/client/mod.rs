//! The PCE REST client.
//!
//! One [`PceClient`] per PCE connection, cloned into every pipeline that uses it: clones
//! share one HTTP connection pool and one request budget
//! (`requests_per_minute`). Every wait — the budget, retry backoff, `Retry-After`, polling
//! async queries — goes through the [`SharedClock`] it was built with, so tests run on a
//! virtual clock without sleeping.
//!
//! Retries: GETs are retried on 429, 5xx, timeouts and connection errors; POSTs only on
//! 429 (the PCE did not process it) and on connection failures (nothing was sent). A POST
//! that timed out after being sent is never retried ([`PceError::PostTimedOut`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil::pce::client::PceError> {
//! use std::sync::Arc;
//! use vigil::pce::client::{PceClient, PceConnectionConfig, Secret, TrafficQuery};
//! use vigil::runtime::{SharedClock, WallClock};
//!
//! let cfg = PceConnectionConfig::new(
//!     "https://pce.example.com:8443",
//!     Secret::new("api_1234"),
//!     Secret::new("secret"),
//! );
//! let clock: SharedClock = Arc::new(WallClock);
//! let pce = PceClient::new(&cfg, clock)?;
//! let end = chrono::Utc::now();
//! let query = TrafficQuery::new("vigil", end - chrono::Duration::minutes(10), end, 200_000);
//! let result = pce.traffic_query(&query).await?;
//! if result.truncated {
//!     // more than max_results flows matched: not all the traffic
//! }
//! # Ok(()) }
//! ```

mod budget;
mod collections;
mod config;
mod download;
mod error;
mod events;
mod poll;
mod stats;
mod traffic;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::RetryPolicy;
use crate::time::SharedClock;
use budget::Budget;

pub use collections::{PolicyVersion, SYNC_LIMIT, WorkloadQuery};
pub(crate) use config::resolve_secret;
pub use config::{MAX_REQUESTS_PER_MINUTE, PceConnectionConfig, Secret};
pub use download::{
    BodyReader, Inflating, Records, Step, is_gzip, parse_records, parse_records_owned, plain_body,
    plain_body_off_workers,
};
pub use error::{PceError, RequestId};
pub use events::{DEFAULT_EVENT_RESULTS, EventQuery, MAX_EVENT_RESULTS};
pub use stats::{BUCKETS, EndpointStats, endpoint_of};
pub use traffic::{
    Actor, ActorFilter, MAX_TRAFFIC_RESULTS, PolicyDecision, QueryOp, Service, ServiceFilter,
    TrafficDownload, TrafficQuery, TrafficResult, TrafficStream,
};

/// The header carrying the PCE's request id.
const REQUEST_ID: &str = "x-request-id";

/// A client for one PCE. Cheap to clone; clones share the connection pool and the budget.
#[derive(Clone)]
pub struct PceClient {
    inner: Arc<Inner>,
    /// No retry is waited for past this (see [`PceClient::until`]).
    deadline: Option<crate::event::Timestamp>,
}

struct Inner {
    stats: stats::RequestStats,
    /// 401 or 403 while the PCE refuses the API key (the last authenticated request was
    /// answered so); 0 once an authenticated request succeeded (or none was sent).
    refused: AtomicU16,
    http: reqwest::Client,
    api_base: String,
    org: u32,
    auth: HeaderValue,
    clock: SharedClock,
    budget: Budget,
    retry: RetryPolicy,
    request_timeout: Duration,
    poll_initial: Duration,
    poll_max: Duration,
    query_timeout: Duration,
    download_retries: u32,
    max_response_bytes: u64,
}

impl fmt::Debug for PceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PceClient")
            .field("api_base", &self.inner.api_base)
            .field("org", &self.inner.org)
            .field("auth", &"***")
            .finish_non_exhaustive()
    }
}

/// One request to send (possibly several times).
#[derive(Debug)]
pub(crate) struct Call {
    method: Method,
    /// The path below `/api/v2` (also used in messages).
    path: String,
    query: Vec<(String, String)>,
    body: Option<bytes::Bytes>,
    prefer_async: bool,
    auth: bool,
    /// A 2xx response's body is left to the caller to read as it arrives
    /// ([`Reply::response`]); only a stalled read times out.
    stream: bool,
}

/// How long a streamed body may take in all: it is read as fast as the pipelines take its
/// records, so only a read that stalls for `request_timeout` fails it sooner.
const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

impl Call {
    fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
            prefer_async: false,
            auth: true,
            stream: false,
        }
    }

    fn post(path: impl Into<String>, body: bytes::Bytes) -> Call {
        Call {
            method: Method::POST,
            body: Some(body),
            ..Call::get(path)
        }
    }

    fn query(mut self, query: Vec<(String, String)>) -> Call {
        self.query = query;
        self
    }
}

/// A successful (2xx) response, body read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    request_id: RequestId,
    /// A streamed call's response, its body unread.
    response: Option<reqwest::Response>,
}

impl Reply {
    /// The body as `T`.
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, PceError> {
        serde_json::from_slice(&self.body).map_err(|e| PceError::Decode {
            what: what.to_string(),
            request_id: self.request_id.clone(),
            message: e.to_string(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How one attempt ended.
enum Outcome {
    Done(Result<Reply, PceError>),
    Retry {
        error: PceError,
        retry_after: Option<Duration>,
    },
}

impl PceClient {
    /// A client for the PCE `cfg` describes; waits run on `clock`.
    pub fn new(cfg: &PceConnectionConfig, clock: SharedClock) -> Result<PceClient, PceError> {
        cfg.validate()?;
        let api_base = cfg.api_base()?;
        let (key, secret) = cfg.credentials()?;
        let http = build_http(cfg)?;
        Ok(PceClient {
            inner: Arc::new(Inner {
                stats: stats::RequestStats::default(),
                refused: AtomicU16::new(0),
                http,
                api_base,
                org: cfg.org,
                auth: basic_auth(&key, &secret)?,
                clock,
                budget: Budget::new(cfg.requests_per_minute),
                retry: RetryPolicy {
                    max_retries: cfg.max_retries,
                    base: cfg.backoff_base.get(),
                    max: cfg.backoff_max.get(),
                },
                request_timeout: cfg.request_timeout.get(),
                poll_initial: cfg.poll_interval_initial.get(),
                poll_max: cfg
                    .poll_interval_max
                    .get()
                    .max(cfg.poll_interval_initial.get()),
                query_timeout: cfg.query_timeout.get(),
                download_retries: cfg.download_retries,
                max_response_bytes: cfg.max_response_bytes,
            }),
            deadline: None,
        })
    }

    /// This client (sharing the connection pool and the budget) giving up instead of
    /// waiting for a retry that would start after `deadline`: a caller with a deadline
    /// of its own (a traffic slice) hears of the failure in time to plan again.
    pub fn until(&self, deadline: crate::event::Timestamp) -> PceClient {
        PceClient {
            inner: self.inner.clone(),
            deadline: Some(deadline),
        }
    }

    /// The organization id.
    pub fn org(&self) -> u32 {
        self.inner.org
    }

    /// The API base, `<url>/api/v2`.
    pub fn api_base(&self) -> &str {
        &self.inner.api_base
    }

    /// Where the PCE's web console is, for links people open: the connection's URL
    /// without `/api/v2`, and without any user name or password, query or fragment.
    /// A workload's page is `<console>/#/workloads/<uuid>` (the route Illumio's own
    /// integrations link to).
    pub fn console_base(&self) -> Option<String> {
        let base = self.inner.api_base.strip_suffix("/api/v2")?;
        let mut url = reqwest::Url::parse(base).ok()?;
        url.set_username("").ok()?;
        url.set_password(None).ok()?;
        url.set_query(None);
        url.set_fragment(None);
        Some(url.as_str().trim_end_matches('/').to_string())
    }

    /// `GET /api/v2/health`: one object per PCE cluster. The body's `status`
    /// (`normal|warning|critical`) decides health, not the HTTP code.
    pub async fn health(&self) -> Result<Vec<Value>, PceError> {
        let reply = self.execute(&Call::get("/health")).await?;
        reply.json("health")
    }

    /// `GET /api/v2/node_available` (no authentication): whether the node answers 200.
    /// Other statuses are `Ok(false)`; transport failures are errors.
    pub async fn node_available(&self) -> Result<bool, PceError> {
        let call = Call {
            auth: false,
            ..Call::get("/node_available")
        };
        match self.execute(&call).await {
            Ok(_) => Ok(true),
            Err(e) if e.status().is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `/orgs/<org><rest>`.
    fn org_path(&self, rest: &str) -> String {
        format!("/orgs/{}{rest}", self.inner.org)
    }

    /// `Some(401)` or `Some(403)` while the PCE refuses this connection's API key: the
    /// last authenticated request was answered so. `None` once one succeeds again.
    pub fn credentials_refused(&self) -> Option<u16> {
        match self.inner.refused.load(Ordering::Relaxed) {
            0 => None,
            status => Some(status),
        }
    }

    /// Requests sent so far, by endpoint, method and status, with their latencies.
    pub fn request_stats(&self) -> Vec<EndpointStats> {
        self.inner.stats.snapshot()
    }

    /// Waits `wait` on the client's clock.
    async fn wait(&self, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        let clock = &self.inner.clock;
        clock
            .sleep_until(crate::time::later(clock.now(), wait))
            .await;
    }

    /// Sends `call` through the budget, retrying as the policy allows.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Reply, PceError> {
        let mut attempt: u32 = 0;
        loop {
            self.inner.budget.acquire(&self.inner.clock).await;
            let (error, retry_after) = match self.attempt(call).await {
                Outcome::Done(result) => return result,
                Outcome::Retry { error, retry_after } => (error, retry_after),
            };
            if attempt >= self.inner.retry.max_retries {
                return Err(PceError::RetriesExhausted {
                    attempts: attempt + 1,
                    last: Box::new(error),
                });
            }
            let rate_limited = error.status() == Some(429);
            let (wait, held) = match retry_after {
                Some(wait) => (wait, true),
                // The PCE's limit counts requests per minute: waits long enough for its
                // window to pass, not the short ones of a server error.
                None if rate_limited => (self.inner.retry.rate_limit_backoff(attempt), true),
                None => (self.inner.retry.backoff(attempt), false),
            };
            let now = self.inner.clock.now();
            let until = crate::time::later(now, wait);
            if self.deadline.is_some_and(|deadline| until > deadline) {
                tracing::warn!(
                    method = %call.method, path = %call.path, attempt = attempt + 1,
                    wait = ?wait, error = %error,
                    "PCE request failed; not retrying: the next try would come after the caller's deadline"
                );
                return Err(PceError::RetriesExhausted {
                    attempts: attempt + 1,
                    last: Box::new(error),
                });
            }
            tracing::warn!(
                method = %call.method, path = %call.path, attempt = attempt + 1,
                wait = ?wait, error = %error, "PCE request failed; retrying"
            );
            if held {
                // Every clone shares the PCE's rate limit: hold them all; the hold is
                // waited out in the budget, with every other request.
                self.inner.budget.hold_until(until);
            } else {
                self.wait(wait).await;
            }
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call) -> Outcome {
        let started = std::time::Instant::now();
        let record = |status: &str| {
            self.inner
                .stats
                .record(call.method.as_str(), &call.path, status, started.elapsed());
        };
        let response = match self.request(call).send().await {
            Ok(r) => r,
            Err(e) => {
                record("error");
                return self.transport_outcome(call, &e);
            }
        };
        let status = response.status();
        record(status.as_str());
        if call.auth {
            let refused = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => status.as_u16(),
                s if s.is_success() => 0,
                _ => self.inner.refused.load(Ordering::Relaxed),
            };
            self.inner.refused.store(refused, Ordering::Relaxed);
        }
        let headers = response.headers().clone();
        let request_id = RequestId(
            headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        if call.stream && status.is_success() {
            return Outcome::Done(Ok(Reply {
                status,
                headers,
                body: Vec::new(),
                request_id,
                response: Some(response),
            }));
        }
        let body = match read_body(response, self.inner.max_response_bytes).await {
            Ok(b) => b,
            Err(Body::Transport(e)) => return self.transport_outcome(call, &e),
            Err(Body::TooLarge) => {
                record("too_large");
                return Outcome::Done(Err(PceError::TooLarge {
                    method: call.method.to_string(),
                    path: call.path.clone(),
                    limit: self.inner.max_response_bytes,
                }));
            }
        };
        let reply = Reply {
            status,
            headers,
            body,
            request_id,
            response: None,
        };
        self.status_outcome(call, reply)
    }

    fn request(&self, call: &Call) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.inner.api_base, call.path);
        let mut rb = self
            .inner
            .http
            .request(call.method.clone(), url)
            .header(ACCEPT, "application/json");
        if !call.query.is_empty() {
            rb = rb.query(&call.query);
        }
        if call.auth {
            rb = rb.header(AUTHORIZATION, self.inner.auth.clone());
        }
        if let Some(body) = &call.body {
            rb = rb
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if call.prefer_async {
            rb = rb.header("prefer", "respond-async");
        }
        if call.stream {
            rb = rb.timeout(STREAM_TIMEOUT);
        }
        rb
    }

    fn status_outcome(&self, call: &Call, reply: Reply) -> Outcome {
        let status = reply.status;
        if status.is_success() {
            return Outcome::Done(Ok(reply));
        }
        let retry_after = crate::http::retry_after(&reply.headers, self.inner.clock.now());
        let error = status_error(call, &reply);
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && call.method == Method::GET);
        if retryable {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Done(Err(error))
        }
    }

    fn transport_outcome(&self, call: &Call, e: &reqwest::Error) -> Outcome {
        let is_get = call.method == Method::GET;
        let error = if e.is_connect() {
            PceError::Connect {
                url: format!("{}{}", self.inner.api_base, call.path),
                message: error_chain(e),
            }
        } else if e.is_timeout() && !is_get {
            return Outcome::Done(Err(PceError::PostTimedOut {
                path: call.path.clone(),
                after: self.inner.request_timeout,
            }));
        } else if e.is_timeout() {
            PceError::Timeout {
                method: call.method.to_string(),
                path: call.path.clone(),
                after: self.inner.request_timeout,
            }
        } else {
            PceError::Transport {
                method: call.method.to_string(),
                path: call.path.clone(),
                message: error_chain(e),
            }
        };
        if e.is_connect() || is_get {
            Outcome::Retry {
                error,
                retry_after: None,
            }
        } else {
            Outcome::Done(Err(error))
        }
    }
}

fn status_error(call: &Call, reply: &Reply) -> PceError {
    let status = reply.status.as_u16();
    PceError::Status {
        method: call.method.to_string(),
        path: call.path.clone(),
        status,
        request_id: reply.request_id.clone(),
        detail: error::summarise_error_body(&reply.body),
        hint: error::status_hint(status),
    }
}

/// Why a body was not read.
enum Body {
    Transport(reqwest::Error),
    /// Longer than the limit (by `Content-Length`, or once read past it).
    TooLarge,
}

/// Reads the whole body, at most `limit` bytes, into one buffer sized from
/// `Content-Length`.
async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Body> {
    let hint = response.content_length().unwrap_or(0);
    if hint > limit {
        return Err(Body::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(Body::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn basic_auth(key: &Secret, secret: &Secret) -> Result<HeaderValue, PceError> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        key.expose(),
        secret.expose()
    ));
    let mut value = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| PceError::Config("api_key/api_secret contain invalid characters".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn build_http(cfg: &PceConnectionConfig) -> Result<reqwest::Client, PceError> {
    crate::http::client_builder(cfg.ca_file.as_deref(), cfg.tls_verify, &cfg.url)
        .map_err(PceError::Config)?
        .connect_timeout(cfg.connect_timeout.get())
        .timeout(cfg.request_timeout.get())
        .read_timeout(cfg.request_timeout.get())
        .build()
        .map_err(|e| PceError::Config(format!("cannot build the HTTP client: {}", error_chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(url: &str) -> Option<String> {
        let cfg = PceConnectionConfig::new(url, Secret::new("k"), Secret::new("s"));
        PceClient::new(&cfg, Arc::new(crate::time::WallClock))
            .expect("client")
            .console_base()
    }

    #[test]
    fn the_console_link_is_the_pce_url_without_credentials_or_the_api_path() {
        assert_eq!(
            console("https://pce.example.com:8443/").as_deref(),
            Some("https://pce.example.com:8443")
        );
        assert_eq!(
            console("https://pce.example.com:8443/api/v2").as_deref(),
            Some("https://pce.example.com:8443")
        );
        assert_eq!(
            console("https://who:pw@pce.example.com/?x=1").as_deref(),
            Some("https://pce.example.com")
        );
    }
}
