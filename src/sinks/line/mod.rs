//! `line` sink: LINE Messaging API push messages (LINE Notify is shut down).
//!
//! `POST {base_url}/v2/bot/message/push` with the channel access token as a bearer token
//! and `{to, messages: [{type: "text", text}]}`. A long text is split into up to five
//! messages of at most 5000 characters (at line ends where possible); beyond that the
//! fifth is cut with a marker. `X-Line-Retry-Key` carries the message id, the same on
//! every retry, so LINE accepts a message once; its 409 ("already accepted") counts as
//! delivered.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;

use super::delivery::render::{self, Templates};
use super::delivery::{
    self, Answer, DeliverySink, Notification, Notifier, Rendering, SendError, SetupError,
    delivering_sink, http,
};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Sink};
use crate::secret::Secret;
use crate::time::SharedClock;

/// The most characters LINE takes in one text message.
pub const MAX_TEXT: usize = 5000;
/// The most messages one push may carry.
pub const MAX_MESSAGES: usize = 5;
/// Ends a text cut because it did not fit in five messages.
pub const CUT_MARKER: &str = "\n…(cut: too long for LINE; the full alert is in the dashboard)";

delivering_sink! {
send_resolved: "crate::sinks::delivery::default_false";
/// Pushes alerts to a LINE user, group or room through the Messaging API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct LineSinkConfig {
    /// The stages this sink reads (alerts; a plain event is sent as an `info` alert).
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The LINE channel: a name under `connections: line:` in the settings.
    pub connection: String,
    /// Who receives the messages: a user, group or room id (`U…`, `C…`, `R…`).
    pub to: String,
    /// The template set: `line` (built in) or NAME for `templates/NAME.text.hbs` beside
    /// the pipeline file. Default: `line`.
    #[serde(default = "default_template")]
    pub template: String,
}
}

fn default_template() -> String {
    "line".into()
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["burst"],
        "connection": "ops",
        "to": "U0123456789abcdef0123456789abcdef",
        "min_severity": "high"
    })
}

/// `connections.line.<name>`: a LINE Messaging API channel.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineConnectionConfig {
    /// The channel access token, from the environment (`${LINE_CHANNEL_TOKEN}`). Use this
    /// or `token_file`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the channel access token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The API's address. Default: `https://api.line.me`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// A PEM file with extra CA certificates to trust (for a proxy in between).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the server's certificate. Default: true.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

fn default_base_url() -> String {
    "https://api.line.me".into()
}
fn default_true() -> bool {
    true
}

impl LineConnectionConfig {
    /// The token, read from the settings or its file.
    pub fn token(&self) -> Result<Secret, String> {
        crate::secret::resolve_secret("token", &self.token, self.token_file.as_deref())
    }
}

impl LineSinkConfig {
    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        self.delivery().check(p);
        if self.to.trim().is_empty() {
            p.error(
                "/to",
                codes::INVALID_VALUE,
                "`to` is empty: give a user, group or room id",
            );
        }
        if let Err(e) = LineRender::new(
            self,
            &p.base_dir,
            crate::sinks::delivery::DEFAULT_PUBLIC_URL,
        ) {
            e.report("/template", p);
        }
    }

    /// Renders the template against a sample alert grouped by `group_by`.
    pub fn check_rendering(&self, group_by: &[String], p: &mut Problems) {
        if let Ok(render) = LineRender::new(
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
        Ok(Box::new(LineNotifier::new(self, cx, services)?))
    }

    /// Builds the running sink.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn Sink>, NodeError> {
        let notifier = LineNotifier::new(self, cx, services)?;
        Ok(Box::new(DeliverySink::new(
            notifier,
            &self.delivery(),
            cx,
            services,
        )))
    }
}

struct LineRender {
    templates: Templates,
    public_url: String,
}

impl LineRender {
    fn new(
        cfg: &LineSinkConfig,
        base_dir: &Path,
        public_url: &str,
    ) -> Result<LineRender, SetupError> {
        let (text, origin) = render::load(base_dir, &cfg.template, "text")?.ok_or_else(|| {
            format!(
                "template `{}` has no text part: write templates/{}.text.hbs beside the pipeline file, or use `line`",
                cfg.template, cfg.template
            )
        })?;
        let mut templates = Templates::new();
        templates.add_text("text", &text, origin)?;
        Ok(LineRender {
            templates,
            public_url: public_url.to_string(),
        })
    }

    fn text(&self, n: &Notification) -> Result<String, String> {
        let text = self
            .templates
            .render("text", &render::context(n, &self.public_url))?;
        Ok(text.trim().to_string())
    }
}

impl Rendering for LineRender {
    fn templates(&self) -> &Templates {
        &self.templates
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        Ok(vec![("text".into(), self.text(n)?)])
    }
}

/// Asks the LINE API who the channel's token belongs to (`GET /v2/bot/info`): it answers
/// 200 only for a valid channel access token, and nothing is sent to anyone
/// (`vigil check`). The error names a refused token (401/403), a timeout, a TLS or
/// connection failure.
pub async fn check_connection(
    conn: &LineConnectionConfig,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let token = conn.token()?;
    let client = http::client(conn.ca_file.as_deref(), conn.tls_verify, "line")?;
    let url = format!("{}/v2/bot/info", conn.base_url.trim_end_matches('/'));
    let answer = client
        .get(&url)
        .bearer_auth(token.expose())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| crate::sinks::delivery::retry::describe_reqwest(&e))?;
    match answer.status().as_u16() {
        200..=299 => Ok(()),
        401 => Err("401 unauthorized: LINE refuses the channel access token (check `token`/`token_file`; it may have been reissued)".into()),
        403 => Err("403 forbidden: the channel access token may not use the Messaging API".into()),
        status => Err(format!("LINE answered {status} to GET /v2/bot/info")),
    }
}

/// Pushes messages to one LINE recipient.
pub struct LineNotifier {
    render: LineRender,
    client: reqwest::Client,
    url: String,
    token: Secret,
    to: String,
    clock: SharedClock,
}

impl LineNotifier {
    fn new(
        cfg: &LineSinkConfig,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<LineNotifier, NodeError> {
        let conn = services
            .line
            .get(&cfg.connection)
            .ok_or_else(|| format!("no LINE connection `{}` in the settings", cfg.connection))?;
        let token = conn
            .token()
            .map_err(|e| format!("connection `{}`: {e}", cfg.connection))?;
        let client = http::client(conn.ca_file.as_deref(), conn.tls_verify, &cfg.connection)?;
        Ok(LineNotifier {
            render: LineRender::new(cfg, &cx.base_dir, &cx.public_url)?,
            client,
            url: format!(
                "{}/v2/bot/message/push",
                conn.base_url.trim_end_matches('/')
            ),
            token,
            to: cfg.to.clone(),
            clock: cx.clock.clone(),
        })
    }

    /// The request body of `n`.
    fn body(&self, n: &Notification) -> Result<serde_json::Value, String> {
        Ok(push_body(&self.to, &self.render.text(n)?))
    }
}

/// The push request body for `text` to `to`.
pub fn push_body(to: &str, text: &str) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = split_text(text)
        .into_iter()
        .map(|t| serde_json::json!({"type": "text", "text": t}))
        .collect();
    serde_json::json!({"to": to, "messages": messages})
}

impl Notifier for LineNotifier {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
        Box::pin(async move {
            let body = self.body(n).map_err(SendError::permanent)?;
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
                .map_err(|_| {
                    SendError::permanent("the channel token holds characters a header cannot carry")
                })?;
            auth.set_sensitive(true);
            headers.insert(AUTHORIZATION, auth);
            let key = HeaderValue::from_str(&n.id)
                .map_err(|_| SendError::permanent("the message id is not a valid header value"))?;
            headers.insert("x-line-retry-key", key);
            let response = http::post(
                &self.client,
                &self.url,
                headers,
                body.to_string().into_bytes(),
            )
            .await?;
            if response.status == reqwest::StatusCode::CONFLICT {
                // The retry key was accepted before (an earlier attempt got through).
                return Ok(Answer(
                    "HTTP 409: already accepted under this retry key".into(),
                ));
            }
            response.classify(&self.clock)
        })
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        self.render.preview(n)
    }
}

/// Splits `text` into at most [`MAX_MESSAGES`] parts of at most [`MAX_TEXT`] characters
/// (counted in UTF-16 units, as LINE counts them), at line ends where possible. What does
/// not fit is cut, and the last part ends with [`CUT_MARKER`].
pub fn split_text(text: &str) -> Vec<String> {
    let units = |s: &str| s.encode_utf16().count();
    let mut parts: Vec<String> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if units(rest) <= MAX_TEXT {
            parts.push(rest.to_string());
            break;
        }
        // The longest prefix within the limit, cut at its last newline when there is one
        // in the second half.
        let mut end = 0;
        let mut count = 0;
        for (i, c) in rest.char_indices() {
            let w = c.len_utf16();
            if count + w > MAX_TEXT {
                break;
            }
            count += w;
            end = i + c.len_utf8();
        }
        let cut = rest[..end]
            .rfind('\n')
            .filter(|&nl| nl >= end / 2)
            .map_or(end, |nl| nl + 1);
        parts.push(rest[..cut].trim_end_matches('\n').to_string());
        rest = &rest[cut..];
    }
    if parts.len() > MAX_MESSAGES {
        parts.truncate(MAX_MESSAGES);
        let last = parts.last_mut().map(std::mem::take).unwrap_or_default();
        let room = MAX_TEXT - units(CUT_MARKER);
        let mut kept = String::new();
        let mut count = 0;
        for c in last.chars() {
            if count + c.len_utf16() > room {
                break;
            }
            count += c.len_utf16();
            kept.push(c);
        }
        kept.push_str(CUT_MARKER);
        if let Some(slot) = parts.last_mut() {
            *slot = kept;
        }
    }
    if parts.is_empty() {
        parts.push(String::new());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> usize {
        s.encode_utf16().count()
    }

    #[test]
    fn short_text_is_one_message() {
        assert_eq!(split_text("hello"), vec!["hello".to_string()]);
    }

    #[test]
    fn long_text_splits_at_line_ends_within_the_limit() {
        let line = format!("{}\n", "x".repeat(99));
        let text = line.repeat(120); // 12000 characters
        let parts = split_text(&text);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| units(p) <= MAX_TEXT));
        assert!(parts[0].ends_with('x') && parts[1].starts_with('x'));
        assert_eq!(
            parts.join("\n"),
            text,
            "only the newlines at the cuts are taken out"
        );
    }

    #[test]
    fn beyond_five_messages_the_last_is_cut_with_a_marker() {
        let text = "y".repeat(MAX_TEXT * 7);
        let parts = split_text(&text);
        assert_eq!(parts.len(), MAX_MESSAGES);
        assert!(parts.iter().all(|p| units(p) <= MAX_TEXT));
        assert!(parts[4].ends_with(CUT_MARKER));
        assert_eq!(units(&parts[4]), MAX_TEXT);
    }

    #[test]
    fn characters_outside_the_bmp_count_twice() {
        let text = "😀".repeat(3000); // 6000 UTF-16 units
        let parts = split_text(&text);
        assert_eq!(parts.len(), 2);
        assert_eq!(units(&parts[0]), MAX_TEXT);
        assert_eq!(parts.concat(), text);
    }
}
