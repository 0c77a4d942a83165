//! Stale VolumeAttachments: the runbook's clean-up after a worker is removed.
//!
//! When a Node is deleted while its VM is down, the attach-detach controller cannot detach:
//! the VolumeAttachment keeps its finalizer and the volume stays "attached" to a node that is
//! gone, so its pod cannot start elsewhere. Once Proxmox confirms the VM stopped (or gone) no
//! disk can be in use there, and the attachment can go.

use std::collections::BTreeSet;

use crate::index::ClusterState;

/// A VolumeAttachment to remove, and the node it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleAttachment {
    pub name: String,
    pub node: String,
}

/// The block driver's VolumeAttachments that name a Node the index does not hold and whose
/// VM is not among `running_vms` (names of the VMs Proxmox shows running). Only meaningful on
/// a synced index: before the Nodes are listed, every node looks gone.
pub fn stale_attachments(
    state: &ClusterState,
    block_driver: &str,
    running_vms: &BTreeSet<&str>,
) -> Vec<StaleAttachment> {
    let mut stale: Vec<StaleAttachment> = state
        .attachments
        .values()
        .filter(|va| va.attacher == block_driver)
        .filter(|va| !state.nodes.contains_key(&va.node_name))
        .filter(|va| !running_vms.contains(va.node_name.as_str()))
        .map(|va| StaleAttachment {
            name: va.name.to_string(),
            node: va.node_name.to_string(),
        })
        .collect();
    stale.sort_by(|a, b| a.name.cmp(&b.name));
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        index::Object,
        model::{AttachmentInfo, NodeInfo},
    };

    const BLOCK: &str = "csi.proxmox.sinextra.dev";

    #[test]
    fn only_attachments_of_a_gone_node_whose_vm_is_down_are_stale() {
        let mut state = ClusterState::default();
        state.apply(Object::Node(NodeInfo {
            name: "k8s-node1".into(),
            ..Default::default()
        }));
        // (attachment, attacher, node it names)
        let rows = [
            ("va-live", BLOCK, "k8s-node1"),      // the Node exists
            ("va-stopped", BLOCK, "k8s-node4"),   // Node gone, VM stopped
            ("va-vanished", BLOCK, "k8s-node5"),  // Node gone, no VM at all
            ("va-rebooting", BLOCK, "k8s-node6"), // Node gone, VM running: it may come back
            ("va-other", "nfs.csi.k8s.io", "k8s-node4"),
        ];
        for (name, attacher, node) in rows {
            state.apply(Object::Attachment(AttachmentInfo {
                name: name.into(),
                attacher: attacher.into(),
                node_name: node.into(),
                ..Default::default()
            }));
        }
        let running = BTreeSet::from(["k8s-node1", "k8s-node6"]);
        let stale = stale_attachments(&state, BLOCK, &running);
        let names: Vec<&str> = stale.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["va-stopped", "va-vanished"]);
        assert_eq!(stale[0].node, "k8s-node4");
    }
}
