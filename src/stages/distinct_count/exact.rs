//! The exact set of a key's values, and the values an alert lists.
//!
//! A value is known by its keyed hash ([`crate::stages::values::ValueHasher`]): two
//! different values of one key share a hash with a probability of about n²/2⁶⁵ —
//! 3·10⁻¹² for 10,000 values — which is what makes a set of hashes an exact count in
//! practice, at 8 bytes a value instead of its text. The same hash feeds the HyperLogLog
//! sketches once a key is estimated.

use std::collections::BTreeSet;
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Timestamp;
use crate::stages::values::Identity;

/// A value's hash and when it was last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Seen {
    /// When the value was last seen (event time).
    pub(super) t: Timestamp,
    /// The value's hash.
    pub(super) h: u64,
}

/// Values kept in a plain list, in time order, up to this many; more go to a map and a
/// tree. A key with few values (most of them) then takes one small allocation.
const SMALL_MAX: usize = 32;

type ByHash = hashbrown::HashMap<u64, Timestamp, BuildHasherDefault<Identity>>;

/// A key's values with the time each was last seen. Saved as a list of `[time, hash]`
/// in time order.
#[derive(Debug, Clone)]
pub(super) enum ExactSet {
    /// Few values: a list in time order.
    Small(Vec<Seen>),
    /// More: by hash, and in time order.
    Large(Box<Large>),
}

/// The values of a key that has many.
#[derive(Debug, Clone, Default)]
pub(super) struct Large {
    by_hash: ByHash,
    by_time: BTreeSet<Seen>,
}

impl Default for ExactSet {
    fn default() -> Self {
        ExactSet::Small(Vec::new())
    }
}

impl ExactSet {
    /// Distinct values held.
    pub(super) fn len(&self) -> usize {
        match self {
            ExactSet::Small(v) => v.len(),
            ExactSet::Large(l) => l.by_hash.len(),
        }
    }

    /// Whether none is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the value `h` is held.
    pub(super) fn contains(&self, h: u64) -> bool {
        match self {
            ExactSet::Small(v) => v.iter().any(|s| s.h == h),
            ExactSet::Large(l) => l.by_hash.contains_key(&h),
        }
    }

    /// The value seen longest ago.
    pub(super) fn oldest(&self) -> Option<Timestamp> {
        match self {
            ExactSet::Small(v) => v.first().map(|s| s.t),
            ExactSet::Large(l) => l.by_time.first().map(|s| s.t),
        }
    }

    /// The values in time order (oldest first).
    pub(super) fn iter(&self) -> Iter<'_> {
        match self {
            ExactSet::Small(v) => Iter::Small(v.iter()),
            ExactSet::Large(l) => Iter::Large(l.by_time.iter()),
        }
    }

    /// Notes value `h` seen at `t` (its time moves on if `t` is later than it had);
    /// whether it is new.
    pub(super) fn insert(&mut self, h: u64, t: Timestamp) -> bool {
        match self {
            ExactSet::Small(v) => {
                if let Some(i) = v.iter().position(|s| s.h == h) {
                    if t > v[i].t {
                        v.remove(i);
                        let at = v.partition_point(|s| s.t <= t);
                        v.insert(at, Seen { t, h });
                    }
                    return false;
                }
                if v.len() == v.capacity() {
                    // Grows 1, 2, 4, ...: a key with one value holds one.
                    v.reserve_exact(v.len().max(1));
                }
                let at = v.partition_point(|s| s.t <= t);
                v.insert(at, Seen { t, h });
                if v.len() > SMALL_MAX {
                    let mut large = Large::default();
                    for s in v.drain(..) {
                        large.by_hash.insert(s.h, s.t);
                        large.by_time.insert(s);
                    }
                    *self = ExactSet::Large(Box::new(large));
                }
                true
            }
            ExactSet::Large(l) => match l.by_hash.get_mut(&h) {
                Some(old) => {
                    if t > *old {
                        l.by_time.remove(&Seen { t: *old, h });
                        l.by_time.insert(Seen { t, h });
                        *old = t;
                    }
                    false
                }
                None => {
                    l.by_hash.insert(h, t);
                    l.by_time.insert(Seen { t, h });
                    true
                }
            },
        }
    }

    /// Drops the values last seen at or before `cutoff`; how many.
    pub(super) fn evict_through(&mut self, cutoff: Timestamp) -> usize {
        match self {
            ExactSet::Small(v) => {
                let n = v.partition_point(|s| s.t <= cutoff);
                v.drain(..n);
                if v.is_empty() {
                    *v = Vec::new();
                }
                n
            }
            ExactSet::Large(l) => {
                let mut n = 0;
                while let Some(first) = l.by_time.first().copied() {
                    if first.t > cutoff {
                        break;
                    }
                    l.by_time.pop_first();
                    l.by_hash.remove(&first.h);
                    n += 1;
                }
                // Few left: back to a list, freeing the map and the tree.
                if l.by_hash.len() <= SMALL_MAX / 2 {
                    let v: Vec<Seen> = l.by_time.iter().copied().collect();
                    *self = ExactSet::Small(v);
                }
                n
            }
        }
    }

    /// Empties the set, freeing what it held.
    pub(super) fn clear(&mut self) {
        *self = ExactSet::default();
    }
}

/// The values of an [`ExactSet`] in time order.
#[derive(Debug, Clone)]
pub(super) enum Iter<'a> {
    /// Of a list.
    Small(std::slice::Iter<'a, Seen>),
    /// Of a tree.
    Large(std::collections::btree_set::Iter<'a, Seen>),
}

impl Iterator for Iter<'_> {
    type Item = Seen;

    fn next(&mut self) -> Option<Seen> {
        match self {
            Iter::Small(i) => i.next().copied(),
            Iter::Large(i) => i.next().copied(),
        }
    }
}

impl Serialize for ExactSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|s| (s.t, s.h)))
    }
}

impl<'de> Deserialize<'de> for ExactSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = Vec::<(Timestamp, u64)>::deserialize(deserializer)?;
        let mut set = ExactSet::default();
        // Inserted one by one: a hand-edited list out of order, or with a value twice,
        // reads as the set it means.
        for (t, h) in saved {
            set.insert(h, t);
        }
        Ok(set)
    }
}

/// One of the values an alert lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ShownValue {
    /// Its hash.
    pub(super) h: u64,
    /// When it was last seen.
    pub(super) t: Timestamp,
    /// Its text (parts of a tuple separated by `\u{1f}`).
    pub(super) text: Box<str>,
}

/// Up to N of a key's values, to list in its alerts: the first seen, each dropped when
/// it leaves the window, its place taken by the next new value. Saved as a list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Shown(Vec<ShownValue>);

impl Shown {
    /// Notes value `h` (text `text`) seen at `t`, listing it if fewer than `max` are.
    pub(super) fn offer(&mut self, h: u64, t: Timestamp, text: &str, max: usize) {
        if let Some(v) = self.0.iter_mut().find(|v| v.h == h) {
            v.t = v.t.max(t);
            return;
        }
        if self.0.len() < max {
            if self.0.len() == self.0.capacity() {
                self.0.reserve_exact(self.0.len().max(1));
            }
            self.0.push(ShownValue {
                h,
                t,
                text: text.into(),
            });
        }
    }

    /// Drops the values last seen at or before `cutoff`.
    pub(super) fn evict_through(&mut self, cutoff: Timestamp) {
        self.0.retain(|v| v.t > cutoff);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
    }

    /// The values listed, in the order they were first listed.
    pub(super) fn iter(&self) -> impl Iterator<Item = &ShownValue> {
        self.0.iter()
    }

    /// How many are listed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is listed.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops them all.
    pub(super) fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + chrono::Duration::seconds(s)
    }

    #[test]
    fn the_set_keeps_the_latest_time_of_each_value_and_slides_in_both_forms() {
        for n in [10u64, 1_000] {
            let mut s = ExactSet::default();
            for i in 0..n {
                assert!(s.insert(i, t(i as i64)));
            }
            // Seen again later: not new, and its time moves.
            assert!(!s.insert(0, t(5_000)));
            // Seen again earlier: nothing changes.
            assert!(!s.insert(1, t(0)));
            assert_eq!(s.len() as u64, n);
            assert_eq!(s.oldest(), Some(t(1)));
            let times: Vec<i64> = s.iter().map(|x| x.t.timestamp()).collect();
            let mut sorted = times.clone();
            sorted.sort_unstable();
            assert_eq!(times, sorted);
            // Values 1..=4 leave; 0 was seen at 5000 and stays.
            assert_eq!(s.evict_through(t(4)), 4);
            assert_eq!(s.len() as u64, n - 4);
            assert!(s.contains(0) && !s.contains(1) && s.contains(5));
            let saved = serde_json::to_value(&s).unwrap();
            let back: ExactSet = serde_json::from_value(saved.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), saved);
            assert_eq!(s.evict_through(t(10_000)), (n - 4) as usize);
            assert!(s.is_empty());
            assert!(matches!(s, ExactSet::Small(_)));
        }
    }

    #[test]
    fn shown_values_keep_the_first_and_refill() {
        let mut s = Shown::default();
        for (h, at) in [(1, 1), (2, 2), (3, 3), (1, 4)] {
            s.offer(h, t(at), &h.to_string(), 2);
        }
        let texts: Vec<&str> = s.iter().map(|v| &*v.text).collect();
        assert_eq!(texts, ["1", "2"]);
        // 2 leaves (last seen at 2); 1 was seen again at 4 and stays.
        s.evict_through(t(3));
        assert_eq!(s.len(), 1);
        s.offer(3, t(5), "3", 2);
        let texts: Vec<&str> = s.iter().map(|v| &*v.text).collect();
        assert_eq!(texts, ["1", "3"]);
    }
}
