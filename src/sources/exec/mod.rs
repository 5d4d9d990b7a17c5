//! `exec`: JSON lines from the standard output of a command it runs (and runs again).

mod config;
mod source;

pub use config::{ExecError, ExecSourceConfig, Restart};
pub use source::ExecSource;
