//! A test hook, and nothing else: it makes one stage or sink panic, so that tests can
//! prove through the binary that a panicking node is restarted and reported
//! (`tests/failures.rs`).
//!
//! It exists in debug builds only (`cfg(debug_assertions)`: `cargo test` builds the binary
//! that way). In a release build [`stage`] and [`sink`] hand the node back untouched, the
//! variable is never read, and no trace of the hook is compiled in.
//!
//! `VIGIL_FAULT_PANIC=<pipeline>.<node>[:count][,…]` makes the stage or sink with that id
//! panic when it is handed events, the first `count` times (default 1) in the process,
//! counted across its restarts. A stage panics on the event, as a bug in
//! [`Stage::process`] would; a sink fails the batch it was handed and panics, as a sink
//! that breaks on it does (a sink reads no ticks: those it takes meanwhile are let go).

use std::sync::Arc;

use crate::node::{Sink, Stage};

/// Node `id`'s stage, made to panic when the hook names it (debug builds only).
#[cfg(debug_assertions)]
pub(super) fn stage(id: &Arc<str>, stage: Box<dyn Stage>) -> Box<dyn Stage> {
    if hook::names(id) {
        Box::new(hook::PanickingStage {
            id: id.clone(),
            inner: stage,
        })
    } else {
        stage
    }
}

/// Node `id`'s sink, made to panic when the hook names it (debug builds only).
#[cfg(debug_assertions)]
pub(super) fn sink(id: &Arc<str>, sink: Box<dyn Sink>) -> Box<dyn Sink> {
    if hook::names(id) {
        Box::new(hook::PanickingSink {
            id: id.clone(),
            inner: sink,
        })
    } else {
        sink
    }
}

/// A release build has no hook: the stage as built.
#[cfg(not(debug_assertions))]
pub(super) fn stage(_id: &Arc<str>, stage: Box<dyn Stage>) -> Box<dyn Stage> {
    stage
}

/// A release build has no hook: the sink as built.
#[cfg(not(debug_assertions))]
pub(super) fn sink(_id: &Arc<str>, sink: Box<dyn Sink>) -> Box<dyn Sink> {
    sink
}

#[cfg(debug_assertions)]
mod hook {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, OnceLock};

    use futures::future::BoxFuture;

    use crate::event::{Event, Timestamp};
    use crate::node::{Input, Message, NodeResult, Sink, Stage};

    /// The variable that names the node.
    const VAR: &str = "VIGIL_FAULT_PANIC";

    /// A node to make panic, and how many more times.
    struct Fault {
        node: String,
        left: AtomicU32,
    }

    /// What the variable asks for, read once per process.
    fn faults() -> &'static [Fault] {
        static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
        FAULTS.get_or_init(|| {
            let Ok(spec) = std::env::var(VAR) else {
                return Vec::new();
            };
            let Some(nodes) = spec.split(',').map(parse).collect::<Option<Vec<_>>>() else {
                tracing::error!(variable = VAR, value = %spec, "not <pipeline>.<node>[:count][,…]; the test hook is off");
                return Vec::new();
            };
            nodes
                .into_iter()
                .map(|(node, count)| {
                    tracing::warn!(variable = VAR, %node, count, "test hook (debug builds only): this node panics when handed events");
                    Fault {
                        node,
                        left: AtomicU32::new(count),
                    }
                })
                .collect()
        })
    }

    /// Node `id`'s fault, if the variable names it.
    fn fault(id: &str) -> Option<&'static Fault> {
        faults().iter().find(|f| f.node == id)
    }

    /// `<pipeline>.<node>[:count]` → the node's id and the count (1 when left out).
    pub(super) fn parse(spec: &str) -> Option<(String, u32)> {
        let (node, count) = match spec.rsplit_once(':') {
            Some((node, count)) => (node, count.trim().parse().ok()?),
            None => (spec, 1),
        };
        let node = node.trim();
        let (pipeline, name) = node.split_once('.')?;
        (!pipeline.is_empty() && !name.is_empty()).then(|| (node.to_string(), count))
    }

    /// Whether the hook names node `id`.
    pub(super) fn names(id: &str) -> bool {
        fault(id).is_some()
    }

    /// Whether node `id` has panics left.
    fn armed(id: &str) -> bool {
        fault(id).is_some_and(|f| f.left.load(Ordering::Acquire) > 0)
    }

    /// Takes one of node `id`'s panics: whether it had one left.
    fn strike(id: &str) -> bool {
        fault(id).is_some_and(|f| {
            f.left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// A stage that panics on the events it is handed while the hook has panics left.
    pub(super) struct PanickingStage {
        pub(super) id: Arc<str>,
        pub(super) inner: Box<dyn Stage>,
    }

    impl Stage for PanickingStage {
        fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
            if strike(&self.id) {
                panic!("{VAR}: stage {} panics on an event (test hook)", self.id);
            }
            self.inner.process(event, out);
        }

        fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
            self.inner.tick(now, out);
        }

        fn finish(&mut self, out: &mut Vec<Arc<Event>>) {
            self.inner.finish(out);
        }

        fn snapshot(&self, max_bytes: u64) -> Option<crate::node::Snapshot> {
            self.inner.snapshot(max_bytes)
        }

        fn blocking(&self) -> bool {
            self.inner.blocking()
        }
    }

    /// A sink that, while the hook has panics left, takes its input itself and fails and
    /// panics on the first events; then the sink it wraps runs on the input.
    pub(super) struct PanickingSink {
        pub(super) id: Arc<str>,
        pub(super) inner: Box<dyn Sink>,
    }

    impl Sink for PanickingSink {
        fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult> {
            Box::pin(async move {
                while armed(&self.id) {
                    match input.recv().await {
                        Some(Message::Events(events)) => {
                            // Failed, as a sink must fail what it held when it breaks.
                            events.iter().for_each(|e| e.fail());
                            use crate::node::internal_event::{
                                EventsFailed, FailedBecause, InternalEvent,
                            };
                            EventsFailed {
                                node: &self.id,
                                events: events.len(),
                                why: FailedBecause::NodePanicked,
                            }
                            .emit(input.counters());
                            strike(&self.id);
                            panic!("{VAR}: sink {} panics on a batch (test hook)", self.id);
                        }
                        Some(Message::Tick(_)) => {}
                        None => break,
                    }
                }
                self.inner.run(input).await
            })
        }
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::hook::parse;

    #[test]
    fn the_variable_names_a_node_and_a_count() {
        assert_eq!(parse("p.boom"), Some(("p.boom".into(), 1)));
        assert_eq!(parse(" p.boom:3 "), Some(("p.boom".into(), 3)));
        assert_eq!(parse("p.boom:x"), None);
        assert_eq!(parse("boom"), None);
        assert_eq!(parse(".boom:2"), None);
    }
}
