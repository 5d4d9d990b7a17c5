//! The running graph: a tokio task per node (see [`crate::node`] for what a node is),
//! bounded channels between them, restarts, reloads and shutdown.
//!
//! Shutdown (SIGINT/SIGTERM, or the end of every finite source) stops the sources; each
//! node then finishes what it holds and tells its downstreams it is done, so every event
//! already read reaches the sinks before the process exits.

mod fault;
mod reload;
pub mod send_test;
mod services;
mod supervise;
mod topology;
mod watch;

pub use crate::node::{
    BuildContext, Closed, Input, Message, NodeCounters, NodeError, NodeResult, Output, SeenItems,
    Sink, Snapshot, Source, SourceContext, Stage, StateText, StreamItem, Tap,
};
pub use crate::time::{Clock, JumpClock, ScaledClock, SharedClock, VirtualClock, WallClock};
pub use reload::{ReloadDriver, ReloadOutcome};
pub use services::{ConnectionError, build_services, delivery_services};
pub use supervise::{Health, NodeState};
pub use topology::{
    BuildError, NodeReport, NodeStatus, ReloadError, ReloadReport, Reloader, RunReport,
    RunningTopology, start,
};
pub use watch::{ChangeBatch, PipelineWatcher, WatchError};
