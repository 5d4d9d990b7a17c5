//! The SQLite database under `state_dir` (`vigil.db`): checkpoints of sources, stage
//! snapshots, the delivery outbox (see [`super::outbox`]), and later alert history and
//! silences.
//!
//! WAL mode, two connections: one that writes, owned by the store's writing thread (see
//! [`super::writer`]: writes queued at the same moment share one transaction, and a
//! write is on disk before its caller hears it is done), and one that only reads, for the
//! API, `/metrics`, the sinks' look-ups and the CLI's listings, so a reader never waits
//! for a writer (WAL lets both run at once).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, MAIN_DB, OptionalExtension, params};
use serde_json::Value;

use super::writer::{Writer, Written};

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
    /// A write could not be made (the disk is full, the writing thread stopped).
    #[error("{0}")]
    Write(String),
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
    writer: Writer,
    /// Read-only (for a database in memory, the one connection, which the writer shares).
    reader: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (or creates) `<state_dir>/vigil.db`, creating the directory (mode 0700) if
    /// needed. The directory and the database's files (`vigil.db`, `-wal`, `-shm`) are
    /// vigil's user's only: made so, or tightened (logged) when they were looser.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let io_err = |at: &Path, e: std::io::Error| {
            open_err(rusqlite::Error::InvalidPath(PathBuf::from(format!(
                "{}: {e}",
                at.display()
            ))))
        };
        // Alerts, raw records and checkpoints: readable by vigil's user only. The database
        // file is made (mode 0600) before SQLite opens it; SQLite gives its `-wal` and
        // `-shm` files the database file's mode.
        super::private::private_dir(state_dir).map_err(|e| io_err(state_dir, e))?;
        super::private::touch(&path).map_err(|e| io_err(&path, e))?;
        let side_files = |path: &Path| {
            ["-wal", "-shm"].map(|s| {
                let mut name = path.as_os_str().to_owned();
                name.push(s);
                PathBuf::from(name)
            })
        };
        for side in side_files(&path) {
            super::private::private_file(&side).map_err(|e| io_err(&side, e))?;
        }
        let mut conn = Connection::open(&path).map_err(open_err)?;
        init(&mut conn).map_err(open_err)?;
        for side in side_files(&path) {
            super::private::private_file(&side).map_err(|e| io_err(&side, e))?;
        }
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|r| {
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(r)
        })
        .map_err(open_err)?;
        Ok(Store {
            writer: Writer::start(Arc::new(Mutex::new(conn)))?,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// A database in memory (tests, `vigil test`).
    pub fn in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        init(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(Store {
            writer: Writer::start(conn.clone())?,
            reader: conn,
        })
    }

    /// The read-only connection (the one connection of a database in memory). It sees
    /// every write its caller was told is done.
    pub(super) fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written, so a poisoned
        // lock is still usable.
        self.reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in the writing thread's next transaction, blocking this thread until it is
    /// committed. For threads that may block (the command line, start-up, tests); async
    /// code uses [`Store::write_queued`] or [`Store::write_later`].
    pub(super) fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.writer.run(f)
    }

    /// Queues `f` for the writing thread now and returns what awaits its commit (see
    /// [`Writer::queue`]).
    pub(super) fn write_queued<R, F>(&self, f: F) -> Written<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.writer.queue(f)
    }

    /// Queues `f` for the writing thread without waiting for it; `done` hears its outcome
    /// there, once its transaction is over.
    pub(super) fn write_later<F>(
        &self,
        f: F,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        self.writer.submit(f, done)
    }

    /// Waits until every write queued before this call is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(()))
    }

    /// What the writing thread did (for `/metrics`), read at one moment.
    pub fn writer_counts(&self) -> super::writer::WriterCounts {
        self.writer.snapshot()
    }

    /// The JSON value stored in `table` under `key`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Value>, StoreError> {
        self.get_text(table, key)?
            .map(|t| {
                serde_json::from_str(&t).map_err(|source| StoreError::Corrupt {
                    key: key.to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// The text stored in `table` under `key` (a stage's state is stored as a BLOB: see
    /// [`Store::set_stage_state`]).
    fn get_text(&self, table: Table, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT value FROM {} WHERE {} = ?1", table.name, table.key),
                params![key],
                |r| {
                    let bytes = match r.get_ref(0)? {
                        ValueRef::Text(b) | ValueRef::Blob(b) => b,
                        other => {
                            return Err(rusqlite::Error::InvalidColumnType(
                                0,
                                "value".into(),
                                other.data_type(),
                            ));
                        }
                    };
                    String::from_utf8(bytes.to_vec()).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(e))
                    })
                },
            )
            .optional()?)
    }

    /// Stores `value` in `table` under `key`, durably, replacing what was there.
    fn put(&self, table: Table, key: &str, value: &Value) -> Result<(), StoreError> {
        self.put_text(table, key, value.to_string())
    }

    fn put_text(&self, table: Table, key: &str, text: String) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |conn| put_row(conn, table, &key, &text))
    }

    /// The checkpoint stored under `key` (by convention the node id, `pipeline.node`, or
    /// `<kind>:<connection>` for state shared by a connection).
    pub fn checkpoint(&self, key: &str) -> Result<Option<Value>, StoreError> {
        self.get(CHECKPOINTS, key)
    }

    /// Stores `value` under `key`, durably, replacing what was there.
    pub fn set_checkpoint(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        self.put(CHECKPOINTS, key, value)
    }

    /// [`Store::set_checkpoint`], queued now (after what was queued before), with what
    /// awaits its commit.
    pub fn queue_checkpoint(&self, key: &str, value: &Value) -> Written<()> {
        self.queue_checkpoint_text(key, value.to_string())
    }

    /// [`Store::queue_checkpoint`] of a value already written as JSON text (taken, not
    /// copied: a large one is held once).
    pub fn queue_checkpoint_text(&self, key: &str, text: String) -> Written<()> {
        let key = key.to_string();
        self.write_queued(move |conn| put_row(conn, CHECKPOINTS, &key, &text))
    }

    /// What awaits the commit of every write queued before this call.
    pub fn barrier(&self) -> Written<()> {
        self.write_queued(|_| Ok(()))
    }

    /// The state a stage saved last, by node id (`pipeline.node`): its JSON text, as the
    /// stage wrote it (see `crate::node::Stage::snapshot`); the stage reads it.
    pub fn stage_state(&self, node: &str) -> Result<Option<String>, StoreError> {
        self.get_text(STAGE_STATE, node)
    }

    /// The length in bytes of a stage's saved state, without reading it.
    pub fn stage_state_len(&self, node: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT length(CAST(value AS BLOB)) FROM stage_state WHERE node = ?1",
                params![node],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|n| u64::try_from(n).unwrap_or(0)))
    }

    /// Saves a stage's state, its JSON text in pieces (one after the other), durably,
    /// replacing what was there. The pieces are written into the row in place (the row
    /// is made first, zeros of their length), so saving takes no memory beyond them: an
    /// inserted value is copied twice by SQLite, a 128 MiB state would take 256 MiB more.
    /// The value is stored as a BLOB of that text.
    pub fn set_stage_state(&self, node: &str, pieces: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let node = node.to_string();
        self.write(move |conn| put_in_place(conn, &node, &pieces))
    }

    /// Removes a stage's saved state.
    pub fn clear_stage_state(&self, node: &str) -> Result<(), StoreError> {
        let node = node.to_string();
        self.write(move |conn| {
            conn.execute("DELETE FROM stage_state WHERE node = ?1", params![node])?;
            Ok(())
        })
    }

    /// Removes the checkpoint under `key`.
    pub fn clear_checkpoint(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |conn| {
            conn.execute("DELETE FROM checkpoints WHERE key = ?1", params![key])?;
            Ok(())
        })
    }
}

/// Writes `text` in `table` under `key`, replacing what was there.
fn put_row(conn: &Connection, table: Table, key: &str, text: &str) -> Result<(), StoreError> {
    let (name, col) = (table.name, table.key);
    conn.prepare_cached(&format!(
        "INSERT INTO {name} ({col}, value) VALUES (?1, ?2)
         ON CONFLICT({col}) DO UPDATE SET value = excluded.value,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    ))?
    .execute(params![key, text])?;
    Ok(())
}

/// Writes `pieces` one after the other as the value of stage `node`'s state.
fn put_in_place(conn: &Connection, node: &str, pieces: &[Vec<u8>]) -> Result<(), StoreError> {
    let len: usize = pieces.iter().map(Vec::len).sum();
    let size = i64::try_from(len).unwrap_or(i64::MAX);
    // A zeroblob that is the last column of its row is made without its zeros in memory
    // (the table keeps `value` last: see `init`).
    conn.prepare_cached(
        "INSERT INTO stage_state (node, value) VALUES (?1, zeroblob(?2))
         ON CONFLICT(node) DO UPDATE SET value = excluded.value,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )?
    .execute(params![node, size])?;
    let row: i64 = conn
        .prepare_cached("SELECT rowid FROM stage_state WHERE node = ?1")?
        .query_row(params![node], |r| r.get(0))?;
    let mut blob = conn.blob_open(MAIN_DB, c"stage_state", c"value", row, false)?;
    let mut at = 0;
    for piece in pieces {
        blob.write_at(piece, at)?;
        at += piece.len();
    }
    Ok(())
}

/// Makes the tables (and adds the columns of later versions) on `conn`.
/// How long opening the database waits for another process that holds it.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn init(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    // Another process (a running vigil, a `vigil outbox` command) may hold the database.
    conn.busy_timeout(BUSY_WAIT)?;
    // Two processes switching a new database to WAL at once: one is told "locked" at once,
    // without the busy wait. It tries again until the other is done.
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < BUSY_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other?,
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS checkpoints (
                 key        TEXT PRIMARY KEY,
                 value      TEXT NOT NULL,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );
             CREATE TABLE IF NOT EXISTS stage_state (
                 node       TEXT PRIMARY KEY,
                 updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 value      TEXT NOT NULL
             );",
    )?;
    value_last_in_stage_state(conn)?;
    // Columns added since a table was first made (databases of earlier versions).
    for (table, column, decl) in [
        ("outbox", "notify", "TEXT"),
        ("alerts", "status", "TEXT NOT NULL DEFAULT 'firing'"),
        ("alerts", "first_seen", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        add_column(conn, table, column, decl)?;
    }
    conn.execute_batch(super::outbox::SCHEMA)?;
    conn.execute_batch(super::notify::SCHEMA)?;
    conn.execute_batch(super::history::SCHEMA)?;
    conn.execute_batch(super::bans::SCHEMA)?;
    super::history::init_tally(conn)?;
    Ok(())
}

/// Moves `value` to the end of `stage_state`'s rows in a database of an earlier version
/// (where `updated_at` came after it), so that a state can be written in place (see
/// [`put_in_place`]): the table is made again with the rows copied, once.
fn value_last_in_stage_state(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA table_info(stage_state)")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    if columns.last().is_none_or(|c| c == "value") {
        return Ok(());
    }
    conn.execute_batch(
        "SAVEPOINT stage_state_value_last;
         CREATE TABLE stage_state_value_last (
             node       TEXT PRIMARY KEY,
             updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
             value      TEXT NOT NULL
         );
         INSERT INTO stage_state_value_last (node, updated_at, value)
             SELECT node, updated_at, value FROM stage_state;
         DROP TABLE stage_state;
         ALTER TABLE stage_state_value_last RENAME TO stage_state;
         RELEASE stage_state_value_last;",
    )
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

    /// A reader (the API's history, `/metrics`' counts) answers while the writer is in
    /// the middle of a transaction, and sees what was committed before, not what is not.
    #[test]
    fn readers_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_checkpoint("a", &json!(1)).unwrap();
        let (inside, entered) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        store
            .write_later(
                move |conn| {
                    put_row(conn, CHECKPOINTS, "a", "2")?;
                    let _ = inside.send(());
                    let _ = released.recv_timeout(std::time::Duration::from_secs(30));
                    Ok(())
                },
                |r| r.unwrap(),
            )
            .unwrap();
        entered.recv().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = tx.send((
                    store.alert_counts(),
                    store.outbox_counts(),
                    store.checkpoint("a"),
                ));
            });
            let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
            let _ = release.send(());
            let (alerts, outbox, a) = answer.expect("the reader answered while the writer held");
            assert!(alerts.unwrap().is_empty());
            assert!(outbox.unwrap().iter().all(|(_, n)| *n == 0));
            assert_eq!(a.unwrap(), Some(json!(1)), "only what was committed");
        });
        store.flush().unwrap();
        assert_eq!(store.checkpoint("a").unwrap(), Some(json!(2)));
    }

    /// Writes queued at the same moment share a transaction; one that fails is undone
    /// alone and its caller hears why; the others are kept.
    #[test]
    fn writes_share_transactions_and_a_failing_one_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        // Hold the writer so that what follows queues up behind it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        store
            .write_later(
                move |_| {
                    let _ = released.recv_timeout(std::time::Duration::from_secs(30));
                    Ok(())
                },
                |_| {},
            )
            .unwrap();
        let before = store.writer_counts().commits;
        let (done, outcomes) = std::sync::mpsc::channel();
        for i in 0..100 {
            let done = done.clone();
            store
                .write_later(
                    move |conn| {
                        put_row(conn, CHECKPOINTS, &format!("k{i}"), "1")?;
                        if i == 50 {
                            conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                        }
                        Ok(())
                    },
                    move |r| {
                        let _ = done.send((i, r.is_ok()));
                    },
                )
                .unwrap();
        }
        let _ = release.send(());
        let mut failed = Vec::new();
        for _ in 0..100 {
            let (i, ok) = outcomes.recv().unwrap();
            if !ok {
                failed.push(i);
            }
        }
        assert_eq!(failed, vec![50]);
        let commits = store.writer_counts().commits - before;
        assert!(
            commits <= 2,
            "{commits} transactions for 100 writes queued together"
        );
        assert_eq!(store.checkpoint("k49").unwrap(), Some(json!(1)));
        assert_eq!(
            store.checkpoint("k50").unwrap(),
            None,
            "the failed write is undone"
        );
        assert_eq!(store.checkpoint("k51").unwrap(), Some(json!(1)));
    }

    /// What was queued without waiting is on disk once the store is dropped.
    #[test]
    fn queued_writes_are_written_before_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 0..1000 {
                // Not awaited: the store's closing writes it.
                drop(store.queue_checkpoint("pos", &json!(i)));
            }
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint("pos").unwrap(), Some(json!(999)));
    }

    /// An async caller waits for its write without holding its worker: a runtime with
    /// one thread goes on with other tasks meanwhile.
    #[tokio::test]
    async fn an_async_write_does_not_hold_the_runtime() {
        let store = std::sync::Arc::new(Store::in_memory().unwrap());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_queued(move |conn| {
                        // Released only if the runtime went on meanwhile.
                        released
                            .recv_timeout(std::time::Duration::from_secs(30))
                            .map_err(|_| StoreError::Write("never released".into()))?;
                        put_row(conn, CHECKPOINTS, "slow", "1")
                    })
                    .await
            })
        };
        // This task runs while the write above waits.
        tokio::task::yield_now().await;
        let _ = release.send(());
        slow.await.unwrap().unwrap();
        assert_eq!(store.checkpoint("slow").unwrap(), Some(json!(1)));
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

    /// A stage's state written in pieces reads back as its text, across a restart, and
    /// a shorter one replaces it whole.
    #[test]
    fn a_stage_state_written_in_pieces_reads_back_as_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{{\"keys\":\"{}é\"}}", "k".repeat(100_000));
        let bytes = text.as_bytes();
        // A piece ends inside the two bytes of `é`.
        let pieces = vec![
            bytes[..7].to_vec(),
            bytes[7..100_009].to_vec(),
            bytes[100_009..].to_vec(),
        ];
        {
            let store = Store::open(dir.path()).unwrap();
            store.set_stage_state("p.s", pieces).unwrap();
            assert_eq!(
                store.stage_state("p.s").unwrap().as_deref(),
                Some(text.as_str())
            );
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.stage_state("p.s").unwrap().as_deref(),
            Some(text.as_str())
        );
        assert_eq!(
            store.stage_state_len("p.s").unwrap(),
            Some(bytes.len() as u64)
        );
        store.set_stage_state("p.s", vec![b"{}".to_vec()]).unwrap();
        assert_eq!(store.stage_state_len("p.s").unwrap(), Some(2));
        assert_eq!(store.stage_state_len("p.other").unwrap(), None);
        assert_eq!(store.stage_state("p.s").unwrap().as_deref(), Some("{}"));
        assert_eq!(store.stage_state("p.other").unwrap(), None);
    }

    /// A database of an earlier version (`value` before `updated_at`) keeps its stages'
    /// states, and takes new ones written in place.
    #[test]
    fn stage_states_of_an_earlier_version_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE stage_state (
                     node       TEXT PRIMARY KEY,
                     value      TEXT NOT NULL,
                     updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                 );
                 INSERT INTO stage_state (node, value) VALUES ('p.old', '{\"shape\":1}');",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.stage_state("p.old").unwrap().as_deref(),
            Some("{\"shape\":1}")
        );
        store
            .set_stage_state("p.new", vec![b"{\"shape\":2}".to_vec()])
            .unwrap();
        assert_eq!(
            store.stage_state("p.new").unwrap().as_deref(),
            Some("{\"shape\":2}")
        );
        drop(store);
        // Opened again, nothing is moved twice.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.stage_state("p.old").unwrap().as_deref(),
            Some("{\"shape\":1}")
        );
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
