//! How one node runs: its restarts, the guard around a stage's batches, and the
//! snapshots and history records of a stage.

use super::*;
use crate::node::internal_event::{EventsFailed, FailedBecause, InternalEvent, SnapshotTooLarge};

/// Saves a stage's state every `every` of clock time and when it stops.
pub(super) struct Snapshots {
    pub(super) tap: Arc<crate::node::Tap>,
    pub(super) inhibitor: Arc<crate::sinks::delivery::inhibit::Inhibitor>,
    pub(super) enabled: bool,
    pub(super) id: Arc<str>,
    pub(super) store: Arc<crate::store::Store>,
    pub(super) every: chrono::Duration,
    pub(super) last: Option<crate::event::Timestamp>,
    /// The largest state saved, in bytes of JSON (settings `snapshot_max_bytes`).
    pub(super) max_bytes: u64,
    /// The stage's counters: a state too large to save is counted there.
    pub(super) counters: Arc<NodeCounters>,
    /// Where the states are written.
    pub(super) writer: SnapshotWriter,
    /// The last state taken was large or slow to take: the next is taken with the async
    /// worker's thread handed over to the blocking pool (see [`Snapshots::take`]).
    pub(super) heavy: bool,
}

/// A state of at least this many bytes of text is taken off the async workers next time
/// (and the first time, when the stage was restored from one).
pub(super) const HEAVY_STATE_BYTES: usize = 1 << 20;

/// A state that took at least this long to take is taken off the async workers next time.
const HEAVY_STATE_TIME: std::time::Duration = std::time::Duration::from_millis(10);

/// Writes stages' states on a thread of its own, one per run: writing a large state to
/// disk never holds an async worker, and no thread is made (or handed over, as
/// `block_in_place` would) per save.
#[derive(Clone)]
pub(super) struct SnapshotWriter(Option<tokio::sync::mpsc::Sender<SnapshotJob>>);

/// One state to write, and who waits for it.
struct SnapshotJob {
    id: Arc<str>,
    state: Snapshot,
    max_bytes: u64,
    store: Arc<crate::store::Store>,
    counters: Arc<NodeCounters>,
    done: tokio::sync::oneshot::Sender<()>,
}

impl SnapshotJob {
    /// Writes the state's text; a state longer than `max_bytes` (whose text was not even
    /// finished) is not saved and the one saved before is removed: a restart then starts
    /// the stage empty, not from an old state.
    fn run(self) {
        let result = match self.state {
            Snapshot::Text(text) => self.store.set_stage_state(&self.id, text.into_pieces()),
            Snapshot::TooLarge => {
                SnapshotTooLarge {
                    node: &self.id,
                    max: self.max_bytes,
                }
                .emit(&self.counters);
                self.store.clear_stage_state(&self.id)
            }
        };
        if let Err(e) = result {
            tracing::error!(node = %self.id, error = %e, "cannot save the stage's state");
        }
        let _ = self.done.send(());
    }
}

impl SnapshotWriter {
    /// Starts the writing thread; it ends when the last writer is dropped. Should the
    /// thread not start, states are written where they are taken.
    pub(super) fn start() -> SnapshotWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SnapshotJob>(8);
        let spawned = std::thread::Builder::new()
            .name("vigil-snapshots".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job.run();
                }
            });
        match spawned {
            Ok(_) => SnapshotWriter(Some(tx)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the thread that writes stage states; writing them inline");
                SnapshotWriter(None)
            }
        }
    }

    /// Hands `job` to the thread (waiting while 8 are queued), or writes it here when
    /// there is none.
    async fn send(&self, job: SnapshotJob) {
        match &self.0 {
            Some(tx) => {
                if let Err(refused) = tx.send(job).await {
                    refused.0.run();
                }
            }
            None => job.run(),
        }
    }
}

impl Snapshots {
    /// The stage's state when a periodic save is due at `now` (see [`Snapshots::write`]).
    pub(super) fn due(
        &mut self,
        stage: &dyn Stage,
        now: crate::event::Timestamp,
    ) -> Option<Snapshot> {
        match self.last {
            None => {
                self.last = Some(now);
                None
            }
            Some(last) if now - last >= self.every => {
                self.last = Some(now);
                self.take(stage)
            }
            Some(_) => None,
        }
    }

    /// Records the alerts among `out` in the alert history and shows them on the live
    /// stream.
    /// Alerts handed on unchanged (`passed`: the alert events the stage received, held
    /// alive until now so no new event can take one's place in memory) were recorded by
    /// the stage that raised them and are not again; an alert the stage edited is a new
    /// event and is recorded.
    pub(super) fn record_alerts(
        &self,
        out: &[Arc<crate::event::Event>],
        passed: &[Arc<crate::event::Event>],
    ) {
        let new = || {
            out.iter()
                .filter(|e| e.alert().is_some() && !passed.iter().any(|p| Arc::ptr_eq(p, e)))
        };
        self.tap.alerts(new());
        if self.inhibitor.is_active() {
            for event in new() {
                if let Some(alert) = event.alert() {
                    self.inhibitor.observe(alert, event.data());
                }
            }
        }
        // Queued for the store's writer (the stage goes on at once), in one transaction
        // with what other nodes write meanwhile.
        let alerts: Vec<_> = new().filter_map(|e| e.alert()).cloned().collect();
        if !alerts.is_empty() {
            self.store.record_alerts_later(&self.id, alerts);
        }
    }

    /// The stage's state to save (`None` when states are not kept, or the stage has
    /// none): its JSON text, at most `max_bytes` of it. When the one before was large or
    /// slow (a state of a million keys takes seconds), it is written with the async
    /// worker's thread handed over to the blocking pool meanwhile; small ones are written
    /// in place (a hand-over starts another worker thread, and threads that come and go
    /// leave the allocator's memory behind them). Saved by [`Snapshots::write`].
    pub(super) fn take(&mut self, stage: &dyn Stage) -> Option<Snapshot> {
        if !self.enabled {
            return None;
        }
        let started = std::time::Instant::now();
        let state = if self.heavy {
            off_workers(|| stage.snapshot(self.max_bytes))
        } else {
            stage.snapshot(self.max_bytes)
        };
        self.heavy = started.elapsed() >= HEAVY_STATE_TIME
            || match &state {
                Some(Snapshot::Text(text)) => text.len() >= HEAVY_STATE_BYTES,
                Some(Snapshot::TooLarge) => true,
                None => false,
            };
        state
    }

    /// Saves a state taken with [`Snapshots::take`] on the run's writing thread, waiting
    /// until it is on disk (a stage being replaced has saved when it ends).
    pub(super) async fn write(&self, state: Option<Snapshot>) {
        let Some(state) = state else { return };
        let (done, written) = tokio::sync::oneshot::channel();
        self.writer
            .send(SnapshotJob {
                id: self.id.clone(),
                state,
                max_bytes: self.max_bytes,
                store: self.store.clone(),
                counters: self.counters.clone(),
                done,
            })
            .await;
        let _ = written.await;
    }
}

/// Builds a failed node again, after the wait its supervisor asks for (`wait`: `false`
/// when it was cut short by a stop); a build that fails is one more failure. `None` when
/// the supervisor gives up or the wait is cut short.
pub(super) async fn restart<T>(
    supervisor: &mut Supervisor,
    error: String,
    again: &mut impl FnMut() -> Result<T, crate::runtime::NodeError>,
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
pub(super) trait Pause {
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
pub(super) struct OnClock(SharedClock);

impl Pause for OnClock {
    fn pause(&mut self, d: std::time::Duration) -> impl Future<Output = bool> + Send + '_ {
        wait_on(&self.0, d)
    }
}

/// What a node's run came to: `Ok(())` when it ended normally, else why it failed.
pub(super) async fn attempt(run: impl Future<Output = NodeResult>) -> Result<(), String> {
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(panic_message(&*p)),
    }
}

/// Runs a source, restarting it when it fails (not when it is being stopped). It waits
/// on its own context: ticks flow meanwhile and a stop ends the wait.
pub(super) async fn run_source(
    mut source: Box<dyn crate::runtime::Source>,
    mut cx: SourceContext,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn crate::runtime::Source>, crate::runtime::NodeError>,
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
            Some(mut s) => {
                s.attach();
                source = s;
            }
            None => break Err(error.into()),
        }
    };
    cx.into_output().close().await;
    result
}

/// Runs a sink on its input, building it again when it fails; when its supervisor gives
/// up, what still arrives is counted as failed until the input ends.
pub(super) async fn run_sink(
    mut sink: Box<dyn crate::runtime::Sink>,
    mut input: Input,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn crate::runtime::Sink>, crate::runtime::NodeError>,
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
                        EventsFailed {
                            node: supervisor.id(),
                            events: events.len(),
                            why: FailedBecause::NodeGaveUp,
                        }
                        .emit(input.counters());
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
pub(super) fn guarded<R>(
    stage: &mut Box<dyn Stage>,
    f: impl FnOnce(&mut dyn Stage) -> R,
) -> Result<R, String> {
    let blocking = stage.blocking();
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(stage.as_mut())))
            .map_err(|p| panic_message(&*p))
    };
    if blocking { off_workers(run) } else { run() }
}

/// Runs `f`, which may take long, with the async worker's thread handed over to the
/// blocking pool meanwhile (its other tasks move to a new worker); inline on a runtime
/// with one thread (tests, `vigil test`).
pub(super) fn off_workers<R>(f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

pub(super) async fn run_stage(
    mut stage: Box<dyn Stage>,
    mut input: Input,
    mut output: Output,
    mut saver: Snapshots,
    mut supervisor: Supervisor,
    mut again: impl FnMut() -> Result<Box<dyn Stage>, crate::runtime::NodeError>,
) -> NodeResult {
    let mut clock = OnClock(supervisor.clock().clone());
    let mut out = Vec::new();
    let mut downstream_gone = false;
    // Why the stage stopped for good, when its supervisor gave up.
    let mut gave_up: Option<String> = None;
    while let Some(msg) = input.recv().await {
        if downstream_gone || gave_up.is_some() {
            if let Message::Events(events) = &msg {
                EventsFailed {
                    node: supervisor.id(),
                    events: events.len(),
                    why: if downstream_gone {
                        FailedBecause::DownstreamGone
                    } else {
                        FailedBecause::NodeGaveUp
                    },
                }
                .emit(input.counters());
                for e in events {
                    e.fail();
                }
            }
            continue;
        }
        let step = match msg {
            Message::Events(events) => {
                let passed: Vec<Arc<crate::event::Event>> = events
                    .iter()
                    .filter(|e| e.alert().is_some())
                    .cloned()
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
                        EventsFailed {
                            node: supervisor.id(),
                            events: failed.len() + 1,
                            why: FailedBecause::StagePanicked,
                        }
                        .emit(input.counters());
                        Err(panic)
                    }
                }
            }
            Message::Tick(now) => match guarded(&mut stage, |stage| stage.tick(now, &mut out)) {
                Ok(()) => {
                    saver.record_alerts(&out, &[]);
                    let state = saver.due(stage.as_ref(), now);
                    saver.write(state).await;
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
                let state = saver.take(stage.as_ref());
                saver.write(state).await;
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

    /// An alert handed on as received is not recorded again; one the stage replaced by
    /// an edited copy is, even when the copy takes the freed original's place in memory
    /// (the received events are held until the comparison is made).
    #[test]
    fn an_edited_alert_is_recorded_and_a_passed_one_is_not() {
        let store = Arc::new(crate::store::Store::in_memory().unwrap());
        let saver = Snapshots {
            tap: Arc::default(),
            inhibitor: Arc::default(),
            enabled: false,
            id: "p.edit".into(),
            store: store.clone(),
            every: chrono::Duration::seconds(30),
            last: None,
            max_bytes: 1 << 20,
            counters: Arc::default(),
            writer: SnapshotWriter(None),
            heavy: false,
        };
        let alert = crate::sinks::delivery::sample_alert();
        let received = Arc::new(Event::from_alert(alert.clone(), "p.in".into(), Utc::now()));
        let passed = vec![received.clone()];
        saver.record_alerts(std::slice::from_ref(&received), &passed);
        store.flush().unwrap();
        assert!(
            store.alert_counts().unwrap().is_empty(),
            "passed on as received"
        );
        let edited = Arc::new(Event::from_alert(
            crate::event::Alert {
                title: "edited".into(),
                ..alert
            },
            "p.in".into(),
            Utc::now(),
        ));
        saver.record_alerts(&[edited], &passed);
        store.flush().unwrap();
        let total: u64 = store.alert_counts().unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(total, 1, "the edited alert was recorded");
    }

    /// A stage whose state is `keys` entries of 100 bytes.
    struct Holding {
        keys: usize,
    }

    impl Stage for Holding {
        fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
            out.push(event);
        }

        fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
            Snapshot::write(
                &json!({"keys": vec!["k".repeat(100); self.keys]}),
                max_bytes,
            )
        }
    }

    /// A state larger than `snapshot_max_bytes` is not saved, the one before is removed
    /// (a restart starts empty, not from an old state), and it is counted; one within the
    /// bound is saved whole.
    #[tokio::test]
    async fn a_state_past_its_size_bound_is_not_saved_and_is_counted() {
        let counters = Arc::new(NodeCounters::default());
        let store = Arc::new(crate::store::Store::in_memory().unwrap());
        let mut saver = Snapshots {
            tap: Arc::default(),
            inhibitor: Arc::default(),
            enabled: true,
            id: "p.big".into(),
            store: store.clone(),
            every: chrono::Duration::seconds(30),
            last: None,
            max_bytes: 10_000,
            counters: counters.clone(),
            writer: SnapshotWriter::start(),
            heavy: false,
        };
        let state = saver.take(&Holding { keys: 50 });
        assert!(
            !saver.heavy,
            "a small state is taken in place next time too"
        );
        saver.write(state).await;
        let saved = store.stage_state("p.big").unwrap().expect("saved");
        let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
        assert_eq!(saved["keys"].as_array().map(Vec::len), Some(50));
        let state = saver.take(&Holding { keys: 500 });
        assert!(
            saver.heavy,
            "a state too large is taken off the workers next time"
        );
        saver.write(state).await;
        assert_eq!(
            store.stage_state("p.big").unwrap(),
            None,
            "the old state is gone"
        );
        assert_eq!(counters.dropped(), vec![("snapshot_too_large", 1)]);
    }

    /// A stage whose snapshot takes long: it waits (up to 10 s) until `ran` is set.
    struct SlowToSave {
        ran: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Stage for SlowToSave {
        fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
            out.push(event);
        }

        fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !self.ran.load(std::sync::atomic::Ordering::Acquire)
                && std::time::Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            Snapshot::write(&json!({"keys": []}), max_bytes)
        }
    }

    /// Taking a stage's state (seconds for a large one) does not hold the async worker:
    /// with one worker thread, a task spawned by the stage's task just before the snapshot
    /// runs while it is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_snapshot_is_taken_off_the_async_worker() {
        let stage_task = tokio::spawn(async {
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut saver = Snapshots {
                tap: Arc::default(),
                inhibitor: Arc::default(),
                enabled: true,
                id: "p.slow".into(),
                store: Arc::new(crate::store::Store::in_memory().unwrap()),
                every: chrono::Duration::seconds(30),
                last: None,
                max_bytes: 1 << 20,
                counters: Arc::default(),
                writer: SnapshotWriter(None),
                // As after a large state.
                heavy: true,
            };
            // Queued on this worker; it runs only if the worker is free while the state is
            // taken.
            let other = tokio::spawn({
                let ran = ran.clone();
                async move { ran.store(true, std::sync::atomic::Ordering::Release) }
            });
            let started = std::time::Instant::now();
            let state = saver.take(&SlowToSave { ran: ran.clone() });
            let waited = started.elapsed();
            let _ = other.await;
            (
                state.is_some(),
                ran.load(std::sync::atomic::Ordering::Acquire),
                waited,
            )
        });
        let (saved, _, waited) = stage_task.await.unwrap();
        assert!(saved);
        assert!(
            waited < std::time::Duration::from_secs(5),
            "the other task did not run while the state was taken: it waited {waited:?}"
        );
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
            max_bytes: 1 << 20,
            counters: counters.clone(),
            writer: SnapshotWriter(None),
            heavy: false,
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
            counters.clone(),
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
        assert_eq!(counters.restarts(), 1);
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
