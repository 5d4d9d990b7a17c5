//! The running `exec` source: starts the command, reads its standard output as JSON
//! lines until it ends, logs its standard error, and starts it again after a backoff.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

use super::config::{ExecError, ExecSourceConfig, Restart, resolve};
use crate::event::FieldPath;
use crate::node::internal_event::{CommandExited, InternalEvent as _};
use crate::node::{BuildContext, NodeResult, Source, SourceContext};
use crate::sources::json_lines::{Decoded, JsonLinesDecoder, Read, settle};
use crate::sources::send_batches;
use crate::store::rejected::RejectedLog;

/// How much of the command's output is read at once.
const READ_CHUNK: usize = 64 * 1024;

/// How long a command may take to end after SIGTERM before it gets SIGKILL.
const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Standard-error lines longer than this are cut.
const STDERR_LINE_BYTES: usize = 4096;

/// At most this many standard-error lines are logged per [`STDERR_WINDOW`].
const STDERR_LINES: u32 = 10;

/// See [`STDERR_LINES`].
const STDERR_WINDOW: chrono::Duration = chrono::Duration::seconds(10);

/// Runs a command and reads JSON lines from its standard output.
pub struct ExecSource {
    cfg: ExecSourceConfig,
    id: Arc<str>,
    time_field: Option<FieldPath>,
    base_dir: std::path::PathBuf,
    clock: crate::time::SharedClock,
    rejected: RejectedLog,
    /// Where `vigil.tetragon_dropping` goes (`decode: tetragon`).
    internal: crate::sources::internal::InternalAlerts,
}

impl std::fmt::Debug for ExecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSource")
            .field("id", &self.id)
            .field("program", &self.cfg.program())
            .finish_non_exhaustive()
    }
}

/// How one run of the command ended.
enum Ended {
    /// It exited: how.
    Exited(String),
    /// vigil is stopping, or nobody reads the source any more.
    Stop,
}

impl ExecSource {
    pub(super) fn new(
        cfg: ExecSourceConfig,
        time_field: Option<FieldPath>,
        cx: &BuildContext,
        internal: crate::sources::internal::InternalAlerts,
    ) -> Self {
        ExecSource {
            cfg,
            id: cx.id.clone(),
            time_field,
            base_dir: cx.base_dir.clone(),
            clock: cx.clock.clone(),
            rejected: RejectedLog::new(&cx.state_dir, &cx.id, cx.rejected_max_bytes),
            internal,
        }
    }

    /// The command, ready to start: its own environment only, in its own process group
    /// (so that stopping it stops what it started too).
    fn command(&self) -> Result<Command, ExecError> {
        let program = self.cfg.program();
        let path = resolve(program, &self.base_dir, self.cfg.path_var().as_deref())?;
        let mut cmd = Command::new(path);
        match &self.cfg.shell {
            Some(line) => {
                cmd.arg("-c").arg(line);
            }
            None => {
                cmd.args(self.cfg.command.iter().skip(1));
            }
        }
        cmd.env_clear();
        for name in &self.cfg.inherit_env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(&self.cfg.env);
        let dir = match &self.cfg.working_dir {
            Some(d) => self.base_dir.join(d),
            None => self.base_dir.clone(),
        };
        // A pipeline read from a bare file name: the directory vigil runs in.
        if !dir.as_os_str().is_empty() {
            if !dir.is_dir() {
                return Err(ExecError::NoWorkingDir {
                    program: program.to_string(),
                    dir: dir.display().to_string(),
                });
            }
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        Ok(cmd)
    }

    async fn run_inner(mut self, cx: &mut SourceContext) -> NodeResult {
        let first = self.cfg.restart_backoff.get();
        let longest = self.cfg.max_restart_backoff.get();
        let mut backoff = first;
        loop {
            let started = cx.now();
            let status = match self.command()?.spawn() {
                Ok(child) => match self.read(cx, child).await? {
                    Ended::Exited(status) => status,
                    Ended::Stop => return Ok(()),
                },
                // Found but not runnable (a script whose `#!` interpreter is missing):
                // the node fails with why (the runtime restarts it, and shows it failed
                // if it keeps failing), as it does when the program is not found.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    return Err(Box::new(ExecError::Spawn {
                        program: self.cfg.program().to_string(),
                        source: e,
                    }));
                }
                // Out of processes or memory for a moment: like an exit, tried again.
                Err(e) => format!("not started: {e}"),
            };
            let ran = (cx.now() - started).to_std().unwrap_or_default();
            if ran > longest {
                backoff = first;
            }
            let restart_in = (self.cfg.restart == Restart::Always).then_some(backoff);
            CommandExited {
                source: &self.id,
                program: self.cfg.program(),
                status: &status,
                ran,
                restart_in,
            }
            .emit(cx.counters());
            let Some(wait) = restart_in else {
                return Ok(());
            };
            if !cx.sleep(wait).await {
                return Ok(());
            }
            backoff = backoff.saturating_mul(2).min(longest);
        }
    }

    /// Reads one run of the command to its end.
    async fn read(
        &mut self,
        cx: &mut SourceContext,
        mut child: Child,
    ) -> Result<Ended, crate::node::NodeError> {
        let program = self.cfg.program().to_string();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(stderr, self.id.clone(), self.clock.clone()));
        }
        let Some(mut stdout) = child.stdout.take() else {
            stop(&mut child).await;
            return Err(format!("`{program}`: its standard output is not readable").into());
        };
        let mut decoder = JsonLinesDecoder::new(
            self.id.clone(),
            self.cfg.max_line_bytes,
            self.time_field.clone(),
        )
        .with_format(self.cfg.decode);
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(READ_CHUNK);
            let ended = match cx.wait(stdout.read_buf(&mut buf)).await {
                None => {
                    // Stopping: what it printed in full is handed on; a line it was in
                    // the middle of is not a line.
                    stop(&mut child).await;
                    let decoded = decoder.drain().await?;
                    self.hand_on(cx, decoded).await;
                    return Ok(Ended::Stop);
                }
                Some(Err(e)) => {
                    stop(&mut child).await;
                    return Err(Box::new(ExecError::Read { program, source: e }));
                }
                Some(Ok(0)) => {
                    // It closed its output (it exited): a last line without its
                    // newline is a line.
                    decoder.finish(cx.now());
                    true
                }
                Some(Ok(_)) => {
                    decoder.push(buf.split().freeze(), cx.now());
                    false
                }
            };
            // Read as it comes: hand on at once rather than wait for more.
            let decoded = decoder.drain().await?;
            if !self.hand_on(cx, decoded).await {
                stop(&mut child).await;
                return Ok(Ended::Stop);
            }
            if ended {
                break;
            }
        }
        // Its output is closed; it has exited or is about to.
        match cx.wait(child.wait()).await {
            None => {
                stop(&mut child).await;
                Ok(Ended::Stop)
            }
            Some(Ok(status)) => Ok(Ended::Exited(describe(status))),
            Some(Err(e)) => Ok(Ended::Exited(format!("unknown ({e})"))),
        }
    }

    /// Sets aside what is not an event, counts unknown types, hands the events on.
    /// `false` when nobody reads the source any more.
    async fn hand_on(&mut self, cx: &mut SourceContext, mut decoded: Decoded) -> bool {
        let location = format!("the output of `{}`", self.cfg.program());
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
        send_batches(cx, decoded.events).await
    }
}

/// How a command ended, for the log.
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default();
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// Stops the command and everything in its process group: SIGTERM, then SIGKILL if it
/// has not ended after [`TERM_GRACE`].
async fn stop(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let group = Pid::from_raw(pid);
        let _ = killpg(group, Signal::SIGTERM);
        // Shutting down: a bound on how long it may take, in real time.
        if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_ok() {
            // What it started may still be running in its group.
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// Logs what the command writes to its standard error, line by line: at most
/// [`STDERR_LINES`] per [`STDERR_WINDOW`], the rest counted in the next line logged.
async fn log_stderr(mut stderr: ChildStderr, source: Arc<str>, clock: crate::time::SharedClock) {
    let mut buf = BytesMut::new();
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut window = clock.now();
    let mut logged = 0u32;
    let mut held_back = 0u64;
    let mut log = |line: &[u8], cut: bool| {
        let now = clock.now();
        if now - window >= STDERR_WINDOW {
            window = now;
            logged = 0;
        }
        if logged >= STDERR_LINES {
            held_back += 1;
            return;
        }
        logged += 1;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let more = if cut { " [cut]" } else { "" };
        if held_back > 0 {
            tracing::info!(source = %source, not_logged = held_back, "stderr: {text}{more}");
            held_back = 0;
        } else {
            tracing::info!(source = %source, "stderr: {text}{more}");
        }
    };
    loop {
        buf.reserve(8 * 1024);
        match stderr.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        for piece in buf.split().split_inclusive(|b| *b == b'\n') {
            let (text, done) = match piece.strip_suffix(b"\n") {
                Some(t) => (t, true),
                None => (piece, false),
            };
            let room = STDERR_LINE_BYTES.saturating_sub(line.len());
            if text.len() > room {
                cut = true;
            }
            line.extend_from_slice(&text[..text.len().min(room)]);
            if done {
                log(&line, cut);
                line.clear();
                cut = false;
            }
        }
    }
    if !line.is_empty() {
        log(&line, cut);
    }
    if held_back > 0 {
        tracing::info!(source = %source, not_logged = held_back, "stderr lines not logged (more than {STDERR_LINES} in {}s)", STDERR_WINDOW.num_seconds());
    }
}

impl Source for ExecSource {
    fn run<'a>(self: Box<Self>, cx: &'a mut SourceContext) -> BoxFuture<'a, NodeResult> {
        Box::pin(self.run_inner(cx))
    }
}
