//! The settings of one PCE connection (`connections.pce.<name>` in the settings file).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::error::PceError;
use crate::time::Duration;

pub use crate::secret::Secret;
pub(crate) use crate::secret::resolve_secret;

/// The highest `requests_per_minute` accepted.
pub const MAX_REQUESTS_PER_MINUTE: u32 = 450;

/// How vigil connects to one Illumio PCE.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PceConnectionConfig {
    /// The PCE's address with scheme and port, e.g. `https://pce.example.com:8443`
    /// (8443 on-premises, 443 SaaS). `/api/v2` is added by vigil.
    pub url: String,
    /// The organization id (`/orgs/<org>/...`). Default: 1.
    #[serde(default = "default_org")]
    pub org: u32,
    /// The API key id (`api_xxxx`), sent as the Basic-auth user. Use this or `api_key_file`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A file holding the API key id (surrounding whitespace is ignored).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The API key's secret, sent as the Basic-auth password. Use this or `api_secret_file`.
    #[serde(default)]
    pub api_secret: Option<Secret>,
    /// A file holding the API key's secret (surrounding whitespace is ignored).
    #[serde(default)]
    pub api_secret_file: Option<PathBuf>,
    /// A PEM file with the CA certificate(s) that signed the PCE's certificate; added to the
    /// trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the PCE's TLS certificate. `false` accepts any certificate (a warning is
    /// logged); prefer `ca_file`. Default: true.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Accept a plain `http://` url. The API key then crosses the network in clear, so
    /// this is only for a TLS-terminating proxy on this machine (`http://127.0.0.1:...`)
    /// or a test PCE such as `vigil pce-sim`; without it an `http://` url is refused.
    /// Default: false.
    #[serde(default)]
    pub insecure_http: bool,
    /// How long to wait for a TCP/TLS connection. Default: `10s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// How long one request (including its body) may take. Default: `60s`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Requests per minute this connection may send (sustained), shared by every pipeline
    /// using it; short bursts of a tenth of it are allowed on top, so at most 450 (the PCE
    /// answers 429 above 500 per minute per key). Default: 400.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 450))]
    pub requests_per_minute: u32,
    /// How many times a failed request is retried (429, 5xx, timeouts, connection errors).
    /// Default: 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first retry waits up to this long (exponential backoff with full jitter).
    /// A 429 without `Retry-After` waits longer, since the PCE counts requests per
    /// minute: 7.5–15 s first, doubling (up to `backoff_max`), so four retries span more
    /// than a minute; a `Retry-After` is honoured as given. Default: `1s`.
    #[serde(default = "default_backoff_base")]
    pub backoff_base: Duration,
    /// No backoff wait is longer than this (a `Retry-After` excepted, up to 15 minutes).
    /// Default: `60s`.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// The first wait between polls of an async query or job. Default: `2s`.
    #[serde(default = "default_poll_initial")]
    pub poll_interval_initial: Duration,
    /// Polling slows down to at most this interval. Default: `10s`.
    #[serde(default = "default_poll_max")]
    pub poll_interval_max: Duration,
    /// How long an async traffic query or collection job may take before vigil gives up
    /// and reports it. Default: `10m`.
    #[serde(default = "default_query_timeout")]
    pub query_timeout: Duration,
    /// How many times an empty traffic download is fetched again while the query reported
    /// matches (the file may not be ready yet). Default: 3.
    #[serde(default = "default_download_retries")]
    pub download_retries: u32,
    /// The largest answer read whole (an events page, a list of labels or workloads,
    /// an error), in bytes: a larger one fails its request with an error naming this
    /// setting, so a PCE (or something posing as one) cannot exhaust vigil's memory.
    /// Traffic downloads, read as a stream by the sources, are not bound by it (they stop
    /// at the query's `max_results` flows). Default: 128 MiB (an events page of 10,000
    /// events is about 20 MB).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_org() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_rpm() -> u32 {
    400
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_poll_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_poll_max() -> Duration {
    Duration::from_secs(10)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_download_retries() -> u32 {
    3
}
fn default_max_response_bytes() -> u64 {
    128 << 20
}

impl PceConnectionConfig {
    /// A configuration with every default, for `url` and the given key and secret.
    pub fn new(url: impl Into<String>, api_key: Secret, api_secret: Secret) -> Self {
        PceConnectionConfig {
            url: url.into(),
            org: default_org(),
            api_key: Some(api_key),
            api_key_file: None,
            api_secret: Some(api_secret),
            api_secret_file: None,
            ca_file: None,
            tls_verify: true,
            insecure_http: false,
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            requests_per_minute: default_rpm(),
            max_retries: default_max_retries(),
            backoff_base: default_backoff_base(),
            backoff_max: default_backoff_max(),
            poll_interval_initial: default_poll_initial(),
            poll_interval_max: default_poll_max(),
            query_timeout: default_query_timeout(),
            download_retries: default_download_retries(),
            max_response_bytes: default_max_response_bytes(),
        }
    }

    /// The API key id and secret, read from the settings or their files.
    pub fn credentials(&self) -> Result<(Secret, Secret), PceError> {
        let key = resolve_secret("api_key", &self.api_key, self.api_key_file.as_deref())
            .map_err(PceError::Config)?;
        let secret = resolve_secret(
            "api_secret",
            &self.api_secret,
            self.api_secret_file.as_deref(),
        )
        .map_err(PceError::Config)?;
        Ok((key, secret))
    }

    /// Checks the values serde cannot (called by [`super::PceClient::new`]).
    pub fn validate(&self) -> Result<(), PceError> {
        if !(1..=MAX_REQUESTS_PER_MINUTE).contains(&self.requests_per_minute) {
            return Err(PceError::Config(format!(
                "requests_per_minute {} must be between 1 and {MAX_REQUESTS_PER_MINUTE} \
                 (the PCE allows 500 per minute per key, and bursts add a tenth)",
                self.requests_per_minute
            )));
        }
        if !self.request_timeout.is_positive() || !self.connect_timeout.is_positive() {
            return Err(PceError::Config(
                "connect_timeout and request_timeout must be greater than zero".into(),
            ));
        }
        if self.max_response_bytes < 1024 {
            return Err(PceError::Config(format!(
                "max_response_bytes {} is too small for any PCE answer: give at least 1024",
                self.max_response_bytes
            )));
        }
        if !self.poll_interval_initial.is_positive() {
            return Err(PceError::Config(
                "poll_interval_initial must be greater than zero".into(),
            ));
        }
        self.api_base().map(|_| ())
    }

    /// The API base, `<url>/api/v2`, after checking the URL.
    pub fn api_base(&self) -> Result<String, PceError> {
        let url = self.url.trim().trim_end_matches('/');
        if self.is_plain_http() {
            if !self.insecure_http {
                return Err(PceError::Config(format!(
                    "url `{url}` uses plain http://: the API key would cross the network in clear; use https:// (e.g. https://pce.example.com:8443), or set `insecure_http: true` for a TLS-terminating proxy on this machine or a test PCE"
                )));
            }
        } else if !starts_with_ignore_case(url, "https://") {
            return Err(PceError::Config(format!(
                "url `{url}` must start with https:// (e.g. https://pce.example.com:8443)"
            )));
        }
        let url = url.strip_suffix("/api/v2").unwrap_or(url);
        Ok(format!("{url}/api/v2"))
    }

    /// Whether the url is plain `http://` (refused unless `insecure_http` is set).
    pub fn is_plain_http(&self) -> bool {
        starts_with_ignore_case(self.url.trim(), "http://")
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_documents_every_field() {
        let schema = serde_json::to_value(schemars::schema_for!(PceConnectionConfig)).unwrap();
        let props = schema["properties"].as_object().expect("properties");
        assert!(props.contains_key("api_secret_file"));
        for (name, prop) in props {
            assert!(
                prop.get("description").is_some(),
                "{name} has no description"
            );
        }
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["url"]));
    }

    #[test]
    fn plain_http_needs_the_opt_in() {
        let mut cfg =
            PceConnectionConfig::new("http://127.0.0.1:8080", Secret::new("k"), Secret::new("s"));
        let err = cfg.api_base().unwrap_err().to_string();
        assert!(err.contains("uses plain http://"), "{err}");
        assert!(err.contains("insecure_http: true"), "{err}");
        cfg.insecure_http = true;
        assert_eq!(cfg.api_base().unwrap(), "http://127.0.0.1:8080/api/v2");
        cfg.url = "HTTPS://pce.example.com:8443/".into();
        cfg.insecure_http = false;
        assert_eq!(
            cfg.api_base().unwrap(),
            "HTTPS://pce.example.com:8443/api/v2"
        );
        cfg.url = "pce.example.com:8443".into();
        assert!(
            cfg.api_base()
                .unwrap_err()
                .to_string()
                .contains("must start with https://")
        );
    }
}
