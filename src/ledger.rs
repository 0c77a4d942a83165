//! What headroom knows before the watches do: demand admitted by the webhook, and volumes the
//! extender bound to nodes.
//!
//! ## Admitted demand
//!
//! Fed at once by every admitted, non-dry-run request that adds block or memory demand, so the
//! projection can cross a trigger before any pod is Pending. An entry leaves when its object
//! shows up in the index (then accounting counts it) or after `ttl` (the object never came:
//! a later admission webhook denied it, or the client gave up).

use std::{
    collections::{BTreeSet, HashMap},
    hash::BuildHasher,
    time::{Duration, Instant},
};

use crate::{
    decide::{accounting::Reservations, projection::AdmittedDemand},
    model::{Hasher, Name, NsName},
};

/// What one admitted object will need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    demand: AdmittedDemand,
    at: Instant,
    /// The review came over an authenticated connection (the API server vouched for it).
    vouched: bool,
}

/// Admissions remembered at most: a flood of reviews for objects that never appear must not
/// grow memory.
const MAX_ADMITTED: usize = 10_000;

/// Identifies the object an admission was for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Admitted {
    Pod {
        namespace: String,
        name: String,
    },
    Claim {
        namespace: String,
        name: String,
    },
    /// A pod created from `generateName`: no name to match later, it only expires.
    Unnamed {
        uid: String,
    },
}

#[derive(Debug)]
pub struct AdmittedLedger {
    entries: HashMap<Admitted, Entry>,
    ttl: Duration,
}

impl AdmittedLedger {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
        }
    }

    /// Records an admission; `vouched` when the review came over an authenticated connection.
    pub fn record(&mut self, what: Admitted, demand: AdmittedDemand, vouched: bool, now: Instant) {
        if demand == AdmittedDemand::default() {
            return;
        }
        if self.entries.len() >= MAX_ADMITTED {
            let ttl = self.ttl;
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.at) < ttl);
            if self.entries.len() >= MAX_ADMITTED && !vouched {
                return;
            }
        }
        self.entries.insert(
            what,
            Entry {
                demand,
                at: now,
                vouched,
            },
        );
    }

    /// Drops entries that expired or whose object `seen` reports, and sums the vouched rest:
    /// an admission nobody vouches for is demand only once the watch shows its object (and
    /// then the index counts it).
    pub fn total(&mut self, now: Instant, seen: impl Fn(&Admitted) -> bool) -> AdmittedDemand {
        self.entries
            .retain(|what, e| now.saturating_duration_since(e.at) < self.ttl && !seen(what));
        self.entries
            .values()
            .filter(|e| e.vouched)
            .fold(AdmittedDemand::default(), |acc, e| AdmittedDemand {
                block_volumes: acc.block_volumes + e.demand.block_volumes,
                memory_bytes: acc.memory_bytes + e.demand.memory_bytes,
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Volumes the extender bound to a node, held there until the watch shows the pod on it.
///
/// The next filter must see a binding at once, or a burst of pods would all be sent to the
/// node that looked emptiest before any of them arrived there.
#[derive(Debug)]
pub struct BindingLedger {
    bindings: HashMap<NsName, (Name, BTreeSet<Name>, Instant)>,
    /// Block volume keys of pods seen by filter/prioritize (bind carries only the pod's name).
    demands: HashMap<String, (BTreeSet<Name>, Instant)>,
    /// Nodes the filter passed (as name hashes: 5,000 names per filter call must not mean
    /// 5,000 allocations), by pod UID: bind places a pod only on one of these.
    passed: HashMap<String, (Vec<u64>, Instant)>,
    /// Hashes the passed nodes' names. Seeded per process, and only compared within it;
    /// FNV a byte at a time was a tenth of the filter route at 5,000 names.
    node_hasher: Hasher,
    ttl: Duration,
}

/// Demands remembered at most: filter calls for pods that never bind must not grow memory.
const MAX_DEMANDS: usize = 10_000;

/// Inserts into a map of at most [`MAX_DEMANDS`] entries: expired ones go first, and if that is
/// not enough, all of them (a flood of filter calls must not grow memory).
fn insert_bounded<V>(
    map: &mut HashMap<String, (V, Instant)>,
    key: &str,
    value: V,
    now: Instant,
    ttl: Duration,
) {
    if map.len() >= MAX_DEMANDS {
        map.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
        if map.len() >= MAX_DEMANDS {
            map.clear();
        }
    }
    map.insert(key.to_owned(), (value, now));
}

impl BindingLedger {
    pub fn new(ttl: Duration) -> Self {
        Self {
            bindings: HashMap::new(),
            demands: HashMap::new(),
            passed: HashMap::new(),
            node_hasher: Hasher::default(),
            ttl,
        }
    }

    /// Remembers what a pod (by UID) needs, from a filter or prioritize request.
    pub fn remember(&mut self, uid: &str, keys: BTreeSet<Name>, now: Instant) {
        insert_bounded(&mut self.demands, uid, keys, now, self.ttl);
    }

    /// Remembers the nodes the filter passed for a pod (by UID).
    pub fn filtered<'a>(&mut self, uid: &str, nodes: impl Iterator<Item = &'a str>, now: Instant) {
        let nodes = nodes.map(|n| self.node_hasher.hash_one(n)).collect();
        insert_bounded(&mut self.passed, uid, nodes, now, self.ttl);
    }

    /// Whether the filter passed `node` for the pod `uid` within the TTL.
    pub fn passed(&self, uid: &str, node: &str, now: Instant) -> bool {
        self.passed.get(uid).is_some_and(|(nodes, at)| {
            now.saturating_duration_since(*at) < self.ttl && nodes.contains(&self.node_hasher.hash_one(node))
        })
    }

    /// What a pod needs, as last seen by filter or prioritize.
    pub fn demand(&self, uid: &str) -> Option<&BTreeSet<Name>> {
        self.demands.get(uid).map(|(k, _)| k)
    }

    /// Records that `pod` was bound to `node` holding `keys`.
    pub fn record(&mut self, pod: NsName, node: &str, keys: BTreeSet<Name>, now: Instant) {
        self.bindings.insert(pod, (Name::from(node), keys, now));
    }

    /// Drops bindings the watch now shows (`seen(pod, node)`) or that are older than the TTL,
    /// and returns the rest as reservations per node.
    pub fn reservations(&mut self, now: Instant, seen: impl Fn(&NsName, &str) -> bool) -> Reservations {
        let ttl = self.ttl;
        self.bindings
            .retain(|pod, (node, _, at)| now.saturating_duration_since(*at) < ttl && !seen(pod, node));
        let mut out = Reservations::new();
        for (node, keys, _) in self.bindings.values() {
            out.entry(node.clone()).or_default().extend(keys.iter().cloned());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Admitted {
        Admitted::Pod {
            namespace: "a".into(),
            name: name.into(),
        }
    }

    #[test]
    fn entries_leave_when_seen_or_expired() {
        let t0 = Instant::now();
        let mut l = AdmittedLedger::new(Duration::from_secs(120));
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 10,
            },
            true,
            t0,
        );
        l.record(
            pod("p2"),
            AdmittedDemand {
                block_volumes: 0,
                memory_bytes: 5,
            },
            true,
            t0 + Duration::from_secs(60),
        );
        l.record(pod("nothing"), AdmittedDemand::default(), true, t0);
        assert_eq!(l.len(), 2, "zero demand is not recorded");
        assert_eq!(
            l.total(t0, |_| false),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 15
            }
        );
        assert_eq!(
            l.total(t0, |w| *w == pod("p1")),
            AdmittedDemand {
                block_volumes: 0,
                memory_bytes: 5
            }
        );
        assert_eq!(
            l.total(t0 + Duration::from_secs(180), |_| false),
            AdmittedDemand::default(),
            "p2 expired at 180s"
        );
        assert!(l.is_empty());
    }

    #[test]
    fn demand_nobody_vouches_for_is_never_counted_and_never_grows_memory() {
        let t0 = Instant::now();
        let mut l = AdmittedLedger::new(Duration::from_secs(30));
        let one = AdmittedDemand {
            block_volumes: 1,
            memory_bytes: 0,
        };
        for i in 0..(MAX_ADMITTED + 500) {
            l.record(pod(&format!("fake-{i}")), one, false, t0);
        }
        assert_eq!(l.len(), MAX_ADMITTED, "bounded");
        assert_eq!(l.total(t0, |_| false), AdmittedDemand::default());
        // Vouched demand still gets in, and counts.
        l.record(pod("real"), one, true, t0);
        assert_eq!(l.total(t0, |_| false), one);
        // Unconfirmed entries go after confirmWithin.
        assert_eq!(
            l.total(t0 + Duration::from_secs(30), |_| false),
            AdmittedDemand::default()
        );
        assert!(l.is_empty());
    }

    #[test]
    fn bindings_hold_until_seen_or_expired() {
        let t0 = Instant::now();
        let mut l = BindingLedger::new(Duration::from_secs(300));
        let keys = |ks: &[&str]| ks.iter().map(|k| Name::from(*k)).collect::<BTreeSet<_>>();
        l.record(("a".into(), "p1".into()), "n1", keys(&["h1"]), t0);
        l.record(("a".into(), "p2".into()), "n1", keys(&["h2", "h1"]), t0);
        l.record(
            ("a".into(), "p3".into()),
            "n2",
            keys(&["h3"]),
            t0 + Duration::from_secs(200),
        );
        let r = l.reservations(t0, |_, _| false);
        assert_eq!(r["n1"], keys(&["h1", "h2"]));
        assert_eq!(r["n2"], keys(&["h3"]));
        let r = l.reservations(t0, |pod, node| pod.1 == "p2" && node == "n1");
        assert_eq!(r["n1"], keys(&["h1"]), "p2 is on n1 in the watch now");
        let r = l.reservations(t0 + Duration::from_secs(300), |_, _| false);
        assert!(!r.contains_key("n1"), "p1 expired");
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn remembered_demands_are_bounded() {
        let t0 = Instant::now();
        let mut l = BindingLedger::new(Duration::from_secs(300));
        for i in 0..(MAX_DEMANDS + 5) {
            l.remember(&i.to_string(), BTreeSet::new(), t0);
        }
        assert!(l.demands.len() <= MAX_DEMANDS);
        assert!(
            l.demand(&(MAX_DEMANDS + 4).to_string()).is_some(),
            "the newest is kept"
        );
    }

    #[test]
    fn readmitting_the_same_object_replaces_its_entry() {
        let t0 = Instant::now();
        let mut l = AdmittedLedger::new(Duration::from_secs(120));
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 0,
            },
            true,
            t0,
        );
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 0,
            },
            true,
            t0,
        );
        assert_eq!(l.total(t0, |_| false).block_volumes, 1);
    }
}
