//! The `pce_health` source's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::PceHealthSource;
use crate::diagnostic::Problems;
use crate::node::{NodeError, Source};
use crate::time::Duration;

/// Watches the PCE's health (`GET /api/v2/health`) and emits an event when it changes.
///
/// The `status` in the body decides, not the HTTP code (a PCE answers 200 while degraded):
/// the worst cluster status (`normal` < `warning` < `critical`) is the PCE's. A PCE that
/// refuses the API key is `unauthorized` (401: wrong or deleted key or secret) or
/// `forbidden` (403: the key's role or the org); one that cannot be reached (after the
/// client's retries) is `unreachable`. The first check emits
/// the starting status; after that an event is emitted when the status changes, and again
/// every `repeat` while it stays the same (if set).
///
/// Event fields: `source_type` (`pce_health`), `connection`, `status`, `previous_status`
/// (null on the first event), `changed`, `timestamp`, `clusters` (fqdn, type, status,
/// notifications of each cluster), `error` (why it is unauthorized, forbidden or
/// unreachable) and `http_status` (the PCE's answer then, if it answered).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct PceHealthConfig {
    /// The PCE to watch: a name under `connections: pce:` in the settings.
    pub connection: String,
    /// How often to ask. Default: `1m`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Emit the status again after this long without a change (a reminder while
    /// degraded). Default: only on changes.
    #[serde(default)]
    pub repeat: Option<Duration>,
}

fn example() -> serde_json::Value {
    serde_json::json!({"connection": "prod", "interval": "1m", "repeat": "1h"})
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

impl PceHealthConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/interval", "interval", &self.interval);
        if let Some(r) = &self.repeat {
            problems.positive_duration("/repeat", "repeat", r);
        }
    }

    /// Builds the running source.
    pub fn build(&self, pce: &crate::sources::PceServices) -> Result<Box<dyn Source>, NodeError> {
        Ok(Box::new(PceHealthSource::new(
            self.clone(),
            pce.client().clone(),
        )))
    }
}
