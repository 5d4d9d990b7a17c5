//! `warm_up.file`: past records whose values `new_term` learns when it is built.
//!
//! The file holds JSON lines (one record a line, blank lines skipped) or one JSON array
//! of records (read item by item, never whole). A line or item that is not a JSON object
//! is handed to the caller to count and set aside; it never stops the reading. What
//! stops it — the file cannot be opened or read, or an array is cut off or broken — is a
//! [`WarmUpError`] naming the file and what to fix.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::confine::ConfineError;
use crate::event::{Event, Scalar, Tape, Timestamp};

/// History to learn from before the first event: values seen in it never alert (unless
/// forgotten since: `forget_after`). A file, the PCE's history, or both.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmUpConfig {
    /// A file of past records, relative to the pipeline file's directory and inside it
    /// (no `..` step, no absolute path or symbolic link leading elsewhere): JSON lines,
    /// or one JSON array of records. Each record is read as the stage would see it as an
    /// event — the fields at `field` and `group_by` where the stage's input has them
    /// (for PCE traffic, `src.labels.app` as the `pce_traffic` source adds it: the lines
    /// a `file` sink wrote of the same input will do). Lines that are not JSON objects
    /// are counted (`vigil_node_errors_total{reason="malformed"}`) and set aside under
    /// the state directory (`rejected/<pipeline>.<stage>.jsonl`).
    #[serde(default)]
    pub file: Option<String>,
    /// The field holding each record's time (RFC 3339, or epoch seconds or
    /// milliseconds), from which `forget_after` counts. Default: the first of
    /// `timestamp`, `time` and `@timestamp`; a record without one counts as seen when
    /// the stage is built.
    #[serde(default)]
    pub time_field: Option<String>,
    /// The PCE's own history: the flows (or audit events) of the last `lookback`, read
    /// when the stage starts and learned as they arrive.
    #[serde(default)]
    pub pce: Option<PceWarmUp>,
}

/// A warm-up from a PCE's history (see [`WarmUpConfig::pce`]).
///
/// The history is read in the background once the daemon runs — traffic a day at a time
/// (a day whose result would be truncated is read in halves, down to ten minutes), audit
/// events an hour at a time — and each flow is made into the event the `pce_traffic`
/// source makes of it (labels map, IP list names), so `src.labels.app` is there. Until it
/// is read the stage learns every value and alerts on none (counted as learned); then it
/// alerts as usual. The flows of every policy decision are learned, whatever stages
/// before this one keep: a value seen only in flows a filter drops is known too. If the
/// PCE cannot be read the stage says so in the log and goes on with what it learned (and
/// its `learn` period). Read once: the state remembers it (`connection`, `read` and
/// `lookback`), so a restart does not read it again; changing one of them does. Not read
/// by `vigil test` and `vigil replay`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PceWarmUp {
    /// The PCE connection (under `connections: pce:`).
    pub connection: String,
    /// How far back to read (`7d`): up to the time the stage starts.
    pub lookback: crate::time::Duration,
    /// What to read: `traffic` (flows, the default) or `events` (audit events).
    #[serde(default)]
    pub read: HistoryKind,
}

/// What a PCE warm-up reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// Traffic flows, as the `pce_traffic` source makes them.
    #[default]
    Traffic,
    /// Audit events, as the `pce_events` source reads them.
    Events,
}

impl PceWarmUp {
    /// What the stage's state notes once this history is learned.
    pub(super) fn mark(&self) -> String {
        let read = match self.read {
            HistoryKind::Traffic => "traffic",
            HistoryKind::Events => "events",
        };
        format!("{} {read} {}", self.connection, self.lookback)
    }
}

/// What a PCE history reader hands a `new_term` stage (see [`PceWarmUp`]).
#[derive(Debug)]
pub enum HistoryMsg {
    /// Past events, oldest slices first.
    Events(Vec<Event>),
    /// The whole history was read.
    Done,
    /// The history could not be read (why); what came before is learned.
    Failed(String),
}

/// The channel a PCE history arrives on.
pub type HistoryFeed = tokio::sync::mpsc::Receiver<HistoryMsg>;

/// The longest line read; a longer one is set aside.
pub(super) const MAX_LINE_BYTES: usize = 1 << 20;

/// The most of a set-aside record's text kept.
const MAX_RAW_BYTES: usize = 64 << 10;

/// Why the warm-up file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WarmUpError {
    /// The path leads out of the pipeline file's directory.
    #[error("warm_up.file {0}")]
    Outside(#[from] ConfineError),
    /// The file cannot be opened (missing, unreadable) or is not a file.
    #[error(
        "cannot read the warm-up file `{path}`: {reason}: write the past records there (JSON lines, or one JSON array of records), or remove `warm_up`"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// Reading failed part way.
    #[error("cannot read the warm-up file `{path}` after line {line}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The last line read whole.
        line: u64,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file starts as a JSON array but is not one.
    #[error(
        "the warm-up file `{path}` starts as a JSON array but is not one at line {line}, column {column}: {message}: fix it, or write one record a line (JSON lines)"
    )]
    Array {
        /// The file.
        path: PathBuf,
        /// Where (from 1).
        line: usize,
        /// Where (from 1).
        column: usize,
        /// What is wrong there.
        message: String,
    },
}

/// A line or array item that is not a record.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Malformed {
    /// Its line number (JSON lines).
    pub(super) line: Option<u64>,
    /// Why it is not a record (naming the array item, in an array).
    pub(super) reason: String,
    /// Its text, lossy UTF-8, cut at 64 KiB.
    pub(super) raw: String,
}

/// How a warm-up file was written, to tell whether it changed since it was learned: its
/// name as written, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WarmUpMark {
    file: String,
    bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified: Option<Timestamp>,
}

impl WarmUpMark {
    /// The mark of file `path`, written `file` in the config.
    pub(super) fn of(file: &str, path: &Path) -> Result<WarmUpMark, WarmUpError> {
        let meta = metadata(path)?;
        Ok(WarmUpMark {
            file: file.to_string(),
            bytes: meta.len(),
            modified: meta.modified().ok().map(Timestamp::from),
        })
    }
}

/// The metadata of a file that must be a readable file.
fn metadata(path: &Path) -> Result<std::fs::Metadata, WarmUpError> {
    let open = |reason: String| WarmUpError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| open(e.to_string()))?;
    if !meta.is_file() {
        return Err(open("it is not a file".into()));
    }
    Ok(meta)
}

/// How a file's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// One record a line.
    Lines,
    /// One JSON array.
    Array,
    /// Nothing but white space.
    Empty,
}

/// Opens `path` and tells how it is written from its first byte that is not white
/// space: `[` starts an array, anything else JSON lines. For `vigil validate`: `Err` if
/// it cannot be read.
pub(super) fn layout(path: &Path) -> Result<Layout, WarmUpError> {
    let (_, layout) = open(path)?;
    Ok(layout)
}

fn open(path: &Path) -> Result<(BufReader<std::fs::File>, Layout), WarmUpError> {
    metadata(path)?;
    let file = std::fs::File::open(path).map_err(|e| WarmUpError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let first = loop {
        let buf = reader.fill_buf().map_err(|source| WarmUpError::Read {
            path: path.to_path_buf(),
            line: 0,
            source,
        })?;
        if buf.is_empty() {
            break None;
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    let layout = match first {
        None => Layout::Empty,
        Some(b'[') => Layout::Array,
        Some(_) => Layout::Lines,
    };
    Ok((reader, layout))
}

/// What reading found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReadCounts {
    /// Records (JSON objects) handed on.
    pub(super) records: u64,
    /// Lines or items that were not records.
    pub(super) malformed: u64,
}

/// Reads the records of `path`, handing each JSON object to `record` as an event of
/// `source` read at `now` (its time, as a source's: the first of `timestamp`, `time` and
/// `@timestamp`, else `now`) and each line or item that is not one to `malformed`.
pub(super) fn read_records(
    path: &Path,
    source: &Arc<str>,
    now: Timestamp,
    mut record: impl FnMut(&Event),
    mut malformed: impl FnMut(Malformed),
) -> Result<ReadCounts, WarmUpError> {
    let (reader, layout) = open(path)?;
    let mut counts = ReadCounts::default();
    let mut record = |event: Event| record(&event);
    let made = Made { source, now };
    match layout {
        Layout::Empty => {}
        Layout::Lines => read_lines(path, reader, made, &mut counts, &mut record, &mut malformed)?,
        Layout::Array => {
            let mut de = serde_json::Deserializer::from_reader(reader);
            let array_error = |e: serde_json::Error| {
                let message = if e.classify() == serde_json::error::Category::Eof {
                    "the file ends inside the array (was it cut off?)".to_string()
                } else {
                    // What is wrong, without the position said again.
                    let text = e.to_string();
                    let at = format!(" at line {} column {}", e.line(), e.column());
                    text.strip_suffix(&at).unwrap_or(&text).to_string()
                };
                WarmUpError::Array {
                    path: path.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                    message,
                }
            };
            Items {
                made,
                counts: &mut counts,
                record: &mut record,
                malformed: &mut malformed,
            }
            .deserialize(&mut de)
            .map_err(array_error)?;
            de.end().map_err(array_error)?;
        }
    }
    Ok(counts)
}

/// How records become events: read by `source` at `now`.
#[derive(Clone, Copy)]
struct Made<'a> {
    source: &'a Arc<str>,
    now: Timestamp,
}

fn read_lines(
    path: &Path,
    mut reader: impl BufRead,
    made: Made<'_>,
    counts: &mut ReadCounts,
    record: &mut impl FnMut(Event),
    malformed: &mut impl FnMut(Malformed),
) -> Result<(), WarmUpError> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        let oversized = match next_line(&mut reader, &mut buf, MAX_LINE_BYTES) {
            Ok(Some(oversized)) => oversized,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(WarmUpError::Read {
                    path: path.to_path_buf(),
                    line,
                    source,
                });
            }
        };
        line += 1;
        let text = buf.strip_suffix(b"\r").unwrap_or(&buf);
        if text.iter().all(u8::is_ascii_whitespace) && !oversized {
            continue;
        }
        let reason = if oversized {
            format!("longer than {MAX_LINE_BYTES} bytes")
        } else {
            // Parsed into a tape, as a source parses its lines: fields are read from it.
            match Tape::parse(bytes::Bytes::copy_from_slice(text)) {
                Ok(tape) if tape.root().is_object() => {
                    counts.records += 1;
                    record(Event::from_tape(tape, made.source.clone(), made.now));
                    continue;
                }
                Ok(tape) => format!(
                    "{}, not a record (a JSON object)",
                    scalar_kind(&tape.root().scalar())
                ),
                Err(e) => format!("not JSON: {e}"),
            }
        };
        counts.malformed += 1;
        malformed(Malformed {
            line: Some(line),
            reason,
            raw: raw_text(text),
        });
    }
}

/// Reads one line into `buf` (without its `\n`), keeping at most `max` bytes of it;
/// `Some(true)` when it was longer, `None` at the end of the input.
fn next_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut oversized = false;
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(read_any.then_some(oversized));
        }
        read_any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if take > room {
            oversized = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take + usize::from(done));
        if done {
            return Ok(Some(oversized));
        }
    }
}

fn scalar_kind(s: &Scalar<'_>) -> &'static str {
    match s {
        Scalar::Null => "null",
        Scalar::Bool(_) => "a boolean",
        Scalar::Num(_) => "a number",
        Scalar::Str(_) => "a string",
        Scalar::Other => "a list",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a record",
    }
}

fn raw_text(bytes: &[u8]) -> String {
    let mut end = bytes.len().min(MAX_RAW_BYTES);
    // Cut on a character boundary where the text is UTF-8.
    while end > 0 && end < bytes.len() && (bytes[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Hands an array's items on one by one as they are parsed.
struct Items<'a, R, M> {
    made: Made<'a>,
    counts: &'a mut ReadCounts,
    record: &'a mut R,
    malformed: &'a mut M,
}

impl<'de, R: FnMut(Event), M: FnMut(Malformed)> DeserializeSeed<'de> for Items<'_, R, M> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, R: FnMut(Event), M: FnMut(Malformed)> Visitor<'de> for Items<'_, R, M> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut item = 0u64;
        while let Some(v) = seq.next_element::<Value>()? {
            item += 1;
            if v.is_object() {
                self.counts.records += 1;
                (self.record)(Event::from_record(
                    v,
                    self.made.source.clone(),
                    self.made.now,
                ));
            } else {
                self.counts.malformed += 1;
                let text = v.to_string();
                (self.malformed)(Malformed {
                    line: None,
                    reason: format!(
                        "item {item} of the array is {}, not a record (a JSON object)",
                        kind_of(&v)
                    ),
                    raw: raw_text(text.as_bytes()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> (Result<ReadCounts, WarmUpError>, Vec<Value>, Vec<Malformed>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, text).unwrap();
        let mut records = Vec::new();
        let mut bad = Vec::new();
        let r = read_records(
            &path,
            &"p.nt".into(),
            Timestamp::UNIX_EPOCH,
            |e| records.push(e.data().clone()),
            |m| bad.push(m),
        );
        (r, records, bad)
    }

    #[test]
    fn json_lines_are_read_and_what_is_not_a_record_is_handed_back_with_its_line() {
        let (r, records, bad) =
            read("{\"a\": 1}\n\n  \nnot json\n[1, 2]\r\n{\"a\": 2}\r\n{\"a\": 3}");
        assert_eq!(
            r.unwrap(),
            ReadCounts {
                records: 3,
                malformed: 2
            }
        );
        assert_eq!(
            records,
            vec![json!({"a": 1}), json!({"a": 2}), json!({"a": 3})]
        );
        assert_eq!(bad[0].line, Some(4));
        assert!(bad[0].reason.starts_with("not JSON"), "{}", bad[0].reason);
        assert_eq!(bad[0].raw, "not json");
        assert_eq!(bad[1].line, Some(5));
        assert_eq!(bad[1].reason, "a list, not a record (a JSON object)");
    }

    #[test]
    fn an_array_is_read_item_by_item_and_a_broken_one_says_where() {
        let (r, records, bad) = read("  [\n {\"a\": 1},\n 7,\n {\"a\": 2}\n]\n");
        assert_eq!(r.unwrap().records, 2);
        assert_eq!(records.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(
            bad[0].reason,
            "item 2 of the array is a number, not a record (a JSON object)"
        );
        let (r, records, _) = read("[\n {\"a\": 1},\n {\"a\": \n");
        let e = r.unwrap_err();
        assert!(matches!(e, WarmUpError::Array { line: 4, .. }), "{e}");
        assert!(
            e.to_string().contains(
                "ends inside the array (was it cut off?): fix it, or write one record a line"
            ),
            "{e}"
        );
        assert_eq!(records.len(), 1, "what came before the break was handed on");
        let (r, _, _) = read("[{\"a\": 1}] trailing");
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .ends_with("is not one at line 1, column 12: trailing characters: fix it, or write one record a line (JSON lines)"),
            "{e}"
        );
        let (r, records, _) = read(" \n ");
        assert_eq!(r.unwrap(), ReadCounts::default());
        assert!(records.is_empty());
    }

    #[test]
    fn an_overlong_line_is_set_aside_and_reading_goes_on() {
        let long = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_LINE_BYTES));
        let (r, records, bad) = read(&format!("{long}\n{{\"a\": 1}}\n"));
        assert_eq!(r.unwrap().records, 1);
        assert_eq!(records, vec![json!({"a": 1})]);
        assert_eq!(bad[0].line, Some(1));
        assert!(bad[0].reason.starts_with("longer than"));
        assert_eq!(bad[0].raw.len(), MAX_RAW_BYTES);
    }

    #[test]
    fn a_missing_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &Event| {};
        let source: Arc<str> = "p.nt".into();
        let now = Timestamp::UNIX_EPOCH;
        let e =
            read_records(&dir.path().join("nope.jsonl"), &source, now, none, |_| {}).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("cannot read the warm-up file `"), "{text}");
        assert!(text.contains("nope.jsonl"), "{text}");
        assert!(text.ends_with("or remove `warm_up`"), "{text}");
        let e = read_records(dir.path(), &source, now, none, |_| {}).unwrap_err();
        assert!(e.to_string().contains("it is not a file"), "{e}");
    }
}
