//! Async Explorer traffic queries: create, poll, download.

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::collections::strip_api_prefix;
use super::download::{BodyReader, Inflating, Records, Step, plain_body_off_workers};
use super::events::pce_time;
use super::{Call, PceClient, PceError, Reply, RequestId};
use crate::event::{Tape, Timestamp};

/// The largest `max_results` an async traffic query accepts.
pub const MAX_TRAFFIC_RESULTS: u32 = 200_000;

/// A policy decision to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Allowed by policy.
    Allowed,
    /// Would be blocked once enforced.
    PotentiallyBlocked,
    /// Blocked.
    Blocked,
    /// Unknown.
    Unknown,
}

/// One actor in a source/destination filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// `{label: {href}}`.
    Label {
        /// The label's href.
        href: String,
    },
    /// `{label_group: {href}}`.
    LabelGroup {
        /// The label group's href.
        href: String,
    },
    /// `{workload: {href}}`.
    Workload {
        /// The workload's href.
        href: String,
    },
    /// `{ip_list: {href}}`.
    IpList {
        /// The IP list's href.
        href: String,
    },
    /// `{ip_address: "10.0.0.1"}`.
    IpAddress(String),
    /// `{actors: "ams"}` (all managed workloads).
    Actors(String),
}

/// Sources or destinations: `include` is an OR of AND-groups (empty = any), `exclude` a
/// list of actors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActorFilter {
    /// OR of AND-groups; empty means any.
    pub include: Vec<Vec<Actor>>,
    /// Actors to leave out.
    pub exclude: Vec<Actor>,
}

/// A service (port/protocol/process) in a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Port (or the first of a range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The last port of a range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_port: Option<u16>,
    /// IANA protocol number (6 TCP, 17 UDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// Process name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_name: Option<String>,
    /// Windows service name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows_service_name: Option<String>,
}

/// Services to include (empty = any) and exclude.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFilter {
    /// Services to include; empty means any.
    pub include: Vec<Service>,
    /// Services to leave out.
    pub exclude: Vec<Service>,
}

/// How sources and destinations combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryOp {
    /// Both must match.
    And,
    /// Either may match.
    Or,
}

/// An async traffic query (the body of `POST /orgs/{org}/traffic_flows/async_queries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficQuery {
    /// A name shown in the PCE's Explorer.
    pub query_name: String,
    /// Start of the time range.
    #[serde(serialize_with = "ser_time")]
    pub start_date: Timestamp,
    /// End of the time range.
    #[serde(serialize_with = "ser_time")]
    pub end_date: Timestamp,
    /// Decisions to include; empty means all.
    pub policy_decisions: Vec<PolicyDecision>,
    /// At most this many flows (1..=200000). More matches means a truncated result.
    pub max_results: u32,
    /// Source filter.
    pub sources: ActorFilter,
    /// Destination filter.
    pub destinations: ActorFilter,
    /// Service filter.
    pub services: ServiceFilter,
    /// How sources and destinations combine (PCE default when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_destinations_query_op: Option<QueryOp>,
    /// Leave workloads out of IP-list matches (the PCE's default is true).
    pub exclude_workloads_from_ip_list_query: bool,
}

fn ser_time<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&pce_time(t))
}

impl TrafficQuery {
    /// A query for every flow between `start` and `end`, up to `max_results`.
    pub fn new(
        name: impl Into<String>,
        start: Timestamp,
        end: Timestamp,
        max_results: u32,
    ) -> Self {
        TrafficQuery {
            query_name: name.into(),
            start_date: start,
            end_date: end,
            policy_decisions: Vec::new(),
            max_results,
            sources: ActorFilter::default(),
            destinations: ActorFilter::default(),
            services: ServiceFilter::default(),
            sources_destinations_query_op: None,
            exclude_workloads_from_ip_list_query: true,
        }
    }

    fn check(&self) -> Result<(), PceError> {
        if self.max_results == 0 || self.max_results > MAX_TRAFFIC_RESULTS {
            return Err(PceError::InvalidQuery(format!(
                "traffic: max_results {} must be between 1 and {MAX_TRAFFIC_RESULTS}",
                self.max_results
            )));
        }
        if self.start_date >= self.end_date {
            return Err(PceError::InvalidQuery(format!(
                "traffic: start_date {} must be before end_date {}",
                pce_time(&self.start_date),
                pce_time(&self.end_date)
            )));
        }
        Ok(())
    }
}

/// The flows of a finished traffic query.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficResult {
    /// The flow records, as downloaded.
    pub flows: Vec<Value>,
    /// How many flows matched (may exceed `max_results`).
    pub matches_count: u64,
    /// How many flows the PCE put in the result.
    pub flows_count: u64,
    /// This is not all the traffic: more flows matched than `max_results`, or than the
    /// PCE put in the result.
    pub truncated: bool,
    /// The query's href.
    pub query_href: String,
}

/// What a poll of the query said.
struct QueryState {
    status: String,
    matches_count: u64,
    flows_count: Option<u64>,
    result: Option<String>,
}

impl QueryState {
    fn from_body(body: &Value) -> QueryState {
        QueryState {
            status: body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            matches_count: body
                .get("matches_count")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            flows_count: body.get("flows_count").and_then(Value::as_u64),
            result: body
                .get("result")
                .and_then(Value::as_str)
                .map(|s| strip_api_prefix(s).to_string()),
        }
    }
}

const WHAT: &str = "traffic query";

impl PceClient {
    /// Runs an async traffic query: creates it, polls it until it completes (or
    /// `query_timeout`), and downloads and parses all its flows.
    ///
    /// For big results prefer [`PceClient::traffic_download`], which holds only the
    /// downloaded body and lets the caller take the flows one at a time.
    pub async fn traffic_query(&self, query: &TrafficQuery) -> Result<TrafficResult, PceError> {
        let download = self.traffic_download(query).await?;
        // Parsing every flow of a big download is seconds of CPU work: on a blocking
        // thread, not an async worker.
        let (href, request_id) = (download.download_href.clone(), download.request_id.clone());
        let (download, flows) = tokio::task::spawn_blocking(move || {
            // Never more than the query asked for.
            let flows = download
                .records()
                .take(download.max_results as usize)
                .map(|r| r.map(|(flow, _)| flow))
                .collect::<Result<Vec<Value>, String>>();
            (download, flows)
        })
        .await
        .map_err(|e| decode_error(&href, &request_id, format!("parsing the flows: {e}")))?;
        let flows = flows.map_err(|message| download.decode_error(message))?;
        let truncated = download.is_truncated(flows.len() as u64);
        Ok(TrafficResult {
            flows_count: download.flows_count.unwrap_or(flows.len() as u64),
            flows,
            matches_count: download.matches_count,
            truncated,
            query_href: download.query_href,
        })
    }

    /// Runs an async traffic query up to its download: creates it, polls it until it
    /// completes (or `query_timeout`), and downloads the result (inflated if gzip). The
    /// flows are read from it with [`TrafficDownload::records`].
    pub async fn traffic_download(
        &self,
        query: &TrafficQuery,
    ) -> Result<TrafficDownload, PceError> {
        let (href, state, download) = self.completed_query(query).await?;
        let (body, request_id) = self.download_flows(&download, state.matches_count).await?;
        Ok(TrafficDownload {
            body,
            matches_count: state.matches_count,
            flows_count: state.flows_count,
            max_results: query.max_results,
            query_href: href,
            download_href: download,
            request_id,
        })
    }

    /// Creates `query` and polls it until it completes: its href, last state and where its
    /// result is downloaded from.
    async fn completed_query(
        &self,
        query: &TrafficQuery,
    ) -> Result<(String, QueryState, String), PceError> {
        query.check()?;
        let (href, mut state) = self.create_traffic_query(query).await?;
        if !is_completed(&state.status) {
            state = self.poll_traffic_query(&href).await?;
        }
        let download = state
            .result
            .clone()
            .unwrap_or_else(|| format!("{href}/download"));
        Ok((href, state, download))
    }

    /// How long to wait before fetching a download again (the `attempt`-th time).
    fn download_backoff(&self, attempt: u32) -> std::time::Duration {
        self.inner
            .retry
            .backoff(attempt)
            .max(self.inner.poll_initial / 2)
    }

    /// Runs an async traffic query and opens its result to be read as it downloads:
    /// the body is inflated and parsed as bytes arrive, one flow at a time
    /// ([`TrafficStream::next`]), so only the flows not read yet are held.
    pub async fn traffic_stream(&self, query: &TrafficQuery) -> Result<TrafficStream, PceError> {
        let (href, state, download) = self.completed_query(query).await?;
        let mut stream = TrafficStream {
            client: self.clone(),
            response: None,
            reader: BodyReader::default(),
            inflating: None,
            matches_count: state.matches_count,
            flows_count: state.flows_count,
            max_results: query.max_results,
            query_href: href,
            download_href: download,
            request_id: RequestId(None),
            handed: 0,
            skip: 0,
            attempts: 0,
        };
        stream.open().await?;
        Ok(stream)
    }

    async fn create_traffic_query(
        &self,
        query: &TrafficQuery,
    ) -> Result<(String, QueryState), PceError> {
        let body = serde_json::to_vec(query)
            .map_err(|e| PceError::InvalidQuery(format!("traffic: {e}")))?;
        let call = Call::post(
            self.org_path("/traffic_flows/async_queries"),
            bytes::Bytes::from(body),
        );
        let reply = self.execute(&call).await?;
        let body: Value = reply.json("create traffic query")?;
        let href = body
            .get("href")
            .and_then(Value::as_str)
            .map(|h| strip_api_prefix(h).to_string())
            .ok_or_else(|| PceError::Unexpected {
                what: "create traffic query".to_string(),
                request_id: reply.request_id.clone(),
                message: "no href in the response".to_string(),
            })?;
        tracing::debug!(query = %href, request_id = ?reply.request_id.0, "PCE traffic query created");
        let state = QueryState::from_body(&body);
        check_terminal(&href, &state, &reply)?;
        Ok((href, state))
    }

    async fn poll_traffic_query(&self, href: &str) -> Result<QueryState, PceError> {
        let mut poller = self.poller(WHAT, href, None);
        loop {
            poller.wait(self).await?;
            let reply = self.execute(&Call::get(href.to_string())).await?;
            let state = QueryState::from_body(&reply.json::<Value>(href)?);
            poller.seen(&state.status, &reply);
            check_terminal(href, &state, &reply)?;
            if is_completed(&state.status) {
                return Ok(state);
            }
        }
    }

    /// Downloads the flows; an empty download (or a 404: the file is not there yet) while
    /// the query reported matches is retried with backoff.
    async fn download_flows(
        &self,
        href: &str,
        matches_count: u64,
    ) -> Result<(Bytes, RequestId), PceError> {
        let retries = self.inner.download_retries;
        let mut attempt = 0;
        loop {
            let (body, request_id) = self.download_once(href).await?;
            if Records::new(body.clone()).next().is_some() || matches_count == 0 {
                return Ok((body, request_id));
            }
            if attempt >= retries {
                return Err(PceError::EmptyDownload {
                    href: href.to_string(),
                    attempts: attempt + 1,
                    matches_count,
                    request_id,
                });
            }
            let wait = self.download_backoff(attempt);
            tracing::warn!(
                download = %href, matches_count, attempt = attempt + 1, wait = ?wait,
                request_id = ?request_id.0, "PCE traffic download empty; fetching it again"
            );
            self.wait(wait).await;
            attempt += 1;
        }
    }

    /// One download: its plain body (empty for 204 or 404) and the request id.
    async fn download_once(&self, href: &str) -> Result<(Bytes, RequestId), PceError> {
        match self.execute(&Call::get(href.to_string())).await {
            Ok(mut reply) => {
                if reply.status == reqwest::StatusCode::NO_CONTENT {
                    return Ok((Bytes::new(), reply.request_id));
                }
                let body = plain_body_off_workers(Bytes::from(std::mem::take(&mut reply.body)))
                    .await
                    .map_err(|message| PceError::Decode {
                        what: href.to_string(),
                        request_id: reply.request_id.clone(),
                        message,
                    })?;
                Ok((body, reply.request_id))
            }
            Err(PceError::Status {
                status: 404,
                request_id,
                ..
            }) => Ok((Bytes::new(), request_id)),
            Err(e) => Err(e),
        }
    }
}

/// A completed traffic query's result, read as it downloads (see
/// [`PceClient::traffic_stream`]).
#[derive(Debug)]
pub struct TrafficStream {
    client: PceClient,
    response: Option<reqwest::Response>,
    reader: BodyReader,
    /// The reader's inflating, on a blocking thread (see [`TrafficStream::inflate`]).
    inflating: Option<tokio::task::JoinHandle<Inflating>>,
    /// How many flows matched (may exceed `max_results`).
    pub matches_count: u64,
    /// How many flows the PCE says it put in the result, if it said.
    pub flows_count: Option<u64>,
    /// The query's `max_results`.
    pub max_results: u32,
    /// The query's href.
    pub query_href: String,
    /// Where the result is downloaded from.
    pub download_href: String,
    /// The download's `X-Request-Id`.
    pub request_id: RequestId,
    /// Flows handed out.
    handed: usize,
    /// Flows of this download to pass over (handed out before it broke).
    skip: usize,
    /// Downloads started after the first (an empty one, or one that broke).
    attempts: u32,
}

impl TrafficStream {
    /// (Re)starts the download; the flows already handed out are passed over.
    async fn open(&mut self) -> Result<(), PceError> {
        self.inflating = None;
        self.reader = BodyReader::default();
        self.skip = self.handed;
        let call = Call {
            stream: true,
            ..Call::get(self.download_href.clone())
        };
        match self.client.execute(&call).await {
            Ok(reply) => {
                self.request_id = reply.request_id;
                self.response = reply.response;
                if reply.status == reqwest::StatusCode::NO_CONTENT {
                    self.response = None;
                }
            }
            // The file is not there yet: an empty download.
            Err(PceError::Status {
                status: 404,
                request_id,
                ..
            }) => {
                self.request_id = request_id;
                self.response = None;
            }
            Err(e) => return Err(e),
        }
        if self.response.is_none() {
            self.reader.finish().map_err(|m| self.decode_error(m))?;
        }
        Ok(())
    }

    /// Starts the download again after `wait` (backoff), or fails when `download_retries`
    /// are spent.
    async fn retry(&mut self, why: &str, fail: PceError) -> Result<(), PceError> {
        if self.attempts >= self.client.inner.download_retries {
            return Err(fail);
        }
        let wait = self.client.download_backoff(self.attempts);
        tracing::warn!(
            download = %self.download_href, matches_count = self.matches_count,
            attempt = self.attempts + 1, wait = ?wait, request_id = ?self.request_id.0,
            "PCE traffic download {why}; fetching it again"
        );
        self.client.wait(wait).await;
        self.attempts += 1;
        self.open().await
    }

    /// The next flow, parsed into a [`Tape`] over the exact bytes the PCE sent for it;
    /// `None` at the end. A download that ends empty while the query matched flows, or
    /// breaks off, is fetched again (`download_retries`), passing over the flows already
    /// handed out: each flow is handed out once.
    pub async fn next(&mut self) -> Result<Option<Tape>, PceError> {
        // A call cut short while bytes were being inflated: their output comes first.
        self.settle().await?;
        loop {
            match self.reader.next_tape() {
                Step::Item(tape) => {
                    if self.reader.count() <= self.skip {
                        continue;
                    }
                    if self.handed >= self.max_results as usize {
                        // More than the query asked for: the rest is not read at all.
                        tracing::warn!(
                            download = %self.download_href, max_results = self.max_results,
                            request_id = ?self.request_id.0,
                            "the PCE's traffic download holds more flows than max_results; the rest of it was not read"
                        );
                        self.response = None;
                        self.inflating = None;
                        self.reader = BodyReader::default();
                        self.reader.accept_end();
                        return Ok(None);
                    }
                    self.handed += 1;
                    return Ok(Some(tape));
                }
                Step::Done if self.handed == 0 && self.matches_count > 0 => {
                    let fail = PceError::EmptyDownload {
                        href: self.download_href.clone(),
                        attempts: self.attempts + 1,
                        matches_count: self.matches_count,
                        request_id: self.request_id.clone(),
                    };
                    self.retry("empty", fail).await?;
                }
                Step::Done => return Ok(None),
                Step::Fail(message) => return Err(self.decode_error(message)),
                Step::More => {
                    // Compressed bytes already here are inflated a step at a time before
                    // more are read from the network.
                    if self.inflate().await? {
                        continue;
                    }
                    let chunk = match &mut self.response {
                        Some(r) => r.chunk().await,
                        None => Ok(None),
                    };
                    match chunk {
                        Ok(Some(bytes)) => self.reader.accept(bytes),
                        Ok(None) => {
                            self.response = None;
                            self.reader.accept_end();
                        }
                        Err(e) => {
                            let fail = PceError::Transport {
                                method: "GET".to_string(),
                                path: self.download_href.clone(),
                                message: super::error_chain(&e),
                            };
                            self.retry("broke off", fail).await?;
                        }
                    }
                }
            }
        }
    }

    /// Inflates the next step of what a gzip body's reader holds compressed (see
    /// [`BodyReader::take_inflating`]), on a blocking thread: it is CPU work that must not
    /// hold an async worker (a plain body has nothing to inflate). Whether there was
    /// something to inflate. Should this call be cut short, the next one waits for the
    /// output first ([`TrafficStream::settle`]).
    async fn inflate(&mut self) -> Result<bool, PceError> {
        let Some(work) = self.reader.take_inflating() else {
            return Ok(false);
        };
        self.inflating = Some(tokio::task::spawn_blocking(move || work.run()));
        self.settle().await?;
        Ok(true)
    }

    /// Hands the reader what was inflated on a blocking thread, if something was.
    async fn settle(&mut self) -> Result<(), PceError> {
        let Some(job) = &mut self.inflating else {
            return Ok(());
        };
        let done = job.await;
        self.inflating = None;
        match done {
            Ok(work) => self.reader.inflated(work),
            Err(e) => Err(format!("gzip body: {e}")),
        }
        .map_err(|m| self.decode_error(m))
    }

    /// Whether the result is not all the traffic, given how many flows were read from it
    /// (see [`TrafficDownload::is_truncated`]).
    pub fn is_truncated(&self, downloaded: u64) -> bool {
        truncated(
            &self.query_href,
            self.matches_count,
            self.max_results,
            downloaded,
        )
    }

    /// A decode error for this download.
    pub fn decode_error(&self, message: String) -> PceError {
        decode_error(&self.download_href, &self.request_id, message)
    }
}

/// A completed traffic query's download, held as one (inflated) body.
#[derive(Debug, Clone)]
pub struct TrafficDownload {
    body: Bytes,
    /// How many flows matched (may exceed `max_results`).
    pub matches_count: u64,
    /// How many flows the PCE says it put in the result, if it said.
    pub flows_count: Option<u64>,
    /// The query's `max_results`.
    pub max_results: u32,
    /// The query's href.
    pub query_href: String,
    /// Where the result was downloaded from.
    pub download_href: String,
    /// The download's `X-Request-Id`.
    pub request_id: RequestId,
}

impl TrafficDownload {
    /// The flows, one at a time, each with the exact bytes the PCE sent for it. An item is
    /// an error when the body is malformed there; the iterator ends after it.
    pub fn records(&self) -> Records {
        Records::new(self.body.clone())
    }

    /// The size of the (inflated) body in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Whether the result is not all the traffic, given how many flows were read from it:
    /// more flows matched than `max_results` (the PCE cut the result) or than the result
    /// holds, whatever the reason. Logs a warning when so.
    pub fn is_truncated(&self, downloaded: u64) -> bool {
        truncated(
            &self.query_href,
            self.matches_count,
            self.max_results,
            downloaded,
        )
    }

    /// A decode error for this download.
    pub fn decode_error(&self, message: String) -> PceError {
        decode_error(&self.download_href, &self.request_id, message)
    }
}

/// A download's body is malformed.
fn decode_error(download: &str, request_id: &RequestId, message: String) -> PceError {
    PceError::Decode {
        what: download.to_string(),
        request_id: request_id.clone(),
        message,
    }
}

/// More flows matched than `max_results` (the PCE cut the result) or than the result
/// holds, whatever the reason. Logs a warning when so.
fn truncated(query: &str, matches_count: u64, max_results: u32, downloaded: u64) -> bool {
    let truncated = matches_count > u64::from(max_results) || matches_count > downloaded;
    if truncated {
        tracing::warn!(
            query = %query, matches_count, max_results, downloaded,
            "PCE traffic query truncated: more flows matched than the result holds"
        );
    }
    truncated
}

fn is_completed(status: &str) -> bool {
    status == "completed"
}

/// Failed and cancelled queries are errors; anything else (also unknown statuses) keeps
/// polling.
fn check_terminal(href: &str, state: &QueryState, reply: &Reply) -> Result<(), PceError> {
    let request_id: RequestId = reply.request_id.clone();
    match state.status.as_str() {
        "failed" => Err(PceError::QueryFailed {
            what: WHAT,
            href: href.to_string(),
            status: state.status.clone(),
            request_id,
            detail: String::new(),
        }),
        "cancel_requested" | "cancelled" | "canceled" => Err(PceError::QueryCancelled {
            what: WHAT,
            href: href.to_string(),
            status: state.status.clone(),
            request_id,
        }),
        _ => Ok(()),
    }
}
