//! Splitting a TCP stream into syslog frames (RFC 6587): octet counting (`LEN SP MSG`) or
//! one message per line. `auto` decides per connection from its first byte: a digit means
//! octet counting.
//!
//! Every frame is bounded by `max_length`: a longer one is discarded (up to its count, or
//! to the next newline) and reported as [`Frame::Oversize`], so the buffer never holds
//! more than about `max_length` plus one read.

use bytes::{Buf, Bytes, BytesMut};
use schemars::JsonSchema;
use serde::Deserialize;

/// How messages are delimited on a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Decided per connection from its first byte: a digit means octet counting,
    /// anything else one message per line.
    #[default]
    Auto,
    /// `LEN SP MSG` (RFC 6587 §3.4.1), as `logger --octet-count` and rsyslog's
    /// `TCP_Framing="octet-counted"` send.
    OctetCounting,
    /// One message per line (RFC 6587 §3.4.2, "non-transparent framing").
    Newline,
}

/// What the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One message, without its framing (no count, no line end).
    Message(Bytes),
    /// A frame longer than `max_length`, discarded; its first bytes (for the set-aside
    /// record).
    Oversize(Bytes),
    /// Bytes that are not a frame (an octet count that is not a number); discarded up to
    /// the next newline. The bytes up to the first wrong one.
    Malformed(Bytes),
}

/// How many bytes of a discarded frame are kept for its set-aside record.
const HEAD: usize = 256;
/// The most digits an octet count may have.
const MAX_DIGITS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `auto`, before the first byte.
    Undecided,
    Octet,
    Newline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    None,
    /// Drop this many more bytes (the rest of an oversize octet-counted frame).
    Bytes(usize),
    /// Drop up to and including the next newline.
    ToNewline,
}

/// Splits a byte stream into frames. Feed it with [`Framer::decode`] after each read.
#[derive(Debug)]
pub struct Framer {
    state: State,
    max_length: usize,
    discard: Discard,
    /// Bytes of the buffer already searched for a newline (newline framing).
    scanned: usize,
}

impl Framer {
    /// A framer for one connection.
    pub fn new(framing: Framing, max_length: usize) -> Framer {
        let state = match framing {
            Framing::Auto => State::Undecided,
            Framing::OctetCounting => State::Octet,
            Framing::Newline => State::Newline,
        };
        Framer {
            state,
            max_length: max_length.max(1),
            discard: Discard::None,
            scanned: 0,
        }
    }

    /// The next frame in `buf` (consuming it), or `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match self.discard {
                Discard::Bytes(n) => {
                    let k = n.min(buf.len());
                    buf.advance(k);
                    if k < n {
                        self.discard = Discard::Bytes(n - k);
                        return None;
                    }
                    self.discard = Discard::None;
                }
                Discard::ToNewline => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discard = Discard::None;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                },
                Discard::None => {}
            }
            if self.state == State::Undecided {
                let first = *buf.first()?;
                self.state = if first.is_ascii_digit() {
                    State::Octet
                } else {
                    State::Newline
                };
            }
            let frame = match self.state {
                State::Octet => self.octet(buf),
                _ => self.line(buf),
            };
            match frame {
                Step::Frame(f) => return Some(f),
                Step::Skip => continue,
                Step::More => return None,
            }
        }
    }

    /// The stream ended: what is left in `buf` (a last line without its newline is a
    /// message; a cut octet-counted frame is malformed).
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if let Some(f) = self.decode(buf) {
            return Some(f);
        }
        if self.discard != Discard::None {
            buf.clear();
            self.discard = Discard::None;
            return None;
        }
        let rest = buf.split().freeze();
        self.scanned = 0;
        match self.state {
            State::Octet => {
                let trimmed = trim_line_ends(&rest);
                (!trimmed.is_empty()).then(|| Frame::Malformed(rest.slice(..rest.len().min(HEAD))))
            }
            _ => {
                let line = strip_cr(rest);
                (!line.is_empty()).then_some(Frame::Message(line))
            }
        }
    }

    fn line(&mut self, buf: &mut BytesMut) -> Step {
        let limit = buf.len().min(self.max_length + 1);
        let from = self.scanned.min(limit);
        match memchr::memchr(b'\n', &buf[from..limit]) {
            Some(i) => {
                let line = buf.split_to(from + i + 1).freeze();
                self.scanned = 0;
                let line = strip_cr(line.slice(..line.len() - 1));
                if line.is_empty() {
                    Step::Skip
                } else {
                    Step::Frame(Frame::Message(line))
                }
            }
            None if buf.len() > self.max_length => {
                let head = Bytes::copy_from_slice(&buf[..self.max_length.min(HEAD)]);
                self.scanned = 0;
                self.discard = Discard::ToNewline;
                Step::Frame(Frame::Oversize(head))
            }
            None => {
                self.scanned = limit;
                Step::More
            }
        }
    }

    fn octet(&mut self, buf: &mut BytesMut) -> Step {
        // Line ends between frames (some senders add one) are skipped.
        let skip = buf
            .iter()
            .take_while(|b| matches!(b, b'\n' | b'\r'))
            .count();
        if skip > 0 {
            buf.advance(skip);
            return Step::Skip;
        }
        let mut len: usize = 0;
        for (i, &b) in buf.iter().enumerate() {
            match b {
                b'0'..=b'9' if i < MAX_DIGITS => {
                    len = len.saturating_mul(10).saturating_add(usize::from(b - b'0'));
                }
                b' ' if i > 0 => {
                    if len > self.max_length {
                        let head = Bytes::copy_from_slice(&buf[..i]);
                        buf.advance(i + 1);
                        self.discard = Discard::Bytes(len);
                        return Step::Frame(Frame::Oversize(head));
                    }
                    if buf.len() < i + 1 + len {
                        return Step::More;
                    }
                    buf.advance(i + 1);
                    let msg = buf.split_to(len).freeze();
                    return if msg.is_empty() {
                        Step::Skip
                    } else {
                        Step::Frame(Frame::Message(msg))
                    };
                }
                _ => {
                    let head = Bytes::copy_from_slice(&buf[..(i + 1).min(HEAD)]);
                    if b == b'\n' {
                        buf.advance(i + 1);
                    } else {
                        buf.advance(i + 1);
                        self.discard = Discard::ToNewline;
                    }
                    return Step::Frame(Frame::Malformed(head));
                }
            }
        }
        Step::More
    }
}

enum Step {
    Frame(Frame),
    Skip,
    More,
}

fn strip_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}

fn trim_line_ends(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b'\n' | b'\r'))
        .unwrap_or(b.len());
    &b[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(framing: Framing, max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(framing, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.decode(&mut buf) {
                out.push(fr);
            }
        }
        while let Some(fr) = f.decode_eof(&mut buf) {
            out.push(fr);
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn newline_frames_and_a_last_line_without_newline() {
        let got = frames(Framing::Auto, 100, &[b"<13>a\r\n\n<13>b\n<1", b"3>c"]);
        assert_eq!(got, vec![msg("<13>a"), msg("<13>b"), msg("<13>c")]);
    }

    #[test]
    fn octet_counting_across_reads() {
        let got = frames(Framing::Auto, 100, &[b"5 <13>a", b"\n6 <13>", b"bc"]);
        assert_eq!(got, vec![msg("<13>a"), msg("<13>bc")]);
    }

    #[test]
    fn oversize_frames_are_discarded_up_to_their_end() {
        let got = frames(Framing::OctetCounting, 4, &[b"3 abc10 0123456789", b"2 ok"]);
        assert_eq!(
            got,
            vec![
                msg("abc"),
                Frame::Oversize(Bytes::from_static(b"10")),
                msg("ok")
            ]
        );
        let got = frames(Framing::Newline, 4, &[b"abc\n0123", b"456789\nok\n"]);
        assert_eq!(
            got,
            vec![
                msg("abc"),
                Frame::Oversize(Bytes::from_static(b"0123")),
                msg("ok")
            ]
        );
    }

    #[test]
    fn a_bad_octet_count_is_malformed_up_to_the_next_newline() {
        let got = frames(Framing::OctetCounting, 100, &[b"3 abcx12 junk\n2 ok"]);
        assert_eq!(
            got,
            vec![
                msg("abc"),
                Frame::Malformed(Bytes::from_static(b"x")),
                msg("ok")
            ]
        );
    }

    #[test]
    fn a_cut_octet_frame_at_the_end_is_malformed() {
        let got = frames(Framing::OctetCounting, 100, &[b"10 abc"]);
        assert_eq!(got, vec![Frame::Malformed(Bytes::from_static(b"10 abc"))]);
    }

    fn split_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for c in cuts {
            out.push(bytes[from..c].to_vec());
            from = c;
        }
        out.push(bytes[from..].to_vec());
        out
    }

    fn framing() -> impl Strategy<Value = Framing> {
        prop_oneof![
            Just(Framing::Auto),
            Just(Framing::OctetCounting),
            Just(Framing::Newline)
        ]
    }

    /// Bytes that look like syslog streams often enough to reach every branch.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..20),
            "[0-9]{1,3} [a-z<>0-9 ]{0,30}\n?".prop_map(String::into_bytes),
            "[a-z<>0-9 ]{0,30}\r?\n".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn frames_do_not_depend_on_how_reads_split_the_bytes(
            bytes in stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max in 1usize..40,
            framing in framing(),
        ) {
            let whole = frames(framing, max, &[&bytes]);
            let parts = split_at(&bytes, &cuts);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let split = frames(framing, max, &refs);
            prop_assert_eq!(&whole, &split);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&whole, &frames(framing, max, &bytewise));
            for f in &whole {
                if let Frame::Message(m) = f {
                    prop_assert!(m.len() <= max);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            max in 1usize..64,
            framing in framing(),
        ) {
            let _ = frames(framing, max, &[&bytes]);
        }
    }
}
