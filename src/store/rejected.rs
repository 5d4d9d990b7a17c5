//! Records set aside: malformed input kept for inspection instead of being dropped.
//!
//! Each source writes what it could not use to `<state_dir>/rejected/<pipeline.node>.jsonl`,
//! one JSON object per record: when, from where (file and line), why, and the raw text.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::event::Timestamp;

/// One record that could not be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRecord {
    /// When it was set aside.
    pub time: Timestamp,
    /// The node that read it (`pipeline.node`).
    pub source: String,
    /// The file it came from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its line number in that input, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Why it was set aside.
    pub reason: String,
    /// The raw text (lossy UTF-8, cut at 64 KiB).
    pub raw: String,
}

/// Appends rejected records to a node's file, opened on first use.
#[derive(Debug)]
pub struct RejectedLog {
    path: PathBuf,
    file: Option<File>,
    broken: bool,
}

impl RejectedLog {
    /// The log of node `id` under `state_dir`.
    pub fn new(state_dir: &Path, id: &str) -> RejectedLog {
        RejectedLog {
            path: state_dir.join("rejected").join(format!("{id}.jsonl")),
            file: None,
            broken: false,
        }
    }

    /// Where the records go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record. If the file cannot be written the record is still logged (by the
    /// caller) and counted; the failure is logged once.
    pub fn write(&mut self, record: &RejectedRecord) {
        if self.broken {
            return;
        }
        if self.file.is_none() {
            let opened = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)
                });
            match opened {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write set-aside records; they are only logged");
                    self.broken = true;
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            let mut line = serde_json::to_vec(record).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write set-aside records; they are only logged");
                self.broken = true;
            }
        }
    }
}
