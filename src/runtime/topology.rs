//! Builds the running graph from a validated configuration and runs it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::edge::{self, Envelope};
use super::{
    BuildContext, Connections, Input, Message, NodeCounters, NodeResult, Output, SharedClock, Sink,
    SourceContext, Stage,
};
use crate::config::Config;
use crate::graph::{Graph, NodeRole};

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

/// A graph whose nodes are running.
pub struct RunningTopology {
    shutdown: CancellationToken,
    tasks: JoinSet<(usize, NodeResult)>,
    /// Which node each task runs, to name a node whose task panicked.
    task_nodes: HashMap<tokio::task::Id, usize>,
    nodes: Vec<(String, NodeRole, Arc<NodeCounters>)>,
    /// Tasks shared by nodes (e.g. a PCE connection's traffic hub), awaited after them.
    helpers: Vec<tokio::task::JoinHandle<()>>,
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

    /// The counters of every node, by id.
    pub fn counters(&self) -> Vec<(String, Arc<NodeCounters>)> {
        self.nodes
            .iter()
            .map(|(id, _, c)| (id.clone(), c.clone()))
            .collect()
    }

    /// Waits until every node has finished (all finite sources ended, or a shutdown drained
    /// the graph).
    pub async fn wait(mut self) -> RunReport {
        let mut failures: HashMap<usize, String> = HashMap::new();
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => {
                    tracing::error!(node = %self.nodes[i].0, error = %e, "node stopped with an error; shutting the graph down");
                    failures.insert(i, e.to_string());
                    // Fail fast rather than run on with a hole in the graph: the sources
                    // stop and everything already read drains through what still runs.
                    self.shutdown.cancel();
                }
                Err(join) => {
                    let i = self.task_nodes.get(&join.id()).copied().unwrap_or(0);
                    tracing::error!(node = %self.nodes[i].0, error = %join, "a node's task panicked; shutting the graph down");
                    failures.insert(i, format!("panicked: {join}"));
                    self.shutdown.cancel();
                }
            }
        }
        // Every node is done: stop the shared helpers too and let them finish (a traffic
        // hub stores its cursor before it ends).
        self.shutdown.cancel();
        for helper in self.helpers.drain(..) {
            if let Err(e) = helper.await {
                tracing::error!(error = %e, "a shared task panicked");
            }
        }
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (id, role, c))| {
                let (events_in, events_out, errors) = c.get();
                NodeReport {
                    id: id.clone(),
                    role: role.as_str(),
                    events_in,
                    events_out,
                    errors,
                    failure: failures.remove(&i),
                }
            })
            .collect::<Vec<_>>();
        RunReport { nodes }
    }
}

/// Builds every node of `config` and starts it on the current tokio runtime.
pub fn start(config: &Config, clock: SharedClock) -> Result<RunningTopology, BuildError> {
    let graph = Graph::from_config(config);
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
    let shutdown = CancellationToken::new();

    // One inbound channel per node that has inputs; edges numbered per receiving node.
    let mut senders: Vec<Option<mpsc::Sender<Envelope>>> = Vec::new();
    let mut receivers: Vec<Option<mpsc::Receiver<Envelope>>> = Vec::new();
    for node in &graph.nodes {
        if node.role == NodeRole::Source {
            senders.push(None);
            receivers.push(None);
        } else {
            let (tx, rx) = edge::channel(settings.buffer);
            senders.push(Some(tx));
            receivers.push(Some(rx));
        }
    }
    let mut targets: Vec<Vec<(u32, mpsc::Sender<Envelope>)>> = vec![Vec::new(); graph.nodes.len()];
    let mut in_edges: Vec<Vec<u32>> = vec![Vec::new(); graph.nodes.len()];
    for (to, node) in graph.nodes.iter().enumerate() {
        for (k, from) in node.inputs.iter().enumerate() {
            let edge = u32::try_from(k).unwrap_or(u32::MAX);
            if let Some(tx) = &senders[to] {
                targets[*from].push((edge, tx.clone()));
                in_edges[to].push(edge);
            }
        }
    }
    drop(senders);

    let mut tasks = JoinSet::new();
    let mut task_nodes = HashMap::new();
    let mut nodes = Vec::new();
    let mut targets = targets.into_iter();
    let mut receivers = receivers.into_iter();
    let mut in_edges = in_edges.into_iter();
    for (i, node) in graph.nodes.iter().enumerate() {
        let counters = Arc::new(NodeCounters::default());
        nodes.push((node.id.to_string(), node.role, counters.clone()));
        let pipeline_file = &config.pipelines[node.pipeline].file;
        let cx = BuildContext {
            id: node.id.clone(),
            pipeline: config.pipelines[node.pipeline].config.name.as_str().into(),
            node: node.name.as_str().into(),
            base_dir: pipeline_file
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            state_dir: settings.state_dir.clone(),
            connections: connections.clone(),
            store: store.clone(),
            keep_state: settings.keep_state,
            public_url: settings.public_url.as_str().into(),
        };
        let out_targets = targets.next().unwrap_or_default();
        let rx = receivers.next().flatten();
        let edges = in_edges.next().unwrap_or_default();
        let pipeline = &config.pipelines[node.pipeline].config;
        let fail = |e: super::NodeError| BuildError {
            id: node.id.to_string(),
            message: e.to_string(),
        };
        match node.role {
            NodeRole::Source => {
                let source = pipeline.sources[node.name.as_str()]
                    .build(&cx)
                    .map_err(fail)?;
                let mut scx = SourceContext::new(
                    node.id.clone(),
                    settings.state_dir.clone(),
                    settings.batch_size,
                    Output::new(out_targets, counters),
                    clock.clone(),
                    shutdown.clone(),
                    settings.tick_interval.get(),
                );
                let task = tasks.spawn(async move {
                    let result = source.run(&mut scx).await;
                    scx.into_output().close().await;
                    (i, result)
                });
                task_nodes.insert(task.id(), i);
            }
            NodeRole::Stage => {
                let stage = pipeline.stages[node.name.as_str()]
                    .build(&cx)
                    .map_err(fail)?;
                let input = Input::new(rx.expect("stages have a channel"), edges, counters.clone());
                let output = Output::new(out_targets, counters);
                let saver = Snapshots {
                    enabled: settings.keep_state,
                    id: node.id.clone(),
                    store: store.clone(),
                    every: chrono::Duration::from_std(settings.snapshot_interval.get())
                        .unwrap_or(chrono::Duration::seconds(30)),
                    last: None,
                };
                let task =
                    tasks.spawn(async move { (i, run_stage(stage, input, output, saver).await) });
                task_nodes.insert(task.id(), i);
            }
            NodeRole::Sink => {
                let sink = pipeline.sinks[node.name.as_str()]
                    .build(&cx)
                    .map_err(fail)?;
                let input = Input::new(rx.expect("sinks have a channel"), edges, counters);
                let task = tasks.spawn(async move { (i, run_sink(sink, input).await) });
                task_nodes.insert(task.id(), i);
            }
        }
    }
    let helpers = connections.start_after_build(&shutdown);
    Ok(RunningTopology {
        helpers,
        shutdown,
        tasks,
        task_nodes,
        nodes,
    })
}

/// Saves a stage's state every `every` of clock time and when it stops.
struct Snapshots {
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
                for event in events {
                    stage.process(event, &mut out);
                }
                output.send(std::mem::take(&mut out)).await
            }
            Message::Tick(now) => {
                stage.tick(now, &mut out);
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
    saver.save(stage.as_ref());
    let _ = output.send(out).await;
    output.close().await;
    Ok(())
}

async fn run_sink(sink: Box<dyn Sink>, input: Input) -> NodeResult {
    sink.run(input).await
}
