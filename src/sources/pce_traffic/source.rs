//! The running `pce_traffic` source: hands on what its connection's hub delivers.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::config::PceTrafficConfig;
use super::hub::{Delivery, TrafficHub};
use super::narrow::Restriction;
use crate::node::{NodeResult, Source, SourceContext};

/// One pipeline's view of its connection's traffic.
#[derive(Debug)]
pub struct PceTrafficSource {
    hub: Arc<TrafficHub>,
    id: Arc<str>,
    cfg: PceTrafficConfig,
    restriction: Restriction,
    rx: Option<mpsc::Receiver<Delivery>>,
}

impl PceTrafficSource {
    /// The source `id` reading `hub`, asking (with `narrow`) only for what `restriction`
    /// lets through; it joins the hub when attached.
    pub(super) fn new(
        hub: Arc<TrafficHub>,
        id: Arc<str>,
        cfg: PceTrafficConfig,
        restriction: Restriction,
    ) -> Self {
        PceTrafficSource {
            hub,
            id,
            cfg,
            restriction,
            rx: None,
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        self.attach();
        let Some(mut rx) = self.rx.take() else {
            return Ok(());
        };
        loop {
            let Some(Some(batch)) = cx.wait(rx.recv()).await else {
                return Ok(());
            };
            if !super::super::send_batches(cx, batch).await {
                return Ok(());
            }
        }
    }
}

impl Source for PceTrafficSource {
    fn attach(&mut self) {
        if self.rx.is_none() {
            let rx =
                self.hub
                    .subscribe(self.id.clone(), self.cfg.clone(), self.restriction.clone());
            self.rx = Some(rx);
        }
    }

    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
