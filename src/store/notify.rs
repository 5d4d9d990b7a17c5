//! What each delivering sink's notification groups hold (see
//! `sinks::delivery::dispatch`), kept so a restart neither forgets an alert that
//! waits for its group nor tells the same thing twice.
//!
//! - `notify_groups`: per sink and group, its recipients, `group_by` values, when it is
//!   looked at next and what its last notification listed as firing.
//! - `notify_alerts`: the alerts the groups hold, each in its newest form — written when
//!   an alert arrives (its opening, an update report, its resolution), not per event.
//! - `notify_done`: alerts that left a group (resolved, or one-offs told once): the same
//!   alert raised again (a replay, a restart that re-reads events) is not told again.
//!   Forgotten with the sent messages, after `retention.sent_max_age` (7 days).
//!
//! A look at a group and the message it decides on are stored in one transaction, before
//! anything is sent.

use rusqlite::{OptionalExtension, params};

use super::outbox::{NotifyMeta, insert_message};
use super::records::{Flushed, Group, Sent};
use super::writer::Written;
use super::{Store, StoreError};
use crate::event::Alert;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notify_groups (
    sink        TEXT NOT NULL,
    key         TEXT NOT NULL,
    route       TEXT NOT NULL,
    labels      TEXT NOT NULL,
    next_flush  INTEGER NOT NULL,
    last        TEXT,
    PRIMARY KEY (sink, key)
);
CREATE TABLE IF NOT EXISTS notify_alerts (
    sink        TEXT NOT NULL,
    alert_id    TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    alert       TEXT NOT NULL,
    PRIMARY KEY (sink, alert_id)
);
CREATE INDEX IF NOT EXISTS notify_alerts_seq ON notify_alerts (sink, seq);
CREATE TABLE IF NOT EXISTS notify_done (
    sink      TEXT NOT NULL,
    alert_id  TEXT NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (sink, alert_id)
);
";

fn ms(t: crate::event::Timestamp) -> i64 {
    t.timestamp_millis()
}

fn upsert_group(tx: &rusqlite::Connection, sink: &str, g: &Group) -> Result<(), StoreError> {
    let last = g
        .last
        .as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_default());
    tx.prepare_cached(
        "INSERT INTO notify_groups (sink, key, route, labels, next_flush, last)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sink, key) DO UPDATE SET next_flush = excluded.next_flush,
             last = excluded.last",
    )?
    .execute(params![
        sink,
        g.key,
        serde_json::to_string(&g.route).unwrap_or_default(),
        g.labels.to_string(),
        ms(g.next_flush),
        last
    ])?;
    Ok(())
}

impl Store {
    /// The groups `sink` holds, with their alerts in the order they arrived. A damaged
    /// row is skipped with a warning (its alert is not lost from the history).
    pub fn notify_groups(&self, sink: &str) -> Result<Vec<Group>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT key, route, labels, next_flush, last FROM notify_groups WHERE sink = ?1 ORDER BY key",
        )?;
        let rows = stmt
            .query_map(params![sink], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut groups = Vec::with_capacity(rows.len());
        let mut by_key = std::collections::HashMap::with_capacity(rows.len());
        for (key, route, labels, next_flush, last) in rows {
            by_key.insert(key.clone(), groups.len());
            let last: Option<Sent> = last.and_then(|l| serde_json::from_str(&l).ok());
            groups.push(Group {
                route: serde_json::from_str(&route).unwrap_or_default(),
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                next_flush: chrono::DateTime::from_timestamp_millis(next_flush).unwrap_or_default(),
                last,
                alerts: Vec::new(),
                key,
            });
        }
        let mut stmt = conn.prepare(
            "SELECT group_key, alert_id, alert FROM notify_alerts WHERE sink = ?1 ORDER BY seq",
        )?;
        let alerts = stmt
            .query_map(params![sink], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (key, id, text) in alerts {
            let Some(g) = by_key.get(&key).and_then(|i| groups.get_mut(*i)) else {
                continue;
            };
            match serde_json::from_str::<Alert>(&text) {
                Ok(a) => g.alerts.push(a),
                Err(e) => {
                    tracing::warn!(sink, alert = %id, error = %e, "a held alert cannot be read; it is left out of its notification group")
                }
            }
        }
        groups.retain(|g| !g.alerts.is_empty());
        Ok(groups)
    }

    /// Stores `alert` as held by `sink` in group `group_key`, with the group itself when
    /// it is new (`group`).
    #[cfg(test)]
    pub fn notify_hold(
        &self,
        sink: &str,
        group: Option<&Group>,
        group_key: &str,
        alert: &Alert,
    ) -> Result<(), StoreError> {
        let ops = vec![Intake::Hold {
            group: group.cloned(),
            key: group_key.to_string(),
            alert: Box::new(alert.clone()),
        }];
        let sink = sink.to_string();
        self.write(move |conn| write_intake(conn, &sink, &ops))
    }

    /// Queues what a delivering sink took from one batch of its input (see [`Intake`]),
    /// in one transaction, and returns what tells when it is on disk. Queued at once (in
    /// order with what the caller queues next, whatever holds its locks), awaited later.
    pub fn notify_intake(&self, sink: &str, ops: Vec<Intake>) -> Written<()> {
        let sink = sink.to_string();
        self.write_queued(move |conn| write_intake(conn, &sink, &ops))
    }

    /// Whether `sink` already let alert `id` go (told of its end, or told a one-off once).
    pub fn notify_done(&self, sink: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT 1 FROM notify_done WHERE sink = ?1 AND alert_id = ?2",
                params![sink, id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Stores one look at a group of `sink` at `now`: the group (or its end), the alerts
    /// that left it, and the message it decided on (with id `message_id`), in one
    /// transaction.
    #[cfg(test)]
    pub fn notify_flushed(
        &self,
        sink: &str,
        f: &Flushed,
        message_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let looks = vec![(f.clone(), message_id.to_string())];
        let sink = sink.to_string();
        self.write(move |conn| {
            for (f, id) in &looks {
                write_look(conn, &sink, f, id, now)?;
            }
            Ok(())
        })
    }

    /// Queues several looks of [`Store::notify_flushed`] (each with its message id) in one
    /// transaction, and returns what tells when they are on disk (see
    /// [`Store::notify_intake`]).
    pub fn notify_looks(&self, sink: &str, looks: Vec<(Flushed, String)>, now: i64) -> Written<()> {
        let sink = sink.to_string();
        self.write_queued(move |conn| {
            for (f, id) in &looks {
                write_look(conn, &sink, f, id, now)?;
            }
            Ok(())
        })
    }
}

/// What a delivering sink stores as it takes alerts in.
#[derive(Debug, Clone)]
pub enum Intake {
    /// A quiet period for `key` (the sink's `cooldown`) lasting until `until` (ms).
    CoolDown {
        /// The cooldown key.
        key: String,
        /// When it ends.
        until: i64,
    },
    /// `alert` is held in group `key`; `group` is the group's header when it is new.
    Hold {
        /// The new group's header.
        group: Option<Group>,
        /// The group's key.
        key: String,
        /// The alert in its newest form.
        alert: Box<Alert>,
    },
}

fn write_intake(conn: &rusqlite::Connection, sink: &str, ops: &[Intake]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Intake::CoolDown { key, until } => {
                conn.prepare_cached(
                    "INSERT INTO sink_cooldown (sink, key, until) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sink, key) DO UPDATE SET until = excluded.until",
                )?
                .execute(params![sink, key, until])?;
            }
            Intake::Hold { group, key, alert } => {
                if let Some(g) = group {
                    upsert_group(conn, sink, g)?;
                }
                conn.prepare_cached(
                    "INSERT INTO notify_alerts (sink, alert_id, group_key, seq, alert)
                     VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notify_alerts WHERE sink = ?1), ?4)
                     ON CONFLICT (sink, alert_id) DO UPDATE SET alert = excluded.alert",
                )?
                .execute(params![
                    sink,
                    alert.id,
                    key,
                    serde_json::to_string(alert).unwrap_or_default()
                ])?;
            }
        }
    }
    Ok(())
}

/// Writes one look at a group (see [`Store::notify_flushed`]).
fn write_look(
    tx: &rusqlite::Connection,
    sink: &str,
    f: &Flushed,
    message_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    match &f.group {
        Some(g) => upsert_group(tx, sink, g)?,
        None => {
            tx.prepare_cached("DELETE FROM notify_groups WHERE sink = ?1 AND key = ?2")?
                .execute(params![sink, f.key])?;
        }
    }
    {
        let mut gone =
            tx.prepare_cached("DELETE FROM notify_alerts WHERE sink = ?1 AND alert_id = ?2")?;
        let mut done = tx.prepare_cached(
            "INSERT OR REPLACE INTO notify_done (sink, alert_id, at) VALUES (?1, ?2, ?3)",
        )?;
        for id in &f.removed {
            gone.execute(params![sink, id])?;
            done.execute(params![sink, id, now])?;
        }
    }
    if let Some(m) = &f.message {
        let meta = NotifyMeta {
            changes: m.alerts.iter().map(|(c, _)| *c).collect(),
            group: m.labels.clone(),
            reminder: m.reminder,
            omitted: m.omitted,
        };
        insert_message(tx, message_id, sink, &m.route, &m.alerts, &meta, now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AlertStatus;
    use crate::sinks::delivery::dispatch::{Dispatcher, Ingested, Policy};
    use crate::sinks::delivery::sample_alert;
    use chrono::{Duration, TimeZone, Utc};

    fn t(s: i64) -> crate::event::Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + Duration::seconds(s)
    }

    fn alert(id: &str, status: AlertStatus) -> Alert {
        let mut a = sample_alert();
        a.id = id.into();
        a.status = status;
        a.episode = true;
        a
    }

    fn give(s: &Store, d: &mut Dispatcher, a: Alert, at: i64) {
        let form = a.to_value();
        let held = a.clone();
        if let Ingested::Held(key, fresh) = d.ingest(&[], a, &form, t(at)) {
            let group = d.groups().find(|g| g.key == key).map(Group::header);
            s.notify_hold("p.mail", group.as_ref().filter(|_| fresh), &key, &held)
                .unwrap();
        }
    }

    #[test]
    fn groups_and_their_alerts_survive_a_restart_and_a_look_is_stored_whole() {
        let s = Store::in_memory().unwrap();
        let policy = Policy {
            group_wait: Duration::seconds(30),
            send_resolved: true,
            ..Policy::default()
        };
        let mut d = Dispatcher::new(policy.clone());
        give(&s, &mut d, alert("a", AlertStatus::Firing), 0);
        give(&s, &mut d, alert("b", AlertStatus::Firing), 1);
        // "Restart": a new dispatcher from the store holds the same.
        let mut again = Dispatcher::new(policy.clone());
        for g in s.notify_groups("p.mail").unwrap() {
            again.restore(g);
        }
        assert!(again.holds("a") && again.holds("b"));
        assert_eq!(again.next_due(), Some(t(30)));
        let looks = again.flush(t(30), false, &mut |_| false);
        assert_eq!(looks.len(), 1);
        s.notify_flushed("p.mail", &looks[0], "m1", 30_000).unwrap();
        let due = s.due("p.mail", 30_000, 10).unwrap();
        assert_eq!(due[0].alerts.len(), 2);
        // b resolves; after the next look it is done and no longer held.
        give(&s, &mut again, alert("b", AlertStatus::Resolved), 40);
        let looks = again.flush(t(330), false, &mut |_| false);
        s.notify_flushed("p.mail", &looks[0], "m2", 330_000)
            .unwrap();
        assert!(s.notify_done("p.mail", "b").unwrap());
        assert!(!s.notify_done("p.mail", "a").unwrap());
        let restored = s.notify_groups("p.mail").unwrap();
        assert_eq!(restored.len(), 1);
        assert_eq!(restored[0].alerts.len(), 1);
        assert_eq!(
            restored[0].last.as_ref().map(|l| l.firing.len()),
            Some(1),
            "the last notification's firing set is kept"
        );
        let m2 = s.outbox_entry("m2").unwrap().unwrap();
        assert_eq!(
            m2.notify.map(|n| n.changes),
            Some(vec![
                crate::store::records::Change::Firing,
                crate::store::records::Change::Resolved
            ])
        );
    }
}
