//! The estimate of a key with more distinct values than it counts exactly.
//!
//! A HyperLogLog sketch cannot forget a value, so one sketch cannot slide. The window is
//! cut instead into [`BUCKETS`] buckets of `window / 16` of event time (aligned on the
//! epoch), each with its own sketch of the values seen in it, plus one sketch of all of
//! them (the union, what a count reads: O(1)). A value goes into its bucket's sketch and
//! the union; when the window's start passes a bucket's end the bucket goes and the union
//! is made again from the buckets left (16 merges, once per bucket length per key). The
//! estimate thus counts the values of the window and of at most one bucket before it: the
//! window may reach a sixteenth of its length further back — a finer cut would hold more
//! sketches for little gain. The alternative designs cost more: a sketch per event
//! time slides exactly but holds a sketch per event, and keeping the newest time of every
//! register (a "sliding HyperLogLog") takes 8 bytes a register instead of 6 bits.
//!
//! Sketches come from the `cardinality-estimator` crate (HyperLogLog++, precision 14:
//! 16,384 registers of 6 bits, a standard error of 1.04/√16384 ≈ 0.81%). It keeps a
//! sketch of few values as a short list of hashes (exact), so the buckets of a slow key
//! take little; a full sketch takes 12 KB, and its estimate is O(1).
//!
//! Saved sketches are checked before the crate reads them (see [`SavedSketch`]).

use std::collections::VecDeque;

use cardinality_estimator::CardinalityEstimator;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Timestamp;

/// Registers: 2^14.
const PRECISION: usize = 14;
/// Bits a register.
const REGISTER_BITS: usize = 6;

/// Buckets a window is cut into.
pub(super) const BUCKETS: i64 = 16;

/// The standard error of an estimate: 1.04 / √(2^14).
pub const STANDARD_ERROR: f64 = 0.0081;

/// A HyperLogLog sketch. The crate's hasher is never used: values come hashed.
type Sketch =
    CardinalityEstimator<u64, std::collections::hash_map::DefaultHasher, PRECISION, REGISTER_BITS>;

/// A key's sketches, one per bucket of its window, and their union.
#[derive(Debug, Clone)]
pub(super) struct Sketches {
    /// Length of a bucket, in milliseconds.
    bucket_ms: i64,
    /// `(bucket number, sketch)`, oldest first. Bucket `n` holds times in
    /// `[n·bucket_ms, (n+1)·bucket_ms)` ms since the epoch.
    buckets: VecDeque<(i64, Sketch)>,
    /// The union of the buckets' sketches.
    union: Sketch,
}

impl Sketches {
    /// Empty sketches for a window of `window`.
    pub(super) fn new(window: chrono::Duration) -> Sketches {
        Sketches {
            bucket_ms: (window.num_milliseconds() / BUCKETS).max(1),
            buckets: VecDeque::new(),
            union: Sketch::new(),
        }
    }

    fn bucket_of(&self, t: Timestamp) -> i64 {
        t.timestamp_millis().div_euclid(self.bucket_ms)
    }

    /// The end of bucket `n`: every time it holds is before it.
    fn end_of(&self, n: i64) -> Timestamp {
        n.checked_add(1)
            .and_then(|m| m.checked_mul(self.bucket_ms))
            .and_then(Timestamp::from_timestamp_millis)
            .unwrap_or(Timestamp::MAX_UTC)
    }

    /// Adds value `h` seen at `t`.
    pub(super) fn insert(&mut self, h: u64, t: Timestamp) {
        let n = self.bucket_of(t);
        // Events come in time order mostly: the last bucket, without a search.
        let at = match self.buckets.back() {
            Some((last, _)) if *last == n => self.buckets.len() - 1,
            Some((last, _)) if *last < n => {
                self.buckets.push_back((n, Sketch::new()));
                self.buckets.len() - 1
            }
            None => {
                self.buckets.push_back((n, Sketch::new()));
                0
            }
            Some(_) => {
                let at = self.buckets.partition_point(|(b, _)| *b < n);
                if self.buckets.get(at).is_none_or(|(b, _)| *b != n) {
                    self.buckets.insert(at, (n, Sketch::new()));
                }
                at
            }
        };
        if let Some((_, sketch)) = self.buckets.get_mut(at) {
            sketch.insert_hash(h);
        }
        self.union.insert_hash(h);
    }

    /// The estimated number of distinct values.
    pub(super) fn estimate(&self) -> usize {
        self.union.estimate()
    }

    /// Whether no bucket is held.
    pub(super) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// How many buckets are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Drops the buckets whose every time is at or before `cutoff`, making the union
    /// again if any went.
    pub(super) fn slide_to(&mut self, cutoff: Timestamp) {
        let mut dropped = false;
        while let Some((n, _)) = self.buckets.front() {
            if self.end_of(*n) > cutoff {
                break;
            }
            self.buckets.pop_front();
            dropped = true;
        }
        if dropped {
            self.remake_union();
        }
    }

    fn remake_union(&mut self) {
        let mut union = Sketch::new();
        for (_, s) in &self.buckets {
            union.merge(s);
        }
        self.union = union;
    }

    /// Sliding on to `cutoff + window` with nothing added, when the estimate first falls
    /// below `threshold`: a bucket leaves the window `window` after its end.
    pub(super) fn ended_by(
        &self,
        cutoff: Timestamp,
        threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp> {
        let leaving = self
            .buckets
            .iter()
            .take_while(|(n, _)| self.end_of(*n) <= cutoff)
            .count();
        if leaving == 0 {
            return None;
        }
        // after[j]: the estimate once the first j + 1 buckets left; made from the newest
        // back, one merge a bucket.
        let mut after = vec![0usize; leaving];
        let mut acc = Sketch::new();
        for (_, s) in self.buckets.iter().skip(leaving) {
            acc.merge(s);
        }
        for j in (0..leaving).rev() {
            after[j] = acc.estimate();
            acc.merge(&self.buckets[j].1);
        }
        after
            .iter()
            .position(|&e| (e as f64) < threshold)
            .map(|j| self.end_of(self.buckets[j].0) + window)
    }
}

/// What a key's sketches save: the bucket length and each bucket's sketch.
#[derive(Serialize, Deserialize)]
struct SavedSketches {
    bucket_ms: i64,
    buckets: Vec<(i64, SavedSketch)>,
}

impl Serialize for Sketches {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let saved = SavedSketches {
            bucket_ms: self.bucket_ms,
            buckets: self
                .buckets
                .iter()
                .map(|(n, s)| SavedSketch::of(s).map(|s| (*n, s)))
                .collect::<Result<_, _>>()
                .map_err(serde::ser::Error::custom)?,
        };
        saved.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sketches {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = SavedSketches::deserialize(deserializer)?;
        if saved.bucket_ms < 1 {
            return Err(D::Error::custom(
                "a bucket of the sketches is shorter than 1 ms",
            ));
        }
        let mut buckets: VecDeque<(i64, Sketch)> = VecDeque::with_capacity(saved.buckets.len());
        for (n, s) in saved.buckets {
            if buckets.back().is_some_and(|(last, _)| *last >= n) {
                return Err(D::Error::custom("the sketches' buckets are not in order"));
            }
            buckets.push_back((n, s.load().map_err(D::Error::custom)?));
        }
        let mut sketches = Sketches {
            bucket_ms: saved.bucket_ms,
            buckets,
            union: Sketch::new(),
        };
        sketches.remake_union();
        Ok(sketches)
    }
}

/// A sketch as saved: the crate's own form, `[tag, registers]`, with the tag's address
/// bits cleared (the crate writes its pointer there; only the two low bits mean
/// something: 0 a list of up to two hashes held in the word itself, 1 a list of hashes, 3
/// the registers with their count of zeros and harmonic sum first).
///
/// The crate trusts what it reads: a sketch whose count of zero registers is more than
/// the registers, or whose sum is not a positive number, would make its estimate panic or
/// be nonsense, and its reader keeps the list it read (whose allocation may be larger than
/// the list) as the sketch's own. So a sketch is checked here, then handed to the crate
/// through a JSON value, whose lists the crate reads with exactly their length allocated.
#[derive(Serialize, Deserialize)]
struct SavedSketch(usize, Option<Vec<u32>>);

/// The two low bits of a sketch's tag: what kind of sketch it is.
const TAG_BITS: usize = 0b11;
const TAG_REGISTERS: usize = 0b11;

/// Registers of a sketch.
const REGISTERS: usize = 1 << PRECISION;

impl SavedSketch {
    fn of(sketch: &Sketch) -> Result<SavedSketch, serde_json::Error> {
        let SavedSketch(tag, list) = serde_json::from_value(serde_json::to_value(sketch)?)?;
        // A list or registers live at an address: keep only the kind.
        let tag = if list.is_some() { tag & TAG_BITS } else { tag };
        Ok(SavedSketch(tag, list))
    }

    fn load(self) -> Result<Sketch, String> {
        let SavedSketch(tag, list) = self;
        if tag & TAG_BITS == TAG_REGISTERS {
            let ok = list.as_ref().is_some_and(|l| {
                let zeros = l.first().copied().unwrap_or(u32::MAX) as usize;
                let sum = l.get(1).map_or(f32::NAN, |s| f32::from_bits(*s));
                zeros <= REGISTERS && sum.is_finite() && sum > 0.0
            });
            if !ok {
                return Err("a saved sketch's registers do not add up".into());
            }
        }
        let value = serde_json::json!([tag, list]);
        serde_json::from_value(value).map_err(|e| format!("a saved sketch cannot be read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    /// A well-mixed stand-in for a value's hash.
    fn mix(i: u64) -> u64 {
        let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn buckets_slide_and_the_union_follows() {
        // A 16 s window: buckets of 1 s.
        let mut s = Sketches::new(chrono::Duration::seconds(16));
        for i in 0..1_000u64 {
            // 100 values a second for 10 s.
            s.insert(mix(i), t(i as i64 * 10));
        }
        assert_eq!(s.len(), 10);
        let all = s.estimate() as f64;
        assert!((all - 1_000.0).abs() < 30.0, "{all}");
        // Seconds 0 and 1 leave once the cutoff reaches their ends.
        s.slide_to(t(1_999));
        assert_eq!(s.len(), 9);
        s.slide_to(t(2_000));
        assert_eq!(s.len(), 8);
        let left = s.estimate() as f64;
        assert!((left - 800.0).abs() < 25.0, "{left}");
        // An event out of order makes its bucket in place.
        s.insert(mix(5_000), t(2_500));
        assert_eq!(s.len(), 8);
        s.insert(mix(5_001), t(20_000));
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn ended_by_finds_the_bucket_that_takes_the_estimate_below() {
        let window = chrono::Duration::seconds(16);
        let mut s = Sketches::new(window);
        for sec in 0..4i64 {
            for i in 0..100u64 {
                s.insert(mix(sec as u64 * 1_000 + i), t(sec * 1_000 + i as i64));
            }
        }
        // Nothing ends by a cutoff before the first bucket's end.
        assert_eq!(s.ended_by(t(999), 350.0, window), None);
        // Dropping second 0 leaves ~300 < 350: it ends 16 s after second 0 ends.
        assert_eq!(
            s.ended_by(t(10_000), 350.0, window),
            Some(t(1_000) + window)
        );
        // Below 150 only once three seconds left.
        assert_eq!(
            s.ended_by(t(10_000), 150.0, window),
            Some(t(3_000) + window)
        );
    }

    #[test]
    fn sketches_are_saved_without_addresses_and_read_back() {
        let mut s = Sketches::new(chrono::Duration::minutes(16));
        for i in 0..20_000u64 {
            s.insert(mix(i), t((i as i64) * 10));
        }
        s.insert(mix(1), t(1_000_000));
        let text = serde_json::to_string(&s).unwrap();
        let back: Sketches = serde_json::from_str(&text).unwrap();
        assert_eq!(back.estimate(), s.estimate());
        assert_eq!(back.len(), s.len());
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for b in v["buckets"].as_array().unwrap() {
            let tag = b[1][0].as_u64().unwrap();
            if !b[1][1].is_null() {
                assert!(tag <= 3, "an address was saved: {tag}");
            }
        }
        // A sketch whose registers do not add up is refused, not trusted.
        let mut bad = v.clone();
        let first = &mut bad["buckets"][0][1];
        assert_eq!(first[0], 3, "a full sketch");
        first[1][0] = serde_json::json!(REGISTERS + 1);
        assert!(serde_json::from_value::<Sketches>(bad).is_err());
        let mut bad = v;
        bad["buckets"][0][1][1] = serde_json::json!([1, 2]);
        assert!(serde_json::from_value::<Sketches>(bad).is_err());
    }
}
