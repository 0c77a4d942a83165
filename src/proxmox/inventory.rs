//! What headroom reads from Proxmox: VMs with their tags and state, host memory, storage room.
//!
//! In-flight work lives in Proxmox, not in headroom's memory: a VM being provisioned carries
//! the description marker from the moment it is cloned (tags cannot be set by a clone) and
//! the `headroom-provisioning` tag once configured, so a restarted headroom finds it again.

use serde_json::Value;

use super::client::{PveClient, PveError, as_bool, as_i64};

/// Tag on every VM headroom manages.
pub const TAG: &str = "headroom";
/// Tag while a provision is in flight (cloned, configured, starting or joining).
pub const TAG_PROVISIONING: &str = "headroom-provisioning";
/// Tag on a stopped worker kept as a cold spare.
pub const TAG_SPARE: &str = "headroom-spare";
/// Tag on a VM whose provision failed (not retried; an operator looks at it).
pub const TAG_FAILED: &str = "headroom-failed";
/// Start of the description headroom writes on the VMs it clones.
pub const DESCRIPTION_MARKER: &str = "headroom: worker provisioned by headroom";

/// A VM as `/cluster/resources` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub status: String,
    pub template: bool,
    pub lock: Option<String>,
    pub tags: Vec<String>,
    /// Configured cores and memory (bytes), as `/cluster/resources` reports them.
    pub max_cpu: i64,
    pub max_mem: i64,
}

impl Vm {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn running(&self) -> bool {
        self.status == "running"
    }
}

/// Every VM (QEMU guests only) in the cluster.
pub async fn vms(pve: &PveClient) -> Result<Vec<Vm>, PveError> {
    parse_vms(&pve.get("/cluster/resources", &[("type", "vm".into())]).await?)
}

/// The QEMU guests of a `/cluster/resources` answer; entries without a vmid are skipped.
pub fn parse_vms(data: &Value) -> Result<Vec<Vm>, PveError> {
    let items = data
        .as_array()
        .ok_or_else(|| PveError::Decode("/cluster/resources is not a list".into()))?;
    Ok(items
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("qemu"))
        .filter_map(|v| {
            Some(Vm {
                vmid: as_i64(v.get("vmid")?)? as u32,
                name: v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                node: v
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                status: v
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
                template: v.get("template").is_some_and(as_bool),
                lock: v
                    .get("lock")
                    .and_then(Value::as_str)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
                tags: v
                    .get("tags")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .split([';', ',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_lowercase)
                    .collect(),
                max_cpu: v.get("maxcpu").and_then(as_i64).unwrap_or(0),
                max_mem: v.get("maxmem").and_then(as_i64).unwrap_or(0),
            })
        })
        .collect())
}

/// A VM's configuration (`current=1`: what is on disk, not pending values).
pub async fn config(pve: &PveClient, vm: &Vm) -> Result<serde_json::Map<String, Value>, PveError> {
    config_at(pve, &vm.node, vm.vmid).await
}

/// The configuration of VM `vmid` on `host` (`current=1`).
pub async fn config_at(
    pve: &PveClient,
    host: &str,
    vmid: u32,
) -> Result<serde_json::Map<String, Value>, PveError> {
    let data = pve
        .get(
            &format!("/nodes/{host}/qemu/{vmid}/config"),
            &[("current", "1".into())],
        )
        .await?;
    data.as_object()
        .cloned()
        .ok_or_else(|| PveError::Decode(format!("config of VM {vmid} is not an object")))
}

/// Free memory of a host in bytes: `total − used` from the live node status (right on old
/// and new PVE alike), or — when that shows no total, as without `Sys.Audit` — `maxmem − mem`
/// from `/cluster/resources` (RRD, up to 10 s old).
pub async fn host_free_memory(pve: &PveClient, host: &str) -> Result<i64, PveError> {
    let status = pve.get(&format!("/nodes/{host}/status"), &[]).await?;
    let memory = status.get("memory");
    let total = memory.and_then(|m| m.get("total")).and_then(as_i64).unwrap_or(0);
    if total > 0 {
        let used = memory.and_then(|m| m.get("used")).and_then(as_i64).unwrap_or(0);
        return Ok(total - used);
    }
    let nodes = pve.get("/cluster/resources", &[("type", "node".into())]).await?;
    let entry = nodes
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n.get("node").and_then(Value::as_str) == Some(host))
        })
        .ok_or_else(|| PveError::Decode(format!("host {host} is not in /cluster/resources")))?;
    let field = |k: &str| entry.get(k).and_then(as_i64).unwrap_or(0);
    Ok(field("maxmem") - field("mem"))
}

/// Available bytes on a storage of a host (thin pool: total − data used).
pub async fn storage_available(pve: &PveClient, host: &str, storage: &str) -> Result<i64, PveError> {
    let status = pve
        .get(&format!("/nodes/{host}/storage/{storage}/status"), &[])
        .await?;
    Ok(status.get("avail").and_then(as_i64).unwrap_or(0))
}

/// The CSI volumes in a VM config's `scsiN` entries (volume names containing `-pvc-`).
pub fn csi_disks(config: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut disks: Vec<(String, String)> = config
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("scsi")
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .filter_map(|(k, v)| {
            let volume = v.as_str()?.split(',').next()?;
            let name = volume.split(':').nth(1)?;
            name.contains("-pvc-").then(|| (k.clone(), name.to_owned()))
        })
        .collect();
    disks.sort();
    disks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_disks_are_read_from_scsi_entries() {
        let config: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "scsi0": "local-lvm:vm-206-disk-0,iothread=1,size=256G",
            "scsi1": "local-lvm:vm-9999-pvc-0b6d2d43-5d2e-4f55-9a3c-1a2b3c4d5e6f,backup=0,iothread=1,size=10G,wwn=0x5056432d49443031",
            "scsi12": "local-lvm:vm-9999-pvc-aa,backup=0,size=5G",
            "ide2": "local-lvm:vm-206-cloudinit,media=cdrom",
            "scsihw": "virtio-scsi-single",
            "unused0": "local-lvm:vm-206-disk-1"
        }))
        .unwrap();
        assert_eq!(
            csi_disks(&config),
            vec![
                (
                    "scsi1".to_owned(),
                    "vm-9999-pvc-0b6d2d43-5d2e-4f55-9a3c-1a2b3c4d5e6f".to_owned()
                ),
                ("scsi12".to_owned(), "vm-9999-pvc-aa".to_owned())
            ]
        );
    }
}

/// What ghost-disk detection needs from the index, taken under its lock in one pass.
#[derive(Debug, Default)]
pub struct AttachedDisks {
    /// VMID (from providerID `proxmox://<region>/<vmid>`) → Node name.
    by_vmid: std::collections::HashMap<u32, String>,
    nodes: std::collections::HashSet<String>,
    /// CSI disk name (last segment of the volume handle) → handle.
    handle_of: std::collections::HashMap<String, crate::model::Name>,
    /// Node → disk names with a VolumeAttachment there.
    attached: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    /// Node → disk names whose VolumeAttachment there says attached (and is not detaching):
    /// the disk must be in the VM's config.
    confirmed: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
}

impl AttachedDisks {
    pub fn from_state(state: &crate::index::ClusterState, block_driver: &str) -> Self {
        let mut out = Self::default();
        for n in state.nodes.values() {
            out.nodes.insert(n.name.to_string());
            let vmid = n
                .provider_id
                .as_deref()
                .and_then(|p| p.strip_prefix("proxmox://"))
                .and_then(|p| p.rsplit('/').next());
            if let Some(id) = vmid.and_then(|v| v.parse().ok()) {
                out.by_vmid.insert(id, n.name.to_string());
            }
        }
        let mut pv_disk = std::collections::HashMap::new();
        for pv in state.volumes.values() {
            if let (Some(driver), Some(handle)) = (&pv.csi_driver, &pv.volume_handle)
                && driver == block_driver
            {
                let disk = handle.rsplit('/').next().unwrap_or(handle).to_owned();
                out.handle_of.insert(disk.clone(), handle.clone());
                pv_disk.insert(pv.name.as_str(), disk);
            }
        }
        for va in state
            .attachments
            .values()
            .filter(|va| va.attacher == block_driver)
        {
            let disk = va.pv_name.as_deref().and_then(|pv| pv_disk.get(pv).cloned());
            let disk = disk.or_else(|| {
                va.inline_handle
                    .as_deref()
                    .map(|h| h.rsplit('/').next().unwrap_or(h).to_owned())
            });
            if let Some(disk) = disk {
                if va.attached && !va.detaching {
                    out.confirmed
                        .entry(va.node_name.to_string())
                        .or_default()
                        .insert(disk.clone());
                }
                out.attached
                    .entry(va.node_name.to_string())
                    .or_default()
                    .insert(disk);
            }
        }
        out
    }

    fn node_of(&self, vm: &Vm) -> Option<&str> {
        self.by_vmid
            .get(&vm.vmid)
            .map(String::as_str)
            .or_else(|| self.nodes.get(&vm.name).map(String::as_str))
    }
}

/// Where the VMs' disks and the VolumeAttachments disagree, per worker matched to its Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskDrift {
    /// Ghost disks: CSI disks in a worker VM's config with no VolumeAttachment for that node.
    /// They hold a LUN all the same. Keys are the PV's volume handle when a PV names the disk
    /// (so a volume is never counted twice), else `ghost:<disk>`.
    pub ghosts: crate::decide::accounting::Reservations,
    /// The reverse (the runbook's check #47): disks a VolumeAttachment says are attached to the
    /// node that its VM's config does not hold. Node → disk names.
    pub missing: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// The nodes whose VM config was read (a node not here was not checked).
    pub checked: std::collections::BTreeSet<String>,
    /// Each ghost disk with the VM and config slot holding it, for repair.
    pub found: Vec<crate::decide::ghosts::GhostDisk>,
}

/// Reads every worker VM's config and compares its CSI disks with the VolumeAttachments.
/// Workers are matched to their Node by providerID or by name.
pub async fn disk_drift(pve: &PveClient, vms: &[Vm], known: &AttachedDisks) -> Result<DiskDrift, PveError> {
    let mut out = DiskDrift::default();
    for vm in vms.iter().filter(|v| !v.template) {
        let Some(node) = known.node_of(vm) else { continue };
        let config = config(pve, vm).await?;
        let slots = csi_disks(&config);
        let disks: std::collections::BTreeSet<String> = slots.iter().map(|(_, d)| d.clone()).collect();
        for (slot, disk) in &slots {
            if known.attached.get(node).is_some_and(|a| a.contains(disk)) {
                continue;
            }
            out.found.push(crate::decide::ghosts::GhostDisk {
                node: node.to_owned(),
                vmid: vm.vmid,
                host: vm.node.clone(),
                slot: slot.clone(),
                disk: disk.clone(),
            });
            let key = known
                .handle_of
                .get(disk)
                .cloned()
                .unwrap_or_else(|| format!("ghost:{disk}").into());
            out.ghosts.entry(node.into()).or_default().insert(key);
        }
        let missing: std::collections::BTreeSet<String> = known
            .confirmed
            .get(node)
            .into_iter()
            .flatten()
            .filter(|d| !disks.contains(*d))
            .cloned()
            .collect();
        if !missing.is_empty() {
            out.missing.insert(node.to_owned(), missing);
        }
        out.checked.insert(node.to_owned());
    }
    Ok(out)
}
