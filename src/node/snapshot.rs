//! A stage's state as the runtime saves it ([`super::Stage::snapshot`]): serialised
//! straight into JSON text, within a size bound, without a `serde_json::Value` tree in
//! between (a tree takes about ten times the text), in pieces that are never copied to
//! make room and are stored one after the other.

use std::io;

use serde::Serialize;

/// The first piece of a text: most states are small.
const FIRST_PIECE: usize = 4 << 10;
/// Pieces double in size up to this.
const LARGEST_PIECE: usize = 1 << 20;

/// What [`super::Stage::snapshot`] made.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// The state as JSON text, within the bound.
    Text(StateText),
    /// The state's text is longer than the bound (settings `snapshot_max_bytes`): writing
    /// stopped there and what was written is dropped.
    TooLarge,
}

impl Snapshot {
    /// Serialises `state` (a struct borrowing the stage's fields) as JSON text of at most
    /// `max_bytes`. `None`, logged, when it cannot be serialised.
    pub fn write<T: Serialize + ?Sized>(state: &T, max_bytes: u64) -> Option<Snapshot> {
        let mut out = Bounded {
            text: StateText::default(),
            max: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            over: false,
        };
        match serde_json::to_writer(&mut out, state) {
            Ok(()) => Some(Snapshot::Text(out.text)),
            Err(_) if out.over => Some(Snapshot::TooLarge),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the stage's state");
                None
            }
        }
    }

    /// The text, when it was within the bound.
    pub fn into_text(self) -> Option<StateText> {
        match self {
            Snapshot::Text(text) => Some(text),
            Snapshot::TooLarge => None,
        }
    }
}

/// A state's JSON text, in pieces of at most 1 MiB.
#[derive(Debug, Clone, Default)]
pub struct StateText {
    pieces: Vec<Vec<u8>>,
    len: usize,
}

impl StateText {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its pieces, in order (a piece may end inside a character).
    pub fn into_pieces(self) -> Vec<Vec<u8>> {
        self.pieces
    }

    /// The text as one string: a copy, for small states and tests.
    pub fn into_string(self) -> Result<String, std::string::FromUtf8Error> {
        String::from_utf8(self.pieces.concat())
    }

    /// Reads the text from its pieces.
    pub fn reader(&self) -> impl io::Read + '_ {
        Pieces {
            rest: &self.pieces,
            at: 0,
        }
    }
}

/// Reads pieces one after the other.
struct Pieces<'a> {
    rest: &'a [Vec<u8>],
    /// Where in the first of `rest`.
    at: usize,
}

impl io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((piece, later)) = self.rest.split_first() {
            let left = piece.get(self.at..).unwrap_or_default();
            if left.is_empty() {
                self.rest = later;
                self.at = 0;
                continue;
            }
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            self.at += n;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Writes a [`StateText`], refusing to make it longer than `max` bytes.
struct Bounded {
    text: StateText,
    max: usize,
    /// A write was refused.
    over: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.len() > self.max - self.text.len {
            self.over = true;
            return Err(io::Error::other("longer than snapshot_max_bytes"));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.text.pieces.last_mut() {
                Some(piece) if piece.len() < piece.capacity() => {
                    let (now, later) =
                        rest.split_at(rest.len().min(piece.capacity() - piece.len()));
                    piece.extend_from_slice(now);
                    rest = later;
                }
                last => {
                    let size = last.map_or(FIRST_PIECE, |p| (p.capacity() * 2).min(LARGEST_PIECE));
                    self.text.pieces.push(Vec::with_capacity(size));
                }
            }
        }
        self.text.len += bytes.len();
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes).map(drop)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// A large state is written whole, in pieces none of which grew past its first
    /// allocation, and reads back as the text `serde_json` makes of it.
    #[test]
    fn a_state_within_its_bound_is_its_json_text_in_pieces() {
        let state: Vec<String> = (0..100_000).map(|i| format!("key é {i}")).collect();
        let expected = serde_json::to_string(&state).unwrap();
        let Some(Snapshot::Text(text)) = Snapshot::write(&state, expected.len() as u64) else {
            panic!("within the bound")
        };
        assert_eq!(text.len(), expected.len());
        let mut read = String::new();
        text.reader().read_to_string(&mut read).unwrap();
        assert_eq!(read, expected);
        let pieces = text.clone().into_pieces();
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.len() <= LARGEST_PIECE));
        assert_eq!(text.into_string().unwrap(), expected);
    }

    /// Writing stops at the bound: what was written is never more than `max_bytes`.
    #[test]
    fn a_state_past_its_bound_is_too_large_without_being_written_whole() {
        struct Counting<'a>(&'a std::cell::Cell<usize>);
        impl Serialize for Counting<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                for _ in 0..1_000_000 {
                    self.0.set(self.0.get() + 1);
                    seq.serialize_element("0123456789")?;
                }
                seq.end()
            }
        }
        let items = std::cell::Cell::new(0);
        assert!(matches!(
            Snapshot::write(&Counting(&items), 10_000),
            Some(Snapshot::TooLarge)
        ));
        assert!(items.get() < 1_000, "stopped after {} items", items.get());
    }

    #[test]
    fn a_state_that_cannot_be_serialised_is_none() {
        let keys: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(Snapshot::write(&keys, u64::MAX).is_none());
    }
}
