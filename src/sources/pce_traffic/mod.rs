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
