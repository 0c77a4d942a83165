//! The planning tick on real fixtures: scale up by the fewest VMs and count what is coming,
//! never clone for a pod no VM holds, remove one node at a time and only when the smaller
//! cluster stays calm and every pod can move.

mod support;

use std::time::Duration;

use headroom::{
    config::{Config, Period},
    decide::{
        accounting::{self, Reservations, Settings},
        actuation::{ActuatorStatus, DemandLevel, Intent, Phase},
        planner::{self, Plan, SCALE_DOWN_COOLDOWN},
        projection::{AdmittedDemand, VmCapacity, Windows},
        tick::{self, Tick, TickInput},
        time::Timestamp,
    },
};
use serde_json::{Value, json};
use support::*;

const T0: Timestamp = Timestamp(1_780_000_000_000);

/// What the actuator has done, as it would publish it.
#[derive(Default, Clone)]
struct Actuator {
    /// VMs in flight: (queued?, how many).
    in_flight: i64,
    queued: i64,
    since_scale_up: Option<Duration>,
    since_scale_down: Option<Duration>,
    /// The demand the last removal was decided on.
    demand_at_scale_down: Option<DemandLevel>,
}

impl Actuator {
    fn status(&self, config: &Config, now: Timestamp) -> ActuatorStatus {
        let intent = |phase| Intent {
            vm: None,
            phase,
            capacity: VmCapacity::from_config(config),
            reason: "test".into(),
            since: now,
        };
        let ago = |d: Duration| Timestamp(now.0 - d.as_millis() as u64);
        ActuatorStatus {
            intents: (0..self.in_flight)
                .map(|i| {
                    intent(if i < self.queued {
                        Phase::Queued
                    } else {
                        Phase::Joining
                    })
                })
                .collect(),
            last_scale_up: self.since_scale_up.map(ago),
            last_scale_down: self.since_scale_down.map(ago),
            demand_at_scale_down: self.demand_at_scale_down,
            ..Default::default()
        }
    }
}

/// The tick after the cluster has looked like `items` for `held` (the conditions' windows
/// started `held` ago).
fn tick_after(items: Vec<Value>, config: &Config, actuator: &Actuator, held: Duration) -> Tick {
    let state = state(items);
    let view = accounting::account(&state, &Settings::from(config), &Reservations::new());
    let mut windows = Windows::default();
    let now = T0.plus(held);
    let status = actuator.status(config, now);
    let input = TickInput {
        state: &state,
        view: &view,
        reservations: &Reservations::new(),
        config,
        admitted: AdmittedDemand::default(),
        actuator: &status,
    };
    tick::tick(&input, &mut windows, T0);
    tick::tick(&input, &mut windows, now)
}

fn plan(items: Vec<Value>, config: &Config, actuator: &Actuator) -> Plan {
    tick_after(items, config, actuator, Duration::ZERO).plan
}

fn in_flight(n: i64) -> Actuator {
    Actuator {
        in_flight: n,
        ..Default::default()
    }
}

fn pending_claims(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| unbound_claim("apps", &format!("want-{i}"), Some("proxmox-lvm")))
        .collect()
}

fn max_nodes(config: &Config, n: u32) -> Config {
    let mut c = config.clone();
    c.proxmox = Some(
        serde_saphyr::from_str(&format!(
            "url: https://pve:8006\nhosts: [{{name: pve, template: 2000, storage: local-lvm}}]\nmaxNodes: {n}"
        ))
        .unwrap(),
    );
    c
}

#[test]
fn scale_up_adds_the_fewest_vms_and_counts_every_vm_in_flight() {
    let config = Config::default();
    // Room: 2 + 1 = 3 slots; 30 pending claims + reserve 4 → 31 short → 2 VMs of 24.
    let items = [cluster(&[22, 23]), pending_claims(30)].concat();
    // (case, actuator, config, plan)
    let rows: Vec<(&str, Actuator, Config, Option<i64>)> = vec![
        (
            "nothing coming: two",
            Actuator::default(),
            config.clone(),
            Some(2),
        ),
        ("one coming: one more", in_flight(1), config.clone(), Some(1)),
        (
            "two coming (a plan for two counts both)",
            in_flight(2),
            config.clone(),
            None,
        ),
        ("at maxNodes", Actuator::default(), max_nodes(&config, 2), None),
        (
            "one under maxNodes: one",
            Actuator::default(),
            max_nodes(&config, 3),
            Some(1),
        ),
    ];
    for (case, actuator, config, want) in rows {
        match (plan(items.clone(), &config, &actuator), want) {
            (Plan::ScaleUp { count, reason }, Some(n)) => {
                assert_eq!(count, n, "{case}");
                assert!(reason.contains("free block slots"), "{case}: {reason}");
            }
            (Plan::Nothing, None) => {}
            (other, _) => panic!("{case}: want {want:?} VMs, got {other:?}"),
        }
    }
}

#[test]
fn queued_vms_demand_no_longer_needs_are_dropped() {
    let config = Config::default();
    // The claims went away while two VMs were queued behind one already booting.
    let actuator = Actuator {
        in_flight: 3,
        queued: 2,
        ..Default::default()
    };
    match plan(cluster(&[10, 10]), &config, &actuator) {
        Plan::Cancel { count, .. } => assert_eq!(count, 2, "the booting one stays"),
        other => panic!("{other:?}"),
    }
    // Still needed: nothing is dropped.
    let items = [cluster(&[22, 23]), pending_claims(30)].concat();
    let two_queued = Actuator {
        in_flight: 2,
        queued: 2,
        ..Default::default()
    };
    assert_eq!(plan(items, &config, &two_queued), Plan::Nothing);
}

#[test]
fn pending_pods_are_packed_into_vms_and_an_oversized_pod_never_clones() {
    let config = Config::default(); // VM shape: 32 GiB, 8 cores, 24 slots
    let mut items = cluster(&[2, 2]);
    // 7 GiB left on each node.
    items.push(pod("apps", "filler-1", Some("n1"), &[], "25Gi"));
    items.push(pod("apps", "filler-2", Some("n2"), &[], "25Gi"));
    items.push(pod("apps", "big-1", None, &[], "20Gi"));
    items.push(pod("apps", "big-2", None, &[], "20Gi"));
    items.push(pod("apps", "big-3", None, &[], "10Gi"));
    let t = tick_after(items.clone(), &config, &Actuator::default(), Duration::ZERO);
    match &t.plan {
        // 20 + 10 in one VM, 20 in another.
        Plan::ScaleUp { count, reason } => {
            assert_eq!(*count, 2, "{reason}");
            assert!(reason.contains("3 pending pod"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan(items.clone(), &config, &in_flight(2)), Plan::Nothing);
    assert!(matches!(
        plan(items.clone(), &config, &in_flight(1)),
        Plan::ScaleUp { count: 1, .. }
    ));

    // More memory than any worker VM has: never a clone, named in the sizing.
    let mut huge = cluster(&[2, 2]);
    huge.push(pod("apps", "huge", None, &[], "40Gi"));
    let t = tick_after(huge, &config, &Actuator::default(), Duration::ZERO);
    assert_eq!(t.plan, Plan::Nothing);
    assert_eq!(t.sizing.oversized_pods.len(), 1);
    assert_eq!(t.sizing.oversized_pods[0].name, "huge");
    assert!(
        t.sizing.oversized_pods[0].reason.contains("40960 MiB"),
        "{:?}",
        t.sizing
    );

    // A pending pod that fits somewhere is the scheduler's business, not ours.
    let mut small = cluster(&[2, 2]);
    small.push(pod("apps", "small", None, &[], "1Gi"));
    assert_eq!(plan(small, &config, &Actuator::default()), Plan::Nothing);
}

fn quick_scale_down() -> Config {
    let mut config = Config::default();
    config.scale_down.r#for = Period(Duration::ZERO);
    config
}

#[test]
fn scale_down_needs_the_conditions_the_cooldowns_and_one_removal_per_window() {
    let config = quick_scale_down();
    // Three quiet nodes; n1 lightest.
    let items = cluster(&[2, 5, 6]);
    match plan(items.clone(), &config, &Actuator::default()) {
        Plan::ScaleDown { node, reason, .. } => {
            assert_eq!(node, "n1");
            assert!(reason.contains("absorb"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let after_up = |d| Actuator {
        since_scale_up: Some(d),
        ..Default::default()
    };
    assert_eq!(
        plan(items.clone(), &config, &after_up(Duration::from_secs(60))),
        Plan::Nothing,
        "cool-down after a scale-up"
    );
    assert!(matches!(
        plan(items.clone(), &config, &after_up(SCALE_DOWN_COOLDOWN)),
        Plan::ScaleDown { .. }
    ));
    assert_eq!(
        plan(items.clone(), &Config::default(), &Actuator::default()),
        Plan::Nothing,
        "720h not yet held"
    );
    assert_eq!(
        plan(items.clone(), &config, &in_flight(1)),
        Plan::Nothing,
        "never while a VM is on its way"
    );

    // One removal per `for:` window, counted on the smaller cluster from the removal.
    let mut hourly = Config::default();
    hourly.scale_down.r#for = Period(Duration::from_secs(3600));
    let two_hours = Duration::from_secs(7200);
    let after_down = |d: Option<u64>| Actuator {
        since_scale_down: d.map(Duration::from_secs),
        ..Default::default()
    };
    let quiet = |d| tick_after(items.clone(), &hourly, &after_down(d), two_hours).plan;
    assert!(matches!(quiet(None), Plan::ScaleDown { .. }));
    assert_eq!(quiet(Some(60)), Plan::Nothing, "a node was removed a minute ago");
    assert_eq!(quiet(Some(3599)), Plan::Nothing);
    assert!(matches!(quiet(Some(3600)), Plan::ScaleDown { .. }));
}

#[test]
fn a_removal_is_refused_when_the_smaller_cluster_would_not_stay_calm() {
    let config = quick_scale_down();
    let mut heavy = cluster(&[1, 1]);
    heavy.push(pod("apps", "big-1", Some("n1"), &[], "12Gi"));
    heavy.push(pod("apps", "big-2", Some("n2"), &[], "12Gi"));
    heavy.push(pod("apps", "big-3", Some("n1"), &[], "9Gi"));
    heavy.push(pod("apps", "big-4", Some("n2"), &[], "9Gi"));
    let mut loose = config.clone();
    loose.scale_down.memory_request_ratio = None;
    loose.scale_down.memory_limit_ratio = None;

    let mut gpu = cluster(&[0, 5]);
    gpu[2] = with(gpu[2].clone(), |v| {
        v["status"]["allocatable"]["nvidia.com/gpu"] = json!("1")
    });

    // n1 holds no controller-less pod in the base case; one without an owner stays put.
    let mut orphan = cluster(&[2, 5, 6]);
    orphan.push(with(pod("apps", "by-hand", Some("n1"), &[], "64Mi"), |p| {
        p["metadata"].as_object_mut().unwrap().remove("ownerReferences");
    }));

    // A local-path volume pinned to n1.
    let mut pinned = cluster(&[2, 5, 6]);
    pinned.push(storage_class("local-path", "rancher.io/local-path", false));
    pinned.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache", "namespace": "apps"},
        "spec": {"storageClassName": "local-path", "volumeName": "pv-cache"}}));
    pinned.push(
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-cache"},
        "spec": {"hostPath": {"path": "/opt/local-path/cache"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}),
    );
    pinned.push(pod("apps", "cache-user", Some("n1"), &["cache"], "64Mi"));

    // Two nodes at 12: removing one leaves 24/24 on the other and freeBlockSlots fires.
    let tight = cluster(&[12, 12]);
    let mut no_scale_down_memory = config.clone();
    no_scale_down_memory.scale_down.max_node_block_volumes = None;

    type Row = (
        &'static str,
        Vec<Value>,
        Config,
        Result<&'static str, &'static str>,
    );
    // (case, items, config, the node removed or words of the refusal)
    let rows: Vec<Row> = vec![
        (
            "memory the others cannot absorb",
            heavy,
            loose,
            Err("cannot take"),
        ),
        ("a GPU node is never removed", gpu, config.clone(), Ok("n2")),
        ("a pod with no controller", orphan, config.clone(), Ok("n2")),
        ("a volume pinned to the node", pinned, config.clone(), Ok("n2")),
        (
            "the smaller cluster would fire a trigger",
            tight,
            no_scale_down_memory,
            Err("would fire"),
        ),
    ];
    for (case, items, config, want) in rows {
        let t = tick_after(items, &config, &Actuator::default(), Duration::ZERO);
        match (&t.plan, want) {
            (Plan::ScaleDown { node, .. }, Ok(n)) => assert_eq!(node, n, "{case}"),
            (Plan::Nothing, Err(words)) => assert!(
                t.scale_down_refusals.iter().any(|r| r.contains(words)),
                "{case}: {:?}",
                t.scale_down_refusals
            ),
            (plan, _) => panic!("{case}: {plan:?}, refusals {:?}", t.scale_down_refusals),
        }
    }
}

/// The demand of `items`, as a removal decided on them would record it.
fn demand_of(items: Vec<Value>, config: &Config) -> DemandLevel {
    let view = accounting::account(&state(items), &Settings::from(config), &Reservations::new());
    planner::demand_level(&view, AdmittedDemand::default())
}

#[test]
fn within_a_window_of_a_removal_only_demand_beyond_it_scales_up() {
    let mut config = Config::default();
    config.scale_down.r#for = Period(Duration::from_secs(3600));
    // The removal was decided on three nodes at 22, 23 and 0 (room enough then); the third
    // went, and the same demand now leaves 3 slots: freeBlockSlots fires.
    let at_removal = demand_of(cluster(&[22, 23]), &config);
    let removed = |secs| Actuator {
        since_scale_down: Some(Duration::from_secs(secs)),
        demand_at_scale_down: Some(at_removal),
        ..Default::default()
    };
    let same_demand = cluster(&[22, 23]);
    assert_eq!(
        plan(same_demand.clone(), &config, &removed(60)),
        Plan::Nothing,
        "the removal's own consequence is not a reason to scale up"
    );
    assert!(
        matches!(
            plan(same_demand, &config, &removed(3600)),
            Plan::ScaleUp { count: 1, .. }
        ),
        "after the window it is ordinary demand"
    );
    // New claims: demand beyond the removal's, which scales up at once.
    let more = [cluster(&[22, 23]), pending_claims(2)].concat();
    assert!(matches!(
        plan(more, &config, &removed(60)),
        Plan::ScaleUp { count: 1, .. }
    ));
    // Pods that fit nowhere always get capacity, whatever the window.
    let mut stranded = cluster(&[22, 23]);
    stranded.push(pod("apps", "filler-1", Some("n1"), &[], "31Gi"));
    stranded.push(pod("apps", "filler-2", Some("n2"), &[], "31Gi"));
    stranded.push(pod("apps", "evicted", None, &[], "2Gi"));
    let baseline = demand_of(stranded.clone(), &config);
    let actuator = Actuator {
        demand_at_scale_down: Some(baseline),
        ..removed(60)
    };
    assert!(matches!(
        plan(stranded, &config, &actuator),
        Plan::ScaleUp { count: 1, .. }
    ));
}

#[test]
fn a_node_whose_csi_has_not_registered_offers_no_block_room() {
    let config = Config::default();
    let mut items = cluster(&[22, 23]);
    // A third node joined; its CSINode lists the driver without a count yet.
    items.push(node("n3"));
    items.push(csinode("n3", None));
    let t = tick_after(items, &config, &Actuator::default(), Duration::ZERO);
    assert_eq!(t.projection.room, 3, "n3's 24 slots do not count yet");
    assert!(matches!(t.plan, Plan::ScaleUp { count: 1, .. }), "{:?}", t.plan);
}

#[test]
fn singletons_are_named_before_a_removal_or_refuse_it() {
    let replica = |name: &str, node: &str| {
        with(pod("apps", name, Some(node), &[], "64Mi"), |p| {
            p["metadata"]["ownerReferences"][0]["uid"] = json!("uid-web")
        })
    };
    let mut refuse = quick_scale_down();
    refuse.scale_down.singletons = headroom::config::Singletons::Refuse;
    // n1 runs web-a; web-b, its replica, runs on n2.
    let two = [
        cluster(&[0, 5, 6]),
        vec![replica("web-a", "n1"), replica("web-b", "n2")],
    ]
    .concat();
    // Only web-a: its controller runs nothing else.
    let one = [cluster(&[0, 5, 6]), vec![replica("web-a", "n1")]].concat();

    match plan(two, &refuse, &Actuator::default()) {
        Plan::ScaleDown { node, singletons, .. } => {
            assert_eq!(node, "n1");
            assert!(singletons.is_empty(), "{singletons:?}");
        }
        other => panic!("{other:?}"),
    }
    match plan(one.clone(), &quick_scale_down(), &Actuator::default()) {
        Plan::ScaleDown { node, singletons, .. } => {
            assert_eq!(node, "n1");
            assert_eq!(singletons, ["apps/web-a"], "allow (the default): named");
        }
        other => panic!("{other:?}"),
    }
    // Refuse: n1 goes no more, nor n2 and n3, whose fixture pods each run alone.
    let t = tick_after(one, &refuse, &Actuator::default(), Duration::ZERO);
    assert_eq!(t.plan, Plan::Nothing);
    assert!(
        t.scale_down_refusals[0].contains("runs singletons (scaleDown.singletons: refuse): apps/web-a"),
        "{:?}",
        t.scale_down_refusals
    );
}

/// `status`'s drain survey: per node, what a drain would break (no controller, a pinned
/// volume) or hurt (a singleton's downtime, a GPU node's work); nodes with none are absent.
#[test]
fn the_drain_survey_names_what_a_drain_would_break_or_hurt() {
    let replica = |name: &str, node: &str| {
        with(pod("apps", name, Some(node), &[], "64Mi"), |p| {
            p["metadata"]["ownerReferences"][0]["uid"] = json!("uid-web");
            p["metadata"]["labels"] = json!({"app": "web", "pod-template-hash": "5d9"});
        })
    };
    let budget = |ns: &str, name: &str, selector: Value, allowed: Option<i64>| {
        let mut b = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns}, "spec": {"minAvailable": 1, "selector": selector}});
        if let Some(n) = allowed {
            b["status"] = json!({"disruptionsAllowed": n, "currentHealthy": 2, "desiredHealthy": 1,
                "expectedPods": 2, "observedGeneration": 1});
        }
        b
    };
    let mut items = vec![
        with(node("n1"), |n| {
            n["status"]["allocatable"]["nvidia.com/gpu"] = json!("1")
        }),
        node("n2"),
        node("n3"),
        storage_class("local-path", "rancher.io/local-path", false),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "cache", "namespace": "apps"},
            "spec": {"storageClassName": "local-path", "volumeName": "pv-cache"}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-cache"},
            "spec": {"hostPath": {"path": "/opt/local-path/cache"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
        // Two replicas of one controller: nobody's blocker.
        replica("web-0", "n2"),
        replica("web-1", "n3"),
        with(pod("apps", "db-0", Some("n2"), &[], "64Mi"), |p| {
            p["metadata"]["labels"] = json!({"app": "db"})
        }),
        with(pod("apps", "cache-user", Some("n2"), &["cache"], "64Mi"), |p| {
            p["metadata"]["labels"] = json!({"app": "cache", "tier": "cache"})
        }),
        // Budgets: web's allows no disruption, db's allows one, tier's has no status yet (the
        // Eviction API refuses until it has), and one in another namespace selects everything.
        budget("apps", "web", json!({"matchLabels": {"app": "web"}}), Some(0)),
        budget(
            "apps",
            "db",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "x"]}]}),
            Some(1),
        ),
        budget(
            "apps",
            "tier",
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"},
                                        {"key": "app", "operator": "NotIn", "values": ["web"]}]}),
            None,
        ),
        budget("other", "all", json!({}), Some(0)),
        with(pod("apps", "by-hand", Some("n2"), &[], "64Mi"), |p| {
            p["metadata"].as_object_mut().unwrap().remove("ownerReferences");
        }),
    ];
    for n in ["n1", "n2", "n3"] {
        items.push(csinode(n, Some(28)));
    }
    let state = support::state(items);
    let view = accounting::account(&state, &Settings::from(&Config::default()), &Reservations::new());
    let blockers = planner::drain_blockers(&state, &view);
    assert_eq!(
        blockers.keys().collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "{blockers:#?}"
    );
    assert_eq!(blockers["n1"].gpus, 1);
    assert!(blockers["n1"].cannot_move.is_empty() && blockers["n1"].singletons.is_empty());
    let n2 = &blockers["n2"];
    assert_eq!(n2.gpus, 0);
    assert_eq!(n2.cannot_move.len(), 2, "{n2:#?}");
    assert!(n2.cannot_move[0].starts_with("pod apps/by-hand has no controller"));
    assert!(
        n2.cannot_move[1].starts_with("pod apps/cache-user uses claim cache, whose volume is pinned to n2")
    );
    // web-0 has a replica on n3: no singleton.
    assert_eq!(n2.singletons, ["apps/cache-user", "apps/db-0"]);
    assert_eq!(
        n2.budgets,
        [
            "apps/cache-user (PodDisruptionBudget tier allows no disruption)",
            "apps/web-0 (PodDisruptionBudget web allows no disruption)"
        ]
    );
    assert_eq!(
        blockers["n3"].budgets,
        ["apps/web-1 (PodDisruptionBudget web allows no disruption)"]
    );
    assert!(blockers["n3"].cannot_move.is_empty() && blockers["n3"].singletons.is_empty());
}

/// A pod stuck on n1 because its volume found no LUN there, as the cluster shows it: the
/// attach-detach controller's Warning Event and the VolumeAttachment's attach error.
fn lun_cap_incident() -> Vec<Value> {
    let message = "AttachVolume.Attach failed for volume \"pv-db-data\" : rpc error: code = Internal desc = no free lun found";
    let mut items = bound_claim("apps", "db-data", "proxmox-lvm");
    items.push(with(attachment("va-db", BLOCK, "n1", "pv-db-data", false), |v| {
        v["status"]["attachError"] = json!({"message": message, "time": "2026-05-28T20:00:00Z"})
    }));
    items.push(with(pod("apps", "db-0", Some("n1"), &["db-data"], "1Gi"), |v| {
        v["status"]["phase"] = json!("Pending")
    }));
    items.push(json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "db-0.18a2f3c4d5e6f7a8", "namespace": "apps"},
        "involvedObject": {"kind": "Pod", "namespace": "apps", "name": "db-0", "uid": "0b6d2d43"},
        "reason": "FailedAttachVolume", "message": message, "type": "Warning",
        "source": {"component": "attachdetach-controller"},
        "firstTimestamp": "2026-05-28T19:58:00Z", "lastTimestamp": "2026-05-28T20:00:00Z", "count": 3}));
    items
}

#[test]
fn a_no_free_lun_event_moves_the_stuck_pod_or_adds_one_vm_when_nothing_has_room() {
    // Only the incident trigger: the projection's triggers would scale up on a full cluster
    // by themselves.
    let mut config = Config::default();
    config.triggers.free_block_slots = None;
    config.triggers.planned_block_volumes = None;
    // (case, n2's block volumes, plan)
    let rows: Vec<(&str, usize, &str)> = vec![
        ("n2 has room: the pod moves there", 3, "move"),
        ("n2 at its soft cap: one VM", 24, "scaleUp"),
    ];
    for (case, n2, want) in rows {
        let items = [cluster(&[23, n2]), lun_cap_incident()].concat();
        let t = tick_after(items, &config, &Actuator::default(), Duration::ZERO);
        let lun = t
            .evaluation
            .triggers
            .iter()
            .find(|c| c.name == "lunCapIncidents")
            .unwrap();
        assert!(lun.firing && lun.sustained, "{case}: {}", lun.reason);
        assert!(
            lun.reason.contains("3 LUN-cap incident(s)"),
            "{case}: {}",
            lun.reason
        );
        match (&t.plan, want) {
            (Plan::Move(m), "move") => {
                assert_eq!(
                    (m.name.as_str(), m.from.as_str(), m.toward.as_str()),
                    ("db-0", "n1", "n2")
                );
                assert_eq!(m.cause.as_str(), "lun-cap-incident");
            }
            (Plan::ScaleUp { count, reason }, "scaleUp") => {
                assert_eq!(*count, 1, "{case}");
                assert!(
                    reason.contains("no other node has room for apps/db-0"),
                    "{case}: {reason}"
                );
            }
            (other, _) => panic!("{case}: {other:?}"),
        }
        // With the VM on its way, nothing more.
        let t = tick_after(
            [cluster(&[23, n2]), lun_cap_incident()].concat(),
            &config,
            &in_flight(1),
            Duration::ZERO,
        );
        if want == "scaleUp" {
            assert_eq!(t.plan, Plan::Nothing, "{case}: one VM, not two");
        }
    }
}
