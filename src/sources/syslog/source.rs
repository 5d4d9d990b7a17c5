//! The running `syslog` source.
//!
//! One task accepts connections (or reads datagrams); one task per connection reads and
//! frames. Frames travel to the source's own task in chunks (one per read) over a bounded
//! channel; that task parses the envelopes, decodes and hands events on. A connection
//! task awaits its chunk's place in the channel before it reads again, and the source's
//! task awaits the pipeline before it takes more from the channel: while the pipeline is
//! full, nothing is read from TCP or TLS senders and their kernel windows close. UDP has
//! no such brake: a datagram that finds the channel full is dropped and counted
//! (`try_send`, never a wait: one slow pipeline must not stall the socket).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use super::config::{Mode, SyslogSourceConfig};
use super::decode::{self, Decoder, Message};
use super::framing::{Frame, Framer, Framing};
use crate::event::{Event, Timestamp};
use crate::node::internal_event::{
    InternalEvent, SyslogConnectionLimit, SyslogDatagramDropped, SyslogPeerRefused,
};
use crate::node::{BuildContext, NodeCounters, NodeResult, Source, SourceContext};
use crate::sources::json_lines::set_aside;
use crate::sources::send_batches;
use crate::store::rejected::{RejectedLog, RejectedRecord};
use crate::time::SharedClock;

/// Chunks waiting between the connection tasks and the source's task (each at most one
/// read of [`READ_SIZE`] bytes, or one datagram).
const CHANNEL_CHUNKS: usize = 64;
/// The most bytes one read takes from a connection.
const READ_SIZE: usize = 64 * 1024;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the source tries to bind its address while it is in use (the source it
/// replaces on a reload may still be letting go of it).
const BIND_PATIENCE: Duration = Duration::from_secs(10);
/// The set-aside record keeps this much of a frame.
const RAW_KEPT: usize = 64 * 1024;

/// Frames from one sender, read at one time.
struct Chunk {
    peer: SocketAddr,
    received: Timestamp,
    frames: Vec<Frame>,
}

/// What the listening tasks share.
struct Shared {
    id: Arc<str>,
    framing: Framing,
    max_length: usize,
    allow: Vec<IpNet>,
    counters: Arc<NodeCounters>,
    clock: SharedClock,
}

impl Shared {
    fn allowed(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Receives syslog messages.
pub struct SyslogSource {
    id: Arc<str>,
    mode: Mode,
    address: SocketAddr,
    framing: Framing,
    max_length: usize,
    allow: Vec<IpNet>,
    tls: Option<Arc<ServerConfig>>,
    connection_limit: usize,
    decoder: Box<dyn Decoder>,
    rejected: RejectedLog,
    clock: SharedClock,
}

impl std::fmt::Debug for SyslogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSource")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl SyslogSource {
    pub(super) fn new(
        cfg: &SyslogSourceConfig,
        address: SocketAddr,
        allow: Vec<IpNet>,
        tls: Option<Arc<ServerConfig>>,
        decoder: Box<dyn Decoder>,
        cx: &BuildContext,
    ) -> Self {
        SyslogSource {
            id: cx.id.clone(),
            mode: cfg.mode,
            address,
            framing: cfg.framing,
            max_length: cfg.max_length.max(1),
            allow,
            tls,
            connection_limit: cfg.connection_limit.max(1),
            decoder,
            rejected: RejectedLog::new(&cx.state_dir, &cx.id, cx.rejected_max_bytes),
            clock: cx.clock.clone(),
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            framing: self.framing,
            max_length: self.max_length,
            allow: std::mem::take(&mut self.allow),
            counters: cx.counters().clone(),
            clock: self.clock.clone(),
        });
        let (tx, mut rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
        let mut tasks = JoinSet::new();
        match self.mode {
            Mode::Tcp | Mode::Tls => {
                let Some(listener) =
                    bind(cx, self.address, |a| Box::pin(TcpListener::bind(a))).await?
                else {
                    return Ok(());
                };
                let bound = listener.local_addr().map_or(self.address, |a| a);
                tracing::info!(source = %self.id, address = %bound, mode = ?self.mode, "syslog listening");
                let acceptor = self.tls.take().map(TlsAcceptor::from);
                tasks.spawn(accept(
                    listener,
                    acceptor,
                    self.connection_limit,
                    shared.clone(),
                    tx,
                ));
            }
            Mode::Udp => {
                let Some(socket) = bind(cx, self.address, |a| Box::pin(UdpSocket::bind(a))).await?
                else {
                    return Ok(());
                };
                let bound = socket.local_addr().map_or(self.address, |a| a);
                tracing::info!(source = %self.id, address = %bound, mode = ?self.mode, "syslog listening");
                tasks.spawn(datagrams(socket, shared.clone(), tx));
            }
        }
        let mut events: Vec<Event> = Vec::new();
        let mut rejected: Vec<RejectedRecord> = Vec::new();
        loop {
            let Some(Some(chunk)) = cx.wait(rx.recv()).await else {
                break;
            };
            self.handle(chunk, &mut events, &mut rejected);
            while events.len() < cx.batch_size {
                match rx.try_recv() {
                    Ok(chunk) => self.handle(chunk, &mut events, &mut rejected),
                    Err(_) => break,
                }
            }
            if !rejected.is_empty() {
                set_aside(
                    &mut self.rejected,
                    cx.counters(),
                    std::mem::take(&mut rejected),
                );
            }
            if !events.is_empty() {
                let batch: Vec<Arc<Event>> = events.drain(..).map(Arc::new).collect();
                if !send_batches(cx, batch).await {
                    break;
                }
            }
            if cx.is_shutting_down() {
                break;
            }
        }
        // Closes the listener and every connection before the source counts as stopped,
        // so the source that replaces it on a reload can bind the address.
        drop(rx);
        tasks.shutdown().await;
        Ok(())
    }

    /// Parses and decodes the frames of one chunk.
    fn handle(
        &mut self,
        chunk: Chunk,
        events: &mut Vec<Event>,
        rejected: &mut Vec<RejectedRecord>,
    ) {
        let peer = chunk.peer;
        for frame in chunk.frames {
            let (bytes, reason) = match frame {
                Frame::Message(b) => match self.decode(&b, peer, chunk.received, events) {
                    Ok(()) => continue,
                    Err(reason) => (b, reason),
                },
                Frame::Oversize(head) => (
                    head,
                    format!(
                        "longer than max_length ({} bytes); discarded",
                        self.max_length
                    ),
                ),
                Frame::Malformed(head) => (
                    head,
                    "not a syslog frame (octet counting expects `LENGTH SPACE MESSAGE`)"
                        .to_string(),
                ),
            };
            let kept = &bytes[..bytes.len().min(RAW_KEPT)];
            rejected.push(RejectedRecord {
                time: chunk.received,
                source: self.id.to_string(),
                location: Some(peer.to_string()),
                line: None,
                reason,
                raw: String::from_utf8_lossy(kept).into_owned(),
            });
        }
    }

    fn decode(
        &mut self,
        frame: &Bytes,
        peer: SocketAddr,
        received: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        // Bytes that are not UTF-8 are replaced (U+FFFD), not refused: the message still
        // arrives, and the replacement shows where.
        let text = match std::str::from_utf8(frame) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(frame),
        };
        let Some(parsed) = decode::parse(&text, received) else {
            return Err("not a syslog message (RFC 5424 or RFC 3164)".into());
        };
        let msg = Message {
            peer,
            raw: frame,
            parsed: &parsed,
            received,
            source: &self.id,
        };
        self.decoder.decode(&msg, events).map_err(|e| e.to_string())
    }
}

impl Source for SyslogSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}

/// Binds `address`, trying again for up to [`BIND_PATIENCE`] while it is in use. `None`:
/// a shutdown came first.
async fn bind<T>(
    cx: &mut SourceContext,
    address: SocketAddr,
    bind: impl Fn(SocketAddr) -> BoxFuture<'static, std::io::Result<T>>,
) -> Result<Option<T>, crate::node::NodeError> {
    let started = std::time::Instant::now();
    loop {
        match bind(address).await {
            Ok(s) => return Ok(Some(s)),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < BIND_PATIENCE =>
            {
                if !cx.sleep(Duration::from_millis(100)).await {
                    return Ok(None);
                }
            }
            Err(e) => {
                return Err(format!("cannot listen on {address}: {e} (is another program using the port, or is the address not one of this machine's?)").into());
            }
        }
    }
}

/// Accepts connections until the source stops.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: usize,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Chunk>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(source = %shared.id, error = %e, "cannot accept a syslog connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !shared.allowed(&peer) {
            SyslogPeerRefused {
                source: &shared.id,
                peer,
            }
            .emit(&shared.counters);
            drop(stream);
            continue;
        }
        if open.load(Ordering::Acquire) >= limit {
            SyslogConnectionLimit {
                source: &shared.id,
                peer,
                limit,
            }
            .emit(&shared.counters);
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(open.clone());
        let shared = shared.clone();
        let tx = tx.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _guard = guard;
            let _ = stream.set_nodelay(true);
            match tls {
                None => read_frames(stream, peer, &shared, &tx).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => read_frames(s, peer, &shared, &tx).await,
                        Ok(Err(e)) => {
                            tracing::debug!(source = %shared.id, %peer, error = %e, "syslog TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(source = %shared.id, %peer, "syslog TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one connection until it ends (or the source stops), sending its frames on.
async fn read_frames<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
    tx: &mpsc::Sender<Chunk>,
) {
    let mut framer = Framer::new(shared.framing, shared.max_length);
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        buf.reserve(READ_SIZE);
        let n = match stream.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(source = %shared.id, %peer, error = %e, "syslog connection failed");
                0
            }
        };
        let mut frames = Vec::new();
        if n == 0 {
            while let Some(f) = framer.decode_eof(&mut buf) {
                frames.push(f);
            }
        } else {
            while let Some(f) = framer.decode(&mut buf) {
                frames.push(f);
            }
        }
        if !frames.is_empty() {
            let chunk = Chunk {
                peer,
                received: shared.clock.now(),
                frames,
            };
            // Waits while the pipeline is full: the connection is not read meanwhile.
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Reads datagrams until the source stops: one message each.
async fn datagrams(socket: UdpSocket, shared: Arc<Shared>, tx: mpsc::Sender<Chunk>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(source = %shared.id, error = %e, "syslog datagram not received");
                continue;
            }
        };
        if !shared.allowed(&peer) {
            SyslogPeerRefused {
                source: &shared.id,
                peer,
            }
            .emit(&shared.counters);
            continue;
        }
        let mut data = &buf[..n];
        while let Some((b'\n' | b'\r' | 0, rest)) = data.split_last() {
            data = rest;
        }
        if data.is_empty() {
            continue;
        }
        let frame = if data.len() > shared.max_length {
            Frame::Oversize(Bytes::copy_from_slice(&data[..shared.max_length.min(256)]))
        } else {
            Frame::Message(Bytes::copy_from_slice(data))
        };
        let chunk = Chunk {
            peer,
            received: shared.clock.now(),
            frames: vec![frame],
        };
        match tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                SyslogDatagramDropped { source: &shared.id }.emit(&shared.counters);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
