//! `vigil replay`: every pipeline over captured records or a PCE time range, on a virtual
//! clock, delivering nothing.
//!
//! A PCE range (`--pce`) is read through the real client as the sources read it: see
//! [`pce`].
//!
//! Each record is handed to the sources that would have read it (by source kind, by
//! `pipeline.source`, or by its shape: a PCE flow or a PCE audit event) as those sources
//! make their events — a flow keeps only its source's `policy_decisions` and gains the
//! fields the `pce_traffic` source adds — and presented when it happened (its event
//! time), the clock jumping from record to record and ticking the stages on the way, as
//! `vigil test` does. The stages are the real ones; delivering sinks plan their
//! notifications (grouping, waits, reminders) without sending, and `--out` writes what
//! they would have sent. Nothing in the configured `state_dir` is read or written: the
//! stages start empty, in a scratch directory removed afterwards.
//!
//! Records from several files are merged by time (each file is expected in roughly time
//! order, as captures are); a record older than one already presented arrives with the
//! clock where it is and counts where its time puts it, or as late — as it would live.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

mod files;
mod pce;

pub use pce::{PceRange, PceReport};

use files::{FileFeed, Records, targets};

use super::runner::{Keep, PipelineRun, RunError, RunWith};
use crate::config::Config;
use crate::event::{Alert, AlertStatus, Event, Timestamp};
use crate::runtime::{BuildContext, build_services, delivery_services};
use crate::sinks::delivery::Notification;
use crate::time::{SharedClock, VirtualClock};

/// The most alerts a replay keeps to report (more are counted).
pub const MAX_ALERTS: usize = 100_000;

/// The largest JSON array file read (arrays are read whole; JSON lines stream).
pub const MAX_ARRAY_BYTES: u64 = 1 << 30;

/// The longest first line that tells a file of JSON lines from one JSON document.
pub(super) const FIRST_LINE_BYTES: usize = 1 << 20;

/// Malformed lines named in the log, per file (the rest are counted).
pub(super) const MALFORMED_LOGGED: u64 = 5;

/// One input of a replay: a file and the sources that read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// A source kind (`pce_traffic`), or `pipeline.source`; `None`: told by the records'
    /// shape.
    pub target: Option<String>,
    /// The file: JSON lines, or one JSON array (as the PCE's API answers).
    pub path: PathBuf,
}

impl std::str::FromStr for Input {
    type Err = std::convert::Infallible;

    /// `[TARGET=]PATH`: a target is a source kind or `pipeline.source` (letters, digits,
    /// `_`, `-` and `.`), so a path holding `=` elsewhere stays a path.
    fn from_str(s: &str) -> Result<Input, Self::Err> {
        if let Some((target, path)) = s.split_once('=')
            && !target.is_empty()
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !path.is_empty()
        {
            return Ok(Input {
                target: Some(target.to_string()),
                path: PathBuf::from(path),
            });
        }
        Ok(Input {
            target: None,
            path: PathBuf::from(s),
        })
    }
}

/// What to replay.
#[derive(Clone, Default)]
pub struct Options {
    /// The files (or none, with `pce`).
    pub inputs: Vec<Input>,
    /// A PCE connection's time range (instead of files).
    pub pce: Option<PceRange>,
    /// The clock the PCE client waits on (polls, retries); default: the wall clock.
    pub peer_clock: Option<SharedClock>,
    /// Where to write what delivering sinks would have sent (must be empty or missing).
    pub out: Option<PathBuf>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("inputs", &self.inputs)
            .field("pce", &self.pce)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

/// What a replay's progress counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressUnit {
    /// Bytes of the input files.
    #[default]
    Bytes,
    /// Seconds of the PCE range.
    Seconds,
}

/// How far a replay got (for a progress bar).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Bytes of the input files read, or seconds of the PCE range presented.
    pub done: u64,
    /// Bytes of the input files, or seconds of the PCE range, in all.
    pub total: u64,
    /// What `done` and `total` count.
    pub unit: ProgressUnit,
    /// Records read.
    pub records: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Records read from the files.
    pub records: u64,
    /// Lines that were not JSON (counted, set aside).
    pub malformed: u64,
    /// The first and last time presented.
    pub from: Option<Timestamp>,
    /// See `from`.
    pub to: Option<Timestamp>,
    /// Each pipeline that read something.
    pub pipelines: Vec<PipelineReport>,
    /// Alerts raised but not kept in this report (past [`MAX_ALERTS`]).
    pub alerts_left_out: u64,
    /// Files written under `--out`.
    pub written: Vec<PathBuf>,
    /// What was read from the PCE (`--pce`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pce: Option<PceReport>,
}

/// What one pipeline did in a replay.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Its name.
    pub pipeline: String,
    /// Events each node emitted (sources, stages) or received (sinks).
    pub nodes: Vec<NodeCount>,
    /// The alerts its stages raised, in order (firing and resolved reports).
    pub alerts: Vec<Alert>,
    /// What each delivering sink would have sent.
    pub notifications: Vec<SinkPlan>,
}

/// One node's count.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCount {
    /// The node.
    pub node: String,
    /// `source`, `stage` or `sink`.
    pub role: &'static str,
    /// Its `type`.
    pub kind: String,
    /// Events it emitted (received, for a sink).
    pub events: u64,
}

/// What a delivering sink would have sent.
#[derive(Debug, Clone, Serialize)]
pub struct SinkPlan {
    /// The sink.
    pub sink: String,
    /// Notifications (mails, messages, requests).
    pub notifications: usize,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input names no source, or its records' shape says none.
    #[error("{0}")]
    Target(String),
    /// A JSON array file that is not JSON, or too big.
    #[error("{path}: {message}")]
    Array {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A pipeline could not be built.
    #[error("pipeline `{pipeline}`: {source}")]
    Build {
        /// The pipeline.
        pipeline: String,
        /// Why.
        source: RunError,
    },
    /// The PCE could not be read (the range is not replayed in part).
    #[error("PCE connection `{connection}`: {message}")]
    Pce {
        /// The connection.
        connection: String,
        /// What went wrong.
        message: String,
    },
    /// `--out` could not be written.
    #[error("--out {path}: {message}")]
    Out {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A record made into the events of its targets (pipeline, source), with the time it is
/// presented.
pub(super) struct Head {
    pub(super) time: Timestamp,
    pub(super) events: Vec<(usize, String, Event)>,
}

/// What feeds a replay: a file, a connection's traffic, or a source's audit events.
enum Feed {
    File(FileFeed),
    Traffic(Box<pce::TrafficFeed>),
    Events(pce::EventsFeed),
}

impl Feed {
    fn head(&self) -> Option<&Head> {
        match self {
            Feed::File(f) => f.head.as_ref(),
            Feed::Traffic(f) => f.head.as_ref(),
            Feed::Events(f) => f.head.as_ref(),
        }
    }

    fn take_head(&mut self) -> Option<Head> {
        match self {
            Feed::File(f) => f.head.take(),
            Feed::Traffic(f) => f.head.take(),
            Feed::Events(f) => f.head.take(),
        }
    }

    /// The pipelines it feeds (a file's, once its first record told).
    fn pipelines(&self) -> Vec<usize> {
        match self {
            Feed::File(f) => f.targets.iter().flatten().map(|t| t.pipeline).collect(),
            Feed::Traffic(f) => f.pipelines().collect(),
            Feed::Events(f) => vec![f.pipeline()],
        }
    }

    fn malformed(&self) -> u64 {
        match self {
            Feed::File(f) => f.records.malformed,
            _ => 0,
        }
    }
}

/// Reads the feeds on: each file and PCE feed's next head.
struct Reading<'a> {
    config: &'a Config,
    /// The pipelines' names (a source's id is `pipeline.source`).
    names: Vec<String>,
    progress: Progress,
    pce: PceReport,
}

impl Reading<'_> {
    fn advance(&mut self, feed: &mut Feed, now: Timestamp) -> Result<(), ReplayError> {
        match feed {
            Feed::File(f) => {
                let names = &self.names;
                let ids = |p: usize, s: &str| -> Arc<str> { format!("{}.{s}", names[p]).into() };
                f.advance(self.config, now, &ids, &mut self.progress)
            }
            Feed::Traffic(f) => f.advance(&mut self.pce),
            Feed::Events(f) => f.advance(&mut self.pce),
        }
    }
}

/// Opens the inputs of `opts`: its files, or its PCE range (through the connection's
/// client, with the connection's names read first). The runtime, with `--pce`, drives the
/// client's calls.
fn open_feeds(
    config: &Config,
    opts: &Options,
    progress: &mut Progress,
) -> Result<(Vec<Feed>, Option<pce::Runtime>, crate::components::Services), ReplayError> {
    let mut settings = config.settings.clone();
    let Some(range) = &opts.pce else {
        if opts.inputs.is_empty() {
            return Err(ReplayError::Target(
                "nothing to replay: name files (--file) or a PCE range (--pce)".into(),
            ));
        }
        let mut feeds = Vec::new();
        for input in &opts.inputs {
            let (records, size) = Records::open(&input.path)?;
            progress.total += size;
            let targets = match &input.target {
                Some(t) => Some(targets(config, t, &input.path)?),
                None => None,
            };
            feeds.push(Feed::File(FileFeed {
                records,
                targets,
                head: None,
            }));
        }
        settings.connections = Default::default(); // a replay of files reaches no peer
        let clock: SharedClock = Arc::new(VirtualClock::new(Timestamp::UNIX_EPOCH));
        let services = build_services(&settings, &clock).map_err(settings_error)?;
        return Ok((feeds, None, services));
    };
    if !opts.inputs.is_empty() {
        return Err(ReplayError::Target(
            "replay either files (--file) or a PCE range (--pce), not both".into(),
        ));
    }
    if range.from >= range.to {
        return Err(ReplayError::Target(format!(
            "--from {} is not before --to {}",
            range.from.to_rfc3339(),
            range.to.to_rfc3339()
        )));
    }
    // Only the connection replayed is reached (its names serve the filters' `ip_list:`).
    let Some(conn) = settings.connections.pce.get(&range.connection).cloned() else {
        let known: Vec<&String> = settings.connections.pce.keys().collect();
        return Err(ReplayError::Target(format!(
            "no PCE connection `{}` in the settings (connections: {})",
            range.connection,
            if known.is_empty() {
                "none".to_string()
            } else {
                known
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    };
    settings.connections = Default::default();
    settings
        .connections
        .pce
        .insert(range.connection.clone(), conn);
    let peer_clock = opts
        .peer_clock
        .clone()
        .unwrap_or_else(|| Arc::new(crate::time::WallClock));
    let rt: pce::Runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ReplayError::Pce {
                connection: range.connection.clone(),
                message: format!("cannot start a runtime for the client: {e}"),
            })?,
    );
    // The client is made inside the runtime (its connection pool lives there).
    let services = {
        let _entered = rt.enter();
        build_services(&settings, &peer_clock).map_err(settings_error)?
    };
    let pce = services
        .pce(&range.connection)
        .map_err(|e| ReplayError::Target(e.to_string()))?
        .clone();
    let refreshed = rt.block_on(pce.names().refresh(pce.client(), peer_clock.now()));
    if let Err(e) = refreshed {
        return Err(ReplayError::Pce {
            connection: range.connection.clone(),
            message: format!("cannot read the names of labels, IP lists and workloads: {e}"),
        });
    }
    let (traffic, events) = pce::feeds(config, range, pce.client(), pce.names(), &rt)?;
    let mut feeds: Vec<Feed> = traffic
        .into_iter()
        .map(|t| Feed::Traffic(Box::new(t)))
        .collect();
    feeds.extend(events.into_iter().map(Feed::Events));
    progress.unit = ProgressUnit::Seconds;
    progress.total = u64::try_from((range.to - range.from).num_seconds()).unwrap_or(0);
    Ok((feeds, Some(rt), services))
}

fn settings_error(e: crate::runtime::ConnectionError) -> ReplayError {
    ReplayError::Build {
        pipeline: "(settings)".into(),
        source: RunError::Invalid(e.to_string()),
    }
}

/// Runs every pipeline of `config` over `opts.inputs` (or `opts.pce`); `progress` is
/// called as they are read.
pub fn replay(
    config: &Config,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, ReplayError> {
    let mut report = Report::default();
    let mut prog = Progress::default();
    let (mut feeds, _runtime, services) = open_feeds(config, opts, &mut prog)?;
    if let Some(out) = &opts.out {
        check_out(out)?;
    }
    // Source ids, before the runs exist: `pipeline.source`.
    let names: Vec<String> = config
        .pipelines
        .iter()
        .map(|p| p.config.name.clone())
        .collect();
    let mut reading = Reading {
        config,
        names,
        progress: prog,
        pce: PceReport {
            connection: opts
                .pce
                .as_ref()
                .map(|r| r.connection.clone())
                .unwrap_or_default(),
            ..PceReport::default()
        },
    };
    let epoch = Timestamp::UNIX_EPOCH;
    for f in &mut feeds {
        reading.advance(f, epoch)?;
    }
    progress(reading.progress);
    let finish_report = |report: &mut Report, reading: &Reading<'_>, feeds: &[Feed]| {
        report.records = reading.progress.records;
        report.malformed = feeds.iter().map(Feed::malformed).sum();
        if opts.pce.is_some() {
            report.pce = Some(reading.pce.clone());
        }
    };
    let Some(start) = feeds.iter().filter_map(|f| f.head().map(|h| h.time)).min() else {
        finish_report(&mut report, &reading, &feeds);
        return Ok(report);
    };

    let scratch = Scratch::new()?;
    let store = Arc::new(
        crate::store::Store::in_memory().map_err(|e| ReplayError::Build {
            pipeline: "(settings)".into(),
            source: RunError::Invalid(e.to_string()),
        })?,
    );
    let step = config.settings.tick_interval.span();
    let mut runs: Vec<Option<PipelineRun>> = Vec::new();
    let fed: HashSet<usize> = feeds.iter().flat_map(Feed::pipelines).collect();
    for (pi, p) in config.pipelines.iter().enumerate() {
        if !fed.contains(&pi) {
            runs.push(None);
            continue;
        }
        let with = RunWith {
            services: &services,
            store: &store,
            state_dir: scratch.path(),
        };
        let run = PipelineRun::build(config, pi, with, start, step, Keep::Alerts(MAX_ALERTS))
            .map_err(|source| ReplayError::Build {
                pipeline: p.config.name.clone(),
                source,
            })?;
        runs.push(Some(run));
    }
    let range_start = opts.pce.as_ref().map(|r| r.from);

    let mut now = start;
    let mut last_progress = std::time::Instant::now();
    // The feed whose next record comes first, until all are read.
    while let Some(next) = feeds
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.head().map(|h| (h.time, i)))
        .min()
        .map(|(_, i)| i)
    {
        let Some(head) = feeds[next].take_head() else {
            break;
        };
        now = now.max(head.time);
        if let Some(from) = range_start {
            reading.progress.records += 1;
            reading.progress.done = u64::try_from((now - from).num_seconds())
                .unwrap_or(0)
                .min(reading.progress.total);
        }
        for (pi, source, mut event) in head.events {
            let Some(run) = runs.get_mut(pi).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(src) = run.source(&source) {
                event.meta.ingest = now;
                run.feed(src, now, event);
            }
        }
        reading.advance(&mut feeds[next], now)?;
        if last_progress.elapsed() >= std::time::Duration::from_millis(100) {
            progress(reading.progress);
            last_progress = std::time::Instant::now();
        }
    }
    if range_start.is_some() {
        reading.progress.done = reading.progress.total;
    }
    progress(reading.progress);
    finish_report(&mut report, &reading, &feeds);
    report.from = Some(start);
    report.to = Some(now);

    for (pi, run) in runs.into_iter().enumerate() {
        let Some(run) = run else { continue };
        let p = &config.pipelines[pi];
        let finished = run.finish(now);
        report.alerts_left_out += finished.alerts_left_out;
        let rec = &finished.recorded;
        let mut nodes = Vec::new();
        let mut alerts = Vec::new();
        let mut plans = Vec::new();
        for (i, name) in rec.names.iter().enumerate() {
            let (role, kind) = if let Some(s) = p.config.sources.get(name.as_str()) {
                ("source", s.kind().to_string())
            } else if let Some(s) = p.config.stages.get(name.as_str()) {
                ("stage", s.kind().to_string())
            } else if let Some(s) = p.config.sinks.get(name.as_str()) {
                ("sink", s.kind().to_string())
            } else {
                ("node", String::new())
            };
            nodes.push(NodeCount {
                node: name.clone(),
                role,
                kind,
                events: finished.counts[i],
            });
            // The runner keeps each alert once, where it was raised.
            alerts.extend(rec.events[i].iter().filter_map(|e| e.alert().cloned()));
            let sent = &rec.notifications[i];
            if role == "sink" && p.config.sinks[name.as_str()].delivery().is_some() {
                plans.push(SinkPlan {
                    sink: name.clone(),
                    notifications: sent.len(),
                });
                if let Some(out) = &opts.out {
                    write_out(
                        config,
                        pi,
                        name,
                        sent,
                        out,
                        scratch.path(),
                        &mut report.written,
                    )?;
                }
            }
        }
        alerts.sort_by_key(alert_time);
        report.pipelines.push(PipelineReport {
            pipeline: p.config.name.clone(),
            nodes,
            alerts,
            notifications: plans,
        });
    }
    Ok(report)
}

/// When an alert report was made: its window's end (a resolution's: when it ended).
fn alert_time(a: &Alert) -> Timestamp {
    a.window.end
}

/// `--out` must be a directory that is empty or missing: files of two replays never mix.
fn check_out(out: &Path) -> Result<(), ReplayError> {
    let err = |message: String| ReplayError::Out {
        path: out.to_path_buf(),
        message,
    };
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(err(
                    "the directory is not empty: name a new one (a replay never mixes its files with others)".into(),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes what sink `sink` of pipeline `pi` would have sent: a mail as `NNNN.eml`, any
/// other message's body as `NNNN.json`, under `out/PIPELINE/SINK/`.
fn write_out(
    config: &Config,
    pi: usize,
    sink: &str,
    sent: &[(Timestamp, crate::sinks::delivery::dispatch::Planned)],
    out: &Path,
    scratch: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), ReplayError> {
    if sent.is_empty() {
        return Ok(());
    }
    let p = &config.pipelines[pi];
    let id = format!("{}.{sink}", p.config.name);
    let dir = out.join(&p.config.name).join(sink);
    let err = |path: &Path, message: String| ReplayError::Out {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e.to_string()))?;
    let cx = BuildContext {
        id: id.as_str().into(),
        pipeline: p.config.name.as_str().into(),
        node: sink.into(),
        base_dir: p.file.parent().map(Path::to_path_buf).unwrap_or_default(),
        state_dir: scratch.to_path_buf(),
        rejected_max_bytes: config.settings.retention.rejected_max_bytes,
        clock: Arc::new(VirtualClock::new(Timestamp::UNIX_EPOCH)),
        store: Arc::new(crate::store::Store::in_memory().map_err(|e| err(&dir, e.to_string()))?),
        keep_state: false,
        public_url: config.settings.public_url.as_str().into(),
        history_interval: config.settings.history_interval.span(),
        rebuilt: false,
        counters: Default::default(),
    };
    // A mail sink's connection pool wants a Tokio runtime to spawn on (nothing is sent).
    let own_runtime = match tokio::runtime::Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| err(&dir, format!("cannot start a runtime for the sinks: {e}")))?,
        ),
    };
    let _entered = own_runtime.as_ref().map(tokio::runtime::Runtime::enter);
    let Some(notifier) = p.config.sinks[sink].notifier(&cx, &delivery_services(&config.settings))
    else {
        return Ok(());
    };
    let notifier = notifier.map_err(|e| err(&dir, format!("{id}: {e}")))?;
    for (i, (at, plan)) in sent.iter().enumerate() {
        let n = Notification {
            id: format!("replay-{}-{sink}-{}", p.config.name, i + 1),
            sink: id.clone(),
            route: plan.route.clone(),
            alerts: plan.alerts.iter().map(|(_, a)| a.clone()).collect(),
            changes: plan.alerts.iter().map(|(c, _)| *c).collect(),
            group: plan.labels.clone(),
            reminder: plan.reminder,
            omitted: plan.omitted,
            attempt: 1,
        };
        let (name, bytes) = match notifier
            .wire(&n)
            .map_err(|e| err(&dir, format!("{id}: {e}")))?
        {
            Some((ext, bytes)) => (format!("{:04}.{ext}", i + 1), bytes),
            None => {
                let parts = notifier
                    .preview(&n)
                    .map_err(|e| err(&dir, format!("{id}: {e}")))?;
                let body: serde_json::Map<String, Value> = parts
                    .into_iter()
                    .map(|(part, text)| {
                        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                        (part, v)
                    })
                    .collect();
                let doc = serde_json::json!({"at": at, "route": plan.route, "parts": body});
                let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                (format!("{:04}.json", i + 1), text)
            }
        };
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| err(&path, e.to_string()))?;
        written.push(path);
    }
    Ok(())
}

/// A scratch state directory for the replay's stages, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, ReplayError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("vigil-replay-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ReplayError::Out {
            path: dir.clone(),
            message: format!("cannot make a scratch directory: {e}"),
        })?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts of the alerts of a report: episodes opened (and one-off alerts), reports of
/// open episodes (updates), resolutions.
pub fn tally(alerts: &[Alert]) -> (usize, usize, usize) {
    let resolved = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .count();
    let updates = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing && a.updates > 0)
        .count();
    (alerts.len() - resolved - updates, updates, resolved)
}
