//! How failed sends are retried, and how an HTTP peer's answer is classified.

use std::time::Duration as StdDuration;

use rand::Rng;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Answer, SendError};
use crate::diagnostic::Problems;
use crate::event::Timestamp;
use crate::time::Duration;

/// `retry:` of a delivering sink: exponential backoff with jitter between attempts, until
/// a message is delivered, fails permanently, or has been tried for `give_up_after`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The wait after the first failure; each further failure doubles it. Default: `5s`.
    #[serde(default = "default_initial")]
    pub initial: Duration,
    /// No wait between attempts is longer than this (a peer's `Retry-After` may ask for
    /// longer and is honoured). Default: `10m`.
    #[serde(default = "default_max")]
    pub max: Duration,
    /// A message still failing this long after it was stored moves to the dead letters.
    /// Default: `24h`.
    #[serde(default = "default_give_up_after")]
    pub give_up_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_initial(),
            max: default_max(),
            give_up_after: default_give_up_after(),
        }
    }
}

fn default_initial() -> Duration {
    Duration::from_secs(5)
}
fn default_max() -> Duration {
    Duration::from_secs(600)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl RetryConfig {
    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/retry/initial", "retry.initial", &self.initial);
        p.positive_duration("/retry/max", "retry.max", &self.max);
        p.positive_duration(
            "/retry/give_up_after",
            "retry.give_up_after",
            &self.give_up_after,
        );
    }

    /// The wait before the next attempt after `failures` failures (1 for the first):
    /// `initial · 2^(failures−1)`, at most `max`, jittered down by up to half so that
    /// many senders do not retry in step.
    pub fn backoff(&self, failures: u32) -> StdDuration {
        let exp = failures.saturating_sub(1).min(30);
        let cap = self
            .initial
            .get()
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max.get());
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if ms < 2 {
            return cap;
        }
        StdDuration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

/// Classifies an HTTP answer: 2xx is delivered; 408, 429 (honouring `Retry-After`) and
/// 5xx are transient; any other status is permanent. The error names the status and the
/// start of the body the peer sent.
pub fn classify_http(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    now: Timestamp,
) -> Result<Answer, SendError> {
    let text = body_excerpt(body);
    let described = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    if status.is_success() {
        return Ok(Answer(described));
    }
    let transient = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
    if transient {
        Err(SendError::Transient {
            reason: described,
            retry_after: crate::http::retry_after(headers, now),
        })
    } else {
        Err(SendError::permanent(described))
    }
}

/// A request that got no answer: timeouts and connection errors are transient; a request
/// that could not even be built is permanent.
pub fn classify_request_error(e: &reqwest::Error) -> SendError {
    let reason = describe_reqwest(e);
    if e.is_builder() {
        SendError::permanent(reason)
    } else {
        SendError::transient(reason)
    }
}

/// A reqwest error with its causes, without the URL (a webhook URL may hold a token).
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The first 300 characters of a body, on one line.
fn body_excerpt(body: &str) -> String {
    let one_line: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn classify(status: u16, headers: &HeaderMap, body: &str) -> Result<Answer, SendError> {
        classify_http(
            StatusCode::from_u16(status).unwrap(),
            headers,
            body,
            chrono::Utc::now(),
        )
    }

    #[test]
    fn statuses_are_delivered_transient_or_permanent() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(200, &none, "ok").unwrap(),
            Answer("HTTP 200 OK: ok".into())
        );
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(s, &none, ""), Err(SendError::Transient { .. })),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 413] {
            assert!(
                matches!(classify(s, &none, ""), Err(SendError::Permanent { .. })),
                "{s}"
            );
        }
        let err = classify(
            400,
            &none,
            "{\"message\":\"The request body has 1 error(s)\"}",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "HTTP 400 Bad Request: {\"message\":\"The request body has 1 error(s)\"}"
        );
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        match classify(429, &h, "") {
            Err(SendError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(StdDuration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_max_with_jitter() {
        let r = RetryConfig {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(10),
            give_up_after: Duration::from_secs(3600),
        };
        for _ in 0..50 {
            let first = r.backoff(1);
            assert!(first >= StdDuration::from_secs(1) && first <= StdDuration::from_secs(2));
            let third = r.backoff(3);
            assert!(third >= StdDuration::from_secs(4) && third <= StdDuration::from_secs(8));
            let late = r.backoff(40);
            assert!(late >= StdDuration::from_secs(5) && late <= StdDuration::from_secs(10));
        }
    }
}
