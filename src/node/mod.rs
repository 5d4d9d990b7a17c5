//! What a component is and what it sees: the [`Source`], [`Stage`] and [`Sink`] traits,
//! the [`BuildContext`] a node is built with, the [`SourceContext`] a source runs in, and
//! the edges ([`Output`], [`Input`]) between nodes. The runtime (`crate::runtime`) wires
//! and runs them; components never reach into it.
//!
//! - Sources run their own loop and hand batches of events to an [`Output`]; they wait
//!   through a [`SourceContext`], which also sends the clock's ticks downstream and notices
//!   a shutdown.
//! - Stages are synchronous: the runtime feeds them events and ticks and forwards what they
//!   emit.
//! - Sinks own their loop over an [`Input`].
//! - What a node sets aside or fails is reported by the typed events of
//!   [`internal_event`], which log and count it together.

pub(crate) mod edge;
pub mod internal_event;
mod snapshot;
mod tap;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use edge::{Closed, Input, Message, NodeCounters, Output};
pub use snapshot::{Snapshot, StateText};
pub use tap::{SeenItems, StreamItem, Tap};

use crate::event::{Event, Timestamp};
use crate::time::SharedClock;

/// An error that stopped a node.
pub type NodeError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a node's task returns.
pub type NodeResult = Result<(), NodeError>;

/// One edge into a node, for unit tests of sinks: what is sent on the [`Output`] arrives
/// on the [`Input`].
#[cfg(test)]
pub(crate) fn test_edge(buffer: usize) -> (Output, Input) {
    let (tx, rx) = edge::channel(buffer);
    (
        Output::new(vec![(0, tx)], Arc::new(NodeCounters::default())),
        Input::new(rx, vec![0], Arc::new(NodeCounters::default())),
    )
}

/// The JSON text of `stage`'s state, unbounded, for unit tests.
#[cfg(test)]
pub(crate) fn snapshot_text(stage: &dyn Stage) -> Option<String> {
    let text = stage.snapshot(u64::MAX).and_then(Snapshot::into_text)?;
    Some(text.into_string().expect("JSON text"))
}

/// What every component is given when it is built.
#[derive(Clone)]
pub struct BuildContext {
    /// The node's id: `pipeline.node`.
    pub id: Arc<str>,
    /// The pipeline's name.
    pub pipeline: Arc<str>,
    /// The node's name within the pipeline.
    pub node: Arc<str>,
    /// The directory of the pipeline's file: relative paths in its config (a script's
    /// `file`) are relative to it.
    pub base_dir: PathBuf,
    /// The engine's state directory.
    pub state_dir: PathBuf,
    /// The size at which a source's file of set-aside records is rotated (settings
    /// `retention.rejected_max_bytes`).
    pub rejected_max_bytes: u64,
    /// The clock the run waits on.
    pub clock: SharedClock,
    /// The state database (checkpoints), shared by every node.
    pub store: Arc<crate::store::Store>,
    /// Whether stages restore the state they saved (settings `keep_state`).
    pub keep_state: bool,
    /// Where the dashboard is, for links in notifications (settings `public_url`).
    pub public_url: Arc<str>,
    /// How often an open alert episode is reported again (settings `history_interval`).
    pub history_interval: chrono::Duration,
    /// The node ran before in this process (it is restarted after a failure, or a reload
    /// changed it): outputs that start afresh at a start (a `file` sink without
    /// `append`) go on where they were.
    pub rebuilt: bool,
    /// The node's counters: a stage reports what it sets aside here with the events of
    /// [`internal_event`], shown by `/metrics` and the API.
    pub counters: Arc<NodeCounters>,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("id", &self.id)
            .field("base_dir", &self.base_dir)
            .field("rebuilt", &self.rebuilt)
            .finish_non_exhaustive()
    }
}

impl BuildContext {
    /// The state the stage saved last (see [`Stage::snapshot`]), as JSON text, if any. A
    /// state that cannot be read from the store is logged and ignored: the stage starts
    /// empty.
    pub fn restore(&self) -> Option<String> {
        if !self.keep_state {
            return None;
        }
        match self.store.stage_state(&self.id) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(node = %self.id, error = %e, "cannot read the saved state; starting empty");
                None
            }
        }
    }
}

/// A running source.
///
/// Building a source has no side effects (a reload builds every new node before it
/// touches the running graph, and may then drop them all); what joins something shared
/// happens in [`Source::attach`].
pub trait Source: Send + 'static {
    /// Called once, when nothing can fail any more and the source is about to run: a
    /// source that shares a reader with others (a PCE connection's traffic hub) joins it
    /// here.
    fn attach(&mut self) {}

    /// Runs until its input ends or a shutdown is requested (see
    /// [`SourceContext::is_shutting_down`]), handing events to `cx`.
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult>;
}

/// A stage: a synchronous step over events and ticks.
pub trait Stage: Send + 'static {
    /// Handles one event, pushing what it hands on into `out`.
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>);

    /// Time moved to `now` (the earliest time all of the stage's inputs have reached).
    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Arc<Event>>) {}

    /// Every input has finished: hand on anything held back.
    fn finish(&mut self, _out: &mut Vec<Arc<Event>>) {}

    /// The stage's state (windows, cooldowns, script state) as JSON text of at most
    /// `max_bytes`, for the runtime to save under `state_dir` (periodically and when the
    /// stage stops). Serialise a struct borrowing the state straight to text with
    /// [`Snapshot::write`], never through a `serde_json::Value` (a tree of a large state
    /// takes about ten times its text). The stage reads the text back at build time with
    /// [`BuildContext::restore`]. Stateless stages return `None`.
    fn snapshot(&self, _max_bytes: u64) -> Option<Snapshot> {
        None
    }

    /// Whether handling an event may take long (a script: up to its `timeout` per
    /// event). The runtime then runs the stage off the async workers, so it never holds
    /// up another pipeline, the web server or signal handling.
    fn blocking(&self) -> bool {
        false
    }
}

/// A running sink.
pub trait Sink: Send + 'static {
    /// Consumes `input` until it ends, then flushes. Count what it delivers with
    /// `input.counters().add_out(..)`. When it fails (returns an error or panics), the
    /// events it held must be marked failed ([`crate::event::Event::fail`]); the runtime
    /// builds the sink again and runs it on the same input, where what it had not taken
    /// yet still waits.
    fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult>;
}

/// The world as a source sees it.
pub struct SourceContext {
    /// The node's id: `pipeline.node`.
    pub id: Arc<str>,
    /// The engine's state directory.
    pub state_dir: PathBuf,
    /// The most events to hand on in one batch.
    pub batch_size: usize,
    output: Output,
    clock: SharedClock,
    shutdown: CancellationToken,
    tick_interval: std::time::Duration,
    next_tick: Timestamp,
    tap: Option<Arc<Tap>>,
}

impl SourceContext {
    pub(crate) fn new(
        id: Arc<str>,
        state_dir: PathBuf,
        batch_size: usize,
        output: Output,
        clock: SharedClock,
        shutdown: CancellationToken,
        tick_interval: std::time::Duration,
    ) -> Self {
        let next_tick = clock.now();
        SourceContext {
            id,
            state_dir,
            batch_size,
            output,
            clock,
            shutdown,
            tick_interval,
            next_tick,
            tap: None,
        }
    }

    /// Shows what this source reads to the API (recent events, the live stream).
    pub(crate) fn set_tap(&mut self, tap: Arc<Tap>) {
        self.tap = Some(tap);
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The node's counters.
    pub fn counters(&self) -> &Arc<NodeCounters> {
        self.output.counters()
    }

    /// Whether a shutdown was requested: stop reading, hand on what was read, return.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Hands events downstream (waiting while downstream is full), then sends a tick if
    /// one is due.
    pub async fn send(&mut self, events: Vec<Arc<Event>>) -> Result<(), Closed> {
        if let Some(tap) = &self.tap {
            tap.events(&events);
        }
        self.output.send(events).await?;
        if self.clock.now() >= self.next_tick {
            self.emit_tick().await?;
        }
        Ok(())
    }

    async fn emit_tick(&mut self) -> Result<(), Closed> {
        let now = self.clock.now();
        self.output.tick(now).await?;
        let step = chrono::Duration::from_std(self.tick_interval)
            .unwrap_or(chrono::Duration::seconds(1))
            .max(chrono::Duration::milliseconds(1));
        while self.next_tick <= now {
            self.next_tick = crate::time::later_by(self.next_tick, step);
        }
        Ok(())
    }

    /// Awaits `fut`, sending ticks downstream while it runs. Returns `None` (dropping
    /// `fut`) if a shutdown is requested first, so `fut` must be cancel-safe.
    pub async fn wait<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let tick = self.clock.sleep_until(self.next_tick);
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                out = &mut fut => return Some(out),
                _ = tick => {
                    if self.emit_tick().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps for `d` on the engine's clock, sending ticks. Returns `false` if a shutdown
    /// was requested meanwhile.
    pub async fn sleep(&mut self, d: std::time::Duration) -> bool {
        let deadline = crate::time::later(self.clock.now(), d);
        let sleeper = self.clock.sleep_until(deadline);
        // `POST /api/v1/run-once` cuts the wait short: poll now.
        let tap = self.tap.clone();
        let woken = async move {
            match tap {
                Some(t) => t.polled().await,
                None => std::future::pending().await,
            }
        };
        let either = async move {
            tokio::select! {
                _ = sleeper => {}
                _ = woken => {}
            }
        };
        self.wait(either).await.is_some()
    }

    pub(crate) fn into_output(self) -> Output {
        self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::VirtualClock;
    use chrono::{TimeZone, Utc};
    use std::time::Duration;

    /// Sources wait on the clock they are given: under a virtual clock a sleep ends only
    /// when the clock is moved, and the ticks sent meanwhile carry virtual times.
    #[tokio::test]
    async fn sources_sleep_and_tick_on_the_clock_passed_in() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let clock = VirtualClock::new(t0);
        let (tx, rx) = edge::channel(16);
        let output = Output::new(vec![(0, tx)], Arc::new(NodeCounters::default()));
        let mut input = Input::new(rx, vec![0], Arc::new(NodeCounters::default()));
        let mut cx = SourceContext::new(
            "p.s".into(),
            PathBuf::new(),
            16,
            output,
            Arc::new(clock.clone()),
            CancellationToken::new(),
            Duration::from_secs(1),
        );
        let sleeper = tokio::spawn(async move {
            let woke = cx.sleep(Duration::from_secs(3)).await;
            cx.into_output().close().await;
            woke
        });
        let mut ticks = Vec::new();
        for step in 0..3 {
            match input.recv().await {
                Some(Message::Tick(t)) => ticks.push((t - t0).num_seconds()),
                other => panic!("expected a tick, got {other:?}"),
            }
            assert!(
                !sleeper.is_finished(),
                "woke before the clock moved (step {step})"
            );
            clock.advance(Duration::from_secs(1));
        }
        assert!(sleeper.await.unwrap(), "the sleep ended normally");
        assert_eq!(ticks, vec![0, 1, 2]);
        assert!(input.recv().await.is_none(), "the source closed its output");
    }

    /// A shutdown request ends a source's wait at once.
    #[tokio::test]
    async fn shutdown_interrupts_a_wait() {
        let clock = VirtualClock::new(Utc::now());
        let (tx, _rx) = edge::channel(16);
        let token = CancellationToken::new();
        let mut cx = SourceContext::new(
            "p.s".into(),
            PathBuf::new(),
            16,
            Output::new(vec![(0, tx)], Arc::new(NodeCounters::default())),
            Arc::new(clock),
            token.clone(),
            Duration::from_secs(3600),
        );
        token.cancel();
        assert!(!cx.sleep(Duration::from_secs(60)).await);
        assert!(cx.is_shutting_down());
    }
}
