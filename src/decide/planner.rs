//! The provisioning planner: from the projection and the actuator's status, decide to add VMs,
//! drop queued ones, remove one node, or wait.
//!
//! Pure. Capacity on its way counts as capacity, so one intent never becomes two VMs. A
//! removal is simulated first and refused when the smaller cluster would fire a trigger, push
//! a node past its soft cap or memory threshold, or strand a pod.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde::Serialize;

use crate::{
    config::{Config, Singletons},
    decide::{
        Situation,
        accounting::{ClusterView, NodeUsage},
        actuation::DemandLevel,
        placement::{Placement, pod_block_keys},
        projection::{self, AdmittedDemand, Evaluation, Incoming, Totals, VmCapacity},
        rebalance::PodMove,
    },
    index::ClusterState,
    model::{Controller, Name, PodInfo},
};

/// No scale-down this soon after a scale-up (the new node has barely filled).
pub const SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(6 * 3600);

/// `maxNodes` when there is no `proxmox:` section (the dry run's bound).
const DEFAULT_MAX_NODES: i64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Plan {
    Nothing,
    /// Add `count` VMs beyond those in flight.
    ScaleUp {
        count: i64,
        reason: String,
    },
    /// Drop `count` queued provisions: demand fell while they waited their turn.
    Cancel {
        count: i64,
        reason: String,
    },
    /// Drain and remove `node`; `demand` is what the decision was made on; `singletons` are
    /// the pods (`namespace/name`) whose controller runs only them: named before eviction.
    ScaleDown {
        node: String,
        reason: String,
        demand: DemandLevel,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        singletons: Vec<String>,
    },
    /// Evict one pod so that the extender places it on another node.
    Move(PodMove),
}

/// How many more VMs `maxNodes` allows beyond the nodes there are and those in flight: the
/// one rule the planner, admission's outlook and `status` share.
pub fn room_for_vms(config: &Config, nodes: usize, in_flight: i64) -> i64 {
    let max = config
        .proxmox
        .as_ref()
        .map_or(DEFAULT_MAX_NODES, |p| i64::from(p.max_nodes));
    (max - nodes as i64 - in_flight).max(0)
}

/// What one pod, or one node's room, holds: memory and CPU requests and block slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fit {
    memory: i64,
    cpu: i64,
    slots: i64,
}

impl Fit {
    fn holds(&self, need: &Fit) -> bool {
        self.memory >= need.memory && self.cpu >= need.cpu && self.slots >= need.slots
    }

    fn take(&mut self, need: &Fit) {
        self.memory -= need.memory;
        self.cpu -= need.cpu;
        self.slots -= need.slots;
    }
}

/// First fit, largest first: places every need into `bins`, opening a bin of `new` when none
/// holds it (if `new` is given). Returns how many bins were opened, or `None` when a need fits
/// nowhere.
fn first_fit(mut needs: Vec<Fit>, bins: &mut Vec<Fit>, new: Option<Fit>) -> Option<i64> {
    needs.sort_by_key(|n| std::cmp::Reverse((n.slots, n.memory, n.cpu)));
    let mut opened = 0;
    for need in &needs {
        match bins.iter_mut().find(|b| b.holds(need)) {
            Some(bin) => bin.take(need),
            None => {
                let mut bin = new.filter(|n| n.holds(need))?;
                bin.take(need);
                bins.push(bin);
                opened += 1;
            }
        }
    }
    Some(opened)
}

/// What `pod` asks of a node, its block volumes being `keys`.
fn pod_fit(pod: &PodInfo, keys: &BTreeSet<Name>) -> Fit {
    Fit {
        memory: pod.memory_request,
        cpu: pod.cpu_request_millis,
        slots: keys.len() as i64,
    }
}

/// A pending pod no VM of the configured shape can hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OversizedPod {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// How many VMs the demand needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// The fewest VMs on their way, those in flight included, that clear every trigger and
    /// hold every pending pod a VM can hold; `None` when even `maxNodes` would not.
    pub vms_needed: Option<i64>,
    /// More VMs `maxNodes` allows beyond the nodes and those in flight.
    pub room_for_vms: i64,
    /// Pending pods that fit no node now.
    pub unfit_pods: usize,
    /// Pending pods no VM shape holds: never a reason to clone.
    pub oversized_pods: Vec<OversizedPod>,
}

/// Sizes the demand: trigger conditions on the projection, and pending pods that fit no node
/// packed into the configured VM shape.
pub fn size(
    state: &ClusterState,
    view: &ClusterView,
    placement: Placement<'_>,
    config: &Config,
    admitted: AdmittedDemand,
    in_flight: i64,
    for_incidents: i64,
) -> Sizing {
    let vm = VmCapacity::from_config(config);
    let room_for_vms = room_for_vms(config, view.nodes.len(), in_flight);
    let limit = room_for_vms + in_flight;
    let for_triggers =
        projection::vms_to_clear_triggers(view, admitted, Incoming::default(), vm, config, limit);

    let shape = Fit {
        memory: vm.memory_bytes,
        cpu: vm.cpu_millis,
        slots: vm.block_slots,
    };
    let mut unfit = Vec::new();
    let mut oversized_pods = Vec::new();
    for pod in state.unscheduled_pods().filter(|p| !p.terminal) {
        let keys = pod_block_keys(view, pod);
        let fits = placement.fits_on(&keys);
        if view.schedulable().any(|n| n.has_requests_free(pod) && fits(n)) {
            continue;
        }
        let need = pod_fit(pod, &keys);
        if shape.holds(&need) {
            unfit.push(need);
        } else {
            oversized_pods.push(OversizedPod {
                namespace: pod.namespace.to_string(),
                name: pod.name.to_string(),
                reason: format!(
                    "requests {} MiB memory, {}m CPU and {} block volumes; a worker VM has {} MiB, {}m and {} slots",
                    need.memory >> 20,
                    need.cpu,
                    need.slots,
                    shape.memory >> 20,
                    shape.cpu,
                    shape.slots
                ),
            });
        }
    }
    let unfit_pods = unfit.len();
    let for_pods = first_fit(unfit, &mut Vec::new(), Some(shape)).unwrap_or(0);
    Sizing {
        vms_needed: for_triggers
            .map(|n| n.max(for_pods).max(for_incidents))
            .filter(|n| *n <= limit),
        room_for_vms,
        unfit_pods,
        oversized_pods,
    }
}

/// What the planner looks at: the tick's situation, and what the tick made of it.
pub struct PlanInput<'a> {
    pub situation: &'a Situation<'a>,
    pub evaluation: &'a Evaluation,
    pub sizing: &'a Sizing,
    pub admitted: AdmittedDemand,
    /// Why an incident (a stuck pod no node takes, sustained eviction churn) wants a VM.
    pub incident_vm: Option<&'a str>,
}

/// Why the planner does not remove a node although the scale-down conditions hold.
pub type Refusals = Vec<String>;

pub fn plan(input: &PlanInput<'_>) -> (Plan, Refusals) {
    let config = input.situation.config;
    let actuator = input.situation.actuator;
    let sizing = input.sizing;
    let in_flight = actuator.incoming_vms();
    let needed_more = sizing
        .vms_needed
        .map_or(sizing.room_for_vms, |n| n - in_flight)
        .min(sizing.room_for_vms);

    // A removal moves demand, it does not add any: within `scaleDown.for` of one, a trigger
    // scales up only when the cluster asks for more than it did when the node was removed.
    // (Pods that fit nowhere always get capacity: nothing may be stranded.)
    let window = config.scale_down.r#for.0;
    let demand = demand_level(input.situation.view, input.admitted);
    let outside_demand = match (actuator.last_scale_down, &actuator.demand_at_scale_down) {
        (Some(at), Some(baseline)) if input.situation.now.since(at) < window => demand.exceeds(baseline),
        _ => true,
    };

    let mut sustained: Vec<&str> = input
        .evaluation
        .triggers
        .iter()
        .filter(|t| t.sustained)
        .map(|t| t.reason.as_str())
        .collect();
    if !sustained.is_empty() {
        sustained.extend(input.incident_vm);
    }
    if !sustained.is_empty() && needed_more > 0 && outside_demand {
        return (
            Plan::ScaleUp {
                count: needed_more,
                reason: sustained.join("; "),
            },
            Vec::new(),
        );
    }
    if sizing.unfit_pods > 0 && needed_more > 0 {
        return (
            Plan::ScaleUp {
                count: needed_more,
                reason: format!(
                    "{} pending pod(s) fit no node (block slots, memory or CPU)",
                    sizing.unfit_pods
                ),
            },
            Vec::new(),
        );
    }
    if let Some(why) = input.incident_vm
        && needed_more > 0
    {
        return (
            Plan::ScaleUp {
                count: needed_more,
                reason: why.to_owned(),
            },
            Vec::new(),
        );
    }
    let queued = actuator.queued() as i64;
    if queued > 0
        && let Some(needed) = sizing.vms_needed
        && needed < in_flight
    {
        return (
            Plan::Cancel {
                count: queued.min(in_flight - needed),
                reason: format!("{needed} VM(s) now clear every trigger, {in_flight} on their way"),
            },
            Vec::new(),
        );
    }

    // One removal at a time, none while capacity is on its way, and one per `scaleDown.for`:
    // the conditions count again from the last removal (see `projection::evaluate`).
    let cooled = actuator
        .last_scale_up
        .is_none_or(|at| input.situation.now.since(at) >= SCALE_DOWN_COOLDOWN)
        && actuator
            .last_scale_down
            .is_none_or(|at| input.situation.now.since(at) >= window);
    if input.evaluation.scale_down_allowed()
        && cooled
        && in_flight == 0
        && actuator.removal.is_none()
        && actuator.moving.is_none()
    {
        return match removable_node(input) {
            Ok(Removable {
                node,
                reason,
                singletons,
            }) => (
                Plan::ScaleDown {
                    node,
                    reason,
                    demand,
                    singletons,
                },
                Vec::new(),
            ),
            Err(refusals) => (Plan::Nothing, refusals),
        };
    }
    (Plan::Nothing, Vec::new())
}

/// What the cluster asks for now: every block volume held, pending or admitted, and every
/// memory request.
pub fn demand_level(view: &ClusterView, admitted: AdmittedDemand) -> DemandLevel {
    let held: i64 = view.nodes.iter().map(|n| n.block_volumes).sum();
    DemandLevel {
        block_volumes: held + view.pending_block_claims() + admitted.block_volumes,
        memory_bytes: view.nodes.iter().map(|n| n.memory_requested_bytes).sum::<i64>()
            + admitted.memory_bytes,
    }
}

/// Why a pod cannot leave `node`, if it cannot.
pub(crate) fn immovable(state: &ClusterState, pod: &PodInfo, node: &str) -> Option<String> {
    let id = format!("{}/{}", pod.namespace, pod.name);
    if pod.controller == Controller::None {
        return Some(format!(
            "pod {id} has no controller: evicted, nothing would place it again"
        ));
    }
    for claim in &pod.claims {
        let pinned = state
            .claims
            .get_str(&pod.namespace, claim)
            .and_then(|c| c.volume_name.as_ref())
            .and_then(|pv| state.volumes.get(pv))
            .is_some_and(|v| !v.pinned_to.is_empty() && v.pinned_to.iter().all(|n| n == node));
        if pinned {
            return Some(format!(
                "pod {id} uses claim {claim}, whose volume is pinned to {node}"
            ));
        }
    }
    None
}

/// The PodDisruptionBudget that allows no disruption of `pod` now, if one covers it: the
/// Eviction API would refuse it (429).
pub(crate) fn blocking_budget<'s>(
    state: &'s ClusterState,
    pod: &PodInfo,
) -> Option<&'s crate::model::BudgetInfo> {
    state
        .budgets
        .values()
        .filter(|b| b.namespace == pod.namespace && b.disruptions_allowed <= 0)
        .find(|b| b.covers(&pod.labels))
}

/// A node the planner may remove.
struct Removable {
    node: String,
    reason: String,
    singletons: Vec<String>,
}

/// The lightest node whose pods the others absorb, with the cluster still calm without it:
/// every pod it runs can move (a controller places it again, no volume pins it), the others
/// hold them under their soft caps and the memory threshold, and no trigger fires on the
/// smaller cluster. GPU nodes and nodes still joining are never removed. Singletons (a
/// controller running one pod) refuse the node under `scaleDown.singletons: refuse`.
/// What a drain of each node would evict, and how many replicas each controller runs: one
/// pass over the pods, for the planner's removal and for `status`'s survey.
pub(crate) struct DrainSurvey<'a> {
    replicas: HashMap<u64, usize>,
    evicted: HashMap<&'a str, Vec<&'a PodInfo>>,
}

impl<'a> DrainSurvey<'a> {
    pub(crate) fn of(state: &'a ClusterState) -> Self {
        let mut replicas: HashMap<u64, usize> = HashMap::new();
        let mut evicted: HashMap<&str, Vec<&PodInfo>> = HashMap::new();
        for pod in state.pods.values().filter(|p| !p.terminal) {
            if pod.owner != 0 {
                *replicas.entry(pod.owner).or_default() += 1;
            }
            if let Some(node) = pod.node_name.as_deref()
                && pod.controller.evicted_by_drain()
            {
                evicted.entry(node).or_default().push(pod);
            }
        }
        Self { replicas, evicted }
    }

    pub(crate) fn evicted(&self, node: &str) -> &[&'a PodInfo] {
        self.evicted.get(node).map_or(&[], Vec::as_slice)
    }

    /// Pods on `node` whose controller runs no other replica: down until they run elsewhere.
    pub(crate) fn singletons(&self, node: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .evicted(node)
            .iter()
            .filter(|pod| self.replicas.get(&pod.owner) == Some(&1))
            .map(|pod| format!("{}/{}", pod.namespace, pod.name))
            .collect();
        names.sort();
        names
    }
}

/// What draining one node would break or hurt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainBlockers {
    /// The node has GPUs: its GPU work has nowhere else to run (never removed).
    #[serde(skip_serializing_if = "is_zero")]
    pub gpus: i64,
    /// Pods that cannot move, and why (no controller, a volume pinned to the node).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cannot_move: Vec<String>,
    /// Pods whose controller runs no other replica: down until they run elsewhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub singletons: Vec<String>,
    /// Pods a PodDisruptionBudget allowing no disruption covers: the drain waits on them, up
    /// to `scaleDown.drainTimeout`, then gives up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The runbook's survey before a drain, per node; nodes with nothing in the way are left out.
pub fn drain_blockers(state: &ClusterState, view: &ClusterView) -> BTreeMap<String, DrainBlockers> {
    let survey = DrainSurvey::of(state);
    let mut out = BTreeMap::new();
    for node in &view.nodes {
        let name = node.name.as_str();
        let mut cannot_move: Vec<String> = survey
            .evicted(name)
            .iter()
            .filter_map(|pod| immovable(state, pod, name))
            .collect();
        cannot_move.sort();
        let mut budgets: Vec<String> = survey
            .evicted(name)
            .iter()
            .filter_map(|pod| {
                blocking_budget(state, pod).map(|b| {
                    format!(
                        "{}/{} (PodDisruptionBudget {} allows no disruption)",
                        pod.namespace, pod.name, b.name
                    )
                })
            })
            .collect();
        budgets.sort();
        let blockers = DrainBlockers {
            gpus: node.gpus,
            cannot_move,
            singletons: survey.singletons(name),
            budgets,
        };
        if blockers != DrainBlockers::default() {
            out.insert(name.to_owned(), blockers);
        }
    }
    out
}

fn removable_node(input: &PlanInput<'_>) -> Result<Removable, Refusals> {
    let p = input.situation.placement;
    let config = input.situation.config;
    let survey = DrainSurvey::of(input.situation.state);
    let before = Totals::of(input.situation.view);
    // Others may fill up to the scale-up threshold, not past it (that would flap).
    let memory_ceiling = config.triggers.memory_request_ratio.map_or(1.0, |t| t.above);
    let mut candidates: Vec<&NodeUsage> = input
        .situation
        .view
        .schedulable()
        .filter(|n| n.gpus == 0 && n.block_ready)
        .collect();
    candidates.sort_by_key(|n| (p.block_volumes(n), n.memory_requested_bytes));
    let mut refusals = Vec::new();
    for candidate in candidates {
        let name = candidate.name.as_str();
        let pods = survey.evicted(name);
        if let Some(why) = pods
            .iter()
            .find_map(|pod| immovable(input.situation.state, pod, name))
        {
            refusals.push(format!("{name}: {why}"));
            continue;
        }
        let singletons = survey.singletons(name);
        if config.scale_down.singletons == Singletons::Refuse && !singletons.is_empty() {
            refusals.push(format!(
                "{name}: runs singletons (scaleDown.singletons: refuse): {}",
                singletons.join(", ")
            ));
            continue;
        }
        let others: Vec<&NodeUsage> = input
            .situation
            .view
            .schedulable()
            .filter(|n| n.name != name)
            .collect();
        let mut rooms: Vec<Fit> = others
            .iter()
            .map(|n| Fit {
                memory: (n.memory_allocatable_bytes as f64 * memory_ceiling) as i64
                    - n.memory_requested_bytes,
                cpu: n.cpu_allocatable_millis - n.cpu_requested_millis,
                slots: p.free_slots(n),
            })
            .collect();
        let needs: Vec<Fit> = pods
            .iter()
            .map(|pod| pod_fit(pod, &pod_block_keys(input.situation.view, pod)))
            .collect();
        let moved_slots: i64 = needs.iter().map(|n| n.slots).sum();
        if others.is_empty() || first_fit(needs, &mut rooms, None).is_none() {
            refusals.push(format!(
                "{name}: the other nodes cannot take its {} pods under their soft caps and {:.0}% memory",
                pods.len(),
                memory_ceiling * 100.0
            ));
            continue;
        }
        // The cluster without it: its room and memory gone, its volumes on the others.
        let fullest_after = others
            .iter()
            .zip(&rooms)
            .map(|(n, room)| n.block_volumes + (p.free_slots(n) - room.slots))
            .chain(
                input
                    .situation
                    .view
                    .nodes
                    .iter()
                    .filter(|n| !n.schedulable && n.name != name)
                    .map(|n| n.block_volumes),
            )
            .max()
            .unwrap_or(0);
        let without = Totals {
            room: before.room - p.free_slots(candidate) - moved_slots,
            memory_allocatable: before.memory_allocatable - candidate.memory_allocatable_bytes,
            max_node_block_volumes: fullest_after,
            ..before
        };
        let projected = projection::project_totals(
            without,
            input.situation.view.pending_block_claims(),
            input.admitted,
            Incoming::default(),
            VmCapacity::from_config(config),
        );
        let firing: Vec<&str> = projection::trigger_conditions(&projected, config)
            .into_iter()
            .filter(|c| c.holds)
            .map(|c| c.name)
            .collect();
        if !firing.is_empty() {
            refusals.push(format!("{name}: without it {} would fire", firing.join(" and ")));
            continue;
        }
        return Ok(Removable {
            node: name.to_owned(),
            reason: format!(
                "scale-down conditions held for {}; the other nodes absorb {name}'s {} pods and {} block volumes, no trigger fires without it",
                config.scale_down.r#for,
                pods.len(),
                p.block_volumes(candidate)
            ),
            singletons,
        });
    }
    Err(refusals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::actuation::ActuatorStatus;

    fn fit(memory: i64, cpu: i64, slots: i64) -> Fit {
        Fit { memory, cpu, slots }
    }

    #[test]
    fn first_fit_opens_the_fewest_bins_it_can_and_refuses_what_fits_no_bin() {
        let vm = fit(32, 8000, 24);
        /// (case, needs, bins there already, bins opened)
        type Case = (&'static str, Vec<Fit>, Vec<Fit>, Option<i64>);
        let cases: Vec<Case> = vec![
            ("nothing to place", vec![], vec![], Some(0)),
            ("one pod, one VM", vec![fit(4, 100, 1)], vec![], Some(1)),
            (
                "memory packs three 12s into two VMs of 32",
                vec![fit(12, 0, 0); 3],
                vec![],
                Some(2),
            ),
            (
                "slots pack 30 one-volume pods into two VMs of 24",
                vec![fit(0, 0, 1); 30],
                vec![],
                Some(2),
            ),
            (
                "room already there is used first",
                vec![fit(10, 0, 0); 2],
                vec![fit(20, 8000, 0)],
                Some(0),
            ),
            ("larger than any VM", vec![fit(40, 0, 0)], vec![], None),
        ];
        for (name, needs, mut bins, want) in cases {
            assert_eq!(first_fit(needs, &mut bins, Some(vm)), want, "{name}");
        }
        assert_eq!(
            first_fit(vec![fit(1, 0, 0)], &mut Vec::new(), None),
            None,
            "no bins and none may open"
        );
    }

    #[test]
    fn room_under_max_nodes_counts_nodes_and_what_is_in_flight() {
        let config = Config::default();
        assert_eq!(room_for_vms(&config, 7, 0), 3);
        assert_eq!(room_for_vms(&config, 7, 2), 1);
        assert_eq!(room_for_vms(&config, 12, 0), 0, "never negative");
    }

    /// What the planner is handed in one row of the table below.
    #[derive(Default)]
    struct Given {
        /// A trigger that has held for its `for:`.
        trigger: bool,
        /// Every scale-down condition has held for its `for:`.
        quiet: bool,
        sizing: Sizing,
        actuator: ActuatorStatus,
        incident_vm: Option<&'static str>,
    }

    fn check(name: &'static str, sustained: bool) -> crate::decide::projection::Check {
        crate::decide::projection::Check {
            name,
            firing: sustained,
            sustained,
            r#for: Default::default(),
            held_for: None,
            reason: format!("{name} reason"),
        }
    }

    fn plan_of(given: &Given) -> Plan {
        let evaluation = Evaluation {
            triggers: vec![check("freeBlockSlots", given.trigger)],
            signals: Vec::new(),
            scale_down: vec![check("scaleDown.maxNodeBlockVolumes", given.quiet)],
        };
        let now = crate::decide::time::Timestamp(1_780_000_000_000);
        let state = crate::decide::fixtures::cluster(&[2, 2, 2]);
        crate::decide::fixtures::in_situation(&state, &Config::default(), &given.actuator, now, |s| {
            plan(&PlanInput {
                situation: s,
                evaluation: &evaluation,
                sizing: &given.sizing,
                admitted: AdmittedDemand::default(),
                incident_vm: given.incident_vm,
            })
            .0
        })
    }

    #[test]
    fn the_plan_takes_the_first_branch_that_applies() {
        use crate::decide::actuation::{Intent, Phase};
        let needs = |vms: i64| Sizing {
            vms_needed: Some(vms),
            room_for_vms: 5,
            ..Default::default()
        };
        let queued = |n: usize| ActuatorStatus {
            intents: (0..n)
                .map(|_| Intent {
                    vm: None,
                    phase: Phase::Queued,
                    capacity: VmCapacity {
                        block_slots: 24,
                        memory_bytes: 0,
                        cpu_millis: 0,
                    },
                    reason: String::new(),
                    since: crate::decide::time::Timestamp(0),
                })
                .collect(),
            ..Default::default()
        };
        let moving = ActuatorStatus {
            moving: Some(crate::decide::rebalance::MoveInProgress {
                pod: crate::decide::rebalance::PodMove {
                    namespace: "apps".into(),
                    name: "x".into(),
                    from: "n1".into(),
                    toward: "n2".into(),
                    cause: crate::decide::rebalance::MoveCause::Rebalance,
                    reason: String::new(),
                    owner: 1,
                    replicas: 1,
                },
                since: crate::decide::time::Timestamp(0),
            }),
            ..Default::default()
        };
        // (case, given, plan action, count or node)
        let rows: Vec<(&str, Given, &str, &str)> = vec![
            ("calm: nothing", Given::default(), "nothing", ""),
            (
                "a sustained trigger: the VMs it needs",
                Given {
                    trigger: true,
                    sizing: needs(2),
                    ..Default::default()
                },
                "scaleUp",
                "2",
            ),
            (
                "a trigger the VMs in flight already clear",
                Given {
                    trigger: true,
                    sizing: needs(2),
                    actuator: queued(2),
                    ..Default::default()
                },
                "nothing",
                "",
            ),
            (
                "pods that fit no node: VMs whatever the triggers",
                Given {
                    sizing: Sizing {
                        unfit_pods: 3,
                        ..needs(1)
                    },
                    ..Default::default()
                },
                "scaleUp",
                "1",
            ),
            (
                "an incident that wants a VM",
                Given {
                    incident_vm: Some("stuck"),
                    sizing: needs(1),
                    ..Default::default()
                },
                "scaleUp",
                "1",
            ),
            (
                "demand fell below what is queued: cancel",
                Given {
                    sizing: needs(1),
                    actuator: queued(3),
                    ..Default::default()
                },
                "cancel",
                "2",
            ),
            (
                "quiet for the window: the lightest node goes",
                Given {
                    quiet: true,
                    sizing: needs(0),
                    ..Default::default()
                },
                "scaleDown",
                "n1",
            ),
            (
                "quiet, but a pod is being moved",
                Given {
                    quiet: true,
                    sizing: needs(0),
                    actuator: moving,
                    ..Default::default()
                },
                "nothing",
                "",
            ),
            (
                "quiet, but VMs are on their way",
                Given {
                    quiet: true,
                    sizing: needs(1),
                    actuator: queued(1),
                    ..Default::default()
                },
                "nothing",
                "",
            ),
        ];
        for (case, given, action, what) in rows {
            let got = match plan_of(&given) {
                Plan::Nothing => ("nothing", String::new()),
                Plan::ScaleUp { count, .. } => ("scaleUp", count.to_string()),
                Plan::Cancel { count, .. } => ("cancel", count.to_string()),
                Plan::ScaleDown { node, .. } => ("scaleDown", node),
                Plan::Move(m) => ("move", m.name),
            };
            assert_eq!((got.0, got.1.as_str()), (action, what), "{case}");
        }
    }
}
