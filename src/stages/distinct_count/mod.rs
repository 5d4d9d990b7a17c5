//! `distinct_count`: counts the distinct values of a field (or a tuple of fields) per
//! group key in a sliding event-time window — exactly up to `exact_up_to` values a key,
//! then with HyperLogLog sketches — and raises an alert when the count reaches the
//! threshold.

mod config;
mod exact;
mod key;
mod sketch;
mod stage;
#[cfg(test)]
mod tests;

pub use crate::stages::values::FieldSpec;
pub use config::DistinctCountConfig;
pub use sketch::STANDARD_ERROR;
pub use stage::DistinctCountStage;
