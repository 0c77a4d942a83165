//! The two policies the world is run under: headroom's loop (the production tick and the
//! actuator's state machine) and kproximate's (poll Pending pods every 10 s, one VM at a
//! time; remove a node it made once the others' allocatable covers its requests with 20%
//! headroom).

use crate::decide::{
    accounting::{self, Reservations},
    actuation::{Accepted, FailureReason, Phase, Planned},
    planner,
    projection::{AdmittedDemand, VmCapacity},
    tick::{self, TickInput},
};

use super::{
    scenario::Scenario,
    world::{Provision, Sim, at},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Proactive,
    Reactive,
}

/// kproximate's `loadHeadroom` (its minimum, and default).
const KPROXIMATE_LOAD_HEADROOM: f64 = 0.2;

impl Sim<'_> {
    /// kproximate drains and removes `node` at once and deletes its VM.
    pub(super) fn remove_node(&mut self, t: u64, node: &str, why: &str) {
        let evicted = self.evict_all(node);
        self.report.scale_downs += 1;
        self.report.timeline.push((
            t,
            format!("scale-down: {node} drained ({evicted} pods evicted), VM deleted ({why})"),
        ));
    }

    /// kproximate clones `count` VMs (it keeps no spares).
    pub(super) fn add_vms(&mut self, t: u64, scenario: &Scenario, count: i64, why: &str) {
        for _ in 0..count {
            let name = self.free_name();
            self.booting
                .push((t + scenario.vm_boot_time.0.as_secs(), name.clone()));
            self.autoscaled.insert(name.clone());
            self.report.scale_ups += 1;
            self.report
                .timeline
                .push((t, format!("scale-up: {name} cloned ({why})")));
        }
    }

    pub(super) fn autoscale(&mut self, t: u64, scenario: &Scenario) {
        let room = planner::room_for_vms(self.config, self.state.nodes.len(), self.booting.len() as i64);
        match self.policy {
            Policy::Reactive => {
                // kproximate sees only Pending pods that fit no node; stuck ones are "running".
                let pending = self.waiting.keys().any(|id| !self.stuck.contains(id));
                if pending && self.booting.is_empty() && room > 0 {
                    self.add_vms(t, scenario, 1, "pending pods");
                } else if !pending
                    && self.booting.is_empty()
                    && let Some((node, why)) = self.kproximate_scale_down_target()
                {
                    self.remove_node(t, &node, &why);
                }
            }
            Policy::Proactive => self.plan_and_act(t, scenario),
        }
    }

    /// One planning tick and what the actuator's state machine makes of its plan, with the
    /// invariants checked on the way.
    pub(super) fn plan_and_act(&mut self, t: u64, scenario: &Scenario) {
        let view = self.view();
        let reservations = Reservations::new();
        let tick = tick::tick(
            &TickInput {
                state: &self.state,
                view: &view,
                reservations: &reservations,
                config: self.config,
                admitted: AdmittedDemand::default(),
                actuator: &self.status,
            },
            &mut self.windows,
            at(t),
        );
        let planned = Planned {
            basis: tick.basis,
            plan: tick.plan.clone(),
        };
        let before = self.status.incoming_vms();
        let capacity = VmCapacity::from_config(self.config);
        let accepted = self.status.accept(&planned, capacity, at(t), false);
        let after = self.status.incoming_vms();
        if after > before {
            // Zero slack: never more on its way than the fewest that clear the triggers and
            // hold the pending pods, as a tick made now counts them.
            let needed = tick
                .sizing
                .vms_needed
                .unwrap_or(before + tick.sizing.room_for_vms);
            if after > needed {
                self.violation(t, format!("{after} VMs on their way, {needed} needed"));
            }
            let window = self.config.scale_down.r#for.0.as_secs();
            if let Some(r) = self.removals.last().copied()
                && t - r < window
                && self.last_demand_at.is_none_or(|d| d <= r)
                && tick.sizing.unfit_pods == 0
            {
                self.violation(
                    t,
                    format!(
                        "a scale-up {}s after the removal at {r}s, with no demand since",
                        t - r
                    ),
                );
            }
        }
        if let Accepted::Evict(m) = &accepted {
            self.start_move(t, m);
        }
        if let Accepted::Remove {
            node,
            reason,
            singletons,
        } = accepted
        {
            if !singletons.is_empty() {
                self.report.timeline.push((
                    t,
                    format!("singletons named before the drain: {}", singletons.join(", ")),
                ));
            }
            self.start_drain(t, scenario, &node, &reason);
        }
        self.start_next(t, scenario);
        self.planned_on = self.status.generation;
    }

    /// Starts the next queued intent if the state machine lets one start: a cold spare when
    /// the host has the memory, else a clone; an injected fault fails it instead.
    pub(super) fn start_next(&mut self, t: u64, scenario: &Scenario) {
        let Some(index) = self.status.next_to_start(at(t)) else {
            return;
        };
        self.status.progress(index, Phase::Cloning, None, at(t));
        let memory = VmCapacity::from_config(self.config).memory_bytes;
        let fault = self.faults.pop_front().or_else(|| {
            self.host_free
                .is_some_and(|free| free < memory)
                .then_some(FailureReason::NoCapacity)
        });
        if let Some(reason) = fault {
            self.failures_caused += 1;
            let detail = format!("provision failed ({})", reason.as_str());
            self.report.timeline.push((t, detail.clone()));
            let left = (reason == FailureReason::Task).then_some("failed-vm");
            self.status.failed(index, reason, left, detail, at(t));
            return;
        }
        if let Some(free) = &mut self.host_free {
            *free -= memory;
        }
        let reason = self.status.intents[index].reason.clone();
        let (name, boot, clone, how) = match self.spares.pop() {
            Some(spare) => (spare, scenario.cold_spare_boot_time, 0, "cold spare started"),
            None => {
                let clone = scenario.clone_time.0.min(scenario.vm_boot_time.0).as_secs();
                (self.free_name(), scenario.vm_boot_time, clone, "cloned")
            }
        };
        self.status.progress(index, Phase::Starting, Some(&name), at(t));
        let ready_at = t + boot.0.as_secs();
        self.provisions.push(Provision {
            vm: name.clone(),
            booting_at: t + clone,
            ready_at,
            registered_at: ready_at + scenario.csi_registration_delay.0.as_secs(),
        });
        // A started spare boots at once: it is joining from now on.
        self.progress(t);
        self.report.scale_ups += 1;
        self.report
            .timeline
            .push((t, format!("scale-up: {name} {how} ({reason})")));
    }

    /// kproximate's `AssessScaleDown`: with A the requests of pods on the nodes it made, T the
    /// allocatable of every schedulable worker and n one VM, remove one when A·(1+h) < T − n for
    /// memory and CPU; the node with the smallest requests relative to a VM goes.
    pub(super) fn kproximate_scale_down_target(&self) -> Option<(String, String)> {
        if self.autoscaled.is_empty() {
            return None;
        }
        let view = self.view();
        let vm = VmCapacity::from_config(self.config);
        let vm_cpu = self.vm_cpu_millis();
        let workers: Vec<&accounting::NodeUsage> = view.schedulable().collect();
        let ours: Vec<&accounting::NodeUsage> = workers
            .iter()
            .copied()
            .filter(|n| self.autoscaled.contains(n.name.as_str()))
            .collect();
        let sum = |nodes: &[&accounting::NodeUsage], f: fn(&accounting::NodeUsage) -> i64| {
            nodes.iter().map(|n| f(n) as f64).sum::<f64>()
        };
        // A = 0 always passes; else A·(1+h) < T − n.
        let fits = |requested: f64, allocatable: f64, size: i64| {
            requested == 0.0 || requested * (1.0 + KPROXIMATE_LOAD_HEADROOM) < allocatable - size as f64
        };
        let memory_ok = fits(
            sum(&ours, |n| n.memory_requested_bytes),
            sum(&workers, |n| n.memory_allocatable_bytes),
            vm.memory_bytes,
        );
        let cpu_ok = fits(
            sum(&ours, |n| n.cpu_requested_millis),
            sum(&workers, |n| n.cpu_allocatable_millis),
            vm_cpu,
        );
        if !(memory_ok && cpu_ok) {
            return None;
        }
        let load = |n: &accounting::NodeUsage| {
            n.cpu_requested_millis as f64 / vm_cpu as f64
                + n.memory_requested_bytes as f64 / vm.memory_bytes as f64
        };
        ours.iter().min_by(|a, b| load(a).total_cmp(&load(b))).map(|n| {
            (
                n.name.to_string(),
                "requests fit the other nodes with 20% headroom".to_owned(),
            )
        })
    }
}
