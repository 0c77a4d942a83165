//! The accounting kept current per change equals the accounting computed from scratch: random
//! sequences of applies, deletes, relists and ghost-disk changes over a small cluster (names
//! drawn from small pools, so objects are replaced, re-bound and moved often), compared with
//! `account()` after every step.
//!
//! `PROPTEST_CASES` sets the number of sequences of both properties (defaults 256 and 64).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use headroom::{
    config::Config,
    decide::{
        accounting::{self, Reservations, Settings},
        live_view::LiveView,
    },
    index::{ClusterState, Kind, Object, ObjectKey},
    model::{AttachmentInfo, ClaimInfo, CsiNodeInfo, Name, NodeInfo, PodInfo, StorageClassInfo, VolumeInfo},
    shared_index::SharedIndex,
};
use proptest::{prelude::*, sample::select};
use support::{BLOCK, NFS};

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Step {
    Apply(Object),
    Delete(ObjectKey),
    Reset(Kind, Vec<Object>),
    Reserve(Reservations),
}

const NODES: [&str; 5] = ["n0", "n1", "n2", "n3", "gone"];
const NAMESPACES: [&str; 2] = ["a", "b"];
const CLAIMS: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
const VOLUMES: [&str; 5] = ["pv0", "pv1", "pv2", "pv3", "pv4"];
const HANDLES: [&str; 3] = ["h0", "h1", "h2"];
const CLASSES: [&str; 3] = ["block", "nfs", "other"];

fn name(pool: &'static [&'static str]) -> impl Strategy<Value = Name> {
    select(pool).prop_map(Name::from)
}

fn maybe(pool: &'static [&'static str]) -> impl Strategy<Value = Option<Name>> {
    proptest::option::of(name(pool))
}

fn node() -> impl Strategy<Value = Object> {
    (
        name(&NODES[..4]),
        any::<bool>(),
        any::<bool>(),
        1i64..64,
        1i64..16,
    )
        .prop_map(|(name, ready, unschedulable, mem_gi, cpus)| {
            Object::Node(NodeInfo {
                name,
                ready,
                unschedulable,
                memory_allocatable: mem_gi << 30,
                cpu_allocatable_millis: cpus * 1000,
                ..Default::default()
            })
        })
}

fn csi_node() -> impl Strategy<Value = Object> {
    (
        name(&NODES[..4]),
        proptest::option::of(proptest::option::of(20i64..30)),
    )
        .prop_map(|(name, count)| {
            Object::CsiNode(CsiNodeInfo {
                name,
                drivers: count.map(|c| (BLOCK.to_owned(), c)).into_iter().collect(),
            })
        })
}

fn storage_class() -> impl Strategy<Value = Object> {
    (name(&CLASSES), select(&[BLOCK, NFS][..]), any::<bool>()).prop_map(|(name, provisioner, is_default)| {
        Object::StorageClass(StorageClassInfo {
            name,
            provisioner: provisioner.to_owned(),
            is_default,
        })
    })
}

fn volume() -> impl Strategy<Value = Object> {
    (
        name(&VOLUMES),
        proptest::option::of(select(&[BLOCK, NFS][..])),
        maybe(&HANDLES),
    )
        .prop_map(|(name, driver, handle)| {
            Object::Volume(VolumeInfo {
                name,
                csi_driver: driver.map(Name::from),
                volume_handle: handle,
                pinned_to: Box::default(),
            })
        })
}

fn claim() -> impl Strategy<Value = Object> {
    (
        name(&NAMESPACES),
        name(&CLAIMS),
        proptest::option::of(select(&["block", "nfs", "other", ""][..])),
        maybe(&VOLUMES),
    )
        .prop_map(|(namespace, name, class, volume_name)| {
            Object::Claim(ClaimInfo {
                namespace,
                name,
                storage_class: class.map(Name::from),
                volume_name,
            })
        })
}

fn pod() -> impl Strategy<Value = Object> {
    (
        name(&NAMESPACES),
        select(&["p0", "p1", "p2", "p3", "p4", "p5"][..]),
        maybe(&NODES),
        prop::bool::weighted(0.15),
        prop::collection::vec(name(&CLAIMS), 0..3),
        0i64..4,
    )
        .prop_map(|(namespace, name, node_name, terminal, claims, mem_gi)| {
            Object::Pod(PodInfo {
                namespace,
                name: name.into(),
                node_name,
                terminal,
                claims: claims.into(),
                memory_request: mem_gi << 30,
                memory_limit: mem_gi << 31,
                cpu_request_millis: mem_gi * 100,
                ..Default::default()
            })
        })
}

fn attachment() -> impl Strategy<Value = Object> {
    (
        select(&["va0", "va1", "va2", "va3", "va4", "va5"][..]),
        select(&[BLOCK, BLOCK, NFS][..]),
        name(&NODES),
        maybe(&VOLUMES),
        maybe(&HANDLES),
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.3)),
    )
        .prop_map(
            |(name, attacher, node_name, pv_name, inline_handle, (attached, detaching, attach_error))| {
                Object::Attachment(AttachmentInfo {
                    name: name.into(),
                    attacher: attacher.into(),
                    node_name,
                    pv_name,
                    inline_handle,
                    attached,
                    detaching,
                    attach_error,
                })
            },
        )
}

fn object() -> impl Strategy<Value = Object> {
    prop_oneof![
        2 => node(),
        1 => csi_node(),
        1 => storage_class(),
        3 => volume(),
        4 => claim(),
        6 => pod(),
        4 => attachment(),
    ]
}

fn objects_of(kind: Kind) -> BoxedStrategy<Vec<Object>> {
    let one = match kind {
        Kind::Node => node().boxed(),
        Kind::CsiNode => csi_node().boxed(),
        Kind::StorageClass => storage_class().boxed(),
        Kind::PersistentVolume => volume().boxed(),
        Kind::PersistentVolumeClaim => claim().boxed(),
        Kind::Pod => pod().boxed(),
        _ => attachment().boxed(),
    };
    prop::collection::vec(one, 0..6).boxed()
}

fn reservations() -> impl Strategy<Value = Reservations> {
    prop::collection::btree_map(
        name(&NODES),
        prop::collection::btree_set(select(&["h0", "h1", "ghost:x"][..]).prop_map(Name::from), 1..3),
        0..3,
    )
}

fn step() -> impl Strategy<Value = Step> {
    // The kinds the accounting reads (Events and budgets are not in it).
    let kinds = Kind::ALL[..7].to_vec();
    prop_oneof![
        12 => object().prop_map(Step::Apply),
        4 => object().prop_map(|o| Step::Delete(o.key())),
        1 => select(kinds).prop_flat_map(|k| objects_of(k).prop_map(move |os| Step::Reset(k, os))),
        1 => reservations().prop_map(Step::Reserve),
    ]
}

/// A cluster to start from: a few of everything.
fn start() -> impl Strategy<Value = Vec<Object>> {
    prop::collection::vec(object(), 0..25)
}

/// Takes `step` into the state, and tells the live view as the shared index does.
fn take(state: &mut ClusterState, live: &mut LiveView, reserved: &mut Reservations, step: Step) {
    match step {
        Step::Apply(object) => {
            let key = object.key();
            let old = state.apply(object);
            live.changed(state, &key, old.as_ref());
        }
        Step::Delete(key) => {
            let old = state.delete(&key);
            live.changed(state, &key, old.as_ref());
        }
        Step::Reset(kind, objects) => {
            state.reset(kind, objects);
            live.rebuild(state);
        }
        Step::Reserve(r) => {
            *reserved = r.clone();
            live.set_reserved(state, r);
        }
    }
}

/// `PROPTEST_CASES` when set (a field given in the config would override proptest's own
/// reading of it), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn settings() -> Settings {
    Settings::from(&Config::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn the_view_kept_per_change_is_the_view_from_scratch(
        initial in start(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut state = ClusterState::from_objects(initial);
        let mut reserved = Reservations::new();
        let mut live = LiveView::build(&state, settings(), reserved.clone());
        for (i, step) in steps.into_iter().enumerate() {
            take(&mut state, &mut live, &mut reserved, step.clone());
            let scratch = accounting::account(&state, &settings(), &reserved);
            prop_assert_eq!(live.view(), &scratch, "after step {} ({:?})", i, step);
        }
    }
}

/// Nodes by the hundred (the view keeps them in chunks of 64): nodes join and leave between
/// others, pods come and go on them, and the view stays the one from scratch.
fn many_nodes_step() -> impl Strategy<Value = Step> {
    let name = (0u32..200).prop_map(|i| Name::from(format!("m{i:03}")));
    prop_oneof![
        3 => (name.clone(), any::<bool>()).prop_map(|(name, ready)| Step::Apply(Object::Node(NodeInfo {
            name,
            ready,
            ..Default::default()
        }))),
        1 => name.clone().prop_map(|name| Step::Delete(ObjectKey {
            kind: Kind::Node,
            namespace: Name::default(),
            name,
        })),
        3 => (name, 0u32..20, 1i64..4).prop_map(|(node, pod, mem_gi)| Step::Apply(Object::Pod(PodInfo {
            namespace: "a".into(),
            name: format!("p{pod}").into(),
            node_name: Some(node),
            memory_request: mem_gi << 30,
            ..Default::default()
        }))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn the_view_of_hundreds_of_nodes_kept_per_change_is_the_view_from_scratch(
        initial in prop::collection::vec((0u32..200).prop_map(|i| Object::Node(NodeInfo {
            name: format!("m{i:03}").into(),
            ready: true,
            ..Default::default()
        })), 100..180),
        steps in prop::collection::vec(many_nodes_step(), 1..80),
    ) {
        let mut state = ClusterState::from_objects(initial);
        let mut reserved = Reservations::new();
        let mut live = LiveView::build(&state, settings(), reserved.clone());
        for (i, step) in steps.into_iter().enumerate() {
            // A published copy shares chunks with the live view: changes must not reach it.
            let published = live.view().clone();
            let before = accounting::account(&state, &settings(), &reserved);
            take(&mut state, &mut live, &mut reserved, step.clone());
            let scratch = accounting::account(&state, &settings(), &reserved);
            prop_assert_eq!(live.view(), &scratch, "after step {} ({:?})", i, step);
            prop_assert_eq!(&published, &before, "a published view changed at step {}", i);
        }
    }
}

/// The published view follows every change through the shared index, ghost disks included.
#[test]
fn the_shared_index_publishes_the_view_of_every_change() {
    let index = SharedIndex::default();
    index.account(settings());
    let node = |name: &str| {
        Object::Node(NodeInfo {
            name: name.into(),
            ready: true,
            ..Default::default()
        })
    };
    index.apply(node("n1"));
    assert!(
        index.view().nodes.is_empty(),
        "nothing is accounted before every kind has listed"
    );
    for kind in Kind::ALL {
        index.reset(
            kind,
            if kind == Kind::Node {
                vec![node("n1")]
            } else {
                vec![]
            },
        );
    }
    assert_eq!(index.view().nodes.len(), 1);

    let attachment = Object::Attachment(AttachmentInfo {
        name: "va".into(),
        attacher: BLOCK.into(),
        node_name: "n1".into(),
        pv_name: Some("pv".into()),
        attached: true,
        ..Default::default()
    });
    index.apply(attachment.clone());
    let held = |index: &SharedIndex| index.view().node("n1").map(|n| n.block_volumes);
    assert_eq!(held(&index), Some(1));
    index.set_reserved(BTreeMap::from([(
        Name::from("n1"),
        BTreeSet::from([Name::from("ghost:vm-1-disk-1")]),
    )]));
    assert_eq!(held(&index), Some(2));
    index.delete(&attachment.key());
    assert_eq!(held(&index), Some(1));
    let scratch = index.with_state(|s, _| {
        accounting::account(
            s,
            &settings(),
            &BTreeMap::from([(
                Name::from("n1"),
                BTreeSet::from([Name::from("ghost:vm-1-disk-1")]),
            )]),
        )
    });
    assert_eq!(*index.view(), scratch);
}
