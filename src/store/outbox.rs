//! The delivery outbox: every notification a sink is to send is stored here before it is
//! sent, and its fate (sent, retrying, dead) is recorded here.
//!
//! - A *message* is one notification: one or more alerts that go out together (a mail
//!   gathering the alerts of a `group_wait`, a LINE push, a webhook call). Its `id` is a
//!   UUID that stays the same across retries: the LINE retry key, the mail's Message-ID,
//!   the webhook's delivery id.
//! - `outbox_alerts` remembers, per sink, every alert id ever queued: the same alert
//!   raised again (a replay, a restart that re-reads events) is not delivered twice.
//! - `sink_cooldown` holds each sink's per-key quiet periods, so a restart does not
//!   re-send what a cooldown held back.
//!
//! Times are milliseconds since the Unix epoch on the engine's clock.

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::{Store, StoreError};
use crate::event::Alert;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id          TEXT PRIMARY KEY,
    sink        TEXT NOT NULL,
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    alerts      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    answer      TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, due_at);
CREATE TABLE IF NOT EXISTS outbox_alerts (
    sink     TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (sink, alert_id)
);
CREATE TABLE IF NOT EXISTS sink_cooldown (
    sink  TEXT NOT NULL,
    key   TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (sink, key)
);
";

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Collecting alerts until its `group_wait` ends.
    Gathering,
    /// To be sent (again) at `due_at`.
    Pending,
    /// The peer accepted it.
    Sent,
    /// A permanent error, or retries gave up: kept for inspection, `vigil outbox retry`
    /// sends it again.
    Dead,
}

impl OutboxState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Gathering => "gathering",
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> OutboxState {
        match s {
            "gathering" => OutboxState::Gathering,
            "sent" => OutboxState::Sent,
            "dead" => OutboxState::Dead,
            _ => OutboxState::Pending,
        }
    }
}

/// One stored message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEntry {
    /// The message id (a UUID, kept across retries).
    pub id: String,
    /// The sink, as `pipeline.sink`.
    pub sink: String,
    /// The recipients it goes to (mail), empty when the sink has fixed ones.
    pub route: Vec<String>,
    /// Where it is in its life.
    pub state: OutboxState,
    /// The alerts it carries.
    pub alerts: Vec<Alert>,
    /// When it was stored (ms since the epoch).
    pub created_at: i64,
    /// When it is due (next attempt, or the end of its group wait).
    pub due_at: i64,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why the last attempt failed (the reason it is dead, for dead letters).
    pub last_error: Option<String>,
    /// What the peer answered when it accepted the message.
    pub answer: Option<String>,
}

/// What [`Store::enqueue`] did with an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored, in the message with this id.
    Stored(String),
    /// This sink already had this alert (delivered or queued): not stored again.
    Duplicate,
}

const COLUMNS: &str =
    "id, sink, route, state, alerts, created_at, due_at, attempts, last_error, answer";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxEntry, String, String)> {
    let route: String = r.get(2)?;
    let state: String = r.get(3)?;
    let alerts: String = r.get(4)?;
    Ok((
        OutboxEntry {
            id: r.get(0)?,
            sink: r.get(1)?,
            route: Vec::new(),
            state: OutboxState::parse(&state),
            alerts: Vec::new(),
            created_at: r.get(5)?,
            due_at: r.get(6)?,
            attempts: r.get(7)?,
            last_error: r.get(8)?,
            answer: r.get(9)?,
        },
        route,
        alerts,
    ))
}

fn decode(
    (mut e, route, alerts): (OutboxEntry, String, String),
) -> Result<OutboxEntry, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        key: format!("outbox message {}", e.id),
        source,
    };
    e.route = serde_json::from_str(&route).map_err(corrupt)?;
    e.alerts = serde_json::from_str(&alerts).map_err(corrupt)?;
    Ok(e)
}

impl Store {
    /// Stores `alert` for `sink`, durably, before anything is sent.
    ///
    /// With a `group_wait` (ms > 0) the alert joins the sink's message that is still
    /// gathering for the same `route`, or starts one due at `now + group_wait`; without,
    /// it becomes a message of its own, due now. An alert this sink already had is not
    /// stored again ([`Enqueued::Duplicate`]).
    pub fn enqueue(
        &self,
        sink: &str,
        route: &[String],
        alert: &Alert,
        now: i64,
        group_wait_ms: i64,
    ) -> Result<Enqueued, StoreError> {
        let route_json = serde_json::to_string(route).unwrap_or_else(|_| "[]".into());
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO outbox_alerts (sink, alert_id, message) VALUES (?1, ?2, '')",
            params![sink, alert.id],
        )?;
        if fresh == 0 {
            return Ok(Enqueued::Duplicate);
        }
        let gathering: Option<(String, String)> = if group_wait_ms > 0 {
            tx.query_row(
                "SELECT id, alerts FROM outbox
                 WHERE sink = ?1 AND route = ?2 AND state = 'gathering'
                 ORDER BY created_at LIMIT 1",
                params![sink, route_json],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        } else {
            None
        };
        let id = match gathering {
            Some((id, alerts)) => {
                let mut list: Vec<Value> =
                    serde_json::from_str(&alerts).map_err(|source| StoreError::Corrupt {
                        key: format!("outbox message {id}"),
                        source,
                    })?;
                list.push(serde_json::to_value(alert).unwrap_or(Value::Null));
                tx.execute(
                    "UPDATE outbox SET alerts = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, Value::Array(list).to_string(), now],
                )?;
                id
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let (state, due) = if group_wait_ms > 0 {
                    ("gathering", now.saturating_add(group_wait_ms))
                } else {
                    ("pending", now)
                };
                let alerts = serde_json::to_string(&[alert]).unwrap_or_else(|_| "[]".into());
                tx.execute(
                    "INSERT INTO outbox (id, sink, route, state, alerts, created_at, due_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6)",
                    params![id, sink, route_json, state, alerts, now, due],
                )?;
                id
            }
        };
        tx.execute(
            "UPDATE outbox_alerts SET message = ?3 WHERE sink = ?1 AND alert_id = ?2",
            params![sink, alert.id, id],
        )?;
        tx.commit()?;
        Ok(Enqueued::Stored(id))
    }

    /// Messages of `sink` due at `now` (oldest first, at most `limit`). Gathering messages
    /// whose wait is over are closed: nothing joins them any more.
    pub fn due(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE outbox SET state = 'pending', updated_at = ?2
             WHERE sink = ?1 AND state = 'gathering' AND due_at <= ?2",
            params![sink, now],
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE sink = ?1 AND state = 'pending' AND due_at <= ?2
             ORDER BY due_at, created_at LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![sink, now, i64::try_from(limit).unwrap_or(i64::MAX)],
                entry,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.0.id.clone();
            match decode(row) {
                Ok(e) => out.push(e),
                // A damaged row would come back due forever: set it aside, with why.
                Err(e) => {
                    conn.execute(
                        "UPDATE outbox SET state = 'dead', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                        params![id, format!("cannot read the stored message: {e}"), now],
                    )?;
                }
            }
        }
        Ok(out)
    }

    /// When the next message of `sink` is due (gathering or pending), if any.
    pub fn next_due(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MIN(due_at) FROM outbox WHERE sink = ?1 AND state IN ('gathering', 'pending')",
            params![sink],
            |r| r.get(0),
        )?)
    }

    /// Closes every gathering message of `sink` now (the sink is stopping: send what it
    /// has rather than wait).
    pub fn close_gathering(&self, sink: &str, now: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET state = 'pending', due_at = MIN(due_at, ?2), updated_at = ?2
             WHERE sink = ?1 AND state = 'gathering'",
            params![sink, now],
        )?;
        Ok(())
    }

    /// How many messages of `sink` are waiting to be sent (gathering or pending).
    pub fn waiting(&self, sink: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE sink = ?1 AND state IN ('gathering', 'pending')",
            params![sink],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many alerts each sink has in each state of their messages: (sink, state, n).
    pub fn deliveries_by_sink(&self) -> Result<Vec<(String, OutboxState, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT a.sink, o.state, COUNT(*) FROM outbox_alerts a JOIN outbox o ON o.id = a.message
             GROUP BY a.sink, o.state ORDER BY a.sink, o.state",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(sink, s, n)| (sink, OutboxState::parse(&s), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// How many messages are in each state (every sink).
    pub fn outbox_counts(&self) -> Result<Vec<(OutboxState, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (OutboxState::parse(&s), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// The peer accepted message `id`.
    pub fn mark_sent(&self, id: &str, answer: &str, now: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, answer = ?2,
                 last_error = NULL, updated_at = ?3 WHERE id = ?1",
            params![id, answer, now],
        )?;
        Ok(())
    }

    /// An attempt at message `id` failed transiently: try again at `due_at`.
    pub fn mark_retry(
        &self,
        id: &str,
        error: &str,
        due_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET state = 'pending', attempts = attempts + 1, last_error = ?2,
                 due_at = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, error, due_at, now],
        )?;
        Ok(())
    }

    /// Message `id` cannot be delivered: it moves to the dead letters with `reason`.
    pub fn mark_dead(&self, id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2,
                 updated_at = ?3 WHERE id = ?1",
            params![id, reason, now],
        )?;
        Ok(())
    }

    /// The messages in `state` (all states when `None`), newest first, at most `limit`.
    pub fn outbox(
        &self,
        state: Option<OutboxState>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match state {
            Some(s) => conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM outbox WHERE state = ?1 ORDER BY created_at DESC LIMIT ?2"
                ))?
                .query_map(params![s.as_str(), limit], entry)?
                .collect::<Result<Vec<_>, _>>()?,
            None => conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM outbox ORDER BY created_at DESC LIMIT ?1"
                ))?
                .query_map(params![limit], entry)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        rows.into_iter().map(decode).collect()
    }

    /// Message `id` (a unique prefix of it is enough), if stored.
    pub fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE id = ?1 OR id LIKE ?1 || '%' LIMIT 2"
        ))?;
        let rows = stmt
            .query_map(params![id], entry)?
            .collect::<Result<Vec<_>, _>>()?;
        match <[_; 1]>::try_from(rows) {
            Ok([one]) => decode(one).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sends dead letter `id` again: it becomes pending, due `now`, with its attempts
    /// reset. `false` if there is no such dead letter.
    pub fn retry_dead(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE outbox SET state = 'pending', due_at = ?2, attempts = 0, updated_at = ?2
             WHERE id = ?1 AND state = 'dead'",
            params![id, now],
        )?;
        Ok(n > 0)
    }

    /// Deletes dead letter `id`. Its alerts stay known to the sink, so they are not sent
    /// again if raised again. `false` if there is no such dead letter.
    pub fn drop_dead(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM outbox WHERE id = ?1 AND state = 'dead'",
            params![id],
        )?;
        Ok(n > 0)
    }

    /// Forgets the sent messages of `sink`, and the alert ids they carried, last updated
    /// before `before` (the window in which a re-raised alert is recognised as already
    /// sent), and its cooldowns that ended before then.
    pub fn prune_sent(&self, sink: &str, before: i64) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM outbox_alerts WHERE sink = ?1 AND message IN
                 (SELECT id FROM outbox WHERE sink = ?1 AND state = 'sent' AND updated_at < ?2)",
            params![sink, before],
        )?;
        let n = tx.execute(
            "DELETE FROM outbox WHERE sink = ?1 AND state = 'sent' AND updated_at < ?2",
            params![sink, before],
        )?;
        tx.execute(
            "DELETE FROM sink_cooldown WHERE sink = ?1 AND until < ?2",
            params![sink, before],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Starts a quiet period for `key` of `sink` unless one is running at `now`. Returns
    /// `true` when the caller may go ahead (no quiet period was running).
    pub fn cool_down(
        &self,
        sink: &str,
        key: &str,
        now: i64,
        period_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let until: Option<i64> = tx
            .query_row(
                "SELECT until FROM sink_cooldown WHERE sink = ?1 AND key = ?2",
                params![sink, key],
                |r| r.get(0),
            )
            .optional()?;
        if until.is_some_and(|u| now < u) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO sink_cooldown (sink, key, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (sink, key) DO UPDATE SET until = excluded.until",
            params![sink, key, now.saturating_add(period_ms)],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> Alert {
        let mut a = crate::sinks::delivery::sample_alert();
        a.id = id.to_string();
        a
    }

    #[test]
    fn an_alert_is_stored_once_per_sink() {
        let s = Store::in_memory().unwrap();
        let first = s.enqueue("p.mail", &[], &alert("a1"), 1000, 0).unwrap();
        assert!(matches!(first, Enqueued::Stored(_)));
        assert_eq!(
            s.enqueue("p.mail", &[], &alert("a1"), 2000, 0).unwrap(),
            Enqueued::Duplicate
        );
        // Another sink delivers it independently.
        assert!(matches!(
            s.enqueue("p.line", &[], &alert("a1"), 2000, 0).unwrap(),
            Enqueued::Stored(_)
        ));
        assert_eq!(s.due("p.mail", 1000, 10).unwrap().len(), 1);
    }

    #[test]
    fn group_wait_gathers_alerts_per_route_until_it_ends() {
        let s = Store::in_memory().unwrap();
        let soc = vec!["soc@example.com".to_string()];
        let net = vec!["net@example.com".to_string()];
        let Enqueued::Stored(m1) = s.enqueue("p.mail", &soc, &alert("a1"), 0, 30_000).unwrap()
        else {
            panic!()
        };
        let Enqueued::Stored(m2) = s
            .enqueue("p.mail", &soc, &alert("a2"), 10_000, 30_000)
            .unwrap()
        else {
            panic!()
        };
        let Enqueued::Stored(m3) = s
            .enqueue("p.mail", &net, &alert("a3"), 10_000, 30_000)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(m1, m2, "same route within the wait: one message");
        assert_ne!(m1, m3, "another route: another message");
        assert!(s.due("p.mail", 29_999, 10).unwrap().is_empty());
        assert_eq!(s.next_due("p.mail").unwrap(), Some(30_000));
        let due = s.due("p.mail", 30_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alerts.len(), 2);
        // Closed: a later alert of the same route starts a new message.
        let Enqueued::Stored(m4) = s
            .enqueue("p.mail", &soc, &alert("a4"), 30_001, 30_000)
            .unwrap()
        else {
            panic!()
        };
        assert_ne!(m4, m1);
    }

    #[test]
    fn retries_dead_letters_and_their_reasons() {
        let s = Store::in_memory().unwrap();
        let Enqueued::Stored(id) = s.enqueue("p.hook", &[], &alert("a1"), 0, 0).unwrap() else {
            panic!()
        };
        s.mark_retry(&id, "HTTP 500", 5_000, 0).unwrap();
        assert!(s.due("p.hook", 4_999, 10).unwrap().is_empty());
        assert_eq!(s.due("p.hook", 5_000, 10).unwrap()[0].attempts, 1);
        s.mark_dead(&id, "HTTP 400: bad request", 6_000).unwrap();
        assert!(s.due("p.hook", 10_000, 10).unwrap().is_empty());
        let dead = s.outbox(Some(OutboxState::Dead), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: bad request"));
        assert_eq!(s.outbox_entry(&id[..8]).unwrap().unwrap().id, id);
        assert!(s.retry_dead(&id, 7_000).unwrap());
        let again = s.due("p.hook", 7_000, 10).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 0));
        s.mark_dead(&id, "HTTP 400", 8_000).unwrap();
        assert!(s.drop_dead(&id).unwrap());
        assert!(s.outbox(None, 10).unwrap().is_empty());
        assert_eq!(
            s.enqueue("p.hook", &[], &alert("a1"), 9_000, 0).unwrap(),
            Enqueued::Duplicate,
            "a dropped alert is not sent again when raised again"
        );
    }

    #[test]
    fn cooldowns_hold_until_they_end() {
        let s = Store::in_memory().unwrap();
        assert!(s.cool_down("p.mail", "k", 0, 1_000).unwrap());
        assert!(!s.cool_down("p.mail", "k", 999, 1_000).unwrap());
        assert!(s.cool_down("p.mail", "other", 999, 1_000).unwrap());
        assert!(s.cool_down("p.mail", "k", 1_000, 1_000).unwrap());
    }

    #[test]
    fn pruning_forgets_old_sent_messages() {
        let s = Store::in_memory().unwrap();
        let Enqueued::Stored(id) = s.enqueue("p.mail", &[], &alert("a1"), 0, 0).unwrap() else {
            panic!()
        };
        s.mark_sent(&id, "250 ok", 100).unwrap();
        assert_eq!(s.prune_sent("p.mail", 50).unwrap(), 0);
        assert_eq!(s.prune_sent("p.mail", 101).unwrap(), 1);
        assert!(matches!(
            s.enqueue("p.mail", &[], &alert("a1"), 200, 0).unwrap(),
            Enqueued::Stored(_)
        ));
    }
}
