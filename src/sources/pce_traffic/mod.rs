//! `pce_traffic`: traffic flows from the PCE's async Explorer queries, one query per
//! connection per cycle shared by every pipeline reading that connection.

mod config;
mod hub;
mod ledger;
pub mod narrow;
mod source;

pub use config::{Decision, PceTrafficConfig};
pub use hub::{TrafficHub, enrich_flow};
pub use crate::pce::names::{IpListEntry, NameCache, Names};
pub use source::PceTrafficSource;

use std::sync::Arc;

use crate::runtime::Connections;

/// The name cache of PCE connection `connection` for this run (shared by its traffic hub,
/// which refreshes it, and by filters resolving `ip_list:Name`).
pub fn name_cache(connections: &Connections, connection: &str) -> Option<Arc<NameCache>> {
    connections.shared(&format!("pce_names:{connection}"), NameCache::default)
}

/// The traffic counters of one PCE connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Slices queried and handed on.
    pub slices: u64,
    /// Queries that failed (retried next cycle).
    pub failed_queries: u64,
    /// Results truncated by `max_results`.
    pub truncated: u64,
    /// Rows counted whole (flows not seen before).
    pub rows_new: u64,
    /// Rows of flows seen before, counted as their increase.
    pub rows_continued: u64,
    /// Rows already counted, not handed on.
    pub rows_repeated: u64,
    /// Flows forgotten after `flow_memory` without a sighting.
    pub flows_expired: u64,
    /// Flows forgotten because `max_flows` were remembered.
    pub flows_evicted: u64,
}

/// The traffic counters of PCE connection `connection`, if a `pce_traffic` source reads
/// it.
pub fn query_counters(connections: &Connections, connection: &str) -> Option<TrafficCounters> {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = connections.existing::<hub::TrafficHub>(&format!("pce_traffic:{connection}"))?;
    Some(TrafficCounters {
        slices: hub.slices_done.load(Relaxed),
        failed_queries: hub.failed_queries.load(Relaxed),
        truncated: hub.truncated_slices.load(Relaxed),
        rows_new: hub.rows_new.load(Relaxed),
        rows_continued: hub.rows_continued.load(Relaxed),
        rows_repeated: hub.rows_repeated.load(Relaxed),
        flows_expired: hub.flows_expired.load(Relaxed),
        flows_evicted: hub.flows_evicted.load(Relaxed),
    })
}

/// The name caches of every PCE connection, by connection name order.
pub fn name_caches(connections: &Connections) -> Vec<Arc<NameCache>> {
    let mut names: Vec<&str> = connections.pce_names().collect();
    names.sort_unstable();
    names
        .into_iter()
        .filter_map(|c| name_cache(connections, c))
        .collect()
}
