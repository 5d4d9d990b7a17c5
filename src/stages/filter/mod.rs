//! `filter`: keeps the events that match declarative conditions on field paths.

mod config;
mod matcher;

pub use config::{FilterConfig, Literal, Matcher, Operators, Conditions, Exclude};
pub use matcher::{CompiledFilter, FilterStage};
