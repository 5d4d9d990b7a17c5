//! Runs a pipeline's stages synchronously on a virtual clock: inputs in, what every node
//! emits recorded.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::config::test_case::{TestCase, TestContext};
use crate::event::{AlertStatus, Event, Timestamp};
use crate::graph::NodeRole;
use crate::pce::names::{IpListEntry, Names};
use crate::runtime::{BuildContext, Stage, build_services};
use crate::sinks::delivery::dispatch::{Dispatcher, Planned};
use crate::sinks::delivery::inhibit::Inhibitor;
use crate::sinks::delivery::{DeliveryConfig, alert_of_event};
use crate::time::{SharedClock, VirtualClock};

/// The time a case starts at when it names none.
pub const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// The most ticks one case may take; beyond this the tick step grows.
const MAX_TICKS: i64 = 2_000_000;

enum Node {
    Source,
    Stage(Box<dyn Stage>),
    /// A sink; a delivering one with what it would notify.
    Sink(Option<Box<Notifier>>),
}

/// A delivering sink's notification grouping, run on the case's clock.
struct Notifier {
    cfg: DeliveryConfig,
    /// Who each alert goes to, for sinks whose recipients follow the alert: alerts are
    /// gathered per recipients as the running sink gathers them.
    router: Option<Box<dyn crate::sinks::delivery::Rendering + Send>>,
    groups: Dispatcher,
    /// Cooldown key → when it ends (the sink's `cooldown`).
    cooling: std::collections::HashMap<String, Timestamp>,
    sent: Vec<(Timestamp, Planned)>,
}

impl Notifier {
    fn new(
        cfg: DeliveryConfig,
        router: Option<Box<dyn crate::sinks::delivery::Rendering + Send>>,
    ) -> Notifier {
        Notifier {
            groups: Dispatcher::new(cfg.policy()),
            cfg,
            router,
            cooling: Default::default(),
            sent: Vec::new(),
        }
    }

    /// What the sink's intake does with `event` at `now`.
    fn take(&mut self, event: &Event, now: Timestamp) {
        let (alert, form) = match event.alert() {
            Some(a) => (a.clone(), event.data().clone()),
            None => {
                let a = alert_of_event(event);
                let form = a.to_value();
                (a, form)
            }
        };
        if alert.severity < self.cfg.min_severity {
            return;
        }
        if let Some(period) = self.cfg.cooldown
            && alert.status == AlertStatus::Firing
            && !self.groups.holds(&alert.id)
        {
            let key = format!("{}/{}/{}", alert.pipeline, alert.stage, alert.group_key);
            if self.cooling.get(&key).is_some_and(|until| now < *until) {
                return;
            }
            self.cooling.insert(key, now + period.span());
        }
        // A new alert's recipients, as the running sink works them out (an alert
        // without any is set aside there, counted; here too).
        let route = match &self.router {
            Some(r) if !self.groups.holds(&alert.id) => match r.route(&alert) {
                Ok(route) => route,
                Err(_) => return,
            },
            _ => Vec::new(),
        };
        self.groups.ingest(&route, alert, &form, now);
    }

    /// Looks at the groups due at `now` (all of them at the end), as the sink's worker.
    fn look(&mut self, now: Timestamp, all: bool, inhibitor: &Inhibitor) {
        let mut muted =
            |a: &crate::event::Alert| inhibitor.is_active() && inhibitor.mutes(a, &a.to_value());
        for f in self.groups.flush(now, all, &mut muted) {
            if let Some(m) = f.message {
                self.sent.push((now, m));
            }
        }
    }
}

/// What every node of a pipeline did during one case.
pub struct Recorded {
    /// Node names, in graph order.
    pub names: Vec<String>,
    /// What each node emitted (sources, stages) or received (sinks).
    pub events: Vec<Vec<Arc<Event>>>,
    /// What each delivering sink would notify, and when (empty for other nodes).
    pub notifications: Vec<Vec<(Timestamp, Planned)>>,
    /// When the case started.
    pub start: Timestamp,
}

impl Recorded {
    /// The events of a node by name.
    pub fn of(&self, name: &str) -> Option<&[Arc<Event>]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.events[i].as_slice())
    }

    /// What a delivering sink would notify, by name (`None`: no such node).
    pub fn notifications_of(&self, name: &str) -> Option<&[(Timestamp, Planned)]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.notifications[i].as_slice())
    }
}

struct Harness {
    nodes: Vec<Node>,
    names: Vec<String>,
    down: Vec<Vec<usize>>,
    /// Stages in an order where every stage comes after its inputs.
    order: Vec<usize>,
    recorded: Vec<Vec<Arc<Event>>>,
    /// Events each node emitted (sources, stages) or received (sinks).
    counts: Vec<u64>,
    keep: Keep,
    /// Alerts kept (for [`Keep::Alerts`]' bound).
    alerts_kept: usize,
    /// Alerts not kept (past [`Keep::Alerts`]' bound).
    alerts_left_out: u64,
    inhibitor: Arc<Inhibitor>,
    now: Timestamp,
}

impl Harness {
    /// Shows the inhibitor the alerts a stage raised (as the runtime does where it
    /// records the alert history).
    fn observe(&self, events: &[Arc<Event>]) {
        if !self.inhibitor.is_active() {
            return;
        }
        for e in events {
            if let Some(a) = e.alert() {
                self.inhibitor.observe(a, e.data());
            }
        }
    }

    /// Counts what node `node` emitted or received, and keeps what [`Keep`] says.
    fn record(&mut self, node: usize, events: &[Arc<Event>]) {
        self.counts[node] += events.len() as u64;
        match self.keep {
            Keep::All => self.recorded[node].extend(events.iter().cloned()),
            Keep::Alerts(max) => {
                if !matches!(self.nodes[node], Node::Stage(_)) {
                    return;
                }
                // Each alert once, where it was raised (a `top_n` or `cooldown` after the
                // stage hands on the same alert).
                let name = &self.names[node];
                for e in events
                    .iter()
                    .filter(|e| e.alert().is_some_and(|a| a.stage == *name))
                {
                    if self.alerts_kept < max {
                        self.alerts_kept += 1;
                        self.recorded[node].push(e.clone());
                    } else {
                        self.alerts_left_out += 1;
                    }
                }
            }
        }
    }

    fn emit(&mut self, from: usize, events: Vec<Arc<Event>>) {
        if events.is_empty() {
            return;
        }
        if matches!(self.nodes[from], Node::Stage(_)) {
            self.observe(&events);
        }
        self.record(from, &events);
        let mut queue: VecDeque<(usize, Vec<Arc<Event>>)> = VecDeque::new();
        for &d in &self.down[from] {
            queue.push_back((d, events.clone()));
        }
        while let Some((node, batch)) = queue.pop_front() {
            match &mut self.nodes[node] {
                Node::Stage(stage) => {
                    let mut out = Vec::new();
                    for e in batch {
                        stage.process(e, &mut out);
                    }
                    if !out.is_empty() {
                        self.observe(&out);
                        self.record(node, &out);
                        for &d in &self.down[node] {
                            queue.push_back((d, out.clone()));
                        }
                    }
                }
                Node::Sink(notifier) => {
                    if let Some(n) = notifier {
                        for e in &batch {
                            n.take(e, self.now);
                        }
                    }
                    self.record(node, &batch);
                }
                Node::Source => {}
            }
        }
    }

    fn tick(&mut self, now: Timestamp) {
        self.now = now;
        for k in 0..self.order.len() {
            let i = self.order[k];
            let mut out = Vec::new();
            if let Node::Stage(stage) = &mut self.nodes[i] {
                stage.tick(now, &mut out);
            }
            self.emit(i, out);
        }
        self.look(now, false);
    }

    /// The delivering sinks look at their due groups.
    fn look(&mut self, now: Timestamp, all: bool) {
        let inhibitor = self.inhibitor.clone();
        for node in &mut self.nodes {
            if let Node::Sink(Some(n)) = node {
                n.look(now, all, &inhibitor);
            }
        }
    }

    fn finish(&mut self, end: Timestamp) {
        for k in 0..self.order.len() {
            let i = self.order[k];
            let mut out = Vec::new();
            if let Node::Stage(stage) = &mut self.nodes[i] {
                stage.finish(&mut out);
            }
            self.emit(i, out);
        }
        // The input ended: a delivering sink sends what waits, at once.
        self.look(end, true);
    }
}

/// Why a case could not run (not a failed expectation).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The case names something the pipeline does not have, or a bad time.
    #[error("{0}")]
    Invalid(String),
    /// A stage could not be built.
    #[error("stage `{node}` could not be built: {message}")]
    Build {
        /// The stage.
        node: String,
        /// Why.
        message: String,
    },
}

/// The names a case's `context` gives, as the PCE's name cache would hold them.
fn context_names(cx: &TestContext, now: Timestamp) -> Names {
    let mut names = Names {
        refreshed_at: Some(now),
        ..Names::default()
    };
    for name in cx.ip_lists.keys() {
        let Some((include, exclude)) = cx.ip_list(name) else {
            continue;
        };
        let entry = Arc::new(IpListEntry {
            name: name.clone(),
            include,
            exclude,
        });
        names.ip_lists.insert(
            format!("/orgs/1/sec_policy/active/ip_lists/{name}"),
            entry.clone(),
        );
        names.ip_lists_by_name.insert(name.clone(), entry);
    }
    for (href, l) in &cx.labels {
        names
            .labels
            .insert(href.clone(), (l.key.clone(), l.value.clone()));
    }
    for (href, labels) in &cx.workloads {
        names.workloads.insert(
            href.clone(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
    }
    names
}

/// Writes `top` over `base`: mappings merge key by key, anything else replaces.
fn overlay(base: &mut serde_json::Value, top: &serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

/// Which events a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Everything each node emits or receives (a test case).
    All,
    /// The alerts stages raise, at most this many in all (a replay); every node's events
    /// are counted.
    Alerts(usize),
}

/// What the stages of a [`PipelineRun`] are built with.
#[derive(Clone, Copy)]
pub(crate) struct RunWith<'a> {
    /// The services (name caches, delivery) of the settings.
    pub(crate) services: &'a crate::components::Services,
    /// Where stages restore from (a fresh in-memory store: nothing).
    pub(crate) store: &'a Arc<crate::store::Store>,
    /// The stages' state directory.
    pub(crate) state_dir: &'a std::path::Path,
}

/// One pipeline built to run on a virtual clock: its stages real, its sources fed by the
/// caller, its delivering sinks planning what they would send.
pub(crate) struct PipelineRun {
    h: Harness,
    /// Node ids (`pipeline.node`), in graph order.
    ids: Vec<Arc<str>>,
    step: chrono::Duration,
    next_tick: Timestamp,
    start: Timestamp,
}

impl PipelineRun {
    /// Builds pipeline `pipeline` (an index into `config.pipelines`) with what `with`
    /// holds, its clock starting at `start` and ticking every `step`.
    pub(crate) fn build(
        config: &Config,
        pipeline: usize,
        with: RunWith<'_>,
        start: Timestamp,
        step: chrono::Duration,
        keep: Keep,
    ) -> Result<PipelineRun, RunError> {
        let graph = config.graph();
        let pc = &config.pipelines[pipeline];
        let settings = &config.settings;
        let gids: Vec<usize> = (0..graph.nodes.len())
            .filter(|i| graph.nodes[*i].pipeline == pipeline)
            .collect();
        let local = |g: usize| gids.iter().position(|x| *x == g);
        let clock: SharedClock = Arc::new(VirtualClock::new(start));
        let base_dir = pc
            .file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut down = vec![Vec::new(); gids.len()];
        for (li, &gi) in gids.iter().enumerate() {
            let g = &graph.nodes[gi];
            names.push(g.name.clone());
            for input in &g.inputs {
                if let Some(from) = local(*input) {
                    down[from].push(li);
                }
            }
            nodes.push(match g.role {
                NodeRole::Source => Node::Source,
                NodeRole::Sink => {
                    let sink = &pc.config.sinks[g.name.as_str()];
                    Node::Sink(sink.delivery().map(|cfg| {
                        let router = sink.router(&base_dir, settings.public_url.as_str());
                        Box::new(Notifier::new(cfg, router))
                    }))
                }
                NodeRole::Stage => {
                    let cx = BuildContext {
                        id: g.id.clone(),
                        pipeline: pc.config.name.as_str().into(),
                        node: g.name.as_str().into(),
                        base_dir: base_dir.clone(),
                        state_dir: with.state_dir.to_path_buf(),
                        rejected_max_bytes: settings.retention.rejected_max_bytes,
                        clock: clock.clone(),
                        store: with.store.clone(),
                        keep_state: true,
                        public_url: crate::config::DEFAULT_PUBLIC_URL.into(),
                        history_interval: settings.history_interval.span(),
                        rebuilt: false,
                        counters: Default::default(),
                    };
                    let stage = pc.config.stages[g.name.as_str()]
                        .build(&cx, with.services)
                        .map_err(|e| RunError::Build {
                            node: g.name.clone(),
                            message: e.to_string(),
                        })?;
                    Node::Stage(stage)
                }
            });
        }
        // Topological order of the stages (the graph is acyclic: validation checked).
        let mut indeg: Vec<usize> = gids
            .iter()
            .map(|gi| {
                graph.nodes[*gi]
                    .inputs
                    .iter()
                    .filter(|i| local(**i).is_some())
                    .count()
            })
            .collect();
        let mut ready: VecDeque<usize> = (0..gids.len()).filter(|i| indeg[*i] == 0).collect();
        let mut order = Vec::new();
        while let Some(i) = ready.pop_front() {
            if matches!(nodes[i], Node::Stage(_)) {
                order.push(i);
            }
            for &d in &down[i] {
                indeg[d] -= 1;
                if indeg[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        let h = Harness {
            recorded: vec![Vec::new(); nodes.len()],
            counts: vec![0; nodes.len()],
            keep,
            alerts_kept: 0,
            alerts_left_out: 0,
            nodes,
            names,
            down,
            order,
            inhibitor: with.services.delivery.inhibitor.clone(),
            now: start,
        };
        Ok(PipelineRun {
            h,
            ids: gids.iter().map(|gi| graph.nodes[*gi].id.clone()).collect(),
            step: step.max(chrono::Duration::milliseconds(1)),
            next_tick: start,
            start,
        })
    }

    /// The node named `name`, if it is a source.
    pub(crate) fn source(&self, name: &str) -> Option<usize> {
        self.h
            .names
            .iter()
            .position(|n| n == name)
            .filter(|i| matches!(self.h.nodes[*i], Node::Source))
    }

    /// The node names, in graph order.
    pub(crate) fn names(&self) -> &[String] {
        &self.h.names
    }

    /// The id (`pipeline.node`) of node `i`.
    pub(crate) fn id(&self, i: usize) -> Arc<str> {
        self.ids[i].clone()
    }

    /// Ticks every stage up to `to`, a tick a step; a quiet gap longer than
    /// [`MAX_GAP_TICKS`] steps (records days or years apart) is crossed in that many
    /// ticks, evenly spread.
    pub(crate) fn advance(&mut self, to: Timestamp) {
        let gap = to - self.next_tick;
        let step = if gap > self.step * MAX_GAP_TICKS {
            (gap / MAX_GAP_TICKS).max(self.step)
        } else {
            self.step
        };
        while self.next_tick <= to {
            self.h.tick(self.next_tick);
            self.next_tick += step;
        }
    }

    /// Source `src` hands on `event`, arriving at `at` (not before the clock's time).
    pub(crate) fn feed(&mut self, src: usize, at: Timestamp, event: Event) {
        let at = at.max(self.h.now);
        self.advance(at);
        self.h.now = at;
        self.h.emit(src, vec![Arc::new(event)]);
        // A delivering sink's worker wakes when an alert arrives.
        self.h.look(at, false);
    }

    /// Runs the clock on to `end` and ends the input: what every node did.
    pub(crate) fn finish(mut self, end: Timestamp) -> Finished {
        self.advance(end);
        self.h.finish(end);
        let notifications = self
            .h
            .nodes
            .into_iter()
            .map(|n| match n {
                Node::Sink(Some(n)) => n.sent,
                _ => Vec::new(),
            })
            .collect();
        Finished {
            recorded: Recorded {
                names: self.h.names,
                events: self.h.recorded,
                notifications,
                start: self.start,
            },
            counts: self.h.counts,
            alerts_left_out: self.h.alerts_left_out,
        }
    }
}

/// The most ticks a [`PipelineRun`] spends crossing one quiet gap (at the default 1 s
/// step, gaps up to about 28 hours are ticked every second).
const MAX_GAP_TICKS: i32 = 100_000;

/// What a [`PipelineRun`] did.
pub(crate) struct Finished {
    /// What each node emitted or received (as [`Keep`] said) and what sinks would send.
    pub(crate) recorded: Recorded,
    /// How many events each node emitted (sources, stages) or received (sinks).
    pub(crate) counts: Vec<u64>,
    /// Alerts not kept (past [`Keep::Alerts`]' bound).
    pub(crate) alerts_left_out: u64,
}

/// Runs `case` against pipeline `pipeline` (an index into `config.pipelines`).
pub fn run_case(
    config: &Config,
    pipeline: usize,
    case: &TestCase,
    state_dir: PathBuf,
) -> Result<Recorded, RunError> {
    let start_text = case.start.as_deref().unwrap_or(DEFAULT_START);
    let start: Timestamp = DateTime::parse_from_rfc3339(start_text)
        .map_err(|e| {
            RunError::Invalid(format!(
                "`start: {start_text}` is not an RFC 3339 time ({e})"
            ))
        })?
        .with_timezone(&Utc);
    let pc = &config.pipelines[pipeline];
    let clock: SharedClock = Arc::new(VirtualClock::new(start));
    let mut settings = config.settings.clone();
    settings.connections = Default::default(); // tests never reach a network peer
    let mut services =
        build_services(&settings, &clock).map_err(|e| RunError::Invalid(e.source.to_string()))?;
    // What the case says the PCE knows stands in for the connections' name caches.
    let known = case
        .context
        .as_ref()
        .map(|cx| Arc::new(context_names(cx, start)));
    if let Some(known) = &known {
        let cache = Arc::new(crate::pce::names::NameCache::default());
        cache.replace(Names::clone(known));
        services.extra_names.push(cache);
    }
    let store =
        Arc::new(crate::store::Store::in_memory().map_err(|e| RunError::Invalid(e.to_string()))?);

    // The inputs, in time order (stable: equal times keep the written order). The bounds
    // are checked when the case is loaded; a case built in code is held to them too.
    let count = case.event_count();
    if count > crate::config::test_case::MAX_CASE_EVENTS
        || case
            .input
            .iter()
            .any(|i| i.repeat > crate::config::test_case::MAX_REPEAT)
    {
        return Err(RunError::Invalid(format!(
            "the case feeds {count} events: at most {} in all, {} copies per input (`repeat`)",
            crate::config::test_case::MAX_CASE_EVENTS,
            crate::config::test_case::MAX_REPEAT
        )));
    }
    let span_end = |inputs: &[(Timestamp, Timestamp, usize, serde_json::Value)]| {
        let last = inputs.last().map_or(start, |(t, _, _, _)| *t);
        last + case.run_for.map_or(chrono::Duration::zero(), |d| d.span())
    };
    let mut inputs: Vec<(Timestamp, Timestamp, usize, serde_json::Value)> =
        Vec::with_capacity(count);
    let mut step = settings
        .tick_interval
        .span()
        .max(chrono::Duration::milliseconds(1));
    let with = RunWith {
        services: &services,
        store: &store,
        state_dir: &state_dir,
    };
    let mut run = PipelineRun::build(config, pipeline, with, start, step, Keep::All)?;
    for input in &case.input {
        let Some(src) = run.source(&input.source) else {
            return Err(RunError::Invalid(if run.names().contains(&input.source) {
                format!("input names `{}`, which is not a source", input.source)
            } else {
                format!(
                    "input names source `{}`, which pipeline `{}` does not have",
                    input.source, pc.config.name
                )
            }));
        };
        let at = input.at.map_or(chrono::Duration::zero(), |d| d.span());
        let time = input.time.map(|d| d.span());
        let every = input.every.map_or(chrono::Duration::zero(), |d| d.span());
        // A flow of a `pce_traffic` source gains what the source adds from the names
        // the case's `context` gives (what the record says itself wins).
        let record = match (&known, &pc.config.sources.get(input.source.as_str())) {
            (Some(known), Some(crate::components::SourceConfig::PceTraffic(c))) => {
                let vigil = serde_json::json!({
                    "source_type": "pce_traffic", "connection": c.connection, "truncated": false,
                });
                let mut enriched =
                    crate::sources::pce_traffic::enrich_flow(input.event.clone(), known, &vigil);
                overlay(&mut enriched, &input.event);
                enriched
            }
            (_, Some(source)) => source.decode_record(&input.event).map_err(|e| {
                RunError::Invalid(format!("input for source `{}`: {e}", input.source))
            })?,
            _ => input.event.clone(),
        };
        for k in 0..input.repeat {
            let k = i32::try_from(k).unwrap_or(i32::MAX);
            let arrival = start + at + every * k;
            let event_time = time.map_or(arrival, |t| start + t + every * k);
            inputs.push((arrival, event_time, src, record.clone()));
        }
    }
    inputs.sort_by_key(|(t, _, _, _)| *t);
    let end = span_end(&inputs);
    let span_ms = (end - start).num_milliseconds().max(0);
    if span_ms / step.num_milliseconds().max(1) > MAX_TICKS {
        step = chrono::Duration::milliseconds(span_ms / MAX_TICKS + 1);
        run.step = step;
    }
    for (t, event_time, src, record) in inputs {
        let mut event = Event::from_record(record, run.id(src), t);
        event.meta.time = event_time;
        run.feed(src, t, event);
    }
    Ok(run.finish(end).recorded)
}
