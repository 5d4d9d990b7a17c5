//! Source kinds. Each lives in its own folder; the list of kinds is in
//! [`crate::components`].

pub mod exec;
pub mod file;
pub mod host_metrics;
pub mod internal;
pub mod json_lines;
pub mod pce_events;
pub mod pce_health;
pub mod pce_history;
mod pce_services;
pub mod pce_traffic;
pub mod port_counters;
pub mod stdin;
pub mod syslog;
pub mod tetragon;

pub use pce_services::PceServices;

use std::sync::Arc;

use crate::event::Event;
use crate::node::SourceContext;

/// Sends events in batches of at most `cx.batch_size`. `false` when nobody listens any more.
pub(crate) async fn send_batches(cx: &mut SourceContext, events: Vec<Arc<Event>>) -> bool {
    if events.len() <= cx.batch_size {
        return cx.send(events).await.is_ok();
    }
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let batch: Vec<_> = events.by_ref().take(cx.batch_size).collect();
        if cx.send(batch).await.is_err() {
            return false;
        }
    }
    true
}
