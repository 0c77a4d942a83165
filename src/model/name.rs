//! Names shared by every object and index that mentions them: one allocation per distinct name.
//!
//! A node's name is written on every pod and attachment it holds, a PV's on its claim and its
//! attachments, a volume handle in every index of held volumes. At 150,000 pods an owned copy
//! per mention was most of headroom's memory. A [`Name`] is a reference-counted string: cloning
//! it copies a pointer, and [`Names`] makes the objects the index keeps share one per name.

use std::{borrow::Borrow, collections::HashSet, fmt, ops::Deref, sync::Arc};

use super::Hasher;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable, shared name. Compares, hashes and orders as the string it holds (so maps
/// keyed by names are looked up by `&str`).
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names are one allocation (interned from the same name).
    pub fn shares(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        // Interned names compare by pointer; the text decides otherwise.
        self.shares(other) || *self.0 == *other.0
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::from("")
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::from(s))
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name::from(s.as_str())
    }
}

impl From<&Name> for Name {
    fn from(s: &Name) -> Self {
        s.clone()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0.to_string()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `str` does, so that width and alignment apply (`status` pads node names).
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowed when the input allows it, so no String is made only to be copied.
        let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        Ok(Name::from(&*s))
    }
}

/// The names the index holds, one allocation each.
///
/// A name nothing else holds any more stays until the next sweep, which runs when the set has
/// doubled since the last one: pods come and go with new names, and a sweep per deletion would
/// cost a scan of every name.
#[derive(Debug, Clone, Default)]
pub struct Names {
    set: HashSet<Name, Hasher>,
    after_last_sweep: usize,
}

/// Below this many names a sweep is not worth a scan.
const SWEEP_FLOOR: usize = 4096;

impl Names {
    /// Makes `name` the shared allocation of its text, adding it when it is new.
    pub fn intern(&mut self, name: &mut Name) {
        match self.set.get(name.as_str()) {
            Some(shared) => *name = shared.clone(),
            None => {
                self.set.insert(name.clone());
                if self.set.len() > 2 * self.after_last_sweep.max(SWEEP_FLOOR) {
                    self.sweep();
                }
            }
        }
    }

    /// Interns an optional name.
    pub fn intern_opt(&mut self, name: &mut Option<Name>) {
        if let Some(n) = name {
            self.intern(n);
        }
    }

    /// Forgets the names only this set holds.
    pub fn sweep(&mut self) {
        self.set.retain(|n| Arc::strong_count(&n.0) > 1);
        self.after_last_sweep = self.set.len();
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_share_one_allocation_and_compare_as_text() {
        let mut names = Names::default();
        let mut a = Name::from("w00001");
        let mut b = Name::from(String::from("w00001"));
        assert!(!a.shares(&b));
        assert_eq!(a, b, "equal text is an equal name, shared or not");
        names.intern(&mut a);
        names.intern(&mut b);
        assert!(a.shares(&b));
        assert_eq!(names.len(), 1);
        assert_eq!(a, "w00001");
        let (first, second) = (Name::from("a"), Name::from("b"));
        assert!(first < second);
    }

    #[test]
    fn a_sweep_forgets_only_the_names_nobody_else_holds() {
        let mut names = Names::default();
        let mut kept = Name::from("kept");
        names.intern(&mut kept);
        let mut dropped = Name::from("dropped");
        names.intern(&mut dropped);
        drop(dropped);
        names.sweep();
        assert_eq!(names.len(), 1);
        let mut again = Name::from("kept");
        names.intern(&mut again);
        assert!(again.shares(&kept));
    }

    #[test]
    fn names_that_come_and_go_do_not_pile_up() {
        let mut names = Names::default();
        let mut live = Vec::new();
        for i in 0..100_000 {
            let mut n = Name::from(format!("pod-{i}"));
            names.intern(&mut n);
            // A thousand live at a time, the rest dropped as pods are deleted.
            live.push(n);
            if live.len() > 1000 {
                live.remove(0);
            }
        }
        assert!(
            names.len() <= 2 * SWEEP_FLOOR + 1,
            "{} names kept for 1,000 live ones",
            names.len()
        );
    }

    #[test]
    fn it_formats_as_its_text_with_width_and_alignment() {
        let n = Name::from("node1");
        assert_eq!(format!("[{n:<8}] [{n:>7}] [{n}]"), "[node1   ] [  node1] [node1]");
        assert_eq!(format!("{n:?}"), r#""node1""#);
    }

    #[test]
    fn it_reads_and_writes_as_a_json_string() {
        let n: Name = serde_json::from_str(r#""ns\u0031""#).unwrap();
        assert_eq!(n, "ns1");
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""ns1""#);
    }
}
