//! What a delivering sink's notification state is made of (see
//! `sinks::delivery::dispatch`, which decides; the store keeps it): groups of alerts,
//! their last notification, and a notification to send.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Alert, Timestamp};

/// How an alert reads in one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Firing, and not in the group's last notification.
    New,
    /// Firing, and already in the last notification.
    Firing,
    /// Listed as firing before, resolved since.
    Resolved,
}

impl Change {
    /// The name templates see.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Firing => "firing",
            Change::Resolved => "resolved",
        }
    }
}

/// How many alerts of each change a notification left out (`MAX_PER_MESSAGE` of the dispatcher).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Omitted {
    /// New alerts left out.
    pub new: usize,
    /// Still-firing alerts left out.
    pub firing: usize,
    /// Resolved alerts left out.
    pub resolved: usize,
}

impl Omitted {
    /// Alerts left out in all.
    pub fn total(&self) -> usize {
        self.new + self.firing + self.resolved
    }
}

/// The group's last notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    /// When it was decided.
    pub at: Timestamp,
    /// The ids it listed as firing (new or still firing).
    pub firing: BTreeSet<String>,
    /// Reminders in a row since something changed.
    pub reminders: u32,
}

/// A group of alerts notified together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Its key (recipients and `group_by` values).
    pub key: String,
    /// Its recipients.
    pub route: Vec<String>,
    /// The `group_by` values, nested by path.
    pub labels: Value,
    /// When it is looked at next.
    pub next_flush: Timestamp,
    /// Its last notification.
    pub last: Option<Sent>,
    /// Its alerts in the order they arrived, each in its latest form.
    #[serde(skip)]
    pub alerts: Vec<Alert>,
}

impl Group {
    /// The group without its alerts (which are stored one by one).
    pub fn header(&self) -> Group {
        Group {
            key: self.key.clone(),
            route: self.route.clone(),
            labels: self.labels.clone(),
            next_flush: self.next_flush,
            last: self.last.clone(),
            alerts: Vec::new(),
        }
    }
}

/// A notification to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Its recipients.
    pub route: Vec<String>,
    /// Its group's `group_by` values.
    pub labels: Value,
    /// The alerts in full, new first, then still firing, then resolved.
    pub alerts: Vec<(Change, Alert)>,
    /// Nothing changed since the last notification: a reminder.
    pub reminder: bool,
    /// Alerts beyond the dispatcher's `MAX_PER_MESSAGE`, by change.
    pub omitted: Omitted,
}

/// One look at a group: what to store, and what to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Flushed {
    /// The group's key.
    pub key: String,
    /// The group after the look, without its alerts ([`Group::header`]); `None` when it
    /// was forgotten (no alerts left).
    pub group: Option<Group>,
    /// Alert ids that left the group (resolved, seen).
    pub removed: Vec<String>,
    /// The notification, if one goes out.
    pub message: Option<Planned>,
}
