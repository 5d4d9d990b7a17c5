//! The files of `vigil replay --file`: which sources read each, its records read as they
//! are asked for (JSON lines, or one JSON document), each made into its sources' events.

use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{FIRST_LINE_BYTES, Head, MALFORMED_LOGGED, MAX_ARRAY_BYTES, Progress, ReplayError};
use crate::components::SourceConfig;
use crate::config::Config;
use crate::event::{Event, FieldPath, Timestamp, time_from_field};

/// A source a file feeds: which pipeline run, which node, and how it makes events.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) pipeline: usize,
    source: String,
    shape: Shape,
}

#[derive(Debug, Clone)]
enum Shape {
    /// A `pce_traffic` source: its decisions (`None`: all) and what it adds to a flow.
    Flow {
        decisions: Option<HashSet<&'static str>>,
        vigil: Value,
    },
    /// Any other source: the record as it makes it (as it is, or decoded: Tetragon).
    Plain(SourceConfig),
}

/// Where a flow says when it was last seen (its event time, as the source reads it).
static LAST_DETECTED: std::sync::LazyLock<Option<FieldPath>> =
    std::sync::LazyLock::new(|| FieldPath::parse("timestamp_range.last_detected").ok());

impl Shape {
    /// The event source `id` makes of `record` at `now`, if it keeps it.
    fn event(&self, record: &Value, id: Arc<str>, now: Timestamp) -> Result<Option<Event>, String> {
        match self {
            Shape::Plain(source) => source
                .decode_record(record)
                .map(|data| Some(Event::from_record(data, id, now))),
            Shape::Flow { decisions, vigil } => {
                if let Some(d) = decisions {
                    let decision = record.get("policy_decision").and_then(Value::as_str);
                    if !decision.is_some_and(|x| d.contains(x)) {
                        return Ok(None);
                    }
                }
                let names = crate::pce::names::Names::default();
                let data = crate::sources::pce_traffic::enrich_flow(record.clone(), &names, vigil);
                let mut event = Event::from_record(data, id, now);
                if let Some(t) = LAST_DETECTED
                    .as_ref()
                    .and_then(|p| p.first_in(&event))
                    .and_then(|f| time_from_field(&f))
                {
                    event.meta.time = t;
                }
                Ok(Some(event))
            }
        }
    }
}

/// What a record looks like: a PCE flow, a PCE audit event, or neither.
fn kind_of(record: &Value) -> Option<&'static str> {
    let has = |k: &str| record.get(k).is_some();
    if has("src") && has("dst") && (has("service") || has("policy_decision")) {
        Some("pce_traffic")
    } else if has("event_type") && has("href") {
        Some("pce_events")
    } else {
        None
    }
}

/// The sources of `config` that `target` names (a kind, or `pipeline.source`).
pub(super) fn targets(
    config: &Config,
    target: &str,
    file: &Path,
) -> Result<Vec<Target>, ReplayError> {
    let mut found = Vec::new();
    for (pi, p) in config.pipelines.iter().enumerate() {
        for (name, src) in &p.config.sources {
            let full = format!("{}.{name}", p.config.name);
            if src.kind() != target && full != target {
                continue;
            }
            let shape = match src {
                SourceConfig::PceTraffic(c) => Shape::Flow {
                    decisions: c
                        .policy_decisions
                        .as_ref()
                        .map(|d| d.iter().map(|x| x.as_str()).collect()),
                    vigil: serde_json::json!({
                        "source_type": "pce_traffic", "connection": c.connection, "truncated": false,
                    }),
                },
                other => Shape::Plain(other.clone()),
            };
            found.push(Target {
                pipeline: pi,
                source: name.clone(),
                shape,
            });
        }
    }
    if found.is_empty() {
        let sources: Vec<String> = config
            .pipelines
            .iter()
            .flat_map(|p| {
                p.config
                    .sources
                    .iter()
                    .map(move |(n, s)| format!("{}.{n} ({})", p.config.name, s.kind()))
            })
            .collect();
        return Err(ReplayError::Target(format!(
            "{}: `{target}` names no source of the pipelines; they have: {}",
            file.display(),
            if sources.is_empty() {
                "none".to_string()
            } else {
                sources.join(", ")
            }
        )));
    }
    Ok(found)
}

/// The records of one file, read as they are asked for.
pub(super) struct Records {
    path: PathBuf,
    lines: Option<std::io::BufReader<std::fs::File>>,
    array: std::vec::IntoIter<Value>,
    /// Bytes a record of the array stands for (for progress).
    per_item: u64,
    line_no: u64,
    pub(super) malformed: u64,
    buf: String,
}

impl Records {
    pub(super) fn open(path: &Path) -> Result<(Records, u64), ReplayError> {
        let read = |source| ReplayError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let size = file.metadata().map_err(read)?.len();
        // Room for a whole first line (a record), to tell JSON lines from one document.
        let mut reader = std::io::BufReader::with_capacity(FIRST_LINE_BYTES, file);
        let first = loop {
            let buf = reader.fill_buf().map_err(read)?;
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => break Some(buf[i]),
                None if buf.is_empty() => break None,
                None => {
                    let n = buf.len();
                    reader.consume(n);
                }
            }
        };
        let mut records = Records {
            path: path.to_path_buf(),
            lines: None,
            array: Vec::new().into_iter(),
            per_item: 0,
            line_no: 0,
            malformed: 0,
            buf: String::new(),
        };
        // JSON lines, unless the file is one document: an array of records, or an object
        // that wraps one (`{"events": [...]}`, as exports do), or one record written over
        // several lines.
        let one_document = match first {
            Some(b'[') => true,
            Some(b'{') => {
                let mut first_line = String::new();
                let buf = reader.fill_buf().map_err(read)?;
                let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
                first_line.push_str(&String::from_utf8_lossy(&buf[..end]));
                serde_json::from_str::<Value>(first_line.trim()).is_err()
            }
            _ => false,
        };
        if one_document {
            if size > MAX_ARRAY_BYTES {
                return Err(ReplayError::Array {
                    path: path.to_path_buf(),
                    message: format!(
                        "a JSON document of {size} bytes is over the {MAX_ARRAY_BYTES}-byte limit: write the records as JSON lines, one a line"
                    ),
                });
            }
            let doc: Value = serde_json::from_reader(reader).map_err(|e| ReplayError::Array {
                path: path.to_path_buf(),
                message: format!("neither JSON lines nor one JSON document: {e}"),
            })?;
            let items = records_of(doc);
            records.per_item = size / (items.len() as u64).max(1);
            records.array = items.into_iter();
        } else {
            records.lines = Some(reader);
        }
        Ok((records, size))
    }

    /// The next record and the bytes read for it; `None` at the end.
    fn next(&mut self) -> Result<Option<(Value, u64)>, ReplayError> {
        let Some(reader) = &mut self.lines else {
            return Ok(self.array.next().map(|v| (v, self.per_item)));
        };
        loop {
            self.buf.clear();
            let n = reader
                .read_line(&mut self.buf)
                .map_err(|source| ReplayError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) => return Ok(Some((v, n as u64))),
                Err(e) => {
                    self.malformed += 1;
                    if self.malformed <= MALFORMED_LOGGED {
                        tracing::warn!(file = %self.path.display(), line = self.line_no, error = %e, "not a JSON record: set aside");
                    }
                }
            }
        }
    }
}

/// The records of one JSON document: an array's items; the items of an object's only
/// member that is a list of objects (a wrapper such as `{"events": [...]}`); else the
/// document itself.
fn records_of(doc: Value) -> Vec<Value> {
    match doc {
        Value::Array(items) => items,
        Value::Object(mut map) => {
            let lists: Vec<String> = map
                .iter()
                .filter(|(_, v)| {
                    v.as_array()
                        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
                })
                .map(|(k, _)| k.clone())
                .collect();
            match lists.as_slice() {
                [only] => match map.remove(only) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => vec![Value::Object(map)],
            }
        }
        other => vec![other],
    }
}

/// One file being read, with its next record made into events.
pub(super) struct FileFeed {
    pub(super) records: Records,
    /// `None` until the first record says what reads the file.
    pub(super) targets: Option<Vec<Target>>,
    pub(super) head: Option<Head>,
}

impl FileFeed {
    /// Reads records until one makes an event (or the file ends).
    pub(super) fn advance(
        &mut self,
        config: &Config,
        now: Timestamp,
        ids: &dyn Fn(usize, &str) -> Arc<str>,
        progress: &mut Progress,
    ) -> Result<(), ReplayError> {
        self.head = None;
        while let Some((record, bytes)) = self.records.next()? {
            progress.done += bytes;
            progress.records += 1;
            if self.targets.is_none() {
                let Some(kind) = kind_of(&record) else {
                    return Err(ReplayError::Target(format!(
                        "{}: cannot tell which sources read these records (neither PCE flows nor PCE events): write `--file KIND={}` or `--file PIPELINE.SOURCE={}`",
                        self.records.path.display(),
                        self.records.path.display(),
                        self.records.path.display()
                    )));
                };
                self.targets = Some(targets(config, kind, &self.records.path)?);
            }
            let targets = self.targets.as_deref().unwrap_or_default();
            let mut events: Vec<(usize, String, Event)> = Vec::new();
            for t in targets {
                match t.shape.event(&record, ids(t.pipeline, &t.source), now) {
                    Ok(Some(e)) => events.push((t.pipeline, t.source.clone(), e)),
                    Ok(None) => {}
                    // Each source reads the record as it would live: one that cannot
                    // (not a Tetragon event) sets it aside, counted as malformed.
                    Err(e) => {
                        self.records.malformed += 1;
                        if self.records.malformed <= MALFORMED_LOGGED {
                            tracing::warn!(file = %self.records.path.display(), line = self.records.line_no, error = %e, "set aside");
                        }
                    }
                }
            }
            if let Some(time) = events.iter().map(|(_, _, e)| e.meta.time).min() {
                self.head = Some(Head { time, events });
                return Ok(());
            }
        }
        Ok(())
    }
}
