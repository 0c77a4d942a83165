//! A table of namespaced objects found by their namespace and name, which the objects hold
//! themselves: the table keeps one pointer a slot, not a second `(namespace, name)` beside it
//! (150,000 pods in 262,144 slots: 8 MiB).

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::{Hasher, NsName};

/// An object that carries its own namespace and name. The key of an object in a
/// [`KeyedTable`] must not change while it is there.
pub trait Keyed {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
}

impl<T: Keyed> Keyed for Box<T> {
    fn namespace(&self) -> &str {
        (**self).namespace()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

#[derive(Clone, Default)]
pub struct KeyedTable<V> {
    table: HashTable<V>,
    hasher: Hasher,
}

impl<V: Keyed> KeyedTable<V> {
    fn hash(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    /// The hash of `value`'s own key, which growing the table recomputes for every object.
    fn hash_of(hasher: &Hasher, value: &V) -> u64 {
        hasher.hash_one((value.namespace(), value.name()))
    }

    fn matches<'a>(namespace: &'a str, name: &'a str) -> impl Fn(&V) -> bool + 'a {
        move |v| v.name() == name && v.namespace() == namespace
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &NsName) -> Option<&V> {
        self.get_str(&key.0, &key.1)
    }

    pub fn get_str(&self, namespace: &str, name: &str) -> Option<&V> {
        self.table
            .find(self.hash(namespace, name), Self::matches(namespace, name))
    }

    /// The object, to change anything but its namespace and name.
    pub fn get_mut(&mut self, key: &NsName) -> Option<&mut V> {
        let hash = self.hash(&key.0, &key.1);
        self.table.find_mut(hash, Self::matches(&key.0, &key.1))
    }

    pub fn contains_key(&self, key: &NsName) -> bool {
        self.get(key).is_some()
    }

    /// Puts `value` in under its own key; the object it replaces, if any.
    pub fn insert(&mut self, value: V) -> Option<V> {
        let hasher = &self.hasher;
        let hash = Self::hash_of(hasher, &value);
        match self
            .table
            .entry(hash, Self::matches(value.namespace(), value.name()), |v| {
                Self::hash_of(hasher, v)
            }) {
            hashbrown::hash_table::Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), value)),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(value);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &NsName) -> Option<V> {
        let hash = self.hash(&key.0, &key.1);
        self.table
            .find_entry(hash, Self::matches(&key.0, &key.1))
            .ok()
            .map(|e| e.remove().0)
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }

    pub fn retain(&mut self, keep: impl FnMut(&mut V) -> bool) {
        self.table.retain(keep);
    }

    pub fn values(&self) -> hashbrown::hash_table::Iter<'_, V> {
        self.table.iter()
    }

    /// Every object, to change anything but its namespace and name.
    pub fn values_mut(&mut self) -> hashbrown::hash_table::IterMut<'_, V> {
        self.table.iter_mut()
    }
}

impl<V: Keyed> std::ops::Index<&NsName> for KeyedTable<V> {
    type Output = V;
    fn index(&self, key: &NsName) -> &V {
        self.get(key)
            .unwrap_or_else(|| panic!("no object {}/{} in the table", key.0, key.1))
    }
}

/// Equal when they hold equal objects, whatever the order of their slots.
impl<V: Keyed + PartialEq> PartialEq for KeyedTable<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .values()
                .all(|v| other.get_str(v.namespace(), v.name()) == Some(v))
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for KeyedTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.table.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodInfo, ns_name};

    fn pod(ns: &str, name: &str, memory: i64) -> Box<PodInfo> {
        Box::new(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            memory_request: memory,
            ..Default::default()
        })
    }

    #[test]
    fn objects_are_found_replaced_and_removed_by_their_own_key() {
        let mut t = KeyedTable::default();
        assert!(t.insert(pod("a", "p", 1)).is_none());
        assert!(t.insert(pod("b", "p", 2)).is_none());
        // The same name in another namespace, and a namespace/name split elsewhere, differ.
        assert!(t.insert(pod("a/p", "", 3)).is_none());
        assert_eq!(t.len(), 3);
        assert_eq!(t.insert(pod("a", "p", 4)).map(|p| p.memory_request), Some(1));
        assert_eq!(t.len(), 3);
        assert_eq!(t[&ns_name("a", "p")].memory_request, 4);
        assert_eq!(t.get_str("b", "p").map(|p| p.memory_request), Some(2));
        t.get_mut(&ns_name("b", "p")).unwrap().memory_request = 5;
        assert_eq!(t.remove(&ns_name("b", "p")).map(|p| p.memory_request), Some(5));
        assert!(!t.contains_key(&ns_name("b", "p")) && t.remove(&ns_name("b", "p")).is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn tables_with_the_same_objects_are_equal_whatever_their_history() {
        let (mut one, mut other) = (KeyedTable::default(), KeyedTable::default());
        for i in 0..1_000 {
            one.insert(pod("ns", &format!("p{i}"), i));
        }
        for i in (0..1_200).rev() {
            other.insert(pod("ns", &format!("p{i}"), i));
        }
        other.retain(|p| p.memory_request < 1_000);
        assert_eq!(one, other);
        other.get_mut(&ns_name("ns", "p7")).unwrap().memory_request = -1;
        assert_ne!(one, other);
    }
}
