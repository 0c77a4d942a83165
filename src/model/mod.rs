//! The cluster as the decisions see it: Kubernetes objects trimmed to the fields headroom reads.
//!
//! Conversions from k8s-openapi types live here so that the watch path and the snapshot path
//! trim identically. A trimmed object keeps no managedFields, annotations or status it does not
//! need, which is what keeps the index small at 150,000 pods.

pub mod keyed;
pub mod name;
pub mod name_index;
pub mod quantity;

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Container, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod},
    policy::v1::PodDisruptionBudget,
    storage::v1::{CSINode, StorageClass, VolumeAttachment},
};
pub use keyed::{Keyed, KeyedTable};
pub use name::{Name, Names};
use quantity::QuantityError;
use serde::{Deserialize, Serialize};

/// The hasher of the index's maps: seeded per process as std's is, and several times faster
/// on the short names they are keyed by (SipHash was a tenth of loading 150,000 pods).
pub type Hasher = foldhash::fast::RandomState;

/// A hash map of the index: std's, with [`Hasher`].
pub type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;

/// A namespaced name, `namespace/name`.
pub type NsName = (Name, Name);

/// The namespaced name `namespace/name`, for a lookup by text.
pub fn ns_name(namespace: &str, name: &str) -> NsName {
    (Name::from(namespace), Name::from(name))
}

/// Why a JSON document or tree was refused, with the path to the refused field.
pub type JsonError = serde_path_to_error::Error<serde_json::Error>;

/// `T` from JSON text. The path to a refused field is tracked only once the text is refused:
/// tracking it costs on every field of every request, and only the error message needs it.
/// The text is checked for UTF-8 once, whole: read as bytes, serde_json checks every string it
/// reads on its own, a tenth of a webhook request.
pub fn from_json_slice<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, JsonError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .map_or_else(
            || serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes)),
            Ok,
        )
}

/// The resource name the webhook adds to pods that mount block claims.
pub const BLOCK_VOLUMES_RESOURCE: &str = "headroom.io/block-volumes";

/// A node with what schedulability and capacity need.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: Name,
    pub ready: bool,
    pub unschedulable: bool,
    /// Taints with effect NoSchedule or NoExecute (they make the node unschedulable).
    pub hard_taints: Vec<String>,
    pub memory_allocatable: i64,
    pub cpu_allocatable_millis: i64,
    /// Allocatable `nvidia.com/gpu`, or 1 when only the GPU-present label is set.
    pub gpus: i64,
    pub provider_id: Option<String>,
    /// `status.addresses` of type InternalIP: taken when a worker's address is chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub internal_ips: Vec<core::net::Ipv4Addr>,
}

/// The block driver's published attach limit on one node (the hard cap).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CsiNodeInfo {
    pub name: Name,
    /// driver name → `allocatable.count` (None when the driver publishes no count).
    pub drivers: BTreeMap<String, Option<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageClassInfo {
    pub name: Name,
    pub provisioner: String,
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: Name,
    pub csi_driver: Option<Name>,
    pub volume_handle: Option<Name>,
    /// Nodes a required node affinity pins the volume to (`kubernetes.io/hostname`, as
    /// local-path and local PVs have): a pod using it cannot run anywhere else.
    /// A boxed slice, not a `Vec`: no capacity word in each of 100,000 volumes.
    #[serde(default, skip_serializing_if = "<[Name]>::is_empty")]
    pub pinned_to: Box<[Name]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClaimInfo {
    pub namespace: Name,
    pub name: Name,
    pub storage_class: Option<Name>,
    /// The bound PV (`spec.volumeName`). Accounting reads binding from this, not from
    /// `status.phase`, so the phase is not kept (100,000 strings at scale).
    pub volume_name: Option<Name>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodInfo {
    pub namespace: Name,
    pub name: Name,
    pub node_name: Option<Name>,
    /// Succeeded or Failed: holds no resources and no volumes.
    pub terminal: bool,
    /// Claim names in the pod's namespace, generic ephemeral volumes included. This and
    /// `labels` are boxed slices, not `Vec`s: no capacity word in each of 150,000 pods.
    pub claims: Box<[Name]>,
    /// Effective requests as kube-scheduler computes them.
    pub memory_request: i64,
    pub memory_limit: i64,
    pub cpu_request_millis: i64,
    #[serde(default)]
    pub controller: Controller,
    /// Its controller, as a hash of the owner's UID (0: none): pods with the same one are
    /// replicas of each other. A hash, not the UID, to keep 150,000 pods small.
    #[serde(default)]
    pub owner: u64,
    /// Its labels as hashes of `key` and `key=value`, sorted: enough to match a
    /// PodDisruptionBudget's selector, 16 bytes a label instead of two strings.
    #[serde(default, skip_serializing_if = "<[u64]>::is_empty")]
    pub labels: Box<[u64]>,
}

/// Namespaced objects kept in a [`KeyedTable`] by their own `namespace` and `name`.
macro_rules! keyed_by_fields {
    ($($t:ty),*) => {$(
        impl Keyed for $t {
            fn namespace(&self) -> &str {
                &self.namespace
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
keyed_by_fields!(PodInfo, ClaimInfo);

/// The hashes a pod's labels are kept as (see [`PodInfo::labels`]).
pub fn label_hashes<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<u64> {
    let mut out: Vec<u64> = labels
        .into_iter()
        .flat_map(|(k, v)| [name_hash(k), name_hash(&format!("{k}={v}"))])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One requirement of a label selector, on hashed labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requirement {
    /// The label is set to one of these (`key=value` hashes); `matchLabels` is one value each.
    In(Vec<u64>),
    NotIn(Vec<u64>),
    /// The label is set (its key's hash).
    Exists(u64),
    DoesNotExist(u64),
}

/// A PodDisruptionBudget: whom it covers and whether it allows an eviction now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetInfo {
    pub namespace: Name,
    pub name: Name,
    /// `status.disruptionsAllowed`; 0 until the disruption controller has computed it (the
    /// Eviction API refuses meanwhile too).
    pub disruptions_allowed: i64,
    /// All must hold; `None` (no selector) covers no pod, an empty list every pod of the
    /// namespace (policy/v1).
    pub selector: Option<Vec<Requirement>>,
}

impl BudgetInfo {
    /// Whether the budget covers a pod with `labels` (in its namespace).
    pub fn covers(&self, labels: &[u64]) -> bool {
        let has = |h: &u64| labels.binary_search(h).is_ok();
        self.selector.as_ref().is_some_and(|all| {
            all.iter().all(|r| match r {
                Requirement::In(values) => values.iter().any(has),
                Requirement::NotIn(values) => !values.iter().any(has),
                Requirement::Exists(key) => has(key),
                Requirement::DoesNotExist(key) => !has(key),
            })
        })
    }
}

impl From<&PodDisruptionBudget> for BudgetInfo {
    fn from(pdb: &PodDisruptionBudget) -> Self {
        let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()).map(|sel| {
            let mut all: Vec<Requirement> = sel
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| Requirement::In(vec![name_hash(&format!("{k}={v}"))]))
                .collect();
            for e in sel.match_expressions.iter().flatten() {
                let values = || {
                    e.values
                        .iter()
                        .flatten()
                        .map(|v| name_hash(&format!("{}={v}", e.key)))
                        .collect()
                };
                all.push(match e.operator.as_str() {
                    "In" => Requirement::In(values()),
                    "NotIn" => Requirement::NotIn(values()),
                    "Exists" => Requirement::Exists(name_hash(&e.key)),
                    // DoesNotExist, and what the API server would have refused.
                    _ => Requirement::DoesNotExist(name_hash(&e.key)),
                });
            }
            all
        });
        BudgetInfo {
            namespace: name_of(&pdb.metadata.namespace),
            name: name_of(&pdb.metadata.name),
            disruptions_allowed: pdb
                .status
                .as_ref()
                .map_or(0, |s| i64::from(s.disruptions_allowed)),
            selector,
        }
    }
}

/// What owns a pod, as far as a drain cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Controller {
    /// No controller: evicted, it is gone for good.
    #[default]
    None,
    /// A DaemonSet: a drain leaves it, and it goes with the node.
    DaemonSet,
    /// A static (mirror) pod: belongs to its node.
    Static,
    /// A ReplicaSet, StatefulSet, Job or any other controller that places it again.
    Other,
}

impl Controller {
    /// What owns the pod with `metadata`: its controller owner reference, or the mirror-pod
    /// annotation a kubelet puts on static pods.
    pub fn of(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        let mirror = metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        let owner = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        match owner.map(|o| o.kind.as_str()) {
            _ if mirror => Controller::Static,
            Some("DaemonSet") => Controller::DaemonSet,
            Some("Node") => Controller::Static,
            Some(_) => Controller::Other,
            None => Controller::None,
        }
    }

    /// Whether a drain evicts pods of this kind (it leaves DaemonSet and static pods).
    pub fn evicted_by_drain(self) -> bool {
        matches!(self, Controller::None | Controller::Other)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub name: Name,
    pub attacher: Name,
    pub node_name: Name,
    pub pv_name: Option<Name>,
    /// Set for inline (migrated) volumes, which have no PV object.
    pub inline_handle: Option<Name>,
    pub attached: bool,
    pub detaching: bool,
    /// `status.attachError` is set (e.g. "no free lun found"): while it is not attached, the
    /// volume holds no LUN on the node.
    #[serde(default)]
    pub attach_error: bool,
}

impl AttachmentInfo {
    /// Failing to attach: an attach error and not attached. It holds no LUN.
    pub fn failing(&self) -> bool {
        self.attach_error && !self.attached
    }
}

/// A metadata name or namespace (empty when unset).
fn name_of(s: &Option<String>) -> Name {
    Name::from(s.as_deref().unwrap_or_default())
}

fn is_true(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

type Quantities = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

/// The quantity under `key` (0 when absent); a malformed one is an error naming the key.
fn quantity(map: Option<&Quantities>, key: &str, scale: u32) -> Result<i64, QuantityError> {
    match map.and_then(|m| m.get(key)) {
        None => Ok(0),
        Some(q) => quantity::parse_scaled(&q.0, scale).map_err(|e| QuantityError(format!("{key}: {}", e.0))),
    }
}

impl TryFrom<&Node> for NodeInfo {
    type Error = QuantityError;

    fn try_from(node: &Node) -> Result<Self, QuantityError> {
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let hard_taints = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        let allocatable = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let gpu_label = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("nvidia.com/gpu.present"))
            .is_some_and(|v| is_true(v));
        let gpus = quantity(allocatable, "nvidia.com/gpu", 1)?.max(i64::from(gpu_label));
        Ok(NodeInfo {
            name: name_of(&node.metadata.name),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            hard_taints,
            memory_allocatable: quantity(allocatable, "memory", 1)?,
            cpu_allocatable_millis: quantity(allocatable, "cpu", 1000)?,
            gpus,
            provider_id: spec.and_then(|s| s.provider_id.clone()),
            internal_ips: status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        })
    }
}

impl From<&CSINode> for CsiNodeInfo {
    fn from(n: &CSINode) -> Self {
        let drivers = n
            .spec
            .drivers
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.allocatable.as_ref().and_then(|a| a.count).map(i64::from),
                )
            })
            .collect();
        CsiNodeInfo {
            name: name_of(&n.metadata.name),
            drivers,
        }
    }
}

impl From<&StorageClass> for StorageClassInfo {
    fn from(sc: &StorageClass) -> Self {
        let annotations = sc.metadata.annotations.as_ref();
        let is_default = [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|k| annotations.and_then(|a| a.get(*k)).is_some_and(|v| is_true(v)));
        StorageClassInfo {
            name: name_of(&sc.metadata.name),
            provisioner: sc.provisioner.clone(),
            is_default,
        }
    }
}

impl From<&PersistentVolume> for VolumeInfo {
    fn from(pv: &PersistentVolume) -> Self {
        let spec = pv.spec.as_ref();
        let csi = spec.and_then(|s| s.csi.as_ref());
        // A pin is a hostname every required term names; with more than one term, any one
        // of them may match, so the volume is pinned to their union.
        let terms = spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default();
        let mut pinned_to: Vec<Name> = terms
            .iter()
            .flat_map(|t| t.match_expressions.iter().flatten())
            .filter(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
            .flat_map(|e| e.values.iter().flatten().map(Name::from))
            .collect();
        pinned_to.sort();
        pinned_to.dedup();
        VolumeInfo {
            name: name_of(&pv.metadata.name),
            csi_driver: csi.map(|c| Name::from(&c.driver)),
            volume_handle: csi.map(|c| Name::from(&c.volume_handle)),
            pinned_to: pinned_to.into(),
        }
    }
}

impl From<&PersistentVolumeClaim> for ClaimInfo {
    fn from(pvc: &PersistentVolumeClaim) -> Self {
        let spec = pvc.spec.as_ref();
        ClaimInfo {
            namespace: name_of(&pvc.metadata.namespace),
            name: name_of(&pvc.metadata.name),
            storage_class: spec.and_then(|s| s.storage_class_name.as_deref()).map(Name::from),
            volume_name: spec
                .and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty())
                .map(Name::from),
        }
    }
}

impl From<&VolumeAttachment> for AttachmentInfo {
    fn from(va: &VolumeAttachment) -> Self {
        let inline = va
            .spec
            .source
            .inline_volume_spec
            .as_ref()
            .and_then(|s| s.csi.as_ref());
        AttachmentInfo {
            name: name_of(&va.metadata.name),
            attacher: Name::from(&va.spec.attacher),
            node_name: Name::from(&va.spec.node_name),
            pv_name: va.spec.source.persistent_volume_name.as_deref().map(Name::from),
            inline_handle: inline.map(|c| Name::from(&c.volume_handle)),
            attached: va.status.as_ref().is_some_and(|s| s.attached),
            detaching: va.metadata.deletion_timestamp.is_some(),
            attach_error: va.status.as_ref().is_some_and(|s| s.attach_error.is_some()),
        }
    }
}

/// What a Kubernetes Event headroom reads says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Incident {
    /// `FailedAttachVolume` whose message says "no free lun found": the VM's 29 LUNs are taken.
    LunCap,
    /// `Evicted` from a kubelet: node pressure (memory, disk), not an Eviction API call.
    KubeletEviction,
}

/// The Events headroom reads, trimmed: the runbook's LUN-cap incident and eviction churn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    pub namespace: Name,
    pub name: Name,
    pub incident: Incident,
    /// The pod it is about (`involvedObject`, kind Pod), in the Event's namespace.
    pub pod: Option<Name>,
    /// How many times it happened (`count`, or `series.count`; at least 1).
    pub count: i64,
    /// When it last happened, as milliseconds since the epoch (0: not said).
    pub last_seen_ms: u64,
}

impl EventInfo {
    /// The Event trimmed, when it is one headroom reads (others are `None`).
    pub fn of(event: &Event) -> Option<Self> {
        let source_is_kubelet = event.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
            || event.reporting_component.as_deref() == Some("kubelet");
        let message = event.message.as_deref().unwrap_or_default();
        let incident = match event.reason.as_deref() {
            Some("FailedAttachVolume") if message.contains("no free lun found") => Incident::LunCap,
            Some("Evicted") if source_is_kubelet => Incident::KubeletEviction,
            _ => return None,
        };
        let pod = (event.involved_object.kind.as_deref() == Some("Pod"))
            .then(|| event.involved_object.name.as_deref().map(Name::from))
            .flatten();
        let series = event.series.as_ref();
        let count = series.and_then(|s| s.count).or(event.count).unwrap_or(1).max(1) as i64;
        let at = |t: &k8s_openapi::jiff::Timestamp| t.as_millisecond().max(0) as u64;
        let last_seen_ms = series
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| at(&t.0))
            .or_else(|| event.last_timestamp.as_ref().map(|t| at(&t.0)))
            .or_else(|| event.event_time.as_ref().map(|t| at(&t.0)))
            .or_else(|| event.first_timestamp.as_ref().map(|t| at(&t.0)))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| at(&t.0)))
            .unwrap_or(0);
        Some(EventInfo {
            namespace: name_of(&event.metadata.namespace),
            name: name_of(&event.metadata.name),
            incident,
            pod,
            count,
            last_seen_ms,
        })
    }
}

/// Memory and CPU of one container: (memory request, memory limit, cpu request millis).
/// The API server defaults a missing request to the limit, so a limit-only container requests it.
fn container_resources(c: &Container) -> Result<Resources, QuantityError> {
    let r = c.resources.as_ref();
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    let requested = |key| requests.is_some_and(|m| m.contains_key(key));
    let mem_limit = quantity(limits, "memory", 1)?;
    let mem_request = if requested("memory") {
        quantity(requests, "memory", 1)?
    } else {
        mem_limit
    };
    let cpu = if requested("cpu") {
        quantity(requests, "cpu", 1000)?
    } else {
        quantity(limits, "cpu", 1000)?
    };
    // A container without a memory limit counts what it requests towards the limit ratio.
    Ok((
        mem_request,
        if mem_limit > 0 { mem_limit } else { mem_request },
        cpu,
    ))
}

/// (memory request bytes, memory limit bytes, cpu request millicores).
pub type Resources = (i64, i64, i64);

/// A pod's effective resources as kube-scheduler computes them (`resource.PodRequests`):
/// the larger of the containers' sum and each init container's peak, where restartable
/// (sidecar) init containers keep running and add to everything after them; plus overhead.
pub fn pod_resources(pod: &Pod) -> Result<Resources, QuantityError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok((0, 0, 0));
    };
    let add = |a: Resources, b: Resources| (a.0 + b.0, a.1 + b.1, a.2 + b.2);
    let max = |a: Resources, b: Resources| (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2));
    let mut sum = (0, 0, 0);
    for c in &spec.containers {
        sum = add(sum, container_resources(c)?);
    }
    let mut sidecars = (0, 0, 0);
    let mut init_peak = (0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let r = container_resources(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = add(sidecars, r);
            init_peak = max(init_peak, sidecars);
        } else {
            init_peak = max(init_peak, add(r, sidecars));
        }
    }
    sum = add(sum, sidecars);
    let mut total = max(sum, init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        let mem = quantity(Some(overhead), "memory", 1)?;
        total = add(total, (mem, mem, quantity(Some(overhead), "cpu", 1000)?));
    }
    Ok(total)
}

/// The claim names a pod mounts: PVC volumes and generic ephemeral volumes (`<pod>-<volume>`).
pub fn pod_claims(pod: &Pod) -> Box<[Name]> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut claims: Vec<Name> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(pvc), _) => Some(Name::from(&pvc.claim_name)),
            (None, Some(_)) => Some(Name::from(format!("{pod_name}-{}", v.name))),
            _ => None,
        })
        .collect();
    claims.sort();
    claims.dedup();
    claims.into()
}

impl TryFrom<&Pod> for PodInfo {
    type Error = QuantityError;

    fn try_from(pod: &Pod) -> Result<Self, QuantityError> {
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let (memory_request, memory_limit, cpu_request_millis) = pod_resources(pod)?;
        let controller = Controller::of(&pod.metadata);
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map_or(0, |o| owner_hash(&o.uid));
        Ok(PodInfo {
            namespace: name_of(&pod.metadata.namespace),
            name: name_of(&pod.metadata.name),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
                .map(Name::from),
            terminal: phase == "Succeeded" || phase == "Failed",
            claims: pod_claims(pod),
            memory_request,
            memory_limit,
            cpu_request_millis,
            controller,
            owner,
            labels: pod
                .metadata
                .labels
                .as_ref()
                .map(|l| label_hashes(l.iter()).into())
                .unwrap_or_default(),
        })
    }
}

/// A stable, non-zero 64-bit hash of a name (FNV-1a): cheap to keep many of.
pub fn name_hash(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash.max(1)
}

/// A controller's UID as kept on its pods.
pub fn owner_hash(uid: &str) -> u64 {
    name_hash(uid)
}
