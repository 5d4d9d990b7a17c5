//! Builds the running graph from a validated configuration, runs it, and changes it in
//! place on a reload.
//!
//! Every node runs as its own task. The topology keeps, per node, its inbound channel,
//! the control of its output ([`Wiring`]) and its stop token, so a reload can:
//! - leave an unchanged node running, with its state;
//! - retire a changed or removed node: its upstreams stop sending to it (between two
//!   messages), it handles what it already got, saves its state and ends, telling its
//!   downstreams;
//! - start the new version of a changed node, which restores the state the old one saved
//!   when the state's meaning did not change, and an added node.
//!
//! Events sent to a node being replaced wait in the new node's channel until it starts,
//! so nothing is lost or handled twice.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use indexmap::IndexMap;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::services::build_services;
use super::supervise::{Health, NodeState, Supervisor, Verdict, panic_message, wait_on};
use super::{
    BuildContext, Input, Message, NodeCounters, NodeResult, Output, SharedClock, Snapshot,
    SourceContext, Stage,
};
use crate::components::Services;
use crate::config::Config;
use crate::graph::{Diff, DiffNode, Graph, GraphNode, NodeRole};
use crate::node::edge::{self, Envelope, Rewire, Target, Wiring};
use crate::sources::internal::InternalAlerts;

mod apply;
mod build;
mod run;
mod status;

use build::*;
use run::*;
pub use status::NodeStatus;
use status::*;

/// A component could not be built (a file sink could not open its file, ...).
#[derive(Debug, thiserror::Error)]
#[error("{id}: {message}")]
pub struct BuildError {
    /// The node, as `pipeline.node`.
    pub id: String,
    /// What went wrong.
    pub message: String,
}

/// What one node did, for the shutdown summary and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// `pipeline.node`.
    pub id: String,
    /// `source`, `stage` or `sink`.
    pub role: &'static str,
    /// Events received.
    pub events_in: u64,
    /// Events handed on (sinks: written).
    pub events_out: u64,
    /// Failures counted.
    pub errors: u64,
    /// Why the node stopped early, if it did.
    pub failure: Option<String>,
}

/// The end of a run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// One entry per node, in graph order.
    pub nodes: Vec<NodeReport>,
}

impl RunReport {
    /// Whether any node stopped with an error.
    pub fn failed(&self) -> bool {
        self.nodes.iter().any(|n| n.failure.is_some())
    }

    /// The report of one node.
    pub fn node(&self, id: &str) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Nodes that are new.
    pub added: Vec<String>,
    /// Nodes that are gone.
    pub removed: Vec<String>,
    /// Nodes whose configuration changed (rebuilt).
    pub changed: Vec<String>,
    /// How many nodes kept running untouched.
    pub unchanged: usize,
    /// Changed stages whose state was carried over.
    pub state_kept: Vec<String>,
    /// Changed stages whose state was reset (its meaning changed: `group_by`, `sum`, ...).
    pub state_reset: Vec<String>,
    /// Whether the settings changed, so that every node was rebuilt.
    pub settings_changed: bool,
    /// Retired nodes that did not finish within `handover_timeout` and were stopped.
    pub aborted: Vec<String>,
    /// Settings that changed but take effect only when vigil restarts (`web`).
    pub restart_needed: Vec<String>,
}

impl ReloadReport {
    /// Whether the reload changed anything.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A reload could not be carried out (the new graph did not build, or a retired node did
/// not hand over).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReloadError(pub String);

/// A node's task ended.
struct Ended {
    id: Arc<str>,
    instance: u64,
    result: Result<NodeResult, String>,
}

/// One running node.
struct LiveNode {
    role: NodeRole,
    /// The pipeline's name.
    pipeline: Arc<str>,
    fingerprint: String,
    counters: Arc<NodeCounters>,
    /// Its channel (stages and sinks).
    inbound: Option<mpsc::Sender<Envelope>>,
    /// The next free edge number on its channel.
    next_edge: u32,
    /// The control of its output (sources and stages).
    wiring: Option<Arc<Wiring>>,
    /// Stops it (sources; stages and sinks end when their inputs do).
    stop: CancellationToken,
    /// Which incarnation this is: a rebuilt node is a new one.
    instance: u64,
    /// Running, restarting or failed (see [`super::supervise`]).
    health: Arc<Health>,
    /// Turns `true` when its task has ended.
    finished: watch::Receiver<bool>,
    /// Its task, to stop it when it does not hand over in time.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What every node is built with, shared by the incarnations of a run.
struct Env {
    clock: SharedClock,
    shutdown: CancellationToken,
    /// Stops the shared helpers started with these connections (a settings change
    /// replaces them).
    helpers_stop: CancellationToken,
    store: Arc<crate::store::Store>,
    services: Arc<Services>,
    /// Writes the stages' states.
    snapshots: SnapshotWriter,
    ended: mpsc::UnboundedSender<Ended>,
}

/// The running graph behind [`RunningTopology`] and [`Reloader`].
struct Live {
    config: Config,
    env: Env,
    nodes: IndexMap<Arc<str>, LiveNode>,
    running: usize,
    next_instance: u64,
    helpers: Vec<tokio::task::JoinHandle<()>>,
    failures: HashMap<Arc<str>, String>,
    /// Per pipeline: stops its sources (a node that failed too often cancels it).
    pipeline_stops: HashMap<String, CancellationToken>,
}

/// A graph whose nodes are running.
pub struct RunningTopology {
    live: Arc<Mutex<Live>>,
    view: Arc<arc_swap::ArcSwap<View>>,
    ended: mpsc::UnboundedReceiver<Ended>,
    shutdown: CancellationToken,
    counters: Vec<(String, Arc<NodeCounters>)>,
    internal: InternalAlerts,
}

/// Changes a running graph to a new configuration (see [`Reloader::reload`]), and shows
/// it to readers.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<Mutex<Live>>,
    view: Arc<arc_swap::ArcSwap<View>>,
}

impl RunningTopology {
    /// Asks the sources to stop; everything already read still flows to the sinks.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that requests the shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The counters of every node at start, by id.
    pub fn counters(&self) -> Vec<(String, Arc<NodeCounters>)> {
        self.counters.clone()
    }

    /// Where vigil's own alerts are published (`internal` sources subscribe).
    pub fn internal_alerts(&self) -> InternalAlerts {
        self.internal.clone()
    }

    /// A handle that reloads this graph while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: self.live.clone(),
            view: self.view.clone(),
        }
    }

    /// Waits until every node has finished (all finite sources ended, or a shutdown drained
    /// the graph).
    pub async fn wait(mut self) -> RunReport {
        loop {
            if self.live.lock().await.running == 0 {
                break;
            }
            let Some(ended) = self.ended.recv().await else {
                break;
            };
            let mut live = self.live.lock().await;
            live.running = live.running.saturating_sub(1);
            let current = live
                .nodes
                .get(&ended.id)
                .is_some_and(|n| n.instance == ended.instance);
            let failure = match ended.result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!("panicked: {panic}")),
            };
            if let Some(f) = failure {
                if current {
                    // Its supervisor gave up and stopped its pipeline; the others run on.
                    tracing::error!(node = %ended.id, error = %f, "node stopped with an error");
                    live.failures.insert(ended.id.clone(), f);
                } else {
                    tracing::error!(node = %ended.id, error = %f, "a node retired by a reload stopped with an error");
                }
            }
        }
        // Every node is done: stop the shared helpers too and let them finish (a traffic
        // hub stores its cursor before it ends).
        self.shutdown.cancel();
        let mut live = self.live.lock().await;
        for helper in live.helpers.drain(..) {
            if let Err(e) = helper.await {
                tracing::error!(error = %e, "a shared task panicked");
            }
        }
        let nodes = live
            .nodes
            .iter()
            .map(|(id, n)| {
                let (events_in, events_out, errors) = n.counters.get();
                NodeReport {
                    id: id.to_string(),
                    role: n.role.as_str(),
                    events_in,
                    events_out,
                    errors,
                    failure: live.failures.get(id).cloned(),
                }
            })
            .collect();
        RunReport { nodes }
    }
}

/// Builds every node of `config` and starts it on the current tokio runtime.
pub fn start(config: &Config, clock: SharedClock) -> Result<RunningTopology, BuildError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let env = make_env(config, clock, shutdown.clone(), tx)?;
    // No worker sends anything yet: a message still marked as being sent was under way
    // when the last run ended.
    match env
        .store
        .release_sending(env.clock.now().timestamp_millis())
    {
        Ok(left) => {
            for (message, sink) in left {
                tracing::warn!(%sink, %message, "this message was being sent when vigil last stopped; it is sent again (its peer may have it already)");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the outbox for messages left being sent")
        }
    }
    let mut live = Live {
        config: Config::default(),
        env,
        nodes: IndexMap::new(),
        running: 0,
        next_instance: 0,
        helpers: Vec::new(),
        failures: HashMap::new(),
        pipeline_stops: HashMap::new(),
    };
    let graph = config.graph();
    let all: Vec<usize> = (0..graph.nodes.len()).collect();
    let prepared = live.prepare(config, &graph, &all);
    live.spawn(
        config,
        &graph,
        prepared,
        HashMap::new(),
        &HashSet::new(),
        &HashMap::new(),
    )?;
    live.config = config.clone();
    let helpers = start_helpers(&live.env.services, &live.env.helpers_stop);
    live.helpers.extend(helpers);
    let pruner = start_pruner(&live.env, config.settings.retention.clone());
    live.helpers.push(pruner);
    let counters = live
        .nodes
        .iter()
        .map(|(id, n)| (id.to_string(), n.counters.clone()))
        .collect();
    let internal = live.env.services.internal.clone();
    let view = Arc::new(arc_swap::ArcSwap::from_pointee(live.view()));
    Ok(RunningTopology {
        internal,
        view,
        live: Arc::new(Mutex::new(live)),
        ended: rx,
        shutdown,
        counters,
    })
}

impl Live {
    /// Builds and starts the nodes `which` (indices into `graph`) of `config`. Channels
    /// of every node to start are made first, so they can be wired to each other; nodes
    /// already running (in `self.nodes`, not being started) are wired to with a new edge.
    fn prepare(&mut self, config: &Config, graph: &Graph, which: &[usize]) -> Prepared {
        let settings = &config.settings;
        let starting: HashSet<usize> = which.iter().copied().collect();
        // Channels first.
        let mut receivers: HashMap<usize, mpsc::Receiver<Envelope>> = HashMap::new();
        let mut fresh: HashMap<usize, LiveNode> = HashMap::new();
        for &i in which {
            let node = &graph.nodes[i];
            let (inbound, rx) = if node.role == NodeRole::Source {
                (None, None)
            } else {
                let (tx, rx) = edge::channel(settings.buffer);
                (Some(tx), Some(rx))
            };
            if let Some(rx) = rx {
                receivers.insert(i, rx);
            }
            let (done_tx, finished) = watch::channel(false);
            drop(done_tx);
            self.next_instance += 1;
            let counters = self
                .nodes
                .get(&node.id)
                .map(|n| n.counters.clone())
                .unwrap_or_default();
            let pipeline: Arc<str> = config.pipelines[node.pipeline].config.name.as_str().into();
            let stop = self.pipeline_stop(&pipeline).child_token();
            fresh.insert(
                i,
                LiveNode {
                    role: node.role,
                    pipeline,
                    fingerprint: fingerprint(config, node),
                    counters,
                    inbound,
                    next_edge: 0,
                    wiring: (node.role != NodeRole::Sink).then(|| Arc::new(Wiring::default())),
                    stop,
                    instance: self.next_instance,
                    health: Arc::new(Health::default()),
                    finished,
                    task: None,
                },
            );
        }
        // Edges: for every node to start, its inputs. An input being started gets the
        // node in its first targets; a running input is rewired to add it.
        let mut targets: HashMap<usize, Vec<Target>> = HashMap::new();
        let mut in_edges: HashMap<usize, Vec<u32>> = HashMap::new();
        let mut rewires: HashMap<Arc<str>, Vec<Rewire>> = HashMap::new();
        for (to, node) in graph.nodes.iter().enumerate() {
            for &from in &node.inputs {
                let to_starting = starting.contains(&to);
                let from_starting = starting.contains(&from);
                if !to_starting && !from_starting {
                    continue; // both running: already wired
                }
                let from_id = graph.nodes[from].id.clone();
                // The receiving side: its channel and a new edge on it.
                let (tx, edge) = if to_starting {
                    let n = fresh.get_mut(&to).expect("made above");
                    let e = n.next_edge;
                    n.next_edge += 1;
                    in_edges.entry(to).or_default().push(e);
                    (n.inbound.clone(), e)
                } else {
                    let Some(n) = self.nodes.get_mut(&node.id) else {
                        continue;
                    };
                    let e = n.next_edge;
                    n.next_edge += 1;
                    // Its watermark waits for the new upstream's first tick.
                    if let Some(tx) = &n.inbound {
                        let _ = tx.try_send(Envelope::Attach(e));
                    }
                    (n.inbound.clone(), e)
                };
                let Some(tx) = tx else { continue };
                let target = Target {
                    to: node.id.clone(),
                    edge,
                    tx,
                };
                if from_starting {
                    targets.entry(from).or_default().push(target);
                } else {
                    rewires.entry(from_id).or_default().push(Rewire::Add {
                        to: target.to,
                        edge: target.edge,
                        tx: target.tx,
                    });
                }
            }
        }
        Prepared {
            which: which.to_vec(),
            receivers,
            fresh,
            targets,
            in_edges,
            rewires,
        }
    }

    /// The token that stops pipeline `name`'s sources (a new one when the last was used
    /// to stop it after a failure).
    fn pipeline_stop(&mut self, name: &str) -> CancellationToken {
        let shutdown = &self.env.shutdown;
        let token = self
            .pipeline_stops
            .entry(name.to_string())
            .or_insert_with(|| shutdown.child_token());
        if token.is_cancelled() && !shutdown.is_cancelled() {
            *token = shutdown.child_token();
        }
        token.clone()
    }

    /// Builds node `node` of `config` (`rebuilt`: it ran before in this process).
    fn build(
        &self,
        config: &Config,
        node: &GraphNode,
        rebuilt: bool,
        counters: Arc<NodeCounters>,
    ) -> Result<Component, BuildError> {
        let cx = build_context(&self.env, config, node, rebuilt, counters);
        Component::build(config, node, &cx, &self.env.services).map_err(|e| BuildError {
            id: node.id.to_string(),
            message: e.to_string(),
        })
    }

    /// Builds and starts the nodes `prepared` (see [`Live::prepare`]); the running inputs
    /// of the new nodes must have been told to send to them (`prepared.rewires`).
    /// `built`: nodes built already (by index into `graph`); `rebuilt`: the ids of nodes
    /// that ran before (a reload changed them). `saved_shapes`: for rebuilt stages, the
    /// shape of the state their predecessor saved (see [`saved_shape`]), to report whether
    /// it was kept.
    fn spawn(
        &mut self,
        config: &Config,
        graph: &Graph,
        prepared: Prepared,
        mut built: HashMap<usize, Component>,
        rebuilt: &HashSet<Arc<str>>,
        saved_shapes: &HashMap<Arc<str>, serde_json::Value>,
    ) -> Result<Vec<(Arc<str>, bool)>, BuildError> {
        let settings = &config.settings;
        let Prepared {
            which,
            mut receivers,
            mut fresh,
            mut targets,
            mut in_edges,
            rewires: _,
        } = prepared;
        // Build every node before starting any, so a failure leaves nothing half-started.
        let mut components = Vec::new();
        for &i in &which {
            let node = &graph.nodes[i];
            let component = match built.remove(&i) {
                Some(c) => c,
                None => {
                    let counters = fresh.get(&i).map(|n| n.counters.clone());
                    let counters = counters.unwrap_or_default();
                    self.build(config, node, rebuilt.contains(&node.id), counters)?
                }
            };
            components.push((i, component));
        }
        // Start them.
        let mut outcomes = Vec::new();
        for (i, component) in components {
            let node = &graph.nodes[i];
            let mut live_node = fresh.remove(&i).expect("made above");
            let counters = live_node.counters.clone();
            let (done_tx, finished) = watch::channel(false);
            live_node.finished = finished;
            let out_targets = targets.remove(&i).unwrap_or_default();
            let pipeline: Arc<str> = config.pipelines[node.pipeline].config.name.as_str().into();
            let supervisor = Supervisor::new(
                node.id.clone(),
                pipeline.clone(),
                settings.restarts.clone(),
                live_node.health.clone(),
                counters.clone(),
                self.env.clock.clone(),
                self.env.services.internal.clone(),
                self.pipeline_stop(&pipeline),
            );
            // What builds the node again after a failure.
            let cx = build_context(&self.env, config, node, true, counters.clone());
            let services = self.env.services.clone();
            let p = &config.pipelines[node.pipeline].config;
            let future: futures::future::BoxFuture<'static, NodeResult> = match component {
                Component::Source(mut source) => {
                    source.attach();
                    let mut scx = SourceContext::new(
                        node.id.clone(),
                        settings.state_dir.clone(),
                        settings.batch_size,
                        Output::wired(
                            out_targets,
                            counters,
                            live_node.wiring.clone().unwrap_or_default(),
                        ),
                        self.env.clock.clone(),
                        live_node.stop.clone(),
                        settings.tick_interval.get(),
                    );
                    scx.set_tap(self.env.services.tap.clone());
                    let cfg = p.sources[node.name.as_str()].clone();
                    let readers = filter_readers(p, &node.name);
                    let again = move || cfg.build(&cx, &services, readers.as_deref());
                    Box::pin(run_source(source, scx, supervisor, again))
                }
                Component::Stage(stage) => {
                    let input = Input::new(
                        receivers.remove(&i).expect("stages have a channel"),
                        in_edges.remove(&i).unwrap_or_default(),
                        counters.clone(),
                    );
                    let output = Output::wired(
                        out_targets,
                        counters.clone(),
                        live_node.wiring.clone().unwrap_or_default(),
                    );
                    let saver = Snapshots {
                        tap: self.env.services.tap.clone(),
                        inhibitor: self.env.services.delivery.inhibitor.clone(),
                        enabled: settings.keep_state,
                        id: node.id.clone(),
                        store: self.env.store.clone(),
                        every: chrono::Duration::from_std(settings.snapshot_interval.get())
                            .unwrap_or(chrono::Duration::seconds(30)),
                        last: None,
                        max_bytes: settings.snapshot_max_bytes,
                        counters: counters.clone(),
                        writer: self.env.snapshots.clone(),
                        // A stage restored from a large state takes its first one off
                        // the async workers too.
                        heavy: settings.keep_state
                            && self
                                .env
                                .store
                                .stage_state_len(&node.id)
                                .ok()
                                .flatten()
                                .is_some_and(|n| n >= run::HEAVY_STATE_BYTES as u64),
                    };
                    if let Some(before) = saved_shapes.get(&node.id) {
                        // The state the new stage holds, restored from its predecessor's.
                        let kept = stage
                            .snapshot(settings.snapshot_max_bytes)
                            .and_then(Snapshot::into_text)
                            .is_some_and(|now| {
                                let now = saved_shape(std::io::BufReader::new(now.reader()));
                                !now.is_null() && now == *before
                            });
                        outcomes.push((node.id.clone(), kept));
                    }
                    let cfg = p.stages[node.name.as_str()].clone();
                    let again = move || {
                        let stage = cfg.build(&cx, &services)?;
                        Ok(super::fault::stage(&cx.id, stage))
                    };
                    let stage = super::fault::stage(&node.id, stage);
                    Box::pin(run_stage(stage, input, output, saver, supervisor, again))
                }
                Component::Sink(sink) => {
                    let input = Input::new(
                        receivers.remove(&i).expect("sinks have a channel"),
                        in_edges.remove(&i).unwrap_or_default(),
                        counters,
                    );
                    let cfg = p.sinks[node.name.as_str()].clone();
                    let again = move || {
                        let sink = cfg.build(&cx, &services)?;
                        Ok(super::fault::sink(&cx.id, sink))
                    };
                    let sink = super::fault::sink(&node.id, sink);
                    Box::pin(run_sink(sink, input, supervisor, again))
                }
            };
            let ended = self.env.ended.clone();
            let id = node.id.clone();
            let instance = live_node.instance;
            self.running += 1;
            live_node.task = Some(tokio::spawn(async move {
                // Each runner catches its node's panics; this one is for the runner's own.
                let result = std::panic::AssertUnwindSafe(future)
                    .catch_unwind()
                    .await
                    .map_err(|p| panic_message(&*p));
                let _ = done_tx.send(true);
                let _ = ended.send(Ended {
                    id,
                    instance,
                    result,
                });
            }));
            self.nodes.insert(node.id.clone(), live_node);
        }
        // Graph order for reports.
        let order: Vec<Arc<str>> = graph.nodes.iter().map(|n| n.id.clone()).collect();
        self.nodes
            .sort_by_cached_key(|id, _| order.iter().position(|o| o == id).unwrap_or(usize::MAX));
        Ok(outcomes)
    }
}

/// The `shape` of a stage's saved state (its JSON text; what its configuration made the
/// state mean), read without keeping the rest; `null` when it has none or cannot be read.
fn saved_shape(text: impl std::io::Read) -> serde_json::Value {
    #[derive(serde::Deserialize)]
    struct ShapeOnly {
        #[serde(default)]
        shape: serde_json::Value,
    }
    serde_json::from_reader::<_, ShapeOnly>(text).map_or(serde_json::Value::Null, |s| s.shape)
}

/// Nodes about to start: their channels made and wired (see [`Live::prepare`]).
struct Prepared {
    which: Vec<usize>,
    receivers: HashMap<usize, mpsc::Receiver<Envelope>>,
    fresh: HashMap<usize, LiveNode>,
    targets: HashMap<usize, Vec<Target>>,
    in_edges: HashMap<usize, Vec<u32>>,
    /// What running nodes must add to their outputs to send to the new ones.
    rewires: HashMap<Arc<str>, Vec<Rewire>>,
}
