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
}

fn severity_rank(s: crate::event::Severity) -> i64 {
    s as i64
}

/// The name a status is stored under.
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
    Ok(gone)
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

fn status_name(s: crate::event::AlertStatus) -> &'static str {
    match s {
        crate::event::AlertStatus::Firing => "firing",
        crate::event::AlertStatus::Resolved => "resolved",
    }
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
    /// (cheap at any depth) and then skipping `offset` (costs a step per row skipped),
    /// optionally only those `q` asks for. Each with its deliveries: one per message it
    /// went out in (`[{sink, state, message, last_error, attempts, change, at}]`).
    pub fn alerts(
        &self,
        q: &AlertQuery<'_>,
        limit: usize,
        offset: usize,
    ) -> Result<AlertPage, StoreError> {
        let conn = self.reader();
        let min_rank = q.min_severity.map_or(0, severity_rank);
        // The order and the filters are all in `alerts_page`: rows are found and skipped
        // in the index, and only the page's are read.
        let mut stmt = conn.prepare_cached(
            "SELECT time, id, alert FROM alerts
             WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2)
               AND (CASE severity WHEN 'info' THEN 0 WHEN 'low' THEN 1 WHEN 'medium' THEN 2
                    WHEN 'high' THEN 3 ELSE 4 END) >= ?3
               AND time <= ?6 AND (time < ?6 OR id > ?7)
             ORDER BY time DESC, id LIMIT ?4 OFFSET ?5",
        )?;
        let rows: Vec<(i64, String, String)> = stmt
            .query_map(
                params![
                    q.pipeline,
                    q.status.map(status_name),
                    min_rank,
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    i64::try_from(offset).unwrap_or(i64::MAX),
                    // No cursor: from the newest (`time <= MAX` seeks nothing away).
                    q.after.map_or(i64::MAX, |c| c.time),
                    q.after.map_or("", |c| c.id.as_str()),
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<Result<_, _>>()?;
        let next = (rows.len() == limit && limit > 0)
            .then(|| rows.last())
            .flatten()
            .map(|(time, id, _)| Cursor {
                time: *time,
                id: id.clone(),
            });
        let mut out = Vec::with_capacity(rows.len());
        let mut deliveries = conn.prepare(
            "SELECT a.sink, o.state, o.id, o.last_error, o.attempts, a.change, o.created_at
             FROM outbox_message_alerts a
             JOIN outbox o ON o.id = a.message WHERE a.alert_id = ?1 ORDER BY a.sink, o.created_at",
        )?;
        for (_, _, text) in rows {
            let Ok(alert) = serde_json::from_str::<Alert>(&text) else {
                continue;
            };
            let sinks: Vec<Value> = deliveries
                .query_map(params![alert.id], |r| {
                    Ok(serde_json::json!({
                        "sink": r.get::<_, String>(0)?,
                        "state": r.get::<_, String>(1)?,
                        "message": r.get::<_, String>(2)?,
                        "last_error": r.get::<_, Option<String>>(3)?,
                        "attempts": r.get::<_, i64>(4)?,
                        "change": r.get::<_, String>(5)?,
                        "at": r.get::<_, i64>(6)?,
                    }))
                })?
                .collect::<Result<_, _>>()?;
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
        Ok(AlertPage { alerts: out, next })
    }

    /// How many alerts the history holds, by severity.
    pub fn alert_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT severity, COUNT(*) FROM alerts GROUP BY severity")?;
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
}
