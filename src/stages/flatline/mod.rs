//! `flatline`: alerts when a source, or a key, goes quiet (and when it comes back).

mod config;
mod stage;

pub use config::FlatlineConfig;
pub use stage::FlatlineStage;
