//! A node's failures: it is restarted after a growing wait, and after too many failures
//! within the settings' `restarts.within` its pipeline is stopped. Each failure raises
//! `vigil.node_failed` on the `internal` source; the node's state is shown by the API,
//! `/metrics`, `/readyz` and the dashboard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::RestartsConfig;
use crate::event::{Alert, AlertStatus, AlertWindow, Severity, Timestamp};
use crate::node::NodeCounters;
use crate::node::internal_event::{InternalEvent, NodeRestarting};
use crate::time::SharedClock;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Running (or done, for a finite source).
    Running,
    /// Failed; waiting to be started again.
    Restarting,
    /// Failed too often: stopped, with its pipeline.
    Failed,
}

impl NodeState {
    /// `running`, `restarting` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Running => "running",
            NodeState::Restarting => "restarting",
            NodeState::Failed => "failed",
        }
    }

    /// Every state, for gauges that list them all.
    pub const ALL: [NodeState; 3] = [NodeState::Running, NodeState::Restarting, NodeState::Failed];
}

/// A node's state as its supervisor keeps it and the API reads it.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Health {
    /// The node's state.
    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Acquire) {
            0 => NodeState::Running,
            1 => NodeState::Restarting,
            _ => NodeState::Failed,
        }
    }

    fn set(&self, state: NodeState) {
        let v = match state {
            NodeState::Running => 0,
            NodeState::Restarting => 1,
            NodeState::Failed => 2,
        };
        self.state.store(v, Ordering::Release);
    }

    /// Why it failed last, if it ever did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a supervisor decided about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start the node again after this wait.
    Restart(std::time::Duration),
    /// Too many failures: the node stays down and its pipeline was told to stop.
    GiveUp,
}

/// Watches one node's failures (see the module documentation).
pub(crate) struct Supervisor {
    id: Arc<str>,
    pipeline: Arc<str>,
    policy: RestartsConfig,
    health: Arc<Health>,
    /// The node's counters, where its restarts are counted.
    counters: Arc<NodeCounters>,
    failures: VecDeque<Timestamp>,
    clock: SharedClock,
    internal: crate::sources::internal::InternalAlerts,
    /// Stops every source of the node's pipeline.
    pipeline_stop: CancellationToken,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: Arc<str>,
        pipeline: Arc<str>,
        policy: RestartsConfig,
        health: Arc<Health>,
        counters: Arc<NodeCounters>,
        clock: SharedClock,
        internal: crate::sources::internal::InternalAlerts,
        pipeline_stop: CancellationToken,
    ) -> Supervisor {
        Supervisor {
            id,
            pipeline,
            policy,
            health,
            counters,
            failures: VecDeque::new(),
            clock,
            internal,
            pipeline_stop,
        }
    }

    /// The clock restarts wait on.
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The node's id, `pipeline.node`.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The node is running (again).
    pub(crate) fn running(&self) {
        self.health.set(NodeState::Running);
    }

    /// The node failed with `error`: logs and counts it, raises `vigil.node_failed`, and
    /// says whether to restart it (after how long) or give up. Giving up stops the
    /// pipeline's sources, so the rest of the pipeline drains and ends.
    pub(crate) fn failed(&mut self, error: &str) -> Verdict {
        let now = self.clock.now();
        self.failures.push_back(now);
        let since = now - self.policy.within.span();
        while self.failures.front().is_some_and(|t| *t <= since) {
            self.failures.pop_front();
        }
        *self
            .health
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        let count = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        let verdict = if count > self.policy.max_failures {
            self.health.set(NodeState::Failed);
            self.pipeline_stop.cancel();
            tracing::error!(
                node = %self.id,
                pipeline = %self.pipeline,
                error,
                failures = count,
                "node failed too often; its pipeline is stopped (the others run on)"
            );
            Verdict::GiveUp
        } else {
            self.health.set(NodeState::Restarting);
            let wait = backoff(&self.policy, count);
            NodeRestarting {
                node: &self.id,
                error,
                failures: count,
                wait,
            }
            .emit(&self.counters);
            Verdict::Restart(wait)
        };
        // Subscribers may be none: nobody asked to be told.
        self.internal.publish(node_failed_alert(
            now,
            &self.id,
            &self.pipeline,
            error,
            count,
            &self.policy,
            verdict,
        ));
        verdict
    }
}

/// Waits `d` on `clock`; always `true` (see [`super::topology`]'s restarts).
pub(crate) async fn wait_on(clock: &SharedClock, d: std::time::Duration) -> bool {
    let until = crate::time::later(clock.now(), d);
    clock.sleep_until(until).await;
    true
}

/// The wait before the restart that follows the `count`-th failure in a row.
fn backoff(policy: &RestartsConfig, count: u32) -> std::time::Duration {
    let doublings = count.saturating_sub(1).min(30);
    policy
        .backoff
        .get()
        .saturating_mul(1u32 << doublings)
        .min(policy.max_backoff.get().max(policy.backoff.get()))
}

/// The `vigil.node_failed` alert for one failure.
fn node_failed_alert(
    at: Timestamp,
    id: &str,
    pipeline: &str,
    error: &str,
    count: u32,
    policy: &RestartsConfig,
    verdict: Verdict,
) -> Alert {
    let window = AlertWindow { start: at, end: at };
    let group_key = format!("node={id}");
    let (severity, title) = match verdict {
        Verdict::Restart(wait) => (
            Severity::High,
            format!(
                "vigil: node {id} failed ({count} of {} allowed within {}); restarting in {}",
                policy.max_failures,
                policy.within,
                humantime::format_duration(wait)
            ),
        ),
        Verdict::GiveUp => (
            Severity::Critical,
            format!(
                "vigil: node {id} failed {count} times within {}; pipeline {pipeline} is stopped",
                policy.within
            ),
        ),
    };
    let state = match verdict {
        Verdict::Restart(_) => NodeState::Restarting,
        Verdict::GiveUp => NodeState::Failed,
    };
    let mut fields = serde_json::Map::new();
    fields.insert("node".into(), id.into());
    fields.insert("node_pipeline".into(), pipeline.into());
    fields.insert("state".into(), state.as_str().into());
    fields.insert("failures".into(), count.into());
    fields.insert("error".into(), error.into());
    Alert {
        id: Alert::make_id(
            "vigil",
            "node_failed",
            &format!("{group_key},failure={count}"),
            &window,
        ),
        status: AlertStatus::Firing,
        pipeline: "vigil".into(),
        stage: "node_failed".into(),
        severity,
        title,
        summary: error.to_string(),
        group: serde_json::json!({ "node": id }),
        group_key,
        value: f64::from(count),
        threshold: f64::from(policy.max_failures),
        unit: None,
        estimate: None,
        window,
        first_seen: at,
        last_seen: at,
        updates: 0,
        episode: false,
        samples: Vec::new(),
        top: None,
        fields,
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let text = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic".into());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::VirtualClock;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    fn policy() -> RestartsConfig {
        RestartsConfig {
            max_failures: 3,
            within: crate::time::Duration::from_secs(60),
            backoff: crate::time::Duration::from_secs(1),
            max_backoff: crate::time::Duration::from_secs(3),
        }
    }

    /// Waits double up to the cap; one failure past `max_failures` within `within` gives
    /// up and stops the pipeline; each failure is told on the internal feed.
    #[test]
    fn failures_restart_with_growing_waits_then_stop_the_pipeline() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let clock = VirtualClock::new(t0);
        let tx = crate::sources::internal::InternalAlerts::default();
        let mut rx = tx.subscribe();
        let stop = CancellationToken::new();
        let health = Arc::new(Health::default());
        let counters = Arc::new(NodeCounters::default());
        let mut s = Supervisor::new(
            "p.out".into(),
            "p".into(),
            policy(),
            health.clone(),
            counters.clone(),
            Arc::new(clock.clone()),
            tx,
            stop.clone(),
        );
        let waits: Vec<Verdict> = (0..4).map(|_| s.failed("disk full")).collect();
        assert_eq!(
            waits,
            [
                Verdict::Restart(Duration::from_secs(1)),
                Verdict::Restart(Duration::from_secs(2)),
                Verdict::Restart(Duration::from_secs(3)),
                Verdict::GiveUp
            ]
        );
        assert!(stop.is_cancelled());
        assert_eq!(health.state(), NodeState::Failed);
        assert_eq!(counters.restarts(), 3);
        assert_eq!(health.last_error().as_deref(), Some("disk full"));
        let alerts: Vec<Alert> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(alerts.len(), 4);
        assert!(alerts.iter().all(|a| a.stage == "node_failed"));
        assert_eq!(alerts[3].severity, Severity::Critical);
        assert_eq!(alerts[3].fields["state"], "failed");
        let ids: std::collections::HashSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), 4, "each failure is its own alert");
    }

    /// Failures older than `within` are forgotten: a node that fails now and then is
    /// restarted for ever.
    #[test]
    fn old_failures_are_forgotten() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let clock = VirtualClock::new(t0);
        let tx = crate::sources::internal::InternalAlerts::default();
        let stop = CancellationToken::new();
        let mut s = Supervisor::new(
            "p.out".into(),
            "p".into(),
            policy(),
            Arc::new(Health::default()),
            Arc::default(),
            Arc::new(clock.clone()),
            tx,
            stop.clone(),
        );
        for _ in 0..10 {
            assert_eq!(s.failed("x"), Verdict::Restart(Duration::from_secs(1)));
            clock.advance(Duration::from_secs(61));
        }
        assert!(!stop.is_cancelled());
    }
}
