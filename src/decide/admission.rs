//! Admission decisions for Pod and PVC creation: steer (mutate) and guard (validate).
//!
//! Pure: takes the placement (view + reservations), the config, the object and whether
//! capacity is on its way, and returns a verdict or how to steer the pod. The webhook handlers
//! only parse, call these, and encode (the JSON patch is built in `server::patch`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::Value;

use crate::{
    config::{Config, Enforcement, Steering},
    decide::placement::{BlockDemand, Placement},
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
                .map(|n| format!("{} {}/{}", n.name, n.block_volumes, n.soft_cap))
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

/// How `/mutate` steers a pod that mounts block volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steer {
    /// No block volume: the pod is left as it is.
    Nothing,
    /// `extender` steering: ask for `headroom.io/block-volumes: n` (a limit, and a request
    /// where the container has requests), so kube-scheduler calls the extender for it.
    BlockVolumes(usize),
    /// `affinity` steering: keep the pod off these nodes (no room under their soft cap).
    AvoidNodes(BTreeSet<String>),
}

/// How a pod with `demand` is steered. The webhook encodes it as a JSON patch.
pub fn steer(placement: Placement<'_>, config: &Config, demand: &BlockDemand) -> Steer {
    if demand.is_empty() {
        return Steer::Nothing;
    }
    match config.steering {
        Steering::Extender => Steer::BlockVolumes(demand.keys.len()),
        Steering::Affinity => {
            let fits = placement.fits_on(&demand.keys);
            Steer::AvoidNodes(
                placement
                    .view
                    .schedulable()
                    .filter(|n| !fits(n))
                    .map(|n| n.name.clone())
                    .collect(),
            )
        }
    }
}

/// Parses the pod for the decisions (shared by both endpoints).
pub fn pod_of(object: &Value) -> Result<Pod, String> {
    crate::model::from_json(object).map_err(|e| format!("object.{}: {}", e.path(), e.inner()))
}
