//! Test fixtures for the decisions: small clusters of trimmed objects, built in code.

use crate::{
    config::Config,
    decide::{
        Situation,
        accounting::{self, Reservations, Settings},
        actuation::ActuatorStatus,
        placement::Placement,
        time::Timestamp,
    },
    index::{ClusterState, Object},
    model::{
        AttachmentInfo, ClaimInfo, Controller, CsiNodeInfo, Name, NodeInfo, PodInfo, StorageClassInfo,
        VolumeInfo, owner_hash,
    },
};

pub const GI: i64 = 1 << 30;
pub const DRIVER: &str = "csi.proxmox.sinextra.dev";

/// Nodes `n1..` holding `counts[i]` block volumes, one pod (its own ReplicaSet) per volume,
/// named `<node>-p<v>`.
pub fn cluster(counts: &[usize]) -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(Object::StorageClass(StorageClassInfo {
        name: "block".into(),
        provisioner: DRIVER.into(),
        is_default: false,
    }));
    for (i, count) in counts.iter().enumerate() {
        let node = format!("n{}", i + 1);
        s.apply(Object::Node(NodeInfo {
            name: node.as_str().into(),
            ready: true,
            memory_allocatable: 32 * GI,
            cpu_allocatable_millis: 8000,
            ..Default::default()
        }));
        s.apply(Object::CsiNode(CsiNodeInfo {
            name: node.as_str().into(),
            drivers: [(DRIVER.to_owned(), Some(28))].into(),
        }));
        for v in 0..*count {
            add_pod(&mut s, &node, &format!("{node}-p{v}"), 1);
        }
    }
    s
}

/// A pod on `node` with `volumes` bound, attached block claims, owned by its own ReplicaSet.
pub fn add_pod(s: &mut ClusterState, node: &str, name: &str, volumes: usize) {
    let mut claims = Vec::new();
    for v in 0..volumes {
        let claim = Name::from(format!("{name}-c{v}"));
        let pv = Name::from(format!("pv-{claim}"));
        s.apply(Object::Claim(ClaimInfo {
            namespace: "apps".into(),
            name: claim.clone(),
            storage_class: Some("block".into()),
            volume_name: Some(pv.clone()),
        }));
        s.apply(Object::Volume(VolumeInfo {
            name: pv.clone(),
            csi_driver: Some(DRIVER.into()),
            volume_handle: Some(format!("h/{pv}").into()),
            pinned_to: Box::default(),
        }));
        s.apply(Object::Attachment(AttachmentInfo {
            name: format!("va-{pv}").into(),
            attacher: DRIVER.into(),
            node_name: node.into(),
            pv_name: Some(pv),
            attached: true,
            ..Default::default()
        }));
        claims.push(claim);
    }
    s.apply(Object::Pod(PodInfo {
        namespace: "apps".into(),
        name: name.into(),
        node_name: Some(node.into()),
        claims: claims.into(),
        memory_request: GI,
        cpu_request_millis: 100,
        controller: Controller::Other,
        owner: owner_hash(name),
        ..Default::default()
    }));
}

/// `f` of the situation a tick at `now` would see on `state` (no reservations).
pub fn in_situation<T>(
    state: &ClusterState,
    config: &Config,
    actuator: &ActuatorStatus,
    now: Timestamp,
    f: impl FnOnce(&Situation<'_>) -> T,
) -> T {
    let view = accounting::account(state, &Settings::from(config), &Reservations::new());
    let reservations = Reservations::new();
    f(&Situation {
        state,
        view: &view,
        placement: Placement::new(&view, &reservations),
        config,
        actuator,
        now,
    })
}
