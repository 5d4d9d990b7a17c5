//! The running `pce_traffic` source: hands on what its connection's hub delivers.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::config::PceTrafficConfig;
use super::hub::{Delivery, TrafficHub};
use super::narrow::Restriction;
use crate::node::{NodeResult, Source, SourceContext};
use crate::stages::filter::FilterConfig;

/// One pipeline's view of its connection's traffic.
#[derive(Debug)]
pub struct PceTrafficSource {
    hub: Arc<TrafficHub>,
    id: Arc<str>,
    cfg: PceTrafficConfig,
    restriction: Restriction,
    /// The filter stages reading the source, when every reader is one (and `narrow`).
    readers: Option<Vec<FilterConfig>>,
    rx: Option<mpsc::Receiver<Delivery>>,
}

impl PceTrafficSource {
    /// The source `id` reading `hub`, asking (with `narrow`) only for what `restriction`
    /// lets through and handed only the flows its `readers` can keep; it joins the hub
    /// when attached.
    pub(super) fn new(
        hub: Arc<TrafficHub>,
        id: Arc<str>,
        cfg: PceTrafficConfig,
        restriction: Restriction,
        readers: Option<Vec<FilterConfig>>,
    ) -> Self {
        PceTrafficSource {
            hub,
            id,
            cfg,
            restriction,
            readers,
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
            let rx = self.hub.subscribe(
                self.id.clone(),
                self.cfg.clone(),
                self.restriction.clone(),
                self.readers.as_deref(),
            );
            self.rx = Some(rx);
        }
    }

    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
