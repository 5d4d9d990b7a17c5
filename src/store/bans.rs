//! Bans made by the `nftables_ban` sink (and `vigil ban`, the API, the dashboard): one row
//! per ban, from the moment it is applied until it ends — its TTL passed (`expired`), it
//! was lifted (`removed`), a longer ban of the same address replaced it (`extended`), or
//! its element left the live set otherwise (`vanished`). At most one ban per address is
//! `active`. A ban made for an alert names the outbox message it was made in, so the
//! alert's deliveries show it.
//!
//! Times are milliseconds since the Unix epoch on the engine's clock.

use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    address    TEXT NOT NULL,
    sink       TEXT NOT NULL,
    alert_id   TEXT,
    message    TEXT,
    origin     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    banned_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL,
    ended_at   INTEGER,
    ended_by   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS bans_active ON bans (address) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS bans_message ON bans (message);
CREATE INDEX IF NOT EXISTS bans_expiry ON bans (state, expires_at);
";

/// Where a ban is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BanState {
    /// In the live set.
    Active,
    /// Its TTL passed: the kernel removed the element.
    Expired,
    /// Lifted (`vigil ban remove`, the API, the dashboard).
    Removed,
    /// Replaced by a longer ban of the same address (a row of its own).
    Extended,
    /// Its element left the live set before its TTL passed, not through vigil (seen at
    /// a start).
    Vanished,
}

impl BanState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            BanState::Active => "active",
            BanState::Expired => "expired",
            BanState::Removed => "removed",
            BanState::Extended => "extended",
            BanState::Vanished => "vanished",
        }
    }

    fn parse(s: &str) -> BanState {
        match s {
            "expired" => BanState::Expired,
            "removed" => BanState::Removed,
            "extended" => BanState::Extended,
            "vanished" => BanState::Vanished,
            _ => BanState::Active,
        }
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    /// Its row id (0 before it is stored).
    pub id: i64,
    /// The banned address.
    pub address: String,
    /// The sink that applied it, `pipeline.sink`.
    pub sink: String,
    /// The alert it was made for (none for a ban made by hand or adopted).
    pub alert_id: Option<String>,
    /// The outbox message it was made in (the alert's delivery).
    pub message: Option<String>,
    /// `alert`, `api` (by hand: `vigil ban`, the API, the dashboard) or `adopted` (found
    /// in the live set at a start, not made by vigil).
    pub origin: String,
    /// Who made it: the sink, or the person named on the request.
    pub created_by: String,
    /// When it was applied.
    pub banned_at: i64,
    /// When its TTL passes.
    pub expires_at: i64,
    /// Where it is in its life.
    pub state: BanState,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// How it ended, in words (`ttl`, `removed by alice`, …).
    pub ended_by: Option<String>,
}

const COLUMNS: &str = "id, address, sink, alert_id, message, origin, created_by, banned_at, expires_at, state, ended_at, ended_by";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ban> {
    Ok(Ban {
        id: r.get(0)?,
        address: r.get(1)?,
        sink: r.get(2)?,
        alert_id: r.get(3)?,
        message: r.get(4)?,
        origin: r.get(5)?,
        created_by: r.get(6)?,
        banned_at: r.get(7)?,
        expires_at: r.get(8)?,
        state: BanState::parse(&r.get::<_, String>(9)?),
        ended_at: r.get(10)?,
        ended_by: r.get(11)?,
    })
}

impl Store {
    /// Records `ban` as the active ban of its address; an active ban of the address
    /// before it ends as `extended` at its `banned_at`. Returns its row id.
    pub async fn record_ban(&self, ban: Ban) -> Result<i64, StoreError> {
        self.write_queued(move |tx| {
            tx.execute(
                "UPDATE bans SET state = 'extended', ended_at = ?2, ended_by = 'a longer ban'
                 WHERE address = ?1 AND state = 'active'",
                params![ban.address, ban.banned_at],
            )?;
            tx.execute(
                "INSERT INTO bans (address, sink, alert_id, message, origin, created_by, banned_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active')",
                params![
                    ban.address,
                    ban.sink,
                    ban.alert_id,
                    ban.message,
                    ban.origin,
                    ban.created_by,
                    ban.banned_at,
                    ban.expires_at
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    /// Ends the active ban of `address` at `now` as `state`, saying how (`ended_by`).
    /// `false` when it has none.
    pub async fn end_ban(
        &self,
        address: &str,
        state: BanState,
        now: i64,
        ended_by: &str,
    ) -> Result<bool, StoreError> {
        let (address, ended_by) = (address.to_string(), ended_by.to_string());
        self.write_queued(move |tx| {
            let n = tx.execute(
                "UPDATE bans SET state = ?2, ended_at = ?3, ended_by = ?4
                 WHERE address = ?1 AND state = 'active'",
                params![address, state.as_str(), now, ended_by],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Ends every active ban whose TTL passed by `now` as `expired`; returns them.
    pub async fn expire_bans(&self, now: i64) -> Result<Vec<Ban>, StoreError> {
        self.write_queued(move |tx| {
            let ended = tx
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM bans WHERE state = 'active' AND expires_at <= ?1 ORDER BY expires_at"
                ))?
                .query_map(params![now], row)?
                .collect::<Result<Vec<_>, _>>()?;
            tx.execute(
                "UPDATE bans SET state = 'expired', ended_at = ?1, ended_by = 'ttl'
                 WHERE state = 'active' AND expires_at <= ?1",
                params![now],
            )?;
            Ok(ended)
        })
        .await
    }

    /// When the next active ban's TTL passes.
    pub fn next_ban_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.reader().query_row(
            "SELECT MIN(expires_at) FROM bans WHERE state = 'active'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The active ban of `address`, if any.
    pub fn active_ban(&self, address: &str) -> Result<Option<Ban>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {COLUMNS} FROM bans WHERE address = ?1 AND state = 'active'"),
                params![address],
                row,
            )
            .optional()?)
    }

    /// The bans: the active ones (soonest to end first), then, with `ended`, the others,
    /// most recently ended first; at most `limit`.
    pub fn bans(&self, ended: bool, limit: usize) -> Result<Vec<Ban>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bans WHERE ?1 OR state = 'active'
             ORDER BY state != 'active', CASE WHEN state = 'active' THEN expires_at ELSE -ended_at END, id DESC
             LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![ended, limit], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The bans made in outbox message `message`.
    pub fn bans_of_message(&self, message: &str) -> Result<Vec<Ban>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bans WHERE message = ?1 ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(params![message], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(address: &str, at: i64, ttl: i64) -> Ban {
        Ban {
            id: 0,
            address: address.into(),
            sink: "p.ban".into(),
            alert_id: Some("a1".into()),
            message: Some("m1".into()),
            origin: "alert".into(),
            created_by: "p.ban".into(),
            banned_at: at,
            expires_at: at + ttl,
            state: BanState::Active,
            ended_at: None,
            ended_by: None,
        }
    }

    #[tokio::test]
    async fn a_ban_lives_until_its_ttl_and_a_longer_one_replaces_it() {
        let s = Store::in_memory().unwrap();
        s.record_ban(ban("203.0.113.7", 1_000, 10_000))
            .await
            .unwrap();
        s.record_ban(ban("2001:db8::7", 1_000, 5_000))
            .await
            .unwrap();
        assert_eq!(s.next_ban_expiry().unwrap(), Some(6_000));
        // A longer ban of the same address: the first ends as `extended`.
        s.record_ban(ban("203.0.113.7", 2_000, 20_000))
            .await
            .unwrap();
        let all = s.bans(true, 10).unwrap();
        assert_eq!(all.len(), 3);
        let active: Vec<_> = s.bans(false, 10).unwrap();
        assert_eq!(
            active
                .iter()
                .map(|b| (b.address.as_str(), b.expires_at))
                .collect::<Vec<_>>(),
            vec![("2001:db8::7", 6_000), ("203.0.113.7", 22_000)]
        );
        assert_eq!(all[2].state, BanState::Extended);
        // The first TTL passes.
        let ended = s.expire_bans(6_000).await.unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].address, "2001:db8::7");
        assert_eq!(s.active_ban("2001:db8::7").unwrap(), None);
        assert_eq!(s.next_ban_expiry().unwrap(), Some(22_000));
        // Lifted by hand.
        assert!(
            s.end_ban("203.0.113.7", BanState::Removed, 7_000, "removed by alice")
                .await
                .unwrap()
        );
        assert!(
            !s.end_ban("203.0.113.7", BanState::Removed, 7_000, "removed by alice")
                .await
                .unwrap()
        );
        assert_eq!(s.next_ban_expiry().unwrap(), None);
        let of_message = s.bans_of_message("m1").unwrap();
        assert_eq!(of_message.len(), 3);
        assert_eq!(of_message[2].ended_by.as_deref(), Some("removed by alice"));
    }
}
