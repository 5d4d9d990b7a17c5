//! The `stdin` source's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::StdinSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Source};

/// Reads JSON lines (one JSON object per line) from standard input until it ends.
///
/// A line that is not a JSON object is counted and set aside with its line number under
/// `<state_dir>/rejected/`; it never stops the source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct StdinSourceConfig {
    /// The field that holds the event time (RFC 3339, or epoch seconds). Default: the first
    /// of `timestamp`, `time` and `@timestamp`; without one, the time the line was read.
    #[serde(default)]
    pub time_field: Option<String>,
    /// Lines longer than this many bytes are set aside instead of parsed. Default: 1048576.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
}

fn example() -> serde_json::Value {
    serde_json::json!({"time_field": "timestamp"})
}

fn default_max_line_bytes() -> usize {
    1024 * 1024
}

impl StdinSourceConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        if let Some(f) = &self.time_field
            && let Err(e) = FieldPath::parse(f)
        {
            problems.error("/time_field", codes::INVALID_VALUE, e.to_string());
        }
    }

    /// Builds the running source.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, NodeError> {
        let time_field = self
            .time_field
            .as_deref()
            .map(FieldPath::parse)
            .transpose()?;
        Ok(Box::new(StdinSource::new(
            self.max_line_bytes,
            time_field,
            cx,
        )))
    }
}
