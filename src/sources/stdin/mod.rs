//! `stdin`: JSON lines from standard input.

mod config;
mod source;

pub use config::StdinSourceConfig;
pub use source::StdinSource;
