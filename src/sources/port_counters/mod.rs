//! `port_counters`: bytes and packets per port and direction, counted by nftables (or
//! iptables) in a table vigil owns, as deltas per interval.

mod config;
mod counters;
mod source;
#[cfg(test)]
mod tests;

pub use config::{CounterMode, PortCountersConfig, Protocol};
pub use counters::NotAListing;
pub use source::PortCountersSource;
