//! `top_n`: the biggest contributors (by count or sum) to an alert's window, or to each
//! window of its own.

mod config;
mod stage;

pub use config::TopNConfig;
pub use stage::TopNStage;
