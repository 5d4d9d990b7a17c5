//! The running `file` source.
//!
//! Every batch handed on carries an acknowledgement; once every batch up to a line is
//! done with, the position after that line (with the file's device, inode and first bytes)
//! is saved in the state database — queued for the store's writer as each batch is done
//! with (written within milliseconds, together with what else is written then), and when
//! the source stops, after waiting for what it handed on, written before it ends. A
//! restart, or a reload that rebuilds the source, goes on from there: nothing is read
//! twice but what was done with after the last write (a kill -9 in the middle of it),
//! nothing is skipped. With the settings' `keep_state: false` (replaying a
//! fixed file) every run reads the file as new.

use std::collections::VecDeque;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::config::{FileSourceConfig, StartAt};
use crate::event::{BatchAck, FieldPath, ack_pair};
use crate::node::{BuildContext, NodeError, NodeResult, Source, SourceContext};
use crate::sources::json_lines::{Decoded, JsonLinesDecoder, Position, Read, settle};
use crate::sources::send_batches;
use crate::store::rejected::RejectedLog;

const READ_CHUNK: usize = 256 * 1024;

/// How long a stopping source waits for what it handed on before it saves its position.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The most lines handed on under one acknowledgement (sent as messages of the
/// settings' `batch_size`): the next are handed on once these are done with and the
/// position after them is on disk, so a kill -9 makes the next run read again at most
/// this many.
const ACK_LINES: usize = 2048;

/// How long a source waits before reading again lines that were not delivered.
const REWIND_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// How many of a file's first bytes tell it apart from another on a reused inode.
const HEAD_BYTES: usize = 64;

/// Which file is being read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opened {
    /// Device and inode.
    identity: (u64, u64),
    /// Its first bytes (up to [`HEAD_BYTES`]) when it was opened, hex.
    head: String,
}

/// What the source saves: where to go on after a restart or a rebuild.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FileCheckpoint {
    path: PathBuf,
    dev: u64,
    ino: u64,
    head: String,
    offset: u64,
    line: u64,
}

/// A batch handed on: the file and the position after its lines, and its
/// acknowledgement (none for lines that were all set aside).
#[derive(Debug)]
struct Unacked {
    file: Arc<Opened>,
    end: Position,
    ack: Option<BatchAck>,
    /// An event of the batch could not be delivered: its lines are read again.
    failed: bool,
}

/// What the reading loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Go on.
    Go,
    /// Stop reading.
    Stop,
    /// Read again from this offset.
    ReadFrom(u64),
}

/// What happened to a batch handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on reading.
    Go,
    /// The source is stopping.
    Stop,
    /// A batch was not delivered: read again from the position after the last one that
    /// was.
    Rewind,
}

/// Reads a JSON-lines file.
#[derive(Debug)]
pub struct FileSource {
    cfg: FileSourceConfig,
    time_field: Option<FieldPath>,
    rejected: RejectedLog,
    /// The node's id: the key of its saved position.
    id: Arc<str>,
    /// Whether the position is saved and restored (settings `keep_state`).
    keep: bool,
    store: Arc<crate::store::Store>,
    /// The file being read.
    current: Option<Arc<Opened>>,
    unacked: VecDeque<Unacked>,
    /// The position every batch up to which is done with.
    done: Option<(Arc<Opened>, Position)>,
    /// The position saved last.
    saved: Option<(Arc<Opened>, Position)>,
    /// Saves queued and not known to be on disk yet, oldest first.
    saving: VecDeque<crate::store::writer::Written<()>>,
    /// Where reading the current file began (its start, its end, or the restored
    /// position).
    began: Position,
    /// Where `vigil.tetragon_dropping` goes (`decode: tetragon`).
    internal: crate::sources::internal::InternalAlerts,
}

/// Errors that stop a `file` source.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl FileSource {
    pub(super) fn new(
        cfg: FileSourceConfig,
        time_field: Option<FieldPath>,
        cx: &BuildContext,
        internal: crate::sources::internal::InternalAlerts,
    ) -> Self {
        let rejected = RejectedLog::new(&cx.state_dir, &cx.id, cx.rejected_max_bytes);
        FileSource {
            cfg,
            time_field,
            rejected,
            id: cx.id.clone(),
            keep: cx.keep_state,
            store: cx.store.clone(),
            current: None,
            unacked: VecDeque::new(),
            done: None,
            saved: None,
            saving: VecDeque::new(),
            began: Position::default(),
            internal,
        }
    }

    fn io(&self, source: std::io::Error) -> FileSourceError {
        FileSourceError::Io {
            path: self.cfg.path.clone(),
            source,
        }
    }

    async fn hand_on(&mut self, cx: &mut SourceContext, mut decoded: Decoded) -> Flow {
        let location = self.cfg.path.display().to_string();
        let read = Read {
            source: &self.id,
            format: self.cfg.decode,
            location: &location,
        };
        settle(
            &mut decoded,
            read,
            &self.internal,
            &mut self.rejected,
            cx.counters(),
        );
        let (Some(end), Some(file), true) = (decoded.end, self.current.clone(), self.keep) else {
            return if send_batches(cx, decoded.events).await {
                Flow::Go
            } else {
                Flow::Stop
            };
        };
        // One batch of up to ACK_LINES at a time, each handed on only once the position
        // after the one before is on disk: a kill -9 makes the next run read again at
        // most the batch that was on its way.
        let mut events = decoded.events.into_iter().zip(decoded.ends).peekable();
        let mut sent = false;
        while events.peek().is_some() {
            let flow = self.wait_for_the_last(cx).await;
            if flow != Flow::Go {
                return flow;
            }
            let (guard, ack) = ack_pair();
            let mut batch = Vec::with_capacity(ACK_LINES.min(events.len()));
            let mut batch_end = end;
            for (mut event, at) in events.by_ref().take(ACK_LINES) {
                if let Some(e) = Arc::get_mut(&mut event) {
                    e.set_ack(&guard);
                }
                batch.push(event);
                batch_end = at;
            }
            drop(guard);
            if events.peek().is_none() {
                // The last batch also covers the blank and set-aside lines after it.
                batch_end = end;
            }
            if !send_batches(cx, batch).await {
                return Flow::Stop;
            }
            sent = true;
            self.unacked.push_back(Unacked {
                file: file.clone(),
                end: batch_end,
                ack: Some(ack),
                failed: false,
            });
        }
        if !sent {
            // Nothing handed on (every line blank or set aside): the position moves on
            // once what was handed on before is done with.
            self.unacked.push_back(Unacked {
                file,
                end,
                ack: None,
                failed: false,
            });
        }
        self.settle();
        Flow::Go
    }

    /// Waits until what was handed on last is done with and the position after it is on
    /// disk.
    async fn wait_for_the_last(&mut self, cx: &mut SourceContext) -> Flow {
        if let Some(u) = self.unacked.back_mut()
            && let Some(a) = &mut u.ack
        {
            let Some(delivered) = cx.wait(a.done()).await else {
                return Flow::Stop;
            };
            u.ack = None;
            u.failed = !delivered;
        }
        if self.unacked.iter().any(|u| u.failed) {
            return Flow::Rewind;
        }
        self.settle();
        while let Some(written) = self.saving.pop_front() {
            match cx.wait(written).await {
                None => return Flow::Stop,
                Some(Err(e)) => {
                    tracing::warn!(source = %&self.id, error = %e, "cannot save the file position; a restart may read some lines again");
                }
                Some(Ok(())) => {}
            }
        }
        Flow::Go
    }

    /// A batch was not delivered: forgets what was handed on after the last batch that
    /// was, and returns the position to read again from.
    fn rewind(&mut self) -> Position {
        self.unacked.clear();
        match (&self.done, &self.current) {
            (Some((file, at)), Some(current)) if Arc::ptr_eq(file, current) => *at,
            _ => self.began,
        }
    }

    /// Takes the batches done with off the front; queues the position for saving when it
    /// moved.
    fn settle(&mut self) {
        if let Some((key, value)) = self.position_to_save() {
            self.saving
                .push_back(self.store.queue_checkpoint(&key, &value));
        }
    }

    /// Takes the batches done with off the front: the position to save, when it moved
    /// since the last save.
    fn position_to_save(&mut self) -> Option<(Arc<str>, serde_json::Value)> {
        while let Some(front) = self.unacked.front_mut() {
            if let Some(a) = &mut front.ack {
                match a.try_done() {
                    None => break,
                    Some(delivered) => {
                        front.ack = None;
                        front.failed = !delivered;
                    }
                }
            }
            if front.failed {
                break;
            }
            if let Some(u) = self.unacked.pop_front() {
                self.done = Some((u.file, u.end));
            }
        }
        let (file, at) = self.done.as_ref()?;
        if !self.keep
            || self
                .saved
                .as_ref()
                .is_some_and(|(f, p)| f == file && p == at)
        {
            return None;
        }
        let cp = FileCheckpoint {
            path: self.cfg.path.clone(),
            dev: file.identity.0,
            ino: file.identity.1,
            head: file.head.clone(),
            offset: at.offset,
            line: at.line,
        };
        self.saved = Some((file.clone(), *at));
        match serde_json::to_value(&cp) {
            Ok(v) => Some((self.id.clone(), v)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the file position");
                None
            }
        }
    }

    /// The source stops: waits (a while) for what it handed on, then saves its position
    /// and waits until it is written (a source rebuilt by a reload goes on from there).
    async fn stop(&mut self) {
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while let Some(u) = self.unacked.front_mut() {
            if let Some(a) = &mut u.ack {
                let Ok(delivered) = tokio::time::timeout_at(deadline, a.done()).await else {
                    tracing::warn!(path = %self.cfg.path.display(), "what was read is still on its way; its lines will be read again after a restart");
                    break;
                };
                u.ack = None;
                u.failed = !delivered;
            }
            if u.failed {
                tracing::warn!(path = %self.cfg.path.display(), "some lines were not delivered; they will be read again after a restart");
                break;
            }
            self.settle();
        }
        let last = self.position_to_save();
        let written = match last {
            Some((key, value)) => self.store.queue_checkpoint(&key, &value),
            // What was queued before is written first.
            None => self.store.barrier(),
        };
        if let Err(e) = written.await {
            tracing::warn!(source = %&self.id, error = %e, "cannot save the file position; a restart may read some lines again");
        }
    }

    /// The position saved for this source, when it is about `path`.
    fn restored(&self, path: &Path) -> Option<FileCheckpoint> {
        if !self.keep {
            return None;
        }
        let v = match self.store.checkpoint(&self.id) {
            Ok(v) => v?,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the saved file position; reading as if new");
                return None;
            }
        };
        serde_json::from_value::<FileCheckpoint>(v)
            .ok()
            .filter(|cp| cp.path == path)
    }

    /// Hands on everything the decoder holds, in order.
    async fn hand_on_all(
        &mut self,
        cx: &mut SourceContext,
        file: &mut tokio::fs::File,
        decoder: &mut JsonLinesDecoder,
    ) -> Result<Step, NodeError> {
        let decoded = decoder.drain().await?;
        let flow = self.hand_on(cx, decoded).await;
        self.step(flow, cx, file, decoder).await
    }

    /// What reading does after handing a batch on: a batch that was not delivered makes
    /// the source pause, then read again from the position after the last one that was.
    async fn step(
        &mut self,
        flow: Flow,
        cx: &mut SourceContext,
        file: &mut tokio::fs::File,
        decoder: &mut JsonLinesDecoder,
    ) -> Result<Step, NodeError> {
        match flow {
            Flow::Go => Ok(Step::Go),
            Flow::Stop => Ok(Step::Stop),
            Flow::Rewind => {
                let at = self.rewind();
                tracing::warn!(source = %&self.id, path = %self.cfg.path.display(), line = at.line, "some lines were not delivered; reading them again");
                if !cx.sleep(REWIND_PAUSE).await {
                    return Ok(Step::Stop);
                }
                let pos = file
                    .seek(SeekFrom::Start(at.offset))
                    .await
                    .map_err(|e| self.io(e))?;
                decoder.rewind_to(at);
                Ok(Step::ReadFrom(pos))
            }
        }
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let result = self.read(cx).await;
        self.stop().await;
        result
    }

    async fn read(&mut self, cx: &mut SourceContext) -> NodeResult {
        let path = self.cfg.path.clone();
        let mut checkpoint = self.restored(&path);
        let mut decoder = JsonLinesDecoder::new(
            cx.id.clone(),
            self.cfg.max_line_bytes,
            self.time_field.clone(),
        )
        .with_format(self.cfg.decode);
        let mut buf = BytesMut::new();
        let mut first_open = true;
        let mut told_missing = false;
        let poll = self.cfg.poll_interval.get();

        loop {
            // At the first open, the file the last run was reading may have been rotated
            // away meanwhile (renamed, a new one at `path`): its rest is read first, under
            // its new name, then `path` (the end of a replaced file moves on to it).
            let rotated = if first_open && self.cfg.follow {
                checkpoint.as_ref().and_then(|cp| rotated_away(&path, cp))
            } else {
                None
            };
            if let Some(old) = &rotated {
                tracing::info!(source = %cx.id, path = %path.display(), rotated = %old.display(), "the file was rotated while vigil was stopped: reading the rest of the old one first");
            }
            let open_path = rotated.as_deref().unwrap_or(&path);
            let mut file = match tokio::fs::File::open(open_path).await {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound && self.cfg.follow => {
                    if !told_missing {
                        tracing::info!(source = %cx.id, path = %path.display(), "waiting for the file to appear");
                        told_missing = true;
                    }
                    if !cx.sleep(poll).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(self.io(e).into()),
            };
            told_missing = false;
            let meta = file.metadata().await.map_err(|e| self.io(e))?;
            let identity = file_identity(&meta);
            let opened = Arc::new(Opened {
                identity,
                head: head_of(open_path),
            });
            self.current = Some(opened.clone());
            let mut pos: u64 = 0;
            let resume = checkpoint.take().filter(|cp| {
                (cp.dev, cp.ino) == identity
                    && cp.offset <= meta.len()
                    && opened.head.starts_with(&cp.head)
            });
            if let Some(cp) = resume {
                pos = file
                    .seek(SeekFrom::Start(cp.offset))
                    .await
                    .map_err(|e| self.io(e))?;
                self.began = Position {
                    offset: cp.offset,
                    line: cp.line,
                };
                decoder.resume_at(self.began);
                tracing::info!(source = %cx.id, path = %path.display(), line = cp.line, offset = cp.offset, "going on where the last run stopped");
            } else if first_open && self.cfg.start_at == StartAt::End {
                pos = file.seek(SeekFrom::End(0)).await.map_err(|e| self.io(e))?;
                self.began = Position {
                    offset: pos,
                    line: 1,
                };
                decoder.resume_at(self.began);
            } else {
                self.began = Position::default();
            }
            first_open = false;
            tracing::debug!(source = %cx.id, path = %path.display(), offset = pos, "reading");

            'read: loop {
                buf.reserve(READ_CHUNK);
                let Some(read) = cx.wait(file.read_buf(&mut buf)).await else {
                    // Shutdown: every complete line read so far is handed on.
                    self.hand_on_all(cx, &mut file, &mut decoder).await?;
                    tracing::info!(source = %cx.id, path = %path.display(), line = decoder.next_line(), "stopped reading");
                    return Ok(());
                };
                let n = read.map_err(|e| self.io(e))?;
                if n > 0 {
                    pos += n as u64;
                    decoder.push(buf.split().freeze(), cx.now());
                    while decoder.is_full() {
                        if let Some(d) = decoder.next().await? {
                            let flow = self.hand_on(cx, d).await;
                            match self.step(flow, cx, &mut file, &mut decoder).await? {
                                Step::Go => {}
                                Step::Stop => return Ok(()),
                                Step::ReadFrom(at) => {
                                    pos = at;
                                    continue 'read;
                                }
                            }
                        }
                    }
                    if cx.is_shutting_down() {
                        self.hand_on_all(cx, &mut file, &mut decoder).await?;
                        tracing::info!(source = %cx.id, path = %path.display(), line = decoder.next_line(), "stopped reading");
                        return Ok(());
                    }
                    continue;
                }
                // End of file: hand on what is being parsed before waiting for more.
                if !self.cfg.follow {
                    decoder.finish(cx.now());
                    match self.hand_on_all(cx, &mut file, &mut decoder).await? {
                        Step::ReadFrom(at) => {
                            pos = at;
                            continue 'read;
                        }
                        Step::Go | Step::Stop => return Ok(()),
                    }
                }
                match self.hand_on_all(cx, &mut file, &mut decoder).await? {
                    Step::Go => {}
                    Step::Stop => return Ok(()),
                    Step::ReadFrom(at) => {
                        pos = at;
                        continue 'read;
                    }
                }
                let moved_on = match std::fs::metadata(&path) {
                    Ok(meta) if file_identity(&meta) != identity => {
                        Some("file was replaced; reading the new one from its start")
                    }
                    Ok(meta) if meta.len() < pos => {
                        tracing::warn!(source = %cx.id, path = %path.display(), "file was truncated; reading again from its start");
                        let held = decoder.reset();
                        if held > 0 {
                            tracing::warn!(source = %cx.id, bytes = held, "an incomplete last line was lost to the truncation");
                        }
                        pos = file
                            .seek(SeekFrom::Start(0))
                            .await
                            .map_err(|e| self.io(e))?;
                        self.began = Position::default();
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        Some("file was removed; waiting for a new one")
                    }
                    _ => None,
                };
                if let Some(what) = moved_on {
                    // Replaced (rotated) or removed: this one is read to its end; a last
                    // line without newline is complete now that the writer moved on.
                    tracing::info!(source = %cx.id, path = %path.display(), "{what}");
                    decoder.finish(cx.now());
                    decoder.reset();
                    match self.hand_on_all(cx, &mut file, &mut decoder).await? {
                        Step::Go => break,
                        Step::Stop => return Ok(()),
                        Step::ReadFrom(at) => {
                            pos = at;
                            continue 'read;
                        }
                    }
                }
                // Idle: the position of what was handed on is saved once it is done;
                // what was not delivered is read again without waiting for new lines.
                self.settle();
                if self.unacked.front().is_some_and(|u| u.failed) {
                    match self.step(Flow::Rewind, cx, &mut file, &mut decoder).await? {
                        Step::ReadFrom(at) => {
                            pos = at;
                            continue 'read;
                        }
                        Step::Go | Step::Stop => return Ok(()),
                    }
                }
                if !cx.sleep(poll).await {
                    return Ok(());
                }
            }
        }
    }
}

/// The first bytes of the file at `path` (up to [`HEAD_BYTES`]), hex; empty when it
/// cannot be read.
fn head_of(path: &Path) -> String {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(HEAD_BYTES as u64).read_to_end(&mut head);
    }
    head.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file the checkpoint `cp` was about, when it is no longer at `path` but renamed
/// within its directory (log rotation: `tetragon.log` → `tetragon.log.1`): the same device
/// and inode, starting with the same bytes. At most [`ROTATED_SCAN`] entries are looked at.
fn rotated_away(path: &Path, cp: &FileCheckpoint) -> Option<PathBuf> {
    if std::fs::metadata(path).is_ok_and(|m| file_identity(&m) == (cp.dev, cp.ino)) {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir)
        .ok()?
        .take(ROTATED_SCAN)
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| {
                m.is_file() && file_identity(&m) == (cp.dev, cp.ino) && m.len() >= cp.offset
            }) && head_of(p).starts_with(&cp.head)
        })
}

/// How many entries of a directory are looked at for a rotated file.
const ROTATED_SCAN: usize = 10_000;

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (
        0,
        meta.created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64),
    )
}

impl Source for FileSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
