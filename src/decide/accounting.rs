//! Block-volume and memory accounting: how many LUNs each node holds, which block claims wait.
//!
//! A node's block volumes are the distinct volume keys in the union of its VolumeAttachments
//! (attached, attaching or detaching, block driver only), the block claims of its non-terminal
//! pods, and reservations made outside the watch (extender bindings, ghost disks). A volume key
//! is the PV's CSI volume handle, so one volume seen through an attachment and a pod counts
//! once; a claim not yet bound to a PV is keyed by the claim itself.
//!
//! A volume whose attachment failed (an attach error, not attached — "no free lun found") holds
//! no LUN: it is counted apart as failing to attach, and a node never counts more volumes than
//! its VM has LUNs.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde::Serialize;
use smallvec::SmallVec;

use crate::{
    config::Config,
    decide::shared_map::SharedMap,
    index::ClusterState,
    model::{AttachmentInfo, ClaimInfo, HashMap, Name, NodeInfo, NsName, PodInfo, name_index::NameIndex},
};

/// The accounting settings taken from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub block_driver: String,
    pub soft_cap: i64,
    pub hard_cap_default: i64,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Settings {
            block_driver: c.block_driver.clone(),
            soft_cap: i64::from(c.soft_cap),
            hard_cap_default: i64::from(c.hard_cap_default),
        }
    }
}

/// The SCSI LUNs proxmox-csi tries on a VM (1–29): no VM holds more block volumes.
pub const LUNS_PER_VM: i64 = 29;

/// The nodes holding one volume key, sorted: one, as a rule (two while a volume moves), kept
/// in place rather than in an allocation of its own — there are 100,000 keys.
pub type Holders = SmallVec<[Name; 1]>;

/// Volume keys held on nodes by something the watches do not show (yet): node → keys.
pub type Reservations = BTreeMap<Name, BTreeSet<Name>>;

/// One node's capacity and use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    pub name: Name,
    pub block_volumes: i64,
    pub soft_cap: i64,
    pub hard_cap: i64,
    pub memory_requested_bytes: i64,
    pub memory_limits_bytes: i64,
    pub memory_allocatable_bytes: i64,
    pub cpu_requested_millis: i64,
    pub cpu_allocatable_millis: i64,
    pub schedulable: bool,
    /// Why the node takes no new pods (NotReady, cordoned, a taint), when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unschedulable_reason: Option<String>,
    pub gpus: i64,
    pub pods: usize,
    /// Its CSINode lists the block driver with an attach count. Until then the node is
    /// joining: the plugin cannot attach there yet, so it offers no block slots.
    pub block_ready: bool,
    /// Volumes whose attachment to this node failed (attach error, not attached): they hold no
    /// LUN, and their pods wait in ContainerCreating.
    pub failing_to_attach: i64,
    /// Distinct volumes held by this node's pods: what evicting them all could free.
    #[serde(skip)]
    pub pod_volumes: i64,
    #[serde(skip)]
    pub volume_keys: BTreeSet<Name>,
}

impl NodeUsage {
    /// Block slots left under the soft cap (0 when at or over it, or not block-ready).
    pub fn free_slots(&self) -> i64 {
        self.slots_left(self.block_volumes)
    }

    /// Block slots left under the soft cap with `used` volumes held: 0 at or over it, and 0
    /// while the node is not block-ready (the one rule for every count of free slots).
    pub fn slots_left(&self, used: i64) -> i64 {
        if !self.block_ready {
            return 0;
        }
        (self.soft_cap - used).max(0)
    }

    /// Whether the memory and CPU `pod` requests are free here (as kube-scheduler's fit).
    pub fn has_requests_free(&self, pod: &PodInfo) -> bool {
        self.memory_allocatable_bytes - self.memory_requested_bytes >= pod.memory_request
            && self.cpu_allocatable_millis - self.cpu_requested_millis >= pod.cpu_request_millis
    }
}

/// What a block claim is, as accounting sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClaimState {
    /// Its volume holds a LUN on some node.
    OnNode,
    /// On no node yet, and unbound or wanted by a pod that has no node yet.
    Pending,
    /// Bound, on no node, used by no pod (a workload scaled to zero).
    Dormant,
}

/// The accounting of the whole cluster at one moment.
///
/// Cheap to clone, so that a view can be published after every change: nodes are shared one
/// by one, and the claim and key maps are persistent (a clone shares all but the changed path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Every node, sorted by name.
    pub nodes: Nodes,
    /// Node name → its index in `nodes`. The extender looks up 5,000 names per request, and a
    /// binary search over `nodes` missed the cache on every probe. Changes only when a node
    /// comes or goes.
    pub(crate) node_index: Arc<NameIndex>,
    /// Block claims: namespace/name → their volume key and state.
    pub block_claims: SharedMap<NsName, (Name, ClaimState)>,
    /// Volume key → the nodes holding it (normally one), sorted.
    pub key_nodes: SharedMap<Name, Holders>,
    /// StorageClasses whose provisioner is the block driver.
    pub block_classes: BTreeSet<Name>,
    /// The default StorageClass, for claims that name none.
    pub default_class: Option<Name>,
    /// How many of `block_claims` are Pending, kept as the claims change: every PVC admission
    /// reads it, and there may be 100,000 claims.
    pub(crate) pending_claims: i64,
}

impl ClusterView {
    pub fn node(&self, name: &str) -> Option<&NodeUsage> {
        self.node_index.get(name).and_then(|i| self.nodes.get(i))
    }

    pub fn schedulable(&self) -> impl Iterator<Item = &NodeUsage> {
        self.nodes.iter().filter(|n| n.schedulable)
    }

    /// Block claims waiting for a node.
    pub fn pending_block_claims(&self) -> i64 {
        self.pending_claims
    }

    /// Whether a claim of `class` (None: the default class; "": no class) is block.
    pub fn class_is_block(&self, class: Option<&str>) -> bool {
        match class {
            Some("") => false,
            Some(c) => self.block_classes.contains(c),
            None => self
                .default_class
                .as_deref()
                .is_some_and(|c| self.block_classes.contains(c)),
        }
    }

    pub fn max_node_block_volumes(&self) -> i64 {
        self.nodes.iter().map(|n| n.block_volumes).max().unwrap_or(0)
    }

    /// Σ over schedulable nodes of the slots left under each soft cap.
    pub fn room(&self) -> i64 {
        self.schedulable().map(NodeUsage::free_slots).sum()
    }

    /// The interface's `freeBlockSlots`: room minus pending block claims (may be negative).
    pub fn free_block_slots(&self) -> i64 {
        self.room() - self.pending_block_claims()
    }

    /// Memory requested by pods on schedulable nodes ÷ their allocatable memory.
    pub fn memory_request_ratio(&self) -> f64 {
        ratio(
            self.schedulable()
                .map(|n| (n.memory_requested_bytes, n.memory_allocatable_bytes)),
        )
    }

    /// Memory limits of pods on schedulable nodes ÷ their allocatable memory.
    pub fn memory_limit_ratio(&self) -> f64 {
        ratio(
            self.schedulable()
                .map(|n| (n.memory_limits_bytes, n.memory_allocatable_bytes)),
        )
    }
}

fn ratio(parts: impl Iterator<Item = (i64, i64)>) -> f64 {
    let (used, total) = parts.fold((0i64, 0i64), |(u, t), (a, b)| (u + a, t + b));
    if total <= 0 {
        0.0
    } else {
        used as f64 / total as f64
    }
}

/// Why a node takes no new pods, or `None` when it does.
pub fn unschedulable_reason(node: &NodeInfo) -> Option<String> {
    if !node.ready {
        Some("NotReady".into())
    } else if node.unschedulable {
        Some("cordoned".into())
    } else {
        node.hard_taints.first().map(|t| format!("taint {t}"))
    }
}

/// Resolves claims to volume keys; the one place that decides whether a claim is "block".
pub struct ClaimResolver<'a> {
    pub(crate) state: &'a ClusterState,
    pub(crate) settings: &'a Settings,
    default_class: Option<&'a Name>,
}

impl<'a> ClaimResolver<'a> {
    pub fn new(state: &'a ClusterState, settings: &'a Settings) -> Self {
        let default_class = state
            .storage_classes
            .values()
            .find(|c| c.is_default)
            .map(|c| &c.name);
        Self {
            state,
            settings,
            default_class,
        }
    }

    /// Whether a claim's StorageClass (or the default class) provisions with the block driver.
    pub fn class_is_block(&self, class: Option<&str>) -> bool {
        // `storageClassName: ""` asks for no class at all: never dynamically provisioned.
        let class = match class {
            Some("") => return false,
            Some(c) => Some(c),
            None => self.default_class.map(Name::as_str),
        };
        class
            .and_then(|c| self.state.storage_classes.get(c))
            .is_some_and(|c| c.provisioner == self.settings.block_driver)
    }

    /// The StorageClasses whose provisioner is the block driver.
    pub fn block_classes(&self) -> BTreeSet<Name> {
        self.state
            .storage_classes
            .values()
            .filter(|c| c.provisioner == self.settings.block_driver)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The volume key of a block claim, or `None` when the claim is not block.
    pub fn key(&self, claim: &ClaimInfo) -> Option<Name> {
        if let Some(pv) = &claim.volume_name {
            if let Some(volume) = self.state.volumes.get(pv) {
                let block = volume.csi_driver.as_deref() == Some(self.settings.block_driver.as_str());
                return block.then(|| volume_key(pv, volume.volume_handle.as_ref()));
            }
            // Bound to a PV the index has not seen (yet): judge by the class.
            return self
                .class_is_block(claim.storage_class.as_deref())
                .then(|| volume_key(pv, None));
        }
        self.class_is_block(claim.storage_class.as_deref())
            .then(|| Name::from(format!("claim:{}/{}", claim.namespace, claim.name)))
    }

    /// The key of the claim `name` in `namespace`, if it exists and is block.
    pub fn key_of(&self, namespace: &Name, name: &Name) -> Option<Name> {
        self.state
            .claims
            .get_str(namespace, name)
            .and_then(|c| self.key(c))
    }
}

/// A PV's volume key: its CSI handle (the volume's own, shared), or its name when the handle is
/// unknown.
fn volume_key(pv: &str, handle: Option<&Name>) -> Name {
    match handle {
        Some(h) => h.clone(),
        None => Name::from(format!("pv:{pv}")),
    }
}

/// The volume key a VolumeAttachment holds: its PV's, its inline volume's handle, or its own.
fn attachment_key(state: &ClusterState, va: &AttachmentInfo) -> Name {
    match (&va.pv_name, &va.inline_handle) {
        (Some(pv), _) => volume_key(pv, state.volumes.get(pv).and_then(|v| v.volume_handle.as_ref())),
        (None, Some(handle)) => handle.clone(),
        (None, None) => Name::from(format!("va:{}", va.name)),
    }
}

/// What one node's attachments, pods and reservations add up to: the one computation both
/// the full accounting and the per-change one make for a node.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Keys holding a LUN here.
    held: BTreeSet<Name>,
    /// Keys whose attachment here failed: they hold no LUN.
    failing: BTreeSet<Name>,
    /// Distinct keys of the node's pods (failing or not).
    pod_volumes: i64,
    memory_requested_bytes: i64,
    memory_limits_bytes: i64,
    cpu_requested_millis: i64,
    pods: usize,
}

impl Load {
    pub(crate) fn of<'s>(
        resolver: &ClaimResolver,
        attachments: impl IntoIterator<Item = &'s AttachmentInfo>,
        pods: impl IntoIterator<Item = &'s PodInfo>,
        reserved: Option<&BTreeSet<Name>>,
    ) -> Load {
        let mut load = Load::default();
        // Attached, attaching or detaching, a block attachment holds a LUN; a failed one none.
        for va in attachments
            .into_iter()
            .filter(|va| va.attacher == resolver.settings.block_driver)
        {
            let key = attachment_key(resolver.state, va);
            if va.failing() {
                load.failing.insert(key);
            } else {
                load.held.insert(key);
            }
        }
        let mut pod_keys = BTreeSet::new();
        for pod in pods.into_iter().filter(|p| !p.terminal) {
            for c in &pod.claims {
                if let Some(key) = resolver.key_of(&pod.namespace, c) {
                    pod_keys.insert(key.clone());
                    load.held.insert(key);
                }
            }
            load.memory_requested_bytes += pod.memory_request;
            load.memory_limits_bytes += pod.memory_limit;
            load.cpu_requested_millis += pod.cpu_request_millis;
            load.pods += 1;
        }
        load.held.extend(reserved.into_iter().flatten().cloned());
        // The pod of a failing attachment names the volume too; it still holds no LUN.
        load.held.retain(|k| !load.failing.contains(k));
        load.pod_volumes = pod_keys.len() as i64;
        load
    }

    /// Every key the node names, held or failing: what `key_nodes` lists it under.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Name> {
        self.held.iter().chain(&self.failing)
    }

    /// The node's usage: its capacity from `node` and its CSINode, its use from this load.
    pub(crate) fn usage(self, resolver: &ClaimResolver, node: &NodeInfo) -> NodeUsage {
        let settings = resolver.settings;
        let registered = resolver
            .state
            .csi_nodes
            .get(&node.name)
            .and_then(|c| c.drivers.get(&settings.block_driver).copied().flatten());
        let hard_cap = registered.unwrap_or(settings.hard_cap_default);
        let reason = unschedulable_reason(node);
        NodeUsage {
            name: node.name.clone(),
            block_volumes: (self.held.len() as i64).min(LUNS_PER_VM),
            soft_cap: settings.soft_cap.min(hard_cap),
            hard_cap,
            memory_requested_bytes: self.memory_requested_bytes,
            memory_limits_bytes: self.memory_limits_bytes,
            memory_allocatable_bytes: node.memory_allocatable,
            cpu_requested_millis: self.cpu_requested_millis,
            cpu_allocatable_millis: node.cpu_allocatable_millis,
            schedulable: reason.is_none(),
            unschedulable_reason: reason,
            gpus: node.gpus,
            pods: self.pods,
            block_ready: registered.is_some(),
            failing_to_attach: self.failing.len() as i64,
            pod_volumes: self.pod_volumes,
            volume_keys: self.held,
        }
    }
}

/// Who uses a claim: a pod on a node, a pod waiting for one (non-terminal pods only).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Users {
    pub on_node: bool,
    pub unscheduled: bool,
}

impl Users {
    pub(crate) fn add(&mut self, pod: &PodInfo) {
        if !pod.terminal {
            self.on_node |= pod.node_name.is_some();
            self.unscheduled |= pod.node_name.is_none();
        }
    }
}

/// The state of a block claim whose volume is `held_somewhere` (on some node's key list).
pub(crate) fn claim_state(claim: &ClaimInfo, held_somewhere: bool, users: Users) -> ClaimState {
    if held_somewhere || users.on_node {
        ClaimState::OnNode
    } else if claim.volume_name.is_none() || users.unscheduled {
        ClaimState::Pending
    } else {
        ClaimState::Dormant
    }
}

/// Computes the accounting of `state`, with `reservations` held on top of what is watched.
pub fn account(state: &ClusterState, settings: &Settings, reservations: &Reservations) -> ClusterView {
    let resolver = ClaimResolver::new(state, settings);
    let mut attachments_on: BTreeMap<&Name, Vec<&AttachmentInfo>> = BTreeMap::new();
    for va in state.attachments.values() {
        attachments_on.entry(&va.node_name).or_default().push(va);
    }
    let mut pods_on: BTreeMap<&Name, Vec<&PodInfo>> = BTreeMap::new();
    let mut users: HashMap<(&str, &str), Users> = HashMap::default();
    for pod in state.pods.values() {
        for c in &pod.claims {
            users.entry((&pod.namespace, c)).or_default().add(pod);
        }
        if let Some(node) = &pod.node_name {
            pods_on.entry(node).or_default().push(pod);
        }
    }
    // Every node anything is held on, Node object or not (a pod may name a node that is gone).
    let names: BTreeSet<&Name> = state
        .nodes
        .keys()
        .chain(attachments_on.keys().copied())
        .chain(pods_on.keys().copied())
        .chain(reservations.keys())
        .collect();
    let mut nodes = Vec::with_capacity(state.nodes.len());
    let mut key_nodes: SharedMap<Name, Holders> = SharedMap::new();
    for name in names {
        let load = Load::of(
            &resolver,
            attachments_on.remove(name).unwrap_or_default(),
            pods_on.remove(name).unwrap_or_default(),
            reservations.get(name),
        );
        for k in load.keys() {
            key_nodes.get_or_insert_with(k, Holders::new).push(name.clone());
        }
        if let Some(node) = state.nodes.get(name) {
            nodes.push(Arc::new(load.usage(&resolver, node)));
        }
    }

    let mut pending_claims = 0;
    let block_claims = state
        .claims
        .values()
        .filter_map(|claim| {
            let key = resolver.key(claim)?;
            let users = users.get(&(&*claim.namespace, &*claim.name)).copied();
            let claim_state = claim_state(claim, key_nodes.contains_key(&key), users.unwrap_or_default());
            pending_claims += i64::from(claim_state == ClaimState::Pending);
            Some(((claim.namespace.clone(), claim.name.clone()), (key, claim_state)))
        })
        .collect();
    ClusterView {
        node_index: Arc::new(index_of(nodes.iter())),
        nodes: Nodes::from(nodes),
        block_claims,
        key_nodes,
        block_classes: resolver.block_classes(),
        default_class: resolver.default_class.cloned(),
        pending_claims,
    }
}

/// Node name → position in `nodes`.
pub(crate) fn index_of<'n>(nodes: impl Iterator<Item = &'n Arc<NodeUsage>>) -> NameIndex {
    NameIndex::new(nodes.map(|n| &*n.name))
}

/// How many nodes share one chunk of [`Nodes`].
const CHUNK: usize = 64;

/// A view's nodes, sorted by name, in chunks that views share. A view is published after every
/// change: cloning this copies ~80 chunk pointers at 5,000 nodes instead of 5,000 node pointers
/// (70 µs of reference counting on cold cache lines), while a lookup by position stays two
/// array reads — the extender makes 5,000 per request, which a persistent vector slowed by 60 %.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    chunks: Vec<Arc<[Arc<NodeUsage>]>>,
    len: usize,
}

impl Nodes {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, at: usize) -> Option<&NodeUsage> {
        self.chunks.get(at / CHUNK)?.get(at % CHUNK).map(|n| &**n)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeUsage> {
        self.shared().map(|n| &**n)
    }

    /// The nodes as the shared pointers they are kept in.
    pub(crate) fn shared(&self) -> impl Iterator<Item = &Arc<NodeUsage>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Where the node named `name` is, or where it would go.
    pub(crate) fn search(&self, name: &str) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = (low + high) / 2;
            match self.get(mid).map(|n| n.name.as_str().cmp(name)) {
                Some(std::cmp::Ordering::Less) => low = mid + 1,
                Some(std::cmp::Ordering::Greater) => high = mid,
                _ => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Replaces the node at `at`; copies only its chunk when a published view shares it.
    pub(crate) fn set(&mut self, at: usize, node: Arc<NodeUsage>) {
        let Some(chunk) = self.chunks.get_mut(at / CHUNK) else {
            return;
        };
        if Arc::get_mut(chunk).is_none() {
            *chunk = chunk.iter().cloned().collect();
        }
        if let Some(slot) = Arc::get_mut(chunk).and_then(|c| c.get_mut(at % CHUNK)) {
            *slot = node;
        }
    }

    /// Adds or removes a node (nodes come and go rarely): the chunks are laid out again.
    pub(crate) fn splice(&mut self, at: usize, remove: bool, insert: Option<Arc<NodeUsage>>) {
        let mut all: Vec<Arc<NodeUsage>> = self.shared().cloned().collect();
        if remove {
            all.remove(at);
        }
        if let Some(node) = insert {
            all.insert(at, node);
        }
        *self = Nodes::from(all);
    }
}

impl From<Vec<Arc<NodeUsage>>> for Nodes {
    fn from(all: Vec<Arc<NodeUsage>>) -> Self {
        Nodes {
            len: all.len(),
            chunks: all.chunks(CHUNK).map(Arc::from).collect(),
        }
    }
}

impl FromIterator<NodeUsage> for Nodes {
    fn from_iter<I: IntoIterator<Item = NodeUsage>>(nodes: I) -> Self {
        Nodes::from(nodes.into_iter().map(Arc::new).collect::<Vec<_>>())
    }
}

impl PartialEq for Nodes {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<'a> IntoIterator for &'a Nodes {
    type Item = &'a NodeUsage;
    type IntoIter = Box<dyn Iterator<Item = &'a NodeUsage> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}
