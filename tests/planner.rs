//! The provisioning planner on real fixtures: scale up, wait for what is coming, scale down.

mod support;

use std::time::{Duration, Instant};

use headroom::{
    config::{Config, Period},
    decide::{
        accounting::{self, Reservations, Settings},
        placement::Placement,
        planner::{self, Plan, PlanInput, SCALE_DOWN_COOLDOWN},
        projection::{self, AdmittedDemand, History, Incoming, VmCapacity},
    },
};
use serde_json::{Value, json};
use support::*;

fn plan_for(items: Vec<Value>, config: &Config, incoming: i64, since_scale_up: Option<Duration>) -> Plan {
    plan(items, config, incoming, since_scale_up, None, Duration::ZERO)
}

/// Plans after the cluster has looked like `items` for `held`, the last node removed
/// `since_scale_down` ago.
fn plan_after(
    items: Vec<Value>,
    config: &Config,
    since_scale_down: Option<Duration>,
    held: Duration,
) -> Plan {
    plan(items, config, 0, None, since_scale_down, held)
}

fn plan(
    items: Vec<Value>,
    config: &Config,
    incoming: i64,
    since_scale_up: Option<Duration>,
    since_scale_down: Option<Duration>,
    held: Duration,
) -> Plan {
    let state = state(items);
    let view = accounting::account(&state, &Settings::from(config), &Reservations::new());
    let reservations = Reservations::new();
    let incoming = Incoming { vms: incoming };
    let p = projection::project(
        &view,
        AdmittedDemand::default(),
        incoming,
        VmCapacity::from_config(config),
    );
    let mut history = History::default();
    let start = Instant::now();
    projection::evaluate(&p, config, &mut history, start);
    let evaluation = projection::evaluate(&p, config, &mut history, start + held);
    planner::plan(&PlanInput {
        state: &state,
        view: &view,
        placement: Placement::new(&view, &reservations),
        config,
        evaluation: &evaluation,
        admitted: AdmittedDemand::default(),
        incoming,
        since_scale_up,
        since_scale_down,
    })
}

fn pending_claims(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| unbound_claim("apps", &format!("want-{i}"), Some("proxmox-lvm")))
        .collect()
}

#[test]
fn scale_up_adds_the_fewest_vms_and_counts_what_is_coming() {
    let config = Config::default();
    // Room: 2 + 1 = 3 slots; 30 pending claims + reserve 4 → 31 short → 2 VMs of 24.
    let items = [cluster(&[22, 23]), pending_claims(30)].concat();
    match plan_for(items.clone(), &config, 0, None) {
        Plan::ScaleUp { count, reason } => {
            assert_eq!(count, 2);
            assert!(reason.contains("free block slots"), "{reason}");
        }
        other => panic!("want a scale-up, got {other:?}"),
    }
    assert_eq!(
        plan_for(items.clone(), &config, 1, None),
        Plan::ScaleUp {
            count: 1,
            reason: plan_reason(&items, &config, 1)
        }
    );
    assert_eq!(
        plan_for(items.clone(), &config, 2, None),
        Plan::Nothing,
        "two on their way cover it"
    );
    let mut small = config.clone();
    small.proxmox = Some(
        serde_saphyr::from_str(
            "url: https://pve:8006\nhosts: [{name: pve, template: 2000, storage: local-lvm}]\nmaxNodes: 2",
        )
        .unwrap(),
    );
    assert_eq!(plan_for(items, &small, 0, None), Plan::Nothing, "at maxNodes");
}

fn plan_reason(items: &[Value], config: &Config, incoming: i64) -> String {
    match plan_for(items.to_vec(), config, incoming, None) {
        Plan::ScaleUp { reason, .. } => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pending_pod_no_node_can_take_adds_one_vm_unless_one_is_coming() {
    let config = Config::default();
    let mut items = cluster(&[2, 2]);
    items.push(pod("apps", "huge", None, &[], "40Gi"));
    match plan_for(items.clone(), &config, 0, None) {
        Plan::ScaleUp { count: 1, reason } => assert!(reason.contains("1 pending pod"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan_for(items.clone(), &config, 1, None), Plan::Nothing);
    // A pending pod that fits somewhere is the scheduler's business, not ours.
    items.pop();
    items.push(pod("apps", "small", None, &[], "1Gi"));
    assert_eq!(plan_for(items, &config, 0, None), Plan::Nothing);
}

#[test]
fn scale_down_needs_the_conditions_the_cooldown_and_a_removal_simulation() {
    let mut config = Config::default();
    config.scale_down.r#for = Period(Duration::ZERO);
    // Three quiet nodes; n1 lightest.
    let items = cluster(&[2, 5, 6]);
    match plan_for(items.clone(), &config, 0, None) {
        Plan::ScaleDown { node, reason } => {
            assert_eq!(node, "n1");
            assert!(reason.contains("absorb"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan_for(items.clone(), &config, 0, Some(Duration::from_secs(60))),
        Plan::Nothing,
        "cool-down"
    );
    assert!(matches!(
        plan_for(items.clone(), &config, 0, Some(SCALE_DOWN_COOLDOWN)),
        Plan::ScaleDown { .. }
    ));
    assert_eq!(
        plan_for(items.clone(), &Config::default(), 0, None),
        Plan::Nothing,
        "720h not yet held"
    );
    // One removal per `for:` window: the next waits until the window has passed again.
    let mut hourly = Config::default();
    hourly.scale_down.r#for = Period(Duration::from_secs(3600));
    let two_hours = Duration::from_secs(7200);
    let quiet = |since_down| plan_after(items.clone(), &hourly, since_down, two_hours);
    assert!(matches!(quiet(None), Plan::ScaleDown { .. }));
    assert_eq!(
        quiet(Some(Duration::from_secs(60))),
        Plan::Nothing,
        "a node was removed a minute ago"
    );
    assert!(matches!(
        quiet(Some(Duration::from_secs(3600))),
        Plan::ScaleDown { .. }
    ));

    // Memory the others cannot absorb: each node has a 20 GiB pod, 32 GiB allocatable.
    let mut heavy = cluster(&[1, 1]);
    heavy.push(pod("apps", "big-1", Some("n1"), &[], "12Gi"));
    heavy.push(pod("apps", "big-2", Some("n2"), &[], "12Gi"));
    heavy.push(pod("apps", "big-3", Some("n1"), &[], "9Gi"));
    heavy.push(pod("apps", "big-4", Some("n2"), &[], "9Gi"));
    let mut loose = config.clone();
    loose.scale_down.memory_request_ratio = None;
    loose.scale_down.memory_limit_ratio = None;
    assert_eq!(
        plan_for(heavy, &loose, 0, None),
        Plan::Nothing,
        "n2 cannot take n1's 21 GiB"
    );

    // A GPU node is never the one removed.
    let mut gpu = cluster(&[0, 5]);
    gpu[2] = with(gpu[2].clone(), |v| {
        v["status"]["allocatable"]["nvidia.com/gpu"] = json!("1")
    });
    match plan_for(gpu, &config, 0, None) {
        Plan::ScaleDown { node, .. } => assert_eq!(node, "n2"),
        other => panic!("{other:?}"),
    }
}
