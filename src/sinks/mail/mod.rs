//! `mail` sink: alerts as mail through an SMTP server (lettre), HTML and plain text.

mod config;

pub use config::{MailSinkConfig, SmtpConnectionConfig, SmtpTls};

use std::path::Path;

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::delivery::render::{self, Origin, Templates};
use super::delivery::{
    Answer, Notification, Notifier, Rendering, SendError, SetupError, sample_notification,
};
use crate::event::Alert;
use crate::node::{BuildContext, NodeError};

/// The templates of a mail sink, compiled: subject, text, optional HTML, recipients.
pub(crate) struct MailRender {
    templates: Templates,
    to: Vec<String>,
    /// The recipients when no `to` entry is a template (most sinks): nothing to render
    /// per alert.
    fixed: Option<Result<Vec<String>, String>>,
    html: bool,
    public_url: String,
}

/// The addresses of rendered `to` entries (name, text): split on commas, checked,
/// without repeats, sorted.
fn addresses<'a>(
    entries: impl Iterator<Item = Result<(&'a str, String), String>>,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        let (name, rendered) = entry?;
        for addr in rendered.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            addr.parse::<Mailbox>()
                .map_err(|e| format!("recipient `{addr}` (from `{name}`): {e}"))?;
            if !out.iter().any(|o| o == addr) {
                out.push(addr.to_string());
            }
        }
    }
    if out.is_empty() {
        return Err("`to` rendered no recipient for this alert".into());
    }
    out.sort();
    Ok(out)
}

impl MailRender {
    fn new(
        cfg: &MailSinkConfig,
        base_dir: &Path,
        public_url: &str,
    ) -> Result<MailRender, SetupError> {
        let mut templates = Templates::new();
        let set = cfg.template.as_str();
        let part = |name: &str| render::load(base_dir, set, name);
        let missing = |name: &str| {
            format!(
                "template `{set}` has no {name} part: write templates/{set}.{name}.hbs beside the pipeline file, or use a built-in set ({})",
                render::builtin_sets().join(", ")
            )
        };
        match (&cfg.subject, part("subject")?) {
            (Some(inline), _) => {
                templates.add_text("subject", inline, Origin::Inline("/subject".into()))?
            }
            (None, Some((text, origin))) => templates.add_text("subject", &text, origin)?,
            (None, None) => return Err(missing("subject").into()),
        }
        let (text, origin) = part("text")?.ok_or_else(|| missing("text"))?;
        templates.add_text("text", &text, origin)?;
        let html = match part("html")? {
            Some((text, origin)) => {
                templates.add_html("html", &text, origin)?;
                true
            }
            None => false,
        };
        let mut to = Vec::new();
        for (i, entry) in cfg.to.iter().enumerate() {
            let name = format!("to.{i}");
            templates.add_text(&name, entry, Origin::Inline(format!("/to/{i}")))?;
            to.push(name);
        }
        let fixed = cfg.to.iter().all(|e| !e.contains("{{")).then(|| {
            addresses(
                to.iter()
                    .zip(&cfg.to)
                    .map(|(name, e)| Ok((name.as_str(), e.clone()))),
            )
        });
        Ok(MailRender {
            templates,
            to,
            fixed,
            html,
            public_url: public_url.to_string(),
        })
    }

    /// The recipients of `alert`: every `to` entry rendered, split on commas, checked.
    pub(crate) fn recipients(&self, alert: &Alert) -> Result<Vec<String>, String> {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let n = sample_notification("", vec![alert.clone()]);
        let cx = render::context(&n, &self.public_url);
        addresses(
            self.to
                .iter()
                .map(|name| Ok((name.as_str(), self.templates.render(name, &cx)?))),
        )
    }

    /// Subject, plain text and HTML (if the template set has one) of `n`.
    fn render(&self, n: &Notification) -> Result<(String, String, Option<String>), String> {
        let cx = render::context(n, &self.public_url);
        let subject = self.templates.render("subject", &cx)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = self.templates.render("text", &cx)?;
        let html = if self.html {
            Some(self.templates.render("html", &cx)?)
        } else {
            None
        };
        Ok((subject, text, html))
    }
}

impl Rendering for MailRender {
    fn templates(&self) -> &Templates {
        &self.templates
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        let (subject, text, html) = self.render(n)?;
        let mut parts = vec![("subject".to_string(), subject), ("text".to_string(), text)];
        if let Some(html) = html {
            parts.push(("html".to_string(), html));
        }
        Ok(parts)
    }

    fn route(&self, alert: &Alert) -> Result<Vec<String>, String> {
        self.recipients(alert)
    }
}

/// Sends mail through one SMTP server.
pub struct MailNotifier {
    render: MailRender,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
}

impl MailNotifier {
    /// The notifier of mail sink `cfg` being built in `cx`.
    pub fn new(
        cfg: &MailSinkConfig,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> Result<MailNotifier, NodeError> {
        let conn = services
            .smtp
            .get(&cfg.connection)
            .ok_or_else(|| format!("no SMTP connection `{}` in the settings", cfg.connection))?;
        let render = MailRender::new(cfg, &cx.base_dir, &cx.public_url)?;
        let from = cfg
            .from
            .as_deref()
            .or(conn.from.as_deref())
            .ok_or_else(|| {
                format!(
                    "no sender: set `from` on the sink or on connection `{}`",
                    cfg.connection
                )
            })?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("`from` `{from}` is not a mail address: {e}"))?;
        let transport =
            transport(conn).map_err(|e| format!("connection `{}`: {e}", cfg.connection))?;
        Ok(MailNotifier {
            render,
            from,
            transport,
            server: format!("{}:{}", conn.host, conn.port()),
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, SendError> {
        let (subject, text, html) = self.render.render(n).map_err(SendError::permanent)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{}@vigil>", n.id)));
        let recipients = if n.route.is_empty() {
            let first = n
                .alerts
                .first()
                .ok_or_else(|| SendError::permanent("the message carries no alert"))?;
            self.render
                .recipients(first)
                .map_err(SendError::permanent)?
        } else {
            n.route.clone()
        };
        for r in &recipients {
            let mailbox: Mailbox = r
                .parse()
                .map_err(|e| SendError::permanent(format!("recipient `{r}`: {e}")))?;
            builder = builder.to(mailbox);
        }
        let text_part = SinglePart::builder()
            .header(header::ContentType::TEXT_PLAIN)
            .body(crlf(&text));
        let body = match html {
            Some(html) => MultiPart::alternative().singlepart(text_part).singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_HTML)
                    .body(crlf(&html)),
            ),
            None => MultiPart::mixed().singlepart(text_part),
        };
        builder
            .multipart(body)
            .map_err(|e| SendError::permanent(format!("cannot build the mail: {e}")))
    }
}

/// `text` with CRLF line endings, as SMTP wants them. Done here in one pass: lettre
/// inserts the `\r`s one by one otherwise, which is quadratic in a large mail's lines.
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut prev = '\0';
    for c in text.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

impl Notifier for MailNotifier {
    fn route(&self, alert: &Alert) -> Result<Vec<String>, String> {
        self.render.recipients(alert)
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
        Box::pin(async move {
            let message = self.message(n)?;
            match self.transport.send(message).await {
                Ok(response) => Ok(Answer(format!(
                    "{}: {} {}",
                    self.server,
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                ))),
                Err(e) => Err(classify(&self.server, &e)),
            }
        })
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        self.render.preview(n)
    }

    fn wire(&self, n: &Notification) -> Result<Option<(&'static str, Vec<u8>)>, String> {
        let message = self.message(n).map_err(|e| e.to_string())?;
        Ok(Some(("eml", message.formatted())))
    }
}

/// SMTP 5xx (a rejected recipient, a refused login) is permanent; 4xx, timeouts,
/// connection and TLS errors are transient.
fn classify(server: &str, e: &lettre::transport::smtp::Error) -> SendError {
    let mut reason = format!("{server}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    let reason = without_repeats(&reason);
    if e.is_permanent() {
        SendError::permanent(reason)
    } else {
        SendError::transient(reason)
    }
}

/// `a: a: b` as `a: b`: lettre wraps a connection error in another one, and both say
/// "Connection error".
fn without_repeats(reason: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in reason.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// Connects to the server of `conn` as the mail sinks do — TCP, the greeting, EHLO, TLS
/// (`starttls` or `implicit`), and AUTH when `username` is set — then NOOP and QUIT: no
/// mail is sent. Each step waits at most `timeout`. The error says which step failed.
pub async fn check_connection(
    conn: &SmtpConnectionConfig,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let mut conn = conn.clone();
    let step = timeout.min(conn.timeout.get());
    conn.timeout =
        crate::time::Duration::from_millis(step.as_millis().try_into().unwrap_or(u64::MAX));
    let server = format!("{}:{}", conn.host, conn.port());
    let transport = transport(&conn)?;
    match transport.test_connection().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{server}: the server did not answer NOOP")),
        Err(e) => Err(classify(&server, &e).to_string()),
    }
}

fn transport(conn: &SmtpConnectionConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(conn.host.as_str())
        .port(conn.port())
        .timeout(Some(conn.timeout.get()));
    if conn.tls != SmtpTls::None {
        let mut params = TlsParameters::builder(conn.host.clone());
        if let Some(ca) = &conn.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read `ca_file` {}: {e}", ca.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("`ca_file` {} is not a PEM certificate: {e}", ca.display()))?;
            params = params.add_root_certificate(cert);
        }
        if !conn.tls_verify {
            tracing::warn!(host = %conn.host, "tls_verify is off: any certificate the SMTP server shows is accepted");
            params = params
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("TLS settings: {e}"))?;
        builder = builder.tls(match conn.tls {
            SmtpTls::Implicit => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let Some(user) = &conn.username {
        if conn.refuses_plaintext_auth() {
            return Err(
                "`username` with `tls: none` would send the password in clear: set `tls: starttls` or `tls: implicit`, or `allow_plaintext_auth: true`"
                    .into(),
            );
        }
        let password = conn
            .password()?
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::without_repeats;

    #[test]
    fn repeated_parts_of_a_reason_are_said_once() {
        assert_eq!(
            without_repeats(
                "localhost:25: Connection error: Connection error: invalid peer certificate: UnknownIssuer"
            ),
            "localhost:25: Connection error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            without_repeats("localhost:25: permanent error (550): Mailbox unavailable"),
            "localhost:25: permanent error (550): Mailbox unavailable"
        );
    }
}
