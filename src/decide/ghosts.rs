//! Ghost-disk repair: which ghost disks may be detached from their VM, and when.
//!
//! A ghost disk is a CSI disk in a worker VM's config that no VolumeAttachment for that node
//! names: it holds one of the VM's 29 LUNs for nothing. Detaching it (`delete=scsiN`) only
//! moves it to `unusedN`; the volume itself is kept. A disk is detached only when it has been
//! seen as a ghost on every read for `ghostDisks.repairAfter` and on at least two reads in a
//! row, and nothing in the cluster names it — no VolumeAttachment on any node, no PV. The
//! caller checks the last condition again right before the call, on a fresh read.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    config::{Config, GhostRepair},
    decide::time::Timestamp,
    index::ClusterState,
};

/// Reads in a row a ghost must be seen on before it is detached.
pub const READS_TO_CONFIRM: u32 = 2;

/// One ghost disk in one VM's config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GhostDisk {
    /// The Kubernetes node the VM is.
    pub node: String,
    pub vmid: u32,
    /// The Proxmox host the VM runs on.
    pub host: String,
    /// The config key holding it (`scsiN`).
    pub slot: String,
    /// The volume name (`vm-9999-pvc-…`).
    pub disk: String,
}

/// Since when, and on how many reads in a row, a ghost has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sighting {
    since: Timestamp,
    reads: u32,
    /// A detach was sent: never sent twice for the same ghost.
    attempted: bool,
}

/// The ghosts seen on recent reads; kept by the actuator (a restart starts the waits again,
/// which only delays a repair).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GhostWatch {
    seen: BTreeMap<GhostDisk, Sighting>,
}

impl GhostWatch {
    /// One read's ghosts at `now`: those seen before count one more read, new ones start,
    /// and those not seen this time are forgotten (seen continuously, or not at all).
    pub fn observe(&mut self, ghosts: &[GhostDisk], now: Timestamp) {
        let mut seen = BTreeMap::new();
        for ghost in ghosts {
            let sighting = match self.seen.get(ghost) {
                Some(s) => Sighting {
                    reads: s.reads + 1,
                    ..*s
                },
                None => Sighting {
                    since: now,
                    reads: 1,
                    attempted: false,
                },
            };
            seen.insert(ghost.clone(), sighting);
        }
        self.seen = seen;
    }

    /// A detach of `ghost` was sent.
    pub fn attempted(&mut self, ghost: &GhostDisk) {
        if let Some(s) = self.seen.get_mut(ghost) {
            s.attempted = true;
        }
    }
}

/// What repair does, or would do, about one ghost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Verdict {
    /// Detach it now (or, with `repair: off`, what would be done).
    Detach,
    /// Not yet: seen for less than `repairAfter` or on fewer than two reads in a row.
    Waiting { reason: String },
    /// Never by headroom: something in the cluster names the disk.
    Kept { reason: String },
    /// A detach was sent; it is still in the config (PVE applies it at the next start when
    /// the VM cannot hot-unplug).
    Attempted,
}

/// One ghost and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    #[serde(flatten)]
    pub ghost: GhostDisk,
    pub verdict: Verdict,
    /// `ghostDisks.repair` is `detach`: a `detach` verdict is carried out.
    pub enabled: bool,
}

/// What in the cluster names `disk`, if anything: a PV whose volume handle ends in it, or a
/// VolumeAttachment (any node) of such a PV or with such an inline handle.
pub fn named_by(state: &ClusterState, block_driver: &str, disk: &str) -> Option<String> {
    let is_disk = |handle: &str| handle.rsplit('/').next() == Some(disk);
    let pv = state.volumes.values().find(|v| {
        v.csi_driver.as_deref() == Some(block_driver) && v.volume_handle.as_deref().is_some_and(is_disk)
    });
    let va = state.attachments.values().find(|va| {
        va.attacher == block_driver
            && (va.inline_handle.as_deref().is_some_and(is_disk)
                || pv.is_some_and(|pv| va.pv_name.as_deref() == Some(pv.name.as_str())))
    });
    match (va, pv) {
        (Some(va), _) => Some(format!(
            "VolumeAttachment {} (node {}) names it",
            va.name, va.node_name
        )),
        (None, Some(pv)) => Some(format!("PersistentVolume {} names it", pv.name)),
        (None, None) => None,
    }
}

/// The verdict on every ghost of the last read. Without a watch (`status`, one read) a ghost
/// counts as seen once, now.
pub fn repairs(
    ghosts: &[GhostDisk],
    watch: Option<&GhostWatch>,
    state: &ClusterState,
    config: &Config,
    now: Timestamp,
) -> Vec<Repair> {
    let after = config.ghost_disks.repair_after;
    let enabled = config.ghost_disks.repair == GhostRepair::Detach;
    let mut out: Vec<Repair> = ghosts
        .iter()
        .map(|ghost| {
            let sighting = watch.and_then(|w| w.seen.get(ghost)).copied().unwrap_or(Sighting {
                since: now,
                reads: 1,
                attempted: false,
            });
            let verdict = if let Some(reason) = named_by(state, &config.block_driver, &ghost.disk) {
                Verdict::Kept { reason }
            } else if sighting.attempted {
                Verdict::Attempted
            } else if now.since(sighting.since) < after.0 || sighting.reads < READS_TO_CONFIRM {
                Verdict::Waiting {
                    reason: format!(
                        "seen since {} on {} read(s); detached once seen for {after} and on {READS_TO_CONFIRM} reads in a row",
                        sighting.since.rfc3339(),
                        sighting.reads
                    ),
                }
            } else {
                Verdict::Detach
            };
            Repair {
                ghost: ghost.clone(),
                verdict,
                enabled,
            }
        })
        .collect();
    out.sort_by(|a, b| a.ghost.cmp(&b.ghost));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{AttachmentInfo, Name, VolumeInfo};

    const T0: Timestamp = Timestamp(1_780_000_000_000);
    const DRIVER: &str = "csi.proxmox.sinextra.dev";

    fn ghost(slot: &str, disk: &str) -> GhostDisk {
        GhostDisk {
            node: "n2".into(),
            vmid: 202,
            host: "pve1".into(),
            slot: slot.into(),
            disk: disk.into(),
        }
    }

    fn detach() -> Config {
        let mut c = Config::default();
        c.ghost_disks.repair = GhostRepair::Detach;
        c
    }

    fn at(mins: u64) -> Timestamp {
        T0.plus(Duration::from_secs(mins * 60))
    }

    fn state_of(v: &Verdict) -> &'static str {
        match v {
            Verdict::Detach => "detach",
            Verdict::Waiting { .. } => "waiting",
            Verdict::Kept { .. } => "kept",
            Verdict::Attempted => "attempted",
        }
    }

    #[test]
    fn a_ghost_is_detached_after_repair_after_and_two_reads_in_a_row() {
        let g = ghost("scsi3", "vm-9999-pvc-ccc");
        // (case, reads at these minutes, verdict at the last)
        let rows: Vec<(&str, Vec<u64>, &str)> = vec![
            ("first read", vec![0], "waiting"),
            ("two reads within repairAfter (10m)", vec![0, 5], "waiting"),
            ("one read, then 10 minutes", vec![10], "waiting"),
            ("two reads, 10 minutes apart", vec![0, 10], "detach"),
            ("many reads past repairAfter", vec![0, 1, 2, 3, 11], "detach"),
        ];
        for (case, reads, want) in rows {
            let mut watch = GhostWatch::default();
            for m in &reads {
                watch.observe(std::slice::from_ref(&g), at(*m));
            }
            let last = at(*reads.last().unwrap());
            let r = repairs(
                std::slice::from_ref(&g),
                Some(&watch),
                &ClusterState::default(),
                &detach(),
                last,
            );
            assert_eq!(state_of(&r[0].verdict), want, "{case}: {:?}", r[0].verdict);
            assert!(r[0].enabled);
        }
    }

    #[test]
    fn a_ghost_missing_from_one_read_starts_again_and_one_attempt_is_all() {
        let g = ghost("scsi3", "vm-9999-pvc-ccc");
        let mut watch = GhostWatch::default();
        watch.observe(std::slice::from_ref(&g), at(0));
        watch.observe(&[], at(5));
        watch.observe(std::slice::from_ref(&g), at(11));
        watch.observe(std::slice::from_ref(&g), at(12));
        let verdict = |w: &GhostWatch, now| {
            repairs(
                std::slice::from_ref(&g),
                Some(w),
                &ClusterState::default(),
                &detach(),
                now,
            )[0]
            .verdict
            .clone()
        };
        assert_eq!(
            state_of(&verdict(&watch, at(12))),
            "waiting",
            "seen again only since 11m"
        );
        watch.observe(std::slice::from_ref(&g), at(21));
        assert_eq!(verdict(&watch, at(21)), Verdict::Detach);
        watch.attempted(&g);
        watch.observe(std::slice::from_ref(&g), at(22));
        assert_eq!(verdict(&watch, at(22)), Verdict::Attempted, "never sent twice");
    }

    #[test]
    fn a_disk_a_pv_or_an_attachment_names_is_kept() {
        let g = ghost("scsi3", "vm-9999-pvc-ccc");
        let mut watch = GhostWatch::default();
        watch.observe(std::slice::from_ref(&g), at(0));
        watch.observe(std::slice::from_ref(&g), at(20));
        let pv = VolumeInfo {
            name: "pv-ccc".into(),
            csi_driver: Some(DRIVER.into()),
            volume_handle: Some("homelab/pve1/local-lvm/vm-9999-pvc-ccc".into()),
            pinned_to: Box::default(),
        };
        let va = |pv: Option<&str>, inline: Option<&str>| AttachmentInfo {
            name: "va-ccc".into(),
            attacher: DRIVER.into(),
            node_name: "n3".into(),
            pv_name: pv.map(Name::from),
            inline_handle: inline.map(Name::from),
            attached: true,
            ..Default::default()
        };
        // (case, PV present, attachment, verdict, reason part)
        let rows: Vec<(&str, bool, Option<AttachmentInfo>, &str, &str)> = vec![
            ("nothing names it", false, None, "detach", ""),
            ("its PV exists", true, None, "kept", "PersistentVolume pv-ccc"),
            (
                "attached on another node through its PV",
                true,
                Some(va(Some("pv-ccc"), None)),
                "kept",
                "VolumeAttachment va-ccc (node n3)",
            ),
            (
                "an inline volume's attachment",
                false,
                Some(va(None, Some("homelab/pve1/local-lvm/vm-9999-pvc-ccc"))),
                "kept",
                "va-ccc",
            ),
            (
                "another disk's PV",
                false,
                Some(va(Some("pv-other"), None)),
                "detach",
                "",
            ),
        ];
        for (case, with_pv, attachment, want, reason) in rows {
            let mut state = ClusterState::default();
            if with_pv {
                state.volumes.insert(pv.name.clone(), pv.clone());
            }
            if let Some(va) = attachment {
                state.attachments.insert(va.name.clone(), va);
            }
            let r = repairs(std::slice::from_ref(&g), Some(&watch), &state, &detach(), at(20));
            assert_eq!(state_of(&r[0].verdict), want, "{case}");
            if let Verdict::Kept { reason: why } = &r[0].verdict {
                assert!(why.contains(reason), "{case}: {why}");
            }
        }
    }

    #[test]
    fn with_repair_off_the_verdict_is_only_shown() {
        let g = ghost("scsi3", "vm-9999-pvc-ccc");
        let r = repairs(&[g], None, &ClusterState::default(), &Config::default(), T0);
        assert!(!r[0].enabled);
        assert_eq!(state_of(&r[0].verdict), "waiting", "one read is never enough");
    }
}
