//! Notification grouping, as users of Alertmanager know it: which of the alerts a
//! delivering sink receives become a notification, together with which others, and when.
//!
//! - **Groups.** Alerts with the same recipients (`route`) and the same values at the
//!   sink's `group_by` paths form one group. A group is made by its first alert.
//! - **`group_wait`.** A new group's first notification waits this long, so alerts that
//!   arrive together go out together.
//! - **`group_interval`.** After that, the group is looked at again every
//!   `group_interval`: a notification goes out when it has firing alerts the last one
//!   did not list (new), or — with `send_resolved` — alerts the last one listed as firing
//!   that have resolved since. A notification lists the group's new alerts, the ones
//!   still firing, and the ones resolved since the last one.
//! - **`repeat_interval`.** When nothing changed but alerts still fire, a reminder goes
//!   out once the last notification is `repeat_interval` old (checked at each
//!   `group_interval`); with `repeat_backoff: 2` every further reminder waits twice as
//!   long as the one before, up to `max_repeat_interval`.
//! - **Resolved alerts** leave the group once a look at it has seen them, and so do
//!   one-off alerts (not episodes: nothing will ever resolve them), which are notified
//!   once; a group with no alerts left is forgotten.
//! - **Muted alerts** (silenced, inhibited) are left out of the firing alerts when the
//!   group is looked at, but stay in it: when the silence or the inhibiting alert ends,
//!   they are new at the next look.
//!
//! The [`Dispatcher`] is pure: time is passed in, and what it decides comes back as
//! [`Flushed`] records that the sink stores (with the outbox message, in one transaction)
//! before anything is sent.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::event::{Alert, AlertStatus, FieldPath, Timestamp, insert_path};

/// The most alerts one notification carries in full; the rest are counted.
pub const MAX_PER_MESSAGE: usize = 100;

/// How alerts become notifications (a delivering sink's options).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Alert field paths whose values make a group.
    pub group_by: Vec<FieldPath>,
    /// How long a new group's first notification waits.
    pub group_wait: chrono::Duration,
    /// How often a group is looked at after its first notification.
    pub group_interval: chrono::Duration,
    /// How long before a reminder of alerts still firing.
    pub repeat_interval: chrono::Duration,
    /// Each further reminder waits this many times longer (1: never longer).
    pub repeat_backoff: f64,
    /// The longest wait between reminders with a back-off.
    pub max_repeat_interval: chrono::Duration,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// The most alerts held at once; beyond, new alerts are refused and counted.
    pub max_alerts: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            group_by: Vec::new(),
            group_wait: chrono::Duration::zero(),
            group_interval: chrono::Duration::minutes(5),
            repeat_interval: chrono::Duration::hours(4),
            repeat_backoff: 1.0,
            max_repeat_interval: chrono::Duration::hours(24),
            send_resolved: false,
            max_alerts: 10_000,
        }
    }
}

impl Policy {
    /// The wait before reminder number `n + 1` (after `n` in a row).
    fn repeat_after(&self, reminders: u32) -> chrono::Duration {
        if self.repeat_backoff <= 1.0 {
            return self.repeat_interval;
        }
        let base = self.repeat_interval.num_milliseconds() as f64;
        let cap = self.max_repeat_interval.num_milliseconds() as f64;
        let ms = (base * self.repeat_backoff.powi(reminders.min(64) as i32)).min(cap.max(base));
        chrono::Duration::milliseconds(ms as i64)
    }

    /// The group key and values of `alert` for `route`.
    fn group_of(&self, route: &[String], alert: &Value) -> (String, Value) {
        let mut labels = Value::Object(serde_json::Map::new());
        let mut key = serde_json::to_string(route).unwrap_or_default();
        for path in &self.group_by {
            let v = path.first(alert).cloned().unwrap_or(Value::Null);
            key.push('\u{1f}');
            key.push_str(path.as_str());
            key.push('=');
            key.push_str(&v.to_string());
            insert_path(&mut labels, path.as_str(), v);
        }
        (key, labels)
    }
}

/// What became of an alert given to [`Dispatcher::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Held in the group with this key; `true` when the group is new.
    Held(String, bool),
    /// An older report of an alert held in a newer form (arrived out of order): ignored.
    Stale,
    /// A firing report of an alert the group no longer holds, or a resolution of one it
    /// never held: nothing to notify.
    Unknown,
    /// [`Policy::max_alerts`] are held: refused.
    Full,
}

pub use crate::store::records::{Change, Flushed, Group, Omitted, Planned, Sent};

/// A delivering sink's groups; see the module docs.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    policy: Policy,
    groups: BTreeMap<String, Group>,
    /// Alert id → the group holding it.
    index: BTreeMap<String, String>,
    /// The groups by when they are looked at next (each group once, at its
    /// `next_flush`): the due ones are found without going through every group.
    due: BTreeSet<(Timestamp, String)>,
}

impl Dispatcher {
    /// No groups yet.
    pub fn new(policy: Policy) -> Dispatcher {
        Dispatcher {
            policy,
            groups: BTreeMap::new(),
            index: BTreeMap::new(),
            due: BTreeSet::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Restores a group as stored (its alerts included).
    pub fn restore(&mut self, group: Group) {
        for a in &group.alerts {
            self.index.insert(a.id.clone(), group.key.clone());
        }
        if let Some(old) = self.groups.get(&group.key) {
            self.due.remove(&(old.next_flush, old.key.clone()));
        }
        self.due.insert((group.next_flush, group.key.clone()));
        self.groups.insert(group.key.clone(), group);
    }

    /// Whether an alert with this id is held.
    pub fn holds(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// How many alerts are held.
    pub fn held(&self) -> usize {
        self.index.len()
    }

    /// How many held alerts stay after their group's next look: open episodes (one-off
    /// and resolved alerts leave once looked at). Goes through every held alert.
    pub fn staying(&self) -> usize {
        self.groups
            .values()
            .flat_map(|g| &g.alerts)
            .filter(|a| a.episode && a.status == AlertStatus::Firing)
            .count()
    }

    /// The groups (for the API and tests).
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The group with this key.
    pub fn group(&self, key: &str) -> Option<&Group> {
        self.groups.get(key)
    }

    /// Takes `alert` (for `route`) into its group at `now`. `form` is the alert's JSON
    /// form (group values are read from it).
    pub fn ingest(
        &mut self,
        route: &[String],
        alert: Alert,
        form: &Value,
        now: Timestamp,
    ) -> Ingested {
        if let Some(key) = self.index.get(&alert.id).cloned() {
            let Some(group) = self.groups.get_mut(&key) else {
                self.index.remove(&alert.id);
                return Ingested::Unknown;
            };
            if let Some(held) = group.alerts.iter_mut().find(|a| a.id == alert.id) {
                if is_older(&alert, held) {
                    return Ingested::Stale;
                }
                *held = alert;
            }
            return Ingested::Held(key, false);
        }
        if alert.status == AlertStatus::Resolved {
            // Resolved before anything saw it firing: nobody was told, nobody needs to be.
            return Ingested::Unknown;
        }
        if self.index.len() >= self.policy.max_alerts {
            return Ingested::Full;
        }
        let (key, labels) = self.policy.group_of(route, form);
        let fresh = !self.groups.contains_key(&key);
        let group = self.groups.entry(key.clone()).or_insert_with(|| {
            let next_flush = crate::time::later_by(now, self.policy.group_wait);
            self.due.insert((next_flush, key.clone()));
            Group {
                key: key.clone(),
                route: route.to_vec(),
                labels,
                next_flush,
                last: None,
                alerts: Vec::new(),
            }
        });
        self.index.insert(alert.id.clone(), key.clone());
        group.alerts.push(alert);
        Ingested::Held(key, fresh)
    }

    /// When a group is looked at next.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Looks at every group due at `now` (every group when `all`): `muted` says which
    /// firing alerts are silenced or inhibited now.
    pub fn flush(
        &mut self,
        now: Timestamp,
        all: bool,
        muted: &mut dyn FnMut(&Alert) -> bool,
    ) -> Vec<Flushed> {
        let due: Vec<(Timestamp, String)> = if all {
            std::mem::take(&mut self.due).into_iter().collect()
        } else {
            let later = self
                .due
                .iter()
                .find(|(t, _)| *t > now)
                .cloned()
                .map(|first_later| self.due.split_off(&first_later))
                .unwrap_or_default();
            std::mem::replace(&mut self.due, later)
                .into_iter()
                .collect()
        };
        let mut out = Vec::with_capacity(due.len());
        for (_, key) in due {
            let Some(mut group) = self.groups.remove(&key) else {
                continue;
            };
            let mut flushed = self.look(&mut group, now, muted);
            for id in &flushed.removed {
                self.index.remove(id);
            }
            if !group.alerts.is_empty() {
                flushed.group = Some(group.header());
                self.due.insert((group.next_flush, key.clone()));
                self.groups.insert(key, group);
            }
            out.push(flushed);
        }
        out
    }

    fn look(
        &self,
        group: &mut Group,
        now: Timestamp,
        muted: &mut dyn FnMut(&Alert) -> bool,
    ) -> Flushed {
        let p = &self.policy;
        let before: BTreeSet<String> = group
            .last
            .as_ref()
            .map(|l| l.firing.clone())
            .unwrap_or_default();
        let firing: Vec<&Alert> = group
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing && !muted(a))
            .collect();
        let resolved_seen: Vec<&Alert> = group
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved && before.contains(&a.id))
            .collect();
        let firing_ids: BTreeSet<String> = firing.iter().map(|a| a.id.clone()).collect();
        let has_new = !firing_ids.is_subset(&before);
        let notify_resolved = p.send_resolved && !resolved_seen.is_empty();
        let (update, reminder) = match &group.last {
            None => (!firing.is_empty(), false),
            Some(_) if has_new || notify_resolved => (true, false),
            // Everything the receiver knew of resolved (told or not): the log is cleared.
            Some(_) if firing.is_empty() => (!before.is_empty(), false),
            Some(last) => {
                let due = now >= last.at + p.repeat_after(last.reminders);
                (due, due)
            }
        };
        let mut message = None;
        if update {
            let mut alerts: Vec<(Change, Alert)> = Vec::new();
            let mut omitted = Omitted::default();
            let mut add = |change: Change, a: &Alert, alerts: &mut Vec<(Change, Alert)>| {
                if alerts.len() < MAX_PER_MESSAGE {
                    alerts.push((change, a.clone()));
                } else {
                    match change {
                        Change::New => omitted.new += 1,
                        Change::Firing => omitted.firing += 1,
                        Change::Resolved => omitted.resolved += 1,
                    }
                }
            };
            for a in firing.iter().filter(|a| !before.contains(&a.id)) {
                add(Change::New, a, &mut alerts);
            }
            for a in firing.iter().filter(|a| before.contains(&a.id)) {
                add(Change::Firing, a, &mut alerts);
            }
            if p.send_resolved {
                for a in &resolved_seen {
                    add(Change::Resolved, a, &mut alerts);
                }
            }
            let sendable = !firing.is_empty() || notify_resolved;
            if sendable && !alerts.is_empty() {
                message = Some(Planned {
                    route: group.route.clone(),
                    labels: group.labels.clone(),
                    alerts,
                    reminder,
                    omitted,
                });
            }
            let reminders = match (&group.last, reminder) {
                (Some(l), true) => l.reminders + 1,
                _ => 0,
            };
            group.last = Some(Sent {
                at: now,
                firing: firing_ids,
                reminders,
            });
        }
        // Resolved alerts have been seen; one-off alerts (no episode: nothing will ever
        // resolve them) are notified once.
        let leaves = |a: &Alert| a.status == AlertStatus::Resolved || !a.episode;
        let removed: Vec<String> = group
            .alerts
            .iter()
            .filter(|a| leaves(a))
            .map(|a| a.id.clone())
            .collect();
        group.alerts.retain(|a| !leaves(a));
        group.next_flush = crate::time::later_by(now, p.group_interval);
        Flushed {
            key: group.key.clone(),
            group: None,
            removed,
            message,
        }
    }
}

/// Whether `new` is an older report of the same alert than `held` (reports of an
/// episode only move forward: firing with more updates, then resolved).
fn is_older(new: &Alert, held: &Alert) -> bool {
    match (new.status, held.status) {
        (AlertStatus::Firing, AlertStatus::Resolved) => true,
        (AlertStatus::Resolved, AlertStatus::Firing) => false,
        _ => new.updates < held.updates,
    }
}

#[cfg(test)]
mod tests;
