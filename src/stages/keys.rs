//! A detection stage's windows by group key, compact enough for a million keys.
//!
//! A [`KeyMap`] holds each key once, in the same allocation as its window, and its hash
//! table holds only a pointer a key: with `max_keys` of 1,000,000 the table is about
//! 19 MB and a key costs its window, its text and nothing more. Growing the table moves
//! pointers, never windows, so memory grows without the doubling spike of a table of
//! windows; removed keys free their allocation at once.
//!
//! Keys are hashed with the standard library's randomly keyed SipHash: group keys come
//! from the telemetry, so whoever sends it must not be able to choose colliding keys.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::marker::PhantomData;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One key and its window, in one allocation.
struct Slot<W> {
    key: Box<str>,
    window: W,
}

/// Windows by group key. Saved as a JSON object `{key: window}`, in no particular order.
pub struct KeyMap<W> {
    table: HashTable<Box<Slot<W>>>,
    hasher: RandomState,
}

impl<W> Default for KeyMap<W> {
    fn default() -> Self {
        KeyMap {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<W> KeyMap<W> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The window of `key`.
    pub fn get(&self, key: &str) -> Option<&W> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |s| *s.key == *key).map(|s| &s.window)
    }

    /// The window of `key`, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut W> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find_mut(hash, |s| *s.key == *key)
            .map(|s| &mut s.window)
    }

    /// The window of `key`, made empty if the key is new (its text is copied only then).
    pub fn get_or_default(&mut self, key: &str) -> &mut W
    where
        W: Default,
    {
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |s| *s.key == *key, |s| hasher.hash_one(&*s.key))
        {
            Entry::Occupied(e) => &mut e.into_mut().window,
            Entry::Vacant(e) => {
                let slot = Box::new(Slot {
                    key: key.into(),
                    window: W::default(),
                });
                &mut e.insert(slot).into_mut().window
            }
        }
    }

    /// Sets the window of `key`, replacing the one it had.
    pub fn insert(&mut self, key: Box<str>, window: W) {
        let hash = self.hasher.hash_one(&*key);
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |s| s.key == key, |s| hasher.hash_one(&*s.key))
        {
            Entry::Occupied(e) => e.into_mut().window = window,
            Entry::Vacant(e) => {
                e.insert(Box::new(Slot { key, window }));
            }
        }
    }

    /// Keys and their windows, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &W)> {
        self.table.iter().map(|s| (&*s.key, &s.window))
    }

    /// The windows, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &W> {
        self.table.iter().map(|s| &s.window)
    }

    /// The windows, to change, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut W> {
        self.table.iter_mut().map(|s| &mut s.window)
    }

    /// Keeps the keys for which `keep` is true. The table keeps its size (it is about to
    /// be filled again); the windows removed are freed.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut W) -> bool) {
        self.table.retain(|s| {
            let Slot { key, window } = &mut **s;
            keep(key, window)
        });
    }
}

impl<W: fmt::Debug> fmt::Debug for KeyMap<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<W: Serialize> Serialize for KeyMap<W> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, w) in self.iter() {
            map.serialize_entry(k, w)?;
        }
        map.end()
    }
}

impl<'de, W: Deserialize<'de>> Deserialize<'de> for KeyMap<W> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<W>(PhantomData<W>);

        impl<'de, W: Deserialize<'de>> Visitor<'de> for MapVisitor<W> {
            type Value = KeyMap<W>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of windows by group key")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<KeyMap<W>, A::Error> {
                let mut map = KeyMap::new();
                if let Some(n) = access.size_hint() {
                    map.table.reserve(n, |s| map.hasher.hash_one(&*s.key));
                }
                while let Some((key, window)) = access.next_entry::<String, W>()? {
                    map.insert(key.into_boxed_str(), window);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_found_replaced_kept_and_saved_as_an_object() {
        let mut m: KeyMap<u32> = KeyMap::new();
        *m.get_or_default("a") += 1;
        *m.get_or_default("a") += 1;
        *m.get_or_default("b") += 5;
        m.insert("c".into(), 7);
        m.insert("c".into(), 8);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a"), Some(&2));
        assert_eq!(m.get("c"), Some(&8));
        assert_eq!(m.get("d"), None);
        if let Some(b) = m.get_mut("b") {
            *b += 1;
        }
        let saved = serde_json::to_value(&m).unwrap();
        assert_eq!(saved, json!({"a": 2, "b": 6, "c": 8}));
        let back: KeyMap<u32> = serde_json::from_value(saved).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.get("b"), Some(&6));

        m.retain(|k, v| k != "a" && *v < 8);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![("b", &6)]);
        assert_eq!(m.values().sum::<u32>(), 6);
        m.values_mut().for_each(|v| *v = 0);
        assert_eq!(m.get("b"), Some(&0));
    }

    #[test]
    fn many_keys_survive_the_table_growing() {
        let mut m: KeyMap<usize> = KeyMap::new();
        for i in 0..10_000 {
            *m.get_or_default(&format!("k{i}")) = i;
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000).all(|i| m.get(&format!("k{i}")) == Some(&i)));
    }
}
