//! What a simulation reports: the totals, the violations and the timeline.

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policy: String,
    pub pending_pod_seconds: u64,
    pub scale_ups: u32,
    /// Nodes drained and removed.
    pub scale_downs: u32,
    /// Stopped VMs kept as cold spares at the end.
    pub cold_spares: u32,
    /// Schedulable nodes at the end.
    pub nodes: u32,
    pub denied_requests: u32,
    pub max_node_block_volumes: i64,
    /// Max − min block volumes over schedulable nodes at the end.
    pub spread: i64,
    /// Pods stuck in ContainerCreating (a failed attach) at the end.
    pub stuck_pods: u32,
    /// Pods moved off a node (rebalancing, LUN-cap incidents) whose replacement was placed.
    pub moves: u32,
    /// The longest a moved pod waited for a node, in seconds.
    pub longest_move_wait: u64,
    pub pods_running: u32,
    /// Provisions that ended without a node (headroom's count; the world checks it).
    pub provision_failures: u32,
    /// Broken invariants (proactive policy): must stay empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
    pub timeline: Vec<(u64, String)>,
    /// The cluster over time (what `--plot` draws); not in the JSON report.
    #[serde(skip)]
    pub series: Vec<Sample>,
}

/// The cluster at one moment of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Seconds since the start.
    pub t: u64,
    pub schedulable_nodes: i64,
    /// Pending, or stuck in ContainerCreating.
    pub waiting_pods: i64,
    /// Room under the soft caps minus pending block claims.
    pub free_block_slots: i64,
    /// Block volumes on the fullest node.
    pub fullest_node: i64,
}

impl Report {
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "policy {}: pending pod-seconds {}, scale-ups {}, scale-downs {}, denied {}, max block volumes on a node {}, spread {}, stuck pods {}; at the end {} nodes, {} cold spares\n",
            self.policy,
            self.pending_pod_seconds,
            self.scale_ups,
            self.scale_downs,
            self.denied_requests,
            self.max_node_block_volumes,
            self.spread,
            self.stuck_pods,
            self.nodes,
            self.cold_spares,
        );
        for v in &self.violations {
            out.push_str(&format!("  VIOLATION {v}\n"));
        }
        for (t, what) in &self.timeline {
            let clock = format!("{:02}:{:02}:{:02}", t / 3600 % 24, t / 60 % 60, t % 60);
            let day = if *t >= 86_400 {
                format!("{}d ", t / 86_400)
            } else {
                String::new()
            };
            out.push_str(&format!("  {day:>4}{clock}  {what}\n"));
        }
        out
    }
}
