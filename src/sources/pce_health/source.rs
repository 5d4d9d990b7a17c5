//! The running `pce_health` source.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::config::PceHealthConfig;
use crate::event::{Event, Timestamp};
use crate::node::{NodeResult, Source, SourceContext};
use crate::pce::client::PceClient;

/// The health of a PCE, worst first in severity order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthStatus {
    /// Every cluster says `normal`.
    Normal,
    /// A cluster says something vigil does not know.
    Unknown,
    /// A cluster says `warning`.
    Warning,
    /// A cluster says `critical`.
    Critical,
    /// The PCE answered 403: the API key may not read the health (its role, or the org).
    Forbidden,
    /// The PCE answered 401: it refuses the API key or secret (wrong, or deleted).
    Unauthorized,
    /// The PCE did not answer.
    Unreachable,
}

impl HealthStatus {
    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Normal => "normal",
            HealthStatus::Unknown => "unknown",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
            HealthStatus::Forbidden => "forbidden",
            HealthStatus::Unauthorized => "unauthorized",
            HealthStatus::Unreachable => "unreachable",
        }
    }

    /// The status of a failed health check: the PCE's refusal of the API key (401, 403)
    /// is told apart from a PCE that did not answer.
    pub fn of_error(error: &crate::pce::client::PceError) -> HealthStatus {
        match error.status() {
            Some(401) => HealthStatus::Unauthorized,
            Some(403) => HealthStatus::Forbidden,
            _ => HealthStatus::Unreachable,
        }
    }

    fn of_cluster(status: Option<&str>) -> HealthStatus {
        match status {
            Some("normal") => HealthStatus::Normal,
            Some("warning") => HealthStatus::Warning,
            Some("critical") => HealthStatus::Critical,
            _ => HealthStatus::Unknown,
        }
    }

    /// The PCE's status: the worst of its clusters' (an empty answer is `unknown`).
    pub fn of_body(clusters: &[Value]) -> HealthStatus {
        clusters
            .iter()
            .map(|c| HealthStatus::of_cluster(c.get("status").and_then(Value::as_str)))
            .max()
            .unwrap_or(HealthStatus::Unknown)
    }
}

/// What one health check found.
struct Observation {
    status: HealthStatus,
    clusters: Vec<Value>,
    error: Option<String>,
    /// The HTTP status of a refused or failed answer.
    http_status: Option<u16>,
}

/// Polls a PCE's health.
#[derive(Debug)]
pub struct PceHealthSource {
    cfg: PceHealthConfig,
    client: PceClient,
}

impl PceHealthSource {
    pub(super) fn new(cfg: PceHealthConfig, client: PceClient) -> Self {
        PceHealthSource { cfg, client }
    }

    async fn run_inner(self, cx: &mut SourceContext) -> NodeResult {
        let mut last: Option<(HealthStatus, Timestamp)> = None;
        loop {
            let Some(answer) = cx.wait(self.client.health()).await else {
                return Ok(());
            };
            let now = cx.now();
            let seen = match answer {
                Ok(clusters) => Observation {
                    status: HealthStatus::of_body(&clusters),
                    clusters,
                    error: None,
                    http_status: None,
                },
                Err(e) => Observation {
                    status: HealthStatus::of_error(&e),
                    clusters: Vec::new(),
                    error: Some(e.to_string()),
                    http_status: e.status(),
                },
            };
            let status = seen.status;
            let changed = last.is_none_or(|(s, _)| s != status);
            let reminder = self.cfg.repeat.is_some_and(|r| {
                last.is_some_and(|(_, at)| (now - at).to_std().unwrap_or_default() >= r.get())
            });
            if changed || reminder {
                if changed && status > HealthStatus::Normal {
                    tracing::warn!(source = %cx.id, status = status.as_str(), "PCE health changed");
                }
                let event = self.event(seen, last.map(|(s, _)| s), changed, now, &cx.id);
                if cx.send(vec![Arc::new(event)]).await.is_err() {
                    return Ok(());
                }
                last = Some((status, now));
            }
            if !cx.sleep(self.cfg.interval.get()).await {
                return Ok(());
            }
        }
    }

    fn event(
        &self,
        seen: Observation,
        previous: Option<HealthStatus>,
        changed: bool,
        now: Timestamp,
        id: &Arc<str>,
    ) -> Event {
        let Observation {
            status,
            clusters,
            error,
            http_status,
        } = seen;
        let clusters: Vec<Value> = clusters
            .iter()
            .map(|c| {
                json!({
                    "fqdn": c.get("fqdn"),
                    "type": c.get("type"),
                    "status": c.get("status"),
                    "notifications": c.get("notifications"),
                    "generated_at": c.get("generated_at"),
                })
            })
            .collect();
        let data = json!({
            "source_type": "pce_health",
            "connection": self.cfg.connection,
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "status": status.as_str(),
            "previous_status": previous.map(HealthStatus::as_str),
            "changed": changed,
            "clusters": clusters,
            "error": error,
            "http_status": http_status,
        });
        Event::from_record(data, id.clone(), now)
    }
}

impl Source for PceHealthSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_cluster_decides() {
        let body = |s: &[&str]| s.iter().map(|x| json!({"status": x})).collect::<Vec<_>>();
        assert_eq!(
            HealthStatus::of_body(&body(&["normal", "normal"])),
            HealthStatus::Normal
        );
        assert_eq!(
            HealthStatus::of_body(&body(&["normal", "warning"])),
            HealthStatus::Warning
        );
        assert_eq!(
            HealthStatus::of_body(&body(&["critical", "warning"])),
            HealthStatus::Critical
        );
        assert_eq!(
            HealthStatus::of_body(&body(&["normal", "weird"])),
            HealthStatus::Unknown
        );
        assert_eq!(HealthStatus::of_body(&[]), HealthStatus::Unknown);
    }
}
