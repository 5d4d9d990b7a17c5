//! Alert history and silences in the state database.
//!
//! - `alerts`: one row per alert id — an episode from its opening through its update
//!   reports to its resolution, each report replacing the row (as does an alert annotated
//!   further down, by `top_n`). Its delivery status per sink comes from the outbox.
//! - `silences`: matchers with an expiry; the delivering sinks do not send an alert that
//!   an active silence matches.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::writer::Written;
use super::{Store, StoreError};
use crate::event::{Alert, FieldPath};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT PRIMARY KEY,
    time       INTEGER NOT NULL,
    pipeline   TEXT NOT NULL,
    stage      TEXT NOT NULL,
    severity   TEXT NOT NULL,
    alert      TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'firing',
    first_seen INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time);
CREATE INDEX IF NOT EXISTS alerts_page ON alerts (time DESC, id, pipeline, status, severity);
CREATE TABLE IF NOT EXISTS silences (
    id         TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    matchers   TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_by TEXT NOT NULL
);
";

/// How many alerts each (pipeline, status, severity) has, kept by triggers in the
/// transaction that changes `alerts` (so by every version that writes the database once
/// it has them): what a filtered history holds without a scan. A deep page is read from
/// the nearer end of the order with it, and `/metrics` counts by severity with it.
const TALLY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_tally (
    pipeline TEXT NOT NULL,
    status   TEXT NOT NULL,
    severity TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (pipeline, status, severity)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS alert_tally_insert AFTER INSERT ON alerts BEGIN
    INSERT INTO alert_tally (pipeline, status, severity, n)
    VALUES (new.pipeline, new.status, new.severity, 1)
    ON CONFLICT (pipeline, status, severity) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS alert_tally_delete AFTER DELETE ON alerts BEGIN
    UPDATE alert_tally SET n = n - 1
    WHERE pipeline = old.pipeline AND status = old.status AND severity = old.severity;
END;
CREATE TRIGGER IF NOT EXISTS alert_tally_update AFTER UPDATE OF pipeline, status, severity
ON alerts WHEN old.pipeline IS NOT new.pipeline OR old.status IS NOT new.status
    OR old.severity IS NOT new.severity
BEGIN
    UPDATE alert_tally SET n = n - 1
    WHERE pipeline = old.pipeline AND status = old.status AND severity = old.severity;
    INSERT INTO alert_tally (pipeline, status, severity, n)
    VALUES (new.pipeline, new.status, new.severity, 1)
    ON CONFLICT (pipeline, status, severity) DO UPDATE SET n = n + 1;
END;
";

/// Makes the tally and its triggers, and counts the alerts already there into it (a
/// database of an earlier version): one transaction, so no alert is missed or counted
/// twice by a writer at the same time. An empty tally with alerts can only be that: the
/// triggers count every alert from their start.
pub(super) fn init_tally(conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(TALLY_SCHEMA)?;
    let counted: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM alert_tally)", [], |r| {
        r.get(0)
    })?;
    if !counted {
        tx.execute(
            "INSERT INTO alert_tally (pipeline, status, severity, n)
             SELECT pipeline, status, severity, COUNT(*) FROM alerts
             GROUP BY pipeline, status, severity",
            [],
        )?;
    }
    tx.commit()
}

/// One condition of a silence: the alert's value at `field` (a path into its JSON form:
/// `pipeline`, `stage`, `severity`, `group.src.ip`, `title`, ...) equals `value`, or
/// matches it as a regular expression with `regex: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// The field path.
    pub field: String,
    /// The value (compared as text).
    pub value: String,
    /// Treat `value` as a regular expression (anchored at both ends).
    #[serde(default)]
    pub regex: bool,
}

/// A silence: while active, matching alerts are not sent.
#[derive(Debug, Clone, Serialize)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// When it ends (ms since the epoch).
    pub expires_at: i64,
    /// All must hold.
    pub matchers: Vec<Matcher>,
    /// Why.
    pub comment: String,
    /// Who made it.
    pub created_by: String,
}

impl Matcher {
    /// Checks the matcher itself (a path that parses, a regex that compiles).
    pub fn check(&self) -> Result<(), String> {
        FieldPath::parse(&self.field).map_err(|e| format!("field `{}`: {e}", self.field))?;
        if self.regex {
            regex::Regex::new(&format!("^(?:{})$", self.value))
                .map_err(|e| format!("value `{}` is not a regular expression: {e}", self.value))?;
        }
        Ok(())
    }

    fn matches(&self, alert: &Value) -> bool {
        let Ok(path) = FieldPath::parse(&self.field) else {
            return false;
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if self.regex {
            let Ok(re) = regex::Regex::new(&format!("^(?:{})$", self.value)) else {
                return false;
            };
            path.any(alert, &mut |v| re.is_match(&text(v)))
        } else {
            let number = self.value.trim().parse::<f64>().ok();
            path.any(alert, &mut |v| match (v.as_f64(), number) {
                // Numbers compare as numbers: `10` matches a threshold of 10.0.
                (Some(a), Some(b)) => a == b,
                _ => text(v) == self.value,
            })
        }
    }
}

impl Silence {
    /// Whether every matcher holds for `alert`.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.matches_value(&serde_json::to_value(alert).unwrap_or(Value::Null))
    }

    /// Whether every matcher holds for an alert's JSON form (made once for all silences).
    pub fn matches_value(&self, alert: &Value) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(alert))
    }
}

/// Which alerts [`Store::alerts`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertQuery<'a> {
    /// Only this pipeline's.
    pub pipeline: Option<&'a str>,
    /// Only at least this severe.
    pub min_severity: Option<crate::event::Severity>,
    /// Only those whose latest report has this status.
    pub status: Option<crate::event::AlertStatus>,
    /// Only those after this place in the order (the `next` of the page before).
    pub after: Option<&'a Cursor>,
}

/// A place in the history's order (newest first): the row's time and id. Written
/// `<time>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The row's time (ms since the epoch).
    pub time: i64,
    /// The alert id.
    pub id: String,
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Cursor, String> {
        let (time, id) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not a page cursor: pass the `next` of a page"))?;
        let time = time
            .parse()
            .map_err(|_| format!("`{s}` is not a page cursor: pass the `next` of a page"))?;
        Ok(Cursor {
            time,
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.time, self.id)
    }
}

/// One page of the history.
#[derive(Debug, Default)]
pub struct AlertPage {
    /// The alerts, newest first.
    pub alerts: Vec<Value>,
    /// Where the next page starts, when this one is full.
    pub next: Option<Cursor>,
    /// How many alerts match the query's filters, in the whole history (from the
    /// tally: no scan).
    pub total: u64,
}

/// Every severity, the lowest first.
const SEVERITIES: [crate::event::Severity; 5] = [
    crate::event::Severity::Info,
    crate::event::Severity::Low,
    crate::event::Severity::Medium,
    crate::event::Severity::High,
    crate::event::Severity::Critical,
];

/// The conditions of `q`'s filters (pipeline, status, least severity) on a table with
/// those columns (`alerts` or `alert_tally`), with their values; only those `q` sets, so
/// a row skipped costs no test it does not need.
fn filter_sql(q: &AlertQuery<'_>) -> (Vec<String>, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as Sql;
    let mut conds = Vec::new();
    let mut values = Vec::new();
    if let Some(p) = q.pipeline {
        values.push(Sql::Text(p.to_string()));
        conds.push(format!("pipeline = ?{}", values.len()));
    }
    if let Some(s) = q.status {
        values.push(Sql::Text(status_name(s).to_string()));
        conds.push(format!("status = ?{}", values.len()));
    }
    // None of the names below: a name of no severity counts as the highest, as it always
    // has. Comparisons, not `NOT IN (...)`: SQLite looks a list of more than two up in a
    // table made for it, a cost per row skipped.
    for below in SEVERITIES
        .iter()
        .filter(|s| q.min_severity.is_some_and(|m| **s < m))
    {
        conds.push(format!("severity <> '{}'", below.as_str()));
    }
    (conds, values)
}

/// `WHERE` and the conditions, or nothing.
fn where_sql(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// Which way a page's rows are read from `alerts_page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the newest: the history's order.
    NewestFirst,
    /// From the oldest (the index read backwards): the page then comes reversed.
    OldestFirst,
}

/// Where a page is read: skipping `skip` rows from one end and taking `take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    direction: Direction,
    skip: u64,
    take: u64,
}

/// How to read the page at `offset` (newest first) of `total` rows: from the end nearer
/// to it, as skipping a row costs a step in the index. `None`: nothing there.
fn plan(total: u64, offset: u64, limit: u64) -> Option<Plan> {
    if limit == 0 || offset >= total {
        return None;
    }
    let take = limit.min(total - offset);
    // The rows older than the page.
    let behind = total - offset - take;
    Some(if behind < offset {
        Plan {
            direction: Direction::OldestFirst,
            skip: behind,
            take,
        }
    } else {
        Plan {
            direction: Direction::NewestFirst,
            skip: offset,
            take,
        }
    })
}

/// The page query of `q` read in `direction`: its SQL and the values of its conditions;
/// `LIMIT` and `OFFSET` are the two parameters after them.
fn page_sql(q: &AlertQuery<'_>, direction: Direction) -> (String, Vec<rusqlite::types::Value>) {
    let (mut conds, mut values) = filter_sql(q);
    if let Some(c) = q.after {
        values.push(rusqlite::types::Value::Integer(c.time));
        let t = values.len();
        values.push(rusqlite::types::Value::Text(c.id.clone()));
        conds.push(format!("time <= ?{t} AND (time < ?{t} OR id > ?{})", t + 1));
    }
    let order = match direction {
        Direction::NewestFirst => "time DESC, id",
        Direction::OldestFirst => "time, id DESC",
    };
    let n = values.len();
    // The order and the filters are all in `alerts_page`: rows are found and skipped in
    // the index, and only the page's are read from the table.
    let sql = format!(
        "SELECT time, id, alert FROM alerts {} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
        where_sql(&conds),
        n + 1,
        n + 2
    );
    (sql, values)
}

fn to_sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Removes the alerts whose latest report is older than `before` (ms), then the oldest
/// beyond `max_rows`. Returns how many went.
fn prune_history(
    conn: &rusqlite::Connection,
    before: i64,
    max_rows: usize,
) -> Result<usize, StoreError> {
    let mut gone = conn.execute("DELETE FROM alerts WHERE time < ?1", params![before])?;
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
    let excess = rows - i64::try_from(max_rows).unwrap_or(i64::MAX);
    if excess > 0 {
        gone += conn.execute(
            "DELETE FROM alerts WHERE rowid IN
                 (SELECT rowid FROM alerts ORDER BY time, id LIMIT ?1)",
            params![excess],
        )?;
    }
    // Combinations no alert has any more (a pipeline gone): the tally stays small.
    conn.execute("DELETE FROM alert_tally WHERE n <= 0", [])?;
    Ok(gone)
}

/// The name a status is stored under.
fn status_name(s: crate::event::AlertStatus) -> &'static str {
    match s {
        crate::event::AlertStatus::Firing => "firing",
        crate::event::AlertStatus::Resolved => "resolved",
    }
}

/// Writes one alert's row (its latest report replaces the one before).
fn record_one(conn: &rusqlite::Connection, alert: &Alert) -> Result<(), StoreError> {
    conn.prepare_cached(
                "INSERT INTO alerts (id, time, pipeline, stage, severity, alert, status, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET alert = excluded.alert, severity = excluded.severity,
                     time = MAX(time, excluded.time), status = excluded.status",
            )?
            .execute(params![
                alert.id,
                alert.window.end.timestamp_millis(),
                alert.pipeline,
                alert.stage,
                alert.severity.as_str(),
                serde_json::to_string(alert).unwrap_or_default(),
                status_name(alert.status),
                alert.first_seen.timestamp_millis(),
            ])?;
    Ok(())
}

impl Store {
    /// Records `alert`, replacing an earlier report of the same id (an episode keeps one
    /// row, dated by its latest report).
    pub fn record_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        self.record_alerts(std::iter::once(alert))
    }

    /// [`Store::record_alert`] for several, in one transaction (one write to disk).
    pub fn record_alerts<'a>(
        &self,
        alerts: impl IntoIterator<Item = &'a Alert>,
    ) -> Result<(), StoreError> {
        let alerts: Vec<Alert> = alerts.into_iter().cloned().collect();
        self.write(move |tx| {
            for alert in &alerts {
                record_one(tx, alert)?;
            }
            Ok(())
        })
    }

    /// [`Store::record_alerts`] without waiting: the writing thread records them with its
    /// next transaction; a failure is logged there (by `node`).
    pub fn record_alerts_later(&self, node: &str, alerts: Vec<Alert>) {
        let node = node.to_string();
        let queued = self.write_later(
            move |tx| {
                for alert in &alerts {
                    record_one(tx, alert)?;
                }
                Ok(())
            },
            move |r| {
                if let Err(e) = r {
                    tracing::warn!(node = %node, error = %e, "cannot record the alerts in the history");
                }
            },
        );
        if let Err(e) = queued {
            tracing::warn!(error = %e, "cannot record the alerts in the history");
        }
    }

    /// Removes the alerts whose latest report is older than `before` (ms), then the
    /// oldest beyond `max_rows`. Returns how many went.
    pub fn prune_history(&self, before: i64, max_rows: usize) -> Result<usize, StoreError> {
        self.write(move |conn| prune_history(conn, before, max_rows))
    }

    /// [`Store::prune_history`], queued, with what awaits its outcome.
    pub fn prune_history_queued(&self, before: i64, max_rows: usize) -> Written<usize> {
        self.write_queued(move |conn| prune_history(conn, before, max_rows))
    }

    /// The alerts whose latest report is `firing`, recorded at or after `since` (ms),
    /// newest first, at most `limit`: what may still be open after a restart.
    pub fn firing_alerts(&self, since: i64, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT alert FROM alerts WHERE status = 'firing' AND time >= ?1
             ORDER BY time DESC LIMIT ?2",
        )?;
        let rows: Vec<String> = stmt
            .query_map(
                params![since, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    /// The episodes of stage `pipeline.stage` whose latest report is `firing` (at most
    /// `limit`, newest first).
    pub fn open_episodes_of(
        &self,
        pipeline: &str,
        stage: &str,
        limit: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT alert FROM alerts WHERE status = 'firing' AND pipeline = ?1 AND stage = ?2
             ORDER BY time DESC LIMIT ?3",
        )?;
        let rows: Vec<String> = stmt
            .query_map(
                params![pipeline, stage, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .iter()
            .filter_map(|t| serde_json::from_str::<Alert>(t).ok())
            .filter(|a| a.episode)
            .collect())
    }

    /// Alerts, newest first (by their latest report): at most `limit`, after `q.after`
    /// (cheap at any depth) and then skipping `offset`, optionally only those `q` asks
    /// for. Without `q.after`, a page is read from the end of the order nearer to it
    /// (the tally tells how many alerts match), so the first and the last page cost the
    /// same and one in the middle the most (a step per alert to the nearer end); with it,
    /// `offset` costs a step per alert skipped. Each with its deliveries: one per message
    /// it went out in (`[{sink, state, message, last_error, attempts, change, at,
    /// answer}]`, with `bans: [{address, state, expires_at, ended_at, ended_by}]` for the
    /// bans an `nftables_ban` sink made in it).
    pub fn alerts(
        &self,
        q: &AlertQuery<'_>,
        limit: usize,
        offset: usize,
    ) -> Result<AlertPage, StoreError> {
        let mut conn = self.reader();
        // One snapshot: the tally and the page agree though alerts come in meanwhile.
        let tx = conn.transaction()?;
        let (conds, values) = filter_sql(q);
        let total: i64 = tx
            .prepare_cached(&format!(
                "SELECT COALESCE(SUM(n), 0) FROM alert_tally {}",
                where_sql(&conds)
            ))?
            .query_row(rusqlite::params_from_iter(&values), |r| r.get(0))?;
        let total = u64::try_from(total).unwrap_or(0);
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let offset = u64::try_from(offset).unwrap_or(u64::MAX);
        let plan = match q.after {
            None => plan(total, offset, limit),
            // Counted from the cursor, which the tally does not know: from the newest.
            Some(_) => (limit > 0).then_some(Plan {
                direction: Direction::NewestFirst,
                skip: offset,
                take: limit,
            }),
        };
        let mut rows: Vec<(i64, String, String)> = Vec::new();
        if let Some(plan) = plan {
            let (sql, mut values) = page_sql(q, plan.direction);
            values.push(rusqlite::types::Value::Integer(to_sql_count(plan.take)));
            values.push(rusqlite::types::Value::Integer(to_sql_count(plan.skip)));
            rows = tx
                .prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(&values), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            if plan.direction == Direction::OldestFirst {
                rows.reverse();
            }
        }
        let next = (rows.len() as u64 == limit && limit > 0)
            .then(|| rows.last())
            .flatten()
            .map(|(time, id, _)| Cursor {
                time: *time,
                id: id.clone(),
            });
        let mut out = Vec::with_capacity(rows.len());
        let mut deliveries = tx.prepare(
            "SELECT a.sink, o.state, o.id, o.last_error, o.attempts, a.change, o.created_at, o.answer
             FROM outbox_message_alerts a
             JOIN outbox o ON o.id = a.message WHERE a.alert_id = ?1 ORDER BY a.sink, o.created_at",
        )?;
        // The bans an `nftables_ban` sink made in a message, and how each ended.
        let mut bans = tx.prepare(
            "SELECT address, state, expires_at, ended_at, ended_by FROM bans WHERE message = ?1 ORDER BY id",
        )?;
        for (_, _, text) in rows {
            let Ok(alert) = serde_json::from_str::<Alert>(&text) else {
                continue;
            };
            let mut sinks: Vec<Value> = deliveries
                .query_map(params![alert.id], |r| {
                    Ok(serde_json::json!({
                        "sink": r.get::<_, String>(0)?,
                        "state": r.get::<_, String>(1)?,
                        "message": r.get::<_, String>(2)?,
                        "last_error": r.get::<_, Option<String>>(3)?,
                        "attempts": r.get::<_, i64>(4)?,
                        "change": r.get::<_, String>(5)?,
                        "at": r.get::<_, i64>(6)?,
                        "answer": r.get::<_, Option<String>>(7)?,
                    }))
                })?
                .collect::<Result<_, _>>()?;
            for d in &mut sinks {
                let Some(message) = d.get("message").and_then(Value::as_str).map(str::to_string)
                else {
                    continue;
                };
                let made: Vec<Value> = bans
                    .query_map(params![message], |r| {
                        Ok(serde_json::json!({
                            "address": r.get::<_, String>(0)?,
                            "state": r.get::<_, String>(1)?,
                            "expires_at": r.get::<_, i64>(2)?,
                            "ended_at": r.get::<_, Option<i64>>(3)?,
                            "ended_by": r.get::<_, Option<String>>(4)?,
                        }))
                    })?
                    .collect::<Result<_, _>>()?;
                if !made.is_empty()
                    && let Some(o) = d.as_object_mut()
                {
                    o.insert("bans".into(), Value::Array(made));
                }
            }
            let mut v = serde_json::to_value(&alert).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                if let Some(Value::Array(samples)) = o.get_mut("samples") {
                    for (s, sample) in samples.iter_mut().zip(&alert.samples) {
                        if let Some(so) = s.as_object_mut() {
                            so.insert("record".into(), sample.value());
                        }
                    }
                }
                o.insert("deliveries".into(), Value::Array(sinks));
            }
            out.push(v);
        }
        drop(deliveries);
        drop(bans);
        tx.commit()?;
        Ok(AlertPage {
            alerts: out,
            next,
            total,
        })
    }

    /// How many alerts the history holds, by severity.
    pub fn alert_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.reader();
        // From the tally: `/metrics` does not scan the history.
        let mut stmt = conn.prepare(
            "SELECT severity, SUM(n) FROM alert_tally GROUP BY severity HAVING SUM(n) > 0",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Stores a new silence.
    pub fn add_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let s = s.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO silences (id, created_at, expires_at, matchers, comment, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id,
                    s.created_at,
                    s.expires_at,
                    serde_json::to_string(&s.matchers).unwrap_or_else(|_| "[]".into()),
                    s.comment,
                    s.created_by
                ],
            )?;
            Ok(())
        })
    }

    /// Every silence (active first, then by expiry, newest last).
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.silences_where(None)
    }

    /// The silences active at `now`.
    pub fn active_silences(&self, now: i64) -> Result<Vec<Silence>, StoreError> {
        self.silences_where(Some(now))
    }

    /// The silences active at `at`, or all of them.
    fn silences_where(&self, at: Option<i64>) -> Result<Vec<Silence>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT id, created_at, expires_at, matchers, comment, created_by FROM silences
             WHERE ?1 IS NULL OR (expires_at > ?1 AND created_at <= ?1)
             ORDER BY expires_at DESC",
        )?;
        let rows = stmt
            .query_map(params![at], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(id, created_at, expires_at, matchers, comment, created_by)| {
                    Some(Silence {
                        id,
                        created_at,
                        expires_at,
                        matchers: serde_json::from_str(&matchers).ok()?,
                        comment,
                        created_by,
                    })
                },
            )
            .collect())
    }

    /// Ends silence `id` at `now`; `false` if there is no such active silence.
    pub fn expire_silence(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE silences SET expires_at = ?2 WHERE id = ?1 AND expires_at > ?2",
                params![id, now],
            )?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::delivery::sample_alert;

    fn silence(matchers: Vec<Matcher>, until: i64) -> Silence {
        Silence {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: 0,
            expires_at: until,
            matchers,
            comment: "maintenance".into(),
            created_by: "test".into(),
        }
    }

    fn m(field: &str, value: &str, regex: bool) -> Matcher {
        Matcher {
            field: field.into(),
            value: value.into(),
            regex,
        }
    }

    #[test]
    fn matchers_all_hold_on_the_alert_fields() {
        let a = sample_alert();
        assert!(silence(vec![m("group.src.ip", "10.20.30.40", false)], 1).matches(&a));
        assert!(silence(vec![m("severity", "high|critical", true)], 1).matches(&a));
        assert!(silence(vec![m("threshold", "10", false)], 1).matches(&a));
        assert!(
            !silence(
                vec![
                    m("group.src.ip", "10.20.30.40", false),
                    m("stage", "other", false)
                ],
                1
            )
            .matches(&a)
        );
        assert!(
            !silence(vec![m("severity", "hig", true)], 1).matches(&a),
            "anchored"
        );
        assert!(
            !silence(vec![], 1).matches(&a),
            "no matcher silences nothing"
        );
    }

    #[test]
    fn silences_are_active_until_they_expire() {
        let s = Store::in_memory().unwrap();
        let sil = silence(vec![m("stage", "burst", false)], 1000);
        s.add_silence(&sil).unwrap();
        assert_eq!(s.active_silences(999).unwrap().len(), 1);
        assert!(s.active_silences(1000).unwrap().is_empty());
        assert!(s.expire_silence(&sil.id, 500).unwrap());
        assert!(s.active_silences(600).unwrap().is_empty());
        assert!(!s.expire_silence(&sil.id, 700).unwrap(), "already over");
    }

    #[test]
    fn alert_history_keeps_the_latest_form_with_its_deliveries() {
        let s = Store::in_memory().unwrap();
        let mut a = sample_alert();
        a.top = None;
        s.record_alert(&a).unwrap();
        let with_top = sample_alert();
        s.record_alert(&with_top).unwrap();
        {
            use crate::sinks::delivery::dispatch::Change;
            let meta = crate::store::NotifyMeta::default();
            let alerts = [(Change::New, with_top.clone())];
            s.write(move |tx| {
                super::super::outbox::insert_message(tx, "m1", "p.mail", &[], &alerts, &meta, 0)
            })
            .unwrap();
        }
        let got = s.alerts(&AlertQuery::default(), 10, 0).unwrap().alerts;
        assert_eq!(got.len(), 1);
        assert!(got[0]["top"].is_object(), "the annotated form");
        assert_eq!(got[0]["deliveries"][0]["sink"], "p.mail");
        assert_eq!(got[0]["deliveries"][0]["state"], "pending");
        assert_eq!(got[0]["deliveries"][0]["change"], "new");
        // An episode keeps one row: its resolution replaces it, and the status filter sees it.
        let mut done = with_top.clone();
        done.status = crate::event::AlertStatus::Resolved;
        s.record_alert(&done).unwrap();
        let firing = AlertQuery {
            status: Some(crate::event::AlertStatus::Firing),
            ..AlertQuery::default()
        };
        let resolved = AlertQuery {
            status: Some(crate::event::AlertStatus::Resolved),
            ..AlertQuery::default()
        };
        assert!(s.alerts(&firing, 10, 0).unwrap().alerts.is_empty());
        assert_eq!(s.alerts(&resolved, 10, 0).unwrap().alerts.len(), 1);
        assert!(s.firing_alerts(0, 10).unwrap().is_empty());
        assert_eq!(got[0]["samples"][0]["record"]["src"]["ip"], "10.20.30.40");
        assert!(
            s.alerts(
                &AlertQuery {
                    pipeline: Some("other"),
                    ..AlertQuery::default()
                },
                10,
                0
            )
            .unwrap()
            .alerts
            .is_empty()
        );
        assert!(
            s.alerts(
                &AlertQuery {
                    min_severity: Some(crate::event::Severity::Critical),
                    ..AlertQuery::default()
                },
                10,
                0
            )
            .unwrap()
            .alerts
            .is_empty()
        );
    }

    /// Pages follow each other by cursor, with nothing skipped or repeated, the last
    /// one without a `next`; pruning keeps the newest within the age and the count.
    #[test]
    fn pages_follow_by_cursor_and_retention_prunes_the_oldest() {
        let s = Store::in_memory().unwrap();
        let t0 = chrono::Utc::now();
        for i in 0..25i64 {
            let mut a = sample_alert();
            a.window.end = t0 + chrono::Duration::seconds(i);
            a.id = format!("a{i:02}");
            s.record_alert(&a).unwrap();
        }
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let q = AlertQuery {
                after: after.as_ref(),
                ..AlertQuery::default()
            };
            let page = s.alerts(&q, 10, 0).unwrap();
            seen.extend(
                page.alerts
                    .iter()
                    .map(|a| a["id"].as_str().unwrap().to_string()),
            );
            match page.next {
                Some(c) => after = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("a{i:02}")).collect();
        assert_eq!(seen, expected);
        // Older than 20 s before the newest, then at most 10 rows.
        let newest = (t0 + chrono::Duration::seconds(24)).timestamp_millis();
        assert_eq!(s.prune_history(newest - 20_000, 100).unwrap(), 4);
        assert_eq!(s.prune_history(0, 10).unwrap(), 11);
        let left = s.alerts(&AlertQuery::default(), 50, 0).unwrap().alerts;
        let ids: Vec<&str> = left.iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            (15..25)
                .rev()
                .map(|i| format!("a{i:02}"))
                .collect::<Vec<_>>()
        );
        assert!("nope".parse::<Cursor>().is_err());
    }

    const PIPELINES: [&str; 3] = ["edge", "core", "dmz"];

    /// `n` alerts over three pipelines, both statuses and every severity, three to a
    /// second (within a second the order is by id, not the order they were written in);
    /// every 11th reported again later with another status and severity; the oldest
    /// seconds pruned.
    fn mixed_history(s: &Store, n: usize) {
        let t0 = chrono::Utc::now() - chrono::Duration::days(1);
        let alert = |i: usize, later: i64| {
            let mut a = sample_alert();
            a.id = format!("x{:05}", (i * 7919) % 10007);
            a.pipeline = PIPELINES[(i / 2) % 3].into();
            a.severity = SEVERITIES[i % 5];
            a.status = if i % 4 == 0 {
                crate::event::AlertStatus::Resolved
            } else {
                crate::event::AlertStatus::Firing
            };
            a.window.end = t0 + chrono::Duration::seconds(i as i64 / 3 + later);
            a
        };
        let first: Vec<Alert> = (0..n).map(|i| alert(i, 0)).collect();
        s.record_alerts(first.iter()).unwrap();
        let again: Vec<Alert> = (0..n)
            .step_by(11)
            .map(|i| {
                let mut a = alert(i, 5_000);
                a.severity = SEVERITIES[(i + 2) % 5];
                a.status = crate::event::AlertStatus::Resolved;
                a
            })
            .collect();
        s.record_alerts(again.iter()).unwrap();
        let cut = (t0 + chrono::Duration::seconds(10)).timestamp_millis();
        assert!(s.prune_history(cut, usize::MAX).unwrap() > 0);
    }

    /// The history `q` lists, worked out the straightforward way: every row of the
    /// table, filtered and sorted (newest first, then by id) here.
    fn reference(s: &Store, q: &AlertQuery<'_>) -> Vec<(i64, String)> {
        let conn = s.reader();
        let mut stmt = conn
            .prepare("SELECT time, id, pipeline, status, severity FROM alerts")
            .unwrap();
        let mut rows: Vec<(i64, String)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .filter(|(_, _, pipeline, status, severity)| {
                let rank = SEVERITIES
                    .iter()
                    .position(|s| s.as_str() == severity)
                    .unwrap_or(4);
                q.pipeline.is_none_or(|p| p == pipeline)
                    && q.status.is_none_or(|st| status_name(st) == status)
                    && q.min_severity.is_none_or(|m| rank >= m as usize)
            })
            .map(|(time, id, ..)| (time, id))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        if let Some(c) = q.after {
            rows.retain(|(time, id)| *time < c.time || (*time == c.time && *id > c.id));
        }
        rows
    }

    /// The page at `offset` is the reference's rows there, its `next` the last of them
    /// when it is full, its `total` all that match the filters.
    fn check_page(s: &Store, q: &AlertQuery<'_>, limit: usize, offset: usize) {
        let want = reference(s, q);
        let total = reference(s, &AlertQuery { after: None, ..*q }).len();
        let page = s.alerts(q, limit, offset).unwrap();
        let got: Vec<&str> = page
            .alerts
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        let expected: Vec<(i64, String)> = want.iter().skip(offset).take(limit).cloned().collect();
        let expected_ids: Vec<&str> = expected.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, expected_ids, "{q:?} limit {limit} offset {offset}");
        let next = (expected.len() == limit && limit > 0)
            .then(|| expected.last())
            .flatten()
            .map(|(time, id)| Cursor {
                time: *time,
                id: id.clone(),
            });
        assert_eq!(page.next, next, "{q:?} limit {limit} offset {offset}");
        assert_eq!(page.total, total as u64, "{q:?}");
    }

    /// Pages at any offset, read from whichever end is nearer, hold exactly the rows and
    /// the `next` of the straightforward reading, with every filter, after updates (a
    /// status and a severity changed, a later time) and pruning.
    #[test]
    fn deep_offset_pages_are_the_same_rows_as_the_straightforward_reading() {
        let s = Store::in_memory().unwrap();
        mixed_history(&s, 3_000);
        let cursor = {
            let all = reference(&s, &AlertQuery::default());
            let (time, id) = all[all.len() / 3].clone();
            Cursor { time, id }
        };
        let queries = [
            AlertQuery::default(),
            AlertQuery {
                pipeline: Some("core"),
                ..AlertQuery::default()
            },
            AlertQuery {
                status: Some(crate::event::AlertStatus::Resolved),
                ..AlertQuery::default()
            },
            AlertQuery {
                min_severity: Some(crate::event::Severity::High),
                ..AlertQuery::default()
            },
            AlertQuery {
                min_severity: Some(crate::event::Severity::Info),
                ..AlertQuery::default()
            },
            AlertQuery {
                pipeline: Some("dmz"),
                status: Some(crate::event::AlertStatus::Firing),
                min_severity: Some(crate::event::Severity::Medium),
                ..AlertQuery::default()
            },
            AlertQuery {
                pipeline: Some("nowhere"),
                ..AlertQuery::default()
            },
            AlertQuery {
                after: Some(&cursor),
                ..AlertQuery::default()
            },
            AlertQuery {
                pipeline: Some("edge"),
                min_severity: Some(crate::event::Severity::Low),
                after: Some(&cursor),
                ..AlertQuery::default()
            },
        ];
        for q in &queries {
            let n = reference(&s, q).len();
            for limit in [1, 7, 50] {
                let mut offsets = vec![0, 1, limit, n + 1, n + 100];
                for near in [n / 2, n.saturating_sub(limit), n.saturating_sub(1)] {
                    offsets.extend([near.saturating_sub(1), near, near + 1]);
                }
                offsets.extend((0..n).step_by(97));
                for offset in offsets {
                    check_page(&s, q, limit, offset);
                }
            }
        }
    }

    /// 25 alerts in pages of 10: the last page has the 5 oldest and no `next`; a full
    /// last page has a `next` that leads to an empty page; past the end and a limit of 0
    /// give nothing.
    #[test]
    fn the_ends_of_the_history_by_offset() {
        let s = Store::in_memory().unwrap();
        let t0 = chrono::Utc::now();
        for i in 0..25i64 {
            let mut a = sample_alert();
            a.window.end = t0 + chrono::Duration::seconds(i);
            a.id = format!("a{i:02}");
            s.record_alert(&a).unwrap();
        }
        let ids = |p: &AlertPage| -> Vec<String> {
            p.alerts
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect()
        };
        let all = AlertQuery::default();
        let last = s.alerts(&all, 10, 20).unwrap();
        assert_eq!(ids(&last), ["a04", "a03", "a02", "a01", "a00"]);
        assert_eq!(last.next, None);
        assert_eq!(last.total, 25);
        let full = s.alerts(&all, 5, 20).unwrap();
        assert_eq!(ids(&full), ["a04", "a03", "a02", "a01", "a00"]);
        let next = full.next.expect("a full page has a next");
        assert_eq!(next.id, "a00");
        let after = s
            .alerts(
                &AlertQuery {
                    after: Some(&next),
                    ..all
                },
                5,
                0,
            )
            .unwrap();
        assert!(after.alerts.is_empty());
        assert_eq!(after.next, None);
        assert_eq!(ids(&s.alerts(&all, 10, 24).unwrap()), ["a00"]);
        for (limit, offset) in [(10, 25), (10, 1_000), (0, 0), (0, 20), (10, usize::MAX)] {
            let page = s.alerts(&all, limit, offset).unwrap();
            assert!(page.alerts.is_empty(), "limit {limit} offset {offset}");
            assert_eq!(page.next, None);
            assert_eq!(page.total, 25);
        }
        assert_eq!(
            ids(&s.alerts(&all, usize::MAX, 23).unwrap()),
            ["a01", "a00"]
        );
    }

    /// A database of an earlier version (alerts, no tally): opened, its alerts are
    /// counted, so its last page is right; and `/metrics`' counts by severity agree.
    #[test]
    fn an_earlier_database_is_counted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            mixed_history(&s, 500);
            s.write(|conn| {
                conn.execute_batch(
                    "DROP TRIGGER alert_tally_insert; DROP TRIGGER alert_tally_delete;
                     DROP TRIGGER alert_tally_update; DROP TABLE alert_tally;",
                )?;
                Ok(())
            })
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let all = reference(&s, &AlertQuery::default());
        check_page(&s, &AlertQuery::default(), 50, all.len() - 10);
        let q = AlertQuery {
            status: Some(crate::event::AlertStatus::Firing),
            ..AlertQuery::default()
        };
        check_page(&s, &q, 50, reference(&s, &q).len() - 1);
        let mut by_severity: Vec<(String, u64)> = SEVERITIES
            .iter()
            .map(|sev| {
                let q = AlertQuery {
                    min_severity: Some(*sev),
                    ..AlertQuery::default()
                };
                let at_least = reference(&s, &q).len();
                let above = SEVERITIES.iter().find(|x| *x > sev).map_or(0, |x| {
                    reference(
                        &s,
                        &AlertQuery {
                            min_severity: Some(*x),
                            ..AlertQuery::default()
                        },
                    )
                    .len()
                });
                (sev.as_str().to_string(), (at_least - above) as u64)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        by_severity.sort();
        assert_eq!(s.alert_counts().unwrap(), by_severity);
    }

    /// Every form of the page query reads `alerts_page` in its order, newest or oldest
    /// first: no sort of the history, whichever filters are set.
    #[test]
    fn every_page_query_reads_the_index_in_order() {
        let s = Store::in_memory().unwrap();
        let cursor = Cursor {
            time: 1,
            id: "a".into(),
        };
        let conn = s.reader();
        for pipeline in [None, Some("p")] {
            for status in [None, Some(crate::event::AlertStatus::Firing)] {
                for min_severity in [None, Some(crate::event::Severity::High)] {
                    for after in [None, Some(&cursor)] {
                        for direction in [Direction::NewestFirst, Direction::OldestFirst] {
                            let q = AlertQuery {
                                pipeline,
                                status,
                                min_severity,
                                after,
                            };
                            let (sql, mut values) = page_sql(&q, direction);
                            values.push(rusqlite::types::Value::Integer(50));
                            values.push(rusqlite::types::Value::Integer(0));
                            let mut stmt =
                                conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                            let plan: Vec<String> = stmt
                                .query_map(rusqlite::params_from_iter(&values), |r| r.get(3))
                                .unwrap()
                                .map(Result::unwrap)
                                .collect();
                            let plan = plan.join("; ");
                            assert!(plan.contains("alerts_page"), "{q:?} {direction:?}: {plan}");
                            assert!(!plan.contains("TEMP B-TREE"), "{q:?} {direction:?}: {plan}");
                        }
                    }
                }
            }
        }
    }
}
