//! `window_count`: counts events (or sums a field) per group key in a sliding event-time
//! window and raises an alert when the threshold is reached.

mod config;
mod stage;
#[cfg(test)]
mod tests;

pub use config::WindowCountConfig;
pub use stage::WindowCountStage;
