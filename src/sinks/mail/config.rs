//! `mail` sink and `connections.smtp.<name>` settings.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Sink};
use crate::secret::Secret;
use crate::sinks::delivery::{self, DeliverySink, delivering_sink};
use crate::time::Duration;

use super::{MailNotifier, MailRender};

delivering_sink! {
send_resolved: "crate::sinks::delivery::default_false";
/// Sends alerts by mail: the raw-log snapshot (what fired, the value against the
/// threshold, the window, the top-N table and the first raw events pretty-printed), as
/// an HTML part and a plain-text part.
///
/// Every alert is stored in the outbox under `state_dir` before it is sent; failed sends
/// are retried (SMTP 4xx, timeouts, connection errors) or set aside as dead letters (SMTP
/// 5xx, a rejected recipient): `vigil outbox list`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct MailSinkConfig {
    /// The stages this sink reads (alerts; a plain event is sent as an `info` alert).
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The SMTP server: a name under `connections: smtp:` in the settings.
    pub connection: String,
    /// The sender address (`vigil@example.com` or `vigil <vigil@example.com>`). Default:
    /// the connection's `from`.
    #[serde(default)]
    pub from: Option<String>,
    /// The recipients. Each entry is a handlebars template rendered per alert, so
    /// recipients can follow a field (`"port-{{alert.group.service.port}}@example.com"`);
    /// an entry may render to several addresses separated by commas, or to nothing.
    /// Alerts are gathered per resulting set of recipients.
    #[schemars(length(min = 1))]
    pub to: Vec<String>,
    /// The template set: `raw-log-snapshot` (built in), or NAME for the files
    /// `templates/NAME.subject.hbs`, `templates/NAME.text.hbs` and (optional)
    /// `templates/NAME.html.hbs` beside the pipeline file. Default: `raw-log-snapshot`.
    #[serde(default = "default_template")]
    pub template: String,
    /// A subject template replacing the template set's subject.
    #[serde(default)]
    pub subject: Option<String>,
}
}

fn default_template() -> String {
    "raw-log-snapshot".into()
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["talkers"],
        "connection": "relay",
        "to": ["soc@example.com"],
        "min_severity": "medium",
        "group_wait": "30s",
        "cooldown": "30m"
    })
}

impl MailSinkConfig {
    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        self.delivery().check(p);
        if let Some(from) = &self.from
            && let Err(e) = from.parse::<lettre::message::Mailbox>()
        {
            p.error(
                "/from",
                codes::INVALID_VALUE,
                format!("`{from}` is not a mail address: {e}"),
            );
        }
        if let Err(e) = self.render(&p.base_dir, crate::sinks::delivery::DEFAULT_PUBLIC_URL) {
            e.report("", p);
        }
    }

    /// Renders every template against a sample alert grouped by `group_by`.
    pub fn check_rendering(&self, group_by: &[String], p: &mut Problems) {
        if let Ok(render) = self.render(&p.base_dir, crate::sinks::delivery::DEFAULT_PUBLIC_URL) {
            delivery::check_rendering(&render, group_by, p);
        }
    }

    /// Compiles the templates.
    pub(crate) fn render(
        &self,
        base_dir: &Path,
        public_url: &str,
    ) -> Result<MailRender, delivery::SetupError> {
        MailRender::new(self, base_dir, public_url)
    }

    /// How this sink sends one message.
    pub fn notifier(
        &self,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn crate::sinks::delivery::Notifier>, NodeError> {
        Ok(Box::new(MailNotifier::new(self, cx, services)?))
    }

    /// Builds the running sink.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn Sink>, NodeError> {
        let notifier = MailNotifier::new(self, cx, services)?;
        Ok(Box::new(DeliverySink::new(
            notifier,
            &self.delivery(),
            cx,
            services,
        )))
    }
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (a relay on localhost or a trusted network). Default port 25.
    None,
    /// Plain connection upgraded with STARTTLS, which is required. Default port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Default port 465.
    Implicit,
}

/// `connections.smtp.<name>`: an SMTP server mail sinks send through.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConnectionConfig {
    /// The server's host name (also the name its certificate must carry).
    pub host: String,
    /// The port. Default: 25 with `tls: none`, 587 with `starttls`, 465 with `implicit`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` or `implicit`. Default: `starttls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user name to log in with (AUTH PLAIN or LOGIN). Default: no login. With
    /// `tls: none` the login (the password too) would cross the network in clear:
    /// `vigil validate` refuses it unless `allow_plaintext_auth` is true.
    #[serde(default)]
    pub username: Option<String>,
    /// Log in (`username`) over a connection without TLS (`tls: none`), sending the
    /// password in clear: only for a relay on this machine or on a network you trust.
    /// Default: false (such a login is a validation error; use `tls: starttls` or
    /// `tls: implicit`).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// The password, from the environment (`${SMTP_PASSWORD}`). Use this or
    /// `password_file`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (surrounding whitespace is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A PEM file with the CA certificate(s) that signed the server's certificate, added
    /// to the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the server's certificate. `false` accepts any certificate (a warning is
    /// logged); prefer `ca_file`. Default: true.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// The default sender of the mail sinks using this server.
    #[serde(default)]
    pub from: Option<String>,
    /// How long to wait for the server at each step. Default: `30s`.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: Duration,
}

fn default_true() -> bool {
    true
}
fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SmtpConnectionConfig {
    /// The port, defaulted by `tls`.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
        })
    }

    /// Whether this connection would log in without TLS although
    /// `allow_plaintext_auth` does not allow it.
    pub fn refuses_plaintext_auth(&self) -> bool {
        self.tls == SmtpTls::None && self.username.is_some() && !self.allow_plaintext_auth
    }

    /// The password, read from the settings or its file; `None` without `username`.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        if self.username.is_none() {
            return Ok(None);
        }
        crate::secret::resolve_secret("password", &self.password, self.password_file.as_deref())
            .map(Some)
    }
}
