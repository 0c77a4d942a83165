//! The accounting kept current change by change: each applied or deleted object recomputes
//! only the nodes and claims it touches, with the result a full `account()` would give.
//!
//! A watch event names one object. What it can change is found through reverse indexes
//! (node → its pods and attachments, claim → the pods naming it, PV → its claims and
//! attachments, volume key → its claims); those nodes' loads are computed again with the
//! same `Load` the full accounting uses, and a claim is judged again when its resolution,
//! its users or its key's holders change. A StorageClass change (it may re-key every claim) and
//! a relist rebuild from scratch.

use std::{collections::BTreeSet, mem, sync::Arc};

use smallvec::SmallVec;

use crate::{
    decide::accounting::{
        self, ClaimResolver, ClaimState, ClusterView, Holders, Load, Reservations, Settings, Users,
    },
    index::{ClusterState, Kind, Object, ObjectKey},
    model::{AttachmentInfo, HashMap, Name, NsName, PodInfo},
};

/// The accounting of one `ClusterState`, updated as the state changes.
#[derive(Debug, Clone)]
pub struct LiveView {
    settings: Settings,
    view: ClusterView,
    reserved: Reservations,
    /// Node name → the pods bound to it (terminal or not).
    pods_on: HashMap<Name, List<NsName>>,
    /// Node name → the VolumeAttachments naming it.
    attachments_on: HashMap<Name, List<Name>>,
    /// Claim → the names of the pods (in its namespace) that mount it.
    pods_by_claim: HashMap<NsName, List<Name>>,
    /// PV name → the claims bound to it (`spec.volumeName`).
    claims_by_pv: HashMap<Name, List<NsName>>,
    /// PV name → the VolumeAttachments of it.
    attachments_by_pv: HashMap<Name, List<Name>>,
    /// Volume key → the block claims resolving to it.
    claims_by_key: HashMap<Name, List<NsName>>,
    /// Node name → the keys it is listed under in `key_nodes` (held or failing).
    node_keys: HashMap<Name, BTreeSet<Name>>,
}

/// What one change may have changed.
#[derive(Default)]
struct Dirty {
    nodes: BTreeSet<Name>,
    claims: BTreeSet<NsName>,
}

impl LiveView {
    /// The accounting of `state` from scratch, with the indexes that keep it current.
    pub fn build(state: &ClusterState, settings: Settings, reserved: Reservations) -> Self {
        let view = accounting::account(state, &settings, &reserved);
        Self::indexed(state, settings, reserved).with_view(view)
    }

    /// The indexes of `state`'s objects, waiting for the view [`accounting::account`] gives of
    /// the same state, settings and reservations ([`Self::with_view`]): the two read the state
    /// apart, so a caller with two cores may compute them side by side.
    pub fn indexed(state: &ClusterState, settings: Settings, reserved: Reservations) -> Self {
        let mut live = LiveView {
            settings,
            view: ClusterView::default(),
            reserved,
            pods_on: HashMap::default(),
            attachments_on: HashMap::default(),
            pods_by_claim: HashMap::default(),
            claims_by_pv: HashMap::default(),
            attachments_by_pv: HashMap::default(),
            claims_by_key: HashMap::default(),
            node_keys: HashMap::default(),
        };
        for pod in state.pods.values() {
            live.index_pod(pod);
        }
        for va in state.attachments.values() {
            live.index_attachment(va);
        }
        for claim in state.claims.values() {
            if let Some(pv) = &claim.volume_name {
                add(
                    &mut live.claims_by_pv,
                    pv,
                    (claim.namespace.clone(), claim.name.clone()),
                );
            }
        }
        live
    }

    /// Takes `view`, the accounting of the state this was indexed from, and indexes its keys.
    pub fn with_view(mut self, view: ClusterView) -> Self {
        self.view = view;
        for (id, (key, _)) in &self.view.block_claims {
            add(&mut self.claims_by_key, key, id.clone());
        }
        for (key, nodes) in &self.view.key_nodes {
            for node in nodes {
                self.node_keys
                    .entry(node.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self
    }

    /// The current accounting.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// `state` changed at `key`, which held `old` before (None: it was created). `state` is
    /// the state after the change.
    pub fn changed(&mut self, state: &ClusterState, key: &ObjectKey, old: Option<&Object>) {
        let mut dirty = Dirty::default();
        let id = || (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::StorageClass => return self.rebuild(state),
            Kind::Event | Kind::PodDisruptionBudget => return,
            Kind::Node | Kind::CsiNode => {
                dirty.nodes.insert(key.name.clone());
            }
            Kind::Pod => {
                if let Some(Object::Pod(old)) = old {
                    self.unindex_pod(old);
                    dirty.pod(old);
                }
                if let Some(new) = state.pods.get_str(&key.namespace, &key.name) {
                    self.index_pod(new);
                    dirty.pod(new);
                }
            }
            Kind::VolumeAttachment => {
                if let Some(Object::Attachment(old)) = old {
                    remove(&mut self.attachments_on, &old.node_name, &old.name);
                    if let Some(pv) = &old.pv_name {
                        remove(&mut self.attachments_by_pv, pv, &old.name);
                    }
                    dirty.nodes.insert(old.node_name.clone());
                }
                if let Some(new) = state.attachments.get(&key.name) {
                    self.index_attachment(new);
                    dirty.nodes.insert(new.node_name.clone());
                }
            }
            Kind::PersistentVolumeClaim => {
                let id = id();
                if let Some(Object::Claim(old)) = old
                    && let Some(pv) = &old.volume_name
                {
                    remove(&mut self.claims_by_pv, pv, &id);
                }
                if let Some(pv) = state.claims.get(&id).and_then(|c| c.volume_name.clone()) {
                    add(&mut self.claims_by_pv, &pv, id.clone());
                }
                self.claim_changed(state, id, &mut dirty);
            }
            Kind::PersistentVolume => {
                for claim in self.claims_by_pv.get(&key.name).cloned().unwrap_or_default() {
                    self.claim_changed(state, claim, &mut dirty);
                }
                for va in self.attachments_by_pv.get(&key.name).into_iter().flatten() {
                    if let Some(va) = state.attachments.get(va) {
                        dirty.nodes.insert(va.node_name.clone());
                    }
                }
            }
        }
        self.settle(state, dirty);
    }

    /// Replaces the reservations (ghost disks) held on top of what is watched.
    pub fn set_reserved(&mut self, state: &ClusterState, reserved: Reservations) {
        let mut dirty = Dirty::default();
        for node in self.reserved.keys().chain(reserved.keys()) {
            if self.reserved.get(node) != reserved.get(node) {
                dirty.nodes.insert(node.clone());
            }
        }
        self.reserved = reserved;
        self.settle(state, dirty);
    }

    /// Builds everything again from `state` (a relist, a StorageClass change).
    pub fn rebuild(&mut self, state: &ClusterState) {
        let settings = self.settings.clone();
        *self = Self::build(state, settings, mem::take(&mut self.reserved));
    }

    /// A claim's resolution may have changed: the claim and the nodes of its pods.
    fn claim_changed(&self, state: &ClusterState, claim: NsName, dirty: &mut Dirty) {
        for pod in self.pods_by_claim.get(&claim).into_iter().flatten() {
            if let Some(node) = state
                .pods
                .get_str(&claim.0, pod)
                .and_then(|p| p.node_name.clone())
            {
                dirty.nodes.insert(node);
            }
        }
        dirty.claims.insert(claim);
    }

    fn index_pod(&mut self, pod: &PodInfo) {
        let id = pod_id(pod);
        if let Some(node) = &pod.node_name {
            add(&mut self.pods_on, node, id.clone());
        }
        for c in &pod.claims {
            let claim = (id.0.clone(), c.clone());
            // A pod that mounts one claim twice is one user.
            if !self
                .pods_by_claim
                .get(&claim)
                .is_some_and(|pods| pods.contains(&id.1))
            {
                add(&mut self.pods_by_claim, &claim, id.1.clone());
            }
        }
    }

    fn unindex_pod(&mut self, pod: &PodInfo) {
        let id = pod_id(pod);
        if let Some(node) = &pod.node_name {
            remove(&mut self.pods_on, node, &id);
        }
        for c in &pod.claims {
            remove(&mut self.pods_by_claim, &(id.0.clone(), c.clone()), &id.1);
        }
    }

    fn index_attachment(&mut self, va: &AttachmentInfo) {
        add(&mut self.attachments_on, &va.node_name, va.name.clone());
        if let Some(pv) = &va.pv_name {
            add(&mut self.attachments_by_pv, pv, va.name.clone());
        }
    }

    /// Recomputes the dirty nodes, then every claim whose state may follow from them.
    fn settle(&mut self, state: &ClusterState, mut dirty: Dirty) {
        let settings = self.settings.clone();
        let resolver = ClaimResolver::new(state, &settings);
        let mut nodes_came_or_went = false;
        for name in &dirty.nodes {
            let attachments = self
                .attachments_on
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|va| state.attachments.get(va));
            let pods = self
                .pods_on
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|id| state.pods.get(id))
                .map(|p| &**p);
            let load = Load::of(&resolver, attachments, pods, self.reserved.get(name));
            let keys: BTreeSet<Name> = load.keys().cloned().collect();
            let before = self.node_keys.remove(name).unwrap_or_default();
            for gone in before.difference(&keys) {
                if let Some(holders) = self.view.key_nodes.get_mut(gone) {
                    holders.retain(|n| n != name);
                    if holders.is_empty() {
                        self.view.key_nodes.remove(gone);
                    }
                }
                dirty
                    .claims
                    .extend(self.claims_by_key.get(gone).into_iter().flatten().cloned());
            }
            for new in keys.difference(&before) {
                let holders = self.view.key_nodes.get_or_insert_with(new, Holders::new);
                if let Err(at) = holders.binary_search(name) {
                    holders.insert(at, name.clone());
                }
                dirty
                    .claims
                    .extend(self.claims_by_key.get(new).into_iter().flatten().cloned());
            }
            if !keys.is_empty() {
                self.node_keys.insert(name.clone(), keys);
            }
            let at = self.view.nodes.search(name);
            match (state.nodes.get(name), at) {
                (Some(node), Ok(at)) => self.view.nodes.set(at, Arc::new(load.usage(&resolver, node))),
                (Some(node), Err(at)) => {
                    let usage = Arc::new(load.usage(&resolver, node));
                    self.view.nodes.splice(at, false, Some(usage));
                    nodes_came_or_went = true;
                }
                (None, Ok(at)) => {
                    self.view.nodes.splice(at, true, None);
                    nodes_came_or_went = true;
                }
                (None, Err(_)) => {}
            }
        }
        if nodes_came_or_went {
            self.view.node_index = Arc::new(accounting::index_of(self.view.nodes.shared()));
        }
        for id in dirty.claims {
            self.judge_claim(state, &resolver, id);
        }
    }

    /// Resolves and judges one claim again, keeping the pending count and key index.
    fn judge_claim(&mut self, state: &ClusterState, resolver: &ClaimResolver, id: NsName) {
        let now = state.claims.get(&id).and_then(|claim| {
            let key = resolver.key(claim)?;
            let mut users = Users::default();
            for pod in self.pods_by_claim.get(&id).into_iter().flatten() {
                if let Some(pod) = state.pods.get_str(&id.0, pod) {
                    users.add(pod);
                }
            }
            let held = self.view.key_nodes.contains_key(&key);
            Some((key.clone(), accounting::claim_state(claim, held, users)))
        });
        let before = self.view.block_claims.get(&id).cloned();
        if before == now {
            return;
        }
        let pending = |c: &Option<(Name, ClaimState)>| i64::from(matches!(c, Some((_, ClaimState::Pending))));
        self.view.pending_claims += pending(&now) - pending(&before);
        let before_key = before.map(|(k, _)| k);
        let now_key = now.as_ref().map(|(k, _)| k.clone());
        if before_key != now_key {
            if let Some(k) = &before_key {
                remove(&mut self.claims_by_key, k, &id);
            }
            if let Some(k) = now_key {
                add(&mut self.claims_by_key, &k, id.clone());
            }
        }
        match now {
            Some(entry) => drop(self.view.block_claims.insert(id, entry)),
            None => drop(self.view.block_claims.remove(&id)),
        }
    }
}

impl Dirty {
    /// A pod's node and claims.
    fn pod(&mut self, pod: &PodInfo) {
        if let Some(node) = &pod.node_name {
            self.nodes.insert(node.clone());
        }
        for c in &pod.claims {
            self.claims.insert((pod.namespace.clone(), c.clone()));
        }
    }
}

/// The items under one key of a reverse index. Most lists hold one item (a claim's pod, a PV's
/// claim, a key's claim): it is kept in place, not in an allocation of its own — there are
/// 100,000 of each.
type List<T> = SmallVec<[T; 1]>;

/// Adds `item` to the list under `key`.
/// A pod's namespace and name, as the reverse indexes key it.
fn pod_id(pod: &PodInfo) -> NsName {
    (pod.namespace.clone(), pod.name.clone())
}

fn add<K, T>(map: &mut HashMap<K, List<T>>, key: &K, item: T)
where
    K: std::hash::Hash + Eq + Clone,
{
    map.entry(key.clone()).or_default().push(item);
}

/// Removes `item` from the list under `key`, and the list once it is empty.
fn remove<K, T>(map: &mut HashMap<K, List<T>>, key: &K, item: &T)
where
    K: std::hash::Hash + Eq,
    T: PartialEq,
{
    if let Some(list) = map.get_mut(key) {
        if let Some(at) = list.iter().position(|x| x == item) {
            list.swap_remove(at);
        }
        if list.is_empty() {
            map.remove(key);
        }
    }
}
