//! The SQLite database under `state_dir` (`vigil.db`): checkpoints of sources, stage
//! snapshots, the delivery outbox (see [`super::outbox`]), and later alert history and
//! silences.
//!
//! WAL mode, two connections: one that writes (behind a mutex: writes are small — a
//! checkpoint, a batch of alerts, an outbox row — and every write is durable when the call
//! returns), and one that only reads, for the API, `/metrics` and the CLI's listings, so a
//! reader never waits for a writer (WAL lets both run at once).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// The database file's name under `state_dir`.
pub const DB_FILE: &str = "vigil.db";

/// A problem with the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the state database {path}: {source} (check that state_dir is writable)")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A read or write failed.
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored value is not valid JSON (the file was edited or damaged).
    #[error("state database: `{key}` is not valid JSON: {source}")]
    Corrupt {
        /// The checkpoint's key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// A table of JSON values by key.
#[derive(Clone, Copy)]
struct Table {
    name: &'static str,
    key: &'static str,
}

const CHECKPOINTS: Table = Table {
    name: "checkpoints",
    key: "key",
};
const STAGE_STATE: Table = Table {
    name: "stage_state",
    key: "node",
};

/// vigil's state database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// Read-only; `None` for a database in memory (which one connection holds).
    reader: Option<Mutex<Connection>>,
}

impl Store {
    /// Opens (or creates) `<state_dir>/vigil.db`, creating the directory (mode 0700) if
    /// needed.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // Alerts, raw records and checkpoints: the directory is made readable by vigil's
        // user only.
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        if let Err(e) = dir.create(state_dir) {
            return Err(open_err(rusqlite::Error::InvalidPath(PathBuf::from(
                format!("{}: {e}", state_dir.display()),
            ))));
        }
        let conn = Connection::open(&path).map_err(open_err)?;
        let mut store = Self::init(conn).map_err(open_err)?;
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|r| {
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(r)
        })
        .map_err(open_err)?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// A database in memory (tests, `vigil test`).
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        Ok(Self::init(conn)?)
    }

    fn init(mut conn: Connection) -> Result<Store, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS checkpoints (
                 key        TEXT PRIMARY KEY,
                 value      TEXT NOT NULL,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );
             CREATE TABLE IF NOT EXISTS stage_state (
                 node       TEXT PRIMARY KEY,
                 value      TEXT NOT NULL,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );",
        )?;
        // Columns added since a table was first made (databases of earlier versions).
        for (table, column, decl) in [
            ("outbox", "notify", "TEXT"),
            ("alerts", "status", "TEXT NOT NULL DEFAULT 'firing'"),
            ("alerts", "first_seen", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            add_column(&conn, table, column, decl)?;
        }
        conn.execute_batch(super::outbox::SCHEMA)?;
        conn.execute_batch(super::notify::SCHEMA)?;
        conn.execute_batch(super::history::SCHEMA)?;
        super::history::init_tally(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            reader: None,
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is
        // one statement), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The read-only connection (the writing one for a database in memory).
    pub(super) fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            None => self.conn(),
        }
    }

    /// The JSON value stored in `table` under `key`.
    fn get(&self, table: Table, key: &str, what: &str) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                &format!("SELECT value FROM {} WHERE {} = ?1", table.name, table.key),
                params![key],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|source| StoreError::Corrupt {
                key: format!("{what}{key}"),
                source,
            })
        })
        .transpose()
    }

    /// Stores `value` in `table` under `key`, durably, replacing what was there.
    fn put(&self, table: Table, key: &str, value: &Value) -> Result<(), StoreError> {
        self.put_text(table, key, &value.to_string())
    }

    fn put_text(&self, table: Table, key: &str, text: &str) -> Result<(), StoreError> {
        let (name, col) = (table.name, table.key);
        self.conn().execute(
            &format!(
                "INSERT INTO {name} ({col}, value) VALUES (?1, ?2)
                 ON CONFLICT({col}) DO UPDATE SET value = excluded.value,
                     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
            ),
            params![key, text],
        )?;
        Ok(())
    }

    /// The checkpoint stored under `key` (by convention the node id, `pipeline.node`, or
    /// `<kind>:<connection>` for state shared by a connection).
    pub fn checkpoint(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.get(CHECKPOINTS, key, "")
    }

    /// Stores `value` under `key`, durably, replacing what was there.
    pub fn set_checkpoint(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.put(CHECKPOINTS, key, value)
    }

    /// The state a stage saved last, by node id (`pipeline.node`).
    pub fn stage_state(&self, node: &str) -> Result<Option<Value>, StoreError> {
        self.get(STAGE_STATE, node, "stage state ")
    }

    /// Saves a stage's state, durably, replacing what was there.
    pub fn set_stage_state(&self, node: &str, value: &Value) -> Result<(), StoreError> {
        self.put(STAGE_STATE, node, value)
    }

    /// Saves a stage's state already written as JSON text (see
    /// [`Store::set_stage_state`]).
    pub fn set_stage_state_text(&self, node: &str, json: &str) -> Result<(), StoreError> {
        self.put_text(STAGE_STATE, node, json)
    }

    /// Removes a stage's saved state.
    pub fn clear_stage_state(&self, node: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM stage_state WHERE node = ?1", params![node])?;
        Ok(())
    }

    /// Removes the checkpoint under `key`.
    pub fn clear_checkpoint(&self, key: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM checkpoints WHERE key = ?1", params![key])?;
        Ok(())
    }
}

/// Adds `column` to `table` when the table exists without it.
fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    if !columns.is_empty() && !columns.iter().any(|c| c == column) {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A reader (the API's history, `/metrics`' counts) answers while a writer holds the
    /// database, and sees what was committed before.
    #[test]
    fn readers_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_checkpoint("a", &json!(1)).unwrap();
        let held = store.conn();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = tx.send((store.alert_counts(), store.outbox_counts()));
            });
            let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
            drop(held);
            let (alerts, outbox) = answer.expect("the reader answered while the writer held");
            assert!(alerts.unwrap().is_empty());
            assert!(outbox.unwrap().iter().all(|(_, n)| *n == 0));
        });
    }

    #[test]
    fn checkpoints_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        {
            let store = Store::open(&state).unwrap();
            assert_eq!(store.checkpoint("p.events").unwrap(), None);
            store
                .set_checkpoint("p.events", &json!({"watermark": "2026-01-01T00:00:00Z"}))
                .unwrap();
            store
                .set_checkpoint("p.events", &json!({"watermark": "2026-01-02T00:00:00Z"}))
                .unwrap();
        }
        let store = Store::open(&state).unwrap();
        assert_eq!(
            store.checkpoint("p.events").unwrap(),
            Some(json!({"watermark": "2026-01-02T00:00:00Z"}))
        );
        store.clear_checkpoint("p.events").unwrap();
        assert_eq!(store.checkpoint("p.events").unwrap(), None);
    }

    /// A state directory vigil makes is its user's only.
    #[cfg(unix)]
    #[test]
    fn a_new_state_dir_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/state");
        Store::open(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    #[test]
    fn an_unwritable_state_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = Store::open(&file.join("state")).unwrap_err().to_string();
        assert!(err.contains("state_dir"), "{err}");
    }
}
