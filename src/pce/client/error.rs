//! What can go wrong talking to a PCE, in words that say what to fix.

use std::fmt;

use thiserror::Error;

/// The `X-Request-Id` of a PCE response, shown in every error that came from a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestId(pub Option<String>);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(id) => write!(f, "request id {id}"),
            None => f.write_str("no request id"),
        }
    }
}

/// An error from the PCE client.
#[derive(Debug, Error)]
pub enum PceError {
    /// The connection settings are unusable.
    #[error("PCE connection settings: {0}")]
    Config(String),
    /// A query the caller built is invalid (nothing was sent).
    #[error("invalid PCE query: {0}")]
    InvalidQuery(String),
    /// The PCE answered with an error status.
    #[error("PCE answered {status} to {method} {path} ({request_id}): {detail}{hint}")]
    Status {
        /// The HTTP method.
        method: String,
        /// The path below `/api/v2`.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The response's `X-Request-Id`.
        request_id: RequestId,
        /// The PCE's error body, summarised (`token: message; ...`).
        detail: String,
        /// What to check, when the status says something specific.
        hint: &'static str,
    },
    /// The PCE did not answer in time (`request_timeout`).
    #[error("{method} {path}: no answer from the PCE within {after:?} (request_timeout)")]
    Timeout {
        /// The HTTP method.
        method: String,
        /// The path below `/api/v2`.
        path: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// A POST timed out after it was sent: it is not retried because the PCE may have
    /// acted on it.
    #[error(
        "POST {path}: no answer within {after:?}; not retried because the PCE may have \
         created it anyway (look for it before running it again, e.g. in Explorer's \
         async queries)"
    )]
    PostTimedOut {
        /// The path below `/api/v2`.
        path: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// No connection could be made.
    #[error(
        "cannot connect to the PCE at {url}: {message} (check url, DNS, firewall and TLS settings)"
    )]
    Connect {
        /// The URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The connection failed during the request.
    #[error("{method} {path}: transport error: {message}")]
    Transport {
        /// The HTTP method.
        method: String,
        /// The path below `/api/v2`.
        path: String,
        /// What failed.
        message: String,
    },
    /// The answer was larger than `max_response_bytes`; it was not read further.
    #[error(
        "{method} {path}: the PCE's answer is larger than {limit} bytes (max_response_bytes); \
         narrow the query, or raise max_response_bytes if answers this large are expected"
    )]
    TooLarge {
        /// The HTTP method.
        method: String,
        /// The path below `/api/v2`.
        path: String,
        /// The configured limit.
        limit: u64,
    },
    /// The response could not be read as what was expected.
    #[error("{what}: cannot decode the PCE's response ({request_id}): {message}")]
    Decode {
        /// What was being read.
        what: String,
        /// The response's `X-Request-Id`.
        request_id: RequestId,
        /// Why it failed.
        message: String,
    },
    /// The response was valid JSON but not what the API promises.
    #[error("{what}: unexpected PCE response ({request_id}): {message}")]
    Unexpected {
        /// What was being read.
        what: String,
        /// The response's `X-Request-Id`.
        request_id: RequestId,
        /// What was wrong.
        message: String,
    },
    /// Every retry failed.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many requests were sent.
        attempts: u32,
        /// The last failure.
        last: Box<PceError>,
    },
    /// An async query or job failed on the PCE.
    #[error("{what} {href} failed on the PCE (status `{status}`, {request_id}){detail}")]
    QueryFailed {
        /// `traffic query` or `collection job`.
        what: &'static str,
        /// The query's href.
        href: String,
        /// The status the PCE reported.
        status: String,
        /// The `X-Request-Id` of the poll that reported it.
        request_id: RequestId,
        /// Extra detail from the PCE, if any.
        detail: String,
    },
    /// An async query was cancelled on the PCE.
    #[error("{what} {href} was cancelled on the PCE (status `{status}`, {request_id})")]
    QueryCancelled {
        /// `traffic query` or `collection job`.
        what: &'static str,
        /// The query's href.
        href: String,
        /// The status the PCE reported.
        status: String,
        /// The `X-Request-Id` of the poll that reported it.
        request_id: RequestId,
    },
    /// An async query did not finish within `query_timeout`.
    #[error(
        "{what} {href} did not finish within {waited:?} (last status `{last_status}`, \
         {request_id}); raise query_timeout or narrow the query"
    )]
    QueryTimedOut {
        /// `traffic query` or `collection job`.
        what: &'static str,
        /// The query's href.
        href: String,
        /// How long vigil waited.
        waited: std::time::Duration,
        /// The last status seen.
        last_status: String,
        /// The `X-Request-Id` of the last poll.
        request_id: RequestId,
    },
    /// A traffic download stayed empty although the query reported matches.
    #[error(
        "traffic download {href} was empty after {attempts} attempts although the query \
         reported {matches_count} matches ({request_id})"
    )]
    EmptyDownload {
        /// The download href.
        href: String,
        /// How many downloads were tried.
        attempts: u32,
        /// The matches the query reported.
        matches_count: u64,
        /// The `X-Request-Id` of the last download.
        request_id: RequestId,
    },
}

impl PceError {
    /// The status code, when the PCE answered with an error status (looking through
    /// [`PceError::RetriesExhausted`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            PceError::Status { status, .. } => Some(*status),
            PceError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

/// What to check for a status, appended to the error message.
pub(crate) fn status_hint(status: u16) -> &'static str {
    match status {
        300..=399 => " — the PCE redirected; check the url (scheme, host and port of the API)",
        400 => " — the request was malformed; check the query parameters",
        401 => " — check api_key/api_secret (the key may have been deleted)",
        403 => {
            " — check the org id and that the API key's role may read this (a wrong org also answers 403)"
        }
        404 => " — check the url and the org id",
        406 => {
            " — the PCE rejected the payload (e.g. a bare date instead of an RFC 3339 timestamp, or a value out of range)"
        }
        429 => {
            " — the PCE's rate limit (500 requests/minute per key); lower requests_per_minute or share one connection"
        }
        500..=599 => " — the PCE had an internal problem; check its health",
        _ => "",
    }
}

/// Summarises the PCE's error body `[{token, message}]`, or the start of any other body.
pub(crate) fn summarise_error_body(body: &[u8]) -> String {
    if let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(body) {
        let parts: Vec<String> = items
            .iter()
            .map(|item| {
                let token = item.get("token").and_then(|t| t.as_str()).unwrap_or("");
                let message = item.get("message").and_then(|m| m.as_str()).unwrap_or("");
                match (token.is_empty(), message.is_empty()) {
                    (false, false) => format!("{token}: {message}"),
                    (false, true) => token.to_string(),
                    (true, false) => message.to_string(),
                    (true, true) => item.to_string(),
                }
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}
