//! What the runtime reports about the nodes it runs (restarts, events failed for them,
//! states not saved), and what sinks in general report.

use std::fmt::Display;

use super::{DropReason, ErrorReason, InternalEvent};
use crate::node::NodeCounters;

/// A stage's state larger than `snapshot_max_bytes`: not saved, and the one saved before
/// removed, so a restart starts the stage empty.
#[derive(Debug)]
pub struct SnapshotTooLarge<'a> {
    /// The stage, `pipeline.node`.
    pub node: &'a str,
    /// `snapshot_max_bytes`.
    pub max: u64,
}

impl InternalEvent for SnapshotTooLarge<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(node = %self.node, max = self.max, "the stage's state is larger than snapshot_max_bytes: not saved, and a restart starts it empty (bound its keys with max_keys)");
        counters.add_dropped(DropReason::SnapshotTooLarge, 1);
    }
}

/// A node failed and is started again after `wait`: counted as a restart.
#[derive(Debug)]
pub struct NodeRestarting<'a> {
    /// The node.
    pub node: &'a str,
    /// Why it failed.
    pub error: &'a str,
    /// Its failures within `restarts.within`, this one included.
    pub failures: u32,
    /// The wait before it starts again.
    pub wait: std::time::Duration,
}

impl InternalEvent for NodeRestarting<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(
            node = %self.node,
            error = self.error,
            failures = self.failures,
            wait = %humantime::format_duration(self.wait),
            "node failed; restarting it"
        );
        counters.add_restart();
    }
}

/// Why a node failed events it had received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedBecause {
    /// The stage panicked while handling their batch (the failure itself is logged by the
    /// node's supervisor).
    StagePanicked,
    /// The node failed too often and stays down: what still arrives is failed.
    NodeGaveUp,
    /// Every downstream of the stage has stopped (logged once when it happened).
    DownstreamGone,
    /// The node panicked while holding them (the failure itself is logged by the node's
    /// supervisor).
    NodePanicked,
}

impl FailedBecause {
    fn as_str(self) -> &'static str {
        match self {
            FailedBecause::StagePanicked => "the stage panicked while handling their batch",
            FailedBecause::NodeGaveUp => "the node failed too often and stays down",
            FailedBecause::DownstreamGone => "every downstream of the stage has stopped",
            FailedBecause::NodePanicked => "the node panicked while holding them",
        }
    }
}

/// Events a node received and failed (their source, when it waits on them, reads them
/// again): counted as errors, logged at `debug` (once per batch), since the cause is
/// logged where it happened.
#[derive(Debug)]
pub struct EventsFailed<'a> {
    /// The node.
    pub node: &'a str,
    /// How many.
    pub events: usize,
    /// Why.
    pub why: FailedBecause,
}

impl InternalEvent for EventsFailed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(node = %self.node, events = self.events, "events failed: {}", self.why.as_str());
        counters.add_errors(ErrorReason::EventsFailed, self.events as u64);
    }
}

/// A sink could not encode an event to write it: the event is failed, counted as an
/// error. Logged at `debug`: it can happen for every event.
pub struct EventNotEncoded<'a> {
    /// The sink.
    pub sink: &'a str,
    /// Why.
    pub error: &'a dyn Display,
}

impl InternalEvent for EventNotEncoded<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(sink = %self.sink, error = %self.error, "cannot encode the event; not written");
        counters.add_errors(ErrorReason::NotEncoded, 1);
    }
}
