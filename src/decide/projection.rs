//! The projection: demand and capacity ahead of time, and the triggers, signals and
//! scale-down conditions of the config evaluated on it.
//!
//! Demand is what the accounting sees plus admissions accepted but not yet visible as
//! objects. Capacity is the schedulable nodes plus VMs already on their way (being cloned, or
//! cold spares starting), counted as if joined with the configured VM size and the soft cap.
//! Durations (`for:`) are measured against a `History` the caller keeps and `now` it passes in.

use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;

use crate::{
    config::{Config, Period},
    decide::accounting::ClusterView,
};

/// Demand admitted by the webhook and not yet visible as objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmittedDemand {
    pub block_volumes: i64,
    pub memory_bytes: i64,
}

/// Capacity on its way: VMs being provisioned or cold spares starting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incoming {
    pub vms: i64,
}

/// What one new worker brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmCapacity {
    pub block_slots: i64,
    pub memory_bytes: i64,
}

impl VmCapacity {
    /// The configured VM size with the soft cap (the default VM shape when no `proxmox:`).
    pub fn from_config(config: &Config) -> Self {
        let memory_mib = config.proxmox.as_ref().map_or_else(
            || crate::config::VmShape::default().memory_mib,
            |p| p.vm.memory_mib,
        );
        VmCapacity {
            block_slots: i64::from(config.soft_cap),
            memory_bytes: (memory_mib * 1024 * 1024) as i64,
        }
    }
}

/// The numbers triggers are evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Projection {
    /// Room minus pending claims minus admitted block demand (negative: more demand than room).
    pub free_block_slots: i64,
    /// Slots under the soft cap on schedulable nodes and incoming VMs.
    pub room: i64,
    pub pending_block_claims: i64,
    /// Pending claims plus admitted block demand.
    pub planned_block_volumes: i64,
    pub max_node_block_volumes: i64,
    pub memory_request_ratio: f64,
    pub memory_limit_ratio: f64,
    pub incoming_vms: i64,
}

/// Projects the view with admitted demand and incoming capacity.
pub fn project(
    view: &ClusterView,
    admitted: AdmittedDemand,
    incoming: Incoming,
    vm: VmCapacity,
) -> Projection {
    let pending = view.pending_block_claims();
    let planned = pending + admitted.block_volumes;
    let room = view.room() + incoming.vms * vm.block_slots;
    let sched = view.schedulable();
    let (mut requested, mut limits, mut allocatable) = (0i64, 0i64, 0i64);
    for n in sched {
        requested += n.memory_requested_bytes;
        limits += n.memory_limits_bytes;
        allocatable += n.memory_allocatable_bytes;
    }
    requested += admitted.memory_bytes;
    limits += admitted.memory_bytes;
    allocatable += incoming.vms * vm.memory_bytes;
    let ratio = |x: i64| {
        if allocatable <= 0 {
            0.0
        } else {
            x as f64 / allocatable as f64
        }
    };
    Projection {
        free_block_slots: room - planned,
        room,
        pending_block_claims: pending,
        planned_block_volumes: planned,
        max_node_block_volumes: view.max_node_block_volumes(),
        memory_request_ratio: ratio(requested),
        memory_limit_ratio: ratio(limits),
        incoming_vms: incoming.vms,
    }
}

/// One evaluated trigger, signal or scale-down condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    /// Its condition holds now on the projection (its `for:` aside).
    pub firing: bool,
    /// It has held for at least `for:` (what acts).
    pub sustained: bool,
    /// The `for:` duration.
    pub r#for: Period,
    /// How long it has held, when it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for: Option<Period>,
    /// Value against threshold, in words.
    pub reason: String,
}

/// When each condition started to hold, kept by the caller between evaluations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    since: BTreeMap<&'static str, Instant>,
}

impl History {
    /// Records whether `name` holds at `now`; returns how long it has held.
    fn observe(&mut self, name: &'static str, holds: bool, now: Instant) -> Option<std::time::Duration> {
        if holds {
            let since = *self.since.entry(name).or_insert(now);
            Some(now.saturating_duration_since(since))
        } else {
            self.since.remove(name);
            None
        }
    }
}

/// Everything the config asks to be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub triggers: Vec<Check>,
    pub signals: Vec<Check>,
    /// The scale-down conditions (`scaleDown.*`), each with the shared `for:`.
    pub scale_down: Vec<Check>,
}

impl Evaluation {
    /// A scale-up is wanted: some trigger has held for its `for:`.
    pub fn scale_up_wanted(&self) -> bool {
        self.triggers.iter().any(|t| t.sustained)
    }

    /// Every scale-down condition has held for `scaleDown.for` (and there is at least one).
    pub fn scale_down_allowed(&self) -> bool {
        !self.scale_down.is_empty() && self.scale_down.iter().all(|c| c.sustained)
    }
}

struct Evaluator<'a> {
    history: &'a mut History,
    now: Instant,
}

impl Evaluator<'_> {
    fn check(&mut self, name: &'static str, holds: bool, r#for: Period, reason: String) -> Check {
        let held = self.history.observe(name, holds, self.now);
        Check {
            name,
            firing: holds,
            sustained: held.is_some_and(|h| h >= r#for.0),
            r#for,
            held_for: held.map(|h| Period(std::time::Duration::from_secs(h.as_secs()))),
            reason,
        }
    }
}

/// The trigger conditions alone, without history: which triggers hold on `p`.
fn trigger_conditions(p: &Projection, config: &Config) -> Vec<(&'static str, bool, Period, String)> {
    let t = &config.triggers;
    let mut out = Vec::new();
    if let Some(c) = t.free_block_slots {
        out.push((
            "freeBlockSlots",
            p.free_block_slots < c.below,
            c.r#for,
            format!(
                "{} free block slots (room {} − planned {}), below {}",
                p.free_block_slots, p.room, p.planned_block_volumes, c.below
            ),
        ));
    }
    if let Some(c) = t.memory_request_ratio {
        out.push((
            "memoryRequestRatio",
            p.memory_request_ratio > c.above,
            c.r#for,
            format!(
                "memory requests at {:.0}% of allocatable, above {:.0}%",
                p.memory_request_ratio * 100.0,
                c.above * 100.0
            ),
        ));
    }
    if let Some(c) = t.planned_block_volumes {
        // Satisfied once free slots (incoming included) cover the planned claims plus the
        // freeBlockSlots reserve.
        let reserve = t.free_block_slots.map_or(0, |f| f.below);
        let covered = p.room >= p.planned_block_volumes + reserve;
        out.push((
            "plannedBlockVolumes",
            p.planned_block_volumes >= c.at_least && p.max_node_block_volumes >= c.when_max_node_at_least && !covered,
            c.r#for,
            format!(
                "{} planned block volumes (≥ {}) while the fullest node holds {} (≥ {}); room {} for planned + reserve {}",
                p.planned_block_volumes, c.at_least, p.max_node_block_volumes, c.when_max_node_at_least, p.room, reserve
            ),
        ));
    }
    out
}

/// Evaluates every trigger, signal and scale-down condition on `p` at `now`.
pub fn evaluate(p: &Projection, config: &Config, history: &mut History, now: Instant) -> Evaluation {
    let mut ev = Evaluator { history, now };
    let triggers = trigger_conditions(p, config)
        .into_iter()
        .map(|(name, holds, r#for, reason)| ev.check(name, holds, r#for, reason))
        .collect();

    let mut signals = Vec::new();
    if let Some(s) = config.signals.max_node_block_volumes {
        signals.push(ev.check(
            "maxNodeBlockVolumes",
            p.max_node_block_volumes >= s.at_least,
            s.r#for,
            format!(
                "fullest node holds {} block volumes, threshold {}",
                p.max_node_block_volumes, s.at_least
            ),
        ));
    }

    let sd = &config.scale_down;
    let mut scale_down = Vec::new();
    if let Some(c) = sd.max_node_block_volumes {
        scale_down.push(ev.check(
            "scaleDown.maxNodeBlockVolumes",
            p.max_node_block_volumes <= c.at_most,
            sd.r#for,
            format!(
                "fullest node holds {} block volumes, at most {}",
                p.max_node_block_volumes, c.at_most
            ),
        ));
    }
    if let Some(c) = sd.memory_request_ratio {
        scale_down.push(ev.check(
            "scaleDown.memoryRequestRatio",
            p.memory_request_ratio < c.below,
            sd.r#for,
            format!(
                "memory requests at {:.0}%, below {:.0}%",
                p.memory_request_ratio * 100.0,
                c.below * 100.0
            ),
        ));
    }
    if let Some(c) = sd.memory_limit_ratio {
        scale_down.push(ev.check(
            "scaleDown.memoryLimitRatio",
            p.memory_limit_ratio < c.below,
            sd.r#for,
            format!(
                "memory limits at {:.0}%, below {:.0}%",
                p.memory_limit_ratio * 100.0,
                c.below * 100.0
            ),
        ));
    }
    Evaluation {
        triggers,
        signals,
        scale_down,
    }
}

/// The fewest extra VMs (beyond `incoming`) that make every trigger stop firing, capped at
/// `limit`; `None` when even `limit` VMs would not.
pub fn vms_to_clear_triggers(
    view: &ClusterView,
    admitted: AdmittedDemand,
    incoming: Incoming,
    vm: VmCapacity,
    config: &Config,
    limit: i64,
) -> Option<i64> {
    (0..=limit.max(0)).find(|extra| {
        let p = project(
            view,
            admitted,
            Incoming {
                vms: incoming.vms + extra,
            },
            vm,
        );
        trigger_conditions(&p, config)
            .iter()
            .all(|(_, holds, _, _)| !holds)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{Above, Below, Config},
        decide::accounting::{ClaimState, NodeUsage},
    };

    const GI: i64 = 1024 * 1024 * 1024;

    fn usage(name: &str, block: i64, mem_req_gi: i64) -> NodeUsage {
        NodeUsage {
            name: name.into(),
            block_volumes: block,
            soft_cap: 24,
            hard_cap: 28,
            memory_requested_bytes: mem_req_gi * GI,
            memory_limits_bytes: mem_req_gi * GI,
            memory_allocatable_bytes: 32 * GI,
            cpu_requested_millis: 0,
            cpu_allocatable_millis: 8000,
            schedulable: true,
            unschedulable_reason: None,
            gpus: 0,
            pods: 0,
            pod_volumes: block,
            volume_keys: Default::default(),
        }
    }

    fn view(nodes: Vec<NodeUsage>, pending: usize) -> ClusterView {
        let block_claims = (0..pending)
            .map(|i| {
                (
                    ("ns".to_owned(), format!("c{i}")),
                    (format!("claim:ns/c{i}"), ClaimState::Pending),
                )
            })
            .collect();
        ClusterView {
            nodes,
            block_claims,
            pending_claims: pending as i64,
            ..Default::default()
        }
    }

    fn vm() -> VmCapacity {
        VmCapacity {
            block_slots: 24,
            memory_bytes: 32 * GI,
        }
    }

    fn firing(ev: &Evaluation, name: &str) -> bool {
        ev.triggers
            .iter()
            .chain(&ev.signals)
            .chain(&ev.scale_down)
            .any(|c| c.name == name && c.firing)
    }

    /// (case, nodes, pending claims, admitted, incoming, [(check, firing)])
    type Row = (
        &'static str,
        Vec<NodeUsage>,
        usize,
        AdmittedDemand,
        Incoming,
        Vec<(&'static str, bool)>,
    );

    #[test]
    fn triggers_and_signals_on_the_projection() {
        let cases: Vec<Row> = vec![
            (
                "roomy cluster: nothing fires",
                vec![usage("a", 10, 10), usage("b", 10, 10)],
                0,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![
                    ("freeBlockSlots", false),
                    ("memoryRequestRatio", false),
                    ("plannedBlockVolumes", false),
                    ("maxNodeBlockVolumes", false),
                ],
            ),
            (
                "free slots 3 < 4 fires",
                vec![usage("a", 22, 10), usage("b", 23, 10)],
                0,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![("freeBlockSlots", true), ("maxNodeBlockVolumes", true)],
            ),
            (
                "exactly 4 free does not fire (strictly below)",
                vec![usage("a", 22, 10), usage("b", 22, 10)],
                0,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![("freeBlockSlots", false)],
            ),
            (
                "pending claims eat the room",
                vec![usage("a", 20, 10), usage("b", 20, 10)],
                5,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![("freeBlockSlots", true), ("plannedBlockVolumes", false)],
            ),
            (
                "admitted block demand counts before any object exists",
                vec![usage("a", 18, 10), usage("b", 18, 10)],
                0,
                AdmittedDemand {
                    block_volumes: 9,
                    memory_bytes: 0,
                },
                Incoming::default(),
                vec![("freeBlockSlots", true)],
            ),
            (
                "a VM on its way covers the same demand",
                vec![usage("a", 18, 10), usage("b", 18, 10)],
                0,
                AdmittedDemand {
                    block_volumes: 9,
                    memory_bytes: 0,
                },
                Incoming { vms: 1 },
                vec![("freeBlockSlots", false)],
            ),
            (
                "memory above 90% fires; admitted memory counts",
                vec![usage("a", 0, 28), usage("b", 0, 28)],
                0,
                AdmittedDemand {
                    block_volumes: 0,
                    memory_bytes: 2 * GI,
                },
                Incoming::default(),
                vec![("memoryRequestRatio", true)],
            ),
            (
                "planned ≥3 while the fullest node is at 22, room not covering planned + reserve",
                vec![usage("a", 22, 10), usage("b", 22, 10)],
                3,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![("plannedBlockVolumes", true), ("maxNodeBlockVolumes", true)],
            ),
            (
                "planned ≥3 at 22 but plenty of room elsewhere",
                vec![usage("a", 22, 10), usage("b", 0, 10)],
                3,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![("plannedBlockVolumes", false), ("maxNodeBlockVolumes", true)],
            ),
            (
                "scale-down conditions hold on a quiet cluster",
                vec![usage("a", 5, 8), usage("b", 4, 8)],
                0,
                AdmittedDemand::default(),
                Incoming::default(),
                vec![
                    ("scaleDown.maxNodeBlockVolumes", true),
                    ("scaleDown.memoryRequestRatio", true),
                    ("scaleDown.memoryLimitRatio", true),
                ],
            ),
        ];
        let config = Config::default();
        for (name, nodes, pending, admitted, incoming, want) in cases {
            let v = view(nodes, pending);
            let p = project(&v, admitted, incoming, vm());
            let ev = evaluate(&p, &config, &mut History::default(), Instant::now());
            for (check, expected) in want {
                assert_eq!(firing(&ev, check), expected, "{name}: {check} (projection {p:?})");
            }
        }
    }

    #[test]
    fn for_durations_count_from_when_the_condition_started_to_hold() {
        let mut config = Config::default();
        config.triggers.free_block_slots = Some(Below {
            below: 4,
            r#for: Period(Duration::from_secs(300)),
        });
        config.triggers.memory_request_ratio = Some(Above {
            above: 0.9,
            r#for: Period(Duration::ZERO),
        });
        let tight = view(vec![usage("a", 23, 10), usage("b", 23, 10)], 0);
        let roomy = view(vec![usage("a", 2, 10), usage("b", 2, 10)], 0);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = History::default();
        let step = |h: &mut History, v: &ClusterView, secs: u64| {
            let ev = evaluate(
                &project(v, AdmittedDemand::default(), Incoming::default(), vm()),
                &config,
                h,
                at(secs),
            );
            let c = ev
                .triggers
                .iter()
                .find(|c| c.name == "freeBlockSlots")
                .unwrap()
                .clone();
            (c.firing, c.sustained, ev.scale_up_wanted())
        };
        assert_eq!(
            step(&mut h, &tight, 0),
            (true, false, false),
            "holds, not yet for 5m"
        );
        assert_eq!(step(&mut h, &tight, 299), (true, false, false));
        assert_eq!(step(&mut h, &tight, 300), (true, true, true), "held 5m: acts");
        assert_eq!(
            step(&mut h, &roomy, 301),
            (false, false, false),
            "stopped holding: reset"
        );
        assert_eq!(
            step(&mut h, &tight, 302),
            (true, false, false),
            "counts again from 302"
        );
        assert_eq!(step(&mut h, &tight, 602), (true, true, true));
    }

    #[test]
    fn scale_down_needs_every_condition_for_the_whole_period() {
        let config = Config::default(); // for: 720h
        let quiet = view(vec![usage("a", 5, 8), usage("b", 4, 8)], 0);
        let busy_mem = view(vec![usage("a", 5, 30), usage("b", 4, 30)], 0);
        let t0 = Instant::now();
        let hours = |h: u64| t0 + Duration::from_secs(h * 3600);
        let mut h = History::default();
        let mut allowed = |v: &ClusterView, at: Instant| {
            evaluate(
                &project(v, AdmittedDemand::default(), Incoming::default(), vm()),
                &config,
                &mut h,
                at,
            )
            .scale_down_allowed()
        };
        assert!(!allowed(&quiet, hours(0)));
        assert!(!allowed(&quiet, hours(719)));
        assert!(allowed(&quiet, hours(720)));
        assert!(
            !allowed(&busy_mem, hours(721)),
            "one condition broke: the clock restarts"
        );
        assert!(!allowed(&quiet, hours(722)), "holds again from 722");
        assert!(!allowed(&quiet, hours(722 + 719)));
        assert!(allowed(&quiet, hours(722 + 720)));
    }

    #[test]
    fn fewest_vms_that_stop_every_trigger() {
        let config = Config::default();
        let full = view(vec![usage("a", 24, 10), usage("b", 24, 10)], 30);
        let none = vms_to_clear_triggers(
            &full,
            AdmittedDemand::default(),
            Incoming::default(),
            vm(),
            &config,
            5,
        );
        // 30 pending + reserve 4 = 34 slots → 2 VMs of 24.
        assert_eq!(none, Some(2));
        let one_coming = vms_to_clear_triggers(
            &full,
            AdmittedDemand::default(),
            Incoming { vms: 1 },
            vm(),
            &config,
            5,
        );
        assert_eq!(one_coming, Some(1), "incoming capacity is not asked for twice");
        assert_eq!(
            vms_to_clear_triggers(
                &full,
                AdmittedDemand::default(),
                Incoming::default(),
                vm(),
                &config,
                1
            ),
            None
        );
        let roomy = view(vec![usage("a", 1, 10)], 0);
        assert_eq!(
            vms_to_clear_triggers(
                &roomy,
                AdmittedDemand::default(),
                Incoming::default(),
                vm(),
                &config,
                5
            ),
            Some(0)
        );
    }
}
