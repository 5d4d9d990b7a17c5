//! The accept loop: connections are counted, bounded and timed out before any request is
//! read, let alone authenticated.
//!
//! Why: with `axum::serve` a connection that sends nothing stays open for ever. A few
//! hundred of them (no token needed) used every file descriptor the process may open (a
//! soft `RLIMIT_NOFILE` of 256 or 1024 is common); `accept` then failed with `EMFILE`,
//! axum's loop slept a second and tried again, for ever, and even `/healthz` went dark.
//! Here:
//!
//! - at most `web.max_connections` are open: one more is accepted and closed at once
//!   (counted), so the listener's queue never fills;
//! - the soft open-file limit is raised (up to the hard one) to fit those connections and
//!   what the rest of vigil opens, and the bound lowered when it cannot be;
//! - a client must send a request's headers within `web.header_read_timeout` of
//!   connecting or of its previous answer (hyper's header timer: slow clients and idle
//!   kept-alive connections are closed);
//! - a connection with no byte going either way for `web.idle_timeout` is closed (a
//!   client that stopped reading);
//! - an `accept` that still fails (descriptors used elsewhere) is counted and retried
//!   after [`ACCEPT_BACKOFF`], not a second.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::stats::{Refusal, WebStats};

/// How long the loop waits after an `accept` that failed for want of resources.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// File descriptors left for the rest of vigil (the database, files, outgoing
/// connections) when the limit bounds the connections.
const RESERVED_FDS: u64 = 256;

/// How long connections get to finish their answers at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What bounds the connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Open at once.
    pub(super) max_connections: usize,
    /// To send a request's line and headers.
    pub(super) header_read_timeout: Duration,
    /// With nothing going either way.
    pub(super) idle_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then lets the open connections finish
/// their answers for a moment.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<WebStats>,
    shutdown: CancellationToken,
) {
    let max = u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .min(Semaphore::MAX_PERMITS as u32);
    let slots = Arc::new(Semaphore::new(max as usize));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                stats.accept_failed(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refuse(Refusal::MaxConnections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, stats, shutdown) = (app.clone(), stats.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _open = stats.opened();
            connection(stream, app, limits, &stats, shutdown).await;
            drop(slot);
        });
    }
    // Every slot back: every connection ended.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(max)).await;
}

/// One connection, until it ends, times out, or the server shuts down.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    stats: &WebStats,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    if e.is_timeout() {
                        stats.refuse(Refusal::HeaderTimeout);
                    } else {
                        tracing::debug!(error = %e, "web: connection ended");
                    }
                }
                return;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                stats.refuse(Refusal::IdleTimeout);
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Accept errors that concern one connection only.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// When a connection last moved a byte.
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Returns once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records when bytes last went through it.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Makes room for `connections` open at once: raises the soft open-file limit (up to the
/// hard one) to fit them and [`RESERVED_FDS`] more; returns how many fit (fewer when the
/// hard limit is too low, with a warning saying what to change).
pub(super) fn room_for(connections: usize) -> usize {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return connections;
        };
        let want = u64::try_from(connections)
            .unwrap_or(u64::MAX)
            .saturating_add(RESERVED_FDS);
        let mut limit = soft;
        if soft < want {
            let raised = want.min(hard);
            match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
                Ok(()) => {
                    tracing::info!(from = soft, to = raised, "web: raised the open-file limit");
                    limit = raised;
                }
                Err(e) => {
                    tracing::warn!(error = %e, limit = soft, "web: cannot raise the open-file limit");
                }
            }
        }
        let fit = usize::try_from(limit.saturating_sub(RESERVED_FDS).max(limit / 2))
            .unwrap_or(usize::MAX)
            .max(1);
        if fit < connections {
            tracing::warn!(
                max_connections = connections,
                serving = fit,
                open_file_limit = limit,
                "web: the open-file limit leaves room for fewer connections than web.max_connections: raise it (LimitNOFILE= in the systemd unit, `ulimit -n`) or lower web.max_connections"
            );
        }
        connections.min(fit)
    }
    #[cfg(not(unix))]
    {
        connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte moved half-way through restarts the wait (lower bounds only: the machine
    /// may be slow, never fast).
    #[tokio::test]
    async fn idleness_is_measured_from_the_last_byte() {
        let a = Arc::new(Activity::new());
        let started = tokio::time::Instant::now();
        let b = a.clone();
        let toucher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.touch();
        });
        a.idle_for(Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        toucher.await.expect("touched");
    }

    #[test]
    fn room_is_made_for_the_connections() {
        let n = room_for(64);
        assert!((1..=64).contains(&n), "{n}");
    }
}
