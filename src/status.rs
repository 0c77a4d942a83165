//! The `status` report: the per-node table and the projection, as text or JSON.
//!
//! Built from a `ClusterView` and an `Evaluation`; rendering is pure so it is tested as text.

use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;

use crate::{
    config::Config,
    decide::{
        accounting::{self, ClaimState, ClusterView, NodeUsage, Reservations, Settings},
        actuation::ActuatorStatus,
        ghosts::{self, Verdict},
        planner::{self, Plan, Sizing},
        projection::{AdmittedDemand, Check, Evaluation, Windows},
        rebalance::{self, Next},
        tick::{self, Tick, TickInput},
        time::Timestamp,
    },
    index::ClusterState,
    model::quantity::Bytes,
};

/// What `status --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub nodes: Vec<NodeUsage>,
    pub cluster: ClusterSummary,
    pub triggers: Vec<Check>,
    pub signals: Vec<Check>,
    pub scale_down: Vec<Check>,
    pub provisioner: ProvisionerSummary,
    /// The block-volume spread and the next move rebalancing would make.
    pub rebalance: rebalance::Outlook,
    /// Each ghost disk Proxmox shows and what repair does, or would do, about it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ghost_repairs: Vec<ghosts::Repair>,
    /// Per node, what a drain would break or hurt (the runbook's survey before a removal).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drain_blockers: BTreeMap<String, planner::DrainBlockers>,
}

/// The cluster line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    pub free_block_slots: i64,
    pub memory_request_ratio: f64,
    pub memory_limit_ratio: f64,
    pub block_volumes: i64,
    pub room: i64,
    pub pending_block_claims: i64,
    pub dormant_block_claims: i64,
    pub schedulable_nodes: usize,
    pub max_node_block_volumes: i64,
}

/// What the provisioner would do now: the tick's plan, with what is in flight.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionerSummary {
    /// `dry-run` without a `proxmox:` section, else `proxmox`.
    pub mode: &'static str,
    pub incoming_vms: i64,
    /// The plan `serve` would make on the same inputs.
    pub plan: Plan,
    /// How many VMs the demand needs.
    pub sizing: Sizing,
    /// Why no node is removed although the scale-down conditions hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale_down_refusals: Vec<String>,
    /// Provisions in flight in Proxmox (name and VMID).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<String>,
    /// Why Proxmox could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StatusReport {
    /// The report of one tick's result on `view` of `state`.
    pub fn build(state: &ClusterState, view: &ClusterView, config: &Config, tick: Tick) -> Self {
        let Tick {
            projection: p,
            evaluation:
                Evaluation {
                    triggers,
                    signals,
                    scale_down,
                },
            sizing,
            plan,
            scale_down_refusals,
            rebalance,
            ..
        } = tick;
        StatusReport {
            nodes: view.nodes.iter().cloned().collect(),
            cluster: ClusterSummary {
                free_block_slots: p.free_block_slots,
                memory_request_ratio: p.memory_request_ratio,
                memory_limit_ratio: p.memory_limit_ratio,
                block_volumes: view.nodes.iter().map(|n| n.block_volumes).sum(),
                room: p.room,
                pending_block_claims: p.pending_block_claims,
                dormant_block_claims: view
                    .block_claims
                    .values()
                    .filter(|(_, s)| *s == ClaimState::Dormant)
                    .count() as i64,
                schedulable_nodes: view.schedulable().count(),
                max_node_block_volumes: p.max_node_block_volumes,
            },
            triggers,
            signals,
            scale_down,
            provisioner: ProvisionerSummary {
                mode: if config.proxmox.is_some() {
                    "proxmox"
                } else {
                    "dry-run"
                },
                incoming_vms: p.incoming_vms,
                plan,
                sizing,
                scale_down_refusals,
                in_flight: Vec::new(),
                error: None,
            },
            rebalance,
            ghost_repairs: Vec::new(),
            drain_blockers: planner::drain_blockers(state, view),
        }
    }

    /// The one-shot report of `status`: no admitted demand, nothing in flight, windows as
    /// persisted (none here).
    pub fn once(state: &ClusterState, config: &Config, now: Timestamp) -> Self {
        Self::observed(
            state,
            config,
            &Reservations::new(),
            &ActuatorStatus::default(),
            &mut Windows::default(),
            now,
        )
    }

    /// The one-shot report with what Proxmox shows (ghost disks, VMs on their way, as the
    /// actuator's status) and the persisted windows: the tick `serve` would run.
    pub fn observed(
        state: &ClusterState,
        config: &Config,
        ghosts: &Reservations,
        actuator: &ActuatorStatus,
        windows: &mut Windows,
        now: Timestamp,
    ) -> Self {
        let view = accounting::account(state, &Settings::from(config), ghosts);
        let reservations = Reservations::new();
        let tick = tick::tick(
            &TickInput {
                state,
                view: &view,
                reservations: &reservations,
                config,
                admitted: AdmittedDemand::default(),
                actuator,
            },
            windows,
            now,
        );
        Self::build(state, &view, config, tick)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The operator's table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let name_w = self.nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
        let bar_w = self
            .nodes
            .iter()
            .map(|n| n.hard_cap.max(n.block_volumes))
            .max()
            .unwrap_or(0)
            .clamp(0, 64) as usize;
        let _ = writeln!(
            out,
            "{:name_w$}  {:>5}  {:>9}  {:bar_w$}  {:>26}  {:>3}  SCHEDULABLE",
            "NODE",
            "BLOCK",
            "SOFT/HARD",
            "LUNS",
            "MEMORY REQUESTED",
            "GPU",
            bar_w = bar_w + 2
        );
        for n in &self.nodes {
            let mem = format!(
                "{} / {} {:>3.0}%",
                short_gib(n.memory_requested_bytes),
                short_gib(n.memory_allocatable_bytes),
                percent(n.memory_requested_bytes, n.memory_allocatable_bytes)
            );
            let _ = writeln!(
                out,
                "{:name_w$}  {:>5}  {:>9}  {}  {:>26}  {:>3}  {}",
                n.name,
                n.block_volumes,
                format!("{}/{}", n.soft_cap, n.hard_cap),
                bar(n, bar_w),
                mem,
                if n.gpus > 0 {
                    n.gpus.to_string()
                } else {
                    "-".into()
                },
                sched_text(n),
            );
        }
        let failing: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.failing_to_attach > 0)
            .map(|n| format!("{} {}", n.name, n.failing_to_attach))
            .collect();
        if !failing.is_empty() {
            let _ = writeln!(
                out,
                "failing to attach (no LUN; their pods wait in ContainerCreating): {}",
                failing.join(", ")
            );
        }
        let c = &self.cluster;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "cluster: {} block volumes, fullest node {}; {} slots free under the soft cap on {} schedulable nodes, \
             {} pending block claims ({} dormant) -> freeBlockSlots {}; memory requests {:.0}%, limits {:.0}%",
            c.block_volumes,
            c.max_node_block_volumes,
            c.room,
            c.schedulable_nodes,
            c.pending_block_claims,
            c.dormant_block_claims,
            c.free_block_slots,
            c.memory_request_ratio * 100.0,
            c.memory_limit_ratio * 100.0,
        );
        section(&mut out, "triggers", &self.triggers, ["ok", "FIRING"]);
        section(&mut out, "signals", &self.signals, ["ok", "FIRING"]);
        section(
            &mut out,
            "scale-down conditions (all must hold)",
            &self.scale_down,
            ["not met", "met"],
        );
        let p = &self.provisioner;
        let plan = match &p.plan {
            Plan::Nothing => match p.sizing.vms_needed {
                None => "triggers would still fire at maxNodes".to_owned(),
                Some(n) if n > p.incoming_vms => format!(
                    "{} more VM(s) needed, waiting for a trigger's for:",
                    n - p.incoming_vms
                ),
                Some(_) => "no VM needed".to_owned(),
            },
            Plan::ScaleUp { count, reason } => format!("would add {count} VM(s): {reason}"),
            Plan::Cancel { count, reason } => format!("would drop {count} queued VM(s): {reason}"),
            Plan::ScaleDown { node, reason, .. } => format!("would drain and remove {node}: {reason}"),
            Plan::Move(m) => format!("would move {}/{} off {}", m.namespace, m.name, m.from),
        };
        let _ = writeln!(
            out,
            "\nprovisioner: {} ({} incoming); {plan}",
            p.mode, p.incoming_vms
        );
        for pod in &p.sizing.oversized_pods {
            let _ = writeln!(
                out,
                "  pending {}/{} fits no worker VM: {}",
                pod.namespace, pod.name, pod.reason
            );
        }
        for why in &p.scale_down_refusals {
            let _ = writeln!(out, "  no removal: {why}");
        }
        for vm in &p.in_flight {
            let _ = writeln!(out, "  provisioning: {vm}");
        }
        if let Some(e) = &p.error {
            let _ = writeln!(out, "  {e}");
        }
        let r = &self.rebalance;
        let ends = match (&r.fullest, &r.emptiest) {
            (Some(f), Some(e)) => format!(
                " ({} {} − {} {})",
                f.node, f.block_volumes, e.node, e.block_volumes
            ),
            _ => String::new(),
        };
        let next = match &r.next {
            Next::Off => "off (rebalance.enabled: false)".to_owned(),
            Next::Balanced => "balanced: no move".to_owned(),
            Next::Waiting { reason } => format!("waiting: {reason}"),
            Next::Move(m) => format!(
                "next move: {}/{} off {} (fits best on {}): {}",
                m.namespace, m.name, m.from, m.toward, m.reason
            ),
            Next::Blocked { reason } => format!("blocked: {reason}"),
        };
        let _ = writeln!(out, "\nrebalance: spread {}{ends}; {next}", r.spread);
        if !self.ghost_repairs.is_empty() {
            let _ = writeln!(out, "\nghost disks (in the VM config, no VolumeAttachment):");
        }
        for g in &self.ghost_repairs {
            let what = format!(
                "{} VM {} {} {}",
                g.ghost.node, g.ghost.vmid, g.ghost.slot, g.ghost.disk
            );
            let verdict = match (&g.verdict, g.enabled) {
                (Verdict::Detach, true) => "detaching (ghostDisks.repair: detach)".to_owned(),
                (Verdict::Detach, false) => {
                    "would detach (ghostDisks.repair: off; the volume would stay as unusedN)".to_owned()
                }
                (Verdict::Waiting { reason }, true) => format!("not yet: {reason}"),
                (Verdict::Waiting { reason }, false) => {
                    format!("would detach once confirmed (ghostDisks.repair: off): {reason}")
                }
                (Verdict::Kept { reason }, _) => format!("kept, detach by hand if it is a ghost: {reason}"),
                (Verdict::Attempted, _) => "detach sent; still in the config".to_owned(),
            };
            let _ = writeln!(out, "  {what}: {verdict}");
        }
        if !self.drain_blockers.is_empty() {
            let _ = writeln!(
                out,
                "\ndrain blockers (what draining the node would break or hurt):"
            );
            for (node, b) in &self.drain_blockers {
                if b.gpus > 0 {
                    let _ = writeln!(out, "  {node}: GPU node ({} GPU); never removed", b.gpus);
                }
                for why in &b.cannot_move {
                    let _ = writeln!(out, "  {node}: cannot move: {why}");
                }
                for pod in &b.budgets {
                    let _ = writeln!(out, "  {node}: a drain waits on {pod}");
                }
                if !b.singletons.is_empty() {
                    // Homelab workloads are mostly single replicas: name a few, count the rest.
                    let shown: Vec<&str> = b.singletons.iter().take(4).map(String::as_str).collect();
                    let more = b.singletons.len() - shown.len();
                    let tail = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "  {node}: {} singleton(s), down while they move: {}{tail}",
                        b.singletons.len(),
                        shown.join(", ")
                    );
                }
            }
        }
        out
    }
}

fn sched_text(n: &NodeUsage) -> String {
    match &n.unschedulable_reason {
        None if !n.block_ready => "yes (joining: block driver not registered)".to_owned(),
        None => "yes".to_owned(),
        Some(r) => format!("no ({r})"),
    }
}

/// `words` = [what a check that does not hold shows, what a sustained one shows].
fn section(out: &mut String, title: &str, checks: &[Check], [idle, active]: [&str; 2]) {
    if checks.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let state = match (c.firing, c.sustained, c.held_for) {
            (true, true, _) => active.to_owned(),
            (true, false, Some(held)) => format!("held {held} of {}", c.r#for),
            _ => idle.to_owned(),
        };
        let _ = writeln!(out, "  {:w$}  {:<18}  {}", c.name, state, c.reason);
    }
}

/// `[#####.......|....]`: used LUNs as `#` (`!` past the soft cap), `|` at the soft cap.
fn bar(n: &NodeUsage, width: usize) -> String {
    let mut s = String::with_capacity(width + 3);
    s.push('[');
    for i in 0..width as i64 {
        if i == n.soft_cap {
            s.push('|');
        }
        s.push(match (i < n.block_volumes, i < n.soft_cap, i < n.hard_cap) {
            (true, true, _) => '#',
            (true, false, _) => '!',
            (false, true, _) => '.',
            (false, false, true) => ':',
            (false, false, false) => ' ',
        });
    }
    if n.soft_cap >= width as i64 {
        s.push('|');
    }
    s.push(']');
    s
}

fn short_gib(bytes: i64) -> String {
    let s = Bytes(bytes).to_string();
    s.trim_end_matches(" GiB").to_owned() + "Gi"
}

fn percent(a: i64, b: i64) -> f64 {
    if b <= 0 { 0.0 } else { a as f64 * 100.0 / b as f64 }
}
