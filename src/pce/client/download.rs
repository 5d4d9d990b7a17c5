//! Reading response bodies: streaming into one buffer, gzip by magic bytes, JSON arrays
//! and NDJSON.
//!
//! A 200,000-flow download is ~265 MB of JSON but several GB as parsed values, so big
//! bodies are read record by record with [`Records`]: each item is one record and the
//! exact bytes it was parsed from, and nothing but the body is held meanwhile.

use std::io::Read;

use bytes::Bytes;
use serde_json::Value;

use crate::event::{ParseError, Tape, parse_prefix};

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Inflated bodies larger than this are refused (a guard against gzip bombs): 4 GiB.
const MAX_INFLATED: u64 = 4 << 30;

/// The most compressed bytes of a gzip body inflated in one step (64 KiB): the reader
/// holds a step's output (about 8 times as many bytes for JSON) until its records are
/// read, so this bounds the inflated bytes held, however large the network's pieces.
const INFLATE_STEP: usize = 64 << 10;

/// Whether `body` starts with the gzip magic bytes.
pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&GZIP_MAGIC)
}

/// Parses a traffic download (or any list body): gzip is detected by its magic bytes
/// whatever the headers say; then a JSON array, NDJSON (one JSON value a line; objects
/// concatenated with any whitespace also work), or an empty body (no records).
pub fn parse_records(body: &[u8]) -> Result<Vec<Value>, String> {
    if is_gzip(body) {
        let inflated = inflate(body)?;
        return parse_plain(&inflated);
    }
    parse_plain(body)
}

/// Like [`parse_records`], but takes the body so a gzip body is freed as soon as it is
/// inflated (lower peak memory for big downloads).
pub fn parse_records_owned(body: Vec<u8>) -> Result<Vec<Value>, String> {
    if is_gzip(&body) {
        let inflated = inflate(&body)?;
        drop(body);
        return parse_plain(&inflated);
    }
    parse_plain(&body)
}

/// The inflated size a gzip body announces in its trailer (ISIZE, modulo 4 GiB), when it
/// is plausible; used only to size the buffer.
fn inflated_size_hint(body: &[u8]) -> usize {
    const MAX_HINT: usize = 1 << 30;
    let fallback = body.len().saturating_mul(8).min(MAX_HINT);
    let Some(tail) = body.len().checked_sub(4).and_then(|i| body.get(i..)) else {
        return fallback;
    };
    let mut isize_bytes = [0u8; 4];
    isize_bytes.copy_from_slice(tail);
    let announced = u32::from_le_bytes(isize_bytes) as usize;
    if announced >= body.len() && announced <= MAX_HINT {
        announced
    } else {
        fallback
    }
}

fn inflate(body: &[u8]) -> Result<Vec<u8>, String> {
    inflate_into(body, Vec::with_capacity(inflated_size_hint(body)))
}

/// Inflates `body` into `out`.
fn inflate_into(body: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    Ok(out)
}

fn parse_plain(body: &[u8]) -> Result<Vec<Value>, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Ok(Vec::new());
    };
    let body = &body[start..];
    if body[0] == b'[' {
        return serde_json::from_slice::<Vec<Value>>(body).map_err(|e| format!("JSON array: {e}"));
    }
    parse_ndjson(body)
}

fn parse_ndjson(body: &[u8]) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
        .map(|(i, v)| v.map_err(|e| format!("NDJSON record {}: {e}", i + 1)))
        .collect()
}

/// Inflates a gzip body (detected by its magic bytes); other bodies are returned as they
/// are. The compressed body is freed once inflated.
pub fn plain_body(body: Bytes) -> Result<Bytes, String> {
    if is_gzip(&body) {
        let inflated = inflate(&body)?;
        drop(body);
        return Ok(Bytes::from(inflated));
    }
    Ok(body)
}

/// Like [`plain_body`], the inflating done on a blocking thread: for a big download it is
/// seconds of CPU work, which must not hold an async worker. A plain body is returned at
/// once.
pub async fn plain_body_off_workers(body: Bytes) -> Result<Bytes, String> {
    if !is_gzip(&body) {
        return Ok(body);
    }
    // The buffers are made and let go here, as [`plain_body`] does: only the inflating
    // runs on the blocking thread (the buffer is of the size the body announces).
    let out = Vec::with_capacity(inflated_size_hint(&body));
    let (body, inflated) = tokio::task::spawn_blocking(move || {
        let inflated = inflate_into(&body, out);
        (body, inflated)
    })
    .await
    .map_err(|e| format!("gzip body: {e}"))?;
    drop(body);
    inflated.map(Bytes::from)
}

/// The records of a plain (not gzip) body, one at a time: a JSON array, NDJSON, or an
/// empty body. Each item is the record and the bytes it was parsed from (shared with the
/// body, not copied). After an error the iterator ends.
///
/// A body that is still arriving is read with [`Records::incremental`]: bytes are added
/// with [`Records::extend`] as they come, [`Records::poll_tape`] says when it needs more,
/// and [`Records::end`] says there are no more. Only the bytes of records not read yet
/// are held.
#[derive(Debug, Clone)]
pub struct Records {
    body: Bytes,
    pos: usize,
    array: bool,
    index: usize,
    done: bool,
    /// More bytes may follow (a body still arriving).
    more: bool,
    /// The start of the body (a byte order mark, `[`) was read.
    started: bool,
    /// Bytes after the closing `]` that are not whitespace.
    trailing: bool,
}

/// What reading the next record gave.
#[derive(Debug)]
pub enum Step<T> {
    /// A record.
    Item(T),
    /// The bytes so far end inside a record: add more (or end the body).
    More,
    /// No more records.
    Done,
    /// The body is malformed here; nothing follows.
    Fail(String),
}

impl Records {
    /// Records of `body` (see [`plain_body`] for gzip).
    pub fn new(body: Bytes) -> Records {
        Records {
            body,
            pos: 0,
            array: false,
            index: 0,
            done: false,
            more: false,
            started: false,
            trailing: false,
        }
    }

    /// Records of a body whose bytes are yet to come (see [`Records::extend`]).
    pub fn incremental() -> Records {
        Records {
            more: true,
            ..Records::new(Bytes::new())
        }
    }

    /// Adds bytes of the body. The records already read are let go.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.done {
            self.trailing |= bytes.iter().any(|b| !b.is_ascii_whitespace());
            return;
        }
        let body = std::mem::take(&mut self.body);
        let pos = self.pos.min(body.len());
        self.pos = 0;
        // The buffer is reused when nothing else holds it: the bytes not read yet move to
        // its front, and the new ones follow.
        let mut joined = match body.try_into_mut() {
            Ok(mut buf) => {
                bytes::Buf::advance(&mut buf, pos);
                buf
            }
            Err(body) => bytes::BytesMut::from(&body[pos..]),
        };
        joined.reserve(bytes.len());
        joined.extend_from_slice(bytes);
        self.body = joined.freeze();
    }

    /// Says the body is complete.
    pub fn end(&mut self) {
        self.more = false;
    }

    /// How many records were read.
    pub fn read_count(&self) -> usize {
        self.index
    }

    fn ws_from(&self, mut p: usize) -> usize {
        while self.body.get(p).is_some_and(u8::is_ascii_whitespace) {
            p += 1;
        }
        p
    }

    fn fail<T>(&mut self, message: String) -> Step<T> {
        self.done = true;
        Step::Fail(message)
    }

    /// Reads the byte order mark and an opening `[`, once enough bytes are there.
    fn start(&mut self) -> bool {
        if self.started {
            return true;
        }
        let bom: &[u8] = b"\xEF\xBB\xBF";
        let head = &self.body[..self.body.len().min(3)];
        if self.more && head.len() < 3 && bom.starts_with(head) {
            return false;
        }
        let p = self.ws_from(if self.body.starts_with(bom) { 3 } else { 0 });
        match self.body.get(p) {
            None if self.more => return false,
            Some(b'[') => {
                self.array = true;
                self.pos = p + 1;
            }
            _ => self.pos = p,
        }
        self.started = true;
        true
    }

    /// The next record, parsed by `parse` from the body at the given offset (it returns
    /// the record and the offset just after it, or `None` when no value starts there).
    fn step<T, E: Failure>(
        &mut self,
        parse: impl FnOnce(&Bytes, usize) -> Option<Result<(T, usize), E>>,
    ) -> Step<T> {
        if self.trailing {
            self.trailing = false;
            return self.fail("JSON array: trailing characters after `]`".into());
        }
        if self.done {
            // After the closing `]`: the rest of the body must be whitespace.
            return if self.more { Step::More } else { Step::Done };
        }
        if !self.start() {
            return Step::More;
        }
        let mut p = self.ws_from(self.pos);
        if self.array {
            match self.body.get(p) {
                Some(b']') => {
                    self.done = true;
                    let after = self.ws_from(p + 1);
                    self.pos = after;
                    if after < self.body.len() {
                        return self.fail("JSON array: trailing characters after `]`".into());
                    }
                    return if self.more { Step::More } else { Step::Done };
                }
                Some(b',') if self.index > 0 => {
                    p = self.ws_from(p + 1);
                }
                None if self.more => return Step::More,
                None => return self.fail("JSON array: the body ends before `]`".into()),
                _ if self.index > 0 => {
                    return self.fail(format!(
                        "JSON array: expected `,` or `]` after record {}",
                        self.index
                    ));
                }
                _ => {}
            }
            if p >= self.body.len() && self.more {
                return Step::More;
            }
        } else if p >= self.body.len() {
            if self.more {
                return Step::More;
            }
            self.done = true;
            return Step::Done;
        }
        match parse(&self.body, p) {
            // A value that ends where the bytes end may go on (a number): wait for one more.
            Some(Ok((_, end))) if self.more && end >= self.body.len() => Step::More,
            Some(Ok((value, end))) => {
                self.pos = end;
                self.index += 1;
                Step::Item(value)
            }
            Some(Err(e)) if e.is_eof() && self.more => Step::More,
            Some(Err(e)) => {
                let what = if self.array { "JSON array" } else { "NDJSON" };
                self.fail(format!("{what} record {}: {e}", self.index + 1))
            }
            None if self.more => Step::More,
            None => {
                self.done = true;
                if self.array {
                    self.fail("JSON array: the body ends before `]`".into())
                } else {
                    Step::Done
                }
            }
        }
    }

    /// The next record parsed into a [`Tape`] over its bytes (see [`Records::tapes`]).
    pub fn poll_tape(&mut self) -> Step<Tape> {
        self.step(|body, start| {
            let slice = body.get(start..).filter(|s| !s.is_empty())?;
            Some(parse_prefix(slice).map(|(tape, end)| (tape, start + end)))
        })
    }
}

/// A body arriving in pieces, inflated as it comes when it is gzip (told by its magic
/// bytes), read record by record into tapes. It holds the bytes of the records not read
/// yet, not the body.
///
/// [`BodyReader::push`] and [`BodyReader::finish`] inflate where they are called. A caller
/// on an async worker adds bytes with [`BodyReader::accept`] and [`BodyReader::accept_end`]
/// instead, which only keep a gzip body's compressed bytes, and runs the inflating taken
/// with [`BodyReader::take_inflating`] on a blocking thread, handing it back with
/// [`BodyReader::inflated`].
#[derive(Debug)]
pub struct BodyReader {
    records: Records,
    /// The first bytes, until there are enough to tell gzip.
    head: Vec<u8>,
    decided: bool,
    /// The body is gzip.
    gzip: bool,
    /// The gzip body's decoder; `None` while it inflates elsewhere.
    inflater: Option<Inflater>,
    /// Compressed bytes not inflated yet.
    pending: std::collections::VecDeque<Bytes>,
    /// The body is complete.
    ended: bool,
    /// The end of the gzip body was inflated.
    end_inflated: bool,
}

impl Default for BodyReader {
    fn default() -> Self {
        BodyReader {
            records: Records::incremental(),
            head: Vec::new(),
            decided: false,
            gzip: false,
            inflater: None,
            pending: std::collections::VecDeque::new(),
            ended: false,
            end_inflated: false,
        }
    }
}

/// The decoder of a gzip body. Its output buffer is kept from one piece to the next, and
/// made room in by the reader (see [`BodyReader::take_inflating`]), so inflating elsewhere
/// allocates (next to) nothing there.
#[derive(Debug)]
struct Inflater {
    gz: flate2::write::MultiGzDecoder<Vec<u8>>,
    /// Bytes inflated so far.
    inflated: u64,
}

impl Inflater {
    /// Inflates `input`, then the end of the body when `end`; the output waits in the
    /// decoder's buffer.
    fn inflate(&mut self, input: &[Bytes], end: bool) -> Result<(), String> {
        use std::io::Write as _;
        let before = self.gz.get_ref().len();
        for bytes in input {
            self.gz
                .write_all(bytes)
                .map_err(|e| format!("gzip body: {e}"))?;
        }
        if end {
            self.gz
                .try_finish()
                .map_err(|e| format!("gzip body: {e}"))?;
        }
        self.inflated += (self.gz.get_ref().len() - before) as u64;
        if self.inflated > MAX_INFLATED {
            return Err(format!(
                "gzip body: inflates to more than {} GiB",
                MAX_INFLATED >> 30
            ));
        }
        Ok(())
    }
}

/// Compressed bytes of a [`BodyReader`] to inflate (CPU work): [`Inflating::run`] it
/// anywhere, then hand it back with [`BodyReader::inflated`].
#[derive(Debug)]
pub struct Inflating {
    inflater: Inflater,
    input: Vec<Bytes>,
    end: bool,
    result: Result<(), String>,
}

impl Inflating {
    /// Inflates the bytes.
    pub fn run(mut self) -> Inflating {
        self.result = self.inflater.inflate(&self.input, self.end);
        self.input.clear();
        self
    }
}

impl BodyReader {
    /// Adds the next bytes of the body, inflating them here when it is gzip.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.accept(Bytes::copy_from_slice(chunk));
        self.inflate_here()
    }

    /// Says the body is complete (inflating the rest here).
    pub fn finish(&mut self) -> Result<(), String> {
        self.accept_end();
        self.inflate_here()
    }

    /// Adds the next bytes of the body: a plain body's are ready to read, a gzip body's
    /// wait to be inflated ([`BodyReader::take_inflating`]).
    pub fn accept(&mut self, chunk: Bytes) {
        if self.decided {
            return self.route(chunk);
        }
        self.head.extend_from_slice(&chunk);
        if self.head.len() >= GZIP_MAGIC.len() {
            self.decide();
        }
    }

    /// Says the body is complete (the end of a gzip body waits to be inflated).
    pub fn accept_end(&mut self) {
        if !self.decided {
            self.decide();
        }
        self.ended = true;
        if !self.gzip {
            self.records.end();
        }
    }

    fn decide(&mut self) {
        self.decided = true;
        if is_gzip(&self.head) {
            self.gzip = true;
            self.inflater = Some(Inflater {
                gz: flate2::write::MultiGzDecoder::new(Vec::new()),
                inflated: 0,
            });
        }
        let head = std::mem::take(&mut self.head);
        self.route(Bytes::from(head));
    }

    fn route(&mut self, bytes: Bytes) {
        if self.gzip {
            self.pending.push_back(bytes);
        } else {
            self.records.extend(&bytes);
        }
    }

    /// The next compressed bytes to inflate — at most [`INFLATE_STEP`] of them — (and the
    /// body's end, once it came and every byte before it is taken), if any and the
    /// decoder is here.
    pub fn take_inflating(&mut self) -> Option<Inflating> {
        let end_waits = self.ended && !self.end_inflated;
        if !self.gzip || (self.pending.is_empty() && !end_waits) {
            return None;
        }
        let mut inflater = self.inflater.take()?;
        let mut input = Vec::new();
        let mut taken = 0;
        while taken < INFLATE_STEP {
            let Some(mut bytes) = self.pending.pop_front() else {
                break;
            };
            let room = INFLATE_STEP - taken;
            if bytes.len() > room {
                self.pending.push_front(bytes.split_off(room));
            }
            taken += bytes.len();
            input.push(bytes);
        }
        // Room for the output is made here, not where the inflating runs: memory that
        // thread allocated and this one frees would wait there, unused, until it allocates
        // again. JSON inflates about 8 times: room for 16 makes growing there rare.
        inflater.gz.get_mut().reserve(taken.saturating_mul(16));
        Some(Inflating {
            inflater,
            input,
            end: end_waits && self.pending.is_empty(),
            result: Ok(()),
        })
    }

    /// Takes back what [`Inflating::run`] inflated: its output is ready to read.
    pub fn inflated(&mut self, done: Inflating) -> Result<(), String> {
        let Inflating {
            mut inflater,
            end,
            result,
            ..
        } = done;
        let out = inflater.gz.get_mut();
        if result.is_ok() {
            self.records.extend(out);
        }
        out.clear();
        self.inflater = Some(inflater);
        result?;
        if end {
            self.end_inflated = true;
            self.records.end();
        }
        Ok(())
    }

    /// Inflates every compressed byte held, here.
    fn inflate_here(&mut self) -> Result<(), String> {
        while let Some(work) = self.take_inflating() {
            self.inflated(work.run())?;
        }
        Ok(())
    }

    /// The next record (or that more bytes are needed, or the end).
    pub fn next_tape(&mut self) -> Step<Tape> {
        self.records.poll_tape()
    }

    /// How many records were read.
    pub fn count(&self) -> usize {
        self.records.read_count()
    }
}

/// A record's parse error, as [`Records::step`] tells them apart.
trait Failure: std::fmt::Display {
    /// The bytes ended inside the record (more may come).
    fn is_eof(&self) -> bool;
}

impl Failure for serde_json::Error {
    fn is_eof(&self) -> bool {
        serde_json::Error::is_eof(self)
    }
}

impl Failure for ParseError {
    fn is_eof(&self) -> bool {
        ParseError::is_eof(self)
    }
}

fn item<T>(step: Step<T>) -> Option<Result<T, String>> {
    match step {
        Step::Item(v) => Some(Ok(v)),
        Step::Fail(e) => Some(Err(e)),
        Step::More | Step::Done => None,
    }
}

impl Iterator for Records {
    type Item = Result<(Value, Bytes), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let step = self.step(|body, start| {
            let mut stream =
                serde_json::Deserializer::from_slice(body.get(start..)?).into_iter::<Value>();
            match stream.next()? {
                Ok(value) => {
                    let end = start + stream.byte_offset();
                    Some(Ok(((value, body.slice(start..end)), end)))
                }
                Err(e) => Some(Err(e)),
            }
        });
        item(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn formats() {
        assert!(parse_records(b"").unwrap().is_empty());
        assert!(parse_records(b" \n").unwrap().is_empty());
        assert_eq!(parse_records(b"[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(parse_records(b"{\"a\":1}\n{\"a\":2}\n").unwrap().len(), 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let text = format!("[{}{{\"a\":1}}]", "{\"a\":1},".repeat(999));
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        assert_eq!(inflated_size_hint(&zipped), text.len());
        assert_eq!(parse_records(&zipped).unwrap().len(), 1000);
        assert_eq!(parse_records_owned(zipped).unwrap().len(), 1000);
        assert!(parse_records(b"[{\"a\":1}").is_err());
        assert!(parse_records(b"{\"a\":1}\nnope").is_err());
    }

    fn records(body: &'static [u8]) -> Result<Vec<(Value, String)>, String> {
        Records::new(Bytes::from_static(body))
            .map(|r| r.map(|(v, raw)| (v, String::from_utf8(raw.to_vec()).unwrap())))
            .collect()
    }

    #[test]
    fn records_one_at_a_time_with_their_bytes() {
        let got = records(b"\xEF\xBB\xBF [ {\"a\": 1} ,\n{\"a\":[2, 3]} ]\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, "{\"a\": 1}");
        assert_eq!(got[1].0["a"][1], 3);
        assert_eq!(got[1].1, "{\"a\":[2, 3]}");
        assert!(records(b"[]").unwrap().is_empty());
        assert!(records(b"").unwrap().is_empty());
        assert!(records(b"  \n").unwrap().is_empty());
        let nd = records(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        assert_eq!(
            nd.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["{\"a\":1}", "{\"a\":2}"]
        );
        for bad in [
            &b"[{\"a\":1}"[..],
            b"[{\"a\":1} {\"a\":2}]",
            b"[{\"a\":1},]",
            b"[1] x",
            b"{\"a\":1}\nnope",
        ] {
            let all: Vec<_> = Records::new(Bytes::from_static(bad)).collect();
            assert!(
                all.last().is_some_and(Result::is_err),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Every record of a whole body, as tapes (the iterator ends after an error).
    fn tapes_of(body: &'static [u8]) -> Vec<Result<Tape, String>> {
        let mut records = Records::new(Bytes::from_static(body));
        std::iter::from_fn(|| item(records.poll_tape())).collect()
    }

    #[test]
    fn tapes_are_the_records() {
        for body in [
            &b"[ {\"a\": 1} ,\n{\"a\":[2, \"x\\ny\"]} ]"[..],
            b"{\"a\":1}\n{\"b\":{\"c\":null}}\n",
            b"",
            b"[]",
        ] {
            let values: Vec<_> = Records::new(Bytes::from_static(body)).collect();
            let tapes = tapes_of(body);
            assert_eq!(values.len(), tapes.len());
            for (v, t) in values.iter().zip(&tapes) {
                let (v, raw) = v.as_ref().unwrap();
                let t = t.as_ref().unwrap();
                assert_eq!(t.value(), v);
                assert_eq!(t.raw(), raw);
            }
        }
        for bad in [&b"[{\"a\":1}"[..], b"[{\"a\":1},]", b"{\"a\":1}\nnope"] {
            let all = tapes_of(bad);
            assert!(all.last().is_some_and(Result::is_err));
        }
    }

    /// Every record of `body` through a [`BodyReader`] fed `piece` bytes at a time.
    fn in_pieces(body: &[u8], piece: usize) -> Result<Vec<Value>, String> {
        let mut reader = BodyReader::default();
        let mut out = Vec::new();
        let mut chunks = body.chunks(piece.max(1));
        loop {
            match reader.next_tape() {
                Step::Item(t) => out.push(t.value().clone()),
                Step::More => match chunks.next() {
                    Some(c) => reader.push(c)?,
                    None => reader.finish()?,
                },
                Step::Done => return Ok(out),
                Step::Fail(e) => return Err(e),
            }
        }
    }

    #[test]
    fn a_body_read_in_pieces_gives_the_same_records() {
        let text = format!(
            "\u{FEFF}[{}{{\"a\":\"x\\\"y\",\"n\":-1.5e3}}] \n",
            "{\"a\":1,\"b\":[1,2,{\"c\":null}]},".repeat(300)
        );
        let want = parse_records(text.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        let nd = "{\"n\":1}\n{\"n\":22}\n33\n";
        for piece in [1, 2, 3, 7, 64, 4096, 1 << 20] {
            assert_eq!(
                in_pieces(text.as_bytes(), piece).unwrap(),
                want,
                "plain, {piece}"
            );
            assert_eq!(in_pieces(&zipped, piece).unwrap(), want, "gzip, {piece}");
            assert_eq!(
                in_pieces(nd.as_bytes(), piece).unwrap(),
                parse_records(nd.as_bytes()).unwrap(),
                "ndjson, {piece}"
            );
            assert!(in_pieces(b"", piece).unwrap().is_empty());
            assert!(in_pieces(b"[]", piece).unwrap().is_empty());
            for bad in [
                &b"[{\"a\":1}"[..],
                b"[{\"a\":1},]",
                b"{\"a\":1}\nnope",
                b"[1] x",
            ] {
                assert!(
                    in_pieces(bad, piece).is_err(),
                    "{piece}: {}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        assert!(
            in_pieces(&zipped[..zipped.len() / 2], 100).is_err(),
            "a cut gzip body"
        );
    }

    /// Inflating taken away and handed back (several pieces at once, a piece added while
    /// it is away) gives the body's records.
    #[test]
    fn inflating_elsewhere_gives_the_same_records() {
        let text = format!("[{}{{\"a\":2}}]", "{\"a\":1},".repeat(500));
        let want = parse_records(text.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        let mut pieces = zipped.chunks(7).map(Bytes::copy_from_slice);
        let mut reader = BodyReader::default();
        reader.accept(pieces.next().unwrap());
        reader.accept(pieces.next().unwrap());
        let away = reader.take_inflating().expect("bytes to inflate");
        reader.accept(pieces.next().unwrap());
        assert!(reader.take_inflating().is_none(), "the decoder is away");
        reader.inflated(away.run()).unwrap();
        for piece in pieces {
            reader.accept(piece);
            if let Some(work) = reader.take_inflating() {
                reader.inflated(work.run()).unwrap();
            }
        }
        reader.accept_end();
        let mut got = Vec::new();
        loop {
            if let Some(work) = reader.take_inflating() {
                reader.inflated(work.run()).unwrap();
            }
            match reader.next_tape() {
                Step::Item(t) => got.push(t.value().clone()),
                Step::Done => break,
                Step::More => panic!("the whole body was given"),
                Step::Fail(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, want);
    }

    /// A gzip body that arrives in one large piece is inflated a step at a time, its
    /// records read between steps: the reader never holds much more than one step's
    /// output, and every record comes out once, in order.
    #[test]
    fn a_large_gzip_piece_is_inflated_a_step_at_a_time() {
        // Records that do not compress to nothing (each has its own numbers).
        let text = format!(
            "[{}]",
            (0..60_000)
                .map(|i| format!(
                    "{{\"i\":{i},\"x\":\"{:x}\"}}",
                    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        assert!(zipped.len() > 4 * INFLATE_STEP, "{} bytes", zipped.len());
        let mut reader = BodyReader::default();
        reader.accept(Bytes::from(zipped));
        reader.accept_end();
        let (mut steps, mut held, mut read) = (0, 0, 0u64);
        loop {
            match reader.next_tape() {
                Step::Item(t) => {
                    assert_eq!(t.value()["i"], serde_json::json!(read));
                    read += 1;
                }
                Step::More => {
                    let work = reader.take_inflating().expect("compressed bytes left");
                    assert!(work.input.iter().map(Bytes::len).sum::<usize>() <= INFLATE_STEP);
                    reader.inflated(work.run()).unwrap();
                    held = held.max(reader.records.body.len());
                    steps += 1;
                }
                Step::Done => break,
                Step::Fail(e) => panic!("{e}"),
            }
        }
        assert_eq!(read, 60_000);
        assert!(steps >= 4, "{steps} steps");
        assert!(
            held <= 20 * INFLATE_STEP,
            "held {held} inflated bytes at once: {} in all",
            text.len()
        );
    }

    /// Every record of `body` through a [`BodyReader`] given its first `cut` bytes, then
    /// the rest: values and the bytes each was read from.
    fn in_two(body: &[u8], cut: usize) -> Result<Vec<(Value, Bytes)>, String> {
        let mut reader = BodyReader::default();
        let mut out = Vec::new();
        let mut pieces = [&body[..cut], &body[cut..]].into_iter();
        loop {
            match reader.next_tape() {
                Step::Item(t) => out.push((t.value().clone(), t.raw())),
                Step::More => match pieces.next() {
                    Some(p) => reader.push(p)?,
                    None => reader.finish()?,
                },
                Step::Done => return Ok(out),
                Step::Fail(e) => return Err(e),
            }
        }
    }

    /// A body cut anywhere reads as the whole body does: the same records from the same
    /// bytes (a number cut where the bytes end waits for the rest), the same errors.
    #[test]
    fn a_body_cut_anywhere_gives_the_same_tapes() {
        let flow = r#"{"src":{"ip":"10.0.0.1","workload":{"href":"/orgs/1/workloads/a","labels":[{"key":"role","value":"d\u00e9b \"x\""}]}},"dst":{"ip":"10.0.0.2"},"service":{"port":443,"proto":6},"num_connections":12,"ratio":-1.5e-3,"big":18446744073709551616,"ok":true,"none":null,"s":"\ud83d\ude00"}"#;
        let bodies = [
            format!("\u{FEFF}[{flow},\n{flow} , 1, 22,-0.5e2,\"x\",true,null,[333]]\n"),
            format!("{flow}\n{flow}\r\n 1\n22\n-333\ntrue\n\"s\"\n[1,2]\n4.5e1"),
            format!("{flow}{flow} {{}}[]"),
        ];
        for body in &bodies {
            let want: Vec<(Value, Bytes)> = Records::new(Bytes::from(body.clone()))
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(want.len() >= 3, "{body}");
            for cut in 0..=body.len() {
                assert_eq!(
                    in_two(body.as_bytes(), cut).as_ref(),
                    Ok(&want),
                    "{body} at {cut}"
                );
            }
        }
        for bad in [
            format!("[{flow},{flow},]"),
            format!("[{flow} {flow}]"),
            format!("{flow}\n12x\n"),
            format!("{flow}\n{{\"a\":1,}}"),
            format!("[{flow}"),
            format!("{flow}\n{{\"a\":\"\\ud800\"}}"),
        ] {
            let whole = in_two(bad.as_bytes(), bad.len()).unwrap_err();
            for cut in 0..=bad.len() {
                assert_eq!(
                    in_two(bad.as_bytes(), cut).as_ref(),
                    Err(&whole),
                    "{bad} at {cut}"
                );
            }
        }
        assert_eq!(
            in_two(format!("{flow}\n{{\"a\":1 \"b\":2}}").as_bytes(), 5).unwrap_err(),
            "NDJSON record 2: expected ',' or '}' at line 1 column 8"
        );
        assert_eq!(
            in_two(b"[1,\n{\"a\":\n  tru}]", 0).unwrap_err(),
            "JSON array record 2: expected 'true', 'false' or 'null' at line 2 column 6"
        );
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            "[a-z\"\\\\\u{1}é😀 ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\"]{0,3}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Records of any JSON, as an array or NDJSON, in pieces of any sizes: the records
        /// of the whole body.
        #[test]
        fn any_records_in_any_pieces(
            records in proptest::collection::vec(json_value(), 0..6),
            array in proptest::prelude::any::<bool>(),
            pieces in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let mut texts: Vec<String> = records.iter().map(|v| v.to_string()).collect();
            // An NDJSON body that starts with a list is read as a JSON array.
            if let Some(first) = texts.first_mut().filter(|t| !array && t.starts_with('[')) {
                *first = format!("{{\"l\":{first}}}");
            }
            let body = if array {
                format!("[{}]", texts.join(",\n"))
            } else {
                texts.join("\n")
            };
            let want = parse_records(body.as_bytes()).unwrap();
            let mut reader = BodyReader::default();
            let mut got = Vec::new();
            let mut rest = body.as_bytes();
            let mut sizes = pieces.iter().cycle();
            loop {
                match reader.next_tape() {
                    Step::Item(t) => got.push(t.value().clone()),
                    Step::More if rest.is_empty() => reader.finish().unwrap(),
                    Step::More => {
                        let n = sizes.next().copied().unwrap_or(1).min(rest.len());
                        reader.push(&rest[..n]).unwrap();
                        rest = &rest[n..];
                    }
                    Step::Done => break,
                    Step::Fail(e) => proptest::prop_assert!(false, "{e}: {body}"),
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn records_agree_with_parse_records() {
        let body = br#"[{"src":{"ip":"10.0.0.1"},"n":1},{"dst":{"fqdn":"x.example"},"n":2}]"#;
        let all: Vec<Value> = Records::new(Bytes::from_static(body))
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(all, parse_records(body).unwrap());
    }
}
