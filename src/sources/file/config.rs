//! The `file` source's configuration.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::FileSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Source};
use crate::time::Duration;

/// Reads JSON lines (one JSON object per line) from a file.
///
/// With `follow` (the default) it keeps reading as the file grows, like `tail -f`: a last
/// line without its newline yet is held until the newline arrives, and a file that is
/// truncated or replaced (log rotation) is read again from its start. A line that is not a
/// JSON object is counted and set aside with its line number under
/// `<state_dir>/rejected/`; it never stops the source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct FileSourceConfig {
    /// The file to read. Relative paths are relative to the directory vigil runs in.
    pub path: PathBuf,
    /// Keep reading as the file grows, and reopen it when it is rotated. `false`: stop at
    /// the end of the file (the pipeline finishes when all its sources have). Default: true.
    #[serde(default = "default_follow")]
    pub follow: bool,
    /// Where to start the first time: `beginning` (read what is already there) or `end`
    /// (only what is appended from now on). Afterwards the source goes on where it
    /// stopped: its position (the file's device, inode and first bytes, and the offset of
    /// the last line delivered) is saved under `state_dir`, so a restart or a reload reads
    /// nothing twice and skips nothing; a file replaced or truncated since is read from
    /// its start. Default: `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
    /// How often to look for new data at the end of the file, or for the file when it does
    /// not exist yet. Default: `250ms`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// The field that holds the event time (RFC 3339, or epoch seconds). Default: the first
    /// of `timestamp`, `time` and `@timestamp`; without one, the time the line was read.
    #[serde(default)]
    pub time_field: Option<String>,
    /// Lines longer than this many bytes are set aside instead of parsed. Default: 1048576.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
    /// What the lines hold: `json` (each object an event as it is, the default) or
    /// `tetragon` (Cilium Tetragon's export file: each event normalised to the fields of
    /// the `tetragon` catalogue — `event.type`, `process.binary`, `arg.file.path`, … —
    /// the line kept as the sample; an event of a type the decoder does not know is
    /// handed on with its `event.type` and counted,
    /// `vigil_node_errors_total{reason="unknown_type"}`).
    #[serde(default)]
    pub decode: crate::sources::json_lines::LineFormat,
}

fn example() -> serde_json::Value {
    serde_json::json!({"path": "/var/log/pce/flows.jsonl", "follow": true})
}

/// Where a `file` source starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Read the file from its first line.
    #[default]
    Beginning,
    /// Skip what is there; read only what is appended.
    End,
}

fn default_follow() -> bool {
    true
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_max_line_bytes() -> usize {
    1024 * 1024
}

impl FileSourceConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/poll_interval", "poll_interval", &self.poll_interval);
        if let Some(f) = &self.time_field
            && let Err(e) = FieldPath::parse(f)
        {
            problems.error("/time_field", codes::INVALID_VALUE, e.to_string());
        }
        if self.path.as_os_str().is_empty() {
            problems.error("/path", codes::INVALID_VALUE, "path is empty");
        }
    }

    /// Builds the running source (`internal`: where a Tetragon file's
    /// `vigil.tetragon_dropping` alerts go).
    pub fn build(
        &self,
        cx: &BuildContext,
        internal: &crate::sources::internal::InternalAlerts,
    ) -> Result<Box<dyn Source>, NodeError> {
        let time_field = self
            .time_field
            .as_deref()
            .map(FieldPath::parse)
            .transpose()?;
        Ok(Box::new(FileSource::new(
            self.clone(),
            time_field,
            cx,
            internal.clone(),
        )))
    }
}
