//! What the actuator publishes about itself: provisions in flight with the capacity each will
//! bring, the removal under way, when it last scaled, and what its recent steps came to.
//!
//! The actuator is the only writer; the planning tick, `status` and the handlers read these
//! values. A plan names the `generation` it was made from, so the actuator can refuse a plan
//! made before its own state changed (a plan made while a VM was joining must not run after
//! it joined).
//!
//! The state changes themselves are pure methods here: the production actuator and the
//! simulated world both drive them, and only carry out the effects differently.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::decide::{
    planner::Plan,
    projection::VmCapacity,
    rebalance::{MoveInProgress, MoveResult, PodMove},
    time::Timestamp,
};

/// Backoff after a transient failure (PVE unreachable, 5xx, 595/596), doubled per failure in
/// a row up to the cap: seconds, not the quarter hour a broken template gets.
pub const TRANSIENT_BACKOFF: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(120));
/// Backoff after any other failure (a broken template must not loop).
pub const FAILURE_BACKOFF: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(15 * 60));

/// A plan and the actuator generation it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub basis: u64,
    pub plan: Plan,
}

impl Default for Planned {
    fn default() -> Self {
        Planned {
            basis: u64::MAX,
            plan: Plan::Nothing,
        }
    }
}

/// What the actuator must do after taking a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Made before the last change: dropped (a fresh one follows the change).
    Stale,
    /// Nothing to carry out now (queued intents may start).
    Nothing,
    /// Drain and remove `node`, naming `singletons` first.
    Remove {
        node: String,
        reason: String,
        singletons: Vec<String>,
    },
    /// Evict this pod through the Eviction API.
    Evict(PodMove),
}

/// How long a pod whose eviction was refused is passed over by the next moves.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(3600);

/// How many outcomes are kept for `status`.
pub const OUTCOMES_KEPT: usize = 20;

/// The actuator's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActuatorStatus {
    /// Bumped on every change.
    pub generation: u64,
    /// VMs on their way: queued, being cloned, booting or waiting to register.
    pub intents: Vec<Intent>,
    /// The node being drained and removed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removal: Option<Removal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<Timestamp>,
    /// The demand the last removal was decided on: within `scaleDown.for` of it, only demand
    /// beyond this is a reason to scale up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand_at_scale_down: Option<DemandLevel>,
    /// The pod being moved (evicted, its replacement not yet on another node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveInProgress>,
    /// When the last move ended: the next waits `rebalance.interval` from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_move: Option<Timestamp>,
    /// Pods (`namespace/name`) not to move again for [`REFUSAL_MEMORY`], and since when: their
    /// eviction was refused (a disruption budget), or they were just moved (a pod that finds
    /// no LUN on its new node too gets a VM, not a third node).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub passed_over: BTreeMap<String, Timestamp>,
    /// No provision starts before this (a failure backs off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// What recent steps came to, newest last.
    pub outcomes: VecDeque<Outcome>,
    /// Failures in a row, for the backoff.
    pub failures_in_a_row: u32,
    /// Provisions that ended without a node since this process started.
    pub failures: u64,
    /// A plan made on the current generation was taken: queued intents may start. Not
    /// published state; the actuator's own bookkeeping.
    #[serde(skip)]
    pub confirmed: bool,
}

impl ActuatorStatus {
    /// VMs in flight, queued ones included: a plan for N counts all N at once.
    pub fn incoming_vms(&self) -> i64 {
        self.intents.len() as i64
    }

    /// Intents not yet started (their VM not chosen): a newer plan may still drop them.
    pub fn queued(&self) -> usize {
        self.intents.iter().filter(|i| i.phase == Phase::Queued).count()
    }

    /// Records an outcome, keeping the last [`OUTCOMES_KEPT`].
    pub fn record(&mut self, at: Timestamp, kind: OutcomeKind, subject: &str, detail: String) {
        if self.outcomes.len() == OUTCOMES_KEPT {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(Outcome {
            at,
            kind,
            subject: subject.to_owned(),
            detail,
        });
    }

    /// The move under way ended with `result`: the next may start `rebalance.interval` from
    /// now.
    pub fn move_ended(&mut self, result: MoveResult, detail: String, now: Timestamp) {
        let Some(m) = self.moving.take() else { return };
        self.last_move = Some(now);
        self.passed_over.retain(|_, at| now.since(*at) < REFUSAL_MEMORY);
        if matches!(result, MoveResult::Blocked | MoveResult::Moved) {
            self.passed_over
                .insert(format!("{}/{}", m.pod.namespace, m.pod.name), now);
        }
        let kind = match result {
            MoveResult::Moved => OutcomeKind::Moved,
            _ => OutcomeKind::MoveFailed,
        };
        self.record(now, kind, &m.pod.from, detail);
        self.bump();
    }

    /// A change others must see: a new generation, and plans made before it are refused.
    pub fn bump(&mut self) {
        self.generation += 1;
        self.confirmed = false;
    }

    /// Takes `planned`. A plan for N VMs queues N intents at once; a cancel drops queued
    /// ones; a removal is marked in progress. `dry_run`: nothing is queued or removed, what
    /// would be done is recorded once.
    pub fn accept(
        &mut self,
        planned: &Planned,
        capacity: VmCapacity,
        now: Timestamp,
        dry_run: bool,
    ) -> Accepted {
        if planned.basis != self.generation {
            return Accepted::Stale;
        }
        self.confirmed = true;
        match &planned.plan {
            Plan::Nothing => Accepted::Nothing,
            Plan::ScaleUp { count, reason } if dry_run => {
                self.would_do("", format!("would add {count} worker VM(s): {reason}"), now);
                Accepted::Nothing
            }
            Plan::ScaleDown { node, reason, .. } if dry_run => {
                self.would_do(node, format!("would drain and remove {node}: {reason}"), now);
                Accepted::Nothing
            }
            Plan::Move(m) if dry_run => {
                self.would_do(
                    &m.from,
                    format!(
                        "would move {}/{} off {}: {}",
                        m.namespace, m.name, m.from, m.reason
                    ),
                    now,
                );
                Accepted::Nothing
            }
            Plan::Move(m) => {
                self.moving = Some(MoveInProgress {
                    pod: m.clone(),
                    since: now,
                });
                // Should the process die mid-move, the next waits the interval from here.
                self.last_move = Some(now);
                self.bump();
                Accepted::Evict(m.clone())
            }
            Plan::ScaleUp { count, reason } => {
                for _ in 0..(*count).max(0) {
                    self.intents.push(Intent {
                        vm: None,
                        phase: Phase::Queued,
                        capacity,
                        reason: reason.clone(),
                        since: now,
                    });
                }
                self.bump();
                // Just decided on the current state: the first may start without another plan.
                self.confirmed = true;
                Accepted::Nothing
            }
            Plan::Cancel { count, reason } => {
                let mut dropped = 0;
                while dropped < *count
                    && let Some(i) = self.intents.iter().rposition(|i| i.phase == Phase::Queued)
                {
                    self.intents.remove(i);
                    dropped += 1;
                }
                self.record(
                    now,
                    OutcomeKind::Cancelled,
                    "",
                    format!("dropped {dropped} queued VM(s): {reason}"),
                );
                self.bump();
                Accepted::Nothing
            }
            Plan::ScaleDown {
                node,
                reason,
                demand,
                singletons,
            } => {
                self.removal = Some(Removal {
                    node: node.clone(),
                    since: now,
                });
                // The window starts again now: should the process die mid-drain, the next
                // one does not remove another node at once.
                self.last_scale_down = Some(now);
                self.demand_at_scale_down = Some(*demand);
                self.bump();
                Accepted::Remove {
                    node: node.clone(),
                    reason: reason.clone(),
                    singletons: singletons.clone(),
                }
            }
        }
    }

    fn would_do(&mut self, subject: &str, detail: String, now: Timestamp) {
        if self.outcomes.back().is_none_or(|o| o.detail != detail) {
            self.record(now, OutcomeKind::WouldDo, subject, detail);
            self.bump();
            self.confirmed = true;
        }
    }

    /// The queued intent to start now, if one may: a plan on the current state was taken, no
    /// other VM is being cloned or started (one clone at a time; VMs already joining do not
    /// hold it), and no backoff is pending.
    pub fn next_to_start(&self, now: Timestamp) -> Option<usize> {
        if !self.confirmed
            || self
                .intents
                .iter()
                .any(|i| matches!(i.phase, Phase::Cloning | Phase::Starting))
            || self.retry_at.is_some_and(|at| at > now)
        {
            return None;
        }
        self.intents.iter().position(|i| i.phase == Phase::Queued)
    }

    /// The backoff ended: queued intents may start once a fresh plan confirms them.
    pub fn retry_due(&mut self) {
        self.retry_at = None;
        self.bump();
    }

    /// Intent `index` moved on (its VM chosen, cloning, starting, joining). Others must see
    /// it; our own progress needs no new plan, except that a VM left to join frees the way for
    /// the next queued one, which starts only once a plan made on this state still wants it.
    pub fn progress(&mut self, index: usize, phase: Phase, vm: Option<&str>, now: Timestamp) {
        if let Some(intent) = self.intents.get_mut(index) {
            if intent.phase == Phase::Queued {
                self.last_scale_up = Some(now);
            }
            intent.phase = phase;
            if let Some(vm) = vm {
                intent.vm = Some(vm.to_owned());
            }
        }
        self.bump();
        self.confirmed = phase != Phase::Joining;
    }

    /// Intent `index` ended in a registered worker `vm`.
    pub fn joined(&mut self, index: usize, vm: &str, detail: String, now: Timestamp) {
        if index < self.intents.len() {
            self.intents.remove(index);
        }
        self.failures_in_a_row = 0;
        self.retry_at = None;
        self.record(now, OutcomeKind::Added, vm, detail);
        self.bump();
    }

    /// Intent `index` failed for `reason`; `vm_left` when a VM exists (it is marked failed,
    /// never reused). A transient failure before any VM existed keeps the intent queued; any
    /// other drops it (the next plan asks again if the demand is still there). Either way a
    /// backoff starts, doubling per failure in a row.
    pub fn failed(
        &mut self,
        index: usize,
        reason: FailureReason,
        vm_left: Option<&str>,
        detail: String,
        now: Timestamp,
    ) {
        let transient = reason == FailureReason::Transient && vm_left.is_none();
        if let Some(intent) = self.intents.get_mut(index) {
            if transient {
                intent.phase = Phase::Queued;
                intent.vm = None;
            } else {
                self.intents.remove(index);
            }
        }
        self.failures_in_a_row += 1;
        self.failures += 1;
        let (base, cap) = if transient {
            TRANSIENT_BACKOFF
        } else {
            FAILURE_BACKOFF
        };
        let doublings = self.failures_in_a_row.saturating_sub(1).min(10);
        self.retry_at = Some(now.plus(base.saturating_mul(1 << doublings).min(cap)));
        self.record(now, OutcomeKind::Failed(reason), vm_left.unwrap_or(""), detail);
        self.bump();
    }

    /// Provisions found in flight after a restart, resumed as intents.
    pub fn resume(&mut self, vms: &[String], capacity: VmCapacity, now: Timestamp) {
        for vm in vms {
            self.intents.push(Intent {
                vm: Some(vm.clone()),
                phase: Phase::Starting,
                capacity,
                reason: "resumed after a restart".into(),
                since: now,
            });
        }
        self.bump();
    }

    /// The resumed provision of `vm` ended (joined when `ok`).
    pub fn resumed(&mut self, vm: &str, result: Result<String, (FailureReason, String)>, now: Timestamp) {
        match self.intents.iter().position(|i| i.vm.as_deref() == Some(vm)) {
            Some(index) => match result {
                Ok(detail) => {
                    self.last_scale_up = Some(now);
                    self.joined(index, vm, detail, now)
                }
                Err((reason, detail)) => self.failed(index, reason, Some(vm), detail, now),
            },
            None => self.bump(),
        }
    }

    /// The removal under way ended: `outcome` says how. The scale-down window starts again
    /// either way, so an abandoned drain is not retried at once.
    pub fn removal_ended(&mut self, kind: OutcomeKind, node: &str, detail: String, now: Timestamp) {
        self.removal = None;
        self.last_scale_down = Some(now);
        self.record(now, kind, node, detail);
        self.bump();
    }
}

/// How much the cluster asks for: every block volume (held, pending or admitted) and every
/// memory request. A removal moves demand; only new demand raises this.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemandLevel {
    pub block_volumes: i64,
    pub memory_bytes: i64,
}

impl DemandLevel {
    /// Whether `self` asks for more than `baseline` on either axis.
    pub fn exceeds(&self, baseline: &DemandLevel) -> bool {
        self.block_volumes > baseline.block_volumes || self.memory_bytes > baseline.memory_bytes
    }
}

/// One VM on its way.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// The VM's name once chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    pub phase: Phase,
    pub capacity: VmCapacity,
    pub reason: String,
    pub since: Timestamp,
}

/// Where a provision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Planned; no VM chosen yet.
    Queued,
    /// A template is being cloned.
    Cloning,
    /// Configured and started (a clone, a cold spare, or one resumed after a restart).
    Starting,
    /// Running; waiting for its Node to be Ready and its CSINode to list the block driver.
    Joining,
}

/// A node being drained and removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    pub node: String,
    pub since: Timestamp,
}

/// What one step came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub at: Timestamp,
    pub kind: OutcomeKind,
    /// The VM or node it concerns ("" for the cluster).
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// A worker joined (cloned, or a cold spare started).
    Added,
    /// A provision ended without a registered node.
    Failed(FailureReason),
    /// A node was drained and its VM shut down or destroyed.
    Removed,
    /// A drain could not finish; the node was uncordoned.
    RemovalAbandoned,
    /// A removal was refused before anything was evicted.
    RemovalRefused,
    /// Dry run: what would have been done.
    WouldDo,
    /// Queued provisions dropped because a newer plan no longer needs them.
    Cancelled,
    /// A pod was moved off a node (evicted, its replacement placed elsewhere).
    Moved,
    /// A move was refused (a disruption budget), failed, or its replacement did not come.
    MoveFailed,
}

/// Why a provision failed: the `reason` label of `headroom_provision_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// 401/403: the token or password is wrong or lacks a privilege.
    Credentials,
    /// No host with the memory, storage or VMID room for a worker.
    NoCapacity,
    /// PVE could not be reached or answered 5xx/595/596 (retried with a short backoff).
    Transient,
    /// A PVE task (clone, configure, start) failed.
    Task,
    /// The VM started but its node did not register within `joinTimeout`.
    JoinTimeout,
    /// Anything else PVE refused.
    Api,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Credentials,
        FailureReason::NoCapacity,
        FailureReason::Transient,
        FailureReason::Task,
        FailureReason::JoinTimeout,
        FailureReason::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Credentials => "credentials",
            FailureReason::NoCapacity => "no-capacity",
            FailureReason::Transient => "transient",
            FailureReason::Task => "task",
            FailureReason::JoinTimeout => "join-timeout",
            FailureReason::Api => "api",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_780_000_000_000);
    const VM: VmCapacity = VmCapacity {
        block_slots: 24,
        memory_bytes: 32 << 30,
        cpu_millis: 8000,
    };

    fn up(basis: u64, count: i64) -> Planned {
        Planned {
            basis,
            plan: Plan::ScaleUp {
                count,
                reason: "test".into(),
            },
        }
    }

    #[test]
    fn a_plan_for_n_queues_n_at_once_and_plans_made_before_a_change_are_refused() {
        let mut s = ActuatorStatus::default();
        assert_eq!(s.accept(&up(0, 2), VM, T0, false), Accepted::Nothing);
        assert_eq!((s.incoming_vms(), s.queued(), s.generation), (2, 2, 1));
        assert_eq!(s.next_to_start(T0), Some(0), "just decided: the first starts");
        // The same plan again (made on generation 0) would clone two more: refused.
        assert_eq!(s.accept(&up(0, 2), VM, T0, false), Accepted::Stale);
        assert_eq!(s.incoming_vms(), 2);

        s.progress(0, Phase::Cloning, None, T0);
        assert_eq!(s.last_scale_up, Some(T0));
        assert_eq!(s.next_to_start(T0), None, "one provision at a time");
        s.joined(0, "k8s-node7", "added".into(), T0);
        assert_eq!((s.incoming_vms(), s.queued()), (1, 1));
        assert_eq!(
            s.next_to_start(T0),
            None,
            "the next waits for a plan made after the join"
        );
        let nothing = Planned {
            basis: s.generation,
            plan: Plan::Nothing,
        };
        assert_eq!(s.accept(&nothing, VM, T0, false), Accepted::Nothing);
        assert_eq!(s.next_to_start(T0), Some(0), "still wanted: it starts");
    }

    #[test]
    fn the_next_clone_starts_while_the_previous_vm_joins_once_a_fresh_plan_wants_it() {
        let mut s = ActuatorStatus::default();
        s.accept(&up(0, 2), VM, T0, false);
        s.progress(0, Phase::Cloning, None, T0);
        s.progress(0, Phase::Starting, Some("k8s-node7"), T0);
        assert_eq!(s.next_to_start(T0), None, "one clone at a time");
        s.progress(0, Phase::Joining, None, T0);
        assert_eq!(s.next_to_start(T0), None, "a plan made now must still want it");
        let nothing = Planned {
            basis: s.generation,
            plan: Plan::Nothing,
        };
        s.accept(&nothing, VM, T0, false);
        assert_eq!(s.next_to_start(T0), Some(1), "cloned while k8s-node7 joins");
        assert_eq!(s.incoming_vms(), 2);
    }

    #[test]
    fn a_cancel_drops_only_queued_intents() {
        let mut s = ActuatorStatus::default();
        s.accept(&up(0, 3), VM, T0, false);
        s.progress(0, Phase::Joining, Some("k8s-node7"), T0);
        let cancel = Planned {
            basis: s.generation,
            plan: Plan::Cancel {
                count: 5,
                reason: "demand fell".into(),
            },
        };
        s.accept(&cancel, VM, T0, false);
        assert_eq!(s.incoming_vms(), 1, "the joining VM stays");
        assert_eq!(s.intents[0].vm.as_deref(), Some("k8s-node7"));
        assert_eq!(
            s.outcomes.back().unwrap().detail,
            "dropped 2 queued VM(s): demand fell"
        );
    }

    #[test]
    fn failures_back_off_by_kind_and_transient_ones_keep_their_intent() {
        // (reason, a VM was left, intent kept, backoff after 1st, after 2nd)
        let rows = [
            (FailureReason::Transient, false, true, 5, 10),
            (FailureReason::Transient, true, false, 60, 120),
            (FailureReason::Task, true, false, 60, 120),
            (FailureReason::Credentials, false, false, 60, 120),
            (FailureReason::NoCapacity, false, false, 60, 120),
        ];
        for (reason, left, kept, first, second) in rows {
            let mut s = ActuatorStatus::default();
            s.accept(&up(0, 2), VM, T0, false);
            let vm = left.then_some("k8s-node7");
            s.progress(0, Phase::Cloning, vm, T0);
            s.failed(0, reason, vm, "failed".into(), T0);
            assert_eq!(s.incoming_vms(), if kept { 2 } else { 1 }, "{reason:?}");
            assert_eq!(
                s.retry_at,
                Some(T0.plus(Duration::from_secs(first))),
                "{reason:?}"
            );
            assert_eq!(s.next_to_start(T0), None, "{reason:?}: backing off");
            s.failed(0, reason, vm, "failed".into(), T0);
            assert_eq!(
                s.retry_at,
                Some(T0.plus(Duration::from_secs(second))),
                "{reason:?}"
            );
            assert_eq!(s.failures_in_a_row, 2);
        }
        // The cap: minutes for transient errors, a quarter hour for the rest.
        let mut s = ActuatorStatus::default();
        s.accept(&up(0, 1), VM, T0, false);
        for _ in 0..20 {
            s.failed(0, FailureReason::Transient, None, "x".into(), T0);
        }
        assert_eq!(s.retry_at, Some(T0.plus(TRANSIENT_BACKOFF.1)));
    }

    #[test]
    fn a_dry_run_queues_nothing_and_says_what_it_would_do_once() {
        let mut s = ActuatorStatus::default();
        s.accept(&up(0, 2), VM, T0, true);
        assert_eq!(s.incoming_vms(), 0);
        assert_eq!(s.outcomes.len(), 1);
        let g = s.generation;
        s.accept(&up(g, 2), VM, T0, true);
        assert_eq!(s.outcomes.len(), 1, "the same words are not repeated");
        assert_eq!(s.generation, g);
    }
}
