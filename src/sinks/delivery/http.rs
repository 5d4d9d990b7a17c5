//! The HTTP side of the `line` and `webhook` sinks: one client per sink, one POST per
//! attempt, the answer classified by [`super::retry::classify_http`].

use std::path::Path;

use reqwest::header::HeaderMap;

use super::retry::{classify_http, classify_request_error};
use super::{Answer, SendError};
use crate::time::SharedClock;

/// An HTTP client for a sink (see [`crate::http::client_builder`]).
pub fn client(
    ca_file: Option<&Path>,
    tls_verify: bool,
    what: &str,
) -> Result<reqwest::Client, String> {
    crate::http::client_builder(ca_file, tls_verify, what)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| {
            format!(
                "cannot build the HTTP client: {}",
                super::retry::describe_reqwest(&e)
            )
        })
}

/// What the peer answered.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text.
    pub body: String,
}

impl Response {
    /// The standard classification (see [`classify_http`]).
    pub fn classify(&self, clock: &SharedClock) -> Result<Answer, SendError> {
        classify_http(self.status, &self.headers, &self.body, clock.now())
    }
}

/// POSTs `body` to `url` with `headers`. A request that got no answer is a
/// [`SendError`]; any answer is returned for the caller to classify.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response, SendError> {
    let response = client
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| classify_request_error(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    Ok(Response {
        status,
        headers,
        body,
    })
}
