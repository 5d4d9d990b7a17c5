//! `spike`: each key's current window against the window just before it, by count or
//! by the sum of a field, alerting while one is `ratio` times the other (up, down or
//! both); a drop to silence is seen from ticks.

mod config;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{Direction, Measure, SpikeConfig};
pub use stage::SpikeStage;
