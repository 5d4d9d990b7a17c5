//! Flow ids: what the PCE flow ledger and the `bandwidth` stage remember a flow by.
//!
//! A flow's id is the 128-bit XXH3 hash (seed 0; the function is fixed by its spec, so
//! saved ids stay valid) of bytes that identify it: for the `bandwidth` stage, its flow
//! key as the text `write_key` writes for the stage's `flow_key` fields
//! (`src.ip=10.0.0.1,dst.ip=10.0.0.9,service.port=443,service.proto=6`); for the ledger,
//! a fixed encoding of the flow's identity (see its `FlowKey::id`). Remembering 16 bytes
//! instead of the identity spares an allocation per new flow and most of the memory of
//! each; two distinct flows would have to collide in 128 bits to be mixed up. The id is
//! uniform already, so the maps keyed by it hash it by taking a word of it
//! ([`FlowIdHasher`]) instead of running SipHash over the key.
//!
//! Saved state writes an id as 32 lowercase hex digits, or as its 16 bytes
//! ([`FlowId::to_bytes`]).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The id of one flow: the XXH3-128 hash of what identifies it, high word first.
/// Alignment 8 (a `u128` would pad map slots to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowId([u64; 2]);

impl FlowId {
    /// The id of the flow whose key (as `write_key` writes it) is `key`.
    pub fn of(key: &str) -> FlowId {
        FlowId::of_bytes(key.as_bytes())
    }

    /// The id of the flow `identity` identifies.
    pub fn of_bytes(identity: &[u8]) -> FlowId {
        FlowId::from_u128(xxhash_rust::xxh3::xxh3_128(identity))
    }

    /// The 16 bytes of the id, high half first (the canonical XXH128 byte order).
    pub fn to_bytes(self) -> [u8; 16] {
        self.to_u128().to_be_bytes()
    }

    /// The id from [`FlowId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> FlowId {
        FlowId::from_u128(u128::from_be_bytes(bytes))
    }

    fn from_u128(h: u128) -> FlowId {
        FlowId([(h >> 64) as u64, h as u64])
    }

    fn to_u128(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }

    /// The id from its saved form, 32 hex digits; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<FlowId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(FlowId::from_u128)
    }
}

/// 32 lowercase hex digits, the saved form.
impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.to_u128())
    }
}

/// Feeds the hasher one word: the id is uniform already (see [`FlowIdHasher`]).
impl Hash for FlowId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[1]);
    }
}

impl Serialize for FlowId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlowId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FlowId, D::Error> {
        struct Hex;
        impl Visitor<'_> for Hex {
            type Value = FlowId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a flow id: 32 hex digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FlowId, E> {
                FlowId::from_hex(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(Hex)
    }
}

/// The hasher of maps keyed by [`FlowId`]: the word the id feeds it is its hash. Other
/// input (not written by a `FlowId`) is mixed in, so the hasher stays usable, if slower.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlowIdHasher(u64);

impl Hasher for FlowIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = if self.0 == 0 { n } else { mix(self.0 ^ n) };
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0 ^ u64::from_le_bytes(word));
        }
    }
}

/// A multiply-xorshift mix (for input other than one flow id).
fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 32)
}

/// A map keyed by flow id.
pub type FlowMap<V> = HashMap<FlowId, V, BuildHasherDefault<FlowIdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "src.ip=10.0.0.1,dst.ip=10.0.0.9,service.port=443,service.proto=6";

    #[test]
    fn an_id_is_the_xxh3_128_of_the_key() {
        let id = FlowId::of(KEY);
        assert_eq!(id, FlowId::of(KEY));
        assert_eq!(
            id.to_string(),
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(KEY.as_bytes()))
        );
        // Keys one character apart, or one field moved, are different flows.
        let other = KEY.replace("10.0.0.1", "10.0.0.2");
        assert_ne!(id, FlowId::of(&other));
        assert_ne!(id, FlowId::of(&KEY.replace("443", "444")));
        assert_ne!(FlowId::of(""), FlowId::of("src.ip=<missing>"));
    }

    #[test]
    fn the_saved_form_is_32_lowercase_hex_digits() {
        let id = FlowId::of(KEY);
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text.len(), 34);
        assert!(
            text[1..33]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_eq!(serde_json::from_str::<FlowId>(&text).unwrap(), id);
        // As map keys too (how the stage saves them).
        let map: FlowMap<u8> = [(id, 1), (FlowId::of("x"), 2)].into_iter().collect();
        let back: FlowMap<u8> =
            serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
        assert_eq!(back, map);
        for bad in [
            "",
            "0",
            "+0000000000000000000000000000000",
            KEY,
            &"g".repeat(32),
        ] {
            assert_eq!(FlowId::from_hex(bad), None, "{bad}");
        }
        assert_eq!(
            FlowId::from_hex(&id.to_string().to_uppercase()),
            Some(id),
            "upper case is read"
        );
    }

    #[test]
    fn the_hasher_takes_the_ids_low_word() {
        use std::hash::BuildHasher as _;
        let id = FlowId::of(KEY);
        let h = BuildHasherDefault::<FlowIdHasher>::default().hash_one(id);
        assert_eq!(h, xxhash_rust::xxh3::xxh3_128(KEY.as_bytes()) as u64);
        // Other input still hashes (and differs).
        let b = BuildHasherDefault::<FlowIdHasher>::default();
        assert_ne!(b.hash_one("abc"), b.hash_one("abd"));
    }
}
