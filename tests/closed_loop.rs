//! The closed loop under generated workloads, faults and restarts: the simulated world runs
//! headroom's own tick and actuator state machine, and checks the invariants as it goes —
//! never more VMs on their way than the fewest that clear the triggers, one removal per
//! window, no scale-up caused by headroom's own removal, no pod stranded or evicted without a
//! controller, no node pushed past its soft cap by the extender, every failure counted once.
//!
//! `PROPTEST_CASES` sets the number of cases (the test command runs the default below; the
//! long run is in BENCHMARKS.md).

mod support;

use std::time::Duration;

use headroom::{
    config::{AtMost, Config, Period, RatioBelow},
    simulate::{self, CreatePods, DeletePods, Event, Fault, FaultReason, Policy, Report, Scenario},
};
use proptest::prelude::*;
use support::*;

fn secs(s: u64) -> Period {
    Period(Duration::from_secs(s))
}

fn event(at: u64) -> Event {
    Event {
        at: secs(at),
        create_pods: None,
        delete_pods: None,
        lose_node: None,
        fault: None,
        restart: false,
        host_memory_free: None,
    }
}

/// One generated happening, before it gets its time.
#[derive(Debug, Clone)]
enum Happening {
    Create {
        count: u32,
        every: u64,
        memory_mi: u32,
        block_volumes: u32,
    },
    Delete {
        of: usize,
        claims: bool,
    },
    LoseNode(usize),
    Fault(FaultReason, u32),
    Restart,
    HostMemory(u32),
}

fn happening() -> impl Strategy<Value = Happening> {
    prop_oneof![
        4 => (1u32..40, prop_oneof![Just(0u64), Just(30), Just(60)], 64u32..4096, 0u32..3).prop_map(
            |(count, every, memory_mi, block_volumes)| Happening::Create {
                count,
                every,
                memory_mi,
                block_volumes
            }
        ),
        2 => (0usize..6, any::<bool>()).prop_map(|(of, claims)| Happening::Delete { of, claims }),
        1 => (0usize..6).prop_map(Happening::LoseNode),
        1 => (
            prop_oneof![
                Just(FaultReason::Transient),
                Just(FaultReason::Task),
                Just(FaultReason::Credentials)
            ],
            1u32..4
        )
            .prop_map(|(r, n)| Happening::Fault(r, n)),
        1 => Just(Happening::Restart),
        1 => (0u32..200).prop_map(Happening::HostMemory),
    ]
}

/// A generated case: a small cluster, a config and what happens to it.
#[derive(Debug, Clone)]
struct Case {
    counts: Vec<usize>,
    scale_down_for: u64,
    loose_scale_down: bool,
    boot: u64,
    csi_delay: u64,
    drain: u64,
    rebalance: bool,
    happenings: Vec<(u64, Happening)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0usize..=24, 2..=6),
        prop_oneof![Just(60u64), Just(600), Just(3600)],
        any::<bool>(),
        60u64..300,
        0u64..120,
        10u64..120,
        any::<bool>(),
        prop::collection::vec(((0u64..180).prop_map(|m| m * 60), happening()), 0..8),
    )
        .prop_map(
            |(counts, scale_down_for, loose_scale_down, boot, csi_delay, drain, rebalance, happenings)| {
                Case {
                    counts,
                    scale_down_for,
                    loose_scale_down,
                    boot,
                    csi_delay,
                    drain,
                    rebalance,
                    happenings,
                }
            },
        )
}

fn run(case: &Case) -> Report {
    let mut config = Config::default();
    config.scale_down.r#for = secs(case.scale_down_for);
    if case.loose_scale_down {
        config.scale_down.max_node_block_volumes = Some(AtMost { at_most: 24 });
        config.scale_down.memory_request_ratio = Some(RatioBelow { below: 0.9 });
        config.scale_down.memory_limit_ratio = Some(RatioBelow { below: 2.0 });
    }
    // Rebalancing with the defaults (start at 6, stop at 2, one move per 10 minutes).
    config.rebalance.enabled = case.rebalance;
    let nodes = case.counts.len();
    let mut events = Vec::new();
    for (i, (at, h)) in case.happenings.iter().enumerate() {
        let mut e = event(*at);
        match h {
            Happening::Create {
                count,
                every,
                memory_mi,
                block_volumes,
            } => {
                e.create_pods = Some(CreatePods {
                    count: *count,
                    prefix: format!("w{i}-"),
                    namespace: "gen".into(),
                    every: secs(*every),
                    memory: format!("{memory_mi}Mi"),
                    block_volumes: *block_volumes,
                    storage_class: "proxmox-lvm".into(),
                })
            }
            Happening::Delete { of, claims } => {
                e.delete_pods = Some(DeletePods {
                    prefix: format!("w{of}-"),
                    delete_claims: *claims,
                })
            }
            Happening::LoseNode(n) => e.lose_node = Some(format!("n{}", n % nodes + 1)),
            Happening::Fault(reason, times) => {
                e.fault = Some(Fault {
                    reason: *reason,
                    times: *times,
                })
            }
            Happening::Restart => e.restart = true,
            Happening::HostMemory(gi) => e.host_memory_free = Some(format!("{gi}Gi")),
        }
        events.push(e);
    }
    let scenario = Scenario {
        snapshot: None,
        config: None,
        duration: secs(4 * 3600),
        vm_boot_time: secs(case.boot),
        clone_time: secs(case.boot / 3),
        cold_spare_boot_time: secs(case.boot / 2),
        csi_registration_delay: secs(case.csi_delay),
        drain_time: secs(case.drain),
        host_memory_free: None,
        events,
    };
    simulate::run(
        &scenario,
        state(cluster(&case.counts)),
        &config,
        Policy::Proactive,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_invariants_hold_in_generated_workloads_with_faults_and_restarts(case in case()) {
        let report = run(&case);
        prop_assert!(report.violations.is_empty(), "{:?}\n{}", report.violations, report.to_table());
    }
}

/// The generator reaches what the invariants are about: over a fixed set of cases, some
/// scale up, some remove a node, some fail a provision, some restart and some move pods.
#[test]
fn generated_cases_exercise_scale_up_removal_failure_restart_and_moves() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut ups, mut downs, mut failures, mut restarts, mut moves) = (0, 0, 0, 0, 0);
    for _ in 0..24 {
        let case = case().new_tree(&mut runner).unwrap().current();
        let r = run(&case);
        ups += r.scale_ups;
        downs += r.scale_downs;
        failures += r.provision_failures;
        moves += r.moves;
        restarts += r
            .timeline
            .iter()
            .filter(|(_, what)| what == "headroom restarted")
            .count();
    }
    assert!(
        ups > 0 && downs > 0 && failures > 0 && restarts > 0 && moves > 0,
        "{ups} {downs} {failures} {restarts} {moves}"
    );
}
