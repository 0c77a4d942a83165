//! The provisioning planner: from the projection, decide to add VMs, remove one, or wait.
//!
//! Pure: capacity already on its way counts as capacity, so one intent never becomes two
//! VMs; the caller passes `now` and when the last scale-up happened.

use std::{collections::BTreeSet, time::Duration};

use crate::{
    config::Config,
    decide::{
        accounting::ClusterView,
        placement::Placement,
        projection::{self, AdmittedDemand, Evaluation, Incoming, VmCapacity},
    },
    index::ClusterState,
};

/// No scale-down this soon after a scale-up (the new node has barely filled).
pub const SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    ScaleUp { count: i64, reason: String },
    ScaleDown { node: String, reason: String },
}

/// What the planner looks at.
pub struct PlanInput<'a> {
    pub state: &'a ClusterState,
    pub view: &'a ClusterView,
    pub placement: Placement<'a>,
    pub config: &'a Config,
    pub evaluation: &'a Evaluation,
    pub admitted: AdmittedDemand,
    pub incoming: Incoming,
    /// Time since the last scale-up finished or started (None: never).
    pub since_scale_up: Option<Duration>,
    /// Time since the last node was removed (None: never).
    pub since_scale_down: Option<Duration>,
}

fn max_nodes(config: &Config) -> i64 {
    config.proxmox.as_ref().map_or(10, |p| i64::from(p.max_nodes))
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let config = input.config;
    let room_for = (max_nodes(config) - input.view.nodes.len() as i64 - input.incoming.vms).max(0);
    let vm = VmCapacity::from_config(config);

    let sustained: Vec<&str> = input
        .evaluation
        .triggers
        .iter()
        .filter(|t| t.sustained)
        .map(|t| t.reason.as_str())
        .collect();
    if !sustained.is_empty() {
        if room_for == 0 {
            return Plan::Nothing;
        }
        let count = projection::vms_to_clear_triggers(
            input.view,
            input.admitted,
            input.incoming,
            vm,
            config,
            room_for,
        )
        .unwrap_or(room_for);
        // Zero means what is already incoming clears every trigger once it joins.
        return if count > 0 {
            Plan::ScaleUp {
                count,
                reason: sustained.join("; "),
            }
        } else {
            Plan::Nothing
        };
    }

    let unfit = unfit_pending_pods(input);
    if unfit > 0 {
        return if input.incoming.vms == 0 && room_for > 0 {
            Plan::ScaleUp {
                count: 1,
                reason: format!("{unfit} pending pod(s) fit no node (block slots, memory or CPU)"),
            }
        } else {
            Plan::Nothing
        };
    }

    // One removal per `scaleDown.for`: the conditions held on the cluster before the last
    // removal, so they must hold again on the smaller one before the next.
    let cooled = input.since_scale_up.is_none_or(|d| d >= SCALE_DOWN_COOLDOWN)
        && input
            .since_scale_down
            .is_none_or(|d| d >= config.scale_down.r#for.0);
    if input.evaluation.scale_down_allowed() && cooled && input.incoming.vms == 0 {
        return removable_node(input)
            .map_or(Plan::Nothing, |(node, reason)| Plan::ScaleDown { node, reason });
    }
    Plan::Nothing
}

/// Pending pods (no node yet) that no schedulable node can take for block slots, memory or CPU.
pub fn unfit_pending_pods(input: &PlanInput<'_>) -> usize {
    let p = input.placement;
    input
        .state
        .pods
        .values()
        .filter(|pod| !pod.terminal && pod.node_name.is_none())
        .filter(|pod| {
            let keys: BTreeSet<String> = pod
                .claims
                .iter()
                .filter_map(|c| {
                    input
                        .view
                        .block_claims
                        .get(&(pod.namespace.clone(), c.clone()))
                        .map(|(k, _)| k.clone())
                })
                .collect();
            let fits = p.fits_on(&keys);
            !input.view.schedulable().any(|n| {
                n.memory_allocatable_bytes - n.memory_requested_bytes >= pod.memory_request
                    && n.cpu_allocatable_millis - n.cpu_requested_millis >= pod.cpu_request_millis
                    && fits(n)
            })
        })
        .count()
}

/// The lightest node whose pods the others absorb (memory, and block volumes under the soft
/// cap), by a first-fit-decreasing simulation. GPU nodes are never removed.
fn removable_node(input: &PlanInput<'_>) -> Option<(String, String)> {
    let p = input.placement;
    let mut candidates: Vec<_> = input.view.schedulable().filter(|n| n.gpus == 0).collect();
    candidates.sort_by_key(|n| (p.block_volumes(n), n.memory_requested_bytes));
    for candidate in candidates {
        let mut pods: Vec<(i64, usize)> = input
            .state
            .pods
            .values()
            .filter(|pod| !pod.terminal && pod.node_name.as_deref() == Some(candidate.name.as_str()))
            .map(|pod| {
                let blocks = pod
                    .claims
                    .iter()
                    .filter(|c| {
                        input
                            .view
                            .block_claims
                            .contains_key(&(pod.namespace.clone(), (*c).clone()))
                    })
                    .count();
                (pod.memory_request, blocks)
            })
            .collect();
        pods.sort_by(|a, b| b.cmp(a));
        let mut others: Vec<(i64, i64)> = input
            .view
            .schedulable()
            .filter(|n| n.name != candidate.name)
            .map(|n| {
                (
                    n.memory_allocatable_bytes - n.memory_requested_bytes,
                    p.free_slots(n),
                )
            })
            .collect();
        let absorbed = pods.iter().all(|(mem, blocks)| {
            let blocks = *blocks as i64;
            match others.iter_mut().find(|(m, s)| *m >= *mem && *s >= blocks) {
                Some(slot) => {
                    slot.0 -= mem;
                    slot.1 -= blocks;
                    true
                }
                None => false,
            }
        });
        if absorbed && !others.is_empty() {
            return Some((
                candidate.name.clone(),
                format!(
                    "scale-down conditions held for {}; the other nodes absorb {}'s {} pods and {} block volumes",
                    input.config.scale_down.r#for,
                    candidate.name,
                    pods.len(),
                    p.block_volumes(candidate)
                ),
            ));
        }
    }
    None
}
