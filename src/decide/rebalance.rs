//! Moving pods with block volumes: which pod goes next, the spread that starts and stops the
//! rebalancing, and when a move has settled.
//!
//! A move evicts one pod so that the extender places it again; the pod's block volumes detach
//! from the node it leaves and attach where it lands. Moves run one at a time cluster-wide: a
//! detach and reattach is the moment a ghost disk is born (the design's "one at a time, with
//! check #47 watching"). The spread between the fullest and the emptiest schedulable node
//! starts the moves at `rebalance.startAt` and they continue until it is at most `stopAt`; the
//! hysteresis lives in the tick's durable windows, so a restart does not forget a run.

use std::{collections::BTreeSet, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::Singletons,
    decide::{
        Situation,
        accounting::NodeUsage,
        actuation::REFUSAL_MEMORY,
        placement::pod_block_keys,
        planner::{DrainSurvey, blocking_budget, immovable},
        projection::Windows,
        time::Timestamp,
    },
    index::ClusterState,
    model::{Controller, Name, PodInfo, ns_name},
};

/// A move whose replacement does not run elsewhere within this long is given up (counted as
/// `timeout`): the next one may go after the interval.
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The window that remembers a rebalancing run between ticks.
const RUN_WINDOW: &str = "rebalance";

/// Why a pod is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveCause {
    /// The spread reached `rebalance.startAt`.
    Rebalance,
    /// Its volume failed to attach with "no free lun found".
    LunCapIncident,
}

impl MoveCause {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveCause::Rebalance => "rebalance",
            MoveCause::LunCapIncident => "lun-cap-incident",
        }
    }
}

/// One pod to evict so that the extender places it again on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMove {
    pub namespace: String,
    pub name: String,
    /// The node it leaves.
    pub from: String,
    /// Where it fits best now (the extender decides where it lands).
    pub toward: String,
    pub cause: MoveCause,
    pub reason: String,
    /// Its controller (a hash of the owner's UID): its replacement is a pod of the same owner.
    #[serde(skip)]
    pub owner: u64,
    /// The owner's pods on nodes before the move: the move has settled when as many are on
    /// nodes again, none of them the evicted one on `from`.
    #[serde(skip)]
    pub replicas: usize,
}

/// A move under way: evicted, its replacement not yet on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveInProgress {
    #[serde(flatten)]
    pub pod: PodMove,
    pub since: Timestamp,
}

/// How a move ended: the `result` label of `headroom_rebalance_moves_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveResult {
    /// Its replacement is on another node.
    Moved,
    /// The Eviction API refused (a PodDisruptionBudget allows no disruption now): nothing moved.
    Blocked,
    /// The eviction call failed: nothing moved.
    Failed,
    /// Evicted, but no replacement ran elsewhere within [`MOVE_TIMEOUT`].
    Timeout,
}

impl MoveResult {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveResult::Moved => "moved",
            MoveResult::Blocked => "blocked",
            MoveResult::Failed => "failed",
            MoveResult::Timeout => "timeout",
        }
    }
}

/// Whether the move under way has ended at `now`, and how: the evicted pod is off `from`, no
/// pod of its owner waits for a node, and the owner has as many pods on nodes as before.
pub fn settle(state: &ClusterState, moving: &MoveInProgress, now: Timestamp) -> Option<MoveResult> {
    let m = &moving.pod;
    let still_there = state
        .pods
        .get(&ns_name(&m.namespace, &m.name))
        .is_some_and(|p| !p.terminal && p.node_name.as_deref() == Some(m.from.as_str()));
    let (mut placed, mut waiting) = (0, 0);
    for pod in state.pods.values().filter(|p| p.owner == m.owner && !p.terminal) {
        match pod.node_name {
            Some(_) => placed += 1,
            None => waiting += 1,
        }
    }
    if !still_there && waiting == 0 && placed >= m.replicas {
        return Some(MoveResult::Moved);
    }
    (now.since(moving.since) >= MOVE_TIMEOUT).then_some(MoveResult::Timeout)
}

/// One node's block volumes, for the spread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCount {
    pub node: String,
    pub block_volumes: i64,
}

/// What rebalancing would do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Next {
    /// `rebalance.enabled` is false.
    Off,
    /// The spread is below `startAt` (or, during a run, at most `stopAt`).
    Balanced,
    /// A move is due but must wait: one under way, the interval, a removal.
    Waiting { reason: String },
    /// Evict this pod now.
    Move(PodMove),
    /// The spread calls for a move, but no pod on the fullest node can go.
    Blocked { reason: String },
}

/// The spread and the next move, for the tick, `status` and the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlook {
    /// Fullest minus emptiest schedulable, block-ready node.
    pub spread: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fullest: Option<NodeCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emptiest: Option<NodeCount>,
    /// A run is under way: the spread reached `startAt` and has not yet come down to `stopAt`.
    pub running: bool,
    pub next: Next,
}

/// The spread, whether a run is under way (kept in `windows`), and the next move.
pub fn outlook(input: &Situation<'_>, windows: &mut Windows) -> Outlook {
    let r = &input.config.rebalance;
    let p = input.placement;
    let nodes: Vec<(&NodeUsage, i64)> = input
        .view
        .schedulable()
        .filter(|n| n.block_ready)
        .map(|n| (n, p.block_volumes(n)))
        .collect();
    let count = |(n, c): &(&NodeUsage, i64)| NodeCount {
        node: n.name.to_string(),
        block_volumes: *c,
    };
    // Ties go to the first name, so the same cluster always names the same nodes.
    let fullest = nodes
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.name.cmp(&a.0.name)));
    let emptiest = nodes
        .iter()
        .min_by(|a, b| a.1.cmp(&b.1).then(a.0.name.cmp(&b.0.name)));
    let spread = match (fullest, emptiest) {
        (Some(f), Some(e)) => f.1 - e.1,
        _ => 0,
    };
    let was_running = windows.since.contains_key(RUN_WINDOW);
    let running = r.enabled && (spread >= r.start_at || (was_running && spread > r.stop_at));
    windows.observe(RUN_WINDOW, running, input.now);
    let next = if !r.enabled {
        Next::Off
    } else if !running {
        Next::Balanced
    } else if let Some(why) = wait_reason(input) {
        Next::Waiting { reason: why }
    } else {
        let from = fullest.expect("a run needs nodes");
        match pick(input, from.0, from.1) {
            Ok(m) => Next::Move(PodMove {
                reason: format!(
                    "spread {spread} (fullest {} holds {}, emptiest {} holds {}): a run started at {} moves one pod at a time until it is at most {}",
                    from.0.name,
                    from.1,
                    emptiest.map_or("", |e| e.0.name.as_str()),
                    emptiest.map_or(0, |e| e.1),
                    r.start_at,
                    r.stop_at
                ),
                ..m
            }),
            Err(reason) => Next::Blocked { reason },
        }
    };
    Outlook {
        spread,
        fullest: fullest.map(count),
        emptiest: emptiest.map(count),
        running,
        next,
    }
}

/// Why no move may start now, if none may: one under way, a removal, or the interval since
/// the last one.
fn wait_reason(input: &Situation<'_>) -> Option<String> {
    let a = input.actuator;
    if let Some(m) = &a.moving {
        return Some(format!(
            "moving {}/{} off {} since {}",
            m.pod.namespace,
            m.pod.name,
            m.pod.from,
            m.since.rfc3339()
        ));
    }
    if let Some(r) = &a.removal {
        return Some(format!("node {} is being removed", r.node));
    }
    let interval = input.config.rebalance.interval;
    if let Some(last) = a.last_move
        && input.now.since(last) < interval.0
    {
        return Some(format!(
            "one move per {interval}: the next after {}",
            last.plus(interval.0).rfc3339()
        ));
    }
    None
}

/// A candidate pod's block volumes and where they could go.
struct Candidate<'a> {
    pod: &'a PodInfo,
    volumes: usize,
    toward: &'a NodeUsage,
}

/// The pod on `from` (holding `held` block volumes) to move: it mounts block volumes, has a
/// controller, is no singleton under `scaleDown.singletons: refuse`, has no volume pinned to
/// `from`, and another node takes it under its soft cap and memory with the spread narrowing
/// (the node it goes to holds no more than `from` then). The fewest volumes first (one
/// reattach), then the least memory.
fn pick(input: &Situation<'_>, from: &NodeUsage, held: i64) -> Result<PodMove, String> {
    let p = input.placement;
    let survey = DrainSurvey::of(input.state);
    let singletons: BTreeSet<String> = survey.singletons(&from.name).into_iter().collect();
    let mut refused = Vec::new();
    let mut best: Option<Candidate> = None;
    for pod in survey.evicted(&from.name) {
        let id = format!("{}/{}", pod.namespace, pod.name);
        let keys = pod_block_keys(input.view, pod);
        if keys.is_empty() {
            continue;
        }
        if let Some(why) = unmovable(input, pod, &from.name) {
            refused.push(why);
            continue;
        }
        if input.config.scale_down.singletons == Singletons::Refuse && singletons.contains(&id) {
            refused.push(format!("{id}: a singleton (scaleDown.singletons: refuse)"));
            continue;
        }
        let needed = p.needed_on(&keys);
        let volumes = keys.len();
        // Only where the spread narrows: the node it goes to then holds no more than `from`.
        let toward = destination(input, pod, &keys, &from.name, |n| {
            n.block_ready && p.block_volumes(n) + needed(n) <= held - volumes as i64
        });
        let Some(toward) = toward else {
            refused.push(format!(
                "{id}: no other node takes its {volumes} block volume(s) and {} MiB and narrows the spread",
                pod.memory_request >> 20
            ));
            continue;
        };
        let better = best.as_ref().is_none_or(|b| {
            (volumes, pod.memory_request, &pod.namespace, &pod.name)
                < (b.volumes, b.pod.memory_request, &b.pod.namespace, &b.pod.name)
        });
        if better {
            best = Some(Candidate { pod, volumes, toward });
        }
    }
    let Some(c) = best else {
        refused.sort();
        return Err(if refused.is_empty() {
            format!("no pod on {} mounts a block volume", from.name)
        } else {
            format!("no pod on {} can move: {}", from.name, refused.join("; "))
        });
    };
    Ok(PodMove {
        namespace: c.pod.namespace.to_string(),
        name: c.pod.name.to_string(),
        from: from.name.to_string(),
        toward: c.toward.name.to_string(),
        cause: MoveCause::Rebalance,
        reason: String::new(),
        owner: c.pod.owner,
        replicas: replicas_on_nodes(input.state, c.pod.owner),
    })
}

/// Why `pod` on `from` may not be evicted to move it now, if it may not: no controller places
/// it again, a volume is pinned to `from`, a PodDisruptionBudget allows no disruption, or it was
/// moved (or its eviction refused) within [`REFUSAL_MEMORY`]. Rebalancing and the LUN-cap
/// incident's answer ask the same.
pub(crate) fn unmovable(s: &Situation<'_>, pod: &PodInfo, from: &str) -> Option<String> {
    let id = format!("{}/{}", pod.namespace, pod.name);
    if pod.controller != Controller::Other {
        return Some(format!("{id}: no controller places it again"));
    }
    if let Some(why) = immovable(s.state, pod, from) {
        return Some(why);
    }
    if let Some(b) = blocking_budget(s.state, pod) {
        return Some(format!(
            "{id}: PodDisruptionBudget {} allows no disruption now",
            b.name
        ));
    }
    s.actuator
        .passed_over
        .get(&id)
        .filter(|at| s.now.since(**at) < REFUSAL_MEMORY)
        .map(|at| {
            format!(
                "{id}: moved, or its eviction refused by a disruption budget, at {}",
                at.rfc3339()
            )
        })
}

/// The emptiest schedulable node other than `from` that takes `pod`, needing `keys`, under its
/// soft cap and with its memory and CPU requests free, among those `also` admits (ties by name).
pub(crate) fn destination<'v>(
    s: &Situation<'v>,
    pod: &PodInfo,
    keys: &BTreeSet<Name>,
    from: &str,
    also: impl Fn(&NodeUsage) -> bool,
) -> Option<&'v NodeUsage> {
    let p = s.placement;
    let fits = p.fits_on(keys);
    s.view
        .schedulable()
        .filter(|n| n.name != from && fits(n) && n.has_requests_free(pod) && also(n))
        .min_by(|a, b| {
            p.block_volumes(a)
                .cmp(&p.block_volumes(b))
                .then(a.name.cmp(&b.name))
        })
}

/// The pods of `owner` on nodes now.
pub fn replicas_on_nodes(state: &ClusterState, owner: u64) -> usize {
    state
        .pods
        .values()
        .filter(|p| p.owner == owner && !p.terminal && p.node_name.is_some())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        decide::{
            actuation::{ActuatorStatus, Removal},
            fixtures::{GI, add_pod, cluster, in_situation},
        },
    };

    const T0: Timestamp = Timestamp(1_780_000_000_000);

    fn enabled() -> Config {
        let mut c = Config::default();
        c.rebalance.enabled = true;
        c
    }

    fn outlook_of(
        state: &ClusterState,
        config: &Config,
        actuator: &ActuatorStatus,
        windows: &mut Windows,
    ) -> Outlook {
        in_situation(state, config, actuator, T0, |s| outlook(s, windows))
    }

    fn pods_on_n1(s: &mut ClusterState) -> impl Iterator<Item = &mut PodInfo> {
        s.pods
            .values_mut()
            .filter(|p| p.node_name.as_deref() == Some("n1"))
            .map(|p| &mut **p)
    }

    /// `apps/n1-p0` (of `owner`, one replica) moving from n1 toward n2 since T0.
    fn n1_p0_moving(owner: u64) -> MoveInProgress {
        MoveInProgress {
            pod: PodMove {
                namespace: "apps".into(),
                name: "n1-p0".into(),
                from: "n1".into(),
                toward: "n2".into(),
                cause: MoveCause::Rebalance,
                reason: String::new(),
                owner,
                replicas: 1,
            },
            since: T0,
        }
    }

    /// The next move on `state` with nothing under way.
    fn next_of(state: &ClusterState, config: &Config) -> Next {
        outlook_of(state, config, &ActuatorStatus::default(), &mut Windows::default()).next
    }

    fn state_of(next: &Next) -> &'static str {
        match next {
            Next::Off => "off",
            Next::Balanced => "balanced",
            Next::Waiting { .. } => "waiting",
            Next::Move(_) => "move",
            Next::Blocked { .. } => "blocked",
        }
    }

    #[test]
    fn the_spread_starts_at_start_at_and_a_run_goes_on_until_stop_at() {
        let running = || Windows {
            since: [(RUN_WINDOW.to_owned(), T0)].into(),
            ..Default::default()
        };
        // (case, counts, enabled, run under way before, spread, next, run under way after)
        type Row = (&'static str, Vec<usize>, bool, bool, i64, &'static str, bool);
        let rows: Vec<Row> = vec![
            (
                "disabled: reported, never moved",
                vec![21, 3],
                false,
                false,
                18,
                "off",
                false,
            ),
            ("below startAt", vec![8, 3], true, false, 5, "balanced", false),
            (
                "at startAt a run starts",
                vec![9, 3],
                true,
                false,
                6,
                "move",
                true,
            ),
            (
                "a run goes on above stopAt",
                vec![7, 4],
                true,
                true,
                3,
                "move",
                true,
            ),
            (
                "a run ends at stopAt",
                vec![6, 4],
                true,
                true,
                2,
                "balanced",
                false,
            ),
            (
                "no run, under startAt: nothing",
                vec![7, 4],
                true,
                false,
                3,
                "balanced",
                false,
            ),
            ("one node: no spread", vec![20], true, false, 0, "balanced", false),
        ];
        for (case, counts, on, before, spread, next, after) in rows {
            let mut config = enabled();
            config.rebalance.enabled = on;
            let mut windows = if before { running() } else { Windows::default() };
            let o = outlook_of(
                &cluster(&counts),
                &config,
                &ActuatorStatus::default(),
                &mut windows,
            );
            assert_eq!(o.spread, spread, "{case}");
            assert_eq!(state_of(&o.next), next, "{case}: {:?}", o.next);
            assert_eq!(o.running, after, "{case}");
            assert_eq!(
                windows.since.contains_key(RUN_WINDOW),
                after,
                "{case}: the run is remembered"
            );
        }
    }

    #[test]
    fn a_move_waits_for_the_one_under_way_a_removal_and_the_interval() {
        let state = cluster(&[12, 3]);
        let config = enabled();
        let under_way = n1_p0_moving(1);
        let minute = Duration::from_secs(60);
        // (case, actuator, waiting)
        let rows: Vec<(&str, ActuatorStatus, bool)> = vec![
            (
                "a move under way",
                ActuatorStatus {
                    moving: Some(under_way),
                    ..Default::default()
                },
                true,
            ),
            (
                "a node being removed",
                ActuatorStatus {
                    removal: Some(Removal {
                        node: "n2".into(),
                        since: T0,
                    }),
                    ..Default::default()
                },
                true,
            ),
            (
                "the last move ended 9 minutes ago (interval 10m)",
                ActuatorStatus {
                    last_move: Some(Timestamp(T0.0 - 9 * 60_000)),
                    ..Default::default()
                },
                true,
            ),
            (
                "the last move ended 10 minutes ago",
                ActuatorStatus {
                    last_move: Some(Timestamp(T0.0 - 10 * minute.as_millis() as u64)),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (case, actuator, waiting) in rows {
            let o = outlook_of(&state, &config, &actuator, &mut Windows::default());
            let want = if waiting { "waiting" } else { "move" };
            assert_eq!(state_of(&o.next), want, "{case}: {:?}", o.next);
        }
    }

    #[test]
    fn the_pod_picked_has_a_controller_no_pinned_volume_and_the_fewest_volumes() {
        // (case, change to the fullest node n1's pods, picked pod or blocked reason part)
        type Row = (&'static str, fn(&mut ClusterState), &'static str);
        let rows: Vec<Row> = vec![
            ("one volume each: the first by name", |_| {}, "n1-p0"),
            (
                "a pod with two volumes is not picked before one with one",
                |s| {
                    s.pods.remove(&("apps".into(), "n1-p0".into()));
                    add_pod(s, "n1", "n1-p0", 2);
                },
                "n1-p1",
            ),
            (
                "a budget allowing no disruption passes the pod over",
                |s| {
                    let db = (String::from("app"), String::from("db"));
                    s.pods.get_mut(&("apps".into(), "n1-p0".into())).unwrap().labels =
                        crate::model::label_hashes([(&db.0, &db.1)]).into();
                    s.budgets.insert(
                        ("apps".into(), "db".into()),
                        crate::model::BudgetInfo {
                            namespace: "apps".into(),
                            name: "db".into(),
                            disruptions_allowed: 0,
                            selector: Some(vec![crate::model::Requirement::In(vec![
                                crate::model::name_hash("app=db"),
                            ])]),
                        },
                    );
                },
                "n1-p1",
            ),
            (
                "no controller: never moved",
                |s| pods_on_n1(s).for_each(|p| p.controller = Controller::None),
                "no controller places it again",
            ),
            (
                "a volume pinned to the node cannot follow",
                |s| {
                    for v in s.volumes.values_mut().filter(|v| v.name.starts_with("pv-n1-")) {
                        v.pinned_to = ["n1".into()].into();
                    }
                },
                "pinned to n1",
            ),
            (
                "DaemonSet pods are not moved",
                |s| pods_on_n1(s).for_each(|p| p.controller = Controller::DaemonSet),
                "no pod on n1 mounts a block volume",
            ),
        ];
        for (case, change, want) in rows {
            let mut state = cluster(&[10, 2]);
            change(&mut state);
            let o = outlook_of(
                &state,
                &enabled(),
                &ActuatorStatus::default(),
                &mut Windows::default(),
            );
            match &o.next {
                Next::Move(m) => {
                    assert_eq!(m.name, want, "{case}");
                    assert_eq!((m.from.as_str(), m.toward.as_str()), ("n1", "n2"), "{case}");
                    assert_eq!(m.replicas, 1, "{case}");
                }
                Next::Blocked { reason } => assert!(reason.contains(want), "{case}: {reason}"),
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_pod_whose_eviction_was_refused_is_passed_over_for_an_hour() {
        let state = cluster(&[10, 2]);
        let refused = |mins_ago: u64| ActuatorStatus {
            passed_over: [("apps/n1-p0".to_owned(), Timestamp(T0.0 - mins_ago * 60_000))].into(),
            ..Default::default()
        };
        let o = outlook_of(&state, &enabled(), &refused(5), &mut Windows::default());
        assert!(
            matches!(&o.next, Next::Move(m) if m.name == "n1-p1"),
            "{:?}",
            o.next
        );
        let o = outlook_of(&state, &enabled(), &refused(60), &mut Windows::default());
        assert!(
            matches!(&o.next, Next::Move(m) if m.name == "n1-p0"),
            "{:?}",
            o.next
        );
    }

    #[test]
    fn singletons_move_only_when_scale_down_allows_them() {
        let state = cluster(&[10, 2]);
        let mut config = enabled();
        config.scale_down.singletons = Singletons::Refuse;
        let next = next_of(&state, &config);
        assert!(
            matches!(&next, Next::Blocked { reason } if reason.contains("singleton")),
            "{next:?}"
        );
    }

    #[test]
    fn no_move_that_would_not_narrow_the_spread_or_that_no_node_takes() {
        // A pod with 4 volumes on a node with 6 (spread 6 against 0): on the other node it
        // would hold 4 against 2, the spread reversed; with one volume pods it narrows.
        let mut state = cluster(&[0, 0]);
        add_pod(&mut state, "n1", "big", 4);
        add_pod(&mut state, "n1", "big2", 2);
        let next = next_of(&state, &enabled());
        assert!(matches!(&next, Next::Move(m) if m.name == "big2"), "{next:?}");
        // The other node at its soft cap of memory: nothing takes the pod.
        let mut state = cluster(&[10, 2]);
        state.nodes.get_mut("n2").unwrap().memory_allocatable = 2 * GI + GI / 2;
        let next = next_of(&state, &enabled());
        assert!(
            matches!(&next, Next::Blocked { reason } if reason.contains("no other node takes")),
            "{next:?}"
        );
    }

    #[test]
    fn a_move_settles_when_its_replacement_is_on_another_node() {
        let state = cluster(&[3, 1]);
        let pod = |s: &ClusterState| s.pods[&ns_name("apps", "n1-p0")].clone();
        let moving = n1_p0_moving(pod(&state).owner);
        let later = |mins: u64| T0.plus(Duration::from_secs(mins * 60));
        // (case, the evicted pod's node (None: pending; "gone": deleted), minutes, result)
        let rows: Vec<(&str, Option<&str>, u64, Option<MoveResult>)> = vec![
            ("still on its node", Some("n1"), 1, None),
            ("waiting for a node", None, 1, None),
            ("deleted, replacement not created yet", Some("gone"), 1, None),
            ("placed on another node", Some("n2"), 1, Some(MoveResult::Moved)),
            (
                "still waiting after the timeout",
                None,
                15,
                Some(MoveResult::Timeout),
            ),
        ];
        for (case, node, mins, want) in rows {
            let mut s = state.clone();
            let key = ns_name("apps", "n1-p0");
            match node {
                Some("gone") => drop(s.pods.remove(&key)),
                other => {
                    let mut moved = s.pods[&key].clone();
                    moved.node_name = other.map(Name::from);
                    s.apply(crate::index::Object::Pod(*moved));
                }
            }
            assert_eq!(settle(&s, &moving, later(mins)), want, "{case}");
        }
        // A Deployment's replacement has another name: settled once it is on a node.
        let mut s = state.clone();
        let mut replacement = pod(&s);
        s.pods.remove(&("apps".into(), "n1-p0".into()));
        replacement.name = "n1-p0-x7k2q".into();
        replacement.node_name = Some("n2".into());
        s.pods.insert(replacement);
        assert_eq!(settle(&s, &moving, later(1)), Some(MoveResult::Moved));
    }
}
