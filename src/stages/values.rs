//! Values of a field (or a tuple of fields) as the stages that remember values know them
//! (`distinct_count`, `new_term`): the `field` option, the text a value is compared by,
//! and its keyed hash.
//!
//! A value is known by the 64-bit SipHash-1-3 of its text under a random key the stage
//! draws when it starts empty and keeps in its saved state (so a value hashes the same
//! after a restart, and no one outside can choose values that collide). Two different
//! values of one key share a hash with a probability of about n²/2⁶⁵ (3·10⁻¹² for 10,000
//! values), so a set of hashes stands for the set of values at 8 bytes a value instead of
//! its text.

use std::fmt::Write as _;
use std::hash::Hasher;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use crate::diagnostic::{Problems, codes};
use crate::event::{Field, FieldPath, Fields, Scalar};

/// `field`: one path, or several making a tuple.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldSpec {
    /// One field path.
    One(String),
    /// Several field paths; their values together make one value.
    Tuple(Vec<String>),
}

impl FieldSpec {
    /// The paths, in order.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            FieldSpec::One(p) => vec![p.as_str()],
            FieldSpec::Tuple(ps) => ps.iter().map(String::as_str).collect(),
        }
    }

    /// Whether the value is a tuple (written as a list).
    pub fn is_tuple(&self) -> bool {
        matches!(self, FieldSpec::Tuple(_))
    }

    /// The paths as the user wrote them, for titles: `service.port`, `(dst.ip, service.port)`.
    pub fn text(&self) -> String {
        match self {
            FieldSpec::One(p) => p.clone(),
            FieldSpec::Tuple(ps) => format!("({})", ps.join(", ")),
        }
    }

    /// The paths parsed; an error names the path that does not parse.
    pub fn parse(&self) -> Result<Vec<FieldPath>, String> {
        let paths = self
            .paths()
            .into_iter()
            .map(FieldPath::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("field: {e}"))?;
        if paths.is_empty() {
            return Err("field: name at least one field path".into());
        }
        Ok(paths)
    }

    /// Checks for `vigil validate`: every path parses, and a list names at least one.
    /// `several` ends the message of an empty list ("several to count distinct tuples").
    pub fn check(&self, p: &mut Problems, several: &str) {
        match self {
            FieldSpec::One(path) => {
                if let Err(e) = FieldPath::parse(path) {
                    p.error("/field", codes::INVALID_VALUE, e.to_string());
                }
            }
            FieldSpec::Tuple(paths) if paths.is_empty() => p.error(
                "/field",
                codes::INVALID_VALUE,
                format!("`field` lists no field: name one path, or {several}"),
            ),
            FieldSpec::Tuple(paths) => {
                for (i, path) in paths.iter().enumerate() {
                    if let Err(e) = FieldPath::parse(path) {
                        p.error(format!("/field/{i}"), codes::INVALID_VALUE, e.to_string());
                    }
                }
            }
        }
    }
}

/// A stage's value hash: SipHash-1-3 under a key kept in the stage's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueHasher {
    k0: u64,
    k1: u64,
}

/// Ends each part of a value's text when it is hashed: a byte UTF-8 never uses, so the
/// tuples `("a,b", "c")` and `("a", "b,c")` differ.
const PART_END: u8 = 0xff;

/// Separates the parts of a tuple in a value's text.
pub const PART_SEPARATOR: char = '\u{1f}';

impl ValueHasher {
    /// A hasher under a fresh random key.
    pub fn random() -> ValueHasher {
        ValueHasher {
            k0: rand::random(),
            k1: rand::random(),
        }
    }

    /// A hasher under a fixed key (tests, benchmarks).
    pub fn with_key(k0: u64, k1: u64) -> ValueHasher {
        ValueHasher { k0, k1 }
    }

    /// The value of `paths` in `data` — its hash, with its text in `text` (parts
    /// separated by [`PART_SEPARATOR`]) — or `None` when a field is missing or null.
    pub fn value_of(
        &self,
        paths: &[FieldPath],
        data: &(impl Fields + ?Sized),
        text: &mut String,
    ) -> Option<u64> {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        text.clear();
        for (i, path) in paths.iter().enumerate() {
            let field = data.field(path)?;
            if i > 0 {
                text.push(PART_SEPARATOR);
            }
            let start = text.len();
            if !push_text(text, &field) {
                return None;
            }
            h.write(&text.as_bytes()[start..]);
            h.write_u8(PART_END);
        }
        Some(h.finish())
    }
}

/// Appends the text a value is compared by: a string as it is, a number or boolean as
/// JSON writes it, a list or object as compact JSON. `false` for null (no value).
fn push_text(out: &mut String, field: &Field<'_>) -> bool {
    match field.scalar() {
        Scalar::Null => return false,
        Scalar::Str(s) => out.push_str(s),
        Scalar::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Scalar::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Scalar::Other => {
            let _ = write!(out, "{}", field.to_value());
        }
    }
    true
}

/// The value to show for a value's text (parts separated by [`PART_SEPARATOR`]): JSON as
/// the event had it where the text reads as a number, a string otherwise; a tuple as a
/// list.
pub fn shown_value(text: &str, tuple: bool) -> serde_json::Value {
    let one = |part: &str| match part.parse::<serde_json::Number>() {
        Ok(n) if n.to_string() == part => serde_json::Value::Number(n),
        _ => serde_json::Value::String(part.to_string()),
    };
    if tuple {
        serde_json::Value::Array(text.split(PART_SEPARATOR).map(one).collect())
    } else {
        one(text)
    }
}

/// The hasher of maps keyed by value hashes: they are uniform already, so the map takes
/// them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Timestamp};
    use serde_json::json;

    fn ev(v: serde_json::Value) -> Event {
        Event::from_record(v, "p.in".into(), Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_number_and_its_string_are_one_value_and_tuples_keep_their_parts_apart() {
        let h = ValueHasher::with_key(1, 2);
        let port = [FieldPath::parse("service.port").unwrap()];
        let mut text = String::new();
        let a = h.value_of(&port, &ev(json!({"service": {"port": 22}})), &mut text);
        assert_eq!(text, "22");
        let b = h.value_of(&port, &ev(json!({"service": {"port": "22"}})), &mut text);
        assert_eq!(a, b);
        assert!(a.is_some());
        let c = h.value_of(&port, &ev(json!({"service": {"port": 22.0}})), &mut text);
        assert_ne!(a, c, "22.0 is not 22");
        assert_eq!(
            h.value_of(&port, &ev(json!({"service": {"port": null}})), &mut text),
            None
        );
        assert_eq!(h.value_of(&port, &ev(json!({})), &mut text), None);
        // A record read as a plain value hashes as its event does.
        assert_eq!(
            h.value_of(&port, &json!({"service": {"port": 22}}), &mut text),
            a
        );

        let pair = [
            FieldPath::parse("a").unwrap(),
            FieldPath::parse("b").unwrap(),
        ];
        let x = h.value_of(&pair, &ev(json!({"a": "1,2", "b": "3"})), &mut text);
        let y = h.value_of(&pair, &ev(json!({"a": "1", "b": "2,3"})), &mut text);
        assert_ne!(x, y);
        assert_eq!(text, "1\u{1f}2,3");
        // Parts are shown as the numbers they read as: the string "1" is the value 1.
        assert_eq!(shown_value(&text, true), json!([1, "2,3"]));
        assert_eq!(
            h.value_of(&pair, &ev(json!({"a": "1"})), &mut text),
            None,
            "a tuple with a part missing has no value"
        );
        // Another key hashes differently.
        let other = ValueHasher::with_key(3, 4);
        assert_ne!(
            other.value_of(&port, &ev(json!({"service": {"port": 22}})), &mut text),
            a
        );
        assert_eq!(shown_value("22", false), json!(22));
        assert_eq!(shown_value("022", false), json!("022"));
        assert_eq!(shown_value("alice", false), json!("alice"));
    }
}
