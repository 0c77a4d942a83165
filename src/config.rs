//! The config file: typed keys with documented defaults, strict parsing, precise errors.
//!
//! Every key is optional. Unknown keys are errors (a misspelt trigger must not silently do
//! nothing), and every error names the file, the key path and the reason.

use std::{fmt, path::Path, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: key `{key}`: {reason}")]
    Key {
        file: String,
        key: String,
        reason: String,
    },
}

/// What `/validate` does when no capacity can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    Deny,
    Warn,
    Off,
}

/// How `/mutate` steers pods with block claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// Add the `headroom.io/block-volumes` extended resource so kube-scheduler consults the extender.
    Extender,
    /// Add a required node affinity excluding nodes without room (clusters without the extender).
    Affinity,
}

/// How `/extender/prioritize` weighs free block slots against memory headroom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Scoring {
    pub block_weight: u32,
    pub memory_weight: u32,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            block_weight: 2,
            memory_weight: 1,
        }
    }
}

/// What a scale-down does with the VM once its Node is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDownAction {
    /// Keep the VM stopped as a cold spare (the runbook's preferred option).
    Shutdown,
    /// Destroy the VM with `purge=1`.
    Destroy,
}

/// What a scale-down does with a singleton: a pod whose controller runs only it, so evicting it
/// means downtime until it runs again elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Singletons {
    /// Evict it, after naming it in an Event (what the runbook does by hand).
    #[default]
    Allow,
    /// Never remove a node that runs one.
    Refuse,
}

/// A duration written as `0s`, `90s`, `15m`, `720h` or `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Period(pub Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Period).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {text:?} ({e}); use e.g. 30s, 15m, 720h"
            ))
        })
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub block_driver: String,
    pub soft_cap: u32,
    pub hard_cap_default: u32,
    pub enforcement: Enforcement,
    pub steering: Steering,
    pub scoring: Scoring,
    pub excluded_namespaces: Vec<String>,
    pub triggers: Triggers,
    pub signals: Signals,
    pub scale_down: ScaleDown,
    pub admission: Admission,
    pub cleanup: Cleanup,
    pub rebalance: Rebalance,
    pub ghost_disks: GhostDisks,
    pub tls: Tls,
    /// Absent: dry-run, planned calls are logged and nothing is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<Proxmox>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            block_driver: "csi.proxmox.sinextra.dev".into(),
            soft_cap: 24,
            hard_cap_default: 29,
            enforcement: Enforcement::Warn,
            steering: Steering::Extender,
            scoring: Scoring::default(),
            excluded_namespaces: vec!["kube-system".into(), "kube-node-lease".into()],
            triggers: Triggers::default(),
            signals: Signals::default(),
            scale_down: ScaleDown::default(),
            admission: Admission::default(),
            cleanup: Cleanup::default(),
            rebalance: Rebalance::default(),
            ghost_disks: GhostDisks::default(),
            tls: Tls::default(),
            proxmox: None,
        }
    }
}

/// How admitted demand that nothing confirms is treated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Admission {
    /// An admitted object the watch does not show within this long is forgotten. Until the
    /// watch shows it (or the review came over an authenticated connection) it is no demand:
    /// anyone who reaches the port can send a review.
    pub confirm_within: Period,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            confirm_within: Period(Duration::from_secs(30)),
        }
    }
}

/// What headroom cleans up by itself (the runbook's manual steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Cleanup {
    /// Remove VolumeAttachments left on a Node that is gone and whose VM Proxmox shows
    /// stopped or absent (finalizers cleared, then deleted). Needs the `proxmox:` section.
    pub stale_attachments: bool,
}

impl Default for Cleanup {
    fn default() -> Self {
        Self {
            stale_attachments: true,
        }
    }
}

/// Moving block volumes off the fullest node, one pod at a time (the design's "rebalance
/// residual node6 block PVCs → node5, one at a time").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Rebalance {
    pub enabled: bool,
    /// The spread (fullest − emptiest schedulable node, in block volumes) that starts moves.
    pub start_at: i64,
    /// The spread at which moves stop.
    pub stop_at: i64,
    /// At most one move per interval, cluster-wide, counted from when the last one settled.
    pub interval: Period,
}

impl Default for Rebalance {
    fn default() -> Self {
        Self {
            enabled: false,
            start_at: 6,
            stop_at: 2,
            interval: Period(Duration::from_secs(600)),
        }
    }
}

/// Ghost disks: SCSI disks in a worker VM's config that no VolumeAttachment names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GhostDisks {
    pub repair: GhostRepair,
    /// How long a ghost is seen, on every read, before it is detached.
    pub repair_after: Period,
}

impl Default for GhostDisks {
    fn default() -> Self {
        Self {
            repair: GhostRepair::Off,
            repair_after: Period(Duration::from_secs(600)),
        }
    }
}

/// What headroom does about a ghost disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GhostRepair {
    /// Count, alert and say in `status` what a repair would do.
    #[default]
    Off,
    /// Detach it from the VM config (`delete=scsiN`): the volume stays as `unusedN`.
    Detach,
}

/// Who may call the webhook and extender port.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    /// A PEM CA bundle. When set, `/mutate`, `/validate` and `/extender/*` require a client
    /// certificate it issued, carrying one of `allowedClientNames`; the admin port is unaffected.
    #[serde(rename = "clientCAFile", skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Common names or DNS SANs of the callers: the API server's webhook client certificate
    /// and kube-scheduler's extender client certificate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_client_names: Vec<String>,
}

/// Scale-up triggers; a trigger set to `null` is disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Triggers {
    pub free_block_slots: Option<Below<i64>>,
    pub memory_request_ratio: Option<Above>,
    pub planned_block_volumes: Option<PlannedBlockVolumes>,
    /// `FailedAttachVolume` Events whose message has "no free lun found" (the runbook's
    /// "even one" trigger).
    pub lun_cap_incidents: Option<Incidents>,
    /// Kubelet evictions (reason `Evicted`), not headroom's own drains.
    pub pod_evictions: Option<Churn>,
}

/// Fires when at least `atLeast` incidents happened `within` the last stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Incidents {
    pub at_least: i64,
    pub within: Period,
}

/// Fires when at least `atLeast` happened in every `per` for `for`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Churn {
    pub at_least: i64,
    pub per: Period,
    pub r#for: Period,
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            free_block_slots: Some(Below {
                below: 4,
                r#for: Period::default(),
            }),
            memory_request_ratio: Some(Above {
                above: 0.90,
                r#for: Period::default(),
            }),
            planned_block_volumes: Some(PlannedBlockVolumes {
                at_least: 3,
                when_max_node_at_least: 22,
                r#for: Period::default(),
            }),
            lun_cap_incidents: Some(Incidents {
                at_least: 1,
                within: Period(Duration::from_secs(24 * 3600)),
            }),
            pod_evictions: Some(Churn {
                at_least: 20,
                per: Period(Duration::from_secs(24 * 3600)),
                r#for: Period(Duration::from_secs(72 * 3600)),
            }),
        }
    }
}

/// Fires when the value is strictly below `below` for `for`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Below<T> {
    pub below: T,
    #[serde(default)]
    pub r#for: Period,
}

/// Fires when the value is strictly above `above` for `for`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Above {
    pub above: f64,
    #[serde(default)]
    pub r#for: Period,
}

/// Fires when the value is at least `atLeast` for `for`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AtLeast {
    pub at_least: i64,
    #[serde(default)]
    pub r#for: Period,
}

/// Holds when the value is at most `atMost`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AtMost {
    pub at_most: i64,
}

/// Holds when the ratio is strictly below `below`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatioBelow {
    pub below: f64,
}

/// The runbook's "≥3 planned PVCs while a node is at ≥22".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedBlockVolumes {
    pub at_least: i64,
    pub when_max_node_at_least: i64,
    #[serde(default)]
    pub r#for: Period,
}

/// Reported in status, metrics and alerts; never a reason to add a VM by themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Signals {
    pub max_node_block_volumes: Option<AtLeast>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            max_node_block_volumes: Some(AtLeast {
                at_least: 22,
                r#for: Period::default(),
            }),
        }
    }
}

/// Conditions that must all hold for `for` before a node is taken away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleDown {
    pub max_node_block_volumes: Option<AtMost>,
    pub memory_request_ratio: Option<RatioBelow>,
    pub memory_limit_ratio: Option<RatioBelow>,
    pub r#for: Period,
    pub action: ScaleDownAction,
    /// How long a drain may wait for evictions (PodDisruptionBudgets) before giving up.
    pub drain_timeout: Period,
    pub singletons: Singletons,
}

impl Default for ScaleDown {
    fn default() -> Self {
        Self {
            max_node_block_volumes: Some(AtMost { at_most: 20 }),
            memory_request_ratio: Some(RatioBelow { below: 0.70 }),
            memory_limit_ratio: Some(RatioBelow { below: 0.95 }),
            r#for: Period(Duration::from_secs(720 * 3600)),
            action: ScaleDownAction::Shutdown,
            drain_timeout: Period(Duration::from_secs(15 * 60)),
            singletons: Singletons::Allow,
        }
    }
}

/// The Proxmox VE endpoint and how new workers are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxmox {
    pub url: String,
    #[serde(default = "default_token_file")]
    pub token_file: String,
    /// Ticket login instead of a token: `user@realm` and a file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub hosts: Vec<ProxmoxHost>,
    #[serde(default)]
    pub vm: VmShape,
    #[serde(default = "default_max_nodes")]
    pub max_nodes: u32,
    #[serde(default = "default_host_reserve", rename = "hostMemoryReserveMiB")]
    pub host_memory_reserve_mib: u64,
    #[serde(default = "default_join_timeout")]
    pub join_timeout: Period,
}

fn default_token_file() -> String {
    "/var/run/secrets/headroom/pve-token".into()
}
fn default_max_nodes() -> u32 {
    10
}
fn default_host_reserve() -> u64 {
    2048
}
fn default_join_timeout() -> Period {
    Period(Duration::from_secs(15 * 60))
}

/// A PVE node that may host new workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxmoxHost {
    pub name: String,
    pub template: u32,
    pub storage: String,
}

/// The size and naming of a new worker VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct VmShape {
    pub cores: u32,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    pub name_pattern: String,
    pub vmid_range: [u32; 2],
    pub tags: Vec<String>,
    /// Addresses for new workers, e.g. `["10.0.20.107-10.0.20.199"]`: `{ip}` in
    /// `cloudInit.ipconfig0` takes the first one no Node and no VM's `ipconfig0` uses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_pool: Vec<String>,
    /// Labels put on a new worker's Node once it joins; `{host}` is its Proxmox host, e.g.
    /// `{"headroom.io/proxmox-host": "{host}"}` (kproximate's TargetHost).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Cloud-init for new workers (the template's own cloud-init snippet does the join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
}

/// Cloud-init settings written into a new worker's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudInit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// e.g. `ip=dhcp`, `ip={ip}/22,gw=10.0.20.1` (`{ip}` from `ipPool`) or
    /// `ip=10.0.20.{n}/22,gw=10.0.20.1` (`{n}` is the worker number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipconfig0: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
}

impl Default for VmShape {
    fn default() -> Self {
        Self {
            cores: 8,
            memory_mib: 32768,
            name_pattern: "k8s-node{n}".into(),
            vmid_range: [207, 299],
            tags: vec!["headroom".into()],
            ip_pool: Vec::new(),
            node_labels: Default::default(),
            cloud_init: None,
        }
    }
}

impl Config {
    /// Loads a config file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses config text; `file` only names the source in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
                file: file.into(),
                reason: first_line(&e.to_string()),
            })?
        };
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Key {
            file: file.into(),
            key: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
        config.check().map_err(|(key, reason)| ConfigError::Key {
            file: file.into(),
            key,
            reason,
        })?;
        Ok(config)
    }

    /// Cross-key rules serde cannot express.
    fn check(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, reason: String| Err((key.to_owned(), reason));
        if self.block_driver.is_empty() {
            return fail("blockDriver", "must not be empty".into());
        }
        if self.soft_cap == 0 || self.soft_cap > self.hard_cap_default {
            return fail(
                "softCap",
                format!(
                    "must be between 1 and hardCapDefault ({}), got {}",
                    self.hard_cap_default, self.soft_cap
                ),
            );
        }
        for (key, ratio) in [
            (
                "triggers.memoryRequestRatio.above",
                self.triggers.memory_request_ratio.map(|t| t.above),
            ),
            (
                "scaleDown.memoryRequestRatio.below",
                self.scale_down.memory_request_ratio.map(|t| t.below),
            ),
            (
                "scaleDown.memoryLimitRatio.below",
                self.scale_down.memory_limit_ratio.map(|t| t.below),
            ),
        ] {
            if let Some(r) = ratio
                && !(r.is_finite() && r >= 0.0)
            {
                return fail(key, format!("must be a ratio ≥ 0 such as 0.9, got {r}"));
            }
        }
        if let Some(c) = &self.triggers.pod_evictions
            && c.per.0 < Duration::from_secs(3600)
        {
            return fail(
                "triggers.podEvictions.per",
                format!(
                    "must be at least 1h (evictions are counted per hour), got {}",
                    c.per
                ),
            );
        }
        let r = &self.rebalance;
        if r.stop_at < 0 || r.start_at <= r.stop_at {
            return fail(
                "rebalance.startAt",
                format!(
                    "must be above stopAt ({}), which must be ≥ 0: moves start at one spread and stop at a smaller one, got startAt {}",
                    r.stop_at, r.start_at
                ),
            );
        }
        if r.interval.0.is_zero() {
            return fail(
                "rebalance.interval",
                "must be more than 0s: one move per interval".into(),
            );
        }
        if self.scoring.block_weight + self.scoring.memory_weight == 0 {
            return fail("scoring", "blockWeight and memoryWeight cannot both be 0".into());
        }
        match (&self.tls.client_ca_file, self.tls.allowed_client_names.is_empty()) {
            (Some(_), true) => {
                return fail(
                    "tls.allowedClientNames",
                    "list the client names to allow (the API server's and the scheduler's): \
                     a CA such as the cluster's also issues every kubelet a certificate"
                        .into(),
                );
            }
            (None, false) => {
                return fail(
                    "tls.clientCAFile",
                    "allowedClientNames needs the CA that issued those client certificates".into(),
                );
            }
            _ => {}
        }
        if let Some(p) = &self.proxmox {
            if !p.url.starts_with("https://") {
                return fail("proxmox.url", format!("must be an https:// URL, got {:?}", p.url));
            }
            if p.ca_file.is_some() && p.fingerprint.is_some() {
                return fail(
                    "proxmox.fingerprint",
                    "set caFile or fingerprint, not both".into(),
                );
            }
            if p.user.is_some() != p.password_file.is_some() {
                return fail(
                    "proxmox.passwordFile",
                    "user and passwordFile go together (ticket login)".into(),
                );
            }
            if p.hosts.is_empty() {
                return fail("proxmox.hosts", "at least one host is needed to provision".into());
            }
            let [lo, hi] = p.vm.vmid_range;
            if lo < 100 || lo > hi {
                return fail(
                    "proxmox.vm.vmidRange",
                    format!("must be [low, high] with 100 ≤ low ≤ high, got [{lo}, {hi}]"),
                );
            }
            if !p.vm.name_pattern.contains("{n}") {
                return fail("proxmox.vm.namePattern", "must contain {n}".into());
            }
            let pool = crate::decide::addresses::IpPool::parse(&p.vm.ip_pool)
                .map_err(|reason| ("proxmox.vm.ipPool".to_owned(), reason))?;
            let wants_ip =
                p.vm.cloud_init
                    .as_ref()
                    .and_then(|c| c.ipconfig0.as_deref())
                    .is_some_and(|ip| ip.contains("{ip}"));
            if wants_ip && pool.is_empty() {
                return fail(
                    "proxmox.vm.ipPool",
                    "cloudInit.ipconfig0 uses {ip}: list the addresses to take it from".into(),
                );
            }
            if !wants_ip && !pool.is_empty() {
                return fail(
                    "proxmox.vm.cloudInit.ipconfig0",
                    "ipPool is set: write {ip} where the address goes, e.g. ip={ip}/22,gw=10.0.20.1".into(),
                );
            }
        }
        Ok(())
    }

    /// The effective config as YAML, defaults filled in.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("c.yaml", "").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.soft_cap, 24);
        assert_eq!(c.hard_cap_default, 29);
        assert_eq!(c.scale_down.r#for.to_string(), "720h");
    }

    #[test]
    fn the_interface_example_parses() {
        let text = r#"
blockDriver: csi.proxmox.sinextra.dev
softCap: 24
hardCapDefault: 29
enforcement: deny
excludedNamespaces: [kube-system, kube-node-lease]
triggers:
  freeBlockSlots: {below: 4, for: 0s}
  memoryRequestRatio: {above: 0.90, for: 0s}
  plannedBlockVolumes: {atLeast: 3, whenMaxNodeAtLeast: 22}
signals:
  maxNodeBlockVolumes: {atLeast: 22}
scaleDown:
  maxNodeBlockVolumes: {atMost: 20}
  memoryRequestRatio: {below: 0.70}
  memoryLimitRatio: {below: 0.95}
  for: 720h
  action: shutdown
proxmox:
  url: https://pve.example:8006
  tokenFile: /var/run/secrets/headroom/pve-token
  caFile: /etc/headroom/pve-ca.pem
  hosts:
    - name: pve
      template: 2000
      storage: local-lvm
  vm: {cores: 8, memoryMiB: 32768, namePattern: "k8s-node{n}", vmidRange: [207, 299], tags: [headroom]}
  maxNodes: 10
  hostMemoryReserveMiB: 2048
  joinTimeout: 15m
"#;
        let c = Config::parse("c.yaml", text).unwrap();
        assert_eq!(c.enforcement, Enforcement::Deny);
        let p = c.proxmox.as_ref().unwrap();
        assert_eq!(p.vm.memory_mib, 32768);
        assert_eq!(p.join_timeout, Period(Duration::from_secs(900)));
        // The effective config reads back to itself.
        assert_eq!(Config::parse("again", &c.to_yaml()).unwrap(), c);
    }

    #[test]
    fn a_null_trigger_is_disabled() {
        let c = Config::parse("c.yaml", "triggers: {memoryRequestRatio: null}").unwrap();
        assert!(c.triggers.memory_request_ratio.is_none());
        assert!(c.triggers.free_block_slots.is_some());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                "softcap: 3",
                "`softcap`",
                "unknown field `softcap`, expected one of",
            ),
            ("softCap: many", "`softCap`", "invalid type"),
            (
                "triggers: {freeBlockSlots: {below: 4, fro: 1s}}",
                "`triggers.freeBlockSlots.fro`",
                "unknown field `fro`",
            ),
            ("scaleDown: {for: soon}", "`scaleDown.for`", "invalid duration"),
            ("enforcement: maybe", "`enforcement`", "unknown variant"),
            ("softCap: 40", "`softCap`", "between 1 and hardCapDefault"),
            (
                "proxmox: {url: http://pve:8006, hosts: [{name: a, template: 1, storage: s}]}",
                "`proxmox.url`",
                "https",
            ),
            (
                "tls: {clientCAFile: /etc/kubernetes/pki/ca.crt}",
                "`tls.allowedClientNames`",
                "every kubelet",
            ),
            (
                "tls: {allowedClientNames: [kube-apiserver]}",
                "`tls.clientCAFile`",
                "needs the CA",
            ),
            (
                "tls: {clientCaFile: ca.crt}",
                "`tls.clientCaFile`",
                "unknown field",
            ),
            (
                "rebalance: {enabled: true, startAt: 2, stopAt: 2}",
                "`rebalance.startAt`",
                "must be above stopAt (2)",
            ),
            (
                "rebalance: {interval: 0s}",
                "`rebalance.interval`",
                "more than 0s",
            ),
            (
                "ghostDisks: {repair: delete}",
                "`ghostDisks.repair`",
                "unknown variant",
            ),
        ];
        for (text, key, reason) in cases {
            let err = Config::parse("cfg.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with("cfg.yaml: key "), "{text}: {err}");
            assert!(err.contains(key), "{text}: want key {key} in {err}");
            assert!(err.contains(reason), "{text}: want {reason:?} in {err}");
        }
    }

    #[test]
    fn broken_yaml_is_a_syntax_error() {
        let err = Config::parse("cfg.yaml", "softCap: [1,").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn periods_render_compactly() {
        for (secs, text) in [
            (0, "0s"),
            (90, "1m30s"),
            (900, "15m"),
            (2_592_000, "720h"),
            (5400, "1h30m"),
        ] {
            assert_eq!(Period(Duration::from_secs(secs)).to_string(), text);
        }
    }
}
