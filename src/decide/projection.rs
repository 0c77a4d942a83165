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
