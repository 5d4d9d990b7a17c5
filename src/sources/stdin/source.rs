//! The running `stdin` source.

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;

use crate::event::FieldPath;
use crate::runtime::{BuildContext, NodeResult, Source, SourceContext};
use crate::sources::json_lines::{Decoded, LineDecoder, set_aside};
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
            rejected: RejectedLog::new(&cx.state_dir, &cx.id),
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let mut stdin = tokio::io::stdin();
        let mut decoder =
            LineDecoder::new(cx.id.clone(), self.max_line_bytes, self.time_field.clone());
        let mut decoded = Decoded::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(read) = cx.wait(stdin.read(&mut buf)).await else {
                return Ok(());
            };
            let n = read?;
            if n == 0 {
                decoder.finish(cx.now(), &mut decoded);
            } else {
                decoder.push(&buf[..n], cx.now(), &mut decoded);
            }
            set_aside(
                &mut self.rejected,
                cx.counters(),
                std::mem::take(&mut decoded.rejected),
            );
            if !send_batches(cx, std::mem::take(&mut decoded.events)).await
                || n == 0
                || cx.is_shutting_down()
            {
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
