//! Records set aside: malformed input kept for inspection instead of being dropped.
//!
//! Each source writes what it could not use to `<state_dir>/rejected/<pipeline.node>.jsonl`,
//! one JSON object per record: when, from where (file and line), why, and the raw text.
//! Writes are buffered and flushed after each batch ([`RejectedLog::flush`]). At
//! `max_bytes` the file becomes `<…>.jsonl.1` (replacing the one before) and a new one
//! starts: a source keeps at most about twice `max_bytes`.

use std::fs::File;
use std::io::{BufWriter, Write};
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
    file: Option<BufWriter<File>>,
    /// The file's size, as far as this log wrote it.
    size: u64,
    max_bytes: u64,
    /// Files rotated away (their older records dropped).
    rotations: u64,
    broken: bool,
}

impl RejectedLog {
    /// The log of node `id` under `state_dir`, rotated at `max_bytes`.
    pub fn new(state_dir: &Path, id: &str, max_bytes: u64) -> RejectedLog {
        RejectedLog {
            path: state_dir.join("rejected").join(format!("{id}.jsonl")),
            file: None,
            size: 0,
            max_bytes: max_bytes.max(1),
            rotations: 0,
            broken: false,
        }
    }

    /// How many times the file was rotated (each time the `.1` file before, if any, was
    /// dropped).
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write set-aside records; they are only logged");
            self.broken = true;
        }
    }

    /// The file reached `max_bytes`: it becomes `.1` and the next record starts a new one.
    fn rotate(&mut self) {
        self.flush();
        self.file = None;
        let old = self.path.with_extension("jsonl.1");
        match std::fs::rename(&self.path, &old) {
            // Logged and counted by whoever writes the records (it sees `rotations` grow).
            Ok(()) => self.rotations += 1,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the set-aside records; they are only logged");
                self.broken = true;
            }
        }
        self.size = 0;
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
            // Raw records: readable by vigil's user only (directory 0700, file 0600).
            let opened = self
                .path
                .parent()
                .map_or(Ok(()), super::private::private_dir)
                .and_then(|()| super::private::open_append(&self.path));
            match opened {
                Ok(f) => {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(BufWriter::new(f));
                }
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
                return;
            }
            self.size += line.len() as u64;
            if self.size >= self.max_bytes {
                self.rotate();
            }
        }
    }
}

impl Drop for RejectedLog {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> RejectedRecord {
        RejectedRecord {
            time: chrono::Utc::now(),
            source: "p.in".into(),
            location: None,
            line: Some(n as u64),
            reason: "not JSON".into(),
            raw: "x".repeat(100),
        }
    }

    fn lines(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    /// Past `max_bytes` the file becomes `.1` (the one before dropped) and a new one
    /// starts: disk use stays bounded, the newest records are kept whole, and each
    /// rotation is counted.
    #[test]
    fn the_file_is_rotated_at_its_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RejectedLog::new(dir.path(), "p.in", 1000);
        for n in 0..50 {
            log.write(&record(n));
        }
        log.flush();
        let current = lines(log.path());
        let old = lines(&log.path().with_extension("jsonl.1"));
        assert!(log.rotations() >= 5, "{} rotations", log.rotations());
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(log.path()) < 1000);
        assert!(size(&log.path().with_extension("jsonl.1")) < 1000 + 300);
        // The last records, in order, across the two files.
        let kept: Vec<u64> = old.iter().chain(&current).copied().collect();
        assert_eq!(kept.last(), Some(&49));
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        // A new log for the same node goes on in the current file.
        drop(log);
        let mut again = RejectedLog::new(dir.path(), "p.in", 1000);
        again.write(&record(50));
        again.flush();
        assert_eq!(lines(again.path()).last(), Some(&50));
    }
}
