//! The running `stdin` source.

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;

use crate::event::FieldPath;
use crate::node::{BuildContext, NodeResult, Source, SourceContext};
use crate::sources::json_lines::{JsonLinesDecoder, set_aside};
use crate::sources::send_batches;
use crate::store::rejected::RejectedLog;

/// Reads JSON lines from standard input.
#[derive(Debug)]
pub struct StdinSource {
    max_line_bytes: usize,
    time_field: Option<FieldPath>,
    rejected: RejectedLog,
}

impl StdinSource {
    pub(super) fn new(
        max_line_bytes: usize,
        time_field: Option<FieldPath>,
        cx: &BuildContext,
    ) -> Self {
        StdinSource {
            max_line_bytes,
            time_field,
            rejected: RejectedLog::new(&cx.state_dir, &cx.id, cx.rejected_max_bytes),
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let mut stdin = tokio::io::stdin();
        let mut decoder =
            JsonLinesDecoder::new(cx.id.clone(), self.max_line_bytes, self.time_field.clone());
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(64 * 1024);
            let read = cx.wait(stdin.read_buf(&mut buf)).await;
            let ended = match read {
                None => true,
                Some(r) => {
                    let n = r?;
                    if n == 0 {
                        decoder.finish(cx.now());
                    } else {
                        decoder.push(buf.split().freeze(), cx.now());
                    }
                    n == 0 || cx.is_shutting_down()
                }
            };
            // Stdin is read as it comes: hand on at once rather than batch up chunks.
            let decoded = decoder.drain().await?;
            set_aside(&mut self.rejected, cx.counters(), decoded.rejected);
            if !send_batches(cx, decoded.events).await || ended {
                return Ok(());
            }
        }
    }
}

impl Source for StdinSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
