//! The scenario file format: what happens when, and how long the world takes to do it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{config::Period, decide::actuation::FailureReason, model::quantity};

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{file}: {reason}")]
    Scenario { file: String, reason: String },
    #[error(transparent)]
    Snapshot(#[from] crate::source::file::SnapshotError),
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// The snapshot to start from, relative to the scenario file.
    pub snapshot: Option<String>,
    /// The headroom config, relative to the scenario file, when `--config` names none.
    pub config: Option<String>,
    #[serde(default = "default_duration")]
    pub duration: Period,
    /// VM clone/boot to Node Ready (the runbook's 3–5 minutes).
    #[serde(default = "default_boot")]
    pub vm_boot_time: Period,
    /// The clone's share of `vmBootTime`: one clone at a time, the next may start once the
    /// previous VM boots.
    #[serde(default = "default_clone")]
    pub clone_time: Period,
    /// A stopped cold spare to Node Ready: boot and join, no clone.
    #[serde(default = "default_spare_boot")]
    pub cold_spare_boot_time: Period,
    /// Node Ready to its CSINode listing the block driver with a count (proxmox-csi's node
    /// plugin starting): until then the node holds no block volume.
    #[serde(default = "default_csi_delay")]
    pub csi_registration_delay: Period,
    /// Cordon to Node deleted: evictions, PodDisruptionBudgets, volumes detaching.
    #[serde(default = "default_drain_time")]
    pub drain_time: Period,
    /// Memory free on the Proxmox hosts for worker VMs (a quantity; default: unlimited). Each
    /// VM headroom starts takes its configured memory; one shut down gives it back.
    #[serde(default)]
    pub host_memory_free: Option<String>,
    pub events: Vec<Event>,
}

fn default_duration() -> Period {
    Period(Duration::from_secs(2 * 3600))
}
fn default_boot() -> Period {
    Period(Duration::from_secs(240))
}
fn default_spare_boot() -> Period {
    Period(Duration::from_secs(120))
}
fn default_clone() -> Period {
    Period(Duration::from_secs(60))
}
fn default_csi_delay() -> Period {
    Period(Duration::from_secs(10))
}
fn default_drain_time() -> Period {
    Period(Duration::from_secs(60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    pub at: Period,
    #[serde(default)]
    pub create_pods: Option<CreatePods>,
    #[serde(default)]
    pub delete_pods: Option<DeletePods>,
    #[serde(default)]
    pub lose_node: Option<String>,
    /// The next `times` provision attempts fail for `reason`.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// headroom restarts: its status is rebuilt from Proxmox and what it persisted.
    #[serde(default)]
    pub restart: bool,
    /// The Proxmox hosts' free memory for worker VMs becomes this (something else took it).
    #[serde(default)]
    pub host_memory_free: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    pub reason: FaultReason,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// The failures a scenario can inject into provisioning.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultReason {
    /// PVE unreachable or 595/596: retried after a short backoff.
    Transient,
    /// A clone or start task fails (a VM is left, marked failed).
    Task,
    /// 401/403.
    Credentials,
}

impl FaultReason {
    pub(super) fn reason(self) -> FailureReason {
        match self {
            FaultReason::Transient => FailureReason::Transient,
            FaultReason::Task => FailureReason::Task,
            FaultReason::Credentials => FailureReason::Credentials,
        }
    }
}

/// `count` pods named `<prefix>-<i>`, one every `every` (0: all at once, a Parallel StatefulSet).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePods {
    pub count: u32,
    pub prefix: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub every: Period,
    #[serde(default = "default_memory")]
    pub memory: String,
    /// New block claims per pod (its own PVCs, created with it).
    #[serde(default)]
    pub block_volumes: u32,
    #[serde(default = "default_class")]
    pub storage_class: String,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_memory() -> String {
    "512Mi".into()
}
fn default_class() -> String {
    "proxmox-lvm".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeletePods {
    pub prefix: String,
    /// Delete their claims (and volumes) too, not only detach them (a workload retired, not
    /// scaled to zero).
    #[serde(default)]
    pub delete_claims: bool,
}

/// Where a scenario's snapshot and config are, resolved against its file.
#[derive(Debug, Clone, Default)]
pub struct ScenarioFiles {
    pub snapshot: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<(Self, ScenarioFiles), SimulateError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SimulateError::Scenario {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let value: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(|e| SimulateError::Scenario {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        let scenario: Scenario =
            serde_path_to_error::deserialize(value).map_err(|e| SimulateError::Scenario {
                file: file.clone(),
                reason: format!("key `{}`: {}", e.path(), e.inner()),
            })?;
        for (i, e) in scenario.events.iter().enumerate() {
            let actions = [
                e.create_pods.is_some(),
                e.delete_pods.is_some(),
                e.lose_node.is_some(),
                e.fault.is_some(),
                e.restart,
                e.host_memory_free.is_some(),
            ];
            if actions.iter().filter(|a| **a).count() != 1 {
                return Err(SimulateError::Scenario {
                    file,
                    reason: format!(
                        "events[{i}]: exactly one of createPods, deletePods, loseNode, fault, restart, hostMemoryFree"
                    ),
                });
            }
        }
        let quantities = std::iter::once(&scenario.host_memory_free)
            .chain(scenario.events.iter().map(|e| &e.host_memory_free));
        for q in quantities.flatten() {
            if let Err(e) = quantity::parse_scaled(q, 1) {
                return Err(SimulateError::Scenario {
                    file,
                    reason: format!("hostMemoryFree: {}", e.0),
                });
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let files = ScenarioFiles {
            snapshot: scenario.snapshot.as_ref().map(|s| dir.join(s)),
            config: scenario.config.as_ref().map(|c| dir.join(c)),
        };
        Ok((scenario, files))
    }
}
