//! Admission decisions for Pod and PVC creation: steer (mutate) and guard (validate).
//!
//! Pure: takes the placement (view + reservations), the config, the object and whether
//! capacity is on its way, and returns a verdict or how to steer the pod. The webhook handlers
//! only parse, call these, and encode (the JSON patch is built in `server::patch`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

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

/// Why a request is not looked at, if it is not; `ignore_label` is the value of the object's
/// `headroom.io/ignore` label.
pub fn skip_reason(config: &Config, namespace: &str, ignore_label: Option<&str>) -> Option<&'static str> {
    if config.excluded_namespaces.iter().any(|n| n == namespace) {
        Some("excluded-namespace")
    } else if ignore_label == Some("true") {
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
                    .map(|n| n.name.to_string())
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{
        accounting::{self, ClusterView, Reservations, Settings},
        fixtures::cluster,
    };

    fn view_of(counts: &[usize]) -> ClusterView {
        accounting::account(
            &cluster(counts),
            &Settings::from(&Config::default()),
            &Reservations::new(),
        )
    }

    /// `n` new block volumes (claims no node holds yet).
    fn new_volumes(n: usize) -> BlockDemand {
        BlockDemand {
            keys: (0..n).map(|i| format!("claim:apps/new-{i}").into()).collect(),
            unindexed: 0,
        }
    }

    fn with(enforcement: Enforcement) -> Config {
        Config {
            enforcement,
            ..Config::default()
        }
    }

    const NOTHING_COMING: Outlook = Outlook {
        incoming: false,
        may_add: false,
    };

    #[test]
    fn skip_reasons() {
        let config = Config::default();
        // (case, namespace, the ignore label's value, reason)
        let rows: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
            ("an ordinary namespace", "apps", None, None),
            (
                "kube-system is excluded",
                "kube-system",
                None,
                Some("excluded-namespace"),
            ),
            ("the ignore label", "apps", Some("true"), Some("ignore-label")),
            ("the ignore label set to false", "apps", Some("false"), None),
        ];
        for (case, ns, labels, want) in rows {
            assert_eq!(skip_reason(&config, ns, labels), want, "{case}");
        }
    }

    #[test]
    fn a_pod_is_allowed_warned_or_denied_by_room_outlook_and_enforcement() {
        // (case, node block volumes, new volumes, enforcement, outlook, verdict label, reason,
        //  text the message holds)
        type Row = (
            &'static str,
            Vec<usize>,
            usize,
            Enforcement,
            Outlook,
            &'static str,
            &'static str,
            &'static str,
        );
        let coming = Outlook {
            incoming: true,
            may_add: false,
        };
        let may_add = Outlook {
            incoming: false,
            may_add: true,
        };
        let rows: Vec<Row> = vec![
            (
                "no block volume",
                vec![24],
                0,
                Enforcement::Deny,
                NOTHING_COMING,
                "allow",
                "no-block-volumes",
                "",
            ),
            (
                "room on one node",
                vec![24, 23],
                1,
                Enforcement::Deny,
                NOTHING_COMING,
                "allow",
                "fits",
                "",
            ),
            (
                "two volumes need one node with two slots",
                vec![23, 23],
                2,
                Enforcement::Deny,
                NOTHING_COMING,
                "deny",
                "no-capacity",
                "room for 2 more block volumes",
            ),
            (
                "a VM on its way",
                vec![24],
                1,
                Enforcement::Deny,
                coming,
                "warn",
                "capacity-coming",
                "a new worker is on its way",
            ),
            (
                "headroom may add one",
                vec![24],
                1,
                Enforcement::Deny,
                may_add,
                "warn",
                "capacity-coming",
                "headroom is adding a worker",
            ),
            (
                "warn",
                vec![24],
                1,
                Enforcement::Warn,
                NOTHING_COMING,
                "warn",
                "no-capacity",
                "it may stay Pending",
            ),
            (
                "off",
                vec![24],
                1,
                Enforcement::Off,
                NOTHING_COMING,
                "allow",
                "enforcement-off",
                "",
            ),
            (
                "deny names the fullest",
                vec![24, 24],
                1,
                Enforcement::Deny,
                NOTHING_COMING,
                "deny",
                "no-capacity",
                "fullest: n1 24/24, n2 24/24",
            ),
            (
                "no nodes at all",
                vec![],
                1,
                Enforcement::Deny,
                NOTHING_COMING,
                "deny",
                "no-capacity",
                "no schedulable nodes",
            ),
        ];
        for (case, counts, new, enforcement, outlook, label, reason, text) in rows {
            let view = view_of(&counts);
            let reservations = Reservations::new();
            let placement = Placement::new(&view, &reservations);
            let v = validate_pod(placement, &with(enforcement), &new_volumes(new), outlook);
            assert_eq!((v.label(), v.reason), (label, reason), "{case}: {:?}", v.outcome);
            let message = match &v.outcome {
                Outcome::Allow => "",
                Outcome::Warn(m) | Outcome::Deny(m) => m.as_str(),
            };
            assert!(message.contains(text), "{case}: {message}");
            assert!(
                message.chars().count() <= MAX_WARNING || label == "deny",
                "{case}: a warning fits"
            );
        }
    }

    #[test]
    fn a_block_claim_fits_while_the_cluster_has_a_free_slot_for_it() {
        let claim = |class: &str| -> PersistentVolumeClaim {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "c", "namespace": "apps"},
                "spec": {"storageClassName": class}}))
            .unwrap()
        };
        // (case, node block volumes, pending and admitted, class, reason)
        let rows: Vec<(&str, Vec<usize>, i64, &str, &str)> = vec![
            ("not a block class", vec![24], 0, "nfs", "not-block"),
            ("a free slot", vec![23], 0, "block", "fits"),
            ("the free slot is spoken for", vec![23], 1, "block", "no-capacity"),
            ("no room", vec![24], 0, "block", "no-capacity"),
        ];
        for (case, counts, pending, class, reason) in rows {
            let view = view_of(&counts);
            let reservations = Reservations::new();
            let placement = Placement::new(&view, &reservations);
            let v = validate_claim(
                placement,
                &with(Enforcement::Deny),
                pending,
                &claim(class),
                NOTHING_COMING,
            );
            assert_eq!(v.reason, reason, "{case}");
        }
    }

    #[test]
    fn steering_follows_the_config() {
        let view = view_of(&[24, 10]);
        let reservations = Reservations::new();
        let placement = Placement::new(&view, &reservations);
        let affinity = Config {
            steering: Steering::Affinity,
            ..Config::default()
        };
        let extender = Config::default();
        // (case, config, new volumes, steer)
        let rows: Vec<(&str, &Config, usize, Steer)> = vec![
            ("no block volume: nothing", &affinity, 0, Steer::Nothing),
            (
                "extender: the extended resource",
                &extender,
                2,
                Steer::BlockVolumes(2),
            ),
            (
                "affinity: avoid the full node",
                &affinity,
                1,
                Steer::AvoidNodes(["n1".to_owned()].into()),
            ),
        ];
        for (case, config, new, want) in rows {
            assert_eq!(steer(placement, config, &new_volumes(new)), want, "{case}");
        }
    }
}
