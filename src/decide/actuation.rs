//! What the actuator publishes about itself: provisions in flight with the capacity each will
//! bring, the removal under way, when it last scaled, and what its recent steps came to.
//!
//! The actuator is the only writer; the planning tick, `status` and the handlers read these
//! values. A plan names the `generation` it was made from, so the actuator can refuse a plan
//! made before its own state changed (a plan made while a VM was joining must not run after
//! it joined).

use std::collections::VecDeque;

use serde::Serialize;

use crate::decide::{projection::VmCapacity, time::Timestamp};

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
    /// No provision starts before this (a failure backs off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// What recent steps came to, newest last.
    pub outcomes: VecDeque<Outcome>,
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
    pub fn record(&mut self, outcome: Outcome) {
        if self.outcomes.len() == OUTCOMES_KEPT {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(outcome);
    }
}

/// How much the cluster asks for: every block volume (held, pending or admitted) and every
/// memory request. A removal moves demand; only new demand raises this.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
