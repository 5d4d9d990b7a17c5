//! The `pce_events` source's configuration.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

use super::source::PceEventsSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Source};
use crate::pce::client::MAX_EVENT_RESULTS;
use crate::time::Duration;

/// Reads the PCE's audit events (`GET /orgs/{org}/events`) with a persisted watermark:
/// no gaps, no duplicates, late-indexed events caught by re-reading an overlap.
///
/// Each event is the PCE's JSON, unchanged: filter on `event_type`, `status`, `severity`,
/// `created_by.user.username`, `action.src_ip`, `notifications.notification_type`, ...
/// Failed logins are `user.sign_in` / `user.login` with `status: failure` and a
/// `user.login_failed` notification.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct PceEventsConfig {
    /// The PCE to read: a name under `connections: pce:` in the settings.
    pub connection: String,
    /// How often to ask. Default: `1m`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Only these event types (asked of the PCE, one query per type), e.g.
    /// `agent.tampering`. Default: every type.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Only events of this severity (asked of the PCE): `info`, `warning` or `err`.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Only events with this status (asked of the PCE): `success` or `failure`.
    #[serde(default)]
    pub status: Option<Status>,
    /// How far behind the watermark each cycle re-reads, to catch events the PCE indexes
    /// late (already-seen events are dropped by href). Default: `5m`.
    #[serde(default = "default_overlap")]
    pub overlap: Duration,
    /// Where the first run starts: `now` (default) or a lookback such as `24h`. Ignored
    /// once a checkpoint exists.
    #[serde(default)]
    pub start_at: StartAt,
    /// Events per request (the page size), 1 to 10000. A full page makes the source
    /// narrow the range and ask again. Default: 1000.
    #[serde(default = "default_max_results")]
    pub max_results: u32,
}

/// An event severity the PCE can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// `info`.
    Info,
    /// `warning`.
    Warning,
    /// `err`.
    Err,
}

impl Severity {
    /// The PCE's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Err => "err",
        }
    }
}

/// An event status the PCE can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// `success`.
    Success,
    /// `failure`.
    Failure,
}

impl Status {
    /// The PCE's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

/// Where a source without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// From the moment it starts.
    #[default]
    Now,
    /// This far back.
    Lookback(Duration),
}

impl<'de> Deserialize<'de> for StartAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "now" {
            return Ok(StartAt::Now);
        }
        serde_json::from_value::<Duration>(serde_json::Value::String(text.clone()))
            .map(StartAt::Lookback)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "start_at `{text}` is neither `now` nor a lookback duration like `24h`: {e}"
                ))
            })
    }
}

impl JsonSchema for StartAt {
    fn schema_name() -> Cow<'static, str> {
        "StartAt".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "`now`, or a lookback duration such as `24h` (a number and a unit: ms, s, m, h, d).",
            "examples": ["now", "24h"]
        })
    }
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "connection": "prod",
        "interval": "1m",
        "event_types": ["agent.tampering", "user.sign_in", "user.login"],
        "overlap": "5m",
        "start_at": "24h",
        "max_results": 1000
    })
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_overlap() -> Duration {
    Duration::from_secs(300)
}

fn default_max_results() -> u32 {
    1000
}

impl PceEventsConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/interval", "interval", &self.interval);
        problems.positive_duration("/overlap", "overlap", &self.overlap);
        if let StartAt::Lookback(d) = &self.start_at {
            problems.positive_duration("/start_at", "start_at", d);
        }
        if self.max_results == 0 || self.max_results > MAX_EVENT_RESULTS {
            problems.error(
                "/max_results",
                codes::INVALID_VALUE,
                format!(
                    "max_results must be between 1 and {MAX_EVENT_RESULTS}, not {}",
                    self.max_results
                ),
            );
        }
        if let Some(types) = &self.event_types {
            if types.is_empty() {
                problems.error(
                    "/event_types",
                    codes::INVALID_VALUE,
                    "event_types is empty: leave it out to read every type",
                );
            }
            for (i, t) in types.iter().enumerate() {
                if t.trim().is_empty() {
                    problems.error(
                        format!("/event_types/{i}"),
                        codes::INVALID_VALUE,
                        "an event type is empty",
                    );
                }
            }
        }
    }

    /// Builds the running source.
    pub fn build(
        &self,
        cx: &BuildContext,
        pce: &crate::sources::PceServices,
    ) -> Result<Box<dyn Source>, NodeError> {
        Ok(Box::new(PceEventsSource::new(
            self.clone(),
            pce.client().clone(),
            cx.store.clone(),
            &cx.state_dir,
            cx.rejected_max_bytes,
            cx.id.clone(),
        )))
    }
}
