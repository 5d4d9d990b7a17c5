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
    BuildContext, Input, Message, NodeCounters, NodeResult, Output, SharedClock, SourceContext,
    Stage,
};
use crate::components::Services;
use crate::config::Config;
use crate::graph::{Diff, DiffNode, Graph, GraphNode, NodeRole};
use crate::node::edge::{self, Envelope, Rewire, Target, Wiring};
use crate::sources::internal::InternalAlerts;

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

fn make_env(
    config: &Config,
    clock: SharedClock,
    shutdown: CancellationToken,
    ended: mpsc::UnboundedSender<Ended>,
) -> Result<Env, BuildError> {
    let settings = &config.settings;
    let store =
        Arc::new(
            crate::store::Store::open(&settings.state_dir).map_err(|e| BuildError {
                id: "state_dir".into(),
                message: e.to_string(),
            })?,
        );
    let services = Arc::new(build_services(settings, &clock).map_err(|e| BuildError {
        id: format!("connections.pce.{}", e.name),
        message: e.source.to_string(),
    })?);
    restore_inhibitions(&services.delivery.inhibitor, &store, clock.now());
    Ok(Env {
        clock,
        helpers_stop: shutdown.child_token(),
        shutdown,
        store,
        services,
        ended,
    })
}

/// Starts what the services of a run start once every node is built (the traffic hubs
/// of the PCE connections `pce_traffic` sources read); the tasks end on `stop`.
fn start_helpers(
    services: &Services,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    services
        .pce
        .values()
        .filter_map(|p| p.start(stop))
        .collect()
}

/// Prunes the alert history to `retention` at once and then hourly (engine time), until
/// the shared helpers stop; the deletes run on the blocking pool.
fn start_pruner(
    env: &Env,
    retention: crate::config::RetentionConfig,
) -> tokio::task::JoinHandle<()> {
    let (store, clock, stop) = (
        env.store.clone(),
        env.clock.clone(),
        env.helpers_stop.clone(),
    );
    tokio::spawn(async move {
        loop {
            let before = (clock.now() - retention.history_max_age.span()).timestamp_millis();
            let max_rows = retention.history_max_rows;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.prune_history(before, max_rows)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(alerts = n, "alert history pruned (settings retention)")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the alert history"),
                Err(e) => tracing::warn!(error = %e, "the history pruning failed"),
            }
            let next = clock.now() + chrono::Duration::hours(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = clock.sleep_until(next) => {}
            }
        }
    })
}

/// Shows a new inhibitor the alerts that were firing when the last one stopped (the
/// alert history's open episodes of the last week), so a restart or a settings change
/// does not unmute their targets.
fn restore_inhibitions(
    inhibitor: &crate::sinks::delivery::inhibit::Inhibitor,
    store: &crate::store::Store,
    now: crate::event::Timestamp,
) {
    if !inhibitor.is_active() {
        return;
    }
    let since = (now - chrono::Duration::days(7)).timestamp_millis();
    match store.firing_alerts(since, crate::sinks::delivery::inhibit::MAX_SOURCES) {
        Ok(alerts) => {
            for a in alerts.iter().filter(|a| a.episode) {
                inhibitor.observe(a, &a.to_value());
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open alerts; inhibitions start empty")
        }
    }
}

/// What identifies a node's configuration: its YAML (after interpolation) and the files
/// it reads (a script, the templates beside the pipeline).
fn fingerprint(config: &Config, node: &GraphNode) -> String {
    let p = &config.pipelines[node.pipeline];
    let section = match node.role {
        NodeRole::Source => "sources",
        NodeRole::Stage => "stages",
        NodeRole::Sink => "sinks",
    };
    let body = p
        .raw
        .get(section)
        .and_then(|s| s.get(&node.name))
        .cloned()
        .unwrap_or_default();
    let mut fp = body.to_string();
    let dir = p.file.parent().unwrap_or(std::path::Path::new(""));
    if let Some(file) = body.get("file").and_then(|f| f.as_str())
        && node.role == NodeRole::Stage
    {
        fp.push_str(&std::fs::read_to_string(dir.join(file)).unwrap_or_default());
    }
    if node.role == NodeRole::Sink
        && let Ok(entries) = std::fs::read_dir(dir.join("templates"))
    {
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            fp.push_str(&f.display().to_string());
            fp.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    fp
}

impl Live {
    /// Builds and starts the nodes `which` (indices into `graph`) of `config`. Channels
    /// of every node to start are made first, so they can be wired to each other; nodes
    /// already running (in `self.nodes`, not being started) are wired to with a new edge.
    /// `saved_shapes`: for rebuilt stages, the shape of the state their predecessor saved.
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
    /// that ran before (a reload changed them). `saved`: for rebuilt stages, the state
    /// their predecessor saved, to report whether it was kept.
    fn spawn(
        &mut self,
        config: &Config,
        graph: &Graph,
        prepared: Prepared,
        mut built: HashMap<usize, Component>,
        rebuilt: &HashSet<Arc<str>>,
        saved: &HashMap<Arc<str>, serde_json::Value>,
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
                self.env.clock.clone(),
                self.env.services.internal.clone(),
                self.pipeline_stop(&pipeline),
            );
            // What builds the node again after a failure.
            let cx = build_context(&self.env, config, node, true, counters.clone());
            let services = self.env.services.clone();
            let p = &config.pipelines[node.pipeline].config;
            let future: futures::future::BoxFuture<'static, NodeResult> = match component {
                Component::Source(source) => {
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
                        counters,
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
                    };
                    if let Some(before) = saved.get(&node.id) {
                        let now = stage.snapshot();
                        let kept = now
                            .as_ref()
                            .and_then(|s| s.get("shape"))
                            .is_some_and(|shape| before.get("shape") == Some(shape));
                        outcomes.push((node.id.clone(), kept));
                    }
                    let cfg = p.stages[node.name.as_str()].clone();
                    let again = move || cfg.build(&cx, &services);
                    Box::pin(run_stage(stage, input, output, saver, supervisor, again))
                }
                Component::Sink(sink) => {
                    let input = Input::new(
                        receivers.remove(&i).expect("sinks have a channel"),
                        in_edges.remove(&i).unwrap_or_default(),
                        counters,
                    );
                    let cfg = p.sinks[node.name.as_str()].clone();
                    let again = move || cfg.build(&cx, &services);
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

/// A built node.
enum Component {
    Source(Box<dyn super::Source>),
    Stage(Box<dyn Stage>),
    Sink(Box<dyn super::Sink>),
}

impl Component {
    /// Builds node `node` of `config` in `cx`.
    fn build(
        config: &Config,
        node: &GraphNode,
        cx: &BuildContext,
        services: &Services,
    ) -> Result<Component, super::NodeError> {
        let p = &config.pipelines[node.pipeline].config;
        let name = node.name.as_str();
        let missing = || format!("{} is not in the configuration", node.id);
        Ok(match node.role {
            NodeRole::Source => {
                let readers = filter_readers(p, name);
                let source = p.sources.get(name).ok_or_else(missing)?;
                Component::Source(source.build(cx, services, readers.as_deref())?)
            }
            NodeRole::Stage => Component::Stage(
                p.stages
                    .get(name)
                    .ok_or_else(missing)?
                    .build(cx, services)?,
            ),
            NodeRole::Sink => {
                Component::Sink(p.sinks.get(name).ok_or_else(missing)?.build(cx, services)?)
            }
        })
    }
}

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
struct ViewNode {
    id: Arc<str>,
    pipeline: String,
    name: String,
    role: NodeRole,
    kind: String,
    inputs: Vec<String>,
    counters: Arc<NodeCounters>,
    health: Arc<Health>,
}

/// What the API, `/metrics` and the dashboard read: made whole at a start and after a
/// reload and swapped in at once, so a reload — however long its hand-over — never makes
/// a reader wait.
struct View {
    pipelines: Vec<(String, Option<String>)>,
    nodes: Vec<ViewNode>,
    services: Arc<Services>,
    store: Arc<crate::store::Store>,
    clock: SharedClock,
}

impl Live {
    /// The read model of the graph as it is now.
    fn view(&self) -> View {
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
                    state: n.health.state(),
                    restarts: n.health.restarts(),
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

    /// Changes the running graph to `new` (already validated): unchanged nodes keep
    /// running with their state; changed nodes are retired (they finish what they hold
    /// and save their state) and rebuilt (restoring the state when its meaning did not
    /// change); removed nodes drain and stop; added nodes start. A change to the settings
    /// rebuilds every node with new connections (sources stop and start again from their
    /// checkpoints). Returns what was done.
    pub async fn reload(&self, new: &Config) -> Result<ReloadReport, ReloadError> {
        let mut live = self.live.lock().await;
        let result = Self::apply(&mut live, new).await;
        // Readers see the graph as the reload left it, at once.
        self.view.store(Arc::new(live.view()));
        result
    }

    async fn apply(live: &mut Live, new: &Config) -> Result<ReloadReport, ReloadError> {
        if live.env.shutdown.is_cancelled() {
            return Err(ReloadError("vigil is shutting down".into()));
        }
        let graph = new.graph();
        let settings_changed = live.config.settings_raw != new.settings_raw;
        let web_changed = live.config.settings_raw.get("web") != new.settings_raw.get("web");
        let new_ids: HashMap<Arc<str>, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let mut report = ReloadReport {
            settings_changed,
            ..ReloadReport::default()
        };
        if web_changed {
            // The listener is not part of the graph: it keeps its address and token.
            tracing::warn!("the web: settings changed; they take effect when vigil is restarted");
            report.restart_needed.push("web".into());
        }
        let old_nodes: Vec<DiffNode> = live
            .nodes
            .iter()
            .map(|(id, n)| DiffNode {
                id: id.clone(),
                pipeline: n.pipeline.clone(),
                fingerprint: n.fingerprint.clone(),
            })
            .collect();
        let new_nodes: Vec<DiffNode> = graph
            .nodes
            .iter()
            .map(|n| DiffNode {
                id: n.id.clone(),
                pipeline: new.pipelines[n.pipeline].config.name.as_str().into(),
                fingerprint: fingerprint(new, n),
            })
            .collect();
        let stopped: HashSet<&str> = live
            .pipeline_stops
            .iter()
            .filter(|(_, t)| t.is_cancelled())
            .map(|(p, _)| p.as_str())
            .collect();
        let diff = Diff::between(&old_nodes, &new_nodes, settings_changed, &stopped);
        let retire: Vec<Arc<str>> = diff.retired().cloned().collect();
        let mut start: Vec<usize> = diff.started().map(|id| new_ids[id]).collect();
        start.sort_unstable();
        let text = |v: &[Arc<str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        report.added = text(&diff.added);
        report.removed = text(&diff.removed);
        report.changed = text(&diff.changed);
        report.unchanged = diff.unchanged.len();
        if report.is_empty() {
            live.config = new.clone();
            return Ok(report);
        }
        // New settings: new connections and state database, made before anything is
        // touched (a connection that cannot be set up fails the reload).
        let new_env = if settings_changed {
            let env = make_env(
                new,
                live.env.clock.clone(),
                live.env.shutdown.clone(),
                live.env.ended.clone(),
            )
            .map_err(|e| ReloadError(format!("{e}; the running pipelines are unchanged")))?;
            Some(env)
        } else {
            None
        };
        // Check that every node to start builds, before anything is touched. Sinks are
        // kept and started as built (a file sink has opened its file); stages are built
        // again once their predecessors saved their state, and a source's build may
        // register it with a shared helper, so it waits too.
        let rebuilt: HashSet<Arc<str>> = report
            .changed
            .iter()
            .map(|id| Arc::from(id.as_str()))
            .collect();
        let mut built = HashMap::new();
        for &i in &start {
            let node = &graph.nodes[i];
            let p = &new.pipelines[node.pipeline];
            let counters = live.nodes.get(&node.id).map(|n| n.counters.clone());
            let env = new_env.as_ref().unwrap_or(&live.env);
            let services = &env.services;
            let cx = build_context(
                env,
                new,
                node,
                rebuilt.contains(&node.id),
                counters.unwrap_or_default(),
            );
            let result = match node.role {
                NodeRole::Source => Ok(()),
                NodeRole::Stage => p.config.stages[node.name.as_str()]
                    .build(&cx, services)
                    .map(drop),
                NodeRole::Sink => p.config.sinks[node.name.as_str()]
                    .build(&cx, services)
                    .map(|sink| drop(built.insert(i, Component::Sink(sink)))),
            };
            if let Err(e) = result {
                return Err(ReloadError(format!(
                    "{}: {e}; the running pipelines are unchanged",
                    node.id
                )));
            }
        }
        // Retire: running upstreams stop sending to retired nodes (their Done reaches
        // them after everything sent before) and, in the same step, start sending to the
        // new nodes, whose channels hold it until they start; retired sources are stopped.
        let retiring: HashSet<Arc<str>> = retire.iter().cloned().collect();
        let old_graph = live.config.graph();
        let mut waits = Vec::new();
        let mut removals: HashMap<Arc<str>, Vec<Rewire>> = HashMap::new();
        // The new nodes' channels; running nodes that are retired are not wired to.
        let mut retired_nodes: Vec<(Arc<str>, LiveNode)> = retire
            .iter()
            .filter_map(|id| live.nodes.shift_remove(id).map(|n| (id.clone(), n)))
            .collect();
        let mut prepared = live.prepare(new, &graph, &start);
        for node in &old_graph.nodes {
            if !retiring.contains(&node.id) {
                continue;
            }
            for &from in &node.inputs {
                let from_id = &old_graph.nodes[from].id;
                if retiring.contains(from_id) {
                    continue; // it closes its outputs when it ends
                }
                let (done, wait) = tokio::sync::oneshot::channel();
                removals
                    .entry(from_id.clone())
                    .or_default()
                    .push(Rewire::Remove {
                        to: node.id.clone(),
                        done,
                    });
                waits.push(wait);
            }
        }
        for (from, adds) in std::mem::take(&mut prepared.rewires) {
            removals.entry(from).or_default().extend(adds);
        }
        for (from, changes) in removals {
            if let Some(w) = live.nodes.get(&from).and_then(|n| n.wiring.clone()) {
                w.push(changes);
            }
        }
        let mut saved: HashMap<Arc<str>, serde_json::Value> = HashMap::new();
        let mut finished = Vec::new();
        for (id, n) in &retired_nodes {
            if n.role == NodeRole::Source {
                n.stop.cancel();
            }
            finished.push((id.clone(), n.finished.clone()));
        }
        let handover = async {
            for mut f in finished {
                let _ = f.1.wait_for(|done| *done).await;
            }
        };
        let handover_timeout = live.config.settings.handover_timeout.get();
        if tokio::time::timeout(handover_timeout, handover)
            .await
            .is_err()
        {
            // Still busy (a send that does not come back): stopped, so the new version
            // can take over; a delivering sink's unsent messages stay in its outbox.
            for (id, n) in &mut retired_nodes {
                if *n.finished.borrow() {
                    continue;
                }
                let Some(task) = n.task.take() else { continue };
                task.abort();
                if task.await.is_err_and(|e| e.is_cancelled()) {
                    live.running = live.running.saturating_sub(1);
                    tracing::error!(node = %id, wait = %humantime::format_duration(handover_timeout), "the node did not finish within handover_timeout; stopped");
                    report.aborted.push(id.to_string());
                }
            }
        }
        for w in waits {
            let _ = w.await;
        }
        for (id, n) in retired_nodes {
            if let Ok(Some(state)) = live.env.store.stage_state(&id) {
                saved.insert(id.clone(), state);
            }
            if new_ids.contains_key(&id) {
                // The new incarnation goes on counting.
                if let Some(i) = new_ids.get(&id)
                    && let Some(f) = prepared.fresh.get_mut(i)
                {
                    f.counters = n.counters.clone();
                }
            } else {
                let (events_in, events_out, errors) = n.counters.get();
                tracing::info!(node = %id, events_in, events_out, errors, "node removed by a reload");
            }
        }
        if let Some(env) = new_env {
            // Every node has been retired: the old connections' helpers (traffic hubs)
            // stop and store their cursors, then the new connections take over.
            live.env.helpers_stop.cancel();
            for helper in live.helpers.drain(..) {
                let _ = helper.await;
            }
            live.env = env;
            let pruner = start_pruner(&live.env, new.settings.retention.clone());
            live.helpers.push(pruner);
        }
        // Start the new nodes.
        let outcomes = live
            .spawn(new, &graph, prepared, built, &rebuilt, &saved)
            .map_err(|e| ReloadError(format!("{e}; the graph now runs without it")))?;
        for (id, kept) in outcomes {
            if kept {
                report.state_kept.push(id.to_string());
            } else {
                report.state_reset.push(id.to_string());
            }
        }
        let helpers_stop = live.env.helpers_stop.clone();
        let helpers = start_helpers(&live.env.services, &helpers_stop);
        live.helpers.extend(helpers);
        live.config = new.clone();
        Ok(report)
    }
}

/// The context node `node` of `config` is built in.
fn build_context(
    env: &Env,
    config: &Config,
    node: &GraphNode,
    rebuilt: bool,
    counters: Arc<NodeCounters>,
) -> BuildContext {
    let p = &config.pipelines[node.pipeline];
    BuildContext {
        id: node.id.clone(),
        pipeline: p.config.name.as_str().into(),
        node: node.name.as_str().into(),
        base_dir: p
            .file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        state_dir: config.settings.state_dir.clone(),
        clock: env.clock.clone(),
        store: env.store.clone(),
        keep_state: config.settings.keep_state,
        public_url: config.settings.public_url.as_str().into(),
        history_interval: config.settings.history_interval.span(),
        rebuilt,
        counters,
    }
}

/// The filter stages reading node `name` of `pipeline`, when every reader is one.
fn filter_readers(
    pipeline: &crate::config::PipelineConfig,
    name: &str,
) -> Option<Vec<crate::stages::filter::FilterConfig>> {
    let reads = |inputs: &[String]| inputs.iter().any(|i| i == name);
    if pipeline.sinks.values().any(|s| reads(s.inputs())) {
        return None;
    }
    let mut filters = Vec::new();
    for stage in pipeline.stages.values().filter(|s| reads(s.inputs())) {
        match stage {
            crate::components::StageConfig::Filter(f) => filters.push(f.clone()),
            _ => return None,
        }
    }
    (!filters.is_empty()).then_some(filters)
}

/// Saves a stage's state every `every` of clock time and when it stops.
struct Snapshots {
    tap: Arc<crate::node::Tap>,
    inhibitor: Arc<crate::sinks::delivery::inhibit::Inhibitor>,
    enabled: bool,
    id: Arc<str>,
    store: Arc<crate::store::Store>,
    every: chrono::Duration,
    last: Option<crate::event::Timestamp>,
}

impl Snapshots {
    fn on_tick(&mut self, stage: &dyn Stage, now: crate::event::Timestamp) {
        match self.last {
            None => self.last = Some(now),
            Some(last) if now - last >= self.every => {
                self.last = Some(now);
                self.save(stage);
            }
            Some(_) => {}
        }
    }

    /// Records the alerts among `out` in the alert history and shows them on the live
    /// stream.
    /// Alerts handed on unchanged (`passed`: the alerts the stage received, by address)
    /// were recorded by the stage that raised them and are not again.
    fn record_alerts(&self, out: &[Arc<crate::event::Event>], passed: &[usize]) {
        let new = || {
            out.iter()
                .filter(|e| e.alert().is_some() && !passed.contains(&address(e)))
        };
        self.tap.alerts(new());
        if self.inhibitor.is_active() {
            for event in new() {
                if let Some(alert) = event.alert() {
                    self.inhibitor.observe(alert, event.data());
                }
            }
        }
        // One transaction for the batch's alerts: one write to disk, not one each.
        let mut alerts = new().filter_map(|e| e.alert()).peekable();
        if alerts.peek().is_some()
            && let Err(e) = self.store.record_alerts(alerts)
        {
            tracing::warn!(node = %self.id, error = %e, "cannot record the alerts in the history");
        }
    }

    fn save(&self, stage: &dyn Stage) {
        if !self.enabled {
            return;
        }
        if let Some(state) = stage.snapshot()
            && let Err(e) = self.store.set_stage_state(&self.id, &state)
        {
            tracing::error!(node = %self.id, error = %e, "cannot save the stage's state");
        }
    }
}

/// Where an event lives: tells an event handed on from a new one.
fn address(e: &Arc<crate::event::Event>) -> usize {
    Arc::as_ptr(e).addr()
}

/// Builds a failed node again, after the wait its supervisor asks for (`wait`: `false`
/// when it was cut short by a stop); a build that fails is one more failure. `None` when
/// the supervisor gives up or the wait is cut short.
async fn restart<T>(
    supervisor: &mut Supervisor,
    error: String,
    again: &mut impl FnMut() -> Result<T, super::NodeError>,
    wait: &mut impl Pause,
) -> Option<T> {
    let mut error = error;
    loop {
        match supervisor.failed(&error) {
            Verdict::GiveUp => return None,
            Verdict::Restart(d) => {
                if !wait.pause(d).await {
                    return None;
                }
                match again() {
                    Ok(built) => {
                        supervisor.running();
                        return Some(built);
                    }
                    Err(e) => error = format!("cannot start it again: {e}"),
                }
            }
        }
    }
}

/// What a restart waits on.
trait Pause {
    /// Waits `d`; `false` when a stop cut the wait short.
    fn pause(&mut self, d: std::time::Duration) -> impl Future<Output = bool> + Send + '_;
}

/// A source waits on its own context: ticks flow meanwhile and a stop ends the wait.
impl Pause for SourceContext {
    fn pause(&mut self, d: std::time::Duration) -> impl Future<Output = bool> + Send + '_ {
        self.sleep(d)
    }
}

/// Stages and sinks wait on the clock (their inputs end them).
struct OnClock(SharedClock);

impl Pause for OnClock {
    fn pause(&mut self, d: std::time::Duration) -> impl Future<Output = bool> + Send + '_ {
        wait_on(&self.0, d)
    }
}

/// What a node's run came to: `Ok(())` when it ended normally, else why it failed.
async fn attempt(run: impl Future<Output = NodeResult>) -> Result<(), String> {
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(panic_message(&*p)),
    }
}

/// Runs a source, restarting it when it fails (not when it is being stopped). It waits
/// on its own context: ticks flow meanwhile and a stop ends the wait.
async fn run_source(
    mut source: Box<dyn super::Source>,
    mut cx: SourceContext,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn super::Source>, super::NodeError>,
) -> NodeResult {
    let result = loop {
        let error = match attempt(source.run(&mut cx)).await {
            Ok(()) => break Ok(()),
            Err(e) => e,
        };
        if cx.is_shutting_down() {
            break Err(error.into());
        }
        match restart(&mut supervisor, error.clone(), &mut again, &mut cx).await {
            Some(s) => source = s,
            None => break Err(error.into()),
        }
    };
    cx.into_output().close().await;
    result
}

/// Runs a sink on its input, building it again when it fails; when its supervisor gives
/// up, what still arrives is counted as failed until the input ends.
async fn run_sink(
    mut sink: Box<dyn super::Sink>,
    mut input: Input,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn super::Sink>, super::NodeError>,
) -> NodeResult {
    loop {
        let error = match attempt(sink.run(&mut input)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let mut clock = OnClock(supervisor.clock().clone());
        match restart(&mut supervisor, error.clone(), &mut again, &mut clock).await {
            Some(s) => sink = s,
            None => {
                while let Some(msg) = input.recv().await {
                    if let Message::Events(events) = msg {
                        input.counters().add_errors(events.len());
                        events.iter().for_each(|e| e.fail());
                    }
                }
                return Err(error.into());
            }
        }
    }
}

/// Runs `f` on the stage, catching a panic: its message. A stage that may take long
/// ([`Stage::blocking`]) runs with its worker thread handed over to the blocking pool
/// meanwhile, the worker's other tasks moved to a new one.
fn guarded<R>(
    stage: &mut Box<dyn Stage>,
    f: impl FnOnce(&mut dyn Stage) -> R,
) -> Result<R, String> {
    let blocking = stage.blocking();
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(stage.as_mut())))
            .map_err(|p| panic_message(&*p))
    };
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if blocking && multi_thread {
        tokio::task::block_in_place(run)
    } else {
        run()
    }
}

async fn run_stage(
    mut stage: Box<dyn Stage>,
    mut input: Input,
    mut output: Output,
    mut saver: Snapshots,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn Stage>, super::NodeError>,
) -> NodeResult {
    let mut clock = OnClock(supervisor.clock().clone());
    let mut out = Vec::new();
    let mut downstream_gone = false;
    // Why the stage stopped for good, when its supervisor gave up.
    let mut gave_up: Option<String> = None;
    while let Some(msg) = input.recv().await {
        if downstream_gone || gave_up.is_some() {
            if let Message::Events(events) = &msg {
                input.counters().add_errors(events.len());
                for e in events {
                    e.fail();
                }
            }
            continue;
        }
        let step = match msg {
            Message::Events(events) => {
                let passed: Vec<usize> = events
                    .iter()
                    .filter(|e| e.alert().is_some())
                    .map(address)
                    .collect();
                let mut rest = events.into_iter();
                match guarded(&mut stage, |stage| {
                    for event in rest.by_ref() {
                        stage.process(event, &mut out);
                    }
                }) {
                    Ok(()) => {
                        saver.record_alerts(&out, &passed);
                        Ok(output.send(std::mem::take(&mut out)).await)
                    }
                    Err(panic) => {
                        // What the batch made is dropped and the batch failed, so a source
                        // that can sends it again; the event being handled when the stage
                        // panicked is set aside (counted), lest it take the stage down again.
                        let failed: Vec<Arc<crate::event::Event>> =
                            rest.chain(out.drain(..)).collect();
                        failed.iter().for_each(|e| e.fail());
                        input.counters().add_errors(failed.len() + 1);
                        Err(panic)
                    }
                }
            }
            Message::Tick(now) => match guarded(&mut stage, |stage| stage.tick(now, &mut out)) {
                Ok(()) => {
                    saver.record_alerts(&out, &[]);
                    saver.on_tick(stage.as_ref(), now);
                    Ok(match output.send(std::mem::take(&mut out)).await {
                        Ok(()) => output.tick(now).await,
                        Err(e) => Err(e),
                    })
                }
                Err(panic) => {
                    out.clear();
                    Err(panic)
                }
            },
        };
        match step {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // Keep draining so upstream nodes are not blocked, but nothing can be
                // delivered any more: count it.
                tracing::error!(
                    "every downstream of this stage has stopped; events are being counted as errors"
                );
                downstream_gone = true;
            }
            Err(panic) => {
                match restart(&mut supervisor, panic.clone(), &mut again, &mut clock).await {
                    // Built again: it restored the state it saved last.
                    Some(s) => stage = s,
                    None => gave_up = Some(panic),
                }
            }
        }
    }
    if gave_up.is_none() {
        match guarded(&mut stage, |stage| stage.finish(&mut out)) {
            Ok(()) => {
                saver.record_alerts(&out, &[]);
                saver.save(stage.as_ref());
                let _ = output.send(out).await;
            }
            Err(panic) => gave_up = Some(panic),
        }
    }
    output.close().await;
    match gave_up {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, ack_pair};
    use crate::node::edge;
    use chrono::Utc;
    use serde_json::json;

    /// Hands every event on; panics on a record with `boom`.
    struct Fragile;

    impl Stage for Fragile {
        fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
            assert!(event.data().get("boom").is_none(), "a bug met its record");
            out.push(event);
        }
    }

    fn event(v: serde_json::Value) -> Arc<Event> {
        Arc::new(Event::from_record(v, "p.in".into(), Utc::now()))
    }

    /// A stage that panics is built again (the record that took it down set aside and
    /// counted, the rest of its batch failed so its source sends it again), goes on with
    /// what comes next, and is reported with a `vigil.node_failed` alert; after more
    /// panics than allowed it gives up, stops its pipeline and fails what still arrives.
    #[tokio::test]
    async fn a_panicking_stage_is_restarted_then_given_up_on() {
        let services = Services::default();
        let counters = Arc::new(NodeCounters::default());
        let (up_tx, up_rx) = edge::channel(16);
        let mut upstream = Output::new(vec![(0, up_tx)], Arc::new(NodeCounters::default()));
        let input = Input::new(up_rx, vec![0], counters.clone());
        let (down_tx, down_rx) = edge::channel(16);
        let output = Output::new(vec![(0, down_tx)], counters.clone());
        let mut downstream = Input::new(down_rx, vec![0], Arc::new(NodeCounters::default()));
        let saver = Snapshots {
            tap: services.tap.clone(),
            inhibitor: services.delivery.inhibitor.clone(),
            enabled: false,
            id: "p.fragile".into(),
            store: Arc::new(crate::store::Store::in_memory().unwrap()),
            every: chrono::Duration::seconds(30),
            last: None,
        };
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let mut told = services.internal.subscribe();
        let policy = crate::config::RestartsConfig {
            max_failures: 1,
            backoff: crate::time::Duration::from_millis(1),
            max_backoff: crate::time::Duration::from_millis(1),
            ..Default::default()
        };
        let supervisor = Supervisor::new(
            "p.fragile".into(),
            "p".into(),
            policy,
            health.clone(),
            Arc::new(crate::time::WallClock),
            services.internal.clone(),
            stop.clone(),
        );
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let again = {
            let builds = builds.clone();
            move || {
                builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Box::new(Fragile) as Box<dyn Stage>)
            }
        };
        let task = tokio::spawn(run_stage(
            Box::new(Fragile),
            input,
            output,
            saver,
            supervisor,
            again,
        ));

        // A batch with the bad record in the middle: it is failed, nothing of it goes on.
        let (guard, ack) = ack_pair();
        let batch: Vec<Arc<Event>> = [json!({"n": 1}), json!({"boom": true}), json!({"n": 2})]
            .into_iter()
            .map(|v| Arc::new(Event::from_record(v, "p.in".into(), Utc::now()).with_ack(&guard)))
            .collect();
        drop(guard);
        upstream.send(batch).await.unwrap();
        assert!(
            !ack.delivered().await,
            "the batch is failed, to be sent again"
        );
        // The rebuilt stage handles the next batch.
        upstream.send(vec![event(json!({"n": 3}))]).await.unwrap();
        let Some(Message::Events(got)) = downstream.recv().await else {
            panic!("the restarted stage hands on")
        };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data()["n"], 3);
        assert_eq!(builds.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(health.restarts(), 1);
        assert_eq!(health.state(), NodeState::Running);
        let first = told.recv().await.unwrap();
        assert_eq!(first.stage, "node_failed");
        assert_eq!(first.fields["state"], "restarting");
        assert!(
            first.summary.contains("panicked: a bug met its record"),
            "{}",
            first.summary
        );

        // A second panic is one too many: the pipeline is stopped, the stage fails what
        // still comes and ends with its input.
        upstream
            .send(vec![event(json!({"boom": 1}))])
            .await
            .unwrap();
        let (guard, ack) = ack_pair();
        let late = Arc::new(
            Event::from_record(json!({"n": 4}), "p.in".into(), Utc::now()).with_ack(&guard),
        );
        drop(guard);
        upstream.send(vec![late]).await.unwrap();
        assert!(!ack.delivered().await, "what arrives after is failed");
        assert!(stop.is_cancelled(), "the pipeline was told to stop");
        assert_eq!(health.state(), NodeState::Failed);
        assert_eq!(told.recv().await.unwrap().fields["state"], "failed");
        upstream.close().await;
        let result = task.await.unwrap();
        assert!(result.is_err(), "it ends with its failure");
        assert!(downstream.recv().await.is_none(), "its output is closed");
        // 1 + 2 + 1 + 1: the bad records and the events failed with them.
        assert_eq!(counters.get().2, 5);
    }
}
