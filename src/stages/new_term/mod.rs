//! `new_term`: alerts the first time a value of a field (or a tuple of fields) is seen
//! for a group key, after a learn period; values can be warmed up from a file of past
//! records and forgotten after a while.

mod config;
mod stage;
mod terms;
#[cfg(test)]
mod tests;
mod warm_up;

pub use config::NewTermConfig;
pub use stage::{Counts, NewTermStage, WarmUpSummary};
pub use warm_up::{HistoryFeed, HistoryKind, HistoryMsg, PceWarmUp, WarmUpConfig, WarmUpError};
