//! `internal`: vigil's own alerts (a reload that failed, a node that failed, ...), for
//! pipelines that deliver them like any other alert.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::diagnostic::Problems;
use crate::node::internal_event::{InternalAlertsMissed, InternalEvent};
use crate::node::{NodeError, NodeResult, Source, SourceContext};

/// vigil's own alerts: `vigil.reload_failed` when changed pipeline files do not validate
/// (the old pipelines keep running; the alert carries every error with its file:line:col),
/// and `vigil.node_failed` each time a node fails (its `fields` say which node, why, and
/// whether it is `restarting` or `failed`, its pipeline then stopped; see the settings'
/// `restarts`); `vigil.syslog_gap` when a PCE's numbered syslog messages went missing; and
/// `vigil.tetragon_dropping` when a `file` or `exec` source reading Tetragon's events sees
/// Tetragon throttle a cgroup or drop events to its rate limit. Wire it to a sink to be told.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct InternalSourceConfig {}

fn example() -> serde_json::Value {
    serde_json::json!({})
}

impl InternalSourceConfig {
    /// Structural checks (none).
    pub fn check(&self, _problems: &mut Problems) {}

    /// Builds the running source.
    pub fn build(&self, internal: &InternalAlerts) -> Result<Box<dyn Source>, NodeError> {
        Ok(Box::new(InternalSource {
            alerts: internal.subscribe(),
        }))
    }
}

/// Where vigil's own alerts are published for a run; every `internal` source subscribes.
#[derive(Debug, Clone)]
pub struct InternalAlerts(broadcast::Sender<crate::event::Alert>);

impl Default for InternalAlerts {
    fn default() -> Self {
        InternalAlerts(broadcast::channel(64).0)
    }
}

impl InternalAlerts {
    /// Publishes `alert` to every `internal` source (none listening is fine).
    pub fn publish(&self, alert: crate::event::Alert) {
        let _ = self.0.send(alert);
    }

    /// A new subscription: the alerts published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<crate::event::Alert> {
        self.0.subscribe()
    }
}

/// The running `internal` source.
pub struct InternalSource {
    alerts: broadcast::Receiver<crate::event::Alert>,
}

impl InternalSource {
    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        loop {
            match cx.wait(self.alerts.recv()).await {
                None => return Ok(()),
                Some(Ok(alert)) => {
                    let time = alert.window.end;
                    let event = crate::event::Event::from_alert(alert, cx.id.clone(), time);
                    if cx.send(vec![std::sync::Arc::new(event)]).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(broadcast::error::RecvError::Lagged(n))) => {
                    InternalAlertsMissed {
                        node: &cx.id,
                        missed: n,
                    }
                    .emit(cx.counters());
                }
                Some(Err(broadcast::error::RecvError::Closed)) => return Ok(()),
            }
        }
    }
}

impl Source for InternalSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
