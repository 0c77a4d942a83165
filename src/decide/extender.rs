//! Scheduler-extender decisions: which candidate nodes keep a pod under the soft cap, and how
//! to score them so block volumes and memory spread.

use std::collections::BTreeMap;

use crate::{
    config::Scoring,
    decide::placement::{BlockDemand, Placement},
};

/// The filter's answer for a set of candidate nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    /// Candidates that keep the pod under their soft cap, in input order.
    pub passed: Vec<String>,
    /// Rejected, but preemption could free a slot (node → reason).
    pub failed: BTreeMap<String, String>,
    /// Rejected, and evicting every pod there would still not free enough slots.
    pub unresolvable: BTreeMap<String, String>,
}

/// Filters `candidates` for a pod needing `demand`.
///
/// Taints, cordons and readiness are kube-scheduler's business (it filtered before calling
/// us, with the pod's tolerations), so only capacity is judged here. A node headroom has not
/// seen yet passes: it has just joined and holds nothing we could count.
pub fn filter(placement: Placement<'_>, demand: &BlockDemand, candidates: &[String]) -> FilterOutcome {
    let mut out = FilterOutcome::default();
    for name in candidates {
        let Some(node) = placement.view.node(name) else {
            out.passed.push(name.clone());
            continue;
        };
        let used = placement.block_volumes(node);
        let needed = placement.needed(node, &demand.keys);
        if used + needed <= node.soft_cap {
            out.passed.push(name.clone());
            continue;
        }
        let reason = format!(
            "block-PVC soft cap: {used}/{} on {name}, pod needs {needed} more",
            node.soft_cap
        );
        // Volumes not held by pods (detaching or orphaned attachments, reservations) stay
        // whatever the scheduler preempts.
        let pinned = used - node.pod_volumes.min(used);
        if pinned + needed > node.soft_cap {
            out.unresolvable
                .insert(name.clone(), reason + " (not freed by preemption)");
        } else {
            out.failed.insert(name.clone(), reason);
        }
    }
    out
}

/// Scores candidates 0–10 (the extender protocol's range), higher for more free block slots
/// and more free memory after placing the pod.
///
/// Scores are relative to the candidate set: the emptiest candidate gets 10 on that axis and
/// the fullest 0. Absolute fractions would round one slot of 24 away in an 11-step scale and
/// leave near-equal nodes tied, which is where spreading matters.
pub fn prioritize(
    placement: Placement<'_>,
    demand: &BlockDemand,
    pod_memory: i64,
    scoring: Scoring,
    candidates: &[String],
) -> Vec<(String, i64)> {
    let facts: Vec<(f64, f64)> = candidates
        .iter()
        .map(|name| match placement.view.node(name) {
            Some(n) => {
                let free_slots =
                    (n.soft_cap - placement.block_volumes(n) - placement.needed(n, &demand.keys)) as f64;
                let free_memory = if n.memory_allocatable_bytes > 0 {
                    (n.memory_allocatable_bytes - n.memory_requested_bytes - pod_memory) as f64
                        / n.memory_allocatable_bytes as f64
                } else {
                    0.0
                };
                (free_slots, free_memory)
            }
            // Unknown (just joined): empty.
            None => (f64::from(u16::MAX), 1.0),
        })
        .collect();
    let relative = |values: Vec<f64>| -> Vec<f64> {
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        values
            .iter()
            .map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 1.0 })
            .collect()
    };
    let blocks = relative(facts.iter().map(|f| f.0).collect());
    let memory = relative(facts.iter().map(|f| f.1).collect());
    let (wb, wm) = (f64::from(scoring.block_weight), f64::from(scoring.memory_weight));
    candidates
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let score = 10.0 * (wb * blocks[i] + wm * memory[i]) / (wb + wm).max(1.0);
            (name.clone(), score.round().clamp(0.0, 10.0) as i64)
        })
        .collect()
}
