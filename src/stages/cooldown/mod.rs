//! `cooldown`: realert per key — after one passes, the same key is quiet for a period.

mod config;
mod stage;

pub use config::CooldownConfig;
pub use stage::CooldownStage;
