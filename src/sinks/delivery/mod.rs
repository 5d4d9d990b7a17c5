//! What the delivering sinks (`mail`, `line`, `webhook`) share.
//!
//! A delivering sink turns each alert it receives into a stored outbox message (see
//! [`crate::store::outbox`]) and a worker task of its own sends the messages: so an alert
//! is durable before anything is sent, a restart sends what was left, and a slow or
//! hanging peer delays only its own sink. The kinds differ only in their [`Notifier`]:
//! how a message becomes a mail, a LINE push or an HTTP request, and how the peer's
//! answer reads.
//!
//! - [`DeliveryConfig`]: the per-sink options every kind has (`min_severity`, `cooldown`,
//!   `group_wait`, `retry`, `timeout`).
//! - [`render`]: handlebars templates (strict), the values they see, the built-in ones.
//! - [`retry`]: backoff with jitter and how HTTP answers are classified.
//! - [`runner`]: the sink task and its worker.

pub mod dispatch;
pub mod http;
pub mod render;
pub mod retry;
pub mod runner;
pub mod send_test;

use futures::future::BoxFuture;

use crate::config::check::Problems;
use crate::config::diagnostic::codes;
use crate::config::model::Duration;
use crate::event::{Alert, AlertStatus, AlertWindow, Sample, Severity, TopRow, TopTable};

pub use render::Templates;
pub use retry::RetryConfig;
pub use runner::DeliverySink;

/// The options every delivering sink has, beside its own: written at the top level of the
/// sink (`min_severity: high`), collected here by [`delivering_sink!`].
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// See the field of the same name on the sinks.
    pub min_severity: Severity,
    /// See the field of the same name on the sinks.
    pub cooldown: Option<Duration>,
    /// See the field of the same name on the sinks.
    pub group_wait: Duration,
    /// See the field of the same name on the sinks.
    pub retry: RetryConfig,
    /// See the field of the same name on the sinks.
    pub timeout: Duration,
    /// See the field of the same name on the sinks.
    pub drain_timeout: Duration,
}

/// Defines a delivering sink's config struct with its own fields followed by the common
/// delivery fields (documented once, here), and its `delivery()` accessor. The fields are
/// written out rather than `#[serde(flatten)]`ed, which would defeat
/// `deny_unknown_fields`.
macro_rules! delivering_sink {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Alerts below this severity are not sent by this sink (`info`, `low`,
            /// `medium`, `high`, `critical`). Default: `info` (everything).
            #[serde(default = "crate::sinks::delivery::default_min_severity")]
            pub min_severity: crate::event::Severity,
            /// After an alert of a rule (pipeline, stage) and group is sent, further firing
            /// alerts of the same rule and group are held back for this long (resolved ones
            /// still go out). Kept across restarts. Default: none.
            #[serde(default)]
            pub cooldown: Option<crate::config::model::Duration>,
            /// Alerts arriving within this time of the first go out together, as one
            /// message per set of recipients. Default: `0s` (each alert on its own, at
            /// once).
            #[serde(default = "crate::sinks::delivery::default_group_wait")]
            pub group_wait: crate::config::model::Duration,
            /// How failed sends are retried.
            #[serde(default)]
            pub retry: crate::sinks::delivery::RetryConfig,
            /// How long one attempt may take before it counts as failed (and is
            /// retried). Default: `30s`.
            #[serde(default = "crate::sinks::delivery::default_timeout")]
            pub timeout: crate::config::model::Duration,
            /// At shutdown, how long to keep sending what is due before leaving the rest
            /// in the outbox for the next start. Default: `30s`.
            #[serde(default = "crate::sinks::delivery::default_drain_timeout")]
            pub drain_timeout: crate::config::model::Duration,
        }

        impl $name {
            /// The common delivery options.
            pub fn delivery(&self) -> crate::sinks::delivery::DeliveryConfig {
                crate::sinks::delivery::DeliveryConfig {
                    min_severity: self.min_severity,
                    cooldown: self.cooldown,
                    group_wait: self.group_wait,
                    retry: self.retry.clone(),
                    timeout: self.timeout,
                    drain_timeout: self.drain_timeout,
                }
            }
        }
    };
}
pub(crate) use delivering_sink;

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            min_severity: default_min_severity(),
            cooldown: None,
            group_wait: default_group_wait(),
            retry: RetryConfig::default(),
            timeout: default_timeout(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

pub(crate) fn default_min_severity() -> Severity {
    Severity::Info
}
pub(crate) fn default_group_wait() -> Duration {
    Duration::from_secs(0)
}
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

impl DeliveryConfig {
    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        if let Some(c) = &self.cooldown {
            p.positive_duration("/cooldown", "cooldown", c);
        }
        p.positive_duration("/timeout", "timeout", &self.timeout);
        self.retry.check(p);
        if self.group_wait.get().is_zero() && self.group_wait.to_string().starts_with('-') {
            p.error(
                "/group_wait",
                codes::INVALID_VALUE,
                "group_wait cannot be negative",
            );
        }
    }
}

/// One message to deliver: the alerts that go out together, to `route`.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The message id (a UUID) kept across retries: LINE's retry key, the mail's
    /// Message-ID, the webhook's delivery id.
    pub id: String,
    /// The sink, as `pipeline.sink`.
    pub sink: String,
    /// The recipients (mail); empty for sinks with fixed ones.
    pub route: Vec<String>,
    /// The alerts, in the order they arrived (at least one).
    pub alerts: Vec<Alert>,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

/// What the peer answered when it accepted a message (`250 2.0.0 Ok: queued`,
/// `HTTP 200: ok`), for logs, the outbox and `vigil send-test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer(pub String);

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: a timeout, a connection error, 429, 5xx, an SMTP 4xx.
    #[error("{reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// How long the peer asked to wait (`Retry-After`).
        retry_after: Option<std::time::Duration>,
    },
    /// Retrying cannot help: another 4xx, a rejected recipient, a template that cannot
    /// render this alert.
    #[error("{reason}")]
    Permanent {
        /// What happened.
        reason: String,
    },
}

impl SendError {
    /// A transient error without a wait requested.
    pub fn transient(reason: impl Into<String>) -> SendError {
        SendError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError::Permanent {
            reason: reason.into(),
        }
    }
}

/// How one kind of sink delivers a message.
pub trait Notifier: Send + Sync + 'static {
    /// The recipients of `alert` (rendered from a templated `to`); alerts with the same
    /// recipients are gathered into one message. Sinks with fixed recipients return none.
    fn route(&self, _alert: &Alert) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// Sends `n` once and reports what the peer answered.
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>>;

    /// Renders everything the sink would send for `n` without sending it (for
    /// `vigil validate` and snapshot tests): a template that cannot render is an error
    /// naming it.
    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String>;
}

/// A sink's compiled templates and what it makes of them, without sending anything: for
/// `vigil validate`, `send-test --dry-run` and the notifiers themselves.
pub trait Rendering {
    /// Every template of the sink.
    fn templates(&self) -> &Templates;

    /// What the sink would send for `n`: (part, text).
    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String>;

    /// The recipients of `alert` (sinks whose `to` is templated).
    fn route(&self, _alert: &Alert) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// A sink's templates could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A template does not compile.
    #[error("{0}")]
    Template(render::TemplateFailure),
    /// Anything else (a template file that cannot be read, a missing part).
    #[error("{0}")]
    Other(String),
}

impl From<render::TemplateFailure> for SetupError {
    fn from(f: render::TemplateFailure) -> SetupError {
        SetupError::Template(f)
    }
}

impl From<String> for SetupError {
    fn from(s: String) -> SetupError {
        SetupError::Other(s)
    }
}

impl SetupError {
    /// Reports the problem in `p`: a template at its position, anything else at `pointer`.
    pub fn report(&self, pointer: &str, p: &mut Problems) {
        match self {
            SetupError::Template(f) => f.report(p),
            SetupError::Other(m) => p.error(pointer, codes::INVALID_VALUE, m.clone()),
        }
    }
}

impl Notifier for Box<dyn Notifier> {
    fn route(&self, alert: &Alert) -> Result<Vec<String>, String> {
        (**self).route(alert)
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
        (**self).send(n)
    }

    fn preview(&self, n: &Notification) -> Result<Vec<(String, String)>, String> {
        (**self).preview(n)
    }
}

/// Renders every template of `notifier` against a sample alert grouped like the alerts
/// the sink will receive (`group_by`: the paths of the detection stages upstream), for
/// `vigil validate`: a misspelt variable fails here, not at 3 a.m.
pub fn check_rendering(rendering: &dyn Rendering, group_by: &[String], p: &mut Problems) {
    let mut alert = sample_alert();
    if !group_by.is_empty() {
        let mut group = serde_json::Value::Object(serde_json::Map::new());
        for path in group_by {
            crate::event::insert_path(
                &mut group,
                path,
                serde_json::Value::String("example".into()),
            );
        }
        alert.group = group;
    }
    let n = sample_notification("check", vec![alert]);
    let cx = render::context(&n, crate::config::DEFAULT_PUBLIC_URL);
    let failures = rendering.templates().failures(&cx);
    if !failures.is_empty() {
        for f in &failures {
            f.report(p);
        }
        return;
    }
    if let Err(route) = rendering.route(&n.alerts[0]) {
        p.error("/to", codes::INVALID_VALUE, route);
    }
    if let Err(e) = rendering.preview(&n) {
        p.error("", codes::INVALID_VALUE, e);
    }
}

/// A notification of `alerts` for previews and `vigil send-test`.
pub fn sample_notification(sink: &str, alerts: Vec<Alert>) -> Notification {
    Notification {
        id: "00000000-0000-4000-8000-000000000000".into(),
        sink: sink.into(),
        route: Vec::new(),
        alerts,
        attempt: 1,
    }
}

/// A complete example alert (blocked SSH traffic from one address, with samples and a
/// top-N table): what `vigil send-test` sends and what templates are checked against.
pub fn sample_alert() -> Alert {
    let t = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    };
    let record = |dst: &str, port: u16, time: &str| {
        serde_json::value::to_raw_value(&serde_json::json!({
            "src": {"ip": "10.20.30.40"},
            "dst": {"ip": dst, "workload": {"hostname": "db-01", "labels": [
                {"key": "role", "value": "db"}, {"key": "env", "value": "prod"}]}},
            "service": {"port": port, "proto": 6},
            "policy_decision": "blocked",
            "num_connections": 12,
            "timestamp_range": {"first_detected": time, "last_detected": time},
        }))
        .unwrap_or_default()
    };
    let window = AlertWindow {
        start: t("2026-11-21T08:50:00Z"),
        end: t("2026-11-21T09:00:00Z"),
    };
    let mut alert = Alert {
        id: String::new(),
        status: AlertStatus::Firing,
        pipeline: "blocked-admin-ports".into(),
        stage: "burst".into(),
        severity: Severity::High,
        title: "Blocked admin-port traffic from 10.20.30.40".into(),
        summary: "36 blocked connections to admin ports in 10m (threshold 10).".into(),
        group: serde_json::json!({"src": {"ip": "10.20.30.40"}}),
        group_key: "src.ip=10.20.30.40".into(),
        value: 36.0,
        threshold: 10.0,
        unit: None,
        estimate: None,
        window,
        first_seen: window.end,
        last_seen: window.end,
        updates: 0,
        episode: false,
        samples: vec![
            Sample {
                time: t("2026-11-21T08:52:10Z"),
                source: "blocked-admin-ports.flows".into(),
                record: record("10.0.5.11", 22, "2026-11-21T08:52:10Z"),
            },
            Sample {
                time: t("2026-11-21T08:58:41Z"),
                source: "blocked-admin-ports.flows".into(),
                record: record("10.0.5.12", 3389, "2026-11-21T08:58:41Z"),
            },
        ],
        top: Some(TopTable {
            by: vec!["dst.ip".into(), "service.port".into()],
            measure: "num_connections".into(),
            window,
            rows: vec![
                TopRow {
                    key: vec!["10.0.5.11".into(), 22.into()],
                    value: 24.0,
                },
                TopRow {
                    key: vec!["10.0.5.12".into(), 3389.into()],
                    value: 12.0,
                },
            ],
            total: 36.0,
            keys: 2,
        }),
        fields: serde_json::Map::new(),
    };
    alert.id = Alert::make_id(&alert.pipeline, &alert.stage, &alert.group_key, &window);
    alert
}

/// The alert a delivering sink makes of a plain event (one that is not an alert): an
/// `info` alert titled after its source, carrying the event as its one sample.
pub fn alert_of_event(event: &crate::event::Event) -> Alert {
    let sample = Sample::of(event);
    let mut hash = sha2::Sha256::default();
    sha2::Digest::update(&mut hash, event.meta.source.as_bytes());
    sha2::Digest::update(&mut hash, sample.record.get().as_bytes());
    sha2::Digest::update(&mut hash, event.meta.time.to_rfc3339().as_bytes());
    let digest = sha2::Digest::finalize(hash);
    let (pipeline, stage) = event
        .meta
        .source
        .split_once('.')
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .unwrap_or_else(|| (event.meta.source.to_string(), String::new()));
    let summary = event
        .data()
        .get("event_type")
        .and_then(|v| v.as_str())
        .map(|t| format!("event_type {t}"))
        .unwrap_or_default();
    Alert {
        id: hex::encode(&digest[..16]),
        status: AlertStatus::Firing,
        title: format!("Event from {}", event.meta.source),
        summary,
        pipeline,
        stage,
        severity: Severity::Info,
        group: serde_json::Value::Object(serde_json::Map::new()),
        group_key: String::new(),
        value: 1.0,
        threshold: 1.0,
        unit: None,
        estimate: None,
        window: AlertWindow {
            start: event.meta.time,
            end: event.meta.time,
        },
        first_seen: event.meta.time,
        last_seen: event.meta.time,
        updates: 0,
        episode: false,
        samples: vec![sample],
        top: None,
        fields: serde_json::Map::new(),
    }
}
