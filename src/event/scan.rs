//! Reading JSON text straight into a [`Tape`]'s nodes.
//!
//! One pass over the bytes: a string without escapes becomes a [`Node::Raw`] (where it is
//! in the record's text), one with escapes is unescaped into the tape's owned strings.
//! The rules are RFC 8259's, as `serde_json` applies them (the records' `Value`s, when
//! asked for, must be what `serde_json` would have made): no comments, no trailing commas,
//! no leading zeros, no control characters in strings, `\u` escapes paired when they are
//! surrogates, lists and objects nested at most 127 deep; numbers become `u64`, negative
//! `i64` or the nearest `f64` as `serde_json` makes them (with its `float_roundtrip`, which
//! a dependency turns on), and a number too big for `f64` is an error.
//!
//! Outside strings JSON is ASCII, so the UTF-8 of a record is checked once, over its
//! bytes, after its end is found, not string by string.

use std::sync::Arc;

use super::tape::{Node, Tape};

/// Lists and objects may nest this deep, less one (as in `serde_json`: the 128th opened
/// inside the others is an error).
const DEPTH_LIMIT: usize = 128;

/// What is wrong with a record's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The bytes end inside a value.
    EndInValue,
    /// The bytes end inside a string.
    EndInString,
    /// The bytes end inside a list.
    EndInList,
    /// The bytes end inside an object.
    EndInObject,
    /// A value was expected.
    ExpectedValue,
    /// Something other than `true`, `false` or `null` where one of them began.
    ExpectedLiteral,
    /// A malformed number.
    InvalidNumber,
    /// A number too big for a 64-bit float.
    NumberOutOfRange,
    /// No `:` after an object's key.
    ExpectedColon,
    /// Neither `,` nor `]` after a list's item.
    ExpectedListCommaOrEnd,
    /// Neither `,` nor `}` after an object's value.
    ExpectedObjectCommaOrEnd,
    /// An object's key that is not a string.
    KeyMustBeAString,
    /// A `,` right before `]` or `}`.
    TrailingComma,
    /// More after the value.
    TrailingCharacters,
    /// A byte below 0x20 inside a string.
    ControlCharacter,
    /// A `\` escape that JSON does not have.
    InvalidEscape,
    /// A `\u` escape of half a surrogate pair without the other half.
    LoneSurrogate,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Lists and objects nested too deep.
    TooDeep,
    /// More values than a tape numbers.
    TooManyValues,
    /// A record longer than a tape's offsets reach (4 GiB).
    TooLong,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::EndInValue => "the text ends before the value does",
            Problem::EndInString => "the text ends inside a string",
            Problem::EndInList => "the text ends inside a list (no closing ']')",
            Problem::EndInObject => "the text ends inside an object (no closing '}')",
            Problem::ExpectedValue => "expected a value",
            Problem::ExpectedLiteral => "expected 'true', 'false' or 'null'",
            Problem::InvalidNumber => "invalid number",
            Problem::NumberOutOfRange => "number out of range (too big for a 64-bit float)",
            Problem::ExpectedColon => "expected ':' after an object's key",
            Problem::ExpectedListCommaOrEnd => "expected ',' or ']'",
            Problem::ExpectedObjectCommaOrEnd => "expected ',' or '}'",
            Problem::KeyMustBeAString => "an object's key must be a string",
            Problem::TrailingComma => "trailing comma",
            Problem::TrailingCharacters => "trailing characters after the value",
            Problem::ControlCharacter => {
                "control character (U+0000 to U+001F) inside a string (it must be escaped)"
            }
            Problem::InvalidEscape => "invalid escape in a string",
            Problem::LoneSurrogate => "lone surrogate in a '\\u' escape (half of a pair)",
            Problem::InvalidUtf8 => "invalid UTF-8",
            Problem::TooDeep => "lists and objects nested more than 127 deep",
            Problem::TooManyValues => "the record has too many values (more than 2^32)",
            Problem::TooLong => "the record is longer than 4 GiB",
        })
    }
}

/// A record that is not JSON: what is wrong, and where (line and column, from 1, in the
/// record's text; the column counts bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at line {line} column {column}")]
pub struct ParseError {
    problem: Problem,
    line: usize,
    column: usize,
}

impl ParseError {
    /// What is wrong.
    pub fn problem(&self) -> Problem {
        self.problem
    }

    /// The line it is on, from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column it is at, from 1 (in bytes).
    pub fn column(&self) -> usize {
        self.column
    }

    /// Whether the bytes ended early: more of them might make a value.
    pub fn is_eof(&self) -> bool {
        matches!(
            self.problem,
            Problem::EndInValue | Problem::EndInString | Problem::EndInList | Problem::EndInObject
        )
    }

    /// The error `problem` at byte `at` of `bytes`.
    #[cold]
    fn at(problem: Problem, bytes: &[u8], at: usize) -> ParseError {
        let at = at.min(bytes.len());
        let before = bytes.get(..at).unwrap_or_default();
        let line_start = memchr::memrchr(b'\n', before).map_or(0, |n| n + 1);
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        // A byte's column; past the end, the last byte's.
        let column = if at < bytes.len() {
            at - line_start + 1
        } else {
            (at - line_start).max(1)
        };
        ParseError {
            problem,
            line,
            column,
        }
    }
}

/// A problem and the byte it is at, while scanning.
type Fail = (Problem, usize);

/// A JSON value read into nodes.
struct Scanned {
    nodes: Box<[Node]>,
    owned: Vec<Box<str>>,
    duplicates: bool,
    /// Just after the value.
    end: usize,
}

/// Parses `raw`, one JSON value with whitespace around it and nothing else, into a tape
/// over all of `raw`.
pub(super) fn parse(raw: &[u8]) -> Result<Tape, ParseError> {
    let start = skip_ws(raw, 0);
    let scanned = scan(raw, start).map_err(|(p, at)| ParseError::at(p, raw, at))?;
    let after = skip_ws(raw, scanned.end);
    if after < raw.len() {
        return Err(ParseError::at(Problem::TrailingCharacters, raw, after));
    }
    let text = utf8(raw, 0, raw.len())?;
    Ok(tape(text, scanned))
}

/// Reads the JSON value at the start of `bytes` (after whitespace): its tape, over its
/// bytes only, and the offset just after it. A value that is not a list, an object or a
/// string must be followed by whitespace, a bracket, `,`, `:`, `"` or the end (as in a
/// stream of values: `1x` is an error, not `1` then `x`).
pub(crate) fn parse_prefix(bytes: &[u8]) -> Result<(Tape, usize), ParseError> {
    let start = skip_ws(bytes, 0);
    let scanned = scan(bytes, start).map_err(|(p, at)| ParseError::at(p, bytes, at))?;
    let end = scanned.end;
    let delimited = matches!(bytes.get(start), Some(b'[' | b'{' | b'"'));
    if !delimited {
        match bytes.get(end) {
            None
            | Some(b' ' | b'\n' | b'\t' | b'\r' | b'"' | b'[' | b']' | b'{' | b'}' | b',' | b':') =>
                {}
            Some(_) => return Err(ParseError::at(Problem::TrailingCharacters, bytes, end)),
        }
    }
    let text = utf8(bytes, start, end)?;
    // The nodes' offsets count from the start of `bytes`; the text starts at the value.
    let mut scanned = scanned;
    if start > 0 {
        let shift = u32::try_from(start).map_err(|_| ParseError::at(Problem::TooLong, bytes, 0))?;
        for n in &mut scanned.nodes {
            if let Node::Raw(off, _) = n {
                *off = off.saturating_sub(shift);
            }
        }
    }
    Ok((tape(text, scanned), end))
}

/// The text of `bytes[from..to]`, checked once for UTF-8 (an error's place counts in all
/// of `bytes`).
fn utf8(bytes: &[u8], from: usize, to: usize) -> Result<Arc<str>, ParseError> {
    match std::str::from_utf8(bytes.get(from..to).unwrap_or_default()) {
        Ok(t) => Ok(Arc::from(t)),
        Err(e) => Err(ParseError::at(
            Problem::InvalidUtf8,
            bytes,
            from + e.valid_up_to(),
        )),
    }
}

fn tape(text: Arc<str>, s: Scanned) -> Tape {
    Tape::from_scan(text, s.nodes, s.owned, s.duplicates)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

thread_local! {
    /// The nodes of the record being read, kept for the next one: a tape gets a copy of
    /// exactly its size, and the list does not grow record after record.
    static NODES: std::cell::Cell<Vec<Node>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Node lists longer than this are not kept for the next record.
const KEEP_NODES: usize = 1 << 16;

/// Reads one value starting at `start` (whitespace before it is skipped).
fn scan(bytes: &[u8], start: usize) -> Result<Scanned, Fail> {
    let mut nodes = NODES.take();
    nodes.clear();
    let mut s = Scanner {
        b: bytes,
        i: skip_ws(bytes, start),
        nodes,
        owned: Vec::new(),
        scratch: Vec::new(),
        duplicates: false,
    };
    let read = s.value(0);
    let fits = u32::try_from(s.nodes.len()).is_ok();
    let nodes: Box<[Node]> = if read.is_ok() && fits {
        Box::from(s.nodes.as_slice())
    } else {
        Box::default()
    };
    if s.nodes.capacity() <= KEEP_NODES {
        NODES.set(std::mem::take(&mut s.nodes));
    }
    read?;
    if !fits {
        return Err((Problem::TooManyValues, start));
    }
    Ok(Scanned {
        nodes,
        owned: s.owned,
        duplicates: s.duplicates,
        end: s.i,
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    /// The next byte to read.
    i: usize,
    nodes: Vec<Node>,
    owned: Vec<Box<str>>,
    /// An escaped string being unescaped.
    scratch: Vec<u8>,
    duplicates: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    /// The value at `self.i` (whitespace skipped), inside `depth` lists and objects.
    fn value(&mut self, depth: usize) -> Result<(), Fail> {
        self.ws();
        let Some(c) = self.peek() else {
            return Err((Problem::EndInValue, self.i));
        };
        match c {
            b'"' => {
                self.i += 1;
                let n = self.string()?;
                self.nodes.push(n);
            }
            b'{' => self.object(depth + 1)?,
            b'[' => self.list(depth + 1)?,
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                self.nodes.push(n);
            }
            b't' => {
                self.literal(b"true")?;
                self.nodes.push(Node::Bool(true));
            }
            b'f' => {
                self.literal(b"false")?;
                self.nodes.push(Node::Bool(false));
            }
            b'n' => {
                self.literal(b"null")?;
                self.nodes.push(Node::Null);
            }
            _ => return Err((Problem::ExpectedValue, self.i)),
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        for &w in word {
            match self.peek() {
                None => return Err((Problem::EndInValue, self.i)),
                Some(c) if c == w => self.i += 1,
                Some(_) => return Err((Problem::ExpectedLiteral, self.i)),
            }
        }
        Ok(())
    }

    /// The node index `n` as a tape's `u32` (the node count is checked at the end).
    fn index(n: usize) -> u32 {
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn list(&mut self, depth: usize) -> Result<(), Fail> {
        if depth >= DEPTH_LIMIT {
            return Err((Problem::TooDeep, self.i));
        }
        self.i += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Null);
        let mut len = 0u32;
        self.ws();
        match self.peek() {
            None => return Err((Problem::EndInList, self.i)),
            Some(b']') => self.i += 1,
            Some(_) => loop {
                self.value(depth)?;
                len = len.saturating_add(1);
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        match self.peek() {
                            Some(b']') => return Err((Problem::TrailingComma, self.i)),
                            None => return Err((Problem::EndInValue, self.i)),
                            Some(_) => {}
                        }
                    }
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    None => return Err((Problem::EndInList, self.i)),
                    Some(_) => return Err((Problem::ExpectedListCommaOrEnd, self.i)),
                }
            },
        }
        let end = Self::index(self.nodes.len());
        self.nodes[at] = Node::Arr { len, end };
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), Fail> {
        if depth >= DEPTH_LIMIT {
            return Err((Problem::TooDeep, self.i));
        }
        self.i += 1;
        let at = self.nodes.len();
        self.nodes.push(Node::Null);
        let mut len = 0u32;
        // A bit for each key's hash: a key whose bit is set may repeat one.
        let mut seen = 0u64;
        self.ws();
        match self.peek() {
            None => return Err((Problem::EndInObject, self.i)),
            Some(b'}') => self.i += 1,
            Some(b'"') => loop {
                self.i += 1;
                let key_start = self.i;
                let key = self.string()?;
                if !self.duplicates {
                    let bit = match key {
                        // Its text is where it was read.
                        Node::Raw(..) => key_bit(self.b.get(key_start..self.i - 1)),
                        _ => key_bit(Some(self.text(key))),
                    };
                    if seen & bit != 0 && self.repeats(at, len, key) {
                        self.duplicates = true;
                    }
                    seen |= bit;
                }
                self.nodes.push(key);
                self.ws();
                match self.peek() {
                    Some(b':') => self.i += 1,
                    None => return Err((Problem::EndInObject, self.i)),
                    Some(_) => return Err((Problem::ExpectedColon, self.i)),
                }
                self.value(depth)?;
                len = len.saturating_add(1);
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        match self.peek() {
                            Some(b'"') => {}
                            Some(b'}') => return Err((Problem::TrailingComma, self.i)),
                            None => return Err((Problem::EndInValue, self.i)),
                            Some(_) => return Err((Problem::KeyMustBeAString, self.i)),
                        }
                    }
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    None => return Err((Problem::EndInObject, self.i)),
                    Some(_) => return Err((Problem::ExpectedObjectCommaOrEnd, self.i)),
                }
            },
            Some(_) => return Err((Problem::KeyMustBeAString, self.i)),
        }
        let end = Self::index(self.nodes.len());
        self.nodes[at] = Node::Obj { len, end };
        Ok(())
    }

    /// The text of a string node.
    fn text(&self, n: Node) -> &[u8] {
        match n {
            Node::Raw(off, len) => {
                let off = off as usize;
                self.b.get(off..off + len as usize).unwrap_or_default()
            }
            Node::Owned(i) => self.owned.get(i as usize).map_or(&[], |s| s.as_bytes()),
            _ => &[],
        }
    }

    /// Whether `key` is one of the `len` keys of the object at node `at` so far.
    fn repeats(&self, at: usize, len: u32, key: Node) -> bool {
        let text = self.text(key);
        let mut i = at + 1;
        for _ in 0..len {
            let Some(k) = self.nodes.get(i) else {
                return false;
            };
            if self.text(*k) == text {
                return true;
            }
            // Past the key and its value.
            i = match self.nodes.get(i + 1) {
                Some(Node::Arr { end, .. } | Node::Obj { end, .. }) => *end as usize,
                _ => i + 2,
            };
        }
        false
    }

    /// The string whose opening quote was just read.
    fn string(&mut self) -> Result<Node, Fail> {
        let start = self.i;
        let stop = special(self.b, start);
        match self.b.get(stop) {
            Some(b'"') => {
                self.i = stop + 1;
                match (u32::try_from(start), u32::try_from(stop - start)) {
                    (Ok(off), Ok(len)) => Ok(Node::Raw(off, len)),
                    _ => Err((Problem::TooLong, start)),
                }
            }
            Some(b'\\') => self.escaped(start, stop),
            Some(_) => Err((Problem::ControlCharacter, stop)),
            None => Err((Problem::EndInString, self.b.len())),
        }
    }

    /// The rest of a string from `start` whose first escape is at `at`, unescaped.
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut at: usize) -> Result<Node, Fail> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.extend_from_slice(self.b.get(start..at).unwrap_or_default());
        let result = loop {
            // `at` is a backslash.
            self.i = at + 1;
            if let Err(e) = self.escape(&mut out) {
                break Err(e);
            }
            let from = self.i;
            let stop = special(self.b, from);
            out.extend_from_slice(self.b.get(from..stop).unwrap_or_default());
            match self.b.get(stop) {
                Some(b'"') => {
                    self.i = stop + 1;
                    break Ok(());
                }
                Some(b'\\') => at = stop,
                Some(_) => break Err((Problem::ControlCharacter, stop)),
                None => break Err((Problem::EndInString, self.b.len())),
            }
        };
        let node = result.and_then(|()| match std::str::from_utf8(&out) {
            Ok(s) => {
                self.owned.push(Box::from(s));
                Ok(Node::Owned(Self::index(self.owned.len() - 1)))
            }
            Err(e) => Err((Problem::InvalidUtf8, start + e.valid_up_to())),
        });
        self.scratch = out;
        node
    }

    /// One escape, after its backslash, unescaped into `out`.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Fail> {
        let Some(c) = self.peek() else {
            return Err((Problem::EndInString, self.i));
        };
        self.i += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode(out),
            _ => return Err((Problem::InvalidEscape, self.i - 1)),
        };
        out.push(byte);
        Ok(())
    }

    /// Four hex digits.
    fn hex4(&mut self) -> Result<u32, Fail> {
        let Some(digits) = self.b.get(self.i..self.i + 4) else {
            return Err((Problem::EndInString, self.b.len()));
        };
        let mut n = 0u32;
        for (k, d) in digits.iter().enumerate() {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err((Problem::InvalidEscape, self.i + k)),
            };
            n = n << 4 | u32::from(v);
        }
        self.i += 4;
        Ok(n)
    }

    /// A `\u` escape, after its `u`: one code point, or a surrogate pair.
    fn unicode(&mut self, out: &mut Vec<u8>) -> Result<(), Fail> {
        let n = self.hex4()?;
        let code = match n {
            0xDC00..=0xDFFF => return Err((Problem::LoneSurrogate, self.i - 1)),
            0xD800..=0xDBFF => {
                for want in [b'\\', b'u'] {
                    match self.peek() {
                        None => return Err((Problem::EndInString, self.i)),
                        Some(c) if c == want => self.i += 1,
                        Some(_) => return Err((Problem::LoneSurrogate, self.i)),
                    }
                }
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err((Problem::LoneSurrogate, self.i - 1));
                }
                0x1_0000 + ((n - 0xD800) << 10 | (low - 0xDC00))
            }
            n => n,
        };
        let ch = char::from_u32(code).ok_or((Problem::InvalidEscape, self.i - 1))?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    /// A number, at its first character: an integer that fits is a `u64` (a negative one
    /// an `i64`); anything else (a fraction, an exponent, too many digits, `-0`) is the
    /// nearest `f64`, as `serde_json` makes it with `float_roundtrip` (which a dependency
    /// turns on), and one too big for `f64` is an error.
    fn number(&mut self) -> Result<Node, Fail> {
        let start = self.i;
        let positive = self.peek() != Some(b'-');
        if !positive {
            self.i += 1;
        }
        let Some(c) = self.peek() else {
            return Err((Problem::EndInValue, self.i));
        };
        self.i += 1;
        let mut sig = match c {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err((Problem::InvalidNumber, self.i));
                }
                0
            }
            b'1'..=b'9' => u64::from(c - b'0'),
            _ => return Err((Problem::InvalidNumber, self.i - 1)),
        };
        // Past what `u64` holds: a float.
        let mut float = false;
        if sig != 0 {
            while let Some(d @ b'0'..=b'9') = self.peek() {
                self.i += 1;
                let d = u64::from(d - b'0');
                if !float {
                    match sig.checked_mul(10).and_then(|s| s.checked_add(d)) {
                        Some(s) => sig = s,
                        None => float = true,
                    }
                }
            }
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
            float = true;
        }
        if float {
            return self.float(start);
        }
        Ok(if positive {
            Node::U64(sig)
        } else if sig == 0 {
            // `-0` is a float.
            Node::F64(-0.0)
        } else {
            match 0i64.checked_sub_unsigned(sig) {
                Some(n) => Node::I64(n),
                None => Node::F64(-(sig as f64)),
            }
        })
    }

    /// One digit or more (after a number's `.` or exponent).
    fn digits(&mut self) -> Result<(), Fail> {
        match self.peek() {
            Some(b'0'..=b'9') => self.i += 1,
            Some(_) => return Err((Problem::InvalidNumber, self.i)),
            None => return Err((Problem::EndInValue, self.i)),
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        Ok(())
    }

    /// The number from `start` to here, as the nearest `f64`.
    #[inline(never)]
    fn float(&self, start: usize) -> Result<Node, Fail> {
        let text = self
            .b
            .get(start..self.i)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or((Problem::InvalidNumber, start))?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Node::F64(f)),
            Ok(_) => Err((Problem::NumberOutOfRange, self.i)),
            Err(_) => Err((Problem::InvalidNumber, start)),
        }
    }
}

/// The one of 64 bits that a key's text sets (from its length, first and last bytes): a
/// key whose bit an earlier key of its object set may repeat it.
#[inline(always)]
fn key_bit(text: Option<&[u8]>) -> u64 {
    let t = text.unwrap_or_default();
    let first = u64::from(t.first().copied().unwrap_or(0));
    let last = u64::from(t.last().copied().unwrap_or(0));
    let x = (t.len() as u64) ^ first << 16 ^ last << 24;
    1 << (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is `"`, `\` or below 0x20 (the lowest one set is
/// exact; above it there may be false ones).
fn specials(x: u64) -> u64 {
    let quote = x ^ (ONES * u64::from(b'"'));
    let slash = x ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_slash = slash.wrapping_sub(ONES) & !slash;
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    (zero_quote | zero_slash | control) & HIGHS
}

/// The offset of the first `"`, `\` or control byte at or after `from` (the length when
/// there is none).
fn special(b: &[u8], from: usize) -> usize {
    let rest = b.get(from..).unwrap_or_default();
    let mut chunks = rest.chunks_exact(8);
    let mut at = from;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let hits = specials(u64::from_le_bytes(word));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    for &c in chunks.remainder() {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return at;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Number, Value};

    /// Whether some object repeats a key, and how many pairs the objects have in all, as
    /// `serde_json` reads `text`.
    #[derive(Default)]
    struct Facts {
        duplicates: bool,
        pairs: usize,
    }

    struct Count<'a>(&'a mut Facts);

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Count(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                self.0.pairs += 1;
                if !keys.insert(k) {
                    self.0.duplicates = true;
                }
                map.next_value_seed(Count(&mut *self.0))?;
            }
            Ok(())
        }
    }

    fn facts(text: &[u8]) -> Facts {
        let mut f = Facts::default();
        let mut de = serde_json::Deserializer::from_slice(text);
        Count(&mut f).deserialize(&mut de).expect("valid JSON");
        f
    }

    /// The tape of `text` is what `serde_json` makes of it, or both refuse it.
    fn check(text: &[u8]) -> Result<(), String> {
        let want = serde_json::from_slice::<Value>(text);
        let got = Tape::parse(Bytes::copy_from_slice(text));
        let shown = String::from_utf8_lossy(text);
        match (want, got) {
            (Ok(v), Ok(t)) => {
                if t.value() != &v {
                    return Err(format!("{shown}: {:?} != {v:?}", t.value()));
                }
                // Key order, `-0.0`, float digits.
                let (a, b) = (serde_json::to_string(t.value()), serde_json::to_string(&v));
                if a.as_ref().ok() != b.as_ref().ok() {
                    return Err(format!("{shown}: {a:?} != {b:?}"));
                }
                let (duplicates, pairs) = t.key_facts();
                let f = facts(text);
                if (duplicates, pairs) != (f.duplicates, f.pairs) {
                    return Err(format!(
                        "{shown}: duplicates {duplicates} pairs {pairs}, want {} {}",
                        f.duplicates, f.pairs
                    ));
                }
                if t.raw() != text {
                    return Err(format!("{shown}: raw {:?}", t.raw()));
                }
                Ok(())
            }
            (Err(_), Err(_)) => Ok(()),
            (Ok(v), Err(e)) => Err(format!("{shown}: refused ({e}) but serde_json reads {v:?}")),
            (Err(e), Ok(t)) => Err(format!(
                "{shown}: read as {:?} but serde_json refuses it ({e})",
                t.value()
            )),
        }
    }

    fn ok(text: &str) {
        assert!(Tape::parse(Bytes::from(text.to_string())).is_ok(), "{text}");
        check(text.as_bytes()).unwrap();
    }

    fn bad(text: &[u8]) -> ParseError {
        check(text).unwrap();
        match Tape::parse(Bytes::copy_from_slice(text)) {
            Ok(t) => panic!("{}: read as {:?}", String::from_utf8_lossy(text), t.value()),
            Err(e) => e,
        }
    }

    fn err(text: &str) -> String {
        bad(text.as_bytes()).to_string()
    }

    #[test]
    fn structure() {
        for text in [
            "null",
            " true ",
            "\n\t\r false\n",
            "[]",
            "{}",
            "[ ]",
            "{ }",
            "[1,[2,[3,{}]],{\"a\":[]}]",
            "{\"a\" : 1 , \"b\" :[ null ,true]}",
            "\"\"",
        ] {
            ok(text);
        }
        assert_eq!(
            err("{\"a\":1 \"b\":2}"),
            "expected ',' or '}' at line 1 column 8"
        );
        assert_eq!(err("[1 2]"), "expected ',' or ']' at line 1 column 4");
        assert_eq!(
            err("{\"a\" 1}"),
            "expected ':' after an object's key at line 1 column 6"
        );
        assert_eq!(err("[1,]"), "trailing comma at line 1 column 4");
        assert_eq!(err("{\"a\":1,}"), "trailing comma at line 1 column 8");
        assert_eq!(
            err("{1:2}"),
            "an object's key must be a string at line 1 column 2"
        );
        assert_eq!(
            err("{\"a\":1,2:3}"),
            "an object's key must be a string at line 1 column 8"
        );
        assert_eq!(
            err("[1] x"),
            "trailing characters after the value at line 1 column 5"
        );
        assert_eq!(
            err("1 2"),
            "trailing characters after the value at line 1 column 3"
        );
        assert_eq!(err("[,1]"), "expected a value at line 1 column 2");
        assert_eq!(
            err("nul"),
            "the text ends before the value does at line 1 column 3"
        );
        assert_eq!(
            err("nulL"),
            "expected 'true', 'false' or 'null' at line 1 column 4"
        );
        assert_eq!(err("[1, // no\n2]"), "expected a value at line 1 column 5");
        assert_eq!(err("NaN"), "expected a value at line 1 column 1");
        assert_eq!(
            err(""),
            "the text ends before the value does at line 1 column 1"
        );
        assert_eq!(
            err("   "),
            "the text ends before the value does at line 1 column 3"
        );
        let e = bad(b"{\n  \"a\": 1,\n  \"b\": [1, 2,\n");
        assert_eq!(
            e.to_string(),
            "the text ends before the value does at line 4 column 1"
        );
        assert!(e.is_eof());
        assert_eq!((e.line(), e.column()), (4, 1));
        let e = bad(b"{\n  \"a\": 1,\n  \"b\": x}");
        assert_eq!(e.to_string(), "expected a value at line 3 column 8");
        assert!(!e.is_eof());
        for (text, eof) in [
            ("[", true),
            ("[1", true),
            ("[1,", true),
            ("{", true),
            ("{\"a\"", true),
            ("{\"a\":", true),
            ("{\"a\":1", true),
            ("{\"a\":1,", true),
            ("\"abc", true),
            ("-", true),
            ("1.", true),
            ("1e", true),
            ("1e+", true),
            ("tr", true),
            ("[}", false),
            ("{]", false),
            ("]", false),
            ("+1", false),
        ] {
            assert_eq!(bad(text.as_bytes()).is_eof(), eof, "{text}");
        }
        // Whitespace is space, tab, line feed and carriage return only.
        bad(b"\x0c1");
        bad("\u{a0}1".as_bytes());
    }

    #[test]
    fn nesting_stops_at_serde_json_s_limit() {
        let nested =
            |n: usize, open: &str, close: &str| format!("{}{}", open.repeat(n), close.repeat(n));
        ok(&nested(127, "[", "]"));
        ok(&nested(127, "{\"a\":", "}").replace(":}", ":1}"));
        assert_eq!(
            err(&nested(128, "[", "]")),
            "lists and objects nested more than 127 deep at line 1 column 128"
        );
        bad(nested(128, "{\"a\":", "}").as_bytes());
        bad(nested(100_000, "[", "]").as_bytes());
        let mixed = format!("{}{}", "[{\"a\":".repeat(64), "}]".repeat(64));
        check(mixed.as_bytes()).unwrap();
        assert!(Tape::parse(Bytes::from(mixed)).is_err());
    }

    #[test]
    fn numbers() {
        let num = |text: &str| {
            Tape::parse(Bytes::from(text.to_string()))
                .unwrap()
                .value()
                .clone()
        };
        for text in [
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1",
            "-1",
            "1.5",
            "-1.5e3",
            "1E2",
            "1e+2",
            "1e-2",
            "123456789012345678",
            "18446744073709551615",
            "18446744073709551616",
            "184467440737095516150",
            "-9223372036854775808",
            "-9223372036854775809",
            "-18446744073709551616",
            "99999999999999999999999999999999999.5",
            "0.000000000000000000000000000000000000000000001",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
            "1e-400",
            "-1e-400",
            "0e99999999999",
            "1e-99999999999",
            "1.00000000000000000000000000000000000001e10",
            "18446744073709551616.5",
            "1844674407370955161.5",
            "0.1",
            "3.141592653589793",
            "1e22",
            "1e23",
            "123e-300",
        ] {
            ok(text);
            ok(&format!("[{text}]"));
            ok(&format!("{{\"n\":{text}}}"));
        }
        assert_eq!(num("-0").to_string(), "-0.0", "a float, negative zero");
        assert!(num("-0").is_f64());
        assert!(num("0").is_u64());
        assert_eq!(num("18446744073709551615").as_u64(), Some(u64::MAX));
        assert!(num("18446744073709551616").is_f64());
        assert_eq!(num("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert!(num("-9223372036854775809").is_f64());
        assert!(num("-1").is_i64());
        assert!(num("1.0").is_f64());
        assert_eq!(num("1e-400").as_f64(), Some(0.0));
        for text in [
            "1e400",
            "-1e400",
            "1e99999999999",
            "1.8e308",
            "1e309",
            "01",
            "-01",
            "00",
            "1.",
            "1.e5",
            ".5",
            "1e",
            "1e+",
            "-",
            "--1",
            "+1",
            "0x10",
            "1.5.5",
            "Infinity",
            "-Infinity",
            "1e5.5",
        ] {
            bad(text.as_bytes());
        }
        assert_eq!(
            err("1e400"),
            "number out of range (too big for a 64-bit float) at line 1 column 5"
        );
        assert_eq!(err("[01]"), "invalid number at line 1 column 3");
    }

    #[test]
    fn strings() {
        for text in [
            r#""plain""#,
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""\u0041\u00e9\u20AC\ud83d\ude00""#,
            r#""\u0000""#,
            "\"\u{7f}é€😀\"",
            r#"{"a\u0041":"x","aA":"y"}"#,
            r#"{"k":"\\"}"#,
            r#""ab\"""#,
        ] {
            ok(text);
        }
        let t = Tape::parse(Bytes::from_static(
            br#"{"a":"x\ny","b\u00e9":"\ud83d\ude00"}"#,
        ))
        .unwrap();
        assert_eq!(t.value(), &serde_json::json!({"a": "x\ny", "bé": "😀"}));
        assert_eq!(
            err("\"a\u{1}b\""),
            "control character (U+0000 to U+001F) inside a string (it must be escaped) at line 1 column 3"
        );
        bad(b"\"a\nb\"");
        bad(b"\"a\tb\"");
        assert_eq!(
            err(r#""\x""#),
            "invalid escape in a string at line 1 column 3"
        );
        bad(br#""\u00G0""#);
        bad(br#""\U0041""#);
        bad(br#""\'""#);
        assert_eq!(
            err(r#""\ude00""#),
            "lone surrogate in a '\\u' escape (half of a pair) at line 1 column 7"
        );
        bad(br#""\ud83d""#);
        bad(br#""\ud83dx""#);
        bad(br#""\ud83d\n""#);
        bad(br#""\ud83d\u0041""#);
        bad(br#""\ud83d\ud83d""#);
        let e = bad(br#""\u00"#);
        assert!(e.is_eof());
        assert!(bad(br#""\ud83d"#).is_eof());
        // Bytes that are not UTF-8, in strings plain and escaped, keys, and outside.
        assert_eq!(
            bad(b"{\"a\":\"\xff\"}").to_string(),
            "invalid UTF-8 at line 1 column 7"
        );
        bad(b"[\"\\n\xc3\"]");
        bad(b"{\"\xe2\x82\":1}");
        bad(b"\xef\xbb\xbf{}");
        bad(b"[1]\xff");
        ok("\"\u{10FFFF}\"");
    }

    #[test]
    fn repeated_keys_are_told_exactly() {
        let dup = |text: &str| {
            check(text.as_bytes()).unwrap();
            Tape::parse(Bytes::from(text.to_string()))
                .unwrap()
                .key_facts()
                .0
        };
        assert!(!dup(r#"{"a":1,"b":2}"#));
        assert!(dup(r#"{"a":1,"a":2}"#));
        assert!(dup(r#"{"x":{"a":1,"b":{"a":3},"a":2}}"#));
        assert!(!dup(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#));
        assert!(dup(r#"{"a":1,"\u0061":2}"#));
        assert!(!dup(r#"{"ab":1,"ba":2,"aab":3,"abb":4,"":5}"#));
        assert!(dup(r#"{"":1,"":2}"#));
        assert!(dup(r#"[{"k":1},{"k":1,"j":[],"k":{}}]"#));
        // Many keys: every 64-bit hash table slot taken, none repeated.
        let many: Vec<String> = (0..500).map(|i| format!("\"key{i}\":{i}")).collect();
        let text = format!("{{{}}}", many.join(","));
        assert!(!dup(&text));
        let text = format!("{{{},\"key250\":0}}", many.join(","));
        assert!(dup(&text));
        // Same length, first, middle and last bytes.
        assert!(!dup(r#"{"a1x2b":1,"a3x4b":2,"a5x6b":3}"#));
        assert!(dup(r#"{"a1x2b":1,"a3x4b":2,"a1x2b":3}"#));
        // The last one counts on lookup.
        let t = Tape::parse(Bytes::from_static(br#"{"a":1,"b":2,"a":3}"#)).unwrap();
        assert_eq!(t.root().get("a").and_then(|f| f.as_u64()), Some(3));
        assert_eq!(t.value(), &serde_json::json!({"a": 3, "b": 2}));
    }

    #[test]
    fn a_prefix_is_a_value_and_where_it_ends() {
        let (t, end) = parse_prefix(b"{\"a\":[1,\"x\"]} {\"b\":2}").unwrap();
        assert_eq!(end, 13);
        assert_eq!(t.value(), &serde_json::json!({"a": [1, "x"]}));
        assert_eq!(t.raw(), &b"{\"a\":[1,\"x\"]}"[..]);
        let (t, end) = parse_prefix(b"  12,3").unwrap();
        assert_eq!((t.value(), end), (&serde_json::json!(12), 4));
        assert_eq!(t.raw(), &b"12"[..]);
        let (t, end) = parse_prefix(b"  \"a\\nb\"x").unwrap();
        assert_eq!((t.value(), end), (&serde_json::json!("a\nb"), 8));
        assert_eq!(parse_prefix(b"true]").unwrap().1, 4);
        assert_eq!(
            parse_prefix(b"  \"\xff\" 1")
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            "invalid UTF-8 at line 1 column 4"
        );
        assert_eq!(parse_prefix(b"12").unwrap().1, 2);
        for (text, problem) in [
            (&b"12x"[..], Problem::TrailingCharacters),
            (b"truex", Problem::TrailingCharacters),
            (b"1.5-", Problem::TrailingCharacters),
            (b"[1", Problem::EndInList),
            (b"{\"a\":\"b", Problem::EndInString),
        ] {
            assert_eq!(
                parse_prefix(text).map(|(_, e)| e).map_err(|e| e.problem()),
                Err(problem),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Every cut of a record is either a whole value ending where the bytes end (a
        // number, which may go on) or ends early; never a syntax error.
        let record = br#"{"src":{"ip":"10.0.0.1","labels":[{"key":"role","value":"d\u00e9b\"x"}]},"n":-12.5e-3,"t":true,"f":false,"z":null,"u":18446744073709551616,"s":"\ud83d\ude00"}"#;
        for cut in 0..record.len() {
            let head = &record[..cut];
            if let Err(e) = parse_prefix(head) {
                assert!(e.is_eof(), "{}: {e}", String::from_utf8_lossy(head));
            }
        }
        for number in [&b"-12.5e-3"[..], b"18446744073709551616", b"0.5", b"1E+9"] {
            for cut in 1..=number.len() {
                match parse_prefix(&number[..cut]) {
                    Ok((_, end)) => assert_eq!(end, cut),
                    Err(e) => assert!(e.is_eof()),
                }
            }
        }
        assert!(parse_prefix(record).is_ok());
    }

    #[test]
    fn special_bytes_are_found_in_every_place() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0u8, 0x1f] {
                    let mut text = vec![b'a'; len];
                    text[at] = c;
                    if at + 1 < len {
                        // A later one, and bytes around the bounds, do not matter.
                        text[at + 1] = b'"';
                    }
                    assert_eq!(special(&text, 0), at, "{len} {at} {c}");
                }
                let mut text: Vec<u8> = (0..len).map(|i| 0x20 + (i as u8 % 0x5f)).collect();
                for b in &mut text {
                    if *b == b'"' || *b == b'\\' {
                        *b = b'x';
                    }
                }
                text.extend_from_slice("é€\u{7f}\u{80}".as_bytes());
                assert_eq!(special(&text, at), text.len());
            }
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            (-1e6f64..1e6).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            "[a-z\"\\\\/\u{0}-\u{1f}\u{7f}é€😀 ]{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\"é\\\\]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// An object written with keys that may repeat.
    fn repeating() -> impl Strategy<Value = String> {
        proptest::collection::vec(("[ab]{0,2}", value()), 0..6).prop_map(|pairs| {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
                .collect();
            format!("{{{}}}", inner.join(","))
        })
    }

    /// Bytes that matter to JSON, to put into texts.
    const BYTES: &[u8] = b"\"\\{}[],:0123456789-+.eEuntfalsr \n\t\x00\x1f\x7f\xc3\xa9\xff/";

    fn mutated(text: Vec<u8>, edits: &[(prop::sample::Index, u8, prop::sample::Index)]) -> Vec<u8> {
        let mut text = text;
        for (at, kind, byte) in edits {
            let b = BYTES[byte.index(BYTES.len())];
            let at = at.index(text.len() + 1);
            match kind % 4 {
                0 if at < text.len() => text[at] = b,
                1 => text.insert(at, b),
                2 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.truncate(at),
            }
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Texts of values, compact and pretty, read as `serde_json` reads them.
        #[test]
        fn values_read_as_serde_json_reads_them(v in value()) {
            let compact = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(check(&compact), Ok(()));
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            prop_assert_eq!(check(&pretty), Ok(()));
            let t = Tape::parse(Bytes::from(compact)).unwrap();
            prop_assert_eq!(t.value(), &v);
        }

        /// Objects whose keys may repeat.
        #[test]
        fn repeated_keys_read_as_serde_json_reads_them(text in repeating()) {
            prop_assert_eq!(check(text.as_bytes()), Ok(()));
        }

        /// Texts broken at random: the same values, the same refusals.
        #[test]
        fn broken_texts_read_as_serde_json_reads_them(
            v in value(),
            pretty in any::<bool>(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>()),
                1..4,
            ),
        ) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            prop_assert_eq!(check(&mutated(text, &edits)), Ok(()));
        }

        /// Numbers, well and badly formed.
        #[test]
        fn numbers_read_as_serde_json_reads_them(
            text in prop_oneof![
                "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?",
                "-?[0-9]{1,3}(\\.[0-9]{0,3})?[eE][+-]?[0-9]{8,12}",
                "[-+.eE0-9]{1,30}",
            ],
        ) {
            prop_assert_eq!(check(text.as_bytes()), Ok(()));
        }

        /// Strings of any bytes between quotes.
        #[test]
        fn strings_read_as_serde_json_reads_them(
            body in proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(BYTES.to_vec()),
                    any::<u8>(),
                    Just(b'\\'),
                    Just(b'u'),
                    proptest::sample::select(b"0123456789abcdefABCDEFdD".to_vec()),
                ],
                0..24,
            ),
        ) {
            let mut text = vec![b'"'];
            text.extend_from_slice(&body);
            text.push(b'"');
            prop_assert_eq!(check(&text), Ok(()));
        }
    }
}
