//! What readers see: the API's, `/metrics`' and the dashboard's view of the graph, swapped
//! in whole after a start or a reload so a reader never waits for a writer.

use super::*;

/// One node as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    /// `pipeline.node`.
    pub id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The node's name in its pipeline.
    pub name: String,
    /// `source`, `stage` or `sink`.
    pub role: &'static str,
    /// The component kind (`filter`, `mail`, ...).
    pub kind: String,
    /// The ids of the nodes it reads.
    pub inputs: Vec<String>,
    /// Events received.
    pub events_in: u64,
    /// Events handed on (sinks: written or delivered).
    pub events_out: u64,
    /// Failures counted.
    pub errors: u64,
    /// The same, by reason (`malformed`, `script`, ...).
    pub errors_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// `running`, `restarting` (it failed and waits to start again) or `failed` (it
    /// failed too often: it and its pipeline are stopped).
    pub state: NodeState,
    /// How often it was started again after a failure.
    pub restarts: u64,
    /// Why it failed last, if it ever did.
    pub last_error: Option<String>,
    /// What it set aside on purpose, by reason (`late`, `evicted`, ...).
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
}

/// One node as readers see it: what it is, and its live counters and health.
pub(super) struct ViewNode {
    pub(super) id: Arc<str>,
    pub(super) pipeline: String,
    pub(super) name: String,
    pub(super) role: NodeRole,
    pub(super) kind: String,
    pub(super) inputs: Vec<String>,
    pub(super) counters: Arc<NodeCounters>,
    pub(super) health: Arc<Health>,
}

/// What the API, `/metrics` and the dashboard read: made whole at a start and after a
/// reload and swapped in at once, so a reload — however long its hand-over — never makes
/// a reader wait.
pub(super) struct View {
    pub(super) pipelines: Vec<(String, Option<String>)>,
    pub(super) nodes: Vec<ViewNode>,
    pub(super) services: Arc<Services>,
    pub(super) store: Arc<crate::store::Store>,
    pub(super) clock: SharedClock,
}

impl Live {
    /// The read model of the graph as it is now.
    pub(super) fn view(&self) -> View {
        let graph = self.config.graph();
        let nodes = graph
            .nodes
            .iter()
            .map(|n| {
                let running = self.nodes.get(&n.id);
                ViewNode {
                    id: n.id.clone(),
                    pipeline: self.config.pipelines[n.pipeline].config.name.clone(),
                    name: n.name.clone(),
                    role: n.role,
                    kind: n.kind.clone(),
                    inputs: n
                        .inputs
                        .iter()
                        .map(|&i| graph.nodes[i].id.to_string())
                        .collect(),
                    counters: running.map(|l| l.counters.clone()).unwrap_or_default(),
                    health: running.map(|l| l.health.clone()).unwrap_or_default(),
                }
            })
            .collect();
        View {
            pipelines: self
                .config
                .pipelines
                .iter()
                .map(|p| (p.config.name.clone(), p.config.description.clone()))
                .collect(),
            nodes,
            services: self.env.services.clone(),
            store: self.env.store.clone(),
            clock: self.env.clock.clone(),
        }
    }
}

impl Reloader {
    /// Every running node with its counters, in graph order.
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        let view = self.view.load();
        view.nodes
            .iter()
            .map(|n| {
                let (events_in, events_out, errors) = n.counters.get();
                NodeStatus {
                    id: n.id.to_string(),
                    pipeline: n.pipeline.clone(),
                    name: n.name.clone(),
                    role: n.role.as_str(),
                    kind: n.kind.clone(),
                    inputs: n.inputs.clone(),
                    events_in,
                    events_out,
                    errors,
                    errors_by_reason: n.counters.errors_by_reason().into_iter().collect(),
                    state: n.health.state(),
                    restarts: n.counters.restarts(),
                    last_error: n.health.last_error(),
                    dropped: n.counters.dropped().into_iter().collect(),
                }
            })
            .collect()
    }

    /// The pipelines running: (name, description).
    pub async fn pipelines(&self) -> Vec<(String, Option<String>)> {
        self.view.load().pipelines.clone()
    }

    /// The services the graph uses (PCE clients and their statistics, ...).
    pub async fn services(&self) -> Arc<Services> {
        self.view.load().services.clone()
    }

    /// What the API sees of the traffic.
    pub async fn tap(&self) -> Arc<crate::node::Tap> {
        self.view.load().services.tap.clone()
    }

    /// The clock the graph runs on.
    pub async fn clock(&self) -> SharedClock {
        self.view.load().clock.clone()
    }

    /// The state database the graph uses.
    pub async fn store(&self) -> Arc<crate::store::Store> {
        self.view.load().store.clone()
    }

    /// Where vigil's own alerts are published now (a settings change makes a new feed).
    pub async fn internal_alerts(&self) -> InternalAlerts {
        self.view.load().services.internal.clone()
    }
}
