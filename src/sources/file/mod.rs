//! `file`: JSON lines from a file, following it as it grows.

mod config;
mod source;

pub use config::{FileSourceConfig, StartAt};
pub use source::{FileSource, FileSourceError};
