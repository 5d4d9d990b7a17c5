//! A stage's state as the runtime saves it ([`super::Stage::snapshot`]): serialised
//! straight into JSON text, within a size budget, without a `serde_json::Value` tree in
//! between (a tree takes about ten times the text).

use std::io;

use serde::Serialize;

/// How long a stage's saved state may be, and the room to make for it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBudget {
    /// The longest text, in bytes (settings `snapshot_max_bytes`): writing stops as soon
    /// as the text would be longer.
    pub max_bytes: u64,
    /// The bytes to reserve before writing (about the length of the stage's previous
    /// snapshot), so that a large text is not copied each time it outgrows its buffer.
    pub reserve: usize,
}

impl SnapshotBudget {
    /// No bound on the length and nothing reserved.
    pub const UNBOUNDED: SnapshotBudget = SnapshotBudget {
        max_bytes: u64::MAX,
        reserve: 0,
    };
}

/// What [`super::Stage::snapshot`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// The state as JSON text, within the budget.
    Text(String),
    /// The state's text is longer than the budget's `max_bytes`: writing stopped there
    /// and what was written is dropped.
    TooLarge,
}

impl Snapshot {
    /// Serialises `state` (a struct borrowing the stage's fields) as JSON text within
    /// `budget`. `None`, logged, when it cannot be serialised.
    pub fn write<T: Serialize + ?Sized>(state: &T, budget: SnapshotBudget) -> Option<Snapshot> {
        let max = usize::try_from(budget.max_bytes).unwrap_or(usize::MAX);
        let mut out = Bounded {
            buf: Vec::with_capacity(budget.reserve.min(max)),
            max,
            over: false,
        };
        match serde_json::to_writer(&mut out, state) {
            Ok(()) => match String::from_utf8(out.buf) {
                Ok(text) => Some(Snapshot::Text(text)),
                Err(e) => {
                    tracing::warn!(error = %e, "the stage's state is not UTF-8 text; not saved");
                    None
                }
            },
            Err(_) if out.over => Some(Snapshot::TooLarge),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the stage's state");
                None
            }
        }
    }

    /// The text, when it was within the budget.
    pub fn into_text(self) -> Option<String> {
        match self {
            Snapshot::Text(text) => Some(text),
            Snapshot::TooLarge => None,
        }
    }
}

/// A buffer that refuses to grow past `max` bytes.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
    /// A write was refused.
    over: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.len() > self.max - self.buf.len() {
            self.over = true;
            return Err(io::Error::other("longer than snapshot_max_bytes"));
        }
        self.buf.extend_from_slice(bytes);
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

    #[test]
    fn a_state_within_its_budget_is_its_json_text() {
        let state = serde_json::json!({"shape": {"k": ["a"]}, "keys": {"x": [1, 2.5, null]}});
        let text = serde_json::to_string(&state).unwrap();
        let budget = SnapshotBudget {
            max_bytes: text.len() as u64,
            reserve: 4,
        };
        assert_eq!(Snapshot::write(&state, budget), Some(Snapshot::Text(text)));
    }

    /// Writing stops at the bound: what was written is never more than `max_bytes`.
    #[test]
    fn a_state_past_its_budget_is_too_large_without_being_written_whole() {
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
        let budget = SnapshotBudget {
            max_bytes: 10_000,
            reserve: 0,
        };
        assert_eq!(
            Snapshot::write(&Counting(&items), budget),
            Some(Snapshot::TooLarge)
        );
        assert!(items.get() < 1_000, "stopped after {} items", items.get());
    }

    #[test]
    fn a_state_that_cannot_be_serialised_is_none() {
        let keys: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(Snapshot::write(&keys, SnapshotBudget::UNBOUNDED), None);
    }
}
