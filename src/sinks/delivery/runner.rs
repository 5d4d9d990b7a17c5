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
use crate::node::{BuildContext, Input, Message, NodeCounters, NodeResult, Sink};
use crate::store::{OutboxEntry, Store};
use crate::time::SharedClock;

/// How many due messages the worker takes from the outbox at a time.
const BATCH: usize = 16;
/// How often an idle worker looks at the outbox anyway: another process (`vigil outbox
/// retry`) may have made a message due.
const POLL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long sent messages (and the alerts the sink let go) are remembered.
const KEEP_SENT: chrono::Duration = chrono::Duration::days(7);

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
        let mut intake = Intake {
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
            let mut held = false;
            for event in &events {
                held |= intake.take(event);
            }
            if held {
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

impl<N: Notifier> Intake<N> {
    /// Takes what `event` asks to deliver into its group; `true` when it was held.
    fn take(&mut self, event: &crate::event::Event) -> bool {
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
            tracing::debug!(sink = %s.id, alert = %alert.id, severity = %alert.severity, "below min_severity; not sent");
            self.counters.add_dropped("min_severity", 1);
            return false;
        }
        let now = s.clock.now();
        let mut groups = self.shared.lock();
        let new = alert.status == AlertStatus::Firing && !groups.holds(&alert.id);
        if new {
            match s.store.notify_done(&s.id, &alert.id) {
                Ok(true) => {
                    tracing::info!(sink = %s.id, alert = %alert.id, "this alert was already notified by this sink; not again");
                    self.counters.add_dropped("already_notified", 1);
                    return false;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(sink = %s.id, error = %e, "cannot read what this sink notified; taking the alert")
                }
            }
            if let Some(cooldown) = &s.cfg.cooldown {
                let key = format!("{}/{}/{}", alert.pipeline, alert.stage, alert.group_key);
                let period = i64::try_from(cooldown.get().as_millis()).unwrap_or(i64::MAX);
                match s.store.cool_down(&s.id, &key, ms(now), period) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(sink = %s.id, alert = %alert.id, key = %key, "in cooldown; not sent");
                        self.counters.add_dropped("cooldown", 1);
                        return false;
                    }
                    Err(e) => {
                        tracing::error!(sink = %s.id, error = %e, "cannot read the sink's cooldowns; sending anyway");
                    }
                }
            }
        }
        let route = if new {
            match s.notifier.route(&alert) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(sink = %s.id, alert = %alert.id, error = %e, "cannot work out the recipients; the alert is not sent");
                    self.counters.add_error();
                    return false;
                }
            }
        } else {
            Vec::new()
        };
        let id = alert.id.clone();
        let stored = alert.clone();
        match groups.ingest(&route, alert, &form, now) {
            Ingested::Held(key, fresh) => {
                let header = fresh
                    .then(|| groups.groups().find(|g| g.key == key).map(Group::header))
                    .flatten();
                if let Err(e) = s.store.notify_hold(&s.id, header.as_ref(), &key, &stored) {
                    // Nowhere durable to put it: say so loudly and count it. It is still
                    // in the group and is notified unless vigil stops first.
                    tracing::error!(sink = %s.id, alert = %id, error = %e, "cannot store the alert for its notification group");
                    self.counters.add_error();
                    event.fail();
                }
                true
            }
            Ingested::Stale => {
                tracing::debug!(sink = %s.id, alert = %id, "an older report than the one held; ignored");
                false
            }
            Ingested::Unknown => {
                tracing::debug!(sink = %s.id, alert = %id, "a report of an alert this sink does not hold; nothing to notify");
                false
            }
            Ingested::Full => {
                tracing::warn!(sink = %s.id, alert = %id, held = groups.held(), "the sink holds as many alerts as it may; this one is not notified (it is in the alert history)");
                self.counters.add_error();
                false
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
        let mut next_prune = self.clock.now();
        loop {
            if self.abandoned.is_cancelled() {
                tracing::info!(sink = %self.id, "the sink was stopped; what it did not send stays in the outbox");
                break;
            }
            let now = self.clock.now();
            if now >= next_prune {
                if let Err(e) = self.store.prune_sent(&self.id, ms(now - KEEP_SENT)) {
                    tracing::warn!(sink = %self.id, error = %e, "cannot prune the outbox");
                }
                next_prune = now + chrono::Duration::hours(1);
            }
            // At the end of the input every group is looked at once, now.
            let last_look = self.stopping.is_cancelled() && drain_until.is_none();
            self.look(now, last_look);
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
                    self.look(self.clock.now(), false);
                    self.attempt(entry).await;
                }
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
    /// decide, each look with its message in one transaction.
    fn look(&self, now: Timestamp, all: bool) {
        let mut groups = self.shared.lock();
        if self.abandoned.is_cancelled() || (!all && groups.next_due().is_none_or(|t| t > now)) {
            return;
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
                tracing::info!(sink = %id, alert = %a.id, silence = %silence.id, "silenced; not sent");
                counters.add_dropped("silenced", 1);
                return true;
            }
            if inhibitor.mutes(a, &form) {
                tracing::info!(sink = %id, alert = %a.id, "inhibited by a firing alert; not sent");
                counters.add_dropped("inhibited", 1);
                return true;
            }
            false
        };
        let looks = groups.flush(now, all, &mut muted);
        for f in &looks {
            let message = uuid::Uuid::new_v4().to_string();
            if let Err(e) = self
                .shared
                .store
                .notify_flushed(&self.shared.id, f, &message, ms(now))
            {
                tracing::error!(sink = %self.id, error = %e, "cannot store the notification; it is not sent");
                if let Some(m) = &f.message {
                    self.counters.add_errors(m.alerts.len());
                }
                continue;
            }
            if let Some(m) = &f.message {
                tracing::debug!(sink = %self.id, message = %message, alerts = m.alerts.len(), reminder = m.reminder, "notification stored in the outbox");
            }
        }
    }

    async fn attempt(&self, entry: OutboxEntry) {
        {
            // Under the lock the sink's stop takes (see [`Abandon`]): either it sees this
            // send, or this worker sees the stop and sends nothing.
            let mut sending = self.shared.sending();
            if self.abandoned.is_cancelled() {
                return;
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
        let result = match tokio::time::timeout(timeout, self.notifier.send(&n)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        };
        let now = self.clock.now();
        let alerts = n.alerts.len();
        // Recorded under the lock: a stop meanwhile marks no message whose outcome is known.
        let mut sending = self.shared.sending();
        let recorded = match result {
            Ok(answer) => {
                tracing::info!(sink = %self.id, message = %n.id, alerts, attempt = n.attempt, answer = %answer.0, "delivered");
                self.counters.add_out(alerts);
                self.store.mark_sent(&n.id, &answer.0, ms(now))
            }
            Err(SendError::Permanent { reason }) => {
                tracing::error!(sink = %self.id, message = %n.id, alerts, attempt = n.attempt, reason = %reason, "cannot be delivered; moved to the dead letters (`vigil outbox list`)");
                self.counters.add_errors(alerts);
                self.store.mark_dead(&n.id, &reason, ms(now))
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
                    tracing::error!(sink = %self.id, message = %n.id, alerts, reason = %reason, "moved to the dead letters (`vigil outbox list`)");
                    self.counters.add_errors(alerts);
                    self.store.mark_dead(&n.id, &reason, ms(now))
                } else {
                    let wait = retry_after.unwrap_or_else(|| self.cfg.retry.backoff(n.attempt));
                    let due = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    tracing::warn!(sink = %self.id, message = %n.id, alerts, attempt = n.attempt, reason = %reason, retry_in = %humantime::format_duration(wait), "send failed; will retry");
                    self.store.mark_retry(&n.id, &reason, ms(due), ms(now))
                }
            }
        };
        *sending = None;
        drop(sending);
        if let Err(e) = recorded {
            tracing::error!(sink = %self.id, message = %n.id, error = %e, "cannot record the outcome in the outbox");
        }
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
        until("the second alert held", || {
            h.store.notify_groups("p.out").unwrap().len() == 1
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
        // Another alert arrives meanwhile: held, and stored with its group.
        old.output.send(vec![b.clone()]).await.unwrap();
        until("the second alert held", || {
            store.notify_groups("p.out").unwrap().len() == 1
        })
        .await;
        // A reload gives up on the sink (handover_timeout) and starts its new version.
        old.task.abort();
        assert!((&mut old.task).await.unwrap_err().is_cancelled());
        // The message under way is marked as being sent by the stopped sink.
        let taken = store.outbox(None, 10).unwrap();
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].state, OutboxState::Sending, "{taken:?}");
        let mut new = start_on(&cfg, Vec::new(), clock.clone(), store.clone());
        until("the held alert sent by the new sink", || sent(&new) == 1).await;
        // The old send is answered: it is recorded, and the old worker sends nothing more.
        gate.add_permits(1);
        until("the old send recorded", || {
            store.outbox(Some(OutboxState::Sent), 10).unwrap().len() == 2
        })
        .await;
        new.output.close().await;
        (&mut new.task).await.unwrap().unwrap();
        let id = |e: &Arc<Event>| e.alert().unwrap().id.clone();
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
