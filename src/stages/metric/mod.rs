//! `metric`: an aggregate (`avg`, `min`, `max`, `sum`, a percentile) of a numeric field
//! per group key over a sliding event-time window, alerting while it is outside bounds.

mod config;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{Aggregate, MetricConfig};
pub use stage::MetricStage;
