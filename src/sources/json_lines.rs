//! JSON-lines decoding shared by the `file` and `stdin` sources.
//!
//! Bytes go in as they are read; complete lines come out as events, in order. A partial
//! last line is held until its newline arrives. A line that is not a JSON object, or is
//! longer than the limit, is counted and set aside (see [`crate::store::rejected`]) with
//! its line number; it never stops the source. Blank lines are skipped.
//!
//! Parsing JSON is the costly part of reading, so [`JsonLinesDecoder`] parses chunks on
//! blocking worker threads, several at once, and hands the results back in input order.
//! Each event keeps the bytes of its line (shared with the read buffer, not copied), so
//! sinks can write it back unchanged.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::event::{Event, FieldPath, Scalar, Tape, Timestamp};
use crate::node::internal_event::{InternalEvent, RecordSetAside, RejectedRotated};
use crate::store::rejected::{RejectedLog, RejectedRecord};

/// One complete line and its number (1-based) in the input.
#[derive(Debug, Clone)]
pub struct Line {
    /// The line number.
    pub number: u64,
    /// The line, without its `\n` (and `\r`).
    pub bytes: Bytes,
    /// The input's byte offset just after the line (and its `\n`).
    pub end: u64,
}

/// Where the input stands after the last complete line: its byte offset and the number of
/// the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Bytes from the start of the input to just after the last complete line.
    pub offset: u64,
    /// The number of the next line (1-based).
    pub line: u64,
}

/// Splits bytes into lines.
#[derive(Debug)]
pub struct LineSplitter {
    pending: BytesMut,
    /// Number of the next line to complete (1-based).
    line: u64,
    /// Bytes pushed so far, from the start of the input.
    read: u64,
    /// The offset just after the last complete line.
    complete: u64,
    max_line_bytes: usize,
    /// Skipping the rest of a line that already went over the limit.
    oversized: bool,
    source: Arc<str>,
}

impl LineSplitter {
    /// A splitter for input from `source`.
    pub fn new(source: Arc<str>, max_line_bytes: usize) -> Self {
        LineSplitter {
            pending: BytesMut::new(),
            line: 1,
            read: 0,
            complete: 0,
            max_line_bytes,
            oversized: false,
            source,
        }
    }

    /// Starts over at line 1 (the input was truncated or replaced). Returns how many bytes
    /// of a held partial line were dropped.
    pub fn reset(&mut self) -> usize {
        self.line = 1;
        self.read = 0;
        self.complete = 0;
        self.oversized = false;
        let held = self.pending.len();
        self.pending.clear();
        held
    }

    /// Bytes of an incomplete last line held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The number of the next line.
    pub fn next_line(&self) -> u64 {
        self.line
    }

    /// Where the input stands after the last complete line.
    pub fn position(&self) -> Position {
        Position {
            offset: self.complete,
            line: self.line,
        }
    }

    /// Continues an input at `at` (nothing held): what is pushed next starts there.
    pub fn resume_at(&mut self, at: Position) {
        self.pending.clear();
        self.oversized = false;
        self.read = at.offset;
        self.complete = at.offset;
        self.line = at.line.max(1);
    }

    /// Splits `chunk`: complete lines go to `lines`, oversized ones to `rejected`.
    pub fn push(
        &mut self,
        chunk: Bytes,
        now: Timestamp,
        lines: &mut Vec<Line>,
        rejected: &mut Vec<RejectedRecord>,
    ) {
        let mut start = 0;
        let base = self.read;
        self.read += chunk.len() as u64;
        for nl in memchr::memchr_iter(b'\n', &chunk) {
            let head = chunk.slice(start..nl);
            start = nl + 1;
            self.complete = base + start as u64;
            let number = self.line;
            self.line += 1;
            if std::mem::take(&mut self.oversized) {
                continue;
            }
            if self.pending.len() + head.len() > self.max_line_bytes {
                let mut raw = std::mem::take(&mut self.pending);
                raw.extend_from_slice(&head[..head.len().min(1024)]);
                rejected.push(self.oversized_record(&raw, number, now));
                continue;
            }
            let bytes = if self.pending.is_empty() {
                head
            } else {
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(&head);
                joined.freeze()
            };
            lines.push(Line {
                number,
                bytes,
                end: self.complete,
            });
        }
        let tail = &chunk[start..];
        if self.oversized || tail.is_empty() {
            return;
        }
        if self.pending.len() + tail.len() > self.max_line_bytes {
            let mut raw = std::mem::take(&mut self.pending);
            raw.extend_from_slice(&tail[..tail.len().min(1024)]);
            rejected.push(self.oversized_record(&raw, self.line, now));
            self.oversized = true;
            return;
        }
        self.pending.extend_from_slice(tail);
    }

    /// The input ended: a last line without a newline counts as complete.
    pub fn finish(&mut self, lines: &mut Vec<Line>) {
        self.complete = self.read;
        if !self.pending.is_empty() && !self.oversized {
            let number = self.line;
            self.line += 1;
            lines.push(Line {
                number,
                bytes: std::mem::take(&mut self.pending).freeze(),
                end: self.complete,
            });
        }
        self.pending.clear();
        self.oversized = false;
    }

    fn oversized_record(&self, raw: &[u8], line: u64, now: Timestamp) -> RejectedRecord {
        rejected_record(
            &self.source,
            raw,
            line,
            format!("line longer than max_line_bytes ({})", self.max_line_bytes),
            now,
        )
    }
}

fn rejected_record(
    source: &str,
    raw: &[u8],
    line: u64,
    reason: String,
    now: Timestamp,
) -> RejectedRecord {
    RejectedRecord {
        time: now,
        source: source.to_string(),
        location: None,
        line: Some(line),
        reason,
        raw: String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]).into_owned(),
    }
}

/// What the lines hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// JSON objects, each an event as it is.
    #[default]
    Json,
    /// Cilium Tetragon's events (its export file, `tetra getevents -o json`), each
    /// normalised to the fields of the `tetragon` catalogue (`event.type`,
    /// `process.binary`, `arg.file.path`, ...); the line is kept as the sample.
    Tetragon,
}

/// Turns lines into events.
#[derive(Debug, Clone)]
pub struct LineParser {
    source: Arc<str>,
    time_field: Option<FieldPath>,
    format: LineFormat,
}

/// What a run of lines produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Parsed events, in order.
    pub events: Vec<Arc<Event>>,
    /// Where the input stands just after each event's line (one per event).
    pub ends: Vec<Position>,
    /// Lines set aside.
    pub rejected: Vec<RejectedRecord>,
    /// Where the input stands after the lines these came from (set by
    /// [`JsonLinesDecoder`]).
    pub end: Option<Position>,
    /// Events of a type the format does not know, handed on as they are (Tetragon).
    pub unknown_types: u64,
}

impl Decoded {
    fn append(&mut self, mut other: Decoded) {
        self.events.append(&mut other.events);
        self.ends.append(&mut other.ends);
        self.rejected.append(&mut other.rejected);
        self.end = other.end.or(self.end);
        self.unknown_types += other.unknown_types;
    }
}

impl LineParser {
    /// A parser for records from `source`; `time_field` names the event-time field.
    pub fn new(source: Arc<str>, time_field: Option<FieldPath>) -> Self {
        LineParser {
            source,
            time_field,
            format: LineFormat::Json,
        }
    }

    /// The same, reading lines of `format`.
    pub fn with_format(mut self, format: LineFormat) -> Self {
        self.format = format;
        self
    }

    /// The event a Tetragon line makes, or why it makes none; `true` with it when its
    /// type is one the decoder knows.
    fn tetragon(&self, bytes: &bytes::Bytes, now: Timestamp) -> Result<(Event, bool), String> {
        let record: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
        let n = super::tetragon::normalize(&record).map_err(|e| e.to_string())?;
        let mut event = Event::from_line(bytes.clone(), n.data, self.source.clone(), now);
        self.set_time(&mut event);
        Ok((event, n.known))
    }

    /// Takes the event time from `time_field`, when it is set and the event has it.
    fn set_time(&self, event: &mut Event) {
        if let Some(field) = &self.time_field
            && let Some(t) = field
                .first_in(event)
                .and_then(|f| crate::event::time_from_field(&f))
        {
            event.meta.time = t;
        }
    }

    /// Parses lines read at `now`.
    pub fn parse(&self, lines: Vec<Line>, now: Timestamp) -> Decoded {
        let mut out = Decoded {
            events: Vec::with_capacity(lines.len()),
            ends: Vec::with_capacity(lines.len()),
            rejected: Vec::new(),
            end: None,
            unknown_types: 0,
        };
        for line in lines {
            let bytes = match line.bytes.last() {
                Some(b'\r') => line.bytes.slice(..line.bytes.len() - 1),
                _ => line.bytes,
            };
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.format == LineFormat::Tetragon {
                match self.tetragon(&bytes, now) {
                    Ok((event, known)) => {
                        out.unknown_types += u64::from(!known);
                        out.events.push(Arc::new(event));
                        out.ends.push(Position {
                            offset: line.end,
                            line: line.number + 1,
                        });
                    }
                    Err(reason) => out.rejected.push(rejected_record(
                        &self.source,
                        &bytes,
                        line.number,
                        format!("not a Tetragon event: {reason}"),
                        now,
                    )),
                }
                continue;
            }
            // Parsed once into a tape over the line: fields are read from it, and the
            // record's `Value` is made only if something asks for the whole record.
            match Tape::parse(bytes.clone()) {
                Ok(tape) if tape.root().is_object() => {
                    let mut event = Event::from_tape(tape, self.source.clone(), now);
                    self.set_time(&mut event);
                    out.events.push(Arc::new(event));
                    out.ends.push(Position {
                        offset: line.end,
                        line: line.number + 1,
                    });
                }
                Ok(other) => {
                    let kind = match other.root().scalar() {
                        Scalar::Other => "a list",
                        Scalar::Str(_) => "a string",
                        Scalar::Num(_) => "a number",
                        Scalar::Bool(_) => "a boolean",
                        Scalar::Null => "null",
                    };
                    out.rejected.push(rejected_record(
                        &self.source,
                        &bytes,
                        line.number,
                        format!("not a JSON object but {kind}"),
                        now,
                    ));
                }
                Err(e) => out.rejected.push(rejected_record(
                    &self.source,
                    &bytes,
                    line.number,
                    format!("malformed JSON: {e}"),
                    now,
                )),
            }
        }
        out
    }
}

/// Lines this short are parsed where they are read; longer runs go to a worker thread.
const INLINE_LINES: usize = 32;

enum Pending {
    Ready(Decoded),
    Parsing(tokio::task::JoinHandle<Decoded>, Position),
}

/// Splits and parses JSON lines, several chunks at once on worker threads, results in
/// input order.
pub struct JsonLinesDecoder {
    splitter: LineSplitter,
    parser: LineParser,
    queue: VecDeque<Pending>,
    max_in_flight: usize,
}

/// A parse worker died (a bug: parsing does not panic on bad input).
#[derive(Debug, thiserror::Error)]
#[error("a JSON parse worker failed: {0}")]
pub struct DecodeError(#[from] tokio::task::JoinError);

impl JsonLinesDecoder {
    /// A decoder for `source`.
    pub fn new(source: Arc<str>, max_line_bytes: usize, time_field: Option<FieldPath>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        JsonLinesDecoder {
            splitter: LineSplitter::new(source.clone(), max_line_bytes),
            parser: LineParser::new(source, time_field),
            queue: VecDeque::new(),
            max_in_flight: cores.max(2),
        }
    }

    /// The same, reading lines of `format`.
    pub fn with_format(mut self, format: LineFormat) -> Self {
        self.parser = self.parser.with_format(format);
        self
    }

    /// Feeds a chunk of input read at `now`.
    pub fn push(&mut self, chunk: Bytes, now: Timestamp) {
        let mut lines = Vec::new();
        let mut rejected = Vec::new();
        self.splitter.push(chunk, now, &mut lines, &mut rejected);
        self.enqueue(lines, rejected, now);
    }

    /// The input ended: a last line without a newline counts as complete.
    pub fn finish(&mut self, now: Timestamp) {
        let mut lines = Vec::new();
        self.splitter.finish(&mut lines);
        self.enqueue(lines, Vec::new(), now);
    }

    /// Starts over at line 1; returns the bytes of a dropped partial line.
    pub fn reset(&mut self) -> usize {
        self.splitter.reset()
    }

    /// The number of the next line.
    pub fn next_line(&self) -> u64 {
        self.splitter.next_line()
    }

    /// Continues an input at `at` (see [`LineSplitter::resume_at`]).
    pub fn resume_at(&mut self, at: Position) {
        self.splitter.resume_at(at);
    }

    /// Drops everything queued and continues the input at `at`: what was read after it
    /// is read again.
    pub fn rewind_to(&mut self, at: Position) {
        self.queue.clear();
        self.splitter.resume_at(at);
    }

    fn enqueue(&mut self, lines: Vec<Line>, rejected: Vec<RejectedRecord>, now: Timestamp) {
        let end = self.splitter.position();
        let mut ready = Decoded {
            events: Vec::new(),
            ends: Vec::new(),
            rejected,
            end: Some(end),
            unknown_types: 0,
        };
        if lines.len() <= INLINE_LINES {
            ready.append(self.parser.parse(lines, now));
            ready.end = Some(end);
            if !ready.events.is_empty() || !ready.rejected.is_empty() {
                self.queue.push_back(Pending::Ready(ready));
            }
            return;
        }
        if !ready.rejected.is_empty() {
            // The position is the job's: it is passed once the job's events are.
            ready.end = None;
            self.queue.push_back(Pending::Ready(ready));
        }
        let parser = self.parser.clone();
        let job = tokio::task::spawn_blocking(move || parser.parse(lines, now));
        self.queue.push_back(Pending::Parsing(job, end));
    }

    /// Whether enough chunks are being parsed: take results before pushing more.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_in_flight
    }

    /// The oldest result, once it is ready; `None` when nothing is queued.
    pub async fn next(&mut self) -> Result<Option<Decoded>, DecodeError> {
        match self.queue.pop_front() {
            None => Ok(None),
            Some(Pending::Ready(d)) => Ok(Some(d)),
            Some(Pending::Parsing(job, end)) => {
                let mut d = job.await?;
                d.end = Some(end);
                Ok(Some(d))
            }
        }
    }

    /// Everything queued, in order.
    pub async fn drain(&mut self) -> Result<Decoded, DecodeError> {
        let mut all = Decoded::default();
        while let Some(d) = self.next().await? {
            all.append(d);
        }
        Ok(all)
    }
}

/// Where a run of lines was read: for [`settle`].
pub(crate) struct Read<'a> {
    /// The source, `pipeline.node`.
    pub(crate) source: &'a str,
    /// What its lines hold.
    pub(crate) format: LineFormat,
    /// Where a line set aside came from (a file's path, a command).
    pub(crate) location: &'a str,
}

/// What a source reading JSON lines does with a decoded run before handing its events on:
/// counts the records of types its decoder does not know, raises
/// `vigil.tetragon_dropping` for Tetragon's throttling reports, and sets aside the lines
/// that are not events, naming where they were read (`location`).
pub(crate) fn settle(
    decoded: &mut Decoded,
    read: Read<'_>,
    internal: &crate::sources::internal::InternalAlerts,
    log: &mut RejectedLog,
    counters: &crate::node::NodeCounters,
) {
    let Read {
        source,
        format,
        location,
    } = read;
    crate::node::internal_event::UnknownTypes {
        source,
        records: decoded.unknown_types,
    }
    .emit(counters);
    if format == LineFormat::Tetragon {
        crate::sources::tetragon::report_dropping(internal, &decoded.events);
    }
    if !decoded.rejected.is_empty() {
        let mut rejected = std::mem::take(&mut decoded.rejected);
        for r in &mut rejected {
            r.location = Some(location.to_string());
        }
        set_aside(log, counters, rejected);
    }
}

/// Logs, counts and stores rejected lines ([`RecordSetAside`]: the first few are logged
/// one by one, then a summary line per thousand keeps the log readable), and reports the
/// rotations of their file that dropped the one before ([`RejectedRotated`]).
pub(crate) fn set_aside(
    log: &mut RejectedLog,
    counters: &crate::node::NodeCounters,
    records: Vec<RejectedRecord>,
) {
    let rotations = log.rotations();
    for r in records {
        RecordSetAside {
            source: &r.source,
            location: r.location.as_deref(),
            line: r.line,
            reason: &r.reason,
        }
        .emit(counters);
        log.write(&r);
    }
    log.flush();
    RejectedRotated {
        path: log.path(),
        rotations: log.rotations() - rotations,
    }
    .emit(counters);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn split(
        chunks: &[&[u8]],
        max: usize,
    ) -> (Vec<(u64, String)>, Vec<RejectedRecord>, LineSplitter) {
        let mut s = LineSplitter::new("p.s".into(), max);
        let mut lines = Vec::new();
        let mut rejected = Vec::new();
        for c in chunks {
            s.push(
                Bytes::copy_from_slice(c),
                Utc::now(),
                &mut lines,
                &mut rejected,
            );
        }
        let lines = lines
            .into_iter()
            .map(|l| (l.number, String::from_utf8(l.bytes.to_vec()).unwrap()))
            .collect();
        (lines, rejected, s)
    }

    #[test]
    fn partial_lines_wait_for_newline() {
        let (lines, _, s) = split(&[b"{\"a\":1}\n{\"a\"", b":2}\r\n\n"], 64);
        assert_eq!(
            lines,
            vec![
                (1, "{\"a\":1}".into()),
                (2, "{\"a\":2}\r".into()),
                (3, String::new())
            ]
        );
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.next_line(), 4);
        let (lines, _, s) = split(&[b"{\"a\":1}\n{\"a\""], 64);
        assert_eq!(lines.len(), 1);
        assert_eq!(s.pending_len(), 4);
    }

    #[test]
    fn each_event_knows_where_the_input_stands_after_its_line() {
        let mut s = LineSplitter::new("p.s".into(), 64);
        let (mut lines, mut rejected) = (Vec::new(), Vec::new());
        for c in [&b"{\"a\":1}\nnope\n{\"a\""[..], b":2}\r\n\n", b"{\"a\":3}"] {
            s.push(Bytes::from_static(c), Utc::now(), &mut lines, &mut rejected);
        }
        s.finish(&mut lines);
        let out = LineParser::new("p.s".into(), None).parse(lines, Utc::now());
        assert_eq!(out.events.len(), 3);
        assert_eq!(out.rejected.len(), 1);
        let ends: Vec<(u64, u64)> = out.ends.iter().map(|p| (p.offset, p.line)).collect();
        // 8 bytes of line 1, 5 of the set-aside line 2, 9 of line 3, a blank line 4,
        // 7 bytes without newline of line 5.
        assert_eq!(ends, vec![(8, 2), (22, 4), (30, 6)]);
    }

    #[test]
    fn malformed_lines_are_set_aside_with_line_numbers() {
        let (lines, _, _) = split(&[b"{\"a\":1}\nnot json\n[1]\n\n{\"a\":2}\r\n"], 64);
        let parser = LineParser::new("p.s".into(), None);
        let lines = lines
            .into_iter()
            .map(|(number, s)| Line {
                number,
                end: 0,
                bytes: Bytes::from(s),
            })
            .collect();
        let out = parser.parse(lines, Utc::now());
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[1].data()["a"], 2);
        assert_eq!(
            out.events[1].raw(),
            Some(&b"{\"a\":2}"[..]),
            "raw bytes without \\r"
        );
        let rej: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.clone()))
            .collect();
        assert_eq!(rej[0].0, Some(2));
        assert!(rej[0].1.starts_with("malformed JSON"));
        assert_eq!(rej[1], (Some(3), "not a JSON object but a list".into()));
    }

    #[test]
    fn oversized_lines_are_skipped_whole() {
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        let (lines, rejected, _) = split(
            &[
                &long.as_bytes()[..50],
                &long.as_bytes()[50..],
                b"\n{\"b\":1}\n",
                long.as_bytes(),
                b"\n",
            ],
            64,
        );
        let numbers: Vec<_> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(numbers, vec![Some(1), Some(3)]);
        assert_eq!(lines, vec![(2, "{\"b\":1}".into())]);
    }

    #[test]
    fn last_line_without_newline_on_finish() {
        let (lines, _, mut s) = split(&[b"{\"a\":1}"], 64);
        assert!(lines.is_empty());
        let mut last = Vec::new();
        s.finish(&mut last);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].number, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_decoding_keeps_input_order() {
        let mut d = JsonLinesDecoder::new("p.s".into(), 1 << 20, None);
        let mut expected = 0u64;
        let mut seen = Vec::new();
        for chunk in 0..20u64 {
            let mut text = String::new();
            // Chunks of very different sizes: some parsed inline, some on workers.
            let n = if chunk % 3 == 0 { 5 } else { 500 };
            for _ in 0..n {
                text.push_str(&format!("{{\"n\":{expected}}}\n"));
                expected += 1;
            }
            d.push(Bytes::from(text), Utc::now());
            while d.is_full() {
                let out = d.next().await.unwrap().unwrap();
                seen.extend(out.events.iter().map(|e| e.data()["n"].as_u64().unwrap()));
            }
        }
        let out = d.drain().await.unwrap();
        seen.extend(out.events.iter().map(|e| e.data()["n"].as_u64().unwrap()));
        assert_eq!(seen, (0..expected).collect::<Vec<_>>());
    }
}
