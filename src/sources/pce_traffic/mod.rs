//! `pce_traffic`: traffic flows from the PCE's async Explorer queries, one query per
//! connection per cycle shared by every pipeline reading that connection.

mod config;
mod hub;
mod ledger;
pub mod narrow;
mod route;
pub(crate) mod slice;
mod source;

pub use crate::pce::names::{IpListEntry, NameCache, Names};
pub use config::{Decision, PceTrafficConfig};
pub use hub::{TrafficHub, enrich_flow};
pub(crate) use ledger::Ledger;
pub(crate) use route::Route;
pub use source::PceTrafficSource;

/// The traffic counters of one PCE connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Slices queried and handed on.
    pub slices: u64,
    /// Queries that failed (their slice is retried a minute later, backing off).
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
