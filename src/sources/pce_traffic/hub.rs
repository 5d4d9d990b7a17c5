//! The traffic hub of one PCE connection: ONE async query per cycle for every
//! `pce_traffic` source of that connection, its flows turned into events once and handed
//! to every subscriber.
//!
//! Slices are `[cursor, cursor + interval)`, queried once `now ≥ end + settle`. The cursor
//! is stored under `pce_traffic:<connection>` and moves only after every subscriber's
//! sinks have written the slice's flows (an end-to-end acknowledgement); a failed query,
//! an undelivered flow or a shutdown mid-slice leaves it where it was, so the same slice
//! is queried again (at-least-once delivery).
//!
//! Rows are counted through the connection's [`Ledger`]: a flow's row is counted in the
//! slice where it was last detected, a continuing flow's connections once (as the
//! increase), and repeats are dropped. What a slice teaches the ledger is applied only once
//! the slice is acknowledged; the ledger is then stored under `pce_traffic_flows:<connection>`
//! just before the cursor, and loaded at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::PceTrafficConfig;
use super::ledger::{Ledger, Pending, Tally};
use super::narrow::{Narrowing, Restriction};
use super::route::Route;
use super::slice::{Plan, SliceRead, fmt_time, route_of};
use crate::event::{Event, Field, Tape, Timestamp, time_from_value};
use crate::node::BuildContext;
use crate::pce::client::{PceClient, PceError};
use crate::pce::names::{NameCache, Names};
use crate::stages::filter::FilterConfig;
use crate::store::Store;
use crate::time::SharedClock;

/// Flow events handed to a subscriber per message. Every pipeline reading the connection
/// reads the same events one batch after the other: a small batch is still in the CPU's
/// cache when the next pipeline reads it (1,000 cost ~15% more CPU in a 25-rule cycle).
const BATCH: usize = 128;

/// A batch of flow events for one subscriber.
pub(crate) type Delivery = Vec<Arc<Event>>;

/// Flow events on their way to the subscribers, each routed to the subscribers that
/// can use it as it is made (see [`super::route`]).
#[derive(Default)]
struct Batch {
    /// Every event, for a subscriber that joined after the batch began.
    all: Vec<Arc<Event>>,
    /// The routes of the subscribers when the batch began.
    routes: Vec<Arc<Route>>,
    /// The events each of those can use.
    mine: Vec<Delivery>,
}

impl Batch {
    fn push(&mut self, event: Arc<Event>) {
        for (route, mine) in self.routes.iter().zip(&mut self.mine) {
            if route.wants(&event) {
                mine.push(event.clone());
            }
        }
        self.all.push(event);
    }

    /// The events the subscriber of `route` can use.
    fn take_for(&mut self, route: &Arc<Route>) -> Delivery {
        match self.routes.iter().position(|r| Arc::ptr_eq(r, route)) {
            Some(i) => self.mine.get_mut(i).map(std::mem::take).unwrap_or_default(),
            None => self
                .all
                .iter()
                .filter(|e| route.wants(e))
                .cloned()
                .collect(),
        }
    }
}

/// One subscribed source.
struct Subscriber {
    id: Arc<str>,
    cfg: PceTrafficConfig,
    /// What its pipeline can keep (see [`super::narrow`]).
    restriction: Restriction,
    /// The flows it can use.
    route: Arc<Route>,
    tx: mpsc::Sender<Delivery>,
}

/// How a slice went.
enum SliceOutcome {
    /// Every subscriber was handed the slice; what it taught the ledger.
    Done(Pending),
    /// Shutdown, or a subscriber went away: stop without moving the cursor.
    Stopped,
    /// Some flows were not delivered downstream (a sink failed): query the slice again.
    Undelivered,
}

/// The shared traffic reader of one PCE connection.
pub struct TrafficHub {
    connection: String,
    source_id: Arc<str>,
    client: PceClient,
    store: Arc<Store>,
    clock: SharedClock,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Told when a source subscribes: a hub whose sources all went (a reload replacing
    /// them, removing the last pipeline) waits for the next one.
    joined: tokio::sync::Notify,
    names: Arc<NameCache>,
    /// What the last query was narrowed to ([`Narrowing::describe`]; `None`: no query yet).
    narrowed: Mutex<Option<String>>,
    /// Slices whose result was truncated (more flows matched than it holds).
    pub truncated_slices: AtomicU64,
    /// Queries that failed (their slice is retried a minute later, backing off).
    pub failed_queries: AtomicU64,
    /// Slices fully handed to every subscriber.
    pub slices_done: AtomicU64,
    /// Rows counted whole (flows not seen before), in delivered slices.
    pub rows_new: AtomicU64,
    /// Rows of flows seen before, counted as their increase, in delivered slices.
    pub rows_continued: AtomicU64,
    /// Rows already counted (not handed on), in delivered slices.
    pub rows_repeated: AtomicU64,
    /// Flows the ledger forgot after `flow_memory` without a sighting.
    pub flows_expired: AtomicU64,
    /// Flows the ledger forgot because it held `max_flows`.
    pub flows_evicted: AtomicU64,
}

impl std::fmt::Debug for TrafficHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficHub")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl TrafficHub {
    /// The hub of `connection` (see [`crate::sources::PceServices`], which makes one per
    /// connection and starts it once every node is built).
    pub(crate) fn new(
        cx: &BuildContext,
        connection: &str,
        client: PceClient,
        names: Arc<NameCache>,
    ) -> TrafficHub {
        TrafficHub {
            connection: connection.to_string(),
            source_id: format!("pce_traffic:{connection}").into(),
            client,
            store: cx.store.clone(),
            clock: cx.clock.clone(),
            subscribers: Mutex::new(Vec::new()),
            joined: tokio::sync::Notify::new(),
            names,
            narrowed: Mutex::new(None),
            truncated_slices: AtomicU64::new(0),
            failed_queries: AtomicU64::new(0),
            slices_done: AtomicU64::new(0),
            rows_new: AtomicU64::new(0),
            rows_continued: AtomicU64::new(0),
            rows_repeated: AtomicU64::new(0),
            flows_expired: AtomicU64::new(0),
            flows_evicted: AtomicU64::new(0),
        }
    }

    /// Its counters.
    pub fn counters(&self) -> super::TrafficCounters {
        use std::sync::atomic::Ordering::Relaxed;
        super::TrafficCounters {
            slices: self.slices_done.load(Relaxed),
            failed_queries: self.failed_queries.load(Relaxed),
            truncated: self.truncated_slices.load(Relaxed),
            rows_new: self.rows_new.load(Relaxed),
            rows_continued: self.rows_continued.load(Relaxed),
            rows_repeated: self.rows_repeated.load(Relaxed),
            flows_expired: self.flows_expired.load(Relaxed),
            flows_evicted: self.flows_evicted.load(Relaxed),
        }
    }

    /// The connection's name cache.
    pub fn names(&self) -> &Arc<NameCache> {
        &self.names
    }

    /// What the last query asked the PCE for beyond its time range and decisions (JSON:
    /// `services`, `sources`, `destinations`, `exclude_workloads_from_ip_list_query`,
    /// `not_found`); `None` before the first query.
    pub fn narrowed(&self) -> Option<String> {
        self.narrowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Keeps what a query was narrowed to, saying so at debug level when it changed.
    fn note_narrowing(&self, narrowing: &Narrowing) {
        let now = narrowing.describe();
        let mut last = self.narrowed.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(now.as_str()) {
            tracing::debug!(
                connection = %self.connection, narrowed = %now,
                "pce_traffic: the query asks for (beyond its slice and decisions; logged when it changes)"
            );
            *last = Some(now);
        }
    }

    /// The store key of the slice cursor.
    pub fn cursor_key(&self) -> String {
        format!("pce_traffic:{}", self.connection)
    }

    /// The store key of the flow ledger (the flows already counted).
    pub fn ledger_key(&self) -> String {
        format!("pce_traffic_flows:{}", self.connection)
    }

    /// Subscribes a source; it receives the flows of every slice queried from now on that
    /// `readers` (the filter stages reading it, when every reader is one) can keep.
    pub(crate) fn subscribe(
        &self,
        id: Arc<str>,
        cfg: PceTrafficConfig,
        restriction: Restriction,
        readers: Option<&[FilterConfig]>,
    ) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(4);
        let route = Arc::new(route_of(&cfg, readers));
        let mut subscribers = self.lock();
        // A source rebuilt by a reload takes the place of the one it replaces.
        subscribers.retain(|s| s.id != id);
        subscribers.push(Subscriber {
            id,
            cfg,
            restriction,
            route,
            tx,
        });
        drop(subscribers);
        self.joined.notify_waiters();
        rx
    }

    /// The ids of the sources subscribed.
    pub fn subscribers(&self) -> Vec<Arc<str>> {
        self.lock().iter().map(|s| s.id.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the hub's loop.
    pub(crate) fn start(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(shutdown).await })
    }

    fn plan(&self) -> Option<Plan> {
        let subs = self.lock();
        Plan::of(subs.iter().map(|s| (&s.cfg, &s.restriction)))
    }

    /// The stored cursor, or where the first run starts.
    fn initial_cursor(&self, plan: &Plan) -> Timestamp {
        match self.store.checkpoint(&self.cursor_key()) {
            Ok(Some(v)) => {
                if let Some(t) = v.get("next_start").and_then(time_from_value) {
                    return t;
                }
                tracing::warn!(connection = %self.connection, "pce_traffic: stored cursor unreadable; starting afresh");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(connection = %self.connection, error = %e, "pce_traffic: cannot read the cursor; starting afresh");
            }
        }
        // The lookback counts back from the newest settled time (`now - settle`), and
        // the first run reads at least the last settled slice (`start_at: now`).
        // `start_at: 12m` with `interval: 12m` is one slice, not the lookback plus one.
        self.clock.now() - plan.settle - plan.lookback.max(plan.interval)
    }

    /// The stored ledger, or an empty one.
    fn initial_ledger(&self, plan: &Plan) -> Ledger {
        let afresh = || Ledger::new(plan.flow_memory, plan.max_flows);
        match self.store.checkpoint(&self.ledger_key()) {
            Ok(Some(v)) => match Ledger::restore(&v, plan.flow_memory, plan.max_flows) {
                Ok(ledger) => {
                    tracing::debug!(connection = %self.connection, flows = ledger.len(), "pce_traffic: flow ledger loaded");
                    ledger
                }
                Err(e) => {
                    tracing::warn!(connection = %self.connection, error = %e, "pce_traffic: stored flow ledger unreadable; continuing flows seen before are counted whole once");
                    afresh()
                }
            },
            Ok(None) => afresh(),
            Err(e) => {
                tracing::warn!(connection = %self.connection, error = %e, "pce_traffic: cannot read the flow ledger; continuing flows seen before are counted whole once");
                afresh()
            }
        }
    }

    /// Adds a delivered slice's tally to the counters, saying so the first time flows are
    /// forgotten.
    fn count(&self, tally: Tally, plan: &Plan) {
        self.rows_new.fetch_add(tally.new, Ordering::Relaxed);
        self.rows_continued
            .fetch_add(tally.continued, Ordering::Relaxed);
        self.rows_repeated
            .fetch_add(tally.repeated, Ordering::Relaxed);
        if self
            .flows_expired
            .fetch_add(tally.expired, Ordering::Relaxed)
            == 0
            && tally.expired > 0
        {
            tracing::debug!(
                connection = %self.connection, flows = tally.expired,
                flow_memory = ?plan.flow_memory,
                "pce_traffic: forgetting flows not seen for flow_memory (logged once)"
            );
        }
        if self
            .flows_evicted
            .fetch_add(tally.evicted, Ordering::Relaxed)
            == 0
            && tally.evicted > 0
        {
            tracing::warn!(
                connection = %self.connection, flows = tally.evicted, max_flows = plan.max_flows,
                "pce_traffic: more flows than max_flows to remember; the least recently seen are forgotten, and a later row of one counts whole again (raise max_flows; logged once)"
            );
        }
    }

    /// Resolves when every subscriber is gone.
    fn all_gone(&self) -> impl std::future::Future<Output = ()> + use<> {
        let txs: Vec<_> = self.lock().iter().map(|s| s.tx.clone()).collect();
        async move {
            join_all(txs.iter().map(|t| t.closed())).await;
        }
    }

    /// Waits until `deadline`, or until every subscriber is gone (the caller plans again);
    /// `false` on shutdown.
    async fn sleep_until(&self, deadline: Timestamp, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = self.all_gone() => true,
            _ = self.clock.sleep_until(deadline) => true,
        }
    }

    /// The plan of the sources subscribed now, after waiting for one to subscribe when
    /// none is (the ones gone are forgotten); `None` on shutdown.
    async fn next_plan(&self, shutdown: &CancellationToken) -> Option<Plan> {
        loop {
            let joined = self.joined.notified();
            self.lock().retain(|s| !s.tx.is_closed());
            if let Some(plan) = self.plan() {
                return Some(plan);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = joined => {}
            }
        }
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(first) = self.next_plan(&shutdown).await else {
            return;
        };
        let mut cursor = self.initial_cursor(&first);
        let mut ledger = self.initial_ledger(&first);
        let mut names_due = self.clock.now();
        // Failed queries in a row: the same slice is tried again sooner than a whole
        // interval (see `retry_delay`).
        let mut failures: u32 = 0;
        loop {
            let Some(plan) = self.next_plan(&shutdown).await else {
                return;
            };
            let end = crate::time::later_by(cursor, plan.interval);
            let due = crate::time::later_by(end, plan.settle);
            if self.clock.now() < due {
                if !self.sleep_until(due, &shutdown).await {
                    return;
                }
                continue;
            }
            let now = self.clock.now();
            if now >= names_due {
                let refreshed = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.names.refresh(&self.client, now) => r,
                };
                if let Err(e) = refreshed {
                    tracing::warn!(connection = %self.connection, error = %e, "pce_traffic: cannot refresh the names of labels, IP lists and workloads; keeping the previous ones");
                }
                names_due = crate::time::later_by(now, plan.names_refresh);
            }
            ledger.set_limits(plan.flow_memory, plan.max_flows);
            // A slice that finished is recorded even when the shutdown came meanwhile.
            // The slice may retry for one interval, then it reports its failure and is
            // planned again (`retry_delay`).
            let deadline = crate::time::later_by(self.clock.now(), plan.interval);
            let outcome = tokio::select! {
                biased;
                r = self.slice(cursor, end, deadline, &plan, &ledger, &shutdown) => r,
                _ = shutdown.cancelled() => return,
            };
            match outcome {
                Ok(SliceOutcome::Done(pending)) => {
                    failures = 0;
                    let tally = ledger.commit(pending);
                    self.count(tally, &plan);
                    cursor = end;
                    self.slices_done.fetch_add(1, Ordering::Relaxed);
                    // The ledger first: if the cursor were not stored after it, the slice
                    // is read again and its rows, already delivered, are repeats.
                    // Both are queued for the store's writer at once (one transaction,
                    // in this order) and awaited.
                    let stored = json!({"next_start": fmt_time(&cursor)});
                    let writes = [
                        (
                            self.store.queue_checkpoint_text(
                                &self.ledger_key(),
                                ledger.save_text(cursor),
                            ),
                            "the flow ledger",
                        ),
                        (
                            self.store.queue_checkpoint(&self.cursor_key(), &stored),
                            "the slice cursor",
                        ),
                    ];
                    for (written, what) in writes {
                        if let Err(e) = written.await {
                            tracing::error!(connection = %self.connection, error = %e, "pce_traffic: cannot store {what}");
                        }
                    }
                }
                // Every subscriber went mid-slice (a reload replaced them): the slice is
                // read again for the ones that come next.
                Ok(SliceOutcome::Stopped) if !shutdown.is_cancelled() => {}
                Ok(SliceOutcome::Stopped) => return,
                Ok(SliceOutcome::Undelivered) => {
                    tracing::warn!(
                        connection = %self.connection, start = %fmt_time(&cursor), end = %fmt_time(&end),
                        "pce_traffic: some flows of the slice were not delivered downstream; the slice is read again next cycle"
                    );
                    let retry_at = crate::time::later_by(self.clock.now(), plan.interval);
                    if !self.sleep_until(retry_at, &shutdown).await {
                        return;
                    }
                }
                Err(e) => {
                    self.failed_queries.fetch_add(1, Ordering::Relaxed);
                    let delay = retry_delay(failures, plan.interval);
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        connection = %self.connection, start = %fmt_time(&cursor), end = %fmt_time(&end),
                        error = %e, retry_in_secs = delay.num_seconds(),
                        "pce_traffic: traffic query failed; the same slice is retried"
                    );
                    let retry_at = crate::time::later_by(self.clock.now(), delay);
                    if !self.sleep_until(retry_at, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Queries `[start, end)` and hands its flows, counted through `ledger`, to every
    /// subscriber.
    async fn slice(
        &self,
        start: Timestamp,
        end: Timestamp,
        deadline: Timestamp,
        plan: &Plan,
        ledger: &Ledger,
        shutdown: &CancellationToken,
    ) -> Result<SliceOutcome, PceError> {
        let ingest = self.clock.now();
        let (mut read, narrowing) = SliceRead::open(
            &self.client.until(deadline),
            &self.connection,
            plan,
            &self.names,
            ledger,
            (start, end),
            self.source_id.clone(),
            ingest,
        )
        .await?;
        read.set_ingest(self.clock.now());
        self.note_narrowing(&narrowing);
        if read.truncated() {
            self.truncated_slices.fetch_add(1, Ordering::Relaxed);
            let (matches_count, held) = read.counts();
            tracing::warn!(
                connection = %self.connection, start = %fmt_time(&start), end = %fmt_time(&end),
                matches_count, held = held.unwrap_or(matches_count),
                "pce_traffic: slice truncated; its flows are marked vigil.truncated"
            );
        }
        // Every flow of the slice carries one acknowledgement: the cursor moves only once
        // every subscriber's sinks have written them (or stages dropped them on purpose).
        let (guard, ack) = crate::event::ack_pair();
        let mut batch = Batch::default();
        while let Some(event) = read.next(ledger).await? {
            let event = event.with_ack(&guard);
            if batch.all.is_empty() {
                batch.routes = self.lock().iter().map(|s| s.route.clone()).collect();
                batch.mine = vec![Vec::new(); batch.routes.len()];
            }
            batch.push(Arc::new(event));
            if batch.all.len() >= BATCH && !self.fan_out(std::mem::take(&mut batch), shutdown).await
            {
                return Ok(SliceOutcome::Stopped);
            }
        }
        if !batch.all.is_empty() && !self.fan_out(batch, shutdown).await {
            return Ok(SliceOutcome::Stopped);
        }
        let rows = read.rows_read();
        let (matches_count, _) = read.counts();
        let (pending, short) = read.finish();
        if short {
            self.truncated_slices.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                connection = %self.connection, start = %fmt_time(&start), end = %fmt_time(&end),
                matches_count, read = rows,
                "pce_traffic: slice truncated (the result held fewer flows than matched; its flows were handed on unmarked)"
            );
        }
        drop(guard);
        if ack.delivered().await {
            Ok(SliceOutcome::Done(pending))
        } else {
            Ok(SliceOutcome::Undelivered)
        }
    }

    /// Hands each subscriber the events of the batch it can use (see [`Route`]). `false` on
    /// shutdown or when a subscriber is gone.
    async fn fan_out(&self, mut batch: Batch, shutdown: &CancellationToken) -> bool {
        let targets: Vec<(Arc<str>, mpsc::Sender<Delivery>, Delivery)> = self
            .lock()
            .iter()
            .map(|s| (s.id.clone(), s.tx.clone(), batch.take_for(&s.route)))
            .collect();
        drop(batch);
        for (id, tx, mine) in targets {
            if mine.is_empty() {
                continue;
            }
            let sent = tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = tx.send(mine) => r,
            };
            if sent.is_err() {
                tracing::debug!(source = %id, "pce_traffic: a subscriber is gone");
                // By channel, not id: a reload may have subscribed its successor.
                self.lock().retain(|s| !s.tx.same_channel(&tx));
            }
        }
        !self.lock().is_empty()
    }
}

/// Adds vigil's fields to a PCE flow record: `src`/`dst` `labels` (key → value) and
/// `ip_list_names`, `workload.labels_by_key`, and `vigil` (given).
pub fn enrich_flow(mut flow: Value, names: &Names, vigil: &Value) -> Value {
    let vigil = Arc::new(vigil.clone());
    for (path, value) in flow_fields(
        Field::Value(&flow),
        names,
        &vigil,
        &mut LabelCache::default(),
    ) {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut here = Some(&mut flow);
        for k in parents {
            here = here.and_then(|h| h.get_mut(*k));
        }
        if let Some(obj) = here.and_then(Value::as_object_mut) {
            obj.insert((*last).to_string(), Value::clone(&value));
        }
    }
    flow
}

/// [`enrich_flow`] on a tape: the fields are placed over it.
pub(super) fn enrich_tape(
    flow: &mut Tape,
    names: &Names,
    vigil: &Arc<Value>,
    cache: &mut LabelCache,
) {
    let fields = flow_fields(flow.root(), names, vigil, cache);
    flow.reserve_patches(fields.len());
    for (path, value) in fields {
        flow.set_static(path, value);
    }
}

/// The fields [`enrich_flow`] adds, in the order it adds them.
fn flow_fields(
    flow: Field<'_>,
    names: &Names,
    vigil: &Arc<Value>,
    cache: &mut LabelCache,
) -> Vec<(&'static [&'static str], Arc<Value>)> {
    let mut out = Vec::with_capacity(7);
    for side in ["src", "dst"] {
        let Some(ep) = flow.get(side).filter(Field::is_object) else {
            continue;
        };
        let mut labels = None;
        if let Some(wl) = ep.get("workload").filter(Field::is_object) {
            let path: &'static [&'static str] = if side == "src" {
                &["src", "workload", "labels_by_key"]
            } else {
                &["dst", "workload", "labels_by_key"]
            };
            let listed = wl
                .get("labels")
                .filter(|l| matches!(l.scalar(), crate::event::Scalar::Other) && !l.is_object());
            let href = wl.get("href").and_then(|h| h.as_str());
            let map = match href.and_then(|h| cache.get(listed.is_some(), h)) {
                Some(known) => known,
                None => {
                    let mut map = Map::new();
                    match listed {
                        Some(list) => {
                            for l in list.items() {
                                if let Some((k, v)) = label_pair_of(l, &names.labels) {
                                    map.insert(k, Value::String(v));
                                }
                            }
                        }
                        None => {
                            let pairs = href.and_then(|h| names.workloads.get(h));
                            for (k, v) in pairs.into_iter().flatten() {
                                map.insert(k.clone(), Value::String(v.clone()));
                            }
                        }
                    }
                    let map = Arc::new(Value::Object(map));
                    if let Some(h) = href {
                        cache.put(listed.is_some(), h, &map);
                    }
                    map
                }
            };
            out.push((path, map.clone()));
            labels = Some(map);
        }
        let lists: Vec<Value> = ep
            .get("ip_lists")
            .into_iter()
            .flat_map(|l| l.items())
            .filter_map(|l| {
                l.get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
                    .or_else(|| {
                        l.get("href")
                            .and_then(|h| h.as_str())
                            .and_then(|h| names.ip_lists.get(h))
                            .map(|e| e.name.clone())
                    })
                    .map(Value::String)
            })
            .collect();
        // Empty ones are shared: most flows have no IP lists on one side.
        let labels = labels.unwrap_or_else(|| cache.empty_map.clone());
        let lists = if lists.is_empty() {
            cache.empty_list.clone()
        } else {
            Arc::new(Value::Array(lists))
        };
        if side == "src" {
            out.push((&["src", "labels"][..], labels));
            out.push((&["src", "ip_list_names"][..], lists));
        } else {
            out.push((&["dst", "labels"][..], labels));
            out.push((&["dst", "ip_list_names"][..], lists));
        }
    }
    if flow.is_object() {
        out.push((&["vigil"][..], vigil.clone()));
    }
    out
}

/// The label maps of the workloads of one slice, by workload href (a workload's labels
/// are the same in every flow of one query result), so each is made once. At most
/// [`LabelCache::MAX`] workloads; beyond, maps are made per flow.
#[derive(Debug)]
pub(super) struct LabelCache {
    /// Workloads whose flows list their labels.
    listed: std::collections::HashMap<String, Arc<Value>>,
    /// Workloads whose flows do not (their labels come from the name cache).
    unlisted: std::collections::HashMap<String, Arc<Value>>,
    /// `{}`, for every endpoint without a workload.
    empty_map: Arc<Value>,
    /// `[]`, for every endpoint in no IP list.
    empty_list: Arc<Value>,
}

impl Default for LabelCache {
    fn default() -> LabelCache {
        LabelCache {
            listed: Default::default(),
            unlisted: Default::default(),
            empty_map: Arc::new(Value::Object(Map::new())),
            empty_list: Arc::new(Value::Array(Vec::new())),
        }
    }
}

impl LabelCache {
    const MAX: usize = 100_000;

    fn get(&self, listed: bool, href: &str) -> Option<Arc<Value>> {
        let map = if listed { &self.listed } else { &self.unlisted };
        map.get(href).cloned()
    }

    fn put(&mut self, listed: bool, href: &str, labels: &Arc<Value>) {
        if self.listed.len() + self.unlisted.len() >= Self::MAX {
            return;
        }
        let map = if listed {
            &mut self.listed
        } else {
            &mut self.unlisted
        };
        map.insert(href.to_string(), labels.clone());
    }
}

/// A label object's (key, value): from the object, else from the cache by href.
fn label_pair_of(
    l: Field<'_>,
    labels: &std::collections::HashMap<String, (String, String)>,
) -> Option<(String, String)> {
    let text = |k: &str| l.get(k).and_then(|f| f.as_str());
    match (text("key"), text("value")) {
        (Some(k), Some(v)) => Some((k.to_string(), v.to_string())),
        _ => text("href").and_then(|h| labels.get(h).cloned()),
    }
}

/// How long after its `failures`-th failure in a row (0-based) a slice is queried again:
/// a minute, doubling while it keeps failing, never more than `interval` — a rate limit
/// or a PCE restart costs a minute or two of delay, not a whole interval, while a PCE
/// that stays down is asked at most once per interval.
fn retry_delay(failures: u32, interval: chrono::Duration) -> chrono::Duration {
    let minutes = 1i64 << failures.min(20);
    chrono::Duration::minutes(minutes).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_slice_is_retried_after_a_minute_doubling_up_to_the_interval() {
        let interval = chrono::Duration::minutes(12);
        let delays: Vec<i64> = (0..6)
            .map(|f| retry_delay(f, interval).num_minutes())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 12, 12]);
        assert_eq!(
            retry_delay(0, chrono::Duration::seconds(30)),
            chrono::Duration::seconds(30)
        );
        assert_eq!(retry_delay(u32::MAX, interval), interval);
    }

    #[test]
    fn labels_become_a_map_and_hrefs_resolve() {
        let mut names = Names::default();
        names
            .labels
            .insert("/orgs/1/labels/9".into(), ("env".into(), "prod".into()));
        names.ip_lists.insert(
            "/orgs/1/sec_policy/active/ip_lists/3".into(),
            Arc::new(crate::pce::names::IpListEntry {
                name: "Scanners".into(),
                ..Default::default()
            }),
        );
        let flow = json!({
            "src": {"ip": "10.0.0.1", "workload": {"href": "/w/1", "labels": [
                {"href": "/orgs/1/labels/1", "key": "role", "value": "db"},
                {"href": "/orgs/1/labels/9"}
            ]}},
            "dst": {"ip": "203.0.113.9", "ip_lists": [{"href": "/orgs/1/sec_policy/active/ip_lists/3"}]}
        });
        let out = enrich_flow(flow, &names, &json!({"truncated": false}));
        assert_eq!(out["src"]["labels"], json!({"role": "db", "env": "prod"}));
        assert_eq!(out["src"]["workload"]["labels_by_key"]["role"], "db");
        assert_eq!(out["src"]["workload"]["labels"][0]["key"], "role");
        assert_eq!(out["dst"]["labels"], json!({}));
        assert_eq!(out["dst"]["ip_list_names"], json!(["Scanners"]));
        assert_eq!(out["vigil"]["truncated"], false);
    }
}
