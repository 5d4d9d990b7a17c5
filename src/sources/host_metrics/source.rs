//! The running `host_metrics` source.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::config::HostMetricsConfig;
use super::scrape::{self, MAX_PROCESSES, Scope, Snapshot};
use crate::event::Event;
use crate::node::internal_event::{HostProcessesSkipped, HostScrapeFailed, InternalEvent as _};
use crate::node::{BuildContext, NodeResult, Source, SourceContext};

/// Scrapes `/proc` every interval.
#[derive(Debug)]
pub struct HostMetricsSource {
    cfg: HostMetricsConfig,
    id: Arc<str>,
}

impl HostMetricsSource {
    pub(super) fn new(cfg: HostMetricsConfig, cx: &BuildContext) -> Self {
        HostMetricsSource {
            cfg,
            id: cx.id.clone(),
        }
    }

    async fn run_inner(self, cx: &mut SourceContext) -> NodeResult {
        let scope = Arc::new(Scope {
            root: self.cfg.proc_root.clone(),
            disks: self.cfg.disks.clone(),
            interfaces: self.cfg.interfaces.clone(),
            processes: self.cfg.top_processes > 0,
        });
        let mut before: Option<Snapshot> = None;
        // Parts of /proc that could not be read: said once each.
        let mut said: BTreeSet<&'static str> = BTreeSet::new();
        loop {
            let job = {
                let scope = scope.clone();
                tokio::task::spawn_blocking(move || scrape::read(&scope))
            };
            let Some(done) = cx.wait(job).await else {
                return Ok(());
            };
            match done? {
                Ok(now) => {
                    for (part, why) in &now.unreadable {
                        if said.insert(part) {
                            tracing::warn!(source = %self.id, part = %part, error = %why, "cannot read this part of /proc; its fields are left out");
                        }
                    }
                    HostProcessesSkipped {
                        source: &self.id,
                        skipped: now.procs_skipped,
                        max: MAX_PROCESSES,
                    }
                    .emit(cx.counters());
                    let record = scrape::render(before.as_ref(), &now, self.cfg.top_processes);
                    let event = Event::from_record(record, self.id.clone(), cx.now());
                    if cx.send(vec![Arc::new(event)]).await.is_err() {
                        return Ok(());
                    }
                    before = Some(now);
                }
                Err(e) => HostScrapeFailed {
                    source: &self.id,
                    error: &e.to_string(),
                }
                .emit(cx.counters()),
            }
            if !cx.sleep(self.cfg.interval.get()).await {
                return Ok(());
            }
        }
    }
}

impl Source for HostMetricsSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
