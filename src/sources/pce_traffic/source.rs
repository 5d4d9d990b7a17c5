//! The running `pce_traffic` source: hands on what its connection's hub delivers.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::hub::Delivery;
use crate::node::{NodeResult, Source, SourceContext};

/// One pipeline's view of its connection's traffic.
#[derive(Debug)]
pub struct PceTrafficSource {
    rx: mpsc::Receiver<Delivery>,
}

impl PceTrafficSource {
    pub(super) fn new(rx: mpsc::Receiver<Delivery>) -> Self {
        PceTrafficSource { rx }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        loop {
            let Some(Some(batch)) = cx.wait(self.rx.recv()).await else {
                return Ok(());
            };
            if !super::super::send_batches(cx, batch).await {
                return Ok(());
            }
        }
    }
}

impl Source for PceTrafficSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
