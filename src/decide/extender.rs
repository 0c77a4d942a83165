//! Scheduler-extender decisions: which candidate nodes keep a pod under the soft cap, and how
//! to score them so block volumes and memory spread.

use std::collections::BTreeMap;

use crate::{
    config::Scoring,
    decide::placement::{BlockDemand, Placement},
};

/// The filter's answer for a set of candidate nodes, borrowing their names: at 5,000
/// candidates a copy of each name was a tenth of the route's time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOutcome<'a> {
    /// Candidates that keep the pod under their soft cap, in input order.
    pub passed: Vec<&'a str>,
    /// Rejected, but preemption could free a slot (node → reason).
    pub failed: BTreeMap<&'a str, String>,
    /// Rejected, and evicting every pod there would still not free enough slots.
    pub unresolvable: BTreeMap<&'a str, String>,
}

/// Filters `candidates` for a pod needing `demand`.
///
/// Taints, cordons and readiness are kube-scheduler's business (it filtered before calling
/// us, with the pod's tolerations), so only capacity is judged here. A node whose CSI plugin
/// has not registered the block driver (or that headroom has not seen yet) cannot attach a
/// volume: it fails pods that need a new one and passes the rest.
pub fn filter<'a, S: AsRef<str>>(
    placement: Placement<'_>,
    demand: &BlockDemand,
    candidates: &'a [S],
) -> FilterOutcome<'a> {
    let mut out = FilterOutcome::default();
    let needed_on = placement.needed_on(&demand.keys);
    for name in candidates {
        let name = name.as_ref();
        let Some(node) = placement.view.node(name) else {
            if demand.keys.is_empty() {
                out.passed.push(name);
            } else {
                out.failed
                    .insert(name, format!("{name} is joining: not yet in headroom's view"));
            }
            continue;
        };
        let used = placement.block_volumes(node);
        let needed = needed_on(node);
        if needed > 0 && !node.block_ready {
            out.failed.insert(
                name,
                format!("{name} is joining: its CSINode does not list the block driver yet"),
            );
            continue;
        }
        if used + needed <= node.soft_cap {
            out.passed.push(name);
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
                .insert(name, reason + " (not freed by preemption)");
        } else {
            out.failed.insert(name, reason);
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
pub fn prioritize<'a, S: AsRef<str>>(
    placement: Placement<'_>,
    demand: &BlockDemand,
    pod_memory: i64,
    scoring: Scoring,
    candidates: &'a [S],
) -> Vec<(&'a str, i64)> {
    let needed_on = placement.needed_on(&demand.keys);
    let facts: Vec<(f64, f64)> = candidates
        .iter()
        .map(|name| match placement.view.node(name.as_ref()) {
            Some(n) => {
                let free_slots = if n.block_ready {
                    (n.soft_cap - placement.block_volumes(n) - needed_on(n)) as f64
                } else {
                    0.0
                };
                let free_memory = if n.memory_allocatable_bytes > 0 {
                    (n.memory_allocatable_bytes - n.memory_requested_bytes - pod_memory) as f64
                        / n.memory_allocatable_bytes as f64
                } else {
                    0.0
                };
                (free_slots, free_memory)
            }
            // Unknown (just joined): free memory, but no block slot until its CSI registers.
            None => (0.0, 1.0),
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
            (name.as_ref(), score.round().clamp(0.0, 10.0) as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        decide::{
            accounting::{self, ClusterView, Reservations, Settings},
            fixtures::cluster,
        },
        index::ClusterState,
        model::Name,
    };

    fn view(state: &ClusterState) -> ClusterView {
        accounting::account(state, &Settings::from(&Config::default()), &Reservations::new())
    }

    fn demand(keys: &[&str]) -> BlockDemand {
        BlockDemand {
            keys: keys.iter().map(|k| Name::from(*k)).collect(),
            unindexed: 0,
        }
    }

    /// n1 22, n2 24, n3 joining (no CSINode count), n4 24 held by attachments alone.
    fn nodes() -> ClusterState {
        let mut s = cluster(&[22, 24, 0, 24]);
        s.csi_nodes.remove("n3");
        s.pods.retain(|p| p.node_name.as_deref() != Some("n4"));
        s
    }

    #[test]
    fn filter_passes_nodes_under_the_soft_cap_and_says_why_the_rest_fail() {
        let state = nodes();
        let view = view(&state);
        let reservations = Reservations::new();
        let p = Placement::new(&view, &reservations);
        // (case, demand, candidate, outcome, reason part)
        let rows: Vec<(&str, Vec<&str>, &str, &str, &str)> = vec![
            ("room for one", vec!["claim:apps/new"], "n1", "passed", ""),
            (
                "two fit in the last two slots",
                vec!["claim:apps/a", "claim:apps/b"],
                "n1",
                "passed",
                "",
            ),
            (
                "three do not",
                vec!["a", "b", "c"],
                "n1",
                "failed",
                "soft cap: 22/24 on n1, pod needs 3 more",
            ),
            (
                "at the cap, pods could be preempted",
                vec!["claim:apps/new"],
                "n2",
                "failed",
                "24/24 on n2",
            ),
            (
                "a volume already on the node costs nothing",
                vec!["h/pv-n2-p0-c0"],
                "n2",
                "passed",
                "",
            ),
            (
                "joining: no new volume",
                vec!["claim:apps/new"],
                "n3",
                "failed",
                "CSINode does not list the block driver",
            ),
            (
                "joining takes a pod without block volumes",
                vec![],
                "n3",
                "passed",
                "",
            ),
            (
                "not in the view yet",
                vec!["claim:apps/new"],
                "n9",
                "failed",
                "not yet in headroom's view",
            ),
            ("unknown, no block volume", vec![], "n9", "passed", ""),
            (
                "held by attachments only: preemption frees nothing",
                vec!["claim:apps/new"],
                "n4",
                "unresolvable",
                "not freed by preemption",
            ),
        ];
        for (case, keys, candidate, want, reason) in rows {
            let candidates = [candidate];
            let out = filter(p, &demand(&keys), &candidates);
            let (got, why) = if out.passed == [candidate] {
                ("passed", String::new())
            } else if let Some(r) = out.failed.get(candidate) {
                ("failed", r.clone())
            } else if let Some(r) = out.unresolvable.get(candidate) {
                ("unresolvable", r.clone())
            } else {
                panic!("{case}: {out:?}")
            };
            assert_eq!(got, want, "{case}: {why}");
            assert!(why.contains(reason), "{case}: {why}");
        }
    }

    #[test]
    fn prioritize_scores_relative_to_the_candidates_and_by_weight() {
        let mut state = cluster(&[20, 10, 0]);
        state.csi_nodes.remove("n3");
        let view = view(&state);
        let reservations = Reservations::new();
        let p = Placement::new(&view, &reservations);
        let candidates = ["n1", "n2", "n3", "n9"];
        let scores = |block_weight, memory_weight| -> Vec<i64> {
            let scoring = Scoring {
                block_weight,
                memory_weight,
            };
            prioritize(p, &demand(&["claim:apps/new"]), 1 << 30, scoring, &candidates)
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        };
        // Slots: n1 3, n2 13, n3 and n9 none (joining, unknown). Memory: n1 has the least free.
        assert_eq!(scores(1, 0), [2, 10, 0, 0], "block volumes alone");
        assert_eq!(
            scores(0, 1)[0],
            0,
            "memory alone: n1, with 20 GiB requested, scores lowest"
        );
        assert_eq!(scores(0, 1)[3], 10, "an unknown node counts as free memory");
        let both = scores(1, 1);
        assert!(both[1] > both[0] && both[1] > both[2], "{both:?}");
        assert!(scores(1, 1).iter().all(|s| (0..=10).contains(s)));
        assert_eq!(
            prioritize(p, &demand(&[]), 0, Scoring::default(), &["n1"]),
            [("n1", 10)],
            "one candidate is the best there is"
        );
    }
}
