//! JSON-lines decoding shared by the `file` and `stdin` sources.
//!
//! Bytes go in as they are read; complete lines come out as events. A partial last line is
//! held until its newline arrives. A line that is not a JSON object, or is longer than the
//! limit, is counted and set aside (see [`crate::store::rejected`]) with its line number;
//! it never stops the source. Blank lines are skipped.

use std::sync::Arc;

use serde_json::Value;

use crate::event::{Event, FieldPath, Timestamp};
use crate::store::rejected::{RejectedLog, RejectedRecord};

/// Splits bytes into lines and parses them.
#[derive(Debug)]
pub struct LineDecoder {
    pending: Vec<u8>,
    /// Number of the next line to complete (1-based).
    line: u64,
    max_line_bytes: usize,
    /// Skipping the rest of a line that already went over the limit.
    oversized: bool,
    time_field: Option<FieldPath>,
    source: Arc<str>,
}

/// What one chunk of bytes produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Parsed events, in order.
    pub events: Vec<Arc<Event>>,
    /// Lines set aside.
    pub rejected: Vec<RejectedRecord>,
}

impl LineDecoder {
    /// A decoder for records from `source`.
    pub fn new(source: Arc<str>, max_line_bytes: usize, time_field: Option<FieldPath>) -> Self {
        LineDecoder {
            pending: Vec::new(),
            line: 1,
            max_line_bytes,
            oversized: false,
            time_field,
            source,
        }
    }

    /// Starts over at line 1 (the file was truncated or replaced); a held partial line is
    /// dropped and returned.
    pub fn reset(&mut self) -> Option<Vec<u8>> {
        self.line = 1;
        self.oversized = false;
        let held = std::mem::take(&mut self.pending);
        (!held.is_empty()).then_some(held)
    }

    /// Bytes of an incomplete last line held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The number of the next line.
    pub fn next_line(&self) -> u64 {
        self.line
    }

    /// Feeds bytes; complete lines are parsed into `out`.
    pub fn push(&mut self, mut bytes: &[u8], now: Timestamp, out: &mut Decoded) {
        while let Some(nl) = memchr(b'\n', bytes) {
            let (head, rest) = bytes.split_at(nl);
            bytes = &rest[1..];
            if self.oversized {
                self.oversized = false;
                self.line += 1;
                continue;
            }
            if self.pending.len() + head.len() > self.max_line_bytes {
                let mut raw = std::mem::take(&mut self.pending);
                raw.extend_from_slice(&head[..head.len().min(1024)]);
                let reason = format!("line longer than max_line_bytes ({})", self.max_line_bytes);
                out.rejected.push(self.reject(&raw, reason, now));
                self.line += 1;
                continue;
            }
            if self.pending.is_empty() {
                self.finish_line(head, now, out);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                self.finish_line(&line, now, out);
            }
        }
        if self.oversized {
            return;
        }
        if self.pending.len() + bytes.len() > self.max_line_bytes {
            let mut raw = std::mem::take(&mut self.pending);
            raw.extend_from_slice(&bytes[..bytes.len().min(1024)]);
            out.rejected.push(self.reject(
                &raw,
                format!("line longer than max_line_bytes ({})", self.max_line_bytes),
                now,
            ));
            self.oversized = true;
            return;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The input ended: a last line without a newline counts as complete.
    pub fn finish(&mut self, now: Timestamp, out: &mut Decoded) {
        if !self.pending.is_empty() && !self.oversized {
            let line = std::mem::take(&mut self.pending);
            self.finish_line(&line, now, out);
        }
        self.pending.clear();
        self.oversized = false;
    }

    fn finish_line(&mut self, line: &[u8], now: Timestamp, out: &mut Decoded) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let number = self.line;
        self.line += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(data @ Value::Object(_)) => {
                let mut event = Event::from_record(data, self.source.clone(), now);
                if let Some(field) = &self.time_field
                    && let Some(t) = field
                        .first(&event.data)
                        .and_then(crate::event::time_from_value)
                {
                    event.meta.time = t;
                }
                out.events.push(Arc::new(event));
            }
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                let r = self.reject_numbered(
                    line,
                    number,
                    format!("not a JSON object but {kind}"),
                    now,
                );
                out.rejected.push(r);
            }
            Err(e) => {
                let r = self.reject_numbered(line, number, format!("malformed JSON: {e}"), now);
                out.rejected.push(r);
            }
        }
    }

    fn reject(&mut self, raw: &[u8], reason: String, now: Timestamp) -> RejectedRecord {
        self.reject_numbered(raw, self.line, reason, now)
    }

    fn reject_numbered(
        &self,
        raw: &[u8],
        line: u64,
        reason: String,
        now: Timestamp,
    ) -> RejectedRecord {
        RejectedRecord {
            time: now,
            source: self.source.to_string(),
            location: None,
            line: Some(line),
            reason,
            raw: String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]).into_owned(),
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Logs, counts and stores rejected lines. The first few are logged one by one; after
/// that one summary line per thousand keeps the log readable.
pub(crate) fn set_aside(
    log: &mut RejectedLog,
    counters: &crate::runtime::NodeCounters,
    records: Vec<RejectedRecord>,
) {
    for r in records {
        counters.add_error();
        let n = counters.get().2;
        if n <= 20 {
            tracing::warn!(
                source = %r.source,
                location = r.location.as_deref().unwrap_or("-"),
                line = r.line.unwrap_or(0),
                reason = %r.reason,
                "record set aside"
            );
        } else if n % 1000 == 0 {
            tracing::warn!(source = %r.source, total = n, "records set aside so far");
        }
        log.write(&r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn decoder() -> LineDecoder {
        LineDecoder::new("p.s".into(), 64, None)
    }

    #[test]
    fn partial_lines_wait_for_newline() {
        let mut d = decoder();
        let mut out = Decoded::default();
        let now = Utc::now();
        d.push(b"{\"a\":1}\n{\"a\"", now, &mut out);
        assert_eq!(out.events.len(), 1);
        assert_eq!(d.pending_len(), 4);
        d.push(b":2}\r\n\n", now, &mut out);
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[1].data["a"], 2);
        assert_eq!(d.next_line(), 4);
    }

    #[test]
    fn malformed_lines_are_set_aside_with_line_numbers() {
        let mut d = decoder();
        let mut out = Decoded::default();
        d.push(
            b"{\"a\":1}\nnot json\n[1]\n{\"a\":2}\n",
            Utc::now(),
            &mut out,
        );
        assert_eq!(out.events.len(), 2);
        let lines: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.clone()))
            .collect();
        assert_eq!(lines[0].0, Some(2));
        assert!(lines[0].1.starts_with("malformed JSON"));
        assert_eq!(lines[1], (Some(3), "not a JSON object but a list".into()));
    }

    #[test]
    fn oversized_lines_are_skipped_whole() {
        let mut d = decoder();
        let mut out = Decoded::default();
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        d.push(&long.as_bytes()[..50], Utc::now(), &mut out);
        d.push(&long.as_bytes()[50..], Utc::now(), &mut out);
        d.push(b"\n{\"b\":1}\n", Utc::now(), &mut out);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].line, Some(1));
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].data["b"], 1);
    }

    #[test]
    fn last_line_without_newline_on_finish() {
        let mut d = decoder();
        let mut out = Decoded::default();
        d.push(b"{\"a\":1}", Utc::now(), &mut out);
        assert!(out.events.is_empty());
        d.finish(Utc::now(), &mut out);
        assert_eq!(out.events.len(), 1);
    }
}
