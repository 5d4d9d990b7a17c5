//! `webhook` sink: alerts POSTed as JSON to an HTTP endpoint: a documented generic body,
//! Slack (incoming webhook with blocks), Microsoft Teams (Workflows webhook with an
//! Adaptive Card), or a custom handlebars body.
//!
//! Every request carries `X-Vigil-Delivery: <message id>` (the same on every retry, for
//! the receiver to drop repeats). With a signing secret it also carries
//! `X-Vigil-Timestamp: <unix seconds>` and `X-Vigil-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of `<timestamp>.<body>` under the secret.
//!
//! # The generic body
//!
//! ```json
//! {"version": 1, "id": "<message id>", "sink": "pipeline.sink", "severity": "high",
//!  "count": 1, "new": 1, "firing": 0, "resolved": 0, "omitted": 0, "reminder": false,
//!  "group": {"pipeline": "...", "stage": "..."},
//!  "alerts": [{ ...the alert's JSON form..., "change": "new", "url": "<dashboard link>"}]}
//! ```
//!
//! `alerts` are one notification group's: `change` says whether an alert is `new`, still
//! `firing` (listed before) or `resolved` since the group's last notification; `reminder`
//! is true when nothing changed; `group` holds the group's `group_by` values.
//!
//! An alert's JSON form: `id` (the same for every report of an episode), `status`,
//! `pipeline`, `stage`, `severity`, `title`, `summary`, `group`, `group_key`, `value`,
//! `threshold`, `unit`?, `estimate`?, `window {start, end}`, `first_seen`, `last_seen`,
//! `updates`, `episode`, `samples [{time, source, record}]`, `top`?, `fields`?.

mod presets;

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use indexmap::IndexMap;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;

use super::delivery::render::{self, Origin, Templates};
use super::delivery::{
    self, Answer, DeliverySink, Notification, Notifier, Rendering, SendError, SetupError,
    delivering_sink, http,
};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Sink};
use crate::secret::Secret;
use crate::time::SharedClock;

/// The body a webhook sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookPreset {
    /// vigil's own JSON (see the sink's documentation): for SOC tools and your own code.
    #[default]
    Generic,
    /// A Slack incoming webhook: `{text, blocks}`.
    Slack,
    /// A Microsoft Teams Workflows webhook: a message with an Adaptive Card.
    Teams,
    /// `body`: your handlebars template (values escaped for a JSON body; `{{json x}}`
    /// writes a value as a JSON literal).
    Custom,
}

delivering_sink! {
send_resolved: "crate::sinks::delivery::default_true";
/// POSTs alerts to an HTTP endpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct WebhookSinkConfig {
    /// The stages this sink reads (alerts; a plain event is sent as an `info` alert).
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The endpoint: a name under `connections: webhook:` in the settings.
    pub connection: String,
    /// `generic`, `slack`, `teams` or `custom`. Default: `generic`.
    #[serde(default)]
    pub preset: WebhookPreset,
    /// With `preset: custom`: the body, a handlebars template written here…
    ///
    /// With a JSON `content_type` (the default, `application/json`, or any
    /// `application/*+json`) every value written with `{{x}}` is escaped as the content
    /// of a JSON string (`"`, `\`, new lines and other control characters), so
    /// `"host": "{{alert.group.host}}"` stays valid JSON whatever an event put in the
    /// host name; `{{json x}}` writes a value as a JSON literal (quotes included), and
    /// `{{{x}}}` writes it unescaped. Other content types take the values as they are.
    #[serde(default)]
    pub body: Option<String>,
    /// …or the template set NAME whose `templates/NAME.body.hbs` (beside the pipeline
    /// file) is the body, escaped as `body` is.
    #[serde(default)]
    pub template: Option<String>,
    /// The body's content type; a JSON one makes a custom body escape its values (see
    /// `body`). Default: `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Extra request headers; values are handlebars templates (`X-Severity:
    /// "{{severity}}"`). Secret headers belong on the connection.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
}
}

fn default_content_type() -> String {
    "application/json".into()
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["burst"],
        "connection": "soc-slack",
        "preset": "slack",
        "min_severity": "medium"
    })
}

/// `connections.webhook.<name>`: an HTTP endpoint webhook sinks POST to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConnectionConfig {
    /// The endpoint's URL. A URL that holds a token (Slack, Teams) should come from the
    /// environment: `url: ${SLACK_WEBHOOK_URL}`. It is never logged.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding the URL.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The HMAC-SHA256 signing secret, from the environment. Use this or
    /// `signing_secret_file`; without either, requests are not signed.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// A file holding the signing secret.
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// Headers sent with every request (e.g. `Authorization: Bearer ${SOC_TOKEN}`);
    /// their values are treated as secrets.
    #[serde(default)]
    pub headers: IndexMap<String, Secret>,
    /// A PEM file with the CA certificate(s) that signed the endpoint's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the endpoint's certificate. Default: true.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

fn default_true() -> bool {
    true
}

impl WebhookConnectionConfig {
    /// The URL, from the settings or its file.
    pub fn url(&self) -> Result<Secret, String> {
        crate::secret::resolve_secret("url", &self.url, self.url_file.as_deref())
    }

    /// The signing secret, if one is set.
    pub fn signing_secret(&self) -> Result<Option<Secret>, String> {
        if self.signing_secret.is_none() && self.signing_secret_file.is_none() {
            return Ok(None);
        }
        crate::secret::resolve_secret(
            "signing_secret",
            &self.signing_secret,
            self.signing_secret_file.as_deref(),
        )
        .map(Some)
    }
}

impl WebhookSinkConfig {
    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        self.delivery().check(p);
        let custom = self.preset == WebhookPreset::Custom;
        match (custom, &self.body, &self.template) {
            (true, None, None) => p.error(
                "/preset",
                codes::MISSING_KEY,
                "`preset: custom` needs `body` (a template) or `template` (templates/NAME.body.hbs)",
            ),
            (true, Some(_), Some(_)) => p.error(
                "/template",
                codes::INVALID_VALUE,
                "set either `body` or `template`, not both",
            ),
            (false, Some(_), _) => p.error(
                "/body",
                codes::INVALID_VALUE,
                "`body` is used only with `preset: custom`",
            ),
            (false, _, Some(_)) => p.error(
                "/template",
                codes::INVALID_VALUE,
                "`template` is used only with `preset: custom`",
            ),
            _ => {}
        }
        for name in self.headers.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.error(
                    format!("/headers/{}", name.replace('~', "~0").replace('/', "~1")),
                    codes::INVALID_VALUE,
                    format!("`{name}` is not a valid header name"),
                );
            }
        }
        if !p.has_errors()
            && let Err(e) = WebhookRender::new(
                self,
                &p.base_dir,
                crate::sinks::delivery::DEFAULT_PUBLIC_URL,
            )
        {
            e.report("", p);
        }
    }

    /// Renders the body and headers against a sample alert grouped by `group_by`.
    pub fn check_rendering(&self, group_by: &[String], p: &mut Problems) {
        if let Ok(render) = WebhookRender::new(
            self,
            &p.base_dir,
            crate::sinks::delivery::DEFAULT_PUBLIC_URL,
        ) {
            delivery::check_rendering(&render, group_by, p);
        }
    }

    /// How this sink sends one message.
    pub fn notifier(
        &self,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn crate::sinks::delivery::Notifier>, NodeError> {
        Ok(Box::new(WebhookNotifier::new(self, cx, services)?))
    }

    /// Builds the running sink.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn Sink>, NodeError> {
        let notifier = WebhookNotifier::new(self, cx, services)?;
        Ok(Box::new(DeliverySink::new(
            notifier,
            &self.delivery(),
            cx,
            services,
        )))
    }
}

/// How a webhook sink's body and headers are made.
pub(crate) struct WebhookRender {
    preset: WebhookPreset,
    templates: Templates,
    headers: Vec<(HeaderName, String)>,
    content_type: String,
    public_url: String,
}

impl WebhookRender {
    pub(crate) fn new(
        cfg: &WebhookSinkConfig,
        base_dir: &Path,
        public_url: &str,
    ) -> Result<WebhookRender, SetupError> {
        let mut templates = Templates::new();
        if cfg.preset == WebhookPreset::Custom {
            // A JSON body escapes every value as JSON string content; another content
            // type takes the values as they are.
            let add = |templates: &mut Templates, text: &str, origin: Origin| {
                if is_json(&cfg.content_type) {
                    templates.add_json("body", text, origin)
                } else {
                    templates.add_text("body", text, origin)
                }
            };
            match (&cfg.body, &cfg.template) {
                (Some(body), _) => add(&mut templates, body, Origin::Inline("/body".into()))?,
                (None, Some(set)) => {
                    let (text, origin) = render::load(base_dir, set, "body")?.ok_or_else(|| {
                        format!("no templates/{set}.body.hbs beside the pipeline file")
                    })?;
                    add(&mut templates, &text, origin)?;
                }
                (None, None) => {
                    return Err(SetupError::Other(
                        "`preset: custom` needs `body` or `template`".into(),
                    ));
                }
            }
        }
        let mut headers = Vec::new();
        for (i, (name, value)) in cfg.headers.iter().enumerate() {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid header name"))?;
            let key = format!("header.{i}");
            templates.add_text(
                &key,
                value,
                Origin::Inline(format!(
                    "/headers/{}",
                    name.replace('~', "~0").replace('/', "~1")
                )),
            )?;
            headers.push((header, key));
        }
        Ok(WebhookRender {
            preset: cfg.preset,
            templates,
            headers,
            content_type: cfg.content_type.clone(),
            public_url: public_url.to_string(),
        })
    }

    /// The body of `n`.
    pub(crate) fn body(&self, n: &Notification) -> Result<String, String> {
        let cx = || render::context(n, &self.public_url);
        Ok(match self.preset {
            WebhookPreset::Generic => presets::generic(n, &self.public_url).to_string(),
            WebhookPreset::Slack => presets::slack(n, &self.public_url).to_string(),
            WebhookPreset::Teams => presets::teams(n, &self.public_url).to_string(),
            WebhookPreset::Custom => self.templates.render("body", &cx())?,
        })
    }

    /// The templated headers of `n`.
    fn headers(&self, n: &Notification) -> Result<Vec<(HeaderName, String)>, String> {
        if self.headers.is_empty() {
            return Ok(Vec::new());
        }
        let cx = render::context(n, &self.public_url);
        self.headers
            .iter()
            .map(|(name, key)| Ok((name.clone(), self.templates.render(key, &cx)?)))
            .collect()
    }
}

impl Rendering for WebhookRender {
    fn templates(&self) -> &Templates {
        &self.templates
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        let mut out = vec![("body".to_string(), self.body(n)?)];
        for (name, value) in self.headers(n)? {
            out.push((format!("header {name}"), value));
        }
        Ok(out)
    }
}

/// Whether `content_type` is JSON: `application/json`, or any `application/*+json`
/// (parameters such as `; charset=utf-8` aside, in any case).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// POSTs to one endpoint.
pub struct WebhookNotifier {
    render: WebhookRender,
    client: reqwest::Client,
    url: Secret,
    signing_secret: Option<Secret>,
    fixed_headers: HeaderMap,
    clock: SharedClock,
}

impl WebhookNotifier {
    fn new(
        cfg: &WebhookSinkConfig,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<WebhookNotifier, NodeError> {
        let name = &cfg.connection;
        let conn = services
            .webhook
            .get(name)
            .ok_or_else(|| format!("no webhook connection `{name}` in the settings"))?;
        let url = conn
            .url()
            .map_err(|e| format!("connection `{name}`: {e}"))?;
        if reqwest::Url::parse(url.expose()).is_err() {
            return Err(format!("connection `{name}`: `url` is not a URL").into());
        }
        let mut fixed_headers = HeaderMap::new();
        for (k, v) in &conn.headers {
            let header = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("connection `{name}`: `{k}` is not a valid header name"))?;
            let mut value = HeaderValue::from_str(v.expose()).map_err(|_| {
                format!("connection `{name}`: header `{k}` holds characters a header cannot carry")
            })?;
            value.set_sensitive(true);
            fixed_headers.insert(header, value);
        }
        Ok(WebhookNotifier {
            render: WebhookRender::new(cfg, &cx.base_dir, &cx.public_url)?,
            client: http::client(conn.ca_file.as_deref(), conn.tls_verify, name)?,
            url,
            signing_secret: conn
                .signing_secret()
                .map_err(|e| format!("connection `{name}`: {e}"))?,
            fixed_headers,
            clock: cx.clock.clone(),
        })
    }
}

/// Whether the endpoint of `conn` answers: a `HEAD` request to its URL (nothing is
/// posted). Any HTTP answer means it is reachable (many endpoints answer 404 or 405 to
/// `HEAD`; that is reported, not failed); a timeout, a TLS or connection failure is the
/// error. Returns the host and the status; neither names the URL's path or query, which
/// may hold a token.
pub async fn check_connection(
    conn: &WebhookConnectionConfig,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let url = conn.url()?;
    let parsed = reqwest::Url::parse(url.expose()).map_err(|_| "`url` is not a URL".to_string())?;
    let host = match (parsed.host_str(), parsed.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", parsed.scheme()),
        _ => return Err("`url` names no host".into()),
    };
    let client = http::client(conn.ca_file.as_deref(), conn.tls_verify, "webhook")?;
    let answer = client
        .head(parsed)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{host}: {}",
                crate::sinks::delivery::retry::describe_reqwest(&e)
            )
        })?;
    Ok(format!(
        "{host} answered {} to HEAD",
        answer.status().as_u16()
    ))
}

/// The `X-Vigil-Signature` value of `body` sent at `timestamp` (unix seconds):
/// `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Notifier for WebhookNotifier {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
        Box::pin(async move {
            let body = self.render.body(n).map_err(SendError::permanent)?;
            let mut headers = self.fixed_headers.clone();
            let bad = |what: &str| {
                SendError::permanent(format!("{what} holds characters a header cannot carry"))
            };
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(&self.render.content_type)
                    .map_err(|_| bad("content_type"))?,
            );
            headers.insert(
                "x-vigil-delivery",
                HeaderValue::from_str(&n.id).map_err(|_| bad("the message id"))?,
            );
            for (name, value) in self.render.headers(n).map_err(SendError::permanent)? {
                let value = HeaderValue::from_str(value.trim()).map_err(|_| bad(name.as_str()))?;
                headers.insert(name, value);
            }
            if let Some(secret) = &self.signing_secret {
                let ts = self.clock.now().timestamp();
                headers.insert("x-vigil-timestamp", HeaderValue::from(ts));
                let sig = signature(secret.expose(), ts, body.as_bytes());
                headers.insert(
                    "x-vigil-signature",
                    HeaderValue::from_str(&sig).map_err(|_| bad("the signature"))?,
                );
            }
            let response =
                http::post(&self.client, self.url.expose(), headers, body.into_bytes()).await?;
            response.classify(&self.clock)
        })
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        self.render.preview(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.siem+json",
            "application/cloudevents+json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "text/json+x",
        ] {
            assert!(!is_json(ct), "{ct}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 's3cret'
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
