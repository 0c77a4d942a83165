//! The simulated world: a cluster that answers back. VMs clone and boot, CSI registers late,
//! drains take time, evicted pods are placed again, attaches fail from a VM's 25th LUN; faults,
//! restarts and short host memory can be injected. It checks the closed loop's invariants as
//! it runs.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::{
    config::{Config, ScaleDownAction},
    decide::{
        accounting::{self, Reservations, Settings},
        actuation::{ActuatorStatus, FailureReason, OutcomeKind, Phase},
        admission::{self, Outcome, Outlook},
        extender,
        placement::{BlockDemand, Placement, pod_block_keys},
        planner,
        projection::{VmCapacity, Windows},
        rebalance::{self, MoveResult, PodMove},
        time::Timestamp,
    },
    index::{ClusterState, Kind, Object, ObjectKey},
    model::{
        AttachmentInfo, ClaimInfo, Controller, CsiNodeInfo, Name, NodeInfo, NsName, PodInfo, VolumeInfo,
        ns_name, owner_hash, quantity,
    },
};

use super::{
    policy::Policy,
    report::{Report, Sample},
    scenario::{CreatePods, DeletePods, Scenario},
};

/// From this many block volumes on one VM, attaches fail (the harden-proxmox-csi design: safe
/// up to 24, fails from 25).
pub(super) const ATTACH_FAILS_FROM: i64 = 25;
/// kproximate's poll interval, and headroom's planning interval.
pub(super) const TICK: u64 = 10;
/// How far time jumps while nothing changes: the `for:` windows it delays are days long.
pub(super) const IDLE_STEP: u64 = 360 * TICK;

pub(super) struct Sim<'a> {
    /// Samples the cluster into `report.series` (`run_traced`).
    pub(super) traced: bool,
    pub(super) config: &'a Config,
    pub(super) policy: Policy,
    pub(super) state: ClusterState,
    /// Pod → seconds it has waited (Pending, or stuck).
    pub(super) waiting: BTreeMap<NsName, u64>,
    pub(super) stuck: BTreeSet<NsName>,
    pub(super) booting: Vec<(u64, String)>,
    /// Stopped VMs a scale-up starts before it clones.
    pub(super) spares: Vec<String>,
    /// Nodes the autoscaler made (kproximate removes only those).
    pub(super) autoscaled: BTreeSet<String>,
    pub(super) report: Report,
    /// The proactive side's durable windows (they survive a restart, as persisted).
    pub(super) windows: Windows,
    /// The proactive side's actuator state, driven by the production state machine.
    pub(super) status: ActuatorStatus,
    /// Provisions under way (proactive): one cloning at most, any number booting.
    pub(super) provisions: Vec<Provision>,
    /// The actuator generation the last plan was made on: a change asks for a fresh plan.
    pub(super) planned_on: u64,
    /// The one drain under way (proactive).
    pub(super) drain: Option<Drain>,
    /// Failures the scenario injects into the next provision attempts.
    pub(super) faults: std::collections::VecDeque<FailureReason>,
    /// Failures the world caused (injected or host memory short): each must be counted once.
    pub(super) failures_caused: u64,
    /// Failures counted by actuators that have since restarted.
    pub(super) failures_counted_before: u64,
    /// Host memory left for worker VMs (None: unlimited).
    pub(super) host_free: Option<i64>,
    /// Pods a drain evicted and when, until they are placed again: (since, drained node).
    pub(super) evicted: BTreeMap<NsName, (u64, String)>,
    /// When the scenario last created demand (pods or claims).
    pub(super) last_demand_at: Option<u64>,
    /// When each removal started.
    pub(super) removals: Vec<u64>,
    /// The pod being moved and when it left its node.
    pub(super) moving: Option<(NsName, u64)>,
}

/// A provision the world carries out: the clone ends (the VM boots) at `booting_at`, the Node
/// is Ready at `ready_at`, its CSI registers at `registered_at`.
pub(super) struct Provision {
    pub(super) vm: String,
    pub(super) booting_at: u64,
    pub(super) ready_at: u64,
    pub(super) registered_at: u64,
}

/// A drain the world carries out: the node is deleted at `until`.
pub(super) struct Drain {
    pub(super) node: String,
    pub(super) until: u64,
    pub(super) reason: String,
}

/// A pod evicted by a drain must be running again within this long.
pub(super) const STRANDED_AFTER: u64 = 900;

/// The simulated clock's start: the moment of second 0 (its value matters only to the
/// timestamps the decisions compare).
pub(super) const EPOCH: Timestamp = Timestamp(1_780_000_000_000);

pub(super) fn at(t: u64) -> Timestamp {
    EPOCH.plus(Duration::from_secs(t))
}

/// Replays `scenario` under `policy`; the report's `series` stays empty.
pub fn run(scenario: &Scenario, state: ClusterState, config: &Config, policy: Policy) -> Report {
    replay(scenario, state, config, policy, false)
}

/// [`run`], with the cluster sampled over time into the report's `series` (for `--plot`: a
/// view per change costs what the invariant checks do not need).
pub fn run_traced(scenario: &Scenario, state: ClusterState, config: &Config, policy: Policy) -> Report {
    replay(scenario, state, config, policy, true)
}

fn replay(scenario: &Scenario, state: ClusterState, config: &Config, policy: Policy, traced: bool) -> Report {
    let mut sim = Sim {
        traced,
        config,
        policy,
        state,
        waiting: BTreeMap::new(),
        stuck: BTreeSet::new(),
        booting: Vec::new(),
        spares: Vec::new(),
        autoscaled: BTreeSet::new(),
        report: Report {
            policy: format!("{policy:?}").to_lowercase(),
            ..Default::default()
        },
        windows: Windows::default(),
        status: ActuatorStatus::default(),
        provisions: Vec::new(),
        planned_on: u64::MAX,
        drain: None,
        faults: Default::default(),
        failures_caused: 0,
        failures_counted_before: 0,
        host_free: scenario
            .host_memory_free
            .as_deref()
            .and_then(|q| quantity::parse_scaled(q, 1).ok()),
        evicted: BTreeMap::new(),
        last_demand_at: None,
        removals: Vec::new(),
        moving: None,
    };
    let end = scenario.duration.0.as_secs();
    let mut creations: Vec<(u64, &CreatePods, u32)> = Vec::new();
    for e in &scenario.events {
        if let Some(c) = &e.create_pods {
            for i in 0..c.count {
                creations.push((e.at.0.as_secs() + u64::from(i) * c.every.0.as_secs(), c, i));
            }
        }
    }
    let mut moments: BTreeSet<u64> = creations.iter().map(|(at, _, _)| *at).collect();
    moments.extend(scenario.events.iter().map(|e| e.at.0.as_secs()));
    let mut t = 0;
    while t <= end {
        let mut created = false;
        for (_, c, i) in creations.iter().filter(|(at, _, _)| *at == t) {
            created |= sim.create_pod(t, c, *i);
        }
        let mut changed = created;
        for e in scenario.events.iter().filter(|e| e.at.0.as_secs() == t) {
            if let Some(d) = &e.delete_pods {
                sim.delete_pods(t, d);
            }
            if let Some(node) = &e.lose_node {
                sim.lose_node(t, node);
            }
            if let Some(f) = &e.fault {
                sim.faults
                    .extend(std::iter::repeat_n(f.reason.reason(), f.times as usize));
            }
            if e.restart {
                sim.restart(t);
            }
            if let Some(q) = &e.host_memory_free {
                sim.host_free = quantity::parse_scaled(q, 1).ok();
            }
            changed = true;
        }
        changed |= sim.boot(t);
        changed |= sim.progress(t);
        // The scheduler runs first: kproximate reacts to pods it could not place, and
        // headroom's projection sees new claims pending either way.
        changed |= sim.schedule(t);
        // headroom plans again whenever its actuator's state changed (a VM joining, a failure),
        // as the planning loop does; kproximate polls.
        let replan = policy == Policy::Proactive && (created || sim.status.generation != sim.planned_on);
        if t % TICK == 0 || replan {
            sim.autoscale(t, scenario);
        }
        sim.check_stranded(t);
        if sim.traced {
            sim.sample(t, changed);
        }
        let busy = !sim.booting.is_empty()
            || !sim.provisions.is_empty()
            || sim.drain.is_some()
            || sim.status.moving.is_some()
            || sim.status.retry_at.is_some()
            || sim.waiting.keys().any(|id| !sim.stuck.contains(id));
        let next = if busy {
            t + 1
        } else {
            // A change is looked at on the next poll; after that only the `for:` clocks move.
            // A rebalancing run moves every `interval`: the planner must look that often.
            let rebalancing = sim.windows.since.contains_key("rebalance");
            let step = if changed || rebalancing { TICK } else { IDLE_STEP };
            let tick = (t / step + 1) * step;
            moments.range(t + 1..).next().map_or(tick, |m| tick.min(*m))
        }
        .min(end + 1);
        let dt = next - t;
        sim.report.pending_pod_seconds += sim.waiting.len() as u64 * dt;
        for w in sim.waiting.values_mut() {
            *w += dt;
        }
        t = next;
    }
    sim.finish()
}

impl Sim<'_> {
    pub(super) fn view(&self) -> accounting::ClusterView {
        accounting::account(&self.state, &Settings::from(self.config), &Reservations::new())
    }

    /// VMs on their way: booting (reactive) or the actuator's intents (proactive).
    pub(super) fn incoming(&self) -> i64 {
        match self.policy {
            Policy::Reactive => self.booting.len() as i64,
            Policy::Proactive => self.status.incoming_vms(),
        }
    }

    /// Creates a pod and its claims; under the proactive policy the webhook may deny them.
    pub(super) fn create_pod(&mut self, t: u64, c: &CreatePods, i: u32) -> bool {
        self.last_demand_at = Some(t);
        let name = format!("{}-{i}", c.prefix);
        let claims: Vec<Name> = (0..c.block_volumes)
            .map(|v| Name::from(format!("data{v}-{name}")))
            .collect();
        if self.policy == Policy::Proactive && !claims.is_empty() {
            let view = self.view();
            let reservations = Reservations::new();
            let placement = Placement::new(&view, &reservations);
            let may_add = planner::room_for_vms(self.config, view.nodes.len(), self.incoming()) > 0;
            let outlook = Outlook {
                incoming: self.incoming() > 0,
                may_add,
            };
            let demand = BlockDemand {
                keys: claims
                    .iter()
                    .map(|cl| Name::from(format!("claim:{}/{cl}", c.namespace)))
                    .collect(),
                ..Default::default()
            };
            if let Outcome::Deny(_) =
                admission::validate_pod(placement, self.config, &demand, outlook).outcome
            {
                self.report.denied_requests += 1;
                return false;
            }
        }
        for claim in &claims {
            self.state.apply(Object::Claim(ClaimInfo {
                namespace: Name::from(&c.namespace),
                name: claim.clone(),
                storage_class: Some(Name::from(&c.storage_class)),
                volume_name: None,
            }));
        }
        let memory = quantity::parse_scaled(&c.memory, 1).unwrap_or(0);
        let id = ns_name(&c.namespace, &name);
        self.state.apply(Object::Pod(PodInfo {
            namespace: id.0.clone(),
            name: id.1.clone(),
            node_name: None,
            terminal: false,
            claims: claims.into(),
            memory_request: memory,
            memory_limit: memory,
            cpu_request_millis: 100,
            controller: Controller::Other,
            owner: owner_hash(&format!("{}/{}", c.namespace, c.prefix)),
            labels: Box::default(),
        }));
        self.waiting.insert(id, 0);
        true
    }

    /// Deletes pods by name prefix; their volumes detach (and go, with `deleteClaims`).
    pub(super) fn delete_pods(&mut self, t: u64, d: &DeletePods) {
        let gone: Vec<NsName> = self
            .state
            .pods
            .values()
            .filter(|p| p.name.starts_with(&d.prefix))
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        for id in &gone {
            let Some(Object::Pod(pod)) = self.state.delete(&ObjectKey {
                kind: Kind::Pod,
                namespace: id.0.clone(),
                name: id.1.clone(),
            }) else {
                continue;
            };
            self.waiting.remove(id);
            self.stuck.remove(id);
            for claim in &pod.claims {
                let key = (pod.namespace.clone(), claim.clone());
                let volume = self.state.claims.get(&key).and_then(|c| c.volume_name.clone());
                if let Some(pv) = &volume {
                    self.state
                        .attachments
                        .retain(|_, va| va.pv_name.as_ref() != Some(pv));
                }
                if d.delete_claims {
                    self.state.claims.remove(&key);
                    if let Some(pv) = volume {
                        self.state.volumes.remove(&pv);
                    }
                }
            }
        }
        let what = if d.delete_claims { " and their claims" } else { "" };
        self.report
            .timeline
            .push((t, format!("deleted {} pods {}*{what}", gone.len(), d.prefix)));
    }

    pub(super) fn lose_node(&mut self, t: u64, node: &str) {
        let evicted = self.evict_all(node);
        self.report
            .timeline
            .push((t, format!("lost node {node}; {evicted} pods to place again")));
    }

    /// Takes `node` out of the cluster: its attachments go and its pods wait for a new node.
    pub(super) fn evict_all(&mut self, node: &str) -> usize {
        self.state.nodes.remove(node);
        self.state.csi_nodes.remove(node);
        self.autoscaled.remove(node);
        self.state.attachments.retain(|_, va| va.node_name != node);
        let mut evicted = 0;
        for pod in self
            .state
            .pods
            .values_mut()
            .filter(|p| p.node_name.as_deref() == Some(node))
        {
            pod.node_name = None;
            let id = (pod.namespace.clone(), pod.name.clone());
            self.stuck.remove(&id);
            self.waiting.insert(id, 0);
            evicted += 1;
        }
        evicted
    }

    /// Nodes whose VM finished booting join; true when one did.
    pub(super) fn boot(&mut self, t: u64) -> bool {
        let ready: Vec<String> = self
            .booting
            .iter()
            .filter(|(at, _)| *at == t)
            .map(|(_, n)| n.clone())
            .collect();
        self.booting.retain(|(at, _)| *at != t);
        let count = self.hard_cap();
        let joined = !ready.is_empty();
        for name in ready {
            self.join(&name, Some(count));
            self.report.timeline.push((t, format!("{name} Ready")));
        }
        joined
    }

    /// Evicts a moved pod: its volumes detach from its node and it waits for the scheduler,
    /// as a controller's replacement would.
    pub(super) fn start_move(&mut self, t: u64, m: &PodMove) {
        let id = ns_name(&m.namespace, &m.name);
        let Some(pod) = self.state.pods.get(&id).cloned() else {
            return;
        };
        let interval = self.config.rebalance.interval.0.as_secs();
        let previous_ended = self.status.outcomes.iter().rev().find_map(|o| {
            matches!(o.kind, OutcomeKind::Moved | OutcomeKind::MoveFailed)
                .then(|| o.at.since(EPOCH).as_secs())
        });
        if let Some(ended) = previous_ended
            && m.cause == rebalance::MoveCause::Rebalance
            && t - ended < interval
        {
            self.violation(t, format!("a move {}s after the last one ended", t - ended));
        }
        if let Some(((ns, name), since)) = &self.moving {
            let what = format!("a move started while {ns}/{name}'s, from {since}s, was under way");
            self.violation(t, what);
        }
        let spread = {
            let view = self.view();
            let counts: Vec<i64> = view
                .schedulable()
                .filter(|n| n.block_ready)
                .map(|n| n.block_volumes)
                .collect();
            counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
        };
        let stop_at = self.config.rebalance.stop_at;
        if m.cause == rebalance::MoveCause::Rebalance && spread <= stop_at {
            self.violation(t, format!("a move at spread {spread}, at most stopAt {stop_at}"));
        }
        if let Some(why) = planner::immovable(&self.state, &pod, &m.from) {
            self.violation(t, format!("moved a pod whose volumes cannot follow it: {why}"));
        }
        self.evict(t, &pod, &m.from);
        self.moving = Some((id, t));
        self.report.timeline.push((
            t,
            format!(
                "move: {}/{} evicted from {} ({})",
                m.namespace, m.name, m.from, m.reason
            ),
        ));
    }

    /// The move under way settles once its pod runs elsewhere (the production rule).
    pub(super) fn settle_move(&mut self, t: u64) -> bool {
        let Some(moving) = self.status.moving.clone() else {
            return false;
        };
        let Some(result) = rebalance::settle(&self.state, &moving, at(t)) else {
            return false;
        };
        let landed = self
            .state
            .pods
            .get(&ns_name(&moving.pod.namespace, &moving.pod.name))
            .and_then(|p| p.node_name.clone())
            .unwrap_or_default();
        if let Some((_, since)) = self.moving.take() {
            self.report.longest_move_wait = self.report.longest_move_wait.max(t - since);
        }
        if result == MoveResult::Moved {
            self.report.moves += 1;
        }
        let detail = format!(
            "move: {}/{} {} ({} → {landed})",
            moving.pod.namespace,
            moving.pod.name,
            result.as_str(),
            moving.pod.from
        );
        self.report.timeline.push((t, detail.clone()));
        self.status.move_ended(result, detail, at(t));
        true
    }

    pub(super) fn violation(&mut self, t: u64, what: String) {
        self.report.timeline.push((t, format!("VIOLATION: {what}")));
        self.report.violations.push(format!("{t}s: {what}"));
    }

    /// A worker name no node, spare or boot uses.
    pub(super) fn free_name(&self) -> String {
        let pattern = self
            .config
            .proxmox
            .as_ref()
            .map_or("k8s-node{n}".to_owned(), |p| p.vm.name_pattern.clone());
        (1..)
            .map(|n| pattern.replace("{n}", &n.to_string()))
            .find(|n| {
                !self.state.nodes.contains_key(n.as_str())
                    && !self.spares.contains(n)
                    && !self.booting.iter().any(|(_, b)| b == n)
                    && !self.provisions.iter().any(|p| &p.vm == n)
            })
            .expect("unbounded")
    }

    /// The provisions and the drain under way move on; true when the cluster changed.
    pub(super) fn progress(&mut self, t: u64) -> bool {
        let mut changed = false;
        let due: Vec<(String, u64, u64, u64)> = self
            .provisions
            .iter()
            .map(|p| (p.vm.clone(), p.booting_at, p.ready_at, p.registered_at))
            .collect();
        for (vm, booting_at, ready_at, registered_at) in due {
            let intent = |s: &ActuatorStatus| {
                s.intents
                    .iter()
                    .position(|i| i.vm.as_deref() == Some(vm.as_str()))
            };
            if t >= booting_at
                && let Some(i) = intent(&self.status)
                && self.status.intents[i].phase != Phase::Joining
            {
                self.status.progress(i, Phase::Joining, None, at(t));
            }
            if t >= ready_at && !self.state.nodes.contains_key(vm.as_str()) {
                self.join(&vm, None);
                self.report.timeline.push((t, format!("{vm} Ready")));
                changed = true;
            }
            if t >= registered_at {
                self.join(&vm, Some(self.hard_cap()));
                if let Some(i) = intent(&self.status) {
                    self.status.joined(i, &vm, format!("added worker {vm}"), at(t));
                }
                self.provisions.retain(|p| p.vm != vm);
                self.report
                    .timeline
                    .push((t, format!("{vm}: block driver registered")));
                changed = true;
            }
        }
        changed |= self.settle_move(t);
        if let Some(d) = &self.drain
            && t >= d.until
        {
            let (node, reason) = (d.node.clone(), d.reason.clone());
            self.drain = None;
            self.finish_drain(t, &node, &reason);
            changed = true;
        }
        changed
    }

    /// Cordons `node` and evicts what a drain evicts; the Node goes at the drain's end.
    pub(super) fn start_drain(&mut self, t: u64, scenario: &Scenario, node: &str, reason: &str) {
        if let Some(r) = self.removals.last().copied() {
            let window = self.config.scale_down.r#for.0.as_secs();
            if t - r < window {
                self.violation(t, format!("a second removal {}s after the one at {r}s", t - r));
            }
        }
        self.removals.push(t);
        if let Some(n) = self.state.nodes.get_mut(node) {
            n.unschedulable = true;
        }
        let on_node: Vec<NsName> = self
            .state
            .pods
            .values()
            .filter(|p| !p.terminal && p.node_name.as_deref() == Some(node))
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let mut evicted = 0;
        for id in on_node {
            let Some(pod) = self.state.pods.get(&id).cloned() else {
                continue;
            };
            if !pod.controller.evicted_by_drain() {
                continue;
            }
            if pod.controller == Controller::None {
                self.violation(
                    t,
                    format!("{}/{} evicted with no controller to place it again", id.0, id.1),
                );
            }
            self.evict(t, &pod, node);
            evicted += 1;
        }
        self.drain = Some(Drain {
            node: node.to_owned(),
            until: t + scenario.drain_time.0.as_secs(),
            reason: reason.to_owned(),
        });
        self.report.timeline.push((
            t,
            format!("scale-down: draining {node} ({evicted} pods evicted): {reason}"),
        ));
    }

    /// The drained node goes; its VM is kept as a cold spare (`shutdown`) or deleted.
    pub(super) fn finish_drain(&mut self, t: u64, node: &str, reason: &str) {
        // What stays on a drained node (DaemonSet and static pods) goes with it.
        self.state
            .pods
            .retain(|p| p.node_name.as_deref() != Some(node) || p.terminal);
        self.state.nodes.remove(node);
        self.state.csi_nodes.remove(node);
        self.state.attachments.retain(|_, va| va.node_name != node);
        let keep = self.config.scale_down.action == ScaleDownAction::Shutdown;
        let vm = if keep {
            self.spares.push(node.to_owned());
            "VM kept as a cold spare"
        } else {
            "VM deleted"
        };
        if let Some(free) = &mut self.host_free {
            *free += VmCapacity::from_config(self.config).memory_bytes;
        }
        self.report.scale_downs += 1;
        self.status.removal_ended(
            OutcomeKind::Removed,
            node,
            format!("removed worker {node}: {reason}"),
            at(t),
        );
        self.report
            .timeline
            .push((t, format!("scale-down: {node} removed, {vm}")));
    }

    /// Evicts `pod` from `node`, as the Eviction API and its controller would: its volumes
    /// detach, and it waits for the scheduler; it must run again within [`STRANDED_AFTER`].
    pub(super) fn evict(&mut self, t: u64, pod: &PodInfo, node: &str) {
        let id = (pod.namespace.clone(), pod.name.clone());
        self.detach(pod, node);
        if let Some(mut p) = self.state.pods.get(&id).cloned() {
            p.node_name = None;
            self.state.apply(Object::Pod(*p));
        }
        self.stuck.remove(&id);
        self.waiting.insert(id.clone(), 0);
        self.evicted.insert(id, (t, node.to_owned()));
    }

    /// A pod's volumes detach from `node` (its attachments go).
    pub(super) fn detach(&mut self, pod: &PodInfo, node: &str) {
        for claim in &pod.claims {
            let pv = self
                .state
                .claims
                .get_str(&pod.namespace, claim)
                .and_then(|c| c.volume_name.clone());
            if let Some(pv) = pv {
                self.state
                    .attachments
                    .retain(|_, va| !(va.node_name == node && va.pv_name.as_ref() == Some(&pv)));
            }
        }
    }

    /// Pods a drain evicted that have waited too long to run again.
    pub(super) fn check_stranded(&mut self, t: u64) {
        if self.policy != Policy::Proactive {
            return;
        }
        // Placed again: no longer waiting.
        let waiting = &self.waiting;
        self.evicted.retain(|id, _| waiting.contains_key(id));
        let stranded: Vec<(NsName, (u64, String))> = self
            .evicted
            .iter()
            .filter(|(_, (since, _))| t - since > STRANDED_AFTER)
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, (since, node)) in stranded {
            self.evicted.remove(&id);
            self.violation(
                t,
                format!(
                    "{}/{} evicted from {node} at {since}s has not run again",
                    id.0, id.1
                ),
            );
        }
    }

    /// headroom restarts: the status is rebuilt from Proxmox (a VM in flight is resumed,
    /// queued intents are gone) and from what it persisted (windows, last scale times).
    pub(super) fn restart(&mut self, t: u64) {
        let mut status = ActuatorStatus {
            last_scale_up: self.status.last_scale_up,
            last_scale_down: self.status.last_scale_down,
            demand_at_scale_down: self.status.demand_at_scale_down,
            last_move: self.status.last_move,
            ..Default::default()
        };
        // A move dies with the process: its pod is placed again, nobody waits for it.
        self.moving = None;
        let in_flight: Vec<String> = self.provisions.iter().map(|p| p.vm.clone()).collect();
        status.resume(&in_flight, VmCapacity::from_config(self.config), at(t));
        for (i, p) in self.provisions.iter().enumerate() {
            if t >= p.booting_at {
                status.progress(i, Phase::Joining, None, at(t));
            }
        }
        // A drain dies with the process: the node is uncordoned, what moved stays moved.
        if let Some(d) = self.drain.take() {
            if let Some(n) = self.state.nodes.get_mut(d.node.as_str()) {
                n.unschedulable = false;
            }
            self.report
                .timeline
                .push((t, format!("drain of {} abandoned by the restart", d.node)));
        }
        self.failures_counted_before += self.status.failures;
        self.status = status;
        self.report.timeline.push((t, "headroom restarted".into()));
    }

    /// Adds or updates `name`'s Node (Ready) and CSINode (the block driver, with `count` once
    /// registered).
    pub(super) fn join(&mut self, name: &str, count: Option<i64>) {
        let vm = VmCapacity::from_config(self.config);
        self.state.nodes.insert(
            name.into(),
            NodeInfo {
                name: name.into(),
                ready: true,
                memory_allocatable: vm.memory_bytes - 700 * 1024 * 1024,
                cpu_allocatable_millis: self.vm_cpu_millis(),
                ..Default::default()
            },
        );
        let drivers = [(self.config.block_driver.clone(), count)].into_iter().collect();
        self.state.csi_nodes.insert(
            name.into(),
            CsiNodeInfo {
                name: name.into(),
                drivers,
            },
        );
    }

    /// The attach limit of the cluster's workers.
    pub(super) fn hard_cap(&self) -> i64 {
        self.state
            .csi_nodes
            .values()
            .filter_map(|c| c.drivers.get(&self.config.block_driver).copied().flatten())
            .max()
            .unwrap_or(i64::from(self.config.hard_cap_default))
    }

    /// One worker VM's CPU in millicores (its configured cores; 8 without a `proxmox:` section).
    pub(super) fn vm_cpu_millis(&self) -> i64 {
        self.config.proxmox.as_ref().map_or(8, |p| i64::from(p.vm.cores)) * 1000
    }

    /// Places waiting pods, first come first served; true when one was placed.
    pub(super) fn schedule(&mut self, t: u64) -> bool {
        let waiting: Vec<NsName> = self
            .waiting
            .keys()
            .filter(|id| !self.stuck.contains(*id))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return false;
        }
        let mut placed = false;
        // Only a placement changes the view; pods that fit nowhere leave it as it is.
        let mut view = self.view();
        for id in waiting {
            let reservations = Reservations::new();
            let placement = Placement::new(&view, &reservations);
            let Some(pod) = self.state.pods.get(&id).cloned() else {
                continue;
            };
            let keys = pod_block_keys(&view, &pod);
            let fits_memory: Vec<Name> = view
                .schedulable()
                .filter(|n| n.memory_allocatable_bytes - n.memory_requested_bytes >= pod.memory_request)
                .map(|n| n.name.clone())
                .collect();
            // `needed` borrows the view, which a placement below replaces.
            let chosen = {
                let needed = placement.needed_on(&keys);
                match self.policy {
                    Policy::Proactive => {
                        let demand = BlockDemand {
                            keys: keys.clone(),
                            ..Default::default()
                        };
                        let passed = extender::filter(placement, &demand, &fits_memory).passed;
                        let scores = extender::prioritize(
                            placement,
                            &demand,
                            pod.memory_request,
                            self.config.scoring,
                            &passed,
                        );
                        scores.iter().max_by_key(|(_, s)| *s).map(|(n, _)| n.to_string())
                    }
                    Policy::Reactive => fits_memory
                        .iter()
                        .filter_map(|n| view.node(n))
                        .filter(|n| n.block_volumes + needed(n) <= n.hard_cap)
                        .min_by(|a, b| {
                            let ra =
                                a.memory_requested_bytes as f64 / a.memory_allocatable_bytes.max(1) as f64;
                            let rb =
                                b.memory_requested_bytes as f64 / b.memory_allocatable_bytes.max(1) as f64;
                            ra.total_cmp(&rb)
                        })
                        .map(|n| n.name.to_string()),
                }
            };
            let Some(node) = chosen else { continue };
            let before = view.node(&node).map_or(0, |n| n.block_volumes);
            self.bind(&id, &node);
            placed = true;
            view = self.view();
            let after = before + keys.len() as i64;
            let soft_cap = view.node(&node).map_or(i64::MAX, |n| n.soft_cap);
            if self.policy == Policy::Proactive && !keys.is_empty() && after > soft_cap && before <= soft_cap
            {
                self.violation(
                    t,
                    format!(
                        "{}/{} placed on {node} past its soft cap ({after}/{soft_cap})",
                        id.0, id.1
                    ),
                );
            }
            if !keys.is_empty() && after >= ATTACH_FAILS_FROM {
                self.stuck.insert(id.clone());
                self.report.timeline.push((
                    t,
                    format!(
                        "{}/{} stuck ContainerCreating on {node} ({after} LUNs)",
                        id.0, id.1
                    ),
                ));
            } else {
                self.waiting.remove(&id);
            }
        }
        placed
    }

    /// Binds a pod: its claims get PVs and attachments on the node.
    pub(super) fn bind(&mut self, id: &NsName, node: &str) {
        let Some(mut pod) = self.state.pods.get(id).cloned() else {
            return;
        };
        pod.node_name = Some(node.into());
        let claims = pod.claims.clone();
        self.state.apply(Object::Pod(*pod));
        for c in claims {
            let Some(claim) = self.state.claims.get_mut(&(id.0.clone(), c.clone())) else {
                continue;
            };
            if claim.volume_name.is_some() {
                continue;
            }
            let pv = Name::from(format!("pv-{}-{c}", id.0));
            claim.volume_name = Some(pv.clone());
            self.state.volumes.insert(
                pv.clone(),
                VolumeInfo {
                    name: pv.clone(),
                    csi_driver: Some(Name::from(&self.config.block_driver)),
                    volume_handle: Some(format!("sim/{pv}").into()),
                    pinned_to: Box::default(),
                },
            );
            self.state.attachments.insert(
                format!("va-{pv}").into(),
                AttachmentInfo {
                    name: format!("va-{pv}").into(),
                    attacher: Name::from(&self.config.block_driver),
                    node_name: node.into(),
                    pv_name: Some(pv),
                    inline_handle: None,
                    attached: true,
                    detaching: false,
                    attach_error: false,
                },
            );
        }
    }

    /// Records the cluster for the plot when it changed, and every five minutes anyway.
    pub(super) fn sample(&mut self, t: u64, changed: bool) {
        const EVERY: u64 = 300;
        let due = self.report.series.last().is_none_or(|s| t >= s.t + EVERY);
        if !changed && !due {
            return;
        }
        let view = self.view();
        self.report.series.push(Sample {
            t,
            schedulable_nodes: view.schedulable().count() as i64,
            waiting_pods: self.waiting.len() as i64,
            free_block_slots: view.room() - view.pending_block_claims(),
            fullest_node: view.max_node_block_volumes(),
        });
    }

    pub(super) fn finish(mut self) -> Report {
        let counted = self.failures_counted_before + self.status.failures;
        self.report.provision_failures = counted as u32;
        if counted != self.failures_caused {
            self.violation(
                u64::MAX,
                format!(
                    "{} provision failures happened, {counted} counted",
                    self.failures_caused
                ),
            );
        }
        let view = self.view();
        self.report.max_node_block_volumes = view.max_node_block_volumes();
        let counts: Vec<i64> = view.schedulable().map(|n| n.block_volumes).collect();
        self.report.spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
        self.report.stuck_pods = self.stuck.len() as u32;
        self.report.cold_spares = self.spares.len() as u32;
        self.report.nodes = counts.len() as u32;
        self.report.pods_running = self.state.pods.values().filter(|p| p.node_name.is_some()).count() as u32
            - self.report.stuck_pods;
        self.report.timeline.sort();
        self.report
    }
}
