//! A hash map the published views share: copied on write one shard at a time.
//!
//! A view is published after every watch event, and its claim and key maps hold 100,000
//! entries each at scale. Cloning the map shares every shard; a change then copies only the
//! shard it lands in (a few hundred entries). `imbl`'s persistent map did the same with a
//! 32-slot node per level: at 100,000 entries its sparse leaves took 54 MB for the two maps.

use std::{
    borrow::Borrow,
    fmt,
    hash::{BuildHasher, Hash},
    sync::Arc,
};

use crate::model::{HashMap, Hasher};

/// Entries per shard before the shards are multiplied: a write after a publish copies one.
const SHARD_TARGET: usize = 256;

pub struct SharedMap<K, V> {
    /// Shard `i` holds the keys whose hash's top `bits` are `i`.
    shards: Arc<Vec<Arc<HashMap<K, V>>>>,
    bits: u32,
    len: usize,
    hasher: Hasher,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            shards: Arc::clone(&self.shards),
            bits: self.bits,
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            shards: Arc::new(Vec::new()),
            bits: 0,
            len: 0,
            hasher: Hasher::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        if self.bits == 0 {
            return 0;
        }
        (self.hasher.hash_one(key) >> (64 - self.bits)) as usize
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards.get(self.shard_of(key))?.get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The shard `key` lands in, made this map's own (copied when a clone shares it).
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        if self.shards.is_empty() {
            Arc::make_mut(&mut self.shards).push(Arc::new(HashMap::with_hasher(self.hasher.clone())));
        }
        let at = self.shard_of(key);
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[at])
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Only a key that is there costs a copy of its shard.
        if !self.contains_key(key) {
            return None;
        }
        self.shard_mut(key).get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.shard_mut(&key).insert(key, value);
        if old.is_none() {
            self.count_one_more();
        }
        old
    }

    /// The value under `key`, made by `make` first when there is none.
    pub fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.contains_key(key) {
            // Resharding first: the reference returned must point into the final shard.
            self.count_one_more();
        }
        self.shard_mut(key).entry(key.clone()).or_insert_with(make)
    }

    /// One entry more; the shards multiply once each holds more than its target.
    fn count_one_more(&mut self) {
        self.len += 1;
        if self.len > SHARD_TARGET << self.bits {
            self.reshard(self.bits + 1);
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.contains_key(key) {
            return None;
        }
        let old = self.shard_mut(key).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Lays the entries out in `2^bits` shards.
    fn reshard(&mut self, bits: u32) {
        let mut shards: Vec<HashMap<K, V>> = (0..1usize << bits)
            .map(|_| HashMap::with_hasher(self.hasher.clone()))
            .collect();
        for (k, v) in self.iter() {
            let at = (self.hasher.hash_one(k) >> (64 - bits)) as usize;
            shards[at].insert(k.clone(), v.clone());
        }
        self.bits = bits;
        self.shards = Arc::new(shards.into_iter().map(Arc::new).collect());
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for SharedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = SharedMap::new();
        for (k, v) in entries {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Hash + Eq + Clone, V: Clone + PartialEq> PartialEq for SharedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug, V: Clone + fmt::Debug> fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a, K: Hash + Eq + Clone, V: Clone> IntoIterator for &'a SharedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_what_it_saw_while_the_original_changes() {
        let mut map: SharedMap<u32, u32> = (0..5_000).map(|i| (i, i)).collect();
        assert!(map.bits > 0, "5,000 entries are sharded");
        let published = map.clone();
        for i in 0..5_000 {
            if i % 3 == 0 {
                map.remove(&i);
            } else if let Some(v) = map.get_mut(&i) {
                *v += 1;
            }
        }
        map.insert(9_999, 1);
        assert_eq!(published.len(), 5_000);
        assert!((0..5_000).all(|i| published.get(&i) == Some(&i)));
        assert_eq!(map.len(), 5_000 - 1_667 + 1);
        assert_eq!(map.get(&1), Some(&2));
        assert_eq!(map.get(&3), None);
        assert_eq!(map.iter().count(), map.len());
    }

    #[test]
    fn a_write_copies_one_shard_not_the_map() {
        let mut map: SharedMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        let published = map.clone();
        map.insert(1, 7);
        let shared = map
            .shards
            .iter()
            .zip(published.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, map.shards.len() - 1);
    }

    #[test]
    fn get_or_insert_with_makes_a_value_once_and_counts_it_through_resharding() {
        let mut map: SharedMap<u32, Vec<u32>> = SharedMap::new();
        for i in 0..20_000 {
            map.get_or_insert_with(&(i % 5_000), Vec::new).push(i);
        }
        let published = map.clone();
        map.get_or_insert_with(&7, Vec::new).push(99);
        assert_eq!(map.len(), 5_000);
        assert_eq!(map.iter().count(), 5_000);
        assert_eq!(map.get(&7), Some(&vec![7, 5_007, 10_007, 15_007, 99]));
        assert_eq!(published.get(&7), Some(&vec![7, 5_007, 10_007, 15_007]));
        assert!(map.bits > 0, "5,000 entries are sharded");
    }

    #[test]
    fn maps_with_the_same_entries_are_equal_however_they_were_built() {
        let a: SharedMap<u32, u32> = (0..1_000).map(|i| (i, i)).collect();
        let mut b: SharedMap<u32, u32> = (0..2_000).rev().map(|i| (i, i)).collect();
        assert_ne!(a, b);
        for i in 1_000..2_000 {
            b.remove(&i);
        }
        assert_eq!(a, b);
    }
}
