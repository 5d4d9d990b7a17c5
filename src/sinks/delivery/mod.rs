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
//!   notification grouping: `group_by`, `group_wait`, `group_interval`,
//!   `repeat_interval`, `repeat_backoff`, `send_resolved`; `retry`, `timeout`).
//! - [`dispatch`]: which alerts become a notification, with which others, and when
//!   (Alertmanager's aggregation groups); [`inhibit`]: alerts muted while others fire.
//! - [`render`]: handlebars templates (strict), the values they see, the built-in ones.
//! - [`retry`]: backoff with jitter and how HTTP answers are classified.
//! - [`runner`]: the sink task and its worker.

pub mod dispatch;
pub mod http;
pub mod inhibit;
pub mod render;
pub mod retry;
pub mod runner;

use futures::future::BoxFuture;

use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::{Alert, AlertStatus, AlertWindow, Sample, Severity, TopRow, TopTable};
use crate::time::Duration;

pub use render::Templates;
pub use retry::RetryConfig;
pub use runner::DeliverySink;

/// Where the dashboard is when the settings do not say (`public_url`): links in
/// notifications point there.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:5001";

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
    pub group_by: Vec<String>,
    /// See the field of the same name on the sinks.
    pub group_interval: Duration,
    /// See the field of the same name on the sinks.
    pub repeat_interval: Duration,
    /// See the field of the same name on the sinks.
    pub repeat_backoff: f64,
    /// See the field of the same name on the sinks.
    pub max_repeat_interval: Duration,
    /// See the field of the same name on the sinks.
    pub send_resolved: bool,
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
    (send_resolved: $send_resolved:literal; $(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Alerts below this severity are not sent by this sink (`info`, `low`,
            /// `medium`, `high`, `critical`). Default: `info` (everything).
            #[serde(default = "crate::sinks::delivery::default_min_severity")]
            pub min_severity: crate::event::Severity,
            /// After an alert of a rule (pipeline, stage) and group is taken, further new
            /// alerts of the same rule and group are held back for this long (updates and
            /// resolutions of the one taken still go on). Kept across restarts. Prefer
            /// `repeat_interval` to space out reminders. Default: none.
            #[serde(default)]
            pub cooldown: Option<crate::time::Duration>,
            /// Alert field paths whose values make a notification group (with the
            /// recipients): alerts of one group go out together (`[pipeline,
            /// group.src.ip]`). Default: `[pipeline, stage]` (one group per rule).
            #[serde(default = "crate::sinks::delivery::default_group_by")]
            pub group_by: Vec<String>,
            /// How long a new group's first notification waits, so alerts that arrive
            /// together go out together. Default: `0s` (at once).
            #[serde(default = "crate::sinks::delivery::default_group_wait")]
            pub group_wait: crate::time::Duration,
            /// After its first notification, how often a group is looked at again: alerts
            /// that are new since its last notification (or resolved, with
            /// `send_resolved`) go out then, together. Default: `5m`.
            #[serde(default = "crate::sinks::delivery::default_group_interval")]
            pub group_interval: crate::time::Duration,
            /// When nothing changed in a group but alerts still fire, a reminder goes out
            /// once its last notification is this old (at the group's next look).
            /// Default: `4h`.
            #[serde(default = "crate::sinks::delivery::default_repeat_interval")]
            pub repeat_interval: crate::time::Duration,
            /// Each further reminder in a row waits this many times longer than the one
            /// before (`2`: 4h, 8h, 16h...), up to `max_repeat_interval`. Default: `1`
            /// (always `repeat_interval`).
            #[serde(default = "crate::sinks::delivery::default_repeat_backoff")]
            pub repeat_backoff: f64,
            /// The longest wait between reminders with `repeat_backoff`. Default: `24h`.
            #[serde(default = "crate::sinks::delivery::default_max_repeat_interval")]
            pub max_repeat_interval: crate::time::Duration,
            /// Whether alerts that resolved are notified (once, in their group's next
            /// notification). Default: `false` for mail and LINE, `true` for webhook, as
            /// in Alertmanager.
            #[serde(default = $send_resolved)]
            pub send_resolved: bool,
            /// How failed sends are retried.
            #[serde(default)]
            pub retry: crate::sinks::delivery::RetryConfig,
            /// How long one attempt may take before it counts as failed (and is
            /// retried). Default: `30s`.
            #[serde(default = "crate::sinks::delivery::default_timeout")]
            pub timeout: crate::time::Duration,
            /// At shutdown, how long to keep sending what is due before leaving the rest
            /// in the outbox for the next start, counted from the stop (a send under way
            /// then counts, and one started in time finishes). Default: `30s`.
            #[serde(default = "crate::sinks::delivery::default_drain_timeout")]
            pub drain_timeout: crate::time::Duration,
        }

        impl $name {
            /// The common delivery options.
            pub fn delivery(&self) -> crate::sinks::delivery::DeliveryConfig {
                crate::sinks::delivery::DeliveryConfig {
                    min_severity: self.min_severity,
                    cooldown: self.cooldown,
                    group_wait: self.group_wait,
                    group_by: self.group_by.clone(),
                    group_interval: self.group_interval,
                    repeat_interval: self.repeat_interval,
                    repeat_backoff: self.repeat_backoff,
                    max_repeat_interval: self.max_repeat_interval,
                    send_resolved: self.send_resolved,
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
            group_by: default_group_by(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            repeat_backoff: default_repeat_backoff(),
            max_repeat_interval: default_max_repeat_interval(),
            send_resolved: false,
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
pub(crate) fn default_group_by() -> Vec<String> {
    vec!["pipeline".into(), "stage".into()]
}
pub(crate) fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
pub(crate) fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
pub(crate) fn default_repeat_backoff() -> f64 {
    1.0
}
pub(crate) fn default_max_repeat_interval() -> Duration {
    Duration::from_secs(24 * 3600)
}
pub(crate) fn default_false() -> bool {
    false
}
pub(crate) fn default_true() -> bool {
    true
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
        p.positive_duration("/group_interval", "group_interval", &self.group_interval);
        p.positive_duration("/repeat_interval", "repeat_interval", &self.repeat_interval);
        p.positive_duration(
            "/max_repeat_interval",
            "max_repeat_interval",
            &self.max_repeat_interval,
        );
        if !(self.repeat_backoff.is_finite() && self.repeat_backoff >= 1.0) {
            p.error(
                "/repeat_backoff",
                codes::INVALID_VALUE,
                "repeat_backoff is a factor of 1 or more (`2` doubles each wait)",
            );
        }
        for (i, path) in self.group_by.iter().enumerate() {
            if let Err(e) = crate::event::FieldPath::parse(path) {
                p.error(
                    format!("/group_by/{i}"),
                    codes::INVALID_VALUE,
                    e.to_string(),
                );
            }
        }
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
    /// The alerts (at least one): new ones first, then those still firing, then those
    /// resolved since the group's last notification.
    pub alerts: Vec<Alert>,
    /// How each alert reads, in the order of `alerts`.
    pub changes: Vec<dispatch::Change>,
    /// The notification group's `group_by` values.
    pub group: serde_json::Value,
    /// Nothing changed since the group's last notification: a reminder.
    pub reminder: bool,
    /// Alerts of the group left out of this message (too many), by change.
    pub omitted: dispatch::Omitted,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

impl Notification {
    /// How alert `i` reads (`new` for messages stored before notification grouping).
    pub fn change(&self, i: usize) -> dispatch::Change {
        self.changes
            .get(i)
            .copied()
            .unwrap_or(dispatch::Change::New)
    }
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

    /// What would go over the wire for `n` as one file, with its extension (a mail's
    /// `.eml`), for `vigil replay --out`; `None` for sinks whose preview is their body.
    fn wire(&self, _n: &Notification) -> Result<Option<(&'static str, Vec<u8>)>, String> {
        Ok(None)
    }
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
    /// A template set whose files would be outside the pipeline file's directory.
    #[error("{0}")]
    OutsideDir(String),
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
    /// Reports the problem in `p`: a template at its position, a template set outside
    /// the directory at `template`, anything else at `pointer`.
    pub fn report(&self, pointer: &str, p: &mut Problems) {
        match self {
            SetupError::Template(f) => f.report(p),
            SetupError::OutsideDir(m) => p.error("/template", codes::OUTSIDE_DIR, m.clone()),
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
    let cx = render::context(&n, crate::sinks::delivery::DEFAULT_PUBLIC_URL);
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
    let changes = alerts
        .iter()
        .map(|a| match a.status {
            AlertStatus::Firing => dispatch::Change::New,
            AlertStatus::Resolved => dispatch::Change::Resolved,
        })
        .collect();
    Notification {
        id: "00000000-0000-4000-8000-000000000000".into(),
        sink: sink.into(),
        route: Vec::new(),
        changes,
        group: serde_json::json!({"pipeline": "blocked-admin-ports", "stage": "burst"}),
        reminder: false,
        omitted: dispatch::Omitted::default(),
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
        first_seen: t("2026-11-21T08:52:10Z"),
        last_seen: window.end,
        updates: 4,
        episode: true,
        samples: vec![
            Sample {
                time: t("2026-11-21T08:52:10Z"),
                source: "blocked-admin-ports.flows".into(),
                record: record("10.0.5.11", 22, "2026-11-21T08:52:10Z").into(),
            },
            Sample {
                time: t("2026-11-21T08:58:41Z"),
                source: "blocked-admin-ports.flows".into(),
                record: record("10.0.5.12", 3389, "2026-11-21T08:58:41Z").into(),
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

impl DeliveryConfig {
    /// The notification policy of these options.
    pub fn policy(&self) -> dispatch::Policy {
        dispatch::Policy {
            group_by: self
                .group_by
                .iter()
                .filter_map(|p| crate::event::FieldPath::parse(p).ok())
                .collect(),
            group_wait: self.group_wait.span(),
            group_interval: self.group_interval.span(),
            repeat_interval: self.repeat_interval.span(),
            repeat_backoff: self.repeat_backoff,
            max_repeat_interval: self.max_repeat_interval.span(),
            send_resolved: self.send_resolved,
            ..dispatch::Policy::default()
        }
    }
}
