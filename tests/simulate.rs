//! `headroom simulate`: the example scenarios, proactive against reactive. Every proactive run
//! is checked against the closed loop's invariants (the report's `violations` stay empty).

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_headroom");
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scenarios");

fn simulate(scenario: &str, policy: &str) -> Value {
    let out = std::process::Command::new(BIN)
        .args([
            "simulate",
            "--scenario",
            &format!("{SCENARIOS}/{scenario}"),
            "--policy",
            policy,
            "--output",
            "json",
        ])
        .env_remove("HEADROOM_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    if policy == "proactive" {
        assert!(
            report.get("violations").is_none(),
            "{scenario}: {}",
            report["violations"]
        );
    }
    report
}

#[test]
fn the_incident_leaves_no_pod_waiting_with_headroom_and_sticks_pods_without() {
    let proactive = simulate("incident-2026-05-26.yaml", "proactive");
    let reactive = simulate("incident-2026-05-26.yaml", "reactive");
    assert_eq!(proactive["pendingPodSeconds"], 0, "{proactive}");
    assert_eq!(proactive["stuckPods"], 0);
    assert!(
        proactive["maxNodeBlockVolumes"].as_i64().unwrap() <= 24,
        "{proactive}"
    );
    assert!(proactive["spread"].as_i64().unwrap() <= 2, "{proactive}");
    // kproximate: the default scheduler piles claims on the memory-emptiest node until attaches
    // fail; stuck ContainerCreating pods are not Pending, so it never adds a VM.
    assert!(reactive["pendingPodSeconds"].as_u64().unwrap() > 0, "{reactive}");
    assert!(reactive["stuckPods"].as_u64().unwrap() > 0, "{reactive}");
    assert!(
        reactive["maxNodeBlockVolumes"].as_i64().unwrap() >= 25,
        "{reactive}"
    );
    assert_eq!(reactive["scaleUps"], 0);
}

#[test]
fn steady_growth_scales_up_ahead_of_demand() {
    let proactive = simulate("steady-growth.yaml", "proactive");
    let reactive = simulate("steady-growth.yaml", "reactive");
    assert!(proactive["scaleUps"].as_u64().unwrap() >= 1, "{proactive}");
    assert_eq!(proactive["stuckPods"], 0, "{proactive}");
    assert!(
        proactive["maxNodeBlockVolumes"].as_i64().unwrap() <= 24,
        "{proactive}"
    );
    let (p, r) = (
        proactive["pendingPodSeconds"].as_u64().unwrap(),
        reactive["pendingPodSeconds"].as_u64().unwrap(),
    );
    assert!(p < r, "proactive {p} pod-seconds waiting, reactive {r}");
}

#[test]
fn a_bad_scenario_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "events:\n  - at: soon\n    loseNode: k8s-node1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["simulate", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("bad.yaml") && err.contains("events[0].at"),
        "{err}"
    );
}

#[test]
fn a_parallel_burst_is_spread_at_once_under_the_soft_cap() {
    let proactive = simulate("burst-parallel-statefulset.yaml", "proactive");
    let reactive = simulate("burst-parallel-statefulset.yaml", "reactive");
    assert_eq!(proactive["pendingPodSeconds"], 0, "{proactive}");
    assert_eq!(proactive["stuckPods"], 0);
    assert!(
        proactive["maxNodeBlockVolumes"].as_i64().unwrap() <= 24,
        "{proactive}"
    );
    assert!(reactive["stuckPods"].as_u64().unwrap() > 0, "{reactive}");
}

/// Timeline entries (seconds, text) that contain `what`.
fn at(report: &Value, what: &str) -> Vec<u64> {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e[1].as_str().unwrap().contains(what))
        .map(|e| e[0].as_u64().unwrap())
        .collect()
}

#[test]
fn a_quiet_month_ends_in_one_cold_spare_that_the_next_demand_starts() {
    let proactive = simulate("quiet-month.yaml", "proactive");
    // Retired at 1h; the conditions must then hold for the whole 720h before one node goes.
    assert_eq!(proactive["scaleDowns"], 1, "{proactive}");
    let down = at(&proactive, "scale-down: draining");
    assert_eq!(down.len(), 1);
    assert!(down[0] >= 3600 + 720 * 3600, "scale-down at {}s", down[0]);
    assert!(down[0] < 3600 + 720 * 3600 + 3600, "scale-down at {}s", down[0]);
    assert_eq!(at(&proactive, "VM kept as a cold spare").len(), 1);
    // The new project starts the spare instead of cloning; nothing gets stuck or waits beyond
    // the drain's evictions being placed again.
    assert_eq!(at(&proactive, "cold spare started").len(), 1, "{proactive}");
    assert_eq!(at(&proactive, "cloned").len(), 0, "{proactive}");
    assert_eq!(proactive["stuckPods"], 0);
    assert!(
        proactive["pendingPodSeconds"].as_u64().unwrap() < 60,
        "{proactive}"
    );
    assert!(
        proactive["maxNodeBlockVolumes"].as_i64().unwrap() <= 24,
        "{proactive}"
    );

    // kproximate removes only nodes it made (none here) and never sees stuck pods as Pending.
    let reactive = simulate("quiet-month.yaml", "reactive");
    assert_eq!(reactive["scaleDowns"], 0, "{reactive}");
    assert_eq!(reactive["scaleUps"], 0, "{reactive}");
    assert!(reactive["stuckPods"].as_u64().unwrap() > 0, "{reactive}");
}

#[test]
fn kproximate_removes_the_node_it_just_made_when_block_volumes_were_the_shortage() {
    // Its scale-down test weighs CPU and memory only: the node added for pods that no node's
    // attach limit could take is drained at the next poll after it joins, and the pods wait again.
    let reactive = simulate("steady-growth.yaml", "reactive");
    let ups = at(&reactive, "scale-up:");
    let downs = at(&reactive, "scale-down:");
    assert!(downs.len() >= 2, "{reactive}");
    assert!(ups.len() > downs.len(), "{reactive}");
    let joined = at(&reactive, "Ready");
    assert!(
        downs.iter().all(|d| joined.iter().any(|j| d - j <= 10 && d >= j)),
        "each removal within a poll of a join: {reactive}"
    );
    let proactive = simulate("steady-growth.yaml", "proactive");
    assert_eq!(proactive["scaleDowns"], 0, "{proactive}");
}

#[test]
fn a_lost_node_s_pods_are_spread_over_the_rest() {
    let proactive = simulate("lost-node.yaml", "proactive");
    let reactive = simulate("lost-node.yaml", "reactive");
    assert_eq!(
        at(&proactive, "lost node k8s-node6; 24 pods").len(),
        1,
        "{proactive}"
    );
    assert_eq!(proactive["nodes"], 5);
    assert_eq!(proactive["stuckPods"], 0);
    assert!(proactive["spread"].as_i64().unwrap() <= 2, "{proactive}");
    // The default scheduler sends them where memory is free: node5 takes most.
    assert!(
        proactive["maxNodeBlockVolumes"].as_i64().unwrap()
            < reactive["maxNodeBlockVolumes"].as_i64().unwrap(),
        "{proactive} {reactive}"
    );
}

#[test]
fn need_two_vms_clones_exactly_two() {
    let r = simulate("need-two-vms.yaml", "proactive");
    assert_eq!(r["scaleUps"], 2, "{r}");
    assert_eq!(at(&r, "cloned").len(), 2, "{r}");
    assert_eq!(r["stuckPods"], 0);
    assert!(r["maxNodeBlockVolumes"].as_i64().unwrap() <= 24, "{r}");
}

#[test]
fn a_short_window_removes_one_node_per_window_and_stops_while_the_cluster_is_calm() {
    let r = simulate("cascade.yaml", "proactive");
    let downs = at(&r, "scale-down: draining");
    assert!(!downs.is_empty(), "{r}");
    for pair in downs.windows(2) {
        // One removal per 20 s window, the drain's 30 s included.
        assert!(pair[1] - pair[0] >= 50, "{downs:?}");
    }
    // The seed's block volumes need more than two workers under the soft cap: no cascade to 2.
    assert!(r["nodes"].as_u64().unwrap() >= 4, "{r}");
    assert_eq!(r["scaleUps"], 0, "no flapping: {r}");
    assert_eq!(r["stuckPods"], 0);
}

#[test]
fn a_spare_is_not_started_on_a_host_without_the_memory_and_each_failure_counts_once() {
    let r = simulate("spare-low-host-memory.yaml", "proactive");
    assert_eq!(at(&r, "cold spare started").len(), 0, "{r}");
    let failed = at(&r, "provision failed (no-capacity)").len() as u64;
    assert!(failed > 0, "{r}");
    assert_eq!(r["provisionFailures"], failed, "{r}");
    // Backing off: minutes between attempts, not one per poll.
    let attempts = at(&r, "provision failed");
    assert!(attempts.windows(2).all(|w| w[1] - w[0] >= 60), "{attempts:?}");
}

#[test]
fn an_oversized_pod_never_clones() {
    let r = simulate("oversized-pod.yaml", "proactive");
    assert_eq!(r["scaleUps"], 0, "{r}");
}

#[test]
fn a_restart_mid_window_does_not_start_the_window_again() {
    let r = simulate("restart-mid-window.yaml", "proactive");
    assert_eq!(at(&r, "headroom restarted"), [15 * 86_400]);
    let down = at(&r, "scale-down: draining");
    assert_eq!(down.len(), 1, "{r}");
    assert!(
        down[0] < 3600 + 720 * 3600 + 3600,
        "the 30-day window went on: {down:?}"
    );
}

#[test]
fn a_node_whose_csi_registers_late_gets_no_block_volume_before_it_does() {
    let r = simulate("csi-late.yaml", "proactive");
    assert_eq!(r["stuckPods"], 0, "{r}");
    assert_eq!(r["pendingPodSeconds"], 0, "{r}");
    // Ready, then registered 180 s later.
    let ready = at(&r, "k8s-node7 Ready");
    let registered = at(&r, "k8s-node7: block driver registered");
    assert_eq!(registered[0] - ready[0], 180, "{r}");
}

/// The design's Phase 2 replayed: node6 21, node5 3, `rebalance.enabled`. The spread closes to
/// `stopAt` one pod at a time: each move starts once the previous pod runs elsewhere and the
/// interval has passed, no moved pod waits longer than its reattach, and the run stops there.
#[test]
fn rebalancing_the_seed_cluster_closes_the_spread_one_pod_at_a_time() {
    let r = simulate("rebalance-2026-05-26.yaml", "proactive");
    assert!(r["spread"].as_i64().unwrap() <= 2, "{r}");
    assert_eq!(r["scaleUps"], 0, "moves, not VMs: {r}");
    let evicted = at(&r, "evicted from");
    let settled = at(&r, " moved (");
    assert!(evicted.len() >= 8, "node6 21 → about 12 takes many moves: {r}");
    assert_eq!(r["moves"].as_u64().unwrap() as usize, evicted.len(), "{r}");
    assert_eq!(settled.len(), evicted.len(), "every move settled: {r}");
    for (i, start) in evicted.iter().enumerate().skip(1) {
        let previous_end = settled[i - 1];
        assert!(
            *start >= previous_end + 600,
            "move {i} at {start}s, 10 minutes after the previous one ended at {previous_end}s: {r}"
        );
    }
    for (start, end) in evicted.iter().zip(&settled) {
        assert!(end >= start, "{r}");
    }
    assert!(
        r["longestMoveWait"].as_u64().unwrap() <= 60,
        "a moved pod waits only for its reattach: {r}"
    );
    // Stopped at the spread: nothing moves in the hours after the last move.
    let last = *evicted.last().unwrap();
    assert!(
        last < 4 * 3600,
        "the run ended well before the 6 h replay did: {r}"
    );
}
