//! `filter`: keeps the events that match declarative conditions on field paths.

mod config;
mod matcher;

pub use config::{Conditions, Exclude, FilterConfig, Literal, Matcher, Operators};
pub use matcher::{CompiledFilter, FilterStage, IpListWatch, WhereExpr};
