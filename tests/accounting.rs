//! Accounting rules, one table row per rule of the interface's "Accounting" section.

mod support;

use headroom::{
    config::Config,
    decide::accounting::{self, ClaimState, ClusterView, Reservations, Settings},
};
use serde_json::{Value, json};
use support::*;

/// Two ready nodes with CSINode count 28, a block class (default: no) and an NFS class.
fn base() -> Vec<Value> {
    vec![
        node("n1"),
        node("n2"),
        csinode("n1", Some(28)),
        csinode("n2", Some(28)),
        storage_class("proxmox-lvm", BLOCK, false),
        storage_class("nfs", NFS, true),
    ]
}

fn view_of(extra: Vec<Value>, reservations: &Reservations) -> ClusterView {
    let mut items = base();
    items.extend(extra);
    accounting::account(&state(items), &Settings::from(&Config::default()), reservations)
}

fn block_volumes(view: &ClusterView, node: &str) -> i64 {
    view.node(node).map(|n| n.block_volumes).unwrap_or(-1)
}

fn claims_in(view: &ClusterView, want: ClaimState) -> i64 {
    view.block_claims.values().filter(|(_, s)| *s == want).count() as i64
}

struct Case {
    name: &'static str,
    objects: Vec<Value>,
    /// (n1, n2) block volumes.
    want_nodes: (i64, i64),
    want_pending: i64,
    want_dormant: i64,
}

fn cat(parts: Vec<Vec<Value>>) -> Vec<Value> {
    parts.into_iter().flatten().collect()
}

#[test]
fn accounting_rules() {
    let cases = vec![
        Case {
            name: "attached VolumeAttachment of the block driver holds a LUN",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![attachment("va1", BLOCK, "n1", "pv-c1", true)],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "attaching (attached=false) VolumeAttachment holds a LUN",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![attachment("va1", BLOCK, "n1", "pv-c1", false)],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "detaching VolumeAttachment (deletionTimestamp) still holds a LUN",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![with(attachment("va1", BLOCK, "n2", "pv-c1", true), |v| {
                    v["metadata"]["deletionTimestamp"] = json!("2026-06-05T09:12:00Z");
                    v["metadata"]["finalizers"] = json!(["external-attacher/csi-proxmox-sinextra-dev"]);
                })],
            ]),
            want_nodes: (0, 1),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "an attachment that failed (no free lun) holds no LUN, even with its pod there",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![
                    no_free_lun(attachment("va1", BLOCK, "n1", "pv-c1", false)),
                    pod("a", "p1", Some("n1"), &["c1"], "1Gi"),
                ],
            ]),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "an attach error that was then attached holds its LUN",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![no_free_lun(attachment("va1", BLOCK, "n1", "pv-c1", true))],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "VolumeAttachment of another attacher does not count",
            objects: cat(vec![
                bound_claim("a", "c1", "nfs"),
                vec![attachment("va1", "ebs.csi.aws.com", "n1", "pv-c1", true)],
            ]),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "scheduled pod with a bound claim and no VolumeAttachment yet counts",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![pod("a", "p1", Some("n1"), &["c1"], "1Gi")],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "the same handle through a VolumeAttachment and a pod counts once",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![
                    attachment("va1", BLOCK, "n1", "pv-c1", true),
                    pod("a", "p1", Some("n1"), &["c1"], "1Gi"),
                ],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "distinct handles add up; a pod mounting two claims holds two",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                bound_claim("a", "c2", "proxmox-lvm"),
                bound_claim("a", "c3", "proxmox-lvm"),
                vec![
                    pod("a", "p1", Some("n1"), &["c1", "c2"], "1Gi"),
                    attachment("va3", BLOCK, "n1", "pv-c3", true),
                ],
            ]),
            want_nodes: (2 + 1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "a Succeeded pod holds nothing; its bound claim is dormant",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![with(pod("a", "job", Some("n1"), &["c1"], "1Gi"), |v| {
                    v["status"]["phase"] = json!("Succeeded")
                })],
            ]),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 1,
        },
        Case {
            name: "a Failed pod holds nothing either",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![with(pod("a", "job", Some("n1"), &["c1"], "1Gi"), |v| {
                    v["status"]["phase"] = json!("Failed")
                })],
            ]),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 1,
        },
        Case {
            name: "an NFS claim is not block",
            objects: cat(vec![
                bound_claim("a", "media", "nfs"),
                vec![pod("a", "p1", Some("n2"), &["media"], "1Gi")],
            ]),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "an unbound WaitForFirstConsumer claim is pending, on no node",
            objects: vec![unbound_claim("a", "new", Some("proxmox-lvm"))],
            want_nodes: (0, 0),
            want_pending: 1,
            want_dormant: 0,
        },
        Case {
            name: "an unbound claim with no class takes the default class (NFS here): not block",
            objects: vec![unbound_claim("a", "new", None)],
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "storageClassName \"\" asks for no class: not block",
            objects: vec![unbound_claim("a", "static", Some(""))],
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "a bound claim no pod uses is dormant, not pending",
            objects: bound_claim("postiz", "uploads", "proxmox-lvm"),
            want_nodes: (0, 0),
            want_pending: 0,
            want_dormant: 1,
        },
        Case {
            name: "a pod with no node using a bound claim makes it pending",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![pod("a", "p1", None, &["c1"], "1Gi")],
            ]),
            want_nodes: (0, 0),
            want_pending: 1,
            want_dormant: 0,
        },
        Case {
            name: "a pod on a node with an unbound claim holds it there (not pending)",
            objects: vec![
                unbound_claim("a", "new", Some("proxmox-lvm")),
                pod("a", "p1", Some("n2"), &["new"], "1Gi"),
            ],
            want_nodes: (0, 1),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "a bound claim still attached while its new pod waits is on a node, not pending",
            objects: cat(vec![
                bound_claim("a", "c1", "proxmox-lvm"),
                vec![
                    attachment("va1", BLOCK, "n1", "pv-c1", true),
                    pod("a", "p1", None, &["c1"], "1Gi"),
                ],
            ]),
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
        Case {
            name: "a generic ephemeral volume is the claim <pod>-<volume>",
            objects: vec![
                unbound_claim("a", "p1-scratch", Some("proxmox-lvm")),
                with(pod("a", "p1", Some("n1"), &[], "1Gi"), |v| {
                    v["spec"]["volumes"] = json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate":
                        {"spec": {"storageClassName": "proxmox-lvm", "accessModes": ["ReadWriteOnce"]}}}}]);
                }),
            ],
            want_nodes: (1, 0),
            want_pending: 0,
            want_dormant: 0,
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let view = view_of(case.objects, &Reservations::new());
        let got = (
            (block_volumes(&view, "n1"), block_volumes(&view, "n2")),
            claims_in(&view, ClaimState::Pending),
            claims_in(&view, ClaimState::Dormant),
        );
        let want = (case.want_nodes, case.want_pending, case.want_dormant);
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// An attachment as external-attacher leaves it after "no free lun found".
fn no_free_lun(mut va: Value) -> Value {
    va["status"]["attachError"] = json!({
        "message": "rpc error: code = Internal desc = failed to attach volume: no free lun found",
        "time": "2026-05-26T08:14:03Z"
    });
    va
}

#[test]
fn a_node_never_counts_more_volumes_than_its_vm_has_luns_and_failures_apart() {
    // 32 attachments on n1, as the seed incident's node showed: 29 attached, 3 failing.
    let mut objects = Vec::new();
    for i in 0..32 {
        objects.extend(bound_claim("a", &format!("c{i}"), "proxmox-lvm"));
        let va = attachment(&format!("va{i}"), BLOCK, "n1", &format!("pv-c{i}"), i < 29);
        objects.push(if i < 29 { va } else { no_free_lun(va) });
    }
    let view = view_of(objects.clone(), &Reservations::new());
    let n1 = view.node("n1").unwrap();
    assert_eq!((n1.block_volumes, n1.failing_to_attach), (29, 3));
    assert_eq!(
        claims_in(&view, ClaimState::OnNode),
        32,
        "still on the node, not pending"
    );

    // Even if the data says more are attached (a stale status), the VM holds at most 29.
    for va in objects.iter_mut().filter(|o| o["kind"] == "VolumeAttachment") {
        va["status"] = json!({"attached": true});
    }
    let view = view_of(objects, &Reservations::new());
    let n1 = view.node("n1").unwrap();
    assert_eq!(
        (n1.block_volumes, n1.failing_to_attach),
        (accounting::LUNS_PER_VM, 0)
    );
}

#[test]
fn reservations_count_on_their_node_and_merge_with_watched_handles() {
    let objects = cat(vec![
        bound_claim("a", "c1", "proxmox-lvm"),
        vec![attachment("va1", BLOCK, "n1", "pv-c1", true)],
    ]);
    let mut reservations = Reservations::new();
    reservations
        .entry("n1".into())
        .or_default()
        .extend(["h-c1".into(), "h-new".into()]);
    let view = view_of(objects, &reservations);
    assert_eq!(
        block_volumes(&view, "n1"),
        2,
        "h-c1 is already attached; only h-new adds"
    );
}

#[test]
fn soft_cap_follows_csinode_and_the_default() {
    let config = Config::default();
    let items = vec![
        node("small"),
        csinode("small", Some(20)),
        node("tiny"),
        csinode("tiny", Some(12)),
        node("nocsi"),
        node("nocount"),
        csinode("nocount", None),
    ];
    let view = accounting::account(&state(items), &Settings::from(&config), &Reservations::new());
    let caps = |n: &str| view.node(n).map(|u| (u.soft_cap, u.hard_cap)).unwrap();
    assert_eq!(
        caps("small"),
        (20, 20),
        "allocatable 20 lowers the soft cap to 20"
    );
    assert_eq!(caps("tiny"), (12, 12));
    assert_eq!(caps("nocsi"), (24, 29), "no CSINode: hardCapDefault");
    assert_eq!(
        caps("nocount"),
        (24, 29),
        "driver without a count: hardCapDefault"
    );
}

#[test]
fn schedulable_follows_ready_cordon_and_taints() {
    let items = vec![
        node("ok"),
        with(node("cordoned"), |v| v["spec"]["unschedulable"] = json!(true)),
        with(node("notready"), |v| {
            v["status"]["conditions"][0]["status"] = json!("False")
        }),
        with(node("unknown"), |v| v["status"]["conditions"] = json!([])),
        with(node("tainted"), |v| {
            v["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoSchedule"}])
        }),
        with(node("evicting"), |v| {
            v["spec"]["taints"] = json!([{"key": "x", "effect": "NoExecute"}])
        }),
        with(
            node("gpu"),
            |v| {
                v["spec"]["taints"] =
                    json!([{"key": "nvidia.com/gpu", "value": "true", "effect": "PreferNoSchedule"}])
            },
        ),
        // Pending claims subtract from the room of schedulable nodes only.
        storage_class("proxmox-lvm", BLOCK, false),
        unbound_claim("a", "w", Some("proxmox-lvm")),
        csinode("ok", Some(28)),
        csinode("gpu", Some(28)),
        // Schedulable, but its CSI plugin has not registered a count: no block room yet.
        node("joining"),
        csinode("joining", None),
    ];
    let view = accounting::account(
        &state(items),
        &Settings::from(&Config::default()),
        &Reservations::new(),
    );
    let sched: Vec<&str> = view.schedulable().map(|n| n.name.as_str()).collect();
    assert_eq!(sched, ["gpu", "joining", "ok"]);
    assert!(!view.node("joining").unwrap().block_ready);
    assert_eq!(view.node("joining").unwrap().free_slots(), 0);
    assert_eq!(
        view.node("cordoned").unwrap().unschedulable_reason.as_deref(),
        Some("cordoned")
    );
    assert_eq!(
        view.node("notready").unwrap().unschedulable_reason.as_deref(),
        Some("NotReady")
    );
    assert_eq!(
        view.node("tainted").unwrap().unschedulable_reason.as_deref(),
        Some("taint maintenance:NoSchedule")
    );
    assert_eq!(view.room(), 48);
    assert_eq!(view.free_block_slots(), 47);
}

#[test]
fn memory_requests_as_kube_scheduler_computes_them() {
    let gi = 1024 * 1024 * 1024_i64;
    let mi = 1024 * 1024_i64;
    let containers = |mems: &[&str]| -> Value {
        Value::Array(
            mems.iter()
                .enumerate()
                .map(|(i, m)| json!({"name": format!("c{i}"), "image": "x", "resources": {"requests": {"memory": m}}}))
                .collect(),
        )
    };
    let cases: Vec<(&str, Value, i64)> = vec![
        (
            "sum of containers",
            json!({"containers": containers(&["1Gi", "512Mi"])}),
            gi + 512 * mi,
        ),
        (
            "a larger init container wins",
            json!({"containers": containers(&["1Gi"]), "initContainers": containers(&["3Gi", "2Gi"])}),
            3 * gi,
        ),
        (
            "a smaller init container does not",
            json!({"containers": containers(&["1Gi", "1Gi"]), "initContainers": containers(&["1536Mi"])}),
            2 * gi,
        ),
        (
            "pod overhead is added",
            json!({"containers": containers(&["1Gi"]), "overhead": {"memory": "128Mi"}}),
            gi + 128 * mi,
        ),
        (
            "a sidecar (restartable init) adds to the containers and to later inits",
            json!({"containers": containers(&["1Gi"]),
                   "initContainers": [
                       {"name": "sidecar", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"memory": "256Mi"}}},
                       {"name": "migrate", "image": "x", "resources": {"requests": {"memory": "1Gi"}}}]}),
            gi + 256 * mi,
        ),
        (
            "a limit alone is the request (API defaulting)",
            json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"memory": "2Gi"}}}]}),
            2 * gi,
        ),
    ];
    for (name, spec, want) in cases {
        let mut spec = spec;
        spec["nodeName"] = json!("n1");
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"},
            "spec": spec, "status": {"phase": "Running"}});
        let view = view_of(vec![p], &Reservations::new());
        assert_eq!(view.node("n1").unwrap().memory_requested_bytes, want, "{name}");
    }
}

#[test]
fn memory_ratios_cover_schedulable_nodes_and_live_pods_only() {
    let items = vec![
        node("n1"),
        with(node("cordoned"), |v| v["spec"]["unschedulable"] = json!(true)),
        pod("a", "p1", Some("n1"), &[], "8Gi"),
        pod("a", "p2", Some("cordoned"), &[], "30Gi"),
        with(pod("a", "done", Some("n1"), &[], "16Gi"), |v| {
            v["status"]["phase"] = json!("Succeeded")
        }),
    ];
    let view = accounting::account(
        &state(items),
        &Settings::from(&Config::default()),
        &Reservations::new(),
    );
    assert_eq!(view.memory_request_ratio(), 0.25);
}
