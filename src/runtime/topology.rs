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
use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::FutureExt;
use indexmap::IndexMap;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::edge::{self, Envelope, Rewire, Target, Wiring};
use super::{
    BuildContext, Connections, Input, Message, NodeCounters, NodeResult, Output, SharedClock,
    SourceContext, Stage,
};
use crate::config::Config;
use crate::graph::{Graph, GraphNode, NodeRole};

/// How long a reload waits for a retired node to hand over before it reports a failure.
const HANDOVER: StdDuration = StdDuration::from_secs(60);

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
    /// Turns `true` when its task has ended.
    finished: watch::Receiver<bool>,
}

/// What every node is built with, shared by the incarnations of a run.
struct Env {
    clock: SharedClock,
    shutdown: CancellationToken,
    /// Stops the shared helpers started with these connections (a settings change
    /// replaces them).
    helpers_stop: CancellationToken,
    store: Arc<crate::store::Store>,
    connections: Arc<Connections>,
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
}

/// A graph whose nodes are running.
pub struct RunningTopology {
    live: Arc<Mutex<Live>>,
    ended: mpsc::UnboundedReceiver<Ended>,
    shutdown: CancellationToken,
    counters: Vec<(String, Arc<NodeCounters>)>,
    internal: tokio::sync::broadcast::Sender<crate::event::Alert>,
}

/// Changes a running graph to a new configuration (see [`Reloader::reload`]).
#[derive(Clone)]
pub struct Reloader {
    live: Arc<Mutex<Live>>,
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
    pub fn internal_alerts(&self) -> tokio::sync::broadcast::Sender<crate::event::Alert> {
        self.internal.clone()
    }

    /// A handle that reloads this graph while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: self.live.clone(),
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
                    tracing::error!(node = %ended.id, error = %f, "node stopped with an error; shutting the graph down");
                    live.failures.insert(ended.id.clone(), f);
                    // Fail fast rather than run on with a hole in the graph: the sources
                    // stop and everything already read drains through what still runs.
                    self.shutdown.cancel();
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
    };
    let graph = Graph::from_config(config);
    let all: Vec<usize> = (0..graph.nodes.len()).collect();
    let prepared = live.prepare(config, &graph, &all);
    live.spawn(config, &graph, prepared, &HashMap::new())?;
    live.config = config.clone();
    let helpers = live
        .env
        .connections
        .start_after_build(&live.env.helpers_stop);
    live.helpers.extend(helpers);
    let counters = live
        .nodes
        .iter()
        .map(|(id, n)| (id.to_string(), n.counters.clone()))
        .collect();
    let internal = live.env.connections.internal_alerts().clone();
    Ok(RunningTopology {
        internal,
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
    let connections = Arc::new(
        Connections::build(settings, &clock).map_err(|e| BuildError {
            id: format!("connections.pce.{}", e.name),
            message: e.source.to_string(),
        })?,
    );
    restore_inhibitions(&connections, &store, clock.now());
    Ok(Env {
        clock,
        helpers_stop: shutdown.child_token(),
        shutdown,
        store,
        connections,
        ended,
    })
}

/// Shows a new inhibitor the alerts that were firing when the last one stopped (the
/// alert history's open episodes of the last week), so a restart or a settings change
/// does not unmute their targets.
fn restore_inhibitions(
    connections: &Connections,
    store: &crate::store::Store,
    now: crate::event::Timestamp,
) {
    let inhibitor = connections.inhibitor();
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
            fresh.insert(
                i,
                LiveNode {
                    role: node.role,
                    fingerprint: fingerprint(config, node),
                    counters,
                    inbound,
                    next_edge: 0,
                    wiring: (node.role != NodeRole::Sink).then(|| Arc::new(Wiring::default())),
                    stop: self.env.shutdown.child_token(),
                    instance: self.next_instance,
                    finished,
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

    /// Builds and starts the nodes `prepared` (see [`Live::prepare`]); the running inputs
    /// of the new nodes must have been told to send to them (`prepared.rewires`).
    /// `saved`: for rebuilt stages, the state their predecessor saved, to report whether
    /// it was kept.
    fn spawn(
        &mut self,
        config: &Config,
        graph: &Graph,
        prepared: Prepared,
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
        let mut built = Vec::new();
        for &i in &which {
            let node = &graph.nodes[i];
            let p = &config.pipelines[node.pipeline];
            let cx = build_context(&self.env, config, node);
            let fail = |e: super::NodeError| BuildError {
                id: node.id.to_string(),
                message: e.to_string(),
            };
            let component = match node.role {
                NodeRole::Source => Component::Source(
                    p.config.sources[node.name.as_str()]
                        .build(&cx)
                        .map_err(fail)?,
                ),
                NodeRole::Stage => Component::Stage(
                    p.config.stages[node.name.as_str()]
                        .build(&cx)
                        .map_err(fail)?,
                ),
                NodeRole::Sink => Component::Sink(
                    p.config.sinks[node.name.as_str()]
                        .build(&cx)
                        .map_err(fail)?,
                ),
            };
            built.push((i, component));
        }
        // Start them.
        let mut outcomes = Vec::new();
        for (i, component) in built {
            let node = &graph.nodes[i];
            let mut live_node = fresh.remove(&i).expect("made above");
            let counters = live_node.counters.clone();
            let (done_tx, finished) = watch::channel(false);
            live_node.finished = finished;
            let out_targets = targets.remove(&i).unwrap_or_default();
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
                    scx.set_tap(self.env.connections.tap().clone());
                    Box::pin(async move {
                        let result = source.run(&mut scx).await;
                        scx.into_output().close().await;
                        result
                    })
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
                        tap: self.env.connections.tap().clone(),
                        inhibitor: self.env.connections.inhibitor().clone(),
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
                    Box::pin(run_stage(stage, input, output, saver))
                }
                Component::Sink(sink) => {
                    let input = Input::new(
                        receivers.remove(&i).expect("sinks have a channel"),
                        in_edges.remove(&i).unwrap_or_default(),
                        counters,
                    );
                    sink.run(input)
                }
            };
            let ended = self.env.ended.clone();
            let id = node.id.clone();
            let instance = live_node.instance;
            self.running += 1;
            tokio::spawn(async move {
                let result = std::panic::AssertUnwindSafe(future)
                    .catch_unwind()
                    .await
                    .map_err(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                            .unwrap_or_else(|| "a panic".into())
                    });
                let _ = done_tx.send(true);
                let _ = ended.send(Ended {
                    id,
                    instance,
                    result,
                });
            });
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

enum Component {
    Source(Box<dyn super::Source>),
    Stage(Box<dyn Stage>),
    Sink(Box<dyn super::Sink>),
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
}

impl Reloader {
    /// Every running node with its counters, in graph order.
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        let live = self.live.lock().await;
        let graph = Graph::from_config(&live.config);
        graph
            .nodes
            .iter()
            .map(|n| {
                let (events_in, events_out, errors) = live
                    .nodes
                    .get(&n.id)
                    .map(|l| l.counters.get())
                    .unwrap_or_default();
                NodeStatus {
                    id: n.id.to_string(),
                    pipeline: live.config.pipelines[n.pipeline].config.name.clone(),
                    name: n.name.clone(),
                    role: n.role.as_str(),
                    kind: n.kind.clone(),
                    inputs: n
                        .inputs
                        .iter()
                        .map(|&i| graph.nodes[i].id.to_string())
                        .collect(),
                    events_in,
                    events_out,
                    errors,
                }
            })
            .collect()
    }

    /// The pipelines running: (name, description).
    pub async fn pipelines(&self) -> Vec<(String, Option<String>)> {
        let live = self.live.lock().await;
        live.config
            .pipelines
            .iter()
            .map(|p| (p.config.name.clone(), p.config.description.clone()))
            .collect()
    }

    /// The connections the graph uses (PCE clients and their statistics).
    pub async fn connections(&self) -> Arc<Connections> {
        self.live.lock().await.env.connections.clone()
    }

    /// What the API sees of the traffic.
    pub async fn tap(&self) -> Arc<super::Tap> {
        self.live.lock().await.env.connections.tap().clone()
    }

    /// The clock the graph runs on.
    pub async fn clock(&self) -> SharedClock {
        self.live.lock().await.env.clock.clone()
    }

    /// The state database the graph uses.
    pub async fn store(&self) -> Arc<crate::store::Store> {
        self.live.lock().await.env.store.clone()
    }

    /// Where vigil's own alerts are published now (a settings change makes a new feed).
    pub async fn internal_alerts(&self) -> tokio::sync::broadcast::Sender<crate::event::Alert> {
        self.live
            .lock()
            .await
            .env
            .connections
            .internal_alerts()
            .clone()
    }

    /// Changes the running graph to `new` (already validated): unchanged nodes keep
    /// running with their state; changed nodes are retired (they finish what they hold
    /// and save their state) and rebuilt (restoring the state when its meaning did not
    /// change); removed nodes drain and stop; added nodes start. A change to the settings
    /// rebuilds every node with new connections (sources stop and start again from their
    /// checkpoints). Returns what was done.
    pub async fn reload(&self, new: &Config) -> Result<ReloadReport, ReloadError> {
        let mut live = self.live.lock().await;
        if live.env.shutdown.is_cancelled() {
            return Err(ReloadError("vigil is shutting down".into()));
        }
        let graph = Graph::from_config(new);
        let settings_changed = live.config.settings_raw != new.settings_raw;
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
        let mut retire: Vec<Arc<str>> = Vec::new();
        let mut start: Vec<usize> = Vec::new();
        for (id, node) in &live.nodes {
            match new_ids.get(id) {
                None => {
                    report.removed.push(id.to_string());
                    retire.push(id.clone());
                }
                Some(&i) => {
                    if settings_changed || node.fingerprint != fingerprint(new, &graph.nodes[i]) {
                        report.changed.push(id.to_string());
                        retire.push(id.clone());
                        start.push(i);
                    } else {
                        report.unchanged += 1;
                    }
                }
            }
        }
        for (id, &i) in &new_ids {
            if !live.nodes.contains_key(id) {
                report.added.push(id.to_string());
                start.push(i);
            }
        }
        report.added.sort();
        start.sort_unstable();
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
        // Check that every node to start builds, before anything is touched (stages and
        // sinks: building a source may register it with a shared helper).
        for &i in &start {
            let node = &graph.nodes[i];
            let p = &new.pipelines[node.pipeline];
            let cx = build_context(new_env.as_ref().unwrap_or(&live.env), new, node);
            let result = match node.role {
                NodeRole::Source => Ok(()),
                NodeRole::Stage => p.config.stages[node.name.as_str()].build(&cx).map(drop),
                NodeRole::Sink => p.config.sinks[node.name.as_str()].build(&cx).map(drop),
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
        let old_graph = Graph::from_config(&live.config);
        let mut waits = Vec::new();
        let mut removals: HashMap<Arc<str>, Vec<Rewire>> = HashMap::new();
        // The new nodes' channels; running nodes that are retired are not wired to.
        let retired_nodes: Vec<(Arc<str>, LiveNode)> = retire
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
        if tokio::time::timeout(HANDOVER, handover).await.is_err() {
            return Err(ReloadError(format!(
                "the nodes to replace did not finish within {}s; the reload is incomplete",
                HANDOVER.as_secs()
            )));
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
        }
        // Start the new nodes.
        let outcomes = live
            .spawn(new, &graph, prepared, &saved)
            .map_err(|e| ReloadError(format!("{e}; the graph now runs without it")))?;
        for (id, kept) in outcomes {
            if kept {
                report.state_kept.push(id.to_string());
            } else {
                report.state_reset.push(id.to_string());
            }
        }
        let helpers_stop = live.env.helpers_stop.clone();
        let helpers = live.env.connections.start_after_build(&helpers_stop);
        live.helpers.extend(helpers);
        live.config = new.clone();
        Ok(report)
    }
}

/// The context node `node` of `config` is built in.
fn build_context(env: &Env, config: &Config, node: &GraphNode) -> BuildContext {
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
        connections: env.connections.clone(),
        store: env.store.clone(),
        keep_state: config.settings.keep_state,
        public_url: config.settings.public_url.as_str().into(),
        history_interval: config.settings.history_interval.span(),
        // Only a source asks a peer for less.
        readers: (node.role == crate::graph::NodeRole::Source)
            .then(|| filter_readers(&p.config, &node.name))
            .flatten(),
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
    tap: Arc<super::Tap>,
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
        for event in new() {
            let Some(alert) = event.alert() else { continue };
            if self.inhibitor.is_active() {
                self.inhibitor.observe(alert, event.data());
            }
            if let Err(e) = self.store.record_alert(alert) {
                tracing::warn!(node = %self.id, error = %e, "cannot record the alert in the history");
            }
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

async fn run_stage(
    mut stage: Box<dyn Stage>,
    mut input: Input,
    mut output: Output,
    mut saver: Snapshots,
) -> NodeResult {
    let mut out = Vec::new();
    let mut downstream_gone = false;
    while let Some(msg) = input.recv().await {
        if downstream_gone {
            if let Message::Events(events) = &msg {
                input.counters().add_errors(events.len());
                for e in events {
                    e.fail();
                }
            }
            continue;
        }
        let sent = match msg {
            Message::Events(events) => {
                let passed: Vec<usize> = events
                    .iter()
                    .filter(|e| e.alert().is_some())
                    .map(address)
                    .collect();
                for event in events {
                    stage.process(event, &mut out);
                }
                saver.record_alerts(&out, &passed);
                output.send(std::mem::take(&mut out)).await
            }
            Message::Tick(now) => {
                stage.tick(now, &mut out);
                saver.record_alerts(&out, &[]);
                saver.on_tick(stage.as_ref(), now);
                match output.send(std::mem::take(&mut out)).await {
                    Ok(()) => output.tick(now).await,
                    Err(e) => Err(e),
                }
            }
        };
        if sent.is_err() {
            // Keep draining so upstream nodes are not blocked, but nothing can be
            // delivered any more: count it.
            tracing::error!(
                "every downstream of this stage has stopped; events are being counted as errors"
            );
            downstream_gone = true;
        }
    }
    stage.finish(&mut out);
    saver.record_alerts(&out, &[]);
    saver.save(stage.as_ref());
    let _ = output.send(out).await;
    output.close().await;
    Ok(())
}
