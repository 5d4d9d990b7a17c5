//! The delivery outbox: every notification a sink is to send is stored here before it is
//! sent, and its fate (sent, retrying, dead) is recorded here.
//!
//! - A *message* is one notification: the alerts of one notification group that go out
//!   together (see `sinks::delivery::dispatch`), each marked new, still firing or
//!   resolved. Its `id` is a UUID that stays the same across retries: the LINE retry key,
//!   the mail's Message-ID, the webhook's delivery id.
//! - `outbox_message_alerts` lists the alerts of each message, for the alert history's
//!   delivery status.
//! - `sink_cooldown` holds each sink's per-key quiet periods, so a restart does not
//!   re-send what a cooldown held back.
//!
//! Times are milliseconds since the Unix epoch on the engine's clock.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::records::{Change, Omitted};
use super::writer::Written;
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
    updated_at  INTEGER NOT NULL,
    notify      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, state, due_at);
CREATE TABLE IF NOT EXISTS outbox_message_alerts (
    message  TEXT NOT NULL,
    sink     TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    change   TEXT NOT NULL,
    PRIMARY KEY (message, alert_id)
);
CREATE INDEX IF NOT EXISTS outbox_message_alerts_alert ON outbox_message_alerts (alert_id);
DROP TABLE IF EXISTS outbox_alerts;
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
    /// Being sent by a sink that a reload stopped (`handover_timeout`) during the send:
    /// the send finishes, within the sink's `timeout`, and its outcome is recorded; the
    /// sink that replaced it does not send it meanwhile. One left from a run that ended
    /// during such a send is pending again at the next start.
    Sending,
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
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> OutboxState {
        match s {
            "gathering" => OutboxState::Gathering,
            "sending" => OutboxState::Sending,
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
    /// How its alerts read (new, still firing, resolved), its group, whether it is a
    /// reminder. Absent for messages stored before notification grouping.
    pub notify: Option<NotifyMeta>,
}

/// What a message says beyond its alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyMeta {
    /// For each alert, in order: new, still firing, or resolved.
    pub changes: Vec<Change>,
    /// The notification group's `group_by` values.
    pub group: serde_json::Value,
    /// Nothing changed since the group's last notification: a reminder.
    #[serde(default)]
    pub reminder: bool,
    /// Alerts left out of the message (too many), by change.
    #[serde(default)]
    pub omitted: Omitted,
}

const COLUMNS: &str =
    "id, sink, route, state, alerts, created_at, due_at, attempts, last_error, answer, notify";

/// A stored message's row, its JSON columns not yet read.
type Row = (OutboxEntry, String, String, Option<String>);

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let route: String = r.get(2)?;
    let state: String = r.get(3)?;
    let alerts: String = r.get(4)?;
    let notify: Option<String> = r.get(10)?;
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
            notify: None,
        },
        route,
        alerts,
        notify,
    ))
}

fn decode((mut e, route, alerts, notify): Row) -> Result<OutboxEntry, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        key: format!("outbox message {}", e.id),
        source,
    };
    e.route = serde_json::from_str(&route).map_err(corrupt)?;
    e.alerts = serde_json::from_str(&alerts).map_err(corrupt)?;
    e.notify = notify
        .map(|n| serde_json::from_str(&n))
        .transpose()
        .map_err(corrupt)?;
    Ok(e)
}

/// Stores a new message of `sink` to `route`, due `now`, inside transaction `tx`.
pub(super) fn insert_message(
    tx: &rusqlite::Connection,
    id: &str,
    sink: &str,
    route: &[String],
    alerts: &[(Change, Alert)],
    meta: &NotifyMeta,
    now: i64,
) -> Result<(), StoreError> {
    let route_json = serde_json::to_string(route).unwrap_or_else(|_| "[]".into());
    let list: Vec<&Alert> = alerts.iter().map(|(_, a)| a).collect();
    let alerts_json = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
    let meta_json = serde_json::to_string(meta).unwrap_or_else(|_| "{}".into());
    tx.prepare_cached(
        "INSERT INTO outbox (id, sink, route, state, alerts, created_at, due_at, updated_at, notify)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?5, ?5, ?6)",
    )?
    .execute(params![id, sink, route_json, alerts_json, now, meta_json])?;
    let mut listed =
        tx.prepare_cached("INSERT OR IGNORE INTO outbox_message_alerts (message, sink, alert_id, change) VALUES (?1, ?2, ?3, ?4)")?;
    for (change, a) in alerts {
        listed.execute(params![id, sink, a.id, change.as_str()])?;
    }
    Ok(())
}

impl Store {
    /// Messages of `sink` due at `now` (oldest first, at most `limit`). A damaged row is
    /// moved to the dead letters, with why.
    pub fn due(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = {
            let conn = self.reader();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE sink = ?1 AND state = 'pending' AND due_at <= ?2
                 ORDER BY due_at, created_at LIMIT ?3"
            ))?;
            stmt.query_map(
                params![sink, now, i64::try_from(limit).unwrap_or(i64::MAX)],
                entry,
            )?
            .collect::<Result<Vec<_>, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.0.id.clone();
            match decode(row) {
                Ok(e) => out.push(e),
                // A damaged row would come back due forever: set it aside, with why.
                Err(e) => {
                    let why = format!("cannot read the stored message: {e}");
                    self.write(move |conn| {
                        conn.execute(
                            "UPDATE outbox SET state = 'dead', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                            params![id, why, now],
                        )?;
                        Ok(())
                    })?;
                }
            }
        }
        Ok(out)
    }

    /// When the next message of `sink` is due (pending), if any.
    pub fn next_due(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.reader().query_row(
            "SELECT MIN(due_at) FROM outbox WHERE sink = ?1 AND state IN ('gathering', 'pending')",
            params![sink],
            |r| r.get(0),
        )?)
    }

    /// How many messages of `sink` are waiting to be sent (gathering or pending).
    pub fn waiting(&self, sink: &str) -> Result<u64, StoreError> {
        let n: i64 = self.reader().query_row(
            "SELECT COUNT(*) FROM outbox WHERE sink = ?1 AND state IN ('gathering', 'pending')",
            params![sink],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many alerts each sink has in each state of their messages: (sink, state, n).
    pub fn deliveries_by_sink(&self) -> Result<Vec<(String, OutboxState, u64)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT a.sink, o.state, COUNT(*) FROM outbox_message_alerts a JOIN outbox o ON o.id = a.message
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
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (OutboxState::parse(&s), u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Marks pending message `id` as being sent (by a sink that a reload stopped while it
    /// sent it: the sink that replaces it must not send it too) until its outcome is
    /// recorded. `false` when it is not pending.
    pub fn mark_sending(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'sending', updated_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
                params![id, now],
            )?;
            Ok(n > 0)
        })
    }

    /// Makes every message left `sending` pending again, due `now`: at the start of a run,
    /// when no worker can be sending any more (the last run ended mid-send). Returns
    /// their ids and sinks. The peer may have them already. Messages of versions before
    /// notification grouping left `gathering` are pending too.
    pub fn release_sending(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.write(move |tx| {
            let ids = tx
                .prepare("SELECT id, sink FROM outbox WHERE state = 'sending' ORDER BY created_at")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            tx.execute(
                "UPDATE outbox SET state = 'pending', due_at = MIN(due_at, ?1), updated_at = ?1
                 WHERE state IN ('sending', 'gathering')",
                params![now],
            )?;
            Ok(ids)
        })
    }

    /// Records how an attempt at message `id` went, at `now`.
    #[cfg(test)]
    pub fn record_outcome(&self, id: &str, outcome: Outcome, now: i64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| outcome.write(conn, &id, now))
    }

    /// [`Store::record_outcome`], queued now, with what awaits its commit (see
    /// [`Store::notify_intake`]).
    pub fn queue_outcome(&self, id: &str, outcome: Outcome, now: i64) -> Written<()> {
        let id = id.to_string();
        self.write_queued(move |conn| outcome.write(conn, &id, now))
    }

    /// The peer accepted message `id`.
    #[cfg(test)]
    pub fn mark_sent(&self, id: &str, answer: &str, now: i64) -> Result<(), StoreError> {
        self.record_outcome(
            id,
            Outcome::Sent {
                answer: answer.into(),
            },
            now,
        )
    }

    /// An attempt at message `id` failed transiently: try again at `due_at`.
    #[cfg(test)]
    pub fn mark_retry(
        &self,
        id: &str,
        error: &str,
        due_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.record_outcome(
            id,
            Outcome::Retry {
                error: error.into(),
                due_at,
            },
            now,
        )
    }

    /// Message `id` cannot be delivered: it moves to the dead letters with `reason`.
    #[cfg(test)]
    pub fn mark_dead(&self, id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        self.record_outcome(
            id,
            Outcome::Dead {
                reason: reason.into(),
            },
            now,
        )
    }

    /// The messages in `state` (all states when `None`), newest first, at most `limit`.
    pub fn outbox(
        &self,
        state: Option<OutboxState>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = self.reader();
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
        let conn = self.reader();
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
        let id = id.to_string();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'pending', due_at = ?2, attempts = 0, updated_at = ?2
                 WHERE id = ?1 AND state = 'dead'",
                params![id, now],
            )?;
            Ok(n > 0)
        })
    }

    /// Deletes dead letter `id`. `false` if there is no such dead letter.
    pub fn drop_dead(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM outbox WHERE id = ?1 AND state = 'dead'",
                params![id],
            )?;
            if n > 0 {
                tx.execute(
                    "DELETE FROM outbox_message_alerts WHERE message = ?1",
                    params![id],
                )?;
            }
            Ok(n > 0)
        })
    }

    /// Forgets the sent messages of `sink` (of every sink when `None`) last updated
    /// before `before`, the cooldowns that ended before then, and the alerts whose end
    /// was notified before then. Returns how many messages went.
    pub fn prune_sent(&self, sink: Option<&str>, before: i64) -> Result<u64, StoreError> {
        let sink = sink.map(str::to_string);
        self.write(move |tx| prune_sent(tx, sink.as_deref(), before))
    }

    /// [`Store::prune_sent`] for every sink, queued, with what awaits its outcome.
    pub fn prune_sent_queued(&self, before: i64) -> Written<u64> {
        self.write_queued(move |tx| prune_sent(tx, None, before))
    }

    /// When the quiet period for `key` of `sink` ends (ms), if one was started.
    pub fn cooldown_until(&self, sink: &str, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .reader()
            .prepare_cached("SELECT until FROM sink_cooldown WHERE sink = ?1 AND key = ?2")?
            .query_row(params![sink, key], |r| r.get(0))
            .optional()?)
    }
}

fn prune_sent(
    tx: &rusqlite::Connection,
    sink: Option<&str>,
    before: i64,
) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM outbox_message_alerts WHERE message IN
             (SELECT id FROM outbox WHERE (?1 IS NULL OR sink = ?1) AND state = 'sent'
                  AND updated_at < ?2)",
        params![sink, before],
    )?;
    tx.execute(
        "DELETE FROM notify_done WHERE (?1 IS NULL OR sink = ?1) AND at < ?2",
        params![sink, before],
    )?;
    let n = tx.execute(
        "DELETE FROM outbox WHERE (?1 IS NULL OR sink = ?1) AND state = 'sent' AND updated_at < ?2",
        params![sink, before],
    )?;
    tx.execute(
        "DELETE FROM sink_cooldown WHERE (?1 IS NULL OR sink = ?1) AND until < ?2",
        params![sink, before],
    )?;
    Ok(n as u64)
}

/// How an attempt at a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer accepted it, answering `answer`.
    Sent {
        /// What the peer answered.
        answer: String,
    },
    /// It failed transiently: try again at `due_at` (ms).
    Retry {
        /// Why it failed.
        error: String,
        /// When to try again.
        due_at: i64,
    },
    /// It cannot be delivered: it moves to the dead letters.
    Dead {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    fn write(&self, conn: &rusqlite::Connection, id: &str, now: i64) -> Result<(), StoreError> {
        match self {
            Outcome::Sent { answer } => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'sent', attempts = attempts + 1, answer = ?2,
                         last_error = NULL, updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, answer, now])?,
            Outcome::Retry { error, due_at } => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'pending', attempts = attempts + 1, last_error = ?2,
                         due_at = ?3, updated_at = ?4 WHERE id = ?1",
                )?
                .execute(params![id, error, due_at, now])?,
            Outcome::Dead { reason } => conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2,
                         updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, reason, now])?,
        };
        Ok(())
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

    fn store_message(s: &Store, id: &str, sink: &str, alerts: &[&str], now: i64) {
        let alerts: Vec<(Change, Alert)> = alerts.iter().map(|a| (Change::New, alert(a))).collect();
        let meta = NotifyMeta {
            changes: alerts.iter().map(|(c, _)| *c).collect(),
            ..NotifyMeta::default()
        };
        let (id, sink) = (id.to_string(), sink.to_string());
        s.write(move |tx| {
            insert_message(
                tx,
                &id,
                &sink,
                &["soc@example.com".to_string()],
                &alerts,
                &meta,
                now,
            )
        })
        .unwrap();
    }

    #[test]
    fn a_message_is_stored_with_its_alerts_and_how_they_read() {
        let s = Store::in_memory().unwrap();
        store_message(&s, "m1", "p.mail", &["a1", "a2"], 1_000);
        assert!(s.due("p.mail", 999, 10).unwrap().is_empty());
        let due = s.due("p.mail", 1_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alerts.len(), 2);
        assert_eq!(due[0].route, vec!["soc@example.com".to_string()]);
        assert_eq!(
            due[0].notify.as_ref().map(|n| n.changes.clone()),
            Some(vec![Change::New, Change::New])
        );
        assert_eq!(
            s.deliveries_by_sink().unwrap(),
            vec![("p.mail".into(), OutboxState::Pending, 2)]
        );
    }

    #[test]
    fn retries_dead_letters_and_their_reasons() {
        let s = Store::in_memory().unwrap();
        store_message(&s, "m-hook-1", "p.hook", &["a1"], 0);
        let id = "m-hook-1";
        s.mark_retry(id, "HTTP 500", 5_000, 0).unwrap();
        assert!(s.due("p.hook", 4_999, 10).unwrap().is_empty());
        assert_eq!(s.due("p.hook", 5_000, 10).unwrap()[0].attempts, 1);
        s.mark_dead(id, "HTTP 400: bad request", 6_000).unwrap();
        assert!(s.due("p.hook", 10_000, 10).unwrap().is_empty());
        let dead = s.outbox(Some(OutboxState::Dead), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: bad request"));
        assert_eq!(s.outbox_entry("m-hook").unwrap().unwrap().id, id);
        assert!(s.retry_dead(id, 7_000).unwrap());
        let again = s.due("p.hook", 7_000, 10).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 0));
        s.mark_dead(id, "HTTP 400", 8_000).unwrap();
        assert!(s.drop_dead(id).unwrap());
        assert!(s.outbox(None, 10).unwrap().is_empty());
        assert!(s.deliveries_by_sink().unwrap().is_empty());
    }

    #[test]
    fn a_message_being_sent_is_taken_once_and_released_at_the_next_start() {
        let s = Store::in_memory().unwrap();
        store_message(&s, "m1", "p.mail", &["a1"], 1_000);
        assert!(s.mark_sending("m1", 1_000).unwrap());
        // The sink that replaced the stopped one sees nothing to send.
        assert!(!s.mark_sending("m1", 1_001).unwrap());
        assert!(s.due("p.mail", 2_000, 10).unwrap().is_empty());
        assert_eq!(s.outbox(None, 10).unwrap()[0].state, OutboxState::Sending);
        // A run that ended mid-send: the next start makes it pending again.
        assert_eq!(
            s.release_sending(3_000).unwrap(),
            vec![("m1".to_string(), "p.mail".to_string())]
        );
        assert_eq!(s.due("p.mail", 3_000, 10).unwrap().len(), 1);
        assert!(s.mark_sending("m1", 3_000).unwrap());
        s.mark_sent("m1", "250 ok", 3_100).unwrap();
        assert!(!s.mark_sending("m1", 4_000).unwrap());
        assert!(s.release_sending(4_000).unwrap().is_empty());
        assert_eq!(s.outbox(None, 10).unwrap()[0].state, OutboxState::Sent);
    }

    /// A cooldown a sink stored is read back for its key and sink only, and a later one
    /// replaces it.
    #[tokio::test]
    async fn cooldowns_are_kept_per_sink_and_key() {
        use crate::store::notify::Intake;
        let s = Store::in_memory().unwrap();
        let cool = |key: &str, until| Intake::CoolDown {
            key: key.into(),
            until,
        };
        s.notify_intake("p.mail", vec![cool("k", 1_000)])
            .await
            .unwrap();
        assert_eq!(s.cooldown_until("p.mail", "k").unwrap(), Some(1_000));
        assert_eq!(s.cooldown_until("p.mail", "other").unwrap(), None);
        assert_eq!(s.cooldown_until("p.hook", "k").unwrap(), None);
        s.notify_intake("p.mail", vec![cool("k", 2_000)])
            .await
            .unwrap();
        assert_eq!(s.cooldown_until("p.mail", "k").unwrap(), Some(2_000));
    }

    #[test]
    fn pruning_forgets_old_sent_messages() {
        let s = Store::in_memory().unwrap();
        store_message(&s, "m1", "p.mail", &["a1"], 0);
        s.mark_sent("m1", "250 ok", 100).unwrap();
        assert_eq!(s.prune_sent(Some("p.mail"), 50).unwrap(), 0);
        assert_eq!(s.prune_sent(Some("p.other"), 101).unwrap(), 0);
        assert_eq!(s.prune_sent(None, 101).unwrap(), 1);
        assert!(s.deliveries_by_sink().unwrap().is_empty());
    }
}
