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
}

/// Per-node counters, kept for metrics and shown at shutdown.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Events received.
    pub events_in: AtomicU64,
    /// Events handed on (sinks: written or delivered).
    pub events_out: AtomicU64,
    /// Records or events that failed (malformed input, write errors, ...).
    pub errors: AtomicU64,
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
    /// Adds one error.
    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n` errors.
    pub fn add_errors(&self, n: usize) {
        self.errors.fetch_add(n as u64, Ordering::Relaxed);
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

/// The sending side of a node: fans each message out to every downstream.
#[derive(Debug)]
pub struct Output {
    targets: Vec<(u32, mpsc::Sender<Envelope>)>,
    counters: Arc<NodeCounters>,
    last_tick: Option<Timestamp>,
}

impl Output {
    pub(crate) fn new(
        targets: Vec<(u32, mpsc::Sender<Envelope>)>,
        counters: Arc<NodeCounters>,
    ) -> Self {
        Output {
            targets,
            counters,
            last_tick: None,
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
        if self.last_tick.is_some_and(|t| t >= now) {
            return Ok(());
        }
        self.last_tick = Some(now);
        self.broadcast(Message::Tick(now)).await
    }

    async fn broadcast(&mut self, msg: Message) -> Result<(), Closed> {
        if self.targets.is_empty() {
            return Ok(());
        }
        let last = self.targets.len() - 1;
        let mut delivered = 0;
        let mut msg = Some(msg);
        for (i, (edge, tx)) in self.targets.iter().enumerate() {
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
    pub async fn close(self) {
        for (edge, tx) in &self.targets {
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
                Envelope::Msg(_, Message::Events(events)) => {
                    self.counters.add_in(events.len());
                    return Some(Message::Events(events));
                }
                Envelope::Msg(edge, Message::Tick(t)) => {
                    if let Some(slot) = self.ticks.iter_mut().find(|(e, _)| *e == edge) {
                        slot.1 = Some(slot.1.map_or(t, |old| old.max(t)));
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
