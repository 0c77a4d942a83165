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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::{
    config::Config,
    index::ClusterState,
    model::{ClaimInfo, NodeInfo, NsName, PodInfo},
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

/// Volume keys held on nodes by something the watches do not show (yet): node → keys.
pub type Reservations = BTreeMap<String, BTreeSet<String>>;

/// One node's capacity and use.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    pub name: String,
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
    pub volume_keys: BTreeSet<String>,
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Every node, sorted by name.
    pub nodes: Vec<NodeUsage>,
    /// Node name → its index in `nodes`. The extender looks up 5,000 names per request, and a
    /// binary search over `nodes` missed the cache on every probe.
    pub(crate) node_index: HashMap<String, usize>,
    /// Block claims: namespace/name → (volume key, state).
    pub block_claims: HashMap<NsName, (String, ClaimState)>,
    /// Volume key → the nodes holding it (normally one).
    pub key_nodes: HashMap<String, Vec<String>>,
    /// StorageClasses whose provisioner is the block driver.
    pub block_classes: BTreeSet<String>,
    /// The default StorageClass, for claims that name none.
    pub default_class: Option<String>,
    /// How many of `block_claims` are Pending, counted once when the view is built: every PVC
    /// admission reads it, and there may be 100,000 claims.
    pub(crate) pending_claims: i64,
}

impl ClusterView {
    pub fn node(&self, name: &str) -> Option<&NodeUsage> {
        self.node_index.get(name).map(|i| &self.nodes[*i])
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
    state: &'a ClusterState,
    settings: &'a Settings,
    default_class: Option<&'a str>,
}

impl<'a> ClaimResolver<'a> {
    pub fn new(state: &'a ClusterState, settings: &'a Settings) -> Self {
        let default_class = state
            .storage_classes
            .values()
            .find(|c| c.is_default)
            .map(|c| c.name.as_str());
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
            None => self.default_class,
        };
        class
            .and_then(|c| self.state.storage_classes.get(c))
            .is_some_and(|c| c.provisioner == self.settings.block_driver)
    }

    /// The volume key of a block claim, or `None` when the claim is not block.
    pub fn key(&self, claim: &ClaimInfo) -> Option<String> {
        if let Some(pv) = claim.volume_name.as_deref() {
            if let Some(volume) = self.state.volumes.get(pv) {
                let block = volume.csi_driver.as_deref() == Some(self.settings.block_driver.as_str());
                return block.then(|| volume_key(pv, volume.volume_handle.as_deref()));
            }
            // Bound to a PV the index has not seen (yet): judge by the class.
            return self
                .class_is_block(claim.storage_class.as_deref())
                .then(|| volume_key(pv, None));
        }
        self.class_is_block(claim.storage_class.as_deref())
            .then(|| format!("claim:{}/{}", claim.namespace, claim.name))
    }

    /// The key of the claim `name` in `namespace`, if it exists and is block.
    pub fn key_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.state
            .claims
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|c| self.key(c))
    }
}

/// A PV's volume key: its CSI handle, or its name when the handle is unknown.
fn volume_key(pv: &str, handle: Option<&str>) -> String {
    match handle {
        Some(h) => h.to_owned(),
        None => format!("pv:{pv}"),
    }
}

/// Computes the accounting of `state`, with `reservations` held on top of what is watched.
pub fn account(state: &ClusterState, settings: &Settings, reservations: &Reservations) -> ClusterView {
    let resolver = ClaimResolver::new(state, settings);
    let mut per_node: HashMap<&str, NodeUsage> = state
        .nodes
        .values()
        .map(|n| (n.name.as_str(), new_usage(state, settings, n)))
        .collect();
    let mut held: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut failing: HashMap<&str, BTreeSet<String>> = HashMap::new();

    // 1. VolumeAttachments of the block driver: attached, attaching or detaching, each holds a
    //    LUN; one that failed to attach holds none.
    for va in state
        .attachments
        .values()
        .filter(|va| va.attacher == settings.block_driver)
    {
        let key = match (&va.pv_name, &va.inline_handle) {
            (Some(pv), _) => volume_key(pv, state.volumes.get(pv).and_then(|v| v.volume_handle.as_deref())),
            (None, Some(handle)) => handle.clone(),
            (None, None) => format!("va:{}", va.name),
        };
        let into = if va.failing() { &mut failing } else { &mut held };
        into.entry(va.node_name.as_str()).or_default().insert(key);
    }

    // 2. Block claims of non-terminal pods on a node (attachment or not), plus resources.
    let mut pod_held: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut wanted_unscheduled: HashSet<NsName> = HashSet::new();
    let mut used_on_node: HashSet<NsName> = HashSet::new();
    for pod in state.pods.values().filter(|p| !p.terminal) {
        let Some(node) = pod.node_name.as_deref() else {
            for c in &pod.claims {
                wanted_unscheduled.insert((pod.namespace.clone(), c.clone()));
            }
            continue;
        };
        for c in &pod.claims {
            if let Some(key) = resolver.key_of(&pod.namespace, c) {
                pod_held.entry(node).or_default().insert(key.clone());
                held.entry(node).or_default().insert(key);
                used_on_node.insert((pod.namespace.clone(), c.clone()));
            }
        }
        if let Some(usage) = per_node.get_mut(node) {
            usage.memory_requested_bytes += pod.memory_request;
            usage.memory_limits_bytes += pod.memory_limit;
            usage.cpu_requested_millis += pod.cpu_request_millis;
            usage.pods += 1;
        }
    }

    // 3. Reservations made outside the watch.
    for (node, keys) in reservations {
        held.entry(node.as_str())
            .or_default()
            .extend(keys.iter().cloned());
    }

    let mut key_nodes: HashMap<String, Vec<String>> = HashMap::new();
    for (node, mut keys) in held {
        // The pod of a failing attachment names the volume too; it still holds no LUN.
        let failed = failing.remove(node).unwrap_or_default();
        keys.retain(|k| !failed.contains(k));
        for k in keys.iter().chain(&failed) {
            key_nodes.entry(k.clone()).or_default().push(node.to_owned());
        }
        if let Some(usage) = per_node.get_mut(node) {
            usage.block_volumes = (keys.len() as i64).min(LUNS_PER_VM);
            usage.failing_to_attach = failed.len() as i64;
            usage.pod_volumes = pod_held.get(node).map_or(0, |k| k.len() as i64);
            usage.volume_keys = keys;
        }
    }
    // Failing attachments on nodes that hold nothing else.
    for (node, failed) in failing {
        for k in &failed {
            key_nodes.entry(k.clone()).or_default().push(node.to_owned());
        }
        if let Some(usage) = per_node.get_mut(node) {
            usage.failing_to_attach = failed.len() as i64;
        }
    }

    let block_claims: HashMap<NsName, (String, ClaimState)> = state
        .claims
        .iter()
        .filter_map(|(id, claim)| {
            let key = resolver.key(claim)?;
            let claim_state = if key_nodes.contains_key(&key) || used_on_node.contains(id) {
                ClaimState::OnNode
            } else if claim.volume_name.is_none() || wanted_unscheduled.contains(id) {
                ClaimState::Pending
            } else {
                ClaimState::Dormant
            };
            Some((id.clone(), (key, claim_state)))
        })
        .collect();

    let mut nodes: Vec<NodeUsage> = per_node.into_values().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let block_classes = state
        .storage_classes
        .values()
        .filter(|c| c.provisioner == settings.block_driver)
        .map(|c| c.name.clone())
        .collect();
    let default_class = resolver.default_class.map(str::to_owned);
    let pending_claims = block_claims
        .values()
        .filter(|(_, s)| *s == ClaimState::Pending)
        .count() as i64;
    let node_index = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    ClusterView {
        nodes,
        node_index,
        block_claims,
        key_nodes,
        block_classes,
        default_class,
        pending_claims,
    }
}

fn new_usage(state: &ClusterState, settings: &Settings, node: &NodeInfo) -> NodeUsage {
    let registered = state
        .csi_nodes
        .get(&node.name)
        .and_then(|c| c.drivers.get(&settings.block_driver).copied().flatten());
    let hard_cap = registered.unwrap_or(settings.hard_cap_default);
    let reason = unschedulable_reason(node);
    NodeUsage {
        name: node.name.clone(),
        block_volumes: 0,
        soft_cap: settings.soft_cap.min(hard_cap),
        hard_cap,
        memory_requested_bytes: 0,
        memory_limits_bytes: 0,
        memory_allocatable_bytes: node.memory_allocatable,
        cpu_requested_millis: 0,
        cpu_allocatable_millis: node.cpu_allocatable_millis,
        schedulable: reason.is_none(),
        unschedulable_reason: reason,
        gpus: node.gpus,
        pods: 0,
        block_ready: registered.is_some(),
        failing_to_attach: 0,
        pod_volumes: 0,
        volume_keys: BTreeSet::new(),
    }
}
