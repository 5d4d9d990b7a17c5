//! The running delivering sink: its intake takes alerts into notification groups (stored
//! as they arrive), and a worker of its own looks at the groups when they are due, stores
//! the notifications they decide on in the outbox, and sends them.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatcher, Group, Ingested};
use super::inhibit::Inhibitor;
use super::{DeliveryConfig, Notification, Notifier, SendError, alert_of_event};
use crate::event::{Alert, AlertStatus, Timestamp};
use crate::node::internal_event::{
    AlertInCooldown, AlertRefused, AlertsNotStored, AlreadyNotified, BelowMinSeverity,
    DeliveryGivenUp, Inhibited, InternalEvent, NotificationsNotStored, RecipientsUnknown, Silenced,
    StaleReport, Undeliverable,
};
use crate::node::{BuildContext, Input, Message, NodeCounters, NodeResult, Sink};
use crate::store::outbox::Outcome;
use crate::store::writer::Written;
use crate::store::{OutboxEntry, Store};
use crate::time::SharedClock;

/// How many due messages the worker takes from the outbox at a time.
const BATCH: usize = 16;
/// How often an idle worker looks at the outbox anyway: another process (`vigil outbox
/// retry`) may have made a message due.
const POLL: std::time::Duration = std::time::Duration::from_secs(5);
const POLL_SPAN: chrono::Duration = chrono::Duration::seconds(5);

/// A delivering sink: `N` says how a message is sent, the rest is common.
pub struct DeliverySink<N: Notifier> {
    id: Arc<str>,
    notifier: Arc<N>,
    cfg: DeliveryConfig,
    store: Arc<Store>,
    clock: SharedClock,
    inhibitor: Arc<Inhibitor>,
}

/// What the intake and the worker share: the groups, and the store they are kept in.
/// Every change to the groups is stored under the same lock, so the store never lags
/// behind what was decided.
struct Shared {
    id: Arc<str>,
    store: Arc<Store>,
    groups: Mutex<Dispatcher>,
    /// When the input ended: `drain_timeout` counts from then, a send under way at that
    /// moment included.
    ended: std::sync::OnceLock<Timestamp>,
    /// The message the worker is sending, until its outcome is recorded.
    sending: Mutex<Option<String>>,
    /// Told when a look let alerts go from the groups: an intake waiting for room (the
    /// sink holds `max_alerts`) looks again.
    room: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Dispatcher> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sending(&self) -> MutexGuard<'_, Option<String>> {
        self.sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<N: Notifier> DeliverySink<N> {
    /// The sink being built in `cx`, sending with `notifier`.
    pub fn new(
        notifier: N,
        cfg: &DeliveryConfig,
        cx: &BuildContext,
        services: &crate::sinks::DeliveryServices,
    ) -> DeliverySink<N> {
        DeliverySink {
            id: cx.id.clone(),
            notifier: Arc::new(notifier),
            cfg: cfg.clone(),
            store: cx.store.clone(),
            clock: cx.clock.clone(),
            inhibitor: services.inhibitor.clone(),
        }
    }

    async fn run_inner(self, input: &mut Input) -> NodeResult {
        let counters = input.counters().clone();
        let mut groups = Dispatcher::new(self.cfg.policy());
        match self.store.notify_groups(&self.id) {
            Ok(stored) => {
                let held: usize = stored.iter().map(|g| g.alerts.len()).sum();
                if held > 0 {
                    tracing::info!(sink = %self.id, groups = stored.len(), alerts = held, "notification groups restored");
                }
                for g in stored {
                    groups.restore(g);
                }
            }
            Err(e) => {
                tracing::error!(sink = %self.id, error = %e, "cannot read the notification groups; starting without them")
            }
        }
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            store: self.store.clone(),
            groups: Mutex::new(groups),
            ended: std::sync::OnceLock::new(),
            sending: Mutex::new(None),
            room: Notify::new(),
        });
        let wake = Arc::new(Notify::new());
        let stopping = CancellationToken::new();
        // Should this intake fail, the worker still looks at every group once and ends.
        let _stop_worker = stopping.clone().drop_guard();
        // Should this task be stopped from outside (a reload's `handover_timeout`), the
        // worker lets go at once: see [`Abandon`].
        let abandoned = CancellationToken::new();
        let _abandon = Abandon {
            token: abandoned.clone(),
            shared: shared.clone(),
            clock: self.clock.clone(),
        };
        let worker = Worker {
            id: self.id.clone(),
            notifier: self.notifier.clone(),
            cfg: self.cfg.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            counters: counters.clone(),
            wake: wake.clone(),
            stopping: stopping.clone(),
            abandoned,
            shared: shared.clone(),
            inhibitor: self.inhibitor.clone(),
        };
        let mut worker = tokio::spawn(worker.run());
        let intake = Intake {
            sink: self,
            counters,
            shared,
        };
        loop {
            let msg = tokio::select! {
                // `Input::recv` is cancel-safe: nothing is lost when the worker ends first.
                msg = input.recv() => msg,
                // The worker ends only after the input does: it panicked. The sink fails
                // with it, to be built again, rather than take alerts nothing sends.
                ended = &mut worker => {
                    // No send is under way any more: the message it was sending stays due
                    // in the outbox (not marked as being sent), and the sink built again
                    // sends it.
                    *intake.shared.sending() = None;
                    return Err(worker_failed(ended.err()));
                }
            };
            let Some(msg) = msg else { break };
            let Message::Events(events) = msg else {
                continue;
            };
            intake.wait_for_room(events.len(), &wake, &worker).await;
            // What the batch changes is decided under the groups' lock and queued for the
            // store before the lock goes (so a look at a group is stored after the alerts
            // it holds), then awaited: one transaction for the batch.
            let mut batch = Batch::default();
            let written = {
                let shared = intake.shared.clone();
                let mut groups = shared.lock();
                for (i, event) in events.iter().enumerate() {
                    intake.take(event, &mut groups, &mut batch, i);
                }
                (!batch.ops.is_empty()).then(|| {
                    let ops = std::mem::take(&mut batch.ops);
                    intake.sink.store.notify_intake(&intake.sink.id, ops)
                })
            };
            let stored = match written {
                None => Ok(()),
                Some(pending) => pending.await,
            };
            if let Err(e) = stored {
                // Nowhere durable to put them: say so loudly and count them. They are
                // still in their groups and are notified unless vigil stops first.
                AlertsNotStored {
                    sink: &intake.sink.id,
                    alerts: batch.held.len(),
                    error: &e,
                }
                .emit(&intake.counters);
                for i in &batch.held {
                    if let Some(event) = events.get(*i) {
                        event.fail();
                    }
                }
            }
            if !batch.held.is_empty() {
                wake.notify_one();
            }
        }
        // The input ended: the worker looks at every group now rather than wait, and sends
        // for at most `drain_timeout` from now.
        let _ = intake.shared.ended.set(intake.sink.clock.now());
        stopping.cancel();
        match worker.await {
            Ok(()) => Ok(()),
            Err(e) => Err(worker_failed(Some(e))),
        }
    }
}

/// The error of a sink whose worker failed (`None`: it ended before the input did).
fn worker_failed(e: Option<tokio::task::JoinError>) -> crate::node::NodeError {
    match e {
        Some(e) => format!("the delivery worker failed: {e}").into(),
        None => "the delivery worker stopped before the sink's input ended".into(),
    }
}

impl<N: Notifier> Sink for DeliverySink<N> {
    fn run<'a>(self: Box<Self>, input: &'a mut Input) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(input))
    }
}

/// Dropped with the sink's task. When the task is stopped from outside before it ended (a
/// reload stops a retired sink still busy after `handover_timeout`), the worker — a task
/// of its own — lets go: it looks at no group and starts no send any more, since the
/// sink that replaces it restores the groups from the store and sends what the outbox
/// holds. A send under way is not cut off: the peer may have the message already (an SMTP
/// server that took the mail and has not answered yet), so it finishes, within the
/// sink's `timeout`, and its outcome is recorded. Meanwhile the message is marked as
/// being sent in the outbox ([`Store::mark_sending`]), so the new sink does not send it too.
struct Abandon {
    token: CancellationToken,
    shared: Arc<Shared>,
    clock: SharedClock,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        self.token.cancel();
        // A look under way finishes first (looks hold the lock): once this returns, the
        // stored groups are the ones the next sink reads, and this worker is done with
        // them.
        drop(self.shared.lock());
        // The worker starts a send, and records its outcome, holding this lock.
        let sending = self.shared.sending();
        if let Some(id) = sending.as_deref() {
            match self.shared.store.mark_sending(id, ms(self.clock.now())) {
                Ok(_) => {
                    tracing::info!(sink = %self.shared.id, message = %id, "the sink was stopped during a send; the send finishes and is recorded, and the message is not sent again")
                }
                Err(e) => {
                    tracing::error!(sink = %self.shared.id, message = %id, error = %e, "cannot mark the message under way as being sent; the sink that replaces this one may send it again")
                }
            }
        }
    }
}

/// The receiving half: filters, and takes alerts into their groups.
struct Intake<N: Notifier> {
    sink: DeliverySink<N>,
    counters: Arc<NodeCounters>,
    shared: Arc<Shared>,
}

/// What the intake takes from one batch of its input.
#[derive(Default)]
struct Batch {
    /// What to store, in one transaction.
    ops: Vec<crate::store::notify::Intake>,
    /// The events whose alerts were held (by index in the batch).
    held: Vec<usize>,
    /// Cooldowns started in this batch and not stored yet: key → end (ms).
    cooling: std::collections::HashMap<String, i64>,
}

impl<N: Notifier> Intake<N> {
    /// Waits while the groups hold so many alerts that `n` more would pass the sink's
    /// limit and the next looks let enough go (one-off and resolved alerts leave once
    /// notified): the input waits (backpressure up to the source) instead of alerts being
    /// refused. Past the limit with open episodes alone, nothing waits: what does not fit
    /// is refused and counted.
    async fn wait_for_room(&self, n: usize, wake: &Notify, worker: &tokio::task::JoinHandle<()>) {
        let max = self.shared.lock().policy().max_alerts;
        let mut waited = false;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let (held, staying) = {
                let groups = self.shared.lock();
                let held = groups.held();
                // Only alerts that leave at their group's next look make room; open
                // episodes stay until they resolve, which comes through this very input.
                let staying = if held + n > max { groups.staying() } else { 0 };
                (held, staying)
            };
            // A worker that ended (it panicked) makes no room: the sink fails instead.
            if held + n <= max || staying + n > max || worker.is_finished() {
                if waited {
                    tracing::info!(sink = %self.sink.id, held, "room in the notification groups again; taking input");
                }
                return;
            }
            if !waited {
                tracing::warn!(sink = %self.sink.id, held, max, "the notification groups hold as many alerts as they may; the input waits until notifications go out");
                waited = true;
            }
            wake.notify_one();
            let recheck = self.sink.clock.now() + POLL_SPAN;
            tokio::select! {
                _ = room => {}
                _ = self.sink.clock.sleep_until(recheck) => {}
            }
        }
    }

    /// Takes what `event` (number `i` of its batch) asks to deliver into its group in
    /// `groups`, and what is to be stored into `batch`.
    fn take(
        &self,
        event: &crate::event::Event,
        groups: &mut Dispatcher,
        batch: &mut Batch,
        i: usize,
    ) {
        use crate::store::notify::Intake as Op;
        let s = &self.sink;
        let (alert, form): (Alert, std::borrow::Cow<'_, serde_json::Value>) = match event.alert() {
            Some(a) => (a.clone(), std::borrow::Cow::Borrowed(event.data())),
            None => {
                let a = alert_of_event(event);
                let form = a.to_value();
                (a, std::borrow::Cow::Owned(form))
            }
        };
        if alert.severity < s.cfg.min_severity {
            BelowMinSeverity {
                sink: &s.id,
                alert: &alert.id,
                severity: alert.severity,
            }
            .emit(&self.counters);
            return;
        }
        let now = s.clock.now();
        let new = alert.status == AlertStatus::Firing && !groups.holds(&alert.id);
        if new {
            match s.store.notify_done(&s.id, &alert.id) {
                Ok(true) => {
                    AlreadyNotified {
                        sink: &s.id,
                        alert: &alert.id,
                    }
                    .emit(&self.counters);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(sink = %s.id, error = %e, "cannot read what this sink notified; taking the alert")
                }
            }
            if let Some(cooldown) = &s.cfg.cooldown {
                let key = format!("{}/{}/{}", alert.pipeline, alert.stage, alert.group_key);
                let period = i64::try_from(cooldown.get().as_millis()).unwrap_or(i64::MAX);
                let until = match batch.cooling.get(&key) {
                    Some(u) => Ok(Some(*u)),
                    None => s.store.cooldown_until(&s.id, &key),
                };
                match until {
                    Ok(Some(u)) if ms(now) < u => {
                        AlertInCooldown {
                            sink: &s.id,
                            alert: &alert.id,
                            key: &key,
                        }
                        .emit(&self.counters);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(sink = %s.id, error = %e, "cannot read the sink's cooldowns; sending anyway");
                    }
                }
                let until = ms(now).saturating_add(period);
                batch.cooling.insert(key.clone(), until);
                batch.ops.push(Op::CoolDown { key, until });
            }
        }
        let route = if new {
            match s.notifier.route(&alert) {
                Ok(r) => r,
                Err(e) => {
                    RecipientsUnknown {
                        sink: &s.id,
                        alert: &alert.id,
                        error: &e,
                    }
                    .emit(&self.counters);
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let id = alert.id.clone();
        let stored = alert.clone();
        match groups.ingest(&route, alert, &form, now) {
            Ingested::Held(key, fresh) => {
                let group = fresh
                    .then(|| groups.group(&key).map(Group::header))
                    .flatten();
                batch.ops.push(Op::Hold {
                    group,
                    key,
                    alert: Box::new(stored),
                });
                batch.held.push(i);
            }
            Ingested::Stale => {
                StaleReport {
                    sink: &s.id,
                    alert: &id,
                }
                .emit(&self.counters);
            }
            Ingested::Unknown => {
                tracing::debug!(sink = %s.id, alert = %id, "a report of an alert this sink does not hold; nothing to notify");
            }
            Ingested::Full => {
                AlertRefused {
                    sink: &s.id,
                    alert: &id,
                    held: groups.held(),
                }
                .emit(&self.counters);
            }
        }
    }
}

/// The sending half: looks at due groups, stores their notifications, sends due messages
/// from the outbox, records the outcome.
struct Worker<N: Notifier> {
    id: Arc<str>,
    notifier: Arc<N>,
    cfg: DeliveryConfig,
    store: Arc<Store>,
    clock: SharedClock,
    counters: Arc<NodeCounters>,
    wake: Arc<Notify>,
    stopping: CancellationToken,
    /// The sink's task was stopped from outside: see [`Abandon`].
    abandoned: CancellationToken,
    shared: Arc<Shared>,
    inhibitor: Arc<Inhibitor>,
}

impl<N: Notifier> Worker<N> {
    async fn run(self) {
        let mut drain_until: Option<Timestamp> = None;
        loop {
            if self.abandoned.is_cancelled() {
                tracing::info!(sink = %self.id, "the sink was stopped; what it did not send stays in the outbox");
                break;
            }
            let now = self.clock.now();
            // At the end of the input every group is looked at once, now.
            let last_look = self.stopping.is_cancelled() && drain_until.is_none();
            self.look(now, last_look).await;
            // Stopping: what is due is sent for at most `drain_timeout` from the end of the
            // input, the send under way then included (a send under way finishes, so
            // nothing goes out twice); the rest stays in the outbox.
            if self.stopping.is_cancelled() {
                let until = *drain_until.get_or_insert_with(|| {
                    let ended = self.shared.ended.get().copied().unwrap_or(now);
                    ended.min(now) + self.cfg.drain_timeout.span()
                });
                if now >= until {
                    self.leave_the_rest();
                    break;
                }
            }
            let due = match self.store.due(&self.id, ms(now), BATCH) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(sink = %self.id, error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            if !due.is_empty() {
                let mut recording = Vec::new();
                for entry in due {
                    if self.abandoned.is_cancelled() {
                        break;
                    }
                    if self.stopping.is_cancelled() && drain_until.is_none() {
                        // Stopped meanwhile: the groups get their last look first.
                        break;
                    }
                    if drain_until.is_some_and(|until| self.clock.now() >= until) {
                        break;
                    }
                    // Groups that came due during a slow send are stored now, not after
                    // the whole batch.
                    self.look(self.clock.now(), false).await;
                    if let Some(r) = self.attempt(entry).await {
                        recording.push(r);
                    }
                }
                // The outcomes of the batch's sends share the writer's transactions;
                // they are on disk before the outbox is read again.
                self.recorded(&mut recording).await;
                continue;
            }
            let next_due = self.store.next_due(&self.id).ok().flatten();
            if let Some(until) = drain_until {
                match next_due {
                    None => break,
                    Some(t) if t <= ms(until) => {
                        tokio::select! {
                            _ = self.abandoned.cancelled() => {}
                            _ = self.clock.sleep_until(from_ms(t)) => {}
                        }
                        continue;
                    }
                    Some(_) => {
                        self.leave_the_rest();
                        break;
                    }
                }
            }
            let poll = now + chrono::Duration::from_std(POLL).unwrap_or_default();
            let group_due = self.shared.lock().next_due();
            let until = [next_due.map(from_ms), group_due]
                .into_iter()
                .flatten()
                .fold(poll, Timestamp::min);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stopping.cancelled(), if drain_until.is_none() => {}
                _ = self.abandoned.cancelled() => {}
                _ = self.clock.sleep_until(until) => {}
            }
        }
    }

    /// Stopping with messages still to send (by `drain_timeout`): says how many stay in
    /// the outbox for the next start.
    fn leave_the_rest(&self) {
        let left = self.store.waiting(&self.id).unwrap_or(0);
        if left > 0 {
            tracing::warn!(sink = %self.id, messages = left, "stopping with messages still to send (drain_timeout); they stay in the outbox and are sent at the next start");
        }
    }

    /// Looks at the groups due at `now` (all of them when `all`) and stores what they
    /// decide, with their messages, in one transaction: queued under the groups' lock
    /// (after what the intake stored of them), awaited once it is let go.
    async fn look(&self, now: Timestamp, all: bool) {
        let written = self.look_and_queue(now, all);
        let Some((written, alerts)) = written else {
            return;
        };
        if let Err(e) = written.await {
            NotificationsNotStored {
                sink: &self.id,
                alerts,
                error: &e,
            }
            .emit(&self.counters);
        }
    }

    /// The part of [`Worker::look`] under the lock: what is queued, and how many alerts
    /// its messages carry.
    fn look_and_queue(&self, now: Timestamp, all: bool) -> Option<(Written<()>, usize)> {
        let mut groups = self.shared.lock();
        if self.abandoned.is_cancelled() || (!all && groups.next_due().is_none_or(|t| t > now)) {
            return None;
        }
        let silences = match self.store.active_silences(ms(now)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(sink = %self.id, error = %e, "cannot read the silences; notifying anyway");
                Vec::new()
            }
        };
        let inhibitor = &self.inhibitor;
        let id = &self.id;
        let counters = &self.counters;
        let mut muted = |a: &Alert| {
            if silences.is_empty() && !inhibitor.is_active() {
                return false;
            }
            let form = a.to_value();
            if let Some(silence) = silences.iter().find(|x| x.matches_value(&form)) {
                Silenced {
                    sink: id,
                    alert: &a.id,
                    silence: &silence.id,
                }
                .emit(counters);
                return true;
            }
            if inhibitor.mutes(a, &form) {
                Inhibited {
                    sink: id,
                    alert: &a.id,
                }
                .emit(counters);
                return true;
            }
            false
        };
        let looks = groups.flush(now, all, &mut muted);
        if looks.is_empty() {
            return None;
        }
        if looks.iter().any(|f| !f.removed.is_empty()) {
            self.shared.room.notify_waiters();
        }
        let mut alerts = 0;
        let looks: Vec<_> = looks
            .into_iter()
            .map(|f| {
                let message = uuid::Uuid::new_v4().to_string();
                if let Some(m) = &f.message {
                    alerts += m.alerts.len();
                    tracing::debug!(sink = %self.id, message = %message, alerts = m.alerts.len(), reminder = m.reminder, "notification stored in the outbox");
                }
                (f, message)
            })
            .collect();
        let written = self
            .shared
            .store
            .notify_looks(&self.shared.id, looks, ms(now));
        drop(groups);
        Some((written, alerts))
    }

    /// Waits until the outcomes queued by [`Worker::attempt`] are on disk.
    async fn recorded(&self, recording: &mut Vec<(String, Written<()>)>) {
        for (id, written) in recording.drain(..) {
            if let Err(e) = written.await {
                tracing::error!(sink = %self.id, message = %id, error = %e, "cannot record the outcome in the outbox");
            }
        }
    }

    /// Sends `entry` and queues its outcome for the store: what awaits the write, with the
    /// message's id (see [`Worker::recorded`]); `None` when nothing was sent.
    async fn attempt(&self, entry: OutboxEntry) -> Option<(String, Written<()>)> {
        {
            // Under the lock the sink's stop takes (see [`Abandon`]): either it sees this
            // send, or this worker sees the stop and sends nothing.
            let mut sending = self.shared.sending();
            if self.abandoned.is_cancelled() {
                return None;
            }
            *sending = Some(entry.id.clone());
        }
        let meta = entry.notify.clone().unwrap_or_default();
        let n = Notification {
            id: entry.id.clone(),
            sink: entry.sink.clone(),
            route: entry.route.clone(),
            alerts: entry.alerts.clone(),
            changes: meta.changes,
            group: meta.group,
            reminder: meta.reminder,
            omitted: meta.omitted,
            attempt: entry.attempts + 1,
        };
        let timeout = self.cfg.timeout.get();
        let send = tokio::time::timeout(timeout, self.notifier.send(&n));
        tokio::pin!(send);
        // While the peer takes its time, groups that come due are still looked at and their
        // notifications stored: a slow peer delays sends, not the outbox.
        let result = loop {
            let next_look = self.shared.lock().next_due();
            let look_at = next_look.unwrap_or_else(|| self.clock.now() + POLL_SPAN);
            tokio::select! {
                r = &mut send => break r,
                _ = self.wake.notified() => {}
                _ = self.clock.sleep_until(look_at), if next_look.is_some() => {
                    self.look(self.clock.now(), false).await;
                }
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        };
        let now = self.clock.now();
        let alerts = n.alerts.len();
        let outcome = match result {
            Ok(answer) => {
                tracing::info!(sink = %self.id, message = %n.id, alerts, attempt = n.attempt, answer = %answer.0, "delivered");
                self.counters.add_out(alerts);
                Outcome::Sent { answer: answer.0 }
            }
            Err(SendError::Permanent { reason }) => {
                Undeliverable {
                    sink: &self.id,
                    message: &n.id,
                    alerts,
                    attempt: n.attempt,
                    reason: &reason,
                }
                .emit(&self.counters);
                Outcome::Dead { reason }
            }
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => {
                let age = now - from_ms(entry.created_at);
                if age >= self.cfg.retry.give_up_after.span() {
                    let reason = format!(
                        "gave up after {} attempts over {}: {reason}",
                        n.attempt,
                        humantime::format_duration(age.to_std().unwrap_or_default())
                    );
                    DeliveryGivenUp {
                        sink: &self.id,
                        message: &n.id,
                        alerts,
                        reason: &reason,
                    }
                    .emit(&self.counters);
                    Outcome::Dead { reason }
                } else {
                    let wait = retry_after.unwrap_or_else(|| self.cfg.retry.backoff(n.attempt));
                    let due = crate::time::later(now, wait);
                    tracing::warn!(sink = %self.id, message = %n.id, alerts, attempt = n.attempt, reason = %reason, retry_in = %humantime::format_duration(wait), "send failed; will retry");
                    Outcome::Retry {
                        error: reason,
                        due_at: ms(due),
                    }
                }
            }
        };
        // Queued under the lock (a stop meanwhile marks no message whose outcome is known:
        // its mark is queued after this), awaited before the outbox is read again.
        let queued = {
            let mut sending = self.shared.sending();
            let queued = self.store.queue_outcome(&n.id, outcome, ms(now));
            *sending = None;
            queued
        };
        Some((n.id.clone(), queued))
    }
}

/// Milliseconds since the epoch.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::event::{Event, Severity};
    use crate::sinks::delivery::{Answer, DeliveryConfig, sample_alert};
    use crate::store::OutboxState;
    use crate::time::Duration;
    use crate::time::VirtualClock;

    /// Records what it is asked to send; answers from a script (then `Ok`).
    #[derive(Default)]
    struct Fake {
        sent: Mutex<Vec<Notification>>,
        script: Mutex<Vec<Result<Answer, SendError>>>,
        /// When set, each answer waits for a permit (a peer that takes its time).
        gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
        /// How many sends panic (a bug in the notifier), before they are answered.
        panics: Mutex<u32>,
    }

    impl Notifier for Arc<Fake> {
        fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Answer, SendError>> {
            self.sent.lock().unwrap().push(n.clone());
            {
                let mut panics = self.panics.lock().unwrap();
                if *panics > 0 {
                    *panics -= 1;
                    drop(panics);
                    panic!("a bug in the notifier");
                }
            }
            let next = {
                let mut s = self.script.lock().unwrap();
                if s.is_empty() {
                    Ok(Answer("250 ok".into()))
                } else {
                    s.remove(0)
                }
            };
            let gate = self.gate.lock().unwrap().clone();
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                next
            })
        }

        fn preview(&self, _n: &Notification) -> Result<Vec<(String, String)>, String> {
            Ok(Vec::new())
        }
    }

    struct Harness {
        fake: Arc<Fake>,
        clock: VirtualClock,
        store: Arc<Store>,
        output: crate::node::Output,
        task: tokio::task::JoinHandle<NodeResult>,
        counters: Arc<crate::node::NodeCounters>,
    }

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn start(cfg: DeliveryConfig, script: Vec<Result<Answer, SendError>>) -> Harness {
        let clock = VirtualClock::new(t0());
        let store = Arc::new(Store::in_memory().unwrap());
        start_on(&cfg, script, clock, store)
    }

    /// The sink on `clock` with `store` (a second start on the same ones is a restart).
    fn start_on(
        cfg: &DeliveryConfig,
        script: Vec<Result<Answer, SendError>>,
        clock: VirtualClock,
        store: Arc<Store>,
    ) -> Harness {
        let fake = Arc::new(Fake::default());
        *fake.script.lock().unwrap() = script;
        let shared: SharedClock = Arc::new(clock.clone());
        let cx = BuildContext {
            id: "p.out".into(),
            pipeline: "p".into(),
            node: "out".into(),
            base_dir: Default::default(),
            state_dir: Default::default(),
            rejected_max_bytes: 1 << 24,
            clock: shared,
            store: store.clone(),
            keep_state: false,
            public_url: "http://vigil".into(),
            history_interval: chrono::Duration::minutes(1),
            rebuilt: false,
            counters: Default::default(),
        };
        let sink = Box::new(DeliverySink::new(
            fake.clone(),
            cfg,
            &cx,
            &Default::default(),
        ));
        let (output, input) = crate::node::test_edge(16);
        let counters = input.counters().clone();
        let task = tokio::spawn(async move {
            let mut input = input;
            sink.run(&mut input).await
        });
        Harness {
            fake,
            clock,
            store,
            output,
            task,
            counters,
        }
    }

    fn alert(group: &str, severity: Severity, minute: i64) -> Arc<Event> {
        let mut a = sample_alert();
        a.episode = false;
        a.severity = severity;
        a.group_key = format!("src.ip={group}");
        a.window.end += chrono::Duration::minutes(minute);
        a.id = crate::event::Alert::make_id(&a.pipeline, &a.stage, &a.group_key, &a.window);
        let time = a.window.end;
        Arc::new(Event::from_alert(a, "p.burst".into(), time))
    }

    /// Waits (on real time, with a deadline) until `cond` holds.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + StdDuration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(StdDuration::from_millis(2)).await;
        }
    }

    fn sent(h: &Harness) -> usize {
        h.fake.sent.lock().unwrap().len()
    }

    #[tokio::test]
    async fn min_severity_and_cooldown_hold_alerts_back() {
        let cfg = DeliveryConfig {
            min_severity: Severity::Medium,
            cooldown: Some(Duration::from_secs(600)),
            group_by: vec!["group_key".into()],
            ..DeliveryConfig::default()
        };
        let mut h = start(cfg, Vec::new());
        h.output
            .send(vec![
                alert("a", Severity::Low, 0),  // below min_severity
                alert("a", Severity::High, 0), // sent
                alert("a", Severity::High, 1), // same rule and group: cooling down
                alert("b", Severity::High, 1), // another group: sent
            ])
            .await
            .unwrap();
        until("two sends", || sent(&h) == 2).await;
        // Ten minutes later the quiet period is over.
        h.clock.advance(StdDuration::from_secs(600));
        h.output
            .send(vec![alert("a", Severity::High, 11)])
            .await
            .unwrap();
        until("the third send", || sent(&h) == 3).await;
        h.output.close().await;
        h.task.await.unwrap().unwrap();
        let groups: Vec<String> = h
            .fake
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.alerts[0].group_key.clone())
            .collect();
        assert_eq!(groups, ["src.ip=a", "src.ip=b", "src.ip=a"]);
        // What was held back is counted, by reason.
        assert_eq!(h.counters.dropped(), [("cooldown", 1), ("min_severity", 1)]);
    }

    /// A peer that does not answer while 12,000 one-off alerts (more than the groups may
    /// hold at once) arrive: their notifications are all stored in the outbox meanwhile,
    /// none is refused, and each is sent once the peer answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_peer_neither_stops_the_outbox_filling_nor_makes_the_sink_refuse_alerts() {
        const N: usize = 12_000;
        let cfg = DeliveryConfig {
            group_by: vec!["group_key".into()],
            group_wait: Duration::from_secs(0),
            ..DeliveryConfig::default()
        };
        let mut h = start(cfg, Vec::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *h.fake.gate.lock().unwrap() = Some(gate.clone());
        let max = crate::sinks::delivery::dispatch::Policy::default().max_alerts;
        assert!(N > max, "more than the groups hold");
        let events: Vec<_> = (0..N)
            .map(|i| alert(&format!("10.0.{}.{}", i / 256, i % 256), Severity::High, 0))
            .collect();
        let feed = {
            let mut output = std::mem::replace(&mut h.output, crate::node::test_edge(1).0);
            tokio::spawn(async move {
                for chunk in events.chunks(64) {
                    output.send(chunk.to_vec()).await.unwrap();
                }
                output
            })
        };
        let pending = |h: &Harness| {
            h.store
                .outbox_counts()
                .unwrap()
                .iter()
                .find(|(s, _)| *s == OutboxState::Pending)
                .map_or(0, |(_, n)| *n as usize)
        };
        let deadline = std::time::Instant::now() + StdDuration::from_secs(120);
        // The first send hangs; the rest are stored meanwhile.
        while pending(&h) < N - 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {N} stored while the peer hung",
                pending(&h)
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        assert_eq!(sent(&h), 1, "one send, hanging");
        let output = feed.await.unwrap();
        gate.add_permits(N);
        while sent(&h) < N {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} sent",
                sent(&h)
            );
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        output.close().await;
        h.task.await.unwrap().unwrap();
        assert_eq!(h.counters.get().2, 0, "nothing refused");
        let mut ids: Vec<String> = h
            .fake
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.alerts[0].id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), N, "each alert sent once");
    }

    /// A panic in the worker (a task of its own) fails the sink at once, with the panic's
    /// message, so the runtime restarts it: it does not go on taking alerts that nothing
    /// sends. The message that was being sent stays due, and the sink built again sends it.
    #[tokio::test]
    async fn a_panicking_worker_fails_the_sink_and_the_next_one_sends() {
        let cfg = DeliveryConfig::default();
        let mut h = start(cfg.clone(), Vec::new());
        *h.fake.panics.lock().unwrap() = 1;
        h.output
            .send(vec![alert("a", Severity::High, 0)])
            .await
            .unwrap();
        // The input stays open: only the worker's panic can end the sink.
        let ended = tokio::time::timeout(StdDuration::from_secs(10), &mut h.task)
            .await
            .expect("the sink fails without waiting for its input to end")
            .expect("the sink's task itself does not panic");
        let error = ended.expect_err("the sink fails").to_string();
        assert!(
            error.contains("the delivery worker failed") && error.contains("a bug in the notifier"),
            "{error}"
        );
        assert_eq!(sent(&h), 1);
        assert!(
            h.store
                .outbox(Some(OutboxState::Sent), 10)
                .unwrap()
                .is_empty(),
            "not sent"
        );

        let again = start_on(&cfg, Vec::new(), h.clock.clone(), h.store.clone());
        until("the message sent by the sink built again", || {
            sent(&again) == 1
        })
        .await;
        assert_eq!(
            again.fake.sent.lock().unwrap()[0].alerts[0].group_key,
            "src.ip=a"
        );
        until("the message recorded as sent", || {
            h.store.outbox(Some(OutboxState::Sent), 10).unwrap().len() == 1
        })
        .await;
        again.output.close().await;
        again.task.await.unwrap().unwrap();
        drop(h.output);
    }

    #[tokio::test]
    async fn transient_errors_back_off_on_the_clock_and_then_give_up() {
        let cfg = DeliveryConfig {
            retry: crate::sinks::delivery::RetryConfig {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(60),
                give_up_after: Duration::from_secs(300),
            },
            ..DeliveryConfig::default()
        };
        let script = (0..20)
            .map(|_| Err(SendError::transient("HTTP 503 Service Unavailable")))
            .collect();
        let mut h = start(cfg, script);
        h.output
            .send(vec![alert("a", Severity::High, 0)])
            .await
            .unwrap();
        until("the first attempt", || sent(&h) == 1).await;
        // The retry waits on the engine's clock: 30–60 s of jittered backoff.
        h.clock.advance(StdDuration::from_secs(29));
        tokio::task::yield_now().await;
        assert_eq!(sent(&h), 1, "retried before the backoff");
        let mut attempts = 1;
        while h
            .store
            .outbox(Some(OutboxState::Dead), 10)
            .unwrap()
            .is_empty()
        {
            h.clock.advance(StdDuration::from_secs(61));
            let before = attempts;
            until("another attempt or the dead letter", || {
                sent(&h) > before
                    || !h
                        .store
                        .outbox(Some(OutboxState::Dead), 10)
                        .unwrap()
                        .is_empty()
            })
            .await;
            attempts = sent(&h);
            assert!(attempts < 20, "never gave up");
        }
        let dead = h.store.outbox(Some(OutboxState::Dead), 10).unwrap();
        let reason = dead[0].last_error.clone().unwrap();
        assert!(
            reason.starts_with("gave up after") && reason.ends_with("HTTP 503 Service Unavailable"),
            "{reason}"
        );
        h.output.close().await;
        h.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_permanent_error_is_a_dead_letter_at_once() {
        let mut h = start(
            DeliveryConfig::default(),
            vec![Err(SendError::permanent("HTTP 400 Bad Request: bad to"))],
        );
        h.output
            .send(vec![alert("a", Severity::High, 0)])
            .await
            .unwrap();
        until("the dead letter", || {
            !h.store
                .outbox(Some(OutboxState::Dead), 10)
                .unwrap()
                .is_empty()
        })
        .await;
        assert_eq!(sent(&h), 1);
        let dead = h.store.outbox(Some(OutboxState::Dead), 10).unwrap();
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("HTTP 400 Bad Request: bad to")
        );
        h.output.close().await;
        h.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn group_wait_gathers_and_the_end_of_input_sends_at_once() {
        let cfg = DeliveryConfig {
            group_wait: Duration::from_secs(3600),
            ..DeliveryConfig::default()
        };
        let mut h = start(cfg, Vec::new());
        h.output
            .send(vec![
                alert("a", Severity::High, 0),
                alert("b", Severity::Low, 0),
            ])
            .await
            .unwrap();
        until("both held in their group", || {
            h.store
                .notify_groups("p.out")
                .unwrap()
                .first()
                .map(|g| g.alerts.len())
                == Some(2)
        })
        .await;
        assert_eq!(sent(&h), 0, "sent before group_wait ended");
        // The input ends long before the hour is over: what was gathered goes out now.
        h.output.close().await;
        h.task.await.unwrap().unwrap();
        let sent = h.fake.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 2);
    }

    /// The alert ids of each message `h` sent, in order.
    fn sent_alerts(fake: &Fake) -> Vec<Vec<String>> {
        fake.sent
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.alerts.iter().map(|a| a.id.clone()).collect())
            .collect()
    }

    #[tokio::test]
    async fn drain_timeout_counts_from_the_end_of_the_input_with_the_send_under_way() {
        let cfg = DeliveryConfig {
            group_by: vec!["group_key".into()],
            drain_timeout: Duration::from_secs(10),
            ..DeliveryConfig::default()
        };
        let mut h = start(cfg, Vec::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *h.fake.gate.lock().unwrap() = Some(gate.clone());
        h.output
            .send(vec![alert("a", Severity::High, 0)])
            .await
            .unwrap();
        until("the first send under way", || sent(&h) == 1).await;
        h.output
            .send(vec![alert("b", Severity::High, 0)])
            .await
            .unwrap();
        // Its notification is stored while the first send hangs.
        until("the second notification stored", || {
            h.store.outbox(None, 10).unwrap().len() == 2
        })
        .await;
        // The input ends while the send is under way (the sink takes it at once: this
        // runtime has one thread, and the sink's task is ready before this one).
        h.output.close().await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The peer answers 11 s later (and would answer any further send at once): the
        // 10 s to drain are over, the second message stays in the outbox.
        h.clock.advance(StdDuration::from_secs(11));
        *h.fake.gate.lock().unwrap() = None;
        gate.add_permits(1);
        (&mut h.task).await.unwrap().unwrap();
        assert_eq!(h.fake.sent.lock().unwrap().len(), 1);
        let pending = h.store.outbox(Some(OutboxState::Pending), 10).unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].alerts[0].group_key, "src.ip=b");
    }

    #[tokio::test]
    async fn a_sink_stopped_mid_send_finishes_that_send_and_its_successor_does_not_repeat_it() {
        let cfg = DeliveryConfig {
            group_by: vec!["group_key".into()],
            ..DeliveryConfig::default()
        };
        let clock = VirtualClock::new(t0());
        let store = Arc::new(Store::in_memory().unwrap());
        let mut old = start_on(&cfg, Vec::new(), clock.clone(), store.clone());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *old.fake.gate.lock().unwrap() = Some(gate.clone());
        let (a, b) = (alert("a", Severity::High, 0), alert("b", Severity::High, 0));
        old.output.send(vec![a.clone()]).await.unwrap();
        until("the send under way", || sent(&old) == 1).await;
        // Another alert arrives meanwhile: its notification is stored in the outbox.
        old.output.send(vec![b.clone()]).await.unwrap();
        until("the second notification stored", || {
            store.outbox(None, 10).unwrap().len() == 2
        })
        .await;
        // A reload gives up on the sink (handover_timeout) and starts its new version.
        old.task.abort();
        assert!((&mut old.task).await.unwrap_err().is_cancelled());
        // The message under way is marked as being sent by the stopped sink; the other
        // waits for the new one.
        let id = |e: &Arc<Event>| e.alert().unwrap().id.clone();
        let state_of = |alert: &Arc<Event>| {
            store
                .outbox(None, 10)
                .unwrap()
                .into_iter()
                .find(|m| m.alerts[0].id == id(alert))
                .map(|m| m.state)
        };
        assert_eq!(state_of(&a), Some(OutboxState::Sending));
        assert_eq!(state_of(&b), Some(OutboxState::Pending));
        let mut new = start_on(&cfg, Vec::new(), clock.clone(), store.clone());
        until("the other message sent by the new sink", || sent(&new) == 1).await;
        // The old send is answered: it is recorded, and the old worker sends nothing more.
        gate.add_permits(1);
        until("the old send recorded", || {
            store.outbox(Some(OutboxState::Sent), 10).unwrap().len() == 2
        })
        .await;
        new.output.close().await;
        (&mut new.task).await.unwrap().unwrap();
        assert_eq!(sent_alerts(&old.fake), [[id(&a)]]);
        assert_eq!(sent_alerts(&new.fake), [[id(&b)]]);
        let all = store.outbox(None, 10).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all.iter()
                .all(|m| m.state == OutboxState::Sent && m.attempts == 1)
        );
    }

    /// A report of the sample episode: its opening (`updates: 0`), an update, its end.
    fn report(status: AlertStatus, updates: u64, value: f64) -> Arc<Event> {
        let mut a = sample_alert();
        a.status = status;
        a.updates = updates;
        a.value = value;
        let time = a.window.end;
        Arc::new(Event::from_alert(a, "p.burst".into(), time))
    }

    fn told(h: &Harness) -> Vec<(Vec<crate::sinks::delivery::dispatch::Change>, bool, f64)> {
        h.fake
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|n| (n.changes.clone(), n.reminder, n.alerts[0].value))
            .collect()
    }

    #[tokio::test]
    async fn an_episode_is_notified_reminded_and_resolved_and_a_restart_tells_nothing_twice() {
        use crate::sinks::delivery::dispatch::Change;
        let cfg = DeliveryConfig {
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
            send_resolved: true,
            ..DeliveryConfig::default()
        };
        let clock = VirtualClock::new(t0());
        let store = Arc::new(Store::in_memory().unwrap());
        let mut h = start_on(&cfg, Vec::new(), clock.clone(), store.clone());
        h.output
            .send(vec![report(AlertStatus::Firing, 0, 10.0)])
            .await
            .unwrap();
        until("held", || !store.notify_groups("p.out").unwrap().is_empty()).await;
        // An update inside group_wait: the first notification carries the newest value.
        h.output
            .send(vec![report(AlertStatus::Firing, 9, 16.0)])
            .await
            .unwrap();
        until("the update held", || {
            store.notify_groups("p.out").unwrap()[0].alerts[0].updates == 9
        })
        .await;
        clock.advance(StdDuration::from_secs(30));
        until("the first notification", || sent(&h) == 1).await;
        assert_eq!(told(&h)[0], (vec![Change::New], false, 16.0));

        // vigil stops and starts again: the group and its last notification are kept.
        h.output.close().await;
        h.task.await.unwrap().unwrap();
        let mut h = start_on(&cfg, Vec::new(), clock.clone(), store.clone());
        // The same opening report again (a replay): nothing new to tell.
        h.output
            .send(vec![report(AlertStatus::Firing, 0, 10.0)])
            .await
            .unwrap();
        for _ in 0..12 {
            clock.advance(StdDuration::from_secs(300));
            tokio::task::yield_now().await;
        }
        until("the reminder", || sent(&h) > 0).await;
        assert_eq!(
            told(&h)[0],
            (vec![Change::Firing], true, 16.0),
            "the newest form"
        );
        h.output
            .send(vec![report(AlertStatus::Resolved, 30, 2.0)])
            .await
            .unwrap();
        clock.advance(StdDuration::from_secs(300));
        until("the resolution", || sent(&h) == 2).await;
        assert_eq!(told(&h)[1], (vec![Change::Resolved], false, 2.0));
        // A replay of the whole episode after its end tells nothing.
        h.output
            .send(vec![report(AlertStatus::Firing, 0, 10.0)])
            .await
            .unwrap();
        h.output.close().await;
        let Harness { fake, task, .. } = h;
        task.await.unwrap().unwrap();
        assert_eq!(fake.sent.lock().unwrap().len(), 2);
        assert!(store.notify_groups("p.out").unwrap().is_empty());
    }
}
