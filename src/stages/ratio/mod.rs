//! `ratio`: the share of a key's events that match a condition (in the `filter` stage's
//! language) in a sliding window, alerting while it is at or over a threshold.

mod config;
mod stage;
#[cfg(test)]
mod tests;

pub use config::RatioConfig;
pub use stage::RatioStage;
