//! A PCE's history for a `new_term` warm-up ([`PceWarmUp`]): read in the background
//! through the connection's client, made into the events its sources make, and handed to
//! the stage in batches over a bounded channel (the reader waits while the stage has not
//! taken what it was given).
//!
//! Traffic is read a day at a time with the hub's own slice reader (the flows of every
//! policy decision, labels map and IP list names added); a day whose result would be
//! truncated is read again in halves, down to [`MIN_TRAFFIC_SPAN`]. Audit events are
//! read an hour at a time, full pages narrowed as the `pce_events` source narrows them.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

use crate::event::{Event, Timestamp};
use crate::pce::client::{MAX_TRAFFIC_RESULTS, PceError};
use crate::sources::PceServices;
use crate::sources::pce_events::{PceEventsConfig, read_range};
use crate::sources::pce_traffic::Ledger;
use crate::sources::pce_traffic::narrow::Restriction;
use crate::sources::pce_traffic::slice::{Plan, SliceRead};
use crate::stages::new_term::{HistoryFeed, HistoryKind, HistoryMsg, PceWarmUp};

/// The span of traffic asked for at once.
const TRAFFIC_SPAN: chrono::Duration = chrono::Duration::days(1);

/// The shortest span a truncated traffic result is split down to (a shorter one is
/// learned truncated).
pub const MIN_TRAFFIC_SPAN: chrono::Duration = chrono::Duration::minutes(10);

/// The span of audit events asked for at once.
const EVENTS_SPAN: chrono::Duration = chrono::Duration::hours(1);

/// Events handed over per message.
const BATCH: usize = 1000;

/// Starts reading `warm`'s history up to `now` for stage `stage`; `None` where there is
/// no runtime to read it on (`vigil test`, `vigil replay`).
pub fn start(
    pce: &Arc<PceServices>,
    warm: &PceWarmUp,
    now: Timestamp,
    stage: Arc<str>,
) -> Option<HistoryFeed> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = mpsc::channel(4);
    let pce = pce.clone();
    let warm = warm.clone();
    runtime.spawn(async move {
        let lookback = chrono::Duration::from_std(warm.lookback.get()).unwrap_or(TRAFFIC_SPAN);
        let from = now.checked_sub_signed(lookback).unwrap_or(now);
        let read = match warm.read {
            HistoryKind::Traffic => traffic(&pce, from, now, &tx).await,
            HistoryKind::Events => events(&pce, from, now, &tx).await,
        };
        let end = match read {
            Ok(read) => {
                tracing::debug!(stage = %stage, read, "the PCE's history is read");
                HistoryMsg::Done
            }
            Err(e) => HistoryMsg::Failed(e.to_string()),
        };
        // A stage gone (a reload) no longer listens: nothing to do.
        let _ = tx.send(end).await;
    });
    Some(rx)
}

/// Hands `batch` over; `false` when the stage is gone.
async fn hand(tx: &mpsc::Sender<HistoryMsg>, batch: &mut Vec<Event>) -> bool {
    if batch.is_empty() {
        return true;
    }
    tx.send(HistoryMsg::Events(std::mem::take(batch)))
        .await
        .is_ok()
}

/// The flows of `[from, to)`; how many were handed over.
async fn traffic(
    pce: &PceServices,
    from: Timestamp,
    to: Timestamp,
    tx: &mpsc::Sender<HistoryMsg>,
) -> Result<u64, PceError> {
    if pce.names().snapshot().refreshed_at.is_none() {
        pce.names().refresh(pce.client(), to).await?;
    }
    let plan = Plan {
        interval: TRAFFIC_SPAN,
        settle: chrono::Duration::zero(),
        max_results: MAX_TRAFFIC_RESULTS,
        names_refresh: TRAFFIC_SPAN,
        lookback: chrono::Duration::zero(),
        decisions: Vec::new(),
        restriction: Restriction::everything(),
        flow_memory: std::time::Duration::from_secs(1),
        max_flows: 1,
    };
    let source: Arc<str> = format!("pce_traffic:{}", pce.name()).into();
    // Oldest first: the spans to read, newest at the bottom of the stack.
    let mut todo = Vec::new();
    let mut end = to;
    while end > from {
        let start = end
            .checked_sub_signed(TRAFFIC_SPAN)
            .unwrap_or(from)
            .max(from);
        todo.push((start, end));
        end = start;
    }
    let mut handed = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some((a, b)) = todo.pop() {
        // Each span on its own: a long flow's rows in two spans are two sightings, and a
        // value is learned once whatever the count.
        let ledger = Ledger::new(plan.flow_memory, plan.max_flows);
        let (mut read, _) = SliceRead::open(
            pce.client(),
            pce.name(),
            &plan,
            pce.names(),
            &ledger,
            (a, b),
            source.clone(),
            b,
        )
        .await?;
        if read.truncated() && b - a > MIN_TRAFFIC_SPAN {
            let mid = a + (b - a) / 2;
            todo.push((mid, b));
            todo.push((a, mid));
            continue;
        }
        while let Some(event) = read.next(&ledger).await? {
            handed += 1;
            batch.push(event);
            if batch.len() >= BATCH && !hand(tx, &mut batch).await {
                return Ok(handed);
            }
        }
    }
    hand(tx, &mut batch).await;
    Ok(handed)
}

/// The audit events of `[from, to)`; how many were handed over.
async fn events(
    pce: &PceServices,
    from: Timestamp,
    to: Timestamp,
    tx: &mpsc::Sender<HistoryMsg>,
) -> Result<u64, PceError> {
    let cfg: PceEventsConfig = serde_json::from_value(json!({"connection": pce.name()}))
        .map_err(|e| PceError::InvalidQuery(format!("events: {e}")))?;
    let source: Arc<str> = format!("pce_events:{}", pce.name()).into();
    let mut handed = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut a = from;
    while a < to {
        let b = a.checked_add_signed(EVENTS_SPAN).unwrap_or(to).min(to);
        // The API's range is inclusive: the next span starts at `b`.
        let (records, _unusable) =
            read_range(pce.client(), &cfg, a, b - chrono::Duration::milliseconds(1)).await?;
        for (at, data) in records {
            handed += 1;
            batch.push(Event::from_record(data, source.clone(), at));
            if batch.len() >= BATCH && !hand(tx, &mut batch).await {
                return Ok(handed);
            }
        }
        a = b;
    }
    hand(tx, &mut batch).await;
    Ok(handed)
}
