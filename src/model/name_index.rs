//! A read-only map from names to their positions in a list, with every name's bytes packed
//! in one buffer.
//!
//! The extender looks up 5,000 candidate names per request. In a `HashMap<Name, usize>` each
//! probe compares against a key whose bytes sit in their own heap allocation, and those
//! cache misses were two thirds of the filter's time. Here the table holds positions, and the
//! names they are compared with lie side by side (5,000 node names: ~40 KB of names and
//! ends, ~40 KB of table), which stay in cache across a request.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Hasher;

#[derive(Clone, Default)]
pub struct NameIndex {
    /// Every name, one after another, in list order.
    bytes: String,
    /// Where the name at each position ends in `bytes` (it starts where the one before ends).
    ends: Vec<u32>,
    /// Positions, hashed by their names.
    table: HashTable<u32>,
    hasher: Hasher,
}

impl NameIndex {
    /// Indexes `names` by position; the first of equal names wins.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut bytes, mut ends) = (String::new(), Vec::new());
        for name in names {
            bytes.push_str(name);
            ends.push(to_u32(bytes.len()));
        }
        let hasher = Hasher::default();
        let mut table = HashTable::with_capacity(ends.len());
        for at in 0..ends.len() {
            let name = slice(&bytes, &ends, at);
            let hash = hasher.hash_one(name);
            let rehash = |&i: &u32| hasher.hash_one(slice(&bytes, &ends, i as usize));
            if let hashbrown::hash_table::Entry::Vacant(slot) =
                table.entry(hash, |&i| slice(&bytes, &ends, i as usize) == name, rehash)
            {
                slot.insert(to_u32(at));
            }
        }
        NameIndex {
            bytes,
            ends,
            table,
            hasher,
        }
    }

    /// The position of `name`, if it is indexed.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.find(self.hasher.hash_one(name), name)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn find(&self, hash: u64, name: &str) -> Option<usize> {
        self.table
            .find(hash, |&i| self.name(i as usize) == name)
            .map(|&i| i as usize)
    }

    fn name(&self, at: usize) -> &str {
        slice(&self.bytes, &self.ends, at)
    }
}

fn slice<'a>(bytes: &'a str, ends: &[u32], at: usize) -> &'a str {
    let start = at.checked_sub(1).map_or(0, |before| ends[before] as usize);
    &bytes[start..ends[at] as usize]
}

/// Names are Kubernetes object names (at most 253 bytes), so positions and offsets of a
/// cluster's nodes fit in 32 bits by a wide margin.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a name index holds less than 4 GiB of names")
}

/// Equal when they map the same names to the same positions.
impl PartialEq for NameIndex {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && (0..self.len()).all(|at| {
                let name = self.name(at);
                self.get(name) == other.get(name)
            })
    }
}

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries((0..self.len()).map(|at| (self.name(at), at)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_first_position_and_nothing_else_is_found() {
        let names = ["w00001", "w00002", "", "w0000", "w00001", "wé"];
        let index = NameIndex::new(names);
        // (name, position)
        let rows = [
            ("w00001", Some(0)),
            ("w00002", Some(1)),
            ("", Some(2)),
            ("w0000", Some(3)),
            ("wé", Some(5)),
            ("w000", None),
            ("w000010", None),
            ("W00001", None),
        ];
        for (name, want) in rows {
            assert_eq!(index.get(name), want, "{name:?}");
        }
        assert_eq!(index.len(), names.len());
        assert_eq!(index, NameIndex::new(names));
        assert_ne!(index, NameIndex::new(["w00002", "w00001"]));
    }

    #[test]
    fn thousands_of_names_are_all_found() {
        let names: Vec<String> = (0..20_000).map(|i| format!("node-{i}")).collect();
        let index = NameIndex::new(names.iter().map(String::as_str));
        for (at, name) in names.iter().enumerate() {
            assert_eq!(index.get(name), Some(at));
        }
        assert_eq!(index.get("node-20000"), None);
    }
}
