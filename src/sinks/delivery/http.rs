//! The HTTP side of the `line` and `webhook` sinks: one client per sink, one POST per
//! attempt, the answer classified by [`super::retry::classify_http`].

use std::path::Path;

use reqwest::header::HeaderMap;

use super::retry::{classify_http, classify_request_error};
use super::{Answer, SendError};
use crate::runtime::SharedClock;

/// An HTTP client for a sink: no redirects followed (a 3xx is reported), `ca_file` added
/// to the trusted roots, `tls_verify: false` accepting any certificate (logged).
pub fn client(
    ca_file: Option<&Path>,
    tls_verify: bool,
    what: &str,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read `ca_file` {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`ca_file` {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "`ca_file` {} holds no PEM certificate",
                path.display()
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if !tls_verify {
        tracing::warn!(
            target_name = what,
            "tls_verify is false: the peer's certificate is not checked (set ca_file instead)"
        );
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| {
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
