//! `bandwidth`: bytes per window (`volume`, MiB) or current bandwidth (`rate`, Mbps) of
//! traffic flows per group key, alerting at a threshold.

mod config;

pub mod measure;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{BandwidthConfig, Direction, Mode};
pub use stage::{BandwidthStage, MBPS, MIB, Skipped};
