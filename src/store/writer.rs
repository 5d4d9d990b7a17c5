//! The store's one writing thread.
//!
//! Every write to the state database is a *job* sent over a channel to a thread that owns
//! the writing connection. The thread takes every job waiting (up to [`MAX_BATCH`]) into
//! one transaction — one write to disk for all of them, however many nodes wrote at the
//! same moment — each job in a savepoint of its own, so one that fails is rolled back
//! alone and the others are kept. A job's outcome is handed back only once its
//! transaction is committed: what a caller is told is written is on disk.
//!
//! Callers wait in one of three ways: [`Writer::run`] blocks the calling thread (the
//! command line, start-up, threads of their own), [`Writer::queue`] queues at once and
//! hands back a [`Written`] to await (without holding an async worker), and
//! [`Writer::submit`] does not wait at all (the alert
//! history, a source's position: the outcome is logged). At most [`MAX_QUEUED`] jobs wait
//! at once; past that, writers wait for room (counted in [`Writer::waited_for_room`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::StoreError;

/// The most jobs in one transaction.
pub const MAX_BATCH: usize = 512;

/// The most jobs waiting for the writer at once.
pub const MAX_QUEUED: usize = 4096;

/// What the thread calls once a job's transaction is over: with `None` when it was
/// committed, with why when it was not.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// A job: runs on the writing connection inside a savepoint (or, given `None`, does not
/// run: its transaction could not begin); `true` when it succeeded (its changes are
/// kept), with what to call once the transaction is over.
type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

struct Job {
    work: Work,
    /// Room in the queue, given back when the job is done.
    _permit: OwnedSemaphorePermit,
}

/// The handle to the writing thread.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    room: Arc<Semaphore>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// What the writer did, for `/metrics` (read as [`WriterCounts`]).
#[derive(Debug, Default)]
struct Stats {
    /// Jobs queued and not done yet.
    pub queued: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Jobs run.
    pub jobs: AtomicU64,
    /// Jobs that failed (rolled back alone).
    pub failed: AtomicU64,
    /// Transactions that could not be committed (every job in them failed).
    pub failed_commits: AtomicU64,
    /// Times a writer waited because [`MAX_QUEUED`] jobs were queued.
    pub waited_for_room: AtomicU64,
}

/// [`Stats`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Writes queued and not done yet.
    pub queued: u64,
    /// Transactions committed (or tried).
    pub commits: u64,
    /// Writes done.
    pub jobs: u64,
    /// Writes that failed (each undone alone).
    pub failed: u64,
    /// Transactions that could not be committed.
    pub failed_commits: u64,
    /// Times a writer waited for room in the queue.
    pub waited_for_room: u64,
}

impl Writer {
    /// Starts the thread, which writes with `conn` from now on (holding its lock for each
    /// transaction: a database in memory shares its one connection with its readers).
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(Stats::default());
        let thread = std::thread::Builder::new()
            .name("vigil-store".into())
            .spawn({
                let stats = stats.clone();
                move || write_loop(conn, &rx, &stats)
            })
            .map_err(|e| StoreError::Write(format!("cannot start the writing thread: {e}")))?;
        Ok(Writer {
            jobs: Some(tx),
            room: Arc::new(Semaphore::new(MAX_QUEUED)),
            thread: Some(thread),
            stats,
        })
    }

    fn permit_now(&self) -> Option<OwnedSemaphorePermit> {
        self.room.clone().try_acquire_owned().ok()
    }

    fn permit_blocking(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        if let Some(p) = self.permit_now() {
            return Ok(p);
        }
        self.stats.waited_for_room.fetch_add(1, Ordering::Relaxed);
        futures::executor::block_on(self.room.clone().acquire_owned()).map_err(|_| stopped())
    }

    fn send(&self, permit: OwnedSemaphorePermit, work: Work) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        jobs.send(Job {
            work,
            _permit: permit,
        })
        .map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            stopped()
        })
    }

    /// A copy of the counters.
    pub(super) fn snapshot(&self) -> WriterCounts {
        let s = &self.stats;
        WriterCounts {
            queued: s.queued.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            jobs: s.jobs.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
            waited_for_room: s.waited_for_room.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` in the writer's next transaction and waits (blocking this thread) until
    /// that transaction is committed.
    pub(super) fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let permit = self.permit_blocking()?;
        self.send(
            permit,
            work(f, move |r| {
                let _ = tx.send(r);
            }),
        )?;
        rx.recv().map_err(|_| stopped())?
    }

    /// Queues `f` now (waiting only while the queue is full) and returns what awaits its
    /// commit: jobs run in the order they were queued, so a caller can queue under its
    /// own lock and await once it has let go of it.
    pub(super) fn queue<R, F>(&self, f: F) -> Written<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.permit_blocking().and_then(|permit| {
            self.send(
                permit,
                work(f, move |r| {
                    let _ = tx.send(r);
                }),
            )
        });
        match queued {
            Ok(()) => Written(WrittenInner::Queued(rx)),
            Err(e) => Written(WrittenInner::NotQueued(Some(e))),
        }
    }

    /// Queues `f` without waiting; `done` is called on the writing thread with its
    /// outcome once its transaction is over. Waits only when the queue is full.
    pub(super) fn submit<F>(
        &self,
        f: F,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let permit = self.permit_blocking()?;
        self.send(permit, work(f, done))
    }
}

impl Drop for Writer {
    /// Lets the thread write what is queued, and waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A queued write: resolves once its transaction is over, with its outcome (at once,
/// with why, when it could not be queued).
#[derive(Debug)]
#[must_use = "a write is only known to be on disk once this resolves"]
pub struct Written<R>(WrittenInner<R>);

#[derive(Debug)]
enum WrittenInner<R> {
    Queued(tokio::sync::oneshot::Receiver<Result<R, StoreError>>),
    NotQueued(Option<StoreError>),
}

impl<R> Future for Written<R> {
    type Output = Result<R, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            WrittenInner::Queued(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(stopped()))),
            WrittenInner::NotQueued(e) => {
                std::task::Poll::Ready(Err(e.take().unwrap_or_else(stopped)))
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Write("the state database's writer has stopped".into())
}

/// A job running `f`, whose outcome goes to `reply` once the transaction is over.
fn work<R, F>(f: F, reply: impl FnOnce(Result<R, StoreError>) + Send + 'static) -> Work
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
{
    Box::new(move |conn| {
        let result = conn.map(f);
        let ok = matches!(result, Some(Ok(_)));
        let finish: Finish = Box::new(move |failed_commit| {
            reply(match (result, failed_commit) {
                (Some(Err(e)), _) => Err(e),
                (Some(Ok(r)), None) => Ok(r),
                (_, why) => Err(StoreError::Write(
                    why.unwrap_or("the write was not made").to_string(),
                )),
            })
        });
        (ok, finish)
    })
}

fn write_loop(conn: Arc<Mutex<Connection>>, jobs: &mpsc::Receiver<Job>, stats: &Stats) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut finish: Vec<Finish> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let outcome = {
            // A panic while holding the lock cannot leave a transaction open (it is rolled
            // back as it unwinds), so a poisoned lock is still usable.
            let mut conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            run_batch(&mut conn, batch.drain(..), &mut finish, stats)
        };
        stats.commits.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &outcome {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, jobs = finish.len(), "cannot write to the state database");
        }
        let why = outcome
            .err()
            .map(|e| format!("cannot write to the state database: {e}"));
        for f in finish.drain(..) {
            f(why.as_deref());
        }
    }
}

/// Runs `jobs` in one transaction, each in a savepoint; what to call for each, once the
/// transaction is over, is put in `finish` (for every job, whether it ran or not).
fn run_batch(
    conn: &mut Connection,
    mut jobs: std::vec::Drain<'_, Job>,
    finish: &mut Vec<Finish>,
    stats: &Stats,
) -> Result<(), rusqlite::Error> {
    let outcome = (|| {
        let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for job in jobs.by_ref() {
            let mut sp = match tx.savepoint() {
                Ok(sp) => sp,
                Err(e) => {
                    finish.push((job.work)(None).1);
                    return Err(e);
                }
            };
            let (ok, f) = (job.work)(Some(&sp));
            finish.push(f);
            if ok {
                sp.commit()?;
            } else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                sp.rollback()?;
            }
        }
        tx.commit()
    })();
    // Jobs left when the transaction failed part-way did not run.
    for job in jobs {
        finish.push((job.work)(None).1);
    }
    outcome
}
