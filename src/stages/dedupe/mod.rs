//! `dedupe`: drops repeats of an event or alert within a window of event time.

mod config;
mod stage;

pub use config::DedupeConfig;
pub use stage::DedupeStage;
