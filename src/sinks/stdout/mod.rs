//! `stdout` sink: JSON lines on standard output.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Encoding, write_json_lines};
use crate::diagnostic::Problems;
use crate::node::{BuildContext, Input, NodeError, NodeResult, Sink};

/// Writes every event it receives to standard output, one JSON object per line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct StdoutSinkConfig {
    /// The sources or stages this sink reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// `json_lines` (default), `json_pretty`, or `summary` (one short line per alert, for
    /// a person at a terminal).
    #[serde(default)]
    pub encoding: Encoding,
}

fn example() -> serde_json::Value {
    serde_json::json!({"inputs": ["blocked"], "encoding": "json_lines"})
}

impl StdoutSinkConfig {
    /// Structural checks (none beyond the schema).
    pub fn check(&self, _problems: &mut Problems) {}

    /// Builds the running sink.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, NodeError> {
        Ok(Box::new(StdoutSink {
            id: cx.id.clone(),
            encoding: self.encoding,
        }))
    }
}

/// The running `stdout` sink.
#[derive(Debug)]
pub struct StdoutSink {
    id: std::sync::Arc<str>,
    encoding: Encoding,
}

impl Sink for StdoutSink {
    fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult> {
        let StdoutSink { id, encoding } = *self;
        Box::pin(async move { write_json_lines(&id, input, tokio::io::stdout(), encoding).await })
    }
}
