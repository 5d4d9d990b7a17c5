//! The values `new_term` knows: per group key, a map from each value's hash to the time
//! it was last seen, within the stage's bounds.
//!
//! A value costs one 16-byte bucket of a hash table (its hash and the time, in
//! milliseconds) plus the table's control byte and slack: 20 to 40 bytes as the table
//! fills. A key costs its text, its table's header and the table's smallest sizes: about
//! 300 bytes with a few values (measured: `benches/new_term.rs`). Bounds are kept by
//! evicting the least recently seen tenth at a time, so the cost of a bound is constant
//! per value learned.

use std::hash::BuildHasherDefault;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::stages::keys::KeyMap;
use crate::stages::values::Identity;

/// Event time in milliseconds since the Unix epoch.
pub(super) type Millis = i64;

type ByHash = hashbrown::HashMap<u64, Millis, BuildHasherDefault<Identity>>;

/// What a sighting of a value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sighting {
    /// Known, and seen within `forget_after`.
    Known,
    /// Not held: never seen, forgotten and swept, or evicted.
    New,
    /// Held, but not seen for `forget_after`: forgotten, seen again.
    Returned,
}

impl Sighting {
    /// Whether the value is news (new, or back after being forgotten).
    pub(super) fn is_news(self) -> bool {
        self != Sighting::Known
    }
}

/// One group key's values. Saved as a list of `[hash, time]`.
#[derive(Debug, Clone)]
pub(super) struct TermKey {
    terms: ByHash,
    /// The latest sighting of any of its values.
    newest: Millis,
}

impl Default for TermKey {
    fn default() -> Self {
        TermKey {
            terms: ByHash::default(),
            newest: Millis::MIN,
        }
    }
}

/// How many values to evict from a key holding `held` before one more is added, under
/// `max_terms`: down to `max_terms` less a tenth, so a full key evicts once per tenth.
fn to_evict(held: usize, max_terms: usize) -> usize {
    let max_terms = max_terms.max(1);
    if held < max_terms {
        return 0;
    }
    held + 1 - (max_terms - max_terms / 10)
}

impl TermKey {
    /// Values held.
    pub(super) fn len(&self) -> usize {
        self.terms.len()
    }

    /// When value `h` was last seen, if it is held.
    #[cfg(test)]
    pub(super) fn last_seen(&self, h: u64) -> Option<Millis> {
        self.terms.get(&h).copied()
    }

    /// Notes value `h` seen at `t`, while values last seen at or before `forgotten` are
    /// forgotten. A value is stored with the time it was seen, or with `now` (the stage's
    /// newest event time) when that time is itself forgotten already (an event that came
    /// late), so it is known from now on. Before a new value is added to a key holding
    /// `max_terms`, its least recently seen values are evicted down to `max_terms` less a
    /// tenth: returns the sighting and how many were evicted.
    pub(super) fn see(
        &mut self,
        h: u64,
        t: Millis,
        now: Millis,
        forgotten: Option<Millis>,
        max_terms: usize,
    ) -> (Sighting, usize) {
        let stale = |at: Millis| forgotten.is_some_and(|c| at <= c);
        let stored = if stale(t) { now } else { t };
        self.newest = self.newest.max(stored);
        if let Some(last) = self.terms.get_mut(&h) {
            let sighting = if stale(*last) {
                Sighting::Returned
            } else {
                Sighting::Known
            };
            *last = (*last).max(stored);
            return (sighting, 0);
        }
        let evicted = self.evict_oldest(to_evict(self.terms.len(), max_terms));
        self.terms.insert(h, stored);
        (Sighting::New, evicted)
    }

    /// Learns value `h` as seen at `t` (from history: nothing is news), keeping the later
    /// time if it is held. A key holding `max_terms` evicts as [`TermKey::see`] does:
    /// returns whether the value is new and how many were evicted.
    pub(super) fn learn(&mut self, h: u64, t: Millis, max_terms: usize) -> (bool, usize) {
        self.newest = self.newest.max(t);
        if let Some(last) = self.terms.get_mut(&h) {
            *last = (*last).max(t);
            return (false, 0);
        }
        let evicted = self.evict_oldest(to_evict(self.terms.len(), max_terms));
        self.terms.insert(h, t);
        (true, evicted)
    }

    /// Evicts the `n` values seen least recently (values seen at the same time are taken
    /// in no particular order); returns how many went.
    pub(super) fn evict_oldest(&mut self, n: usize) -> usize {
        if n == 0 || self.terms.is_empty() {
            return 0;
        }
        if n >= self.terms.len() {
            let all = self.terms.len();
            self.terms = ByHash::default();
            return all;
        }
        let mut times: Vec<Millis> = self.terms.values().copied().collect();
        let cut = Cut::of(&mut times, n);
        let mut budget = cut.ties;
        let before = self.terms.len();
        self.terms.retain(|_, t| !cut.takes(*t, &mut budget));
        before - self.terms.len()
    }

    /// Forgets the values last seen at or before `cutoff`; how many.
    pub(super) fn forget_through(&mut self, cutoff: Millis) -> usize {
        let before = self.terms.len();
        self.terms.retain(|_, t| *t > cutoff);
        if self.terms.is_empty() {
            self.terms = ByHash::default();
        }
        before - self.terms.len()
    }

    /// The latest sighting of any of its values.
    pub(super) fn newest(&self) -> Millis {
        self.newest
    }
}

/// Where to cut a set of times so that exactly `n` of the earliest go: every time before
/// `at`, and `ties` of those at `at`.
#[derive(Debug, Clone, Copy)]
struct Cut {
    at: Millis,
    ties: usize,
}

impl Cut {
    /// The cut taking the `n` earliest of `times` (`0 < n < times.len()`); reorders
    /// `times`.
    fn of(times: &mut [Millis], n: usize) -> Cut {
        let (_, nth, _) = times.select_nth_unstable(n - 1);
        let at = *nth;
        let before = times.iter().filter(|t| **t < at).count();
        Cut {
            at,
            ties: n - before,
        }
    }

    /// Whether time `t` goes, spending the `budget` of ties.
    fn takes(&self, t: Millis, budget: &mut usize) -> bool {
        if t < self.at {
            true
        } else if t == self.at && *budget > 0 {
            *budget -= 1;
            true
        } else {
            false
        }
    }
}

/// What keeping a bound took away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Values.
    pub(super) terms: usize,
    /// Whole keys.
    pub(super) keys: usize,
}

/// Every key's values, and their total.
#[derive(Debug, Default)]
pub(super) struct TermStore {
    pub(super) keys: KeyMap<TermKey>,
    /// Values held over all keys.
    total: usize,
}

impl TermStore {
    /// Values held over all keys.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Keys held.
    pub(super) fn keys(&self) -> usize {
        self.keys.len()
    }

    /// The values of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&TermKey> {
        self.keys.get(key)
    }

    /// [`TermKey::see`] on key `key` (made if new).
    pub(super) fn see(
        &mut self,
        key: &str,
        h: u64,
        t: Millis,
        now: Millis,
        forgotten: Option<Millis>,
        max_terms: usize,
    ) -> (Sighting, usize) {
        let k = self.keys.get_or_default(key);
        let (sighting, evicted) = k.see(h, t, now, forgotten, max_terms);
        self.total = self.total - evicted + usize::from(sighting == Sighting::New);
        (sighting, evicted)
    }

    /// [`TermKey::learn`] on key `key` (made if new).
    pub(super) fn learn(
        &mut self,
        key: &str,
        h: u64,
        t: Millis,
        max_terms: usize,
    ) -> (bool, usize) {
        let k = self.keys.get_or_default(key);
        let (new, evicted) = k.learn(h, t, max_terms);
        self.total = self.total - evicted + usize::from(new);
        (new, evicted)
    }

    /// Forgets the values last seen at or before `cutoff`, and the keys left without any;
    /// how many values.
    pub(super) fn forget_through(&mut self, cutoff: Millis) -> usize {
        let mut forgot = 0;
        self.keys.retain(|_, k| {
            forgot += k.forget_through(cutoff);
            k.len() > 0
        });
        self.total -= forgot;
        forgot
    }

    /// Keeps at most `max_total` values over all keys: past it, the least recently seen
    /// tenth of them (whatever their key) is evicted, and the keys left without any.
    pub(super) fn bound_total(&mut self, max_total: usize) -> Evicted {
        let max_total = max_total.max(1);
        if self.total <= max_total {
            return Evicted::default();
        }
        let keep = max_total - max_total / 10;
        let n = self.total - keep;
        let mut times: Vec<Millis> = self
            .keys
            .values()
            .flat_map(|k| k.terms.values().copied())
            .collect();
        let mut out = Evicted::default();
        if n >= times.len() {
            out.keys = self.keys.len();
            out.terms = self.total;
            self.keys = KeyMap::new();
            self.total = 0;
            return out;
        }
        let cut = Cut::of(&mut times, n);
        drop(times);
        let mut budget = cut.ties;
        self.keys.retain(|_, k| {
            let before = k.terms.len();
            k.terms.retain(|_, t| !cut.takes(*t, &mut budget));
            out.terms += before - k.terms.len();
            if k.terms.is_empty() {
                out.keys += 1;
                false
            } else {
                true
            }
        });
        self.total -= out.terms;
        out
    }

    /// Keeps at most `max_keys` keys: past it, the least recently seen tenth of them is
    /// evicted with their values.
    pub(super) fn bound_keys(&mut self, max_keys: usize) -> Evicted {
        let max_keys = max_keys.max(1);
        if self.keys.len() <= max_keys {
            return Evicted::default();
        }
        let keep = max_keys - max_keys / 10;
        let n = self.keys.len() - keep;
        let mut times: Vec<Millis> = self.keys.values().map(TermKey::newest).collect();
        let cut = Cut::of(&mut times, n);
        drop(times);
        let mut budget = cut.ties;
        let mut out = Evicted::default();
        self.keys.retain(|_, k| {
            if cut.takes(k.newest, &mut budget) {
                out.keys += 1;
                out.terms += k.len();
                false
            } else {
                true
            }
        });
        self.total -= out.terms;
        out
    }

    /// Recounts the values (after a restore).
    pub(super) fn recount(&mut self) {
        self.total = self.keys.values().map(TermKey::len).sum();
    }
}

impl Serialize for TermKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.terms.iter())
    }
}

impl<'de> Deserialize<'de> for TermKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;

        impl<'de> Visitor<'de> for Pairs {
            type Value = TermKey;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of [value hash, time in milliseconds]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TermKey, A::Error> {
                let mut key = TermKey {
                    terms: ByHash::with_capacity_and_hasher(
                        seq.size_hint().unwrap_or(0).min(1 << 20),
                        BuildHasherDefault::default(),
                    ),
                    newest: Millis::MIN,
                };
                // A value listed twice (a hand-edited state) keeps its later time.
                while let Some((h, t)) = seq.next_element::<(u64, Millis)>()? {
                    key.learn(h, t, usize::MAX);
                }
                Ok(key)
            }
        }

        deserializer.deserialize_seq(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_new_known_then_forgotten_and_back() {
        let mut k = TermKey::default();
        assert_eq!(k.see(1, 10, 10, None, 100), (Sighting::New, 0));
        assert_eq!(k.see(1, 20, 20, None, 100), (Sighting::Known, 0));
        assert_eq!(k.last_seen(1), Some(20));
        // Seen earlier than its last sighting: known, the time stays.
        assert_eq!(k.see(1, 5, 20, None, 100), (Sighting::Known, 0));
        assert_eq!(k.last_seen(1), Some(20));
        // Forgotten through 20 (its last sighting): back.
        assert_eq!(k.see(1, 30, 30, Some(20), 100), (Sighting::Returned, 0));
        assert_eq!(k.see(1, 31, 31, Some(21), 100), (Sighting::Known, 0));
        // A late event of a value never seen, older than what is forgotten: stored at
        // `now`, so it is known from now on.
        assert_eq!(k.see(2, 1, 50, Some(40), 100), (Sighting::New, 0));
        assert_eq!(k.last_seen(2), Some(50));
        assert_eq!(k.forget_through(31), 1);
        assert_eq!(k.len(), 1);
        assert_eq!(k.newest(), 50);
    }

    #[test]
    fn a_full_key_evicts_its_least_recently_seen_tenth() {
        let mut k = TermKey::default();
        for h in 0..20u64 {
            assert_eq!(k.see(h, h as Millis, h as Millis, None, 20).1, 0);
        }
        // Value 0 seen again: the least recently seen are now 1, 2 and 3. The key goes
        // down to 18 (20 less a tenth) with the new value.
        k.see(0, 100, 100, None, 20);
        let (s, evicted) = k.see(99, 101, 101, None, 20);
        assert_eq!((s, evicted), (Sighting::New, 3));
        assert_eq!(k.len(), 18);
        assert!(k.last_seen(0).is_some() && k.last_seen(4).is_some());
        assert!((1..=3).all(|h| k.last_seen(h).is_none()));
        // Ties are cut exactly: values all seen at once lose only what the bound needs.
        let mut k = TermKey::default();
        for h in 0..100u64 {
            k.learn(h, 7, 100);
        }
        assert_eq!(k.learn(1000, 7, 100), (true, 11));
        assert_eq!(k.len(), 90);
        // A lower bound (a reload) takes the key down to it at the next new value.
        assert_eq!(k.learn(1001, 8, 10), (true, 82));
        assert_eq!(k.len(), 9);
        // A bound of 1 keeps the newest value only.
        let mut k = TermKey::default();
        k.see(1, 1, 1, None, 1);
        assert_eq!(k.see(2, 2, 2, None, 1), (Sighting::New, 1));
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn the_store_keeps_its_total_and_key_bounds() {
        let mut s = TermStore::default();
        for key in 0..10 {
            for h in 0..10u64 {
                let t = (key * 10 + h as i64) as Millis;
                s.see(&format!("k{key}"), h, t, t, None, 100);
            }
        }
        assert_eq!((s.keys(), s.total()), (10, 100));
        // 50 at most: the 55 seen least recently go (the bound keeps 45), which empties
        // the first five keys and half of the sixth.
        let e = s.bound_total(50);
        assert_eq!(e, Evicted { terms: 55, keys: 5 });
        assert_eq!((s.keys(), s.total()), (5, 45));
        assert_eq!(s.get("k5").map(TermKey::len), Some(5));
        // 3 keys at most: the two seen least recently go.
        let e = s.bound_keys(3);
        assert_eq!(e, Evicted { terms: 15, keys: 2 });
        assert!(s.get("k5").is_none() && s.get("k6").is_none() && s.get("k9").is_some());
        assert_eq!(s.total(), 30);
        assert_eq!(s.forget_through(89), 20);
        assert_eq!((s.keys(), s.total()), (1, 10));

        let saved = serde_json::to_string(&s.keys).unwrap();
        let mut back = TermStore {
            keys: serde_json::from_str(&saved).unwrap(),
            total: 0,
        };
        back.recount();
        assert_eq!(back.total(), 10);
        assert_eq!(back.get("k9").map(TermKey::newest), Some(99));
        assert_eq!(back.get("k9").and_then(|k| k.last_seen(3)), Some(93));
    }
}
