//! Admission decisions for Pod and PVC creation: steer (mutate) and guard (validate).
//!
//! Pure: takes the placement (view + reservations), the config, the object and whether
//! capacity is on its way, and returns a verdict or a JSON patch. The webhook handlers only
//! parse, call these, and encode.

use std::collections::BTreeSet;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use crate::{
    config::{Config, Enforcement, Steering},
    decide::placement::{BlockDemand, Placement},
    model::BLOCK_VOLUMES_RESOURCE,
};

/// The label that opts an object out of headroom.
pub const IGNORE_LABEL: &str = "headroom.io/ignore";

/// Longest warning the API server passes on intact.
pub const MAX_WARNING: usize = 120;

/// Whether more capacity can still arrive without a human.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outlook {
    /// A VM is being provisioned or a cold spare is starting.
    pub incoming: bool,
    /// The provisioner is configured and below `maxNodes`, so it may add one.
    pub may_add: bool,
}

impl Outlook {
    fn capacity_coming(self) -> bool {
        self.incoming || self.may_add
    }
}

/// A validating verdict with the reason it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Metric label: fits, no-block-volumes, capacity-coming, no-capacity, enforcement-off, skipped.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Allowed, with a warning shown by kubectl.
    Warn(String),
    /// Denied with HTTP 403 and this message.
    Deny(String),
}

impl Verdict {
    fn allow(reason: &'static str) -> Self {
        Verdict {
            outcome: Outcome::Allow,
            reason,
        }
    }

    /// The verdict label of the admission metric: allow, warn or deny.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            Outcome::Allow => "allow",
            Outcome::Warn(_) => "warn",
            Outcome::Deny(_) => "deny",
        }
    }
}

/// Why a request is not looked at, if it is not.
pub fn skip_reason(
    config: &Config,
    namespace: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<&'static str> {
    if config.excluded_namespaces.iter().any(|n| n == namespace) {
        Some("excluded-namespace")
    } else if labels
        .and_then(|l| l.get(IGNORE_LABEL))
        .is_some_and(|v| v == "true")
    {
        Some("ignore-label")
    } else {
        None
    }
}

/// Validates a Pod CREATE.
pub fn validate_pod(
    placement: Placement<'_>,
    config: &Config,
    demand: &BlockDemand,
    outlook: Outlook,
) -> Verdict {
    if demand.is_empty() {
        return Verdict::allow("no-block-volumes");
    }
    if placement.view.schedulable().any(placement.fits_on(&demand.keys)) {
        return Verdict::allow("fits");
    }
    // The slots the pod needs on the node where it needs the fewest.
    let needed = placement
        .view
        .schedulable()
        .map(placement.needed_on(&demand.keys))
        .min()
        .unwrap_or(demand.keys.len() as i64);
    no_room(placement, config, needed, outlook)
}

/// Validates a PVC CREATE: a block claim fits while the cluster has a free slot for it.
pub fn validate_claim(
    placement: Placement<'_>,
    config: &Config,
    view_pending_plus_admitted: i64,
    claim: &PersistentVolumeClaim,
    outlook: Outlook,
) -> Verdict {
    let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref());
    if !placement.view.class_is_block(class) {
        return Verdict::allow("not-block");
    }
    if placement.room() - view_pending_plus_admitted >= 1 {
        return Verdict::allow("fits");
    }
    no_room(placement, config, 1, outlook)
}

fn no_room(placement: Placement<'_>, config: &Config, needed: i64, outlook: Outlook) -> Verdict {
    let cap = config.soft_cap;
    let volumes = if needed == 1 {
        "block volume"
    } else {
        "block volumes"
    };
    if outlook.capacity_coming() {
        let why = if outlook.incoming {
            "a new worker is on its way"
        } else {
            "headroom is adding a worker"
        };
        return Verdict {
            outcome: Outcome::Warn(warning(&format!(
                "headroom: no node has room for {needed} more {volumes} under the soft cap ({cap}); {why}"
            ))),
            reason: "capacity-coming",
        };
    }
    match config.enforcement {
        Enforcement::Off => Verdict::allow("enforcement-off"),
        Enforcement::Warn => Verdict {
            outcome: Outcome::Warn(warning(&format!(
                "headroom: no node has room for {needed} more {volumes} under the soft cap ({cap}); it may stay Pending"
            ))),
            reason: "no-capacity",
        },
        Enforcement::Deny => {
            let fullest: Vec<String> = placement
                .fullest(3)
                .into_iter()
                .map(|(n, bv, cap)| format!("{n} {bv}/{cap}"))
                .collect();
            let fullest = if fullest.is_empty() {
                "no schedulable nodes".to_owned()
            } else {
                fullest.join(", ")
            };
            let more = if config.proxmox.is_some() {
                "raise proxmox.maxNodes"
            } else {
                "add a worker (or configure proxmox: so headroom can)"
            };
            Verdict {
                outcome: Outcome::Deny(format!(
                    "headroom: no schedulable node has room for {needed} more {volumes} under the per-node \
                     block-PVC soft cap of {cap} (fullest: {fullest}). Put non-database data on an NFS class, \
                     delete unused block PVCs, or {more}."
                )),
                reason: "no-capacity",
            }
        }
    }
}

/// Cuts a warning to what the API server passes on intact.
fn warning(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_WARNING - 1).collect();
    cut.push('…');
    cut
}

/// The JSON patch `/mutate` returns for a pod (empty: nothing to change).
///
/// `extender` steering puts `headroom.io/block-volumes: <n>` in the first container's limits
/// (and requests, if that map exists, since an extended resource's request must equal its
/// limit). `affinity` steering adds `kubernetes.io/hostname NotIn [nodes without room]` to
/// every required node-selector term. Both are no-ops on an already mutated pod.
pub fn mutate_pod(
    placement: Placement<'_>,
    config: &Config,
    demand: &BlockDemand,
    pod: &Value,
) -> Vec<PatchOperation> {
    if demand.is_empty() {
        return Vec::new();
    }
    match config.steering {
        Steering::Extender => extended_resource_patch(pod, demand.keys.len()),
        Steering::Affinity => {
            let fits = placement.fits_on(&demand.keys);
            let full: BTreeSet<&str> = placement
                .view
                .schedulable()
                .filter(|n| !fits(n))
                .map(|n| n.name.as_str())
                .collect();
            affinity_patch(pod, &full)
        }
    }
}

fn pointer(parts: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(parts.iter().copied())
}

fn add(parts: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(parts),
        value,
    })
}

fn extended_resource_patch(pod: &Value, n: usize) -> Vec<PatchOperation> {
    let want = Value::String(n.to_string());
    let Some(container) = pod.pointer("/spec/containers/0") else {
        return Vec::new();
    };
    let base = ["spec", "containers", "0", "resources"];
    let Some(resources) = container.get("resources").filter(|r| r.is_object()) else {
        return vec![add(&base, json!({"limits": {BLOCK_VOLUMES_RESOURCE: want}}))];
    };
    let mut ops = Vec::new();
    for (map, required) in [("limits", true), ("requests", false)] {
        match resources.get(map).filter(|m| m.is_object()) {
            None if required => ops.push(add(
                &[&base[..], &[map]].concat(),
                json!({BLOCK_VOLUMES_RESOURCE: want}),
            )),
            None => {}
            Some(m) => match m.get(BLOCK_VOLUMES_RESOURCE) {
                Some(v) if *v == want => {}
                Some(_) => ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(&[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat()),
                    value: want.clone(),
                })),
                None => ops.push(add(
                    &[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat(),
                    want.clone(),
                )),
            },
        }
    }
    ops
}

fn affinity_patch(pod: &Value, full: &BTreeSet<&str>) -> Vec<PatchOperation> {
    if full.is_empty() {
        return Vec::new();
    }
    let expression = json!({"key": "kubernetes.io/hostname", "operator": "NotIn", "values": full});
    let ours = |e: &Value| e["key"] == "kubernetes.io/hostname" && e["operator"] == "NotIn";
    let required = pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution");
    let Some(terms) = required
        .and_then(|r| r.get("nodeSelectorTerms"))
        .and_then(Value::as_array)
    else {
        let term = json!({"nodeSelectorTerms": [{"matchExpressions": [expression]}]});
        let (path, value): (&[&str], Value) = match (
            pod.pointer("/spec/affinity"),
            pod.pointer("/spec/affinity/nodeAffinity"),
        ) {
            (None, _) => (
                &["spec", "affinity"],
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}),
            ),
            (Some(_), None) => (
                &["spec", "affinity", "nodeAffinity"],
                json!({"requiredDuringSchedulingIgnoredDuringExecution": term}),
            ),
            (Some(_), Some(_)) => (
                &[
                    "spec",
                    "affinity",
                    "nodeAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                ],
                term,
            ),
        };
        return vec![add(path, value)];
    };
    // Terms are ORed: the exclusion must be ANDed into each of them.
    let base = [
        "spec",
        "affinity",
        "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        "nodeSelectorTerms",
    ];
    let mut ops = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let i = i.to_string();
        match term.get("matchExpressions").and_then(Value::as_array) {
            Some(exprs) if exprs.iter().any(ours) => {}
            Some(_) => ops.push(add(
                &[&base[..], &[&i, "matchExpressions", "-"]].concat(),
                expression.clone(),
            )),
            None => ops.push(add(
                &[&base[..], &[&i, "matchExpressions"]].concat(),
                json!([expression]),
            )),
        }
    }
    ops
}

/// Parses the pod for the decisions (shared by both endpoints).
pub fn pod_of(object: &Value) -> Result<Pod, String> {
    crate::model::from_json(object).map_err(|e| format!("object.{}: {}", e.path(), e.inner()))
}
