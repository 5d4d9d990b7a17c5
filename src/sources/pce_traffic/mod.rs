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

/// The name caches of every PCE connection, by connection name order.
pub fn name_caches(connections: &Connections) -> Vec<Arc<NameCache>> {
    let mut names: Vec<&str> = connections.pce_names().collect();
    names.sort_unstable();
    names
        .into_iter()
        .filter_map(|c| name_cache(connections, c))
        .collect()
}
