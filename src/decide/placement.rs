//! Where block volumes fit: the accounting view with reservations overlaid.
//!
//! Shared by admission and the extender so both answer "does this pod fit on that node" the
//! same way: a node fits when it is schedulable and its block volumes plus the pod's volume
//! keys not already on it stay within its soft cap.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use smallvec::SmallVec;

use crate::{
    decide::accounting::{ClusterView, NodeUsage, Reservations},
    model::{Name, PodInfo, ns_name},
};

/// Where a node lies in memory: within one view, the node's identity.
fn address(node: &NodeUsage) -> usize {
    std::ptr::from_ref(node).addr()
}

/// The view plus volumes reserved on nodes since it was built (bindings made by the extender).
#[derive(Clone, Copy)]
pub struct Placement<'a> {
    pub view: &'a ClusterView,
    pub reservations: &'a Reservations,
}

impl<'a> Placement<'a> {
    pub fn new(view: &'a ClusterView, reservations: &'a Reservations) -> Self {
        Self { view, reservations }
    }

    /// Block volumes on `node`, reservations the view does not already count there included.
    pub fn block_volumes(&self, node: &NodeUsage) -> i64 {
        let reserved = self.reservations.get(&node.name).map_or(0, |keys| {
            keys.iter().filter(|k| !node.volume_keys.contains(*k)).count()
        });
        node.block_volumes + reserved as i64
    }

    /// Slots left under the soft cap on `node` (0 at or over it, or not block-ready).
    pub fn free_slots(&self, node: &NodeUsage) -> i64 {
        node.slots_left(self.block_volumes(node))
    }

    /// The slots `keys` would take on a node: those not already held there (watched or
    /// reserved). Every caller asks it of many nodes — the extender of 5,000 candidates — so
    /// each key's holders are looked up once, in the view's key → nodes index (usually empty: a
    /// new claim is held nowhere), and resolved to this view's nodes: the closure compares a
    /// node's address, not its name, whose bytes were one more cache miss per candidate.
    ///
    /// `node` must be one of this view's nodes (every caller takes them from `self.view`).
    pub fn needed_on<'k>(&self, keys: &'k BTreeSet<Name>) -> impl Fn(&NodeUsage) -> i64 + 'k
    where
        'a: 'k,
    {
        let view = self.view;
        let holders: Vec<(&Name, SmallVec<[usize; 2]>)> = keys
            .iter()
            .map(|k| {
                let on = view.key_nodes.get(k).into_iter().flatten();
                (k, on.filter_map(|n| view.node(n)).map(address).collect())
            })
            .collect();
        let reservations = self.reservations;
        move |node| {
            debug_assert!(
                view.node(&node.name).is_some_and(|n| std::ptr::eq(n, node)),
                "needed_on({}) asked of a node that is not the view's",
                node.name
            );
            let reserved = reservations.get(&node.name);
            holders
                .iter()
                .filter(|(key, on)| {
                    !on.contains(&address(node)) && !reserved.is_some_and(|r| r.contains(*key))
                })
                .count() as i64
        }
    }

    /// Whether a pod needing `keys` fits on a node under its soft cap (asked of many nodes, as
    /// [`Self::needed_on`]). A node whose CSI plugin has not registered takes no new volume.
    pub fn fits_on<'k>(&self, keys: &'k BTreeSet<Name>) -> impl Fn(&NodeUsage) -> bool + 'k
    where
        'a: 'k,
    {
        let needed = self.needed_on(keys);
        let placement = *self;
        move |node| {
            let needed = needed(node);
            node.schedulable
                && (needed == 0 || node.block_ready)
                && placement.block_volumes(node) + needed <= node.soft_cap
        }
    }

    /// Σ free slots over schedulable nodes, reservations included.
    pub fn room(&self) -> i64 {
        self.view.schedulable().map(|n| self.free_slots(n)).sum()
    }

    /// The fullest schedulable nodes, fullest first (closest to or past their soft cap).
    pub fn fullest(&self, limit: usize) -> Vec<NodeFill> {
        let mut nodes: Vec<NodeFill> = self
            .view
            .schedulable()
            .map(|n| NodeFill {
                name: n.name.clone(),
                block_volumes: self.block_volumes(n),
                soft_cap: n.soft_cap,
            })
            .collect();
        nodes.sort_by(|a, b| {
            (b.block_volumes - b.soft_cap)
                .cmp(&(a.block_volumes - a.soft_cap))
                .then(b.block_volumes.cmp(&a.block_volumes))
                .then(a.name.cmp(&b.name))
        });
        nodes.truncate(limit);
        nodes
    }
}

/// How full one node is: its block volumes against its soft cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFill {
    pub name: Name,
    pub block_volumes: i64,
    pub soft_cap: i64,
}

/// The volume keys of an indexed pod's block claims (claims the view does not know are not
/// block, or not created yet).
pub fn pod_block_keys(view: &ClusterView, pod: &PodInfo) -> BTreeSet<Name> {
    pod.claims
        .iter()
        .filter_map(|c| {
            view.block_claims
                .get(&(pod.namespace.clone(), c.clone()))
                .map(|(k, _)| k.clone())
        })
        .collect()
}

/// What a pod asks of block storage, resolved against the view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDemand {
    /// Volume keys of its block claims (distinct).
    pub keys: BTreeSet<Name>,
    /// Keys of block claims the pod brings itself (generic ephemeral volumes not yet created).
    pub unindexed: usize,
}

impl BlockDemand {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Resolves a pod's claims: PVC volumes through the indexed claims, generic ephemeral volumes
/// through their template's class (the claim does not exist before the pod).
pub fn pod_block_demand(view: &ClusterView, namespace: &str, pod: &Pod) -> BlockDemand {
    let mut demand = BlockDemand::default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(pvc) = &v.persistent_volume_claim {
            // A claim the index has not seen yet is not counted here: a block claim's own
            // admission put it in the admitted demand.
            if let Some((key, _)) = view.block_claims.get(&ns_name(namespace, &pvc.claim_name)) {
                demand.keys.insert(key.clone());
            }
        } else if let Some(eph) = &v.ephemeral {
            let claim = format!("{pod_name}-{}", v.name);
            if let Some((key, _)) = view.block_claims.get(&ns_name(namespace, &claim)) {
                demand.keys.insert(key.clone());
                continue;
            }
            let class = eph
                .volume_claim_template
                .as_ref()
                .and_then(|t| t.spec.storage_class_name.as_deref());
            if view.class_is_block(class) {
                // A pod created from generateName has no name yet: key by the volume instead.
                let id = if pod_name.is_empty() {
                    format!("~{}", v.name)
                } else {
                    claim
                };
                if demand.keys.insert(Name::from(format!("claim:{namespace}/{id}"))) {
                    demand.unindexed += 1;
                }
            }
        }
    }
    demand
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        decide::{
            accounting::{self, Settings},
            fixtures::cluster,
        },
    };

    fn keys(k: &[&str]) -> BTreeSet<Name> {
        k.iter().map(|s| Name::from(*s)).collect()
    }

    #[test]
    fn reservations_count_once_and_held_volumes_cost_nothing() {
        let mut state = cluster(&[22, 20]);
        state.csi_nodes.remove("n2");
        let view = accounting::account(&state, &Settings::from(&Config::default()), &Reservations::new());
        // n1: one new volume reserved, and one it already holds (not counted twice).
        let reservations: Reservations =
            [("n1".into(), keys(&["claim:apps/bound-just-now", "h/pv-n1-p0-c0"]))].into();
        let p = Placement::new(&view, &reservations);
        let n1 = view.node("n1").unwrap();
        let n2 = view.node("n2").unwrap();
        assert_eq!(p.block_volumes(n1), 23);
        assert_eq!(p.free_slots(n1), 1);
        assert_eq!(p.free_slots(n2), 0, "joining: no slot offered");
        // (case, keys, node, needed there, fits there)
        let rows: Vec<(&str, Vec<&str>, &str, i64, bool)> = vec![
            ("a new volume", vec!["claim:apps/x"], "n1", 1, true),
            (
                "two new volumes, one slot",
                vec!["claim:apps/x", "claim:apps/y"],
                "n1",
                2,
                false,
            ),
            ("held on n1: free there", vec!["h/pv-n1-p3-c0"], "n1", 0, true),
            (
                "reserved on n1: free there",
                vec!["claim:apps/bound-just-now"],
                "n1",
                0,
                true,
            ),
            ("held on n1, needed on n2", vec!["h/pv-n1-p3-c0"], "n2", 1, false),
            (
                "joining n2 keeps what it holds",
                vec!["h/pv-n2-p0-c0"],
                "n2",
                0,
                true,
            ),
        ];
        for (case, k, node, needed, fits) in rows {
            let k = keys(&k);
            let node = view.node(node).unwrap();
            assert_eq!(p.needed_on(&k)(node), needed, "{case}");
            assert_eq!(p.fits_on(&k)(node), fits, "{case}");
        }
        assert_eq!(p.room(), 1, "the joining node offers none");
    }

    #[test]
    fn the_fullest_come_first_measured_against_their_soft_cap() {
        let view = accounting::account(
            &cluster(&[10, 24, 23, 24]),
            &Settings::from(&Config::default()),
            &Reservations::new(),
        );
        let reservations = Reservations::new();
        let p = Placement::new(&view, &reservations);
        let names: Vec<Name> = p.fullest(3).into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["n2", "n4", "n3"], "ties by name");
        assert_eq!(
            p.fullest(1),
            [NodeFill {
                name: "n2".into(),
                block_volumes: 24,
                soft_cap: 24
            }]
        );
    }
}
