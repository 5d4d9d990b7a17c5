//! `script`: runs an analyst's Rhai script on every event; and the sandboxed engine that
//! `filter`'s `where:` shares ([`sandbox`]).

mod config;
pub mod sandbox;
mod stage;

pub use config::{ScriptAlertConfig, ScriptConfig};
pub use stage::ScriptStage;

#[cfg(test)]
mod tests;
