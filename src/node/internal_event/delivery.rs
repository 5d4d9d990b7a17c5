//! What a delivering sink (mail, webhook, ...) reports: alerts it does not send, and
//! failures to store or deliver what it does.

use std::fmt::Display;

use super::{DropReason, ErrorReason, InternalEvent};
use crate::event::Severity;
use crate::node::NodeCounters;

/// An alert below the sink's `min_severity`: not sent.
#[derive(Debug)]
pub struct BelowMinSeverity<'a> {
    /// The sink, `pipeline.node`.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
    /// Its severity.
    pub severity: Severity,
}

impl InternalEvent for BelowMinSeverity<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(sink = %self.sink, alert = %self.alert, severity = %self.severity, "below min_severity; not sent");
        counters.add_dropped(DropReason::MinSeverity, 1);
    }
}

/// A firing alert this sink had already notified (it came again, after a restart or a
/// reload): not sent again.
#[derive(Debug)]
pub struct AlreadyNotified<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
}

impl InternalEvent for AlreadyNotified<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::info!(sink = %self.sink, alert = %self.alert, "this alert was already notified by this sink; not again");
        counters.add_dropped(DropReason::AlreadyNotified, 1);
    }
}

/// A new alert whose key is in the sink's `cooldown`: not sent.
#[derive(Debug)]
pub struct AlertInCooldown<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
    /// The cooldown's key, `pipeline/stage/group key`.
    pub key: &'a str,
}

impl InternalEvent for AlertInCooldown<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::info!(sink = %self.sink, alert = %self.alert, key = %self.key, "in cooldown; not sent");
        counters.add_dropped(DropReason::Cooldown, 1);
    }
}

/// An alert whose recipients could not be worked out: not sent, counted as an error.
pub struct RecipientsUnknown<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
    /// Why.
    pub error: &'a dyn Display,
}

impl InternalEvent for RecipientsUnknown<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(sink = %self.sink, alert = %self.alert, error = %self.error, "cannot work out the recipients; the alert is not sent");
        counters.add_errors(ErrorReason::RecipientsUnknown, 1);
    }
}

/// A report of an alert older than the one the sink holds: ignored.
#[derive(Debug)]
pub struct StaleReport<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
}

impl InternalEvent for StaleReport<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(sink = %self.sink, alert = %self.alert, "an older report than the one held; ignored");
        counters.add_dropped(DropReason::Stale, 1);
    }
}

/// An alert the sink has no room for (it holds as many as it may): not notified, though
/// it is in the alert history.
#[derive(Debug)]
pub struct AlertRefused<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
    /// How many alerts the sink holds.
    pub held: usize,
}

impl InternalEvent for AlertRefused<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(sink = %self.sink, alert = %self.alert, held = self.held, "the sink holds as many alerts as it may; this one is not notified (it is in the alert history)");
        counters.add_dropped(DropReason::Refused, 1);
    }
}

/// Alerts taken into their notification groups could not be stored: counted as errors
/// (they stay in their groups and are notified unless vigil stops first).
pub struct AlertsNotStored<'a> {
    /// The sink.
    pub sink: &'a str,
    /// How many alerts.
    pub alerts: usize,
    /// Why.
    pub error: &'a dyn Display,
}

impl InternalEvent for AlertsNotStored<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(sink = %self.sink, alerts = self.alerts, error = %self.error, "cannot store the alerts for their notification groups");
        counters.add_errors(ErrorReason::NotStored, self.alerts as u64);
    }
}

/// The notifications due could not be stored in the outbox: they are not sent, their
/// alerts counted as errors.
pub struct NotificationsNotStored<'a> {
    /// The sink.
    pub sink: &'a str,
    /// How many alerts the notifications carried.
    pub alerts: usize,
    /// Why.
    pub error: &'a dyn Display,
}

impl InternalEvent for NotificationsNotStored<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(sink = %self.sink, error = %self.error, "cannot store the notifications; they are not sent");
        counters.add_errors(ErrorReason::NotStored, self.alerts as u64);
    }
}

/// An alert matched by an active silence: not sent.
#[derive(Debug)]
pub struct Silenced<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
    /// The silence's id.
    pub silence: &'a str,
}

impl InternalEvent for Silenced<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::info!(sink = %self.sink, alert = %self.alert, silence = %self.silence, "silenced; not sent");
        counters.add_dropped(DropReason::Silenced, 1);
    }
}

/// An alert muted by a firing alert (an inhibition rule): not sent.
#[derive(Debug)]
pub struct Inhibited<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert's id.
    pub alert: &'a str,
}

impl InternalEvent for Inhibited<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::info!(sink = %self.sink, alert = %self.alert, "inhibited by a firing alert; not sent");
        counters.add_dropped(DropReason::Inhibited, 1);
    }
}

/// The peer refused a message for good: it moves to the dead letters, its alerts are
/// counted as errors.
#[derive(Debug)]
pub struct Undeliverable<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The message's id.
    pub message: &'a str,
    /// How many alerts it carries.
    pub alerts: usize,
    /// Which attempt this was.
    pub attempt: u32,
    /// The peer's answer.
    pub reason: &'a str,
}

impl InternalEvent for Undeliverable<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(sink = %self.sink, message = %self.message, alerts = self.alerts, attempt = self.attempt, reason = %self.reason, "cannot be delivered; moved to the dead letters (`vigil outbox list`)");
        counters.add_errors(ErrorReason::Undeliverable, self.alerts as u64);
    }
}

/// A message still failing after `retry.give_up_after`: it moves to the dead letters,
/// its alerts are counted as errors.
#[derive(Debug)]
pub struct DeliveryGivenUp<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The message's id.
    pub message: &'a str,
    /// How many alerts it carries.
    pub alerts: usize,
    /// The attempts made, over how long, and the last failure.
    pub reason: &'a str,
}

impl InternalEvent for DeliveryGivenUp<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(sink = %self.sink, message = %self.message, alerts = self.alerts, reason = %self.reason, "moved to the dead letters (`vigil outbox list`)");
        counters.add_errors(ErrorReason::GivenUp, self.alerts as u64);
    }
}

/// An address an `nftables_ban` sink did not ban because its `allow` list (or the PCE's
/// own address) covers it: recorded on the alert's delivery.
#[derive(Debug)]
pub struct BanAllowListed<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The address.
    pub address: &'a str,
    /// The entry that covers it (`10.0.0.0/8`, `ip_list:Trusted`, `the PCE's address`).
    pub entry: &'a str,
}

impl InternalEvent for BanAllowListed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::info!(sink = %self.sink, address = %self.address, entry = %self.entry, "in the allow list; not banned");
        counters.add_dropped(DropReason::AllowListed, 1);
    }
}

/// An address an `nftables_ban` sink did not ban because `max_bans` bans are active.
#[derive(Debug)]
pub struct BanLimitReached<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The address.
    pub address: &'a str,
    /// The sink's `max_bans`.
    pub max_bans: u32,
}

impl InternalEvent for BanLimitReached<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(sink = %self.sink, address = %self.address, max_bans = self.max_bans, "max_bans bans are active; this address is not banned");
        counters.add_dropped(DropReason::MaxBans, 1);
    }
}
