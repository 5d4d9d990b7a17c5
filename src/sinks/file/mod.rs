//! `file` sink: JSON lines appended to a file.

use std::path::PathBuf;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Encoding, write_json_lines};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, Input, NodeError, NodeResult, Sink};

/// Writes every event it receives to a file, one JSON object per line.
///
/// The file and its directory are created when missing. Output is flushed whenever the
/// sink has caught up with its input, and at shutdown.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct FileSinkConfig {
    /// The sources or stages this sink reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The file to write. Relative paths are relative to the directory vigil runs in.
    pub path: PathBuf,
    /// Append to the file (`true`) or start it afresh at each start (`false`). Default: true.
    #[serde(default = "default_append")]
    pub append: bool,
    /// `json_lines` (default), `json_pretty`, or `summary` (one short line per alert).
    #[serde(default)]
    pub encoding: Encoding,
}

fn example() -> serde_json::Value {
    serde_json::json!({"inputs": ["blocked"], "path": "out/blocked.jsonl"})
}

fn default_append() -> bool {
    true
}

impl FileSinkConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        if self.path.as_os_str().is_empty() {
            problems.error("/path", codes::INVALID_VALUE, "path is empty");
        }
    }

    /// Builds the running sink: the file is opened here (its directory made first), so a
    /// path that cannot be written is refused by `vigil run` and by a reload rather than
    /// found out once events flow.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, NodeError> {
        let path = &self.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        // Started afresh only when the node starts, not when it is restarted or rebuilt.
        let afresh = !self.append && !cx.rebuilt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!afresh)
            .truncate(afresh)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Box::new(FileSink {
            id: cx.id.clone(),
            file: tokio::fs::File::from_std(file),
            encoding: self.encoding,
        }))
    }
}

/// The running `file` sink.
#[derive(Debug)]
pub struct FileSink {
    id: std::sync::Arc<str>,
    file: tokio::fs::File,
    encoding: Encoding,
}

impl Sink for FileSink {
    fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult> {
        let FileSink { id, file, encoding } = *self;
        Box::pin(async move { write_json_lines(&id, input, file, encoding).await })
    }
}
