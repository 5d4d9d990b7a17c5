//! Edges between nodes: bounded channels carrying batches of shared events and ticks.
//!
//! Every node has one inbound channel; each upstream node holds a sender to it and tags its
//! messages with its edge number, so the receiving side knows which upstream a tick came
//! from. Ticks are merged into a watermark: a node sees time `t` only when every upstream
//! that is still open has reached `t`. When an upstream finishes it says so (`Done`); the
//! node's input ends when every upstream has finished — that is how a shutdown drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::internal_event::{DropReason, ErrorReason};
use crate::event::{Event, Timestamp};

/// What travels on an edge.
#[derive(Debug, Clone)]
pub enum Message {
    /// Events, in order. Cloning the batch clones pointers, never records.
    Events(Vec<Arc<Event>>),
    /// The upstream's clock reached this time.
    Tick(Timestamp),
}

#[derive(Debug)]
pub(crate) enum Envelope {
    Msg(u32, Message),
    Done(u32),
    /// A reload connected an upstream on this edge (sent before anything on it, so the
    /// watermark waits for its first tick).
    Attach(u32),
}

/// Per-node counters, kept for metrics and shown at shutdown.
///
/// Errors, drops and restarts are counted only by the node's internal events
/// ([`super::internal_event`]), which write the matching log line too.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Events received.
    pub events_in: AtomicU64,
    /// Events handed on (sinks: written or delivered).
    pub events_out: AtomicU64,
    /// Records or events that failed (malformed input, write errors, ...).
    pub errors: AtomicU64,
    /// The same, by reason.
    failed: std::sync::Mutex<std::collections::BTreeMap<ErrorReason, u64>>,
    /// Times the node was started again after it failed.
    restarts: AtomicU64,
    /// What the node set aside on purpose, by reason.
    dropped: std::sync::Mutex<std::collections::BTreeMap<DropReason, u64>>,
}

impl NodeCounters {
    /// Adds to `events_in`.
    pub fn add_in(&self, n: usize) {
        self.events_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Adds to `events_out`.
    pub fn add_out(&self, n: usize) {
        self.events_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Adds `n` errors for `reason`.
    pub(super) fn add_errors(&self, reason: ErrorReason, n: u64) {
        if n == 0 {
            return;
        }
        self.errors.fetch_add(n, Ordering::Relaxed);
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        *f.entry(reason).or_default() += n;
    }
    /// What failed, by reason (its name in `/metrics`).
    pub fn errors_by_reason(&self) -> Vec<(&'static str, u64)> {
        let f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        f.iter().map(|(r, n)| (r.as_str(), *n)).collect()
    }
    /// Adds one restart.
    pub(super) fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts `n` things set aside for `reason`; returns how many were set aside for it
    /// so far.
    pub(super) fn add_dropped(&self, reason: DropReason, n: u64) -> u64 {
        let mut d = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            return d.get(&reason).copied().unwrap_or(0);
        }
        let total = d.entry(reason).or_default();
        *total += n;
        *total
    }
    /// What was set aside, by reason (its name in `/metrics`).
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        let d = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().map(|(r, n)| (r.as_str(), *n)).collect()
    }
    /// How many were set aside for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        let d = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        d.get(&reason).copied().unwrap_or(0)
    }
    /// Times the node was started again after it failed.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    /// A snapshot: (in, out, errors).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.events_in.load(Ordering::Relaxed),
            self.events_out.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Every downstream of the node the output belongs to is gone.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("every downstream node has stopped")]
pub struct Closed;

/// A change to where an [`Output`] sends, asked for by a reload and carried out by the
/// output itself between two messages, so nothing it sends is split across it.
#[derive(Debug)]
pub(crate) enum Rewire {
    /// Send to this node too, on this edge of its channel.
    Add {
        /// The node, `pipeline.node`.
        to: Arc<str>,
        /// The edge number on its channel.
        edge: u32,
        /// Its channel.
        tx: mpsc::Sender<Envelope>,
    },
    /// Stop sending to this node: it is told the edge is done (after everything already
    /// sent), then `done` fires.
    Remove {
        /// The node.
        to: Arc<str>,
        /// Fired once the node was told.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// Where a reload leaves [`Rewire`]s for an output to carry out.
#[derive(Debug, Default)]
pub(crate) struct Wiring {
    pending: std::sync::Mutex<Vec<Rewire>>,
    dirty: std::sync::atomic::AtomicBool,
}

impl Wiring {
    /// Queues `changes`; the output carries them out, in order and all at once, before
    /// the next message it sends (ticks included, so within a tick interval).
    pub(crate) fn push(&self, changes: Vec<Rewire>) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(changes);
        self.dirty.store(true, Ordering::Release);
    }
}

/// One downstream of an [`Output`].
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) to: Arc<str>,
    pub(crate) edge: u32,
    pub(crate) tx: mpsc::Sender<Envelope>,
}

/// The sending side of a node: fans each message out to every downstream.
#[derive(Debug)]
pub struct Output {
    targets: Vec<Target>,
    counters: Arc<NodeCounters>,
    last_tick: Option<Timestamp>,
    wiring: Option<Arc<Wiring>>,
}

impl Output {
    /// An output to fixed `targets` (tests).
    #[cfg(test)]
    pub(crate) fn new(
        targets: Vec<(u32, mpsc::Sender<Envelope>)>,
        counters: Arc<NodeCounters>,
    ) -> Self {
        let targets = targets
            .into_iter()
            .map(|(edge, tx)| Target {
                to: Arc::from(""),
                edge,
                tx,
            })
            .collect();
        Output {
            targets,
            counters,
            last_tick: None,
            wiring: None,
        }
    }

    /// An output to `targets` that a reload can rewire through `wiring`.
    pub(crate) fn wired(
        targets: Vec<Target>,
        counters: Arc<NodeCounters>,
        wiring: Arc<Wiring>,
    ) -> Self {
        Output {
            targets,
            counters,
            last_tick: None,
            wiring: Some(wiring),
        }
    }

    /// Carries out the rewiring a reload asked for, if any.
    async fn rewire(&mut self) {
        let Some(wiring) = &self.wiring else {
            return;
        };
        if !wiring.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let changes = std::mem::take(
            &mut *wiring
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for change in changes {
            match change {
                Rewire::Add { to, edge, tx } => self.targets.push(Target { to, edge, tx }),
                Rewire::Remove { to, done } => {
                    let (gone, kept): (Vec<Target>, Vec<Target>) =
                        std::mem::take(&mut self.targets)
                            .into_iter()
                            .partition(|t| t.to == to);
                    self.targets = kept;
                    for t in gone {
                        let _ = t.tx.send(Envelope::Done(t.edge)).await;
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    /// Sends events to every downstream, waiting while a downstream is full
    /// (backpressure). Empty batches are not sent.
    pub async fn send(&mut self, events: Vec<Arc<Event>>) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        self.counters.add_out(events.len());
        self.broadcast(Message::Events(events)).await
    }

    /// Sends a tick downstream, unless time has not moved since the last one.
    pub async fn tick(&mut self, now: Timestamp) -> Result<(), Closed> {
        self.rewire().await;
        if self.last_tick.is_some_and(|t| t >= now) {
            return Ok(());
        }
        self.last_tick = Some(now);
        self.broadcast(Message::Tick(now)).await
    }

    async fn broadcast(&mut self, msg: Message) -> Result<(), Closed> {
        self.rewire().await;
        if self.targets.is_empty() {
            return Ok(());
        }
        let last = self.targets.len() - 1;
        let mut delivered = 0;
        let mut msg = Some(msg);
        for (i, Target { edge, tx, .. }) in self.targets.iter().enumerate() {
            let m = if i == last {
                msg.take().expect("taken only at the last target")
            } else {
                msg.clone().expect("present until the last target")
            };
            if tx.send(Envelope::Msg(*edge, m)).await.is_ok() {
                delivered += 1;
            }
        }
        if delivered == 0 { Err(Closed) } else { Ok(()) }
    }

    /// Tells every downstream that this node is finished.
    pub async fn close(mut self) {
        self.rewire().await;
        for Target { edge, tx, .. } in &self.targets {
            let _ = tx.send(Envelope::Done(*edge)).await;
        }
    }

    /// This node's counters.
    pub fn counters(&self) -> &Arc<NodeCounters> {
        &self.counters
    }
}

/// The receiving side of a node.
#[derive(Debug)]
pub struct Input {
    rx: mpsc::Receiver<Envelope>,
    /// Last tick per upstream edge; `None` = no tick yet. Finished edges are removed.
    ticks: Vec<(u32, Option<Timestamp>)>,
    watermark: Option<Timestamp>,
    counters: Arc<NodeCounters>,
}

impl Input {
    pub(crate) fn new(
        rx: mpsc::Receiver<Envelope>,
        edges: Vec<u32>,
        counters: Arc<NodeCounters>,
    ) -> Self {
        Input {
            rx,
            ticks: edges.into_iter().map(|e| (e, None)).collect(),
            watermark: None,
            counters,
        }
    }

    /// The next message: events as they come, ticks only when the watermark (the earliest
    /// time every open upstream has reached) moves. `None` once every upstream finished.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if self.ticks.is_empty() {
                return None;
            }
            match self.rx.recv().await? {
                Envelope::Msg(edge, Message::Events(events)) => {
                    if !self.ticks.iter().any(|(e, _)| *e == edge) {
                        // An upstream a reload connected: it counts for the watermark
                        // from its first tick.
                        self.ticks.push((edge, None));
                    }
                    self.counters.add_in(events.len());
                    return Some(Message::Events(events));
                }
                Envelope::Attach(edge) => {
                    if !self.ticks.iter().any(|(e, _)| *e == edge) {
                        self.ticks.push((edge, None));
                    }
                }
                Envelope::Msg(edge, Message::Tick(t)) => {
                    match self.ticks.iter_mut().find(|(e, _)| *e == edge) {
                        Some(slot) => slot.1 = Some(slot.1.map_or(t, |old| old.max(t))),
                        // An upstream a reload connected.
                        None => self.ticks.push((edge, Some(t))),
                    }
                    if let Some(w) = self.advance() {
                        return Some(Message::Tick(w));
                    }
                }
                Envelope::Done(edge) => {
                    self.ticks.retain(|(e, _)| *e != edge);
                    if let Some(w) = self.advance() {
                        return Some(Message::Tick(w));
                    }
                }
            }
        }
    }

    fn advance(&mut self) -> Option<Timestamp> {
        let mut min: Option<Timestamp> = None;
        for (_, t) in &self.ticks {
            let t = (*t)?;
            min = Some(min.map_or(t, |m: Timestamp| m.min(t)));
        }
        let min = min?;
        if self.watermark.is_some_and(|w| w >= min) {
            return None;
        }
        self.watermark = Some(min);
        Some(min)
    }

    /// This node's counters.
    pub fn counters(&self) -> &Arc<NodeCounters> {
        &self.counters
    }
}

impl Drop for Input {
    /// A node that stops with events still queued for it did not handle them: their
    /// batches are marked failed, so no source checkpoints past them.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(envelope) = self.rx.try_recv() {
            if let Envelope::Msg(_, Message::Events(events)) = envelope {
                for e in &events {
                    e.fail();
                }
            }
        }
    }
}

/// Builds an edge set: one channel for a node with `upstreams` edges.
pub(crate) fn channel(buffer: usize) -> (mpsc::Sender<Envelope>, mpsc::Receiver<Envelope>) {
    mpsc::channel(buffer.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.timestamp_opt(s, 0).single().unwrap()
    }

    #[tokio::test]
    async fn watermark_is_min_of_open_upstreams() {
        let (tx, rx) = channel(16);
        let counters = Arc::new(NodeCounters::default());
        let mut input = Input::new(rx, vec![0, 1], counters.clone());
        let mut a = Output::new(vec![(0, tx.clone())], Arc::new(NodeCounters::default()));
        let mut b = Output::new(vec![(1, tx)], Arc::new(NodeCounters::default()));
        a.tick(t(10)).await.unwrap();
        b.tick(t(5)).await.unwrap();
        a.tick(t(20)).await.unwrap();
        b.close().await;
        a.close().await;
        let mut seen = Vec::new();
        while let Some(m) = input.recv().await {
            if let Message::Tick(x) = m {
                seen.push(x.timestamp());
            }
        }
        // 5 once both have ticked; 20 once b is finished and only a is left.
        assert_eq!(seen, vec![5, 20]);
    }

    #[tokio::test]
    async fn fan_out_shares_events() {
        let (tx1, mut rx1) = channel(4);
        let (tx2, mut rx2) = channel(4);
        let mut out = Output::new(vec![(0, tx1), (0, tx2)], Arc::new(NodeCounters::default()));
        let ev = Arc::new(Event::from_record(
            serde_json::json!({"a": 1}),
            "p.s".into(),
            t(0),
        ));
        out.send(vec![ev.clone()]).await.unwrap();
        let (
            Some(Envelope::Msg(_, Message::Events(a))),
            Some(Envelope::Msg(_, Message::Events(b))),
        ) = (rx1.recv().await, rx2.recv().await)
        else {
            panic!("expected events on both edges");
        };
        assert!(Arc::ptr_eq(&a[0], &ev) && Arc::ptr_eq(&b[0], &ev));
        assert_eq!(out.counters().get().1, 1);
    }
}
