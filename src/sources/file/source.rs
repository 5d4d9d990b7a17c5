//! The running `file` source.

use std::io::{ErrorKind, SeekFrom};
use std::path::PathBuf;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::config::{FileSourceConfig, StartAt};
use crate::event::FieldPath;
use crate::runtime::{BuildContext, NodeError, NodeResult, Source, SourceContext};
use crate::sources::json_lines::{Decoded, JsonLinesDecoder, set_aside};
use crate::sources::send_batches;
use crate::store::rejected::RejectedLog;

const READ_CHUNK: usize = 256 * 1024;

/// Reads a JSON-lines file.
#[derive(Debug)]
pub struct FileSource {
    cfg: FileSourceConfig,
    time_field: Option<FieldPath>,
    rejected: RejectedLog,
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
    ) -> Self {
        let rejected = RejectedLog::new(&cx.state_dir, &cx.id);
        FileSource {
            cfg,
            time_field,
            rejected,
        }
    }

    fn io(&self, source: std::io::Error) -> FileSourceError {
        FileSourceError::Io {
            path: self.cfg.path.clone(),
            source,
        }
    }

    async fn hand_on(&mut self, cx: &mut SourceContext, mut decoded: Decoded) -> bool {
        if !decoded.rejected.is_empty() {
            for r in &mut decoded.rejected {
                r.location = Some(self.cfg.path.display().to_string());
            }
            set_aside(&mut self.rejected, cx.counters(), decoded.rejected);
        }
        send_batches(cx, decoded.events).await
    }

    /// Hands on everything the decoder holds, in order.
    async fn hand_on_all(
        &mut self,
        cx: &mut SourceContext,
        decoder: &mut JsonLinesDecoder,
    ) -> Result<bool, NodeError> {
        let decoded = decoder.drain().await?;
        Ok(self.hand_on(cx, decoded).await)
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let path = self.cfg.path.clone();
        let mut decoder = JsonLinesDecoder::new(
            cx.id.clone(),
            self.cfg.max_line_bytes,
            self.time_field.clone(),
        );
        let mut buf = BytesMut::new();
        let mut first_open = true;
        let mut told_missing = false;
        let poll = self.cfg.poll_interval.get();

        loop {
            let mut file = match tokio::fs::File::open(&path).await {
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
            let identity = file_identity(&file.metadata().await.map_err(|e| self.io(e))?);
            let mut pos: u64 = 0;
            if first_open && self.cfg.start_at == StartAt::End {
                pos = file.seek(SeekFrom::End(0)).await.map_err(|e| self.io(e))?;
            }
            first_open = false;
            tracing::debug!(source = %cx.id, path = %path.display(), offset = pos, "reading");

            loop {
                buf.reserve(READ_CHUNK);
                let Some(read) = cx.wait(file.read_buf(&mut buf)).await else {
                    // Shutdown: every complete line read so far is handed on.
                    self.hand_on_all(cx, &mut decoder).await?;
                    tracing::info!(source = %cx.id, path = %path.display(), line = decoder.next_line(), "stopped reading");
                    return Ok(());
                };
                let n = read.map_err(|e| self.io(e))?;
                if n > 0 {
                    pos += n as u64;
                    decoder.push(buf.split().freeze(), cx.now());
                    while decoder.is_full() {
                        if let Some(d) = decoder.next().await? {
                            if !self.hand_on(cx, d).await {
                                return Ok(());
                            }
                        }
                    }
                    if cx.is_shutting_down() {
                        self.hand_on_all(cx, &mut decoder).await?;
                        tracing::info!(source = %cx.id, path = %path.display(), line = decoder.next_line(), "stopped reading");
                        return Ok(());
                    }
                    continue;
                }
                // End of file: hand on what is being parsed before waiting for more.
                if !self.cfg.follow {
                    decoder.finish(cx.now());
                    self.hand_on_all(cx, &mut decoder).await?;
                    return Ok(());
                }
                if !self.hand_on_all(cx, &mut decoder).await? {
                    return Ok(());
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if file_identity(&meta) != identity => {
                        // Replaced (rotated): this one is read to its end; a last line
                        // without newline is complete now that the writer moved on.
                        tracing::info!(source = %cx.id, path = %path.display(), "file was replaced; reading the new one from its start");
                        decoder.finish(cx.now());
                        decoder.reset();
                        if !self.hand_on_all(cx, &mut decoder).await? {
                            return Ok(());
                        }
                        break;
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
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        tracing::info!(source = %cx.id, path = %path.display(), "file was removed; waiting for a new one");
                        decoder.finish(cx.now());
                        decoder.reset();
                        if !self.hand_on_all(cx, &mut decoder).await? {
                            return Ok(());
                        }
                        break;
                    }
                    _ => {}
                }
                if !cx.sleep(poll).await {
                    return Ok(());
                }
            }
        }
    }
}

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
