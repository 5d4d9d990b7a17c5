//! `pce_traffic`: traffic flows from the PCE's async Explorer queries, one query per
//! connection per cycle shared by every pipeline reading that connection.

mod config;
mod hub;
mod names;
mod source;

pub use config::{Decision, PceTrafficConfig};
pub use hub::{TrafficHub, enrich_flow};
pub use names::{IpListEntry, NameCache, Names};
pub use source::PceTrafficSource;

use std::sync::Arc;

use crate::runtime::Connections;

/// The name cache of PCE connection `connection` for this run (shared by its traffic hub,
/// which refreshes it, and by filters resolving `ip_list:Name`).
pub fn name_cache(connections: &Connections, connection: &str) -> Option<Arc<NameCache>> {
    connections.shared(&format!("pce_names:{connection}"), NameCache::default)
}

/// The traffic-query counters of PCE connection `connection` — (slices queried, queries
/// that failed, results truncated by `max_results`) — if a `pce_traffic` source reads it.
pub fn query_counters(connections: &Connections, connection: &str) -> Option<(u64, u64, u64)> {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = connections.existing::<hub::TrafficHub>(&format!("pce_traffic:{connection}"))?;
    Some((
        hub.slices_done.load(Relaxed),
        hub.failed_queries.load(Relaxed),
        hub.truncated_slices.load(Relaxed),
    ))
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
