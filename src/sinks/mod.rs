//! Sink kinds. Each lives in its own folder; the list of kinds is in
//! [`crate::components`].

pub mod file;
pub mod stdout;

use futures::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::runtime::{Input, Message, NodeResult};

/// How records are written by the `file` and `stdout` sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One compact JSON object per line.
    #[default]
    JsonLines,
    /// Indented JSON, one object after another (for reading by eye).
    JsonPretty,
}

/// Writes every event of `input` to `out` as JSON, flushing whenever the input is idle so
/// a follower of the output sees records promptly, and at the end.
pub(crate) async fn write_json_lines<W: AsyncWrite + Unpin>(
    mut input: Input,
    out: W,
    encoding: Encoding,
) -> NodeResult {
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, out);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut dirty = false;
    loop {
        // Take what is ready without waiting; flush before waiting for more.
        let msg = match input.recv().now_or_never() {
            Some(m) => m,
            None => {
                if dirty {
                    out.flush().await?;
                    dirty = false;
                }
                input.recv().await
            }
        };
        let Some(msg) = msg else { break };
        let Message::Events(events) = msg else {
            continue;
        };
        buf.clear();
        for e in &events {
            let written = match (encoding, e.raw()) {
                // Unchanged since it was read: the original line, byte for byte.
                (Encoding::JsonLines, Some(raw)) => {
                    buf.extend_from_slice(raw);
                    Ok(())
                }
                (Encoding::JsonLines, None) => serde_json::to_writer(&mut buf, e.data()),
                (Encoding::JsonPretty, _) => serde_json::to_writer_pretty(&mut buf, e.data()),
            };
            if written.is_err() {
                input.counters().add_error();
                continue;
            }
            buf.push(b'\n');
        }
        out.write_all(&buf).await?;
        input.counters().add_out(events.len());
        dirty = true;
    }
    out.flush().await?;
    Ok(())
}
