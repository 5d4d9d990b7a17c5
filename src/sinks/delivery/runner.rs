//! The running delivering sink: stores what it receives, and a worker of its own sends it.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DeliveryConfig, Notification, Notifier, SendError, alert_of_event};
use crate::event::{Alert, AlertStatus, Timestamp};
use crate::runtime::{BuildContext, Input, Message, NodeCounters, NodeResult, SharedClock, Sink};
use crate::store::{Enqueued, OutboxEntry, Store};

/// How many due messages the worker takes from the outbox at a time.
const BATCH: usize = 16;
/// How often an idle worker looks at the outbox anyway: another process (`vigil outbox
/// retry`) may have made a message due.
const POLL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long sent messages (and the alert ids they carried) are remembered.
const KEEP_SENT: chrono::Duration = chrono::Duration::days(7);

/// A delivering sink: `N` says how a message is sent, the rest is common.
pub struct DeliverySink<N: Notifier> {
    id: Arc<str>,
    notifier: Arc<N>,
    cfg: DeliveryConfig,
    store: Arc<Store>,
    clock: SharedClock,
}

impl<N: Notifier> DeliverySink<N> {
    /// The sink being built in `cx`, sending with `notifier`.
    pub fn new(notifier: N, cfg: &DeliveryConfig, cx: &BuildContext) -> DeliverySink<N> {
        DeliverySink {
            id: cx.id.clone(),
            notifier: Arc::new(notifier),
            cfg: cfg.clone(),
            store: cx.store.clone(),
            clock: cx.connections.clock(),
        }
    }

    async fn run_inner(self, mut input: Input) -> NodeResult {
        let counters = input.counters().clone();
        let wake = Arc::new(Notify::new());
        let stopping = CancellationToken::new();
        let worker = Worker {
            id: self.id.clone(),
            notifier: self.notifier.clone(),
            cfg: self.cfg.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            counters: counters.clone(),
            wake: wake.clone(),
            stopping: stopping.clone(),
        };
        let worker = tokio::spawn(worker.run());
        let mut intake = Intake {
            sink: self,
            counters,
        };
        while let Some(msg) = input.recv().await {
            let Message::Events(events) = msg else {
                continue;
            };
            let mut stored = false;
            for event in &events {
                stored |= intake.take(event);
            }
            if stored {
                wake.notify_one();
            }
        }
        // The input ended: send what is gathering now rather than wait out group_wait.
        let now = ms(intake.sink.clock.now());
        if let Err(e) = intake.sink.store.close_gathering(&intake.sink.id, now) {
            tracing::error!(sink = %intake.sink.id, error = %e, "cannot close the gathering messages");
        }
        stopping.cancel();
        match worker.await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("the delivery worker failed: {e}").into()),
        }
    }
}

impl<N: Notifier> Sink for DeliverySink<N> {
    fn run(self: Box<Self>, input: Input) -> BoxFuture<'static, NodeResult> {
        Box::pin(self.run_inner(input))
    }
}

/// The receiving half: filters and stores.
struct Intake<N: Notifier> {
    sink: DeliverySink<N>,
    counters: Arc<NodeCounters>,
}

impl<N: Notifier> Intake<N> {
    /// Stores what `event` asks to deliver; `true` when a message was stored or grew.
    fn take(&mut self, event: &crate::event::Event) -> bool {
        let s = &self.sink;
        let alert: std::borrow::Cow<'_, Alert> = match event.alert() {
            Some(a) => std::borrow::Cow::Borrowed(a),
            None => std::borrow::Cow::Owned(alert_of_event(event)),
        };
        if alert.severity < s.cfg.min_severity {
            tracing::debug!(sink = %s.id, alert = %alert.id, severity = %alert.severity, "below min_severity; not sent");
            return false;
        }
        let now = ms(s.clock.now());
        if let Some(cooldown) = &s.cfg.cooldown
            && alert.status == AlertStatus::Firing
        {
            let key = format!("{}/{}/{}", alert.pipeline, alert.stage, alert.group_key);
            let period = i64::try_from(cooldown.get().as_millis()).unwrap_or(i64::MAX);
            match s.store.cool_down(&s.id, &key, now, period) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(sink = %s.id, alert = %alert.id, key = %key, "in cooldown; not sent");
                    return false;
                }
                Err(e) => {
                    tracing::error!(sink = %s.id, error = %e, "cannot read the sink's cooldowns; sending anyway");
                }
            }
        }
        let route = match s.notifier.route(&alert) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(sink = %s.id, alert = %alert.id, error = %e, "cannot work out the recipients; the alert is not sent");
                self.counters.add_error();
                return false;
            }
        };
        let wait = i64::try_from(s.cfg.group_wait.get().as_millis()).unwrap_or(i64::MAX);
        match s.store.enqueue(&s.id, &route, &alert, now, wait) {
            Ok(Enqueued::Stored(message)) => {
                tracing::debug!(sink = %s.id, alert = %alert.id, message = %message, "stored in the outbox");
                true
            }
            Ok(Enqueued::Duplicate) => {
                tracing::info!(sink = %s.id, alert = %alert.id, "this alert was already delivered or queued by this sink; not sent again");
                false
            }
            Err(e) => {
                // Nowhere durable to put it: say so loudly and count it.
                tracing::error!(sink = %s.id, alert = %alert.id, error = %e, "cannot store the alert in the outbox; it is not sent");
                self.counters.add_error();
                event.fail();
                false
            }
        }
    }
}

/// The sending half: takes due messages from the outbox, sends, records the outcome.
struct Worker<N: Notifier> {
    id: Arc<str>,
    notifier: Arc<N>,
    cfg: DeliveryConfig,
    store: Arc<Store>,
    clock: SharedClock,
    counters: Arc<NodeCounters>,
    wake: Arc<Notify>,
    stopping: CancellationToken,
}

impl<N: Notifier> Worker<N> {
    async fn run(self) {
        let mut drain_until: Option<Timestamp> = None;
        let mut next_prune = self.clock.now();
        loop {
            let now = self.clock.now();
            if now >= next_prune {
                if let Err(e) = self.store.prune_sent(ms(now - KEEP_SENT)) {
                    tracing::warn!(sink = %self.id, error = %e, "cannot prune the outbox");
                }
                next_prune = now + chrono::Duration::hours(1);
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
                    self.attempt(entry).await;
                }
                continue;
            }
            let next_due = self.store.next_due(&self.id).ok().flatten();
            if self.stopping.is_cancelled() {
                let until = *drain_until.get_or_insert_with(|| now + self.cfg.drain_timeout.span());
                match next_due {
                    None => break,
                    Some(t) if t <= ms(until) => {
                        self.clock.sleep_until(from_ms(t)).await;
                        continue;
                    }
                    Some(_) => {
                        let left = self.store.waiting(&self.id).unwrap_or(0);
                        tracing::warn!(sink = %self.id, messages = left, "stopping with messages still to send; they stay in the outbox and are sent at the next start");
                        break;
                    }
                }
            }
            let poll = now + chrono::Duration::from_std(POLL).unwrap_or_default();
            let until = next_due.map_or(poll, |t| from_ms(t).min(poll));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stopping.cancelled() => {}
                _ = self.clock.sleep_until(until) => {}
            }
        }
    }

    async fn attempt(&self, entry: OutboxEntry) {
        let n = Notification {
            id: entry.id.clone(),
            sink: entry.sink.clone(),
            route: entry.route.clone(),
            alerts: entry.alerts.clone(),
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
