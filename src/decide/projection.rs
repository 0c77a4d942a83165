//! The projection: demand and capacity ahead of time, and the triggers, signals and
//! scale-down conditions of the config evaluated on it.
//!
//! Demand is what the accounting sees plus admissions accepted but not yet visible as
//! objects. Capacity is the schedulable nodes plus VMs already on their way (being cloned, or
//! cold spares starting), counted as if joined with the configured VM size and the soft cap.
//! Durations (`for:`) are measured against `Windows` the caller keeps (and persists) and `now`
//! it passes in.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Period},
    decide::{accounting::ClusterView, time::Timestamp},
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmCapacity {
    pub block_slots: i64,
    pub memory_bytes: i64,
    pub cpu_millis: i64,
}

impl VmCapacity {
    /// The configured VM size with the soft cap (the default VM shape when no `proxmox:`).
    pub fn from_config(config: &Config) -> Self {
        let default = crate::config::VmShape::default();
        let shape = config.proxmox.as_ref().map_or(&default, |p| &p.vm);
        VmCapacity {
            block_slots: i64::from(config.soft_cap),
            memory_bytes: (shape.memory_mib * 1024 * 1024) as i64,
            cpu_millis: i64::from(shape.cores) * 1000,
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

/// What the schedulable nodes hold and offer, summed: the part of a projection that changes
/// when a node is taken away.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Slots under the soft cap on schedulable, block-ready nodes.
    pub room: i64,
    pub memory_requested: i64,
    pub memory_limits: i64,
    pub memory_allocatable: i64,
    pub max_node_block_volumes: i64,
}

impl Totals {
    pub fn of(view: &ClusterView) -> Self {
        let mut t = Totals {
            room: view.room(),
            max_node_block_volumes: view.max_node_block_volumes(),
            ..Default::default()
        };
        for n in view.schedulable() {
            t.memory_requested += n.memory_requested_bytes;
            t.memory_limits += n.memory_limits_bytes;
            t.memory_allocatable += n.memory_allocatable_bytes;
        }
        t
    }
}

/// Projects the view with admitted demand and incoming capacity.
pub fn project(
    view: &ClusterView,
    admitted: AdmittedDemand,
    incoming: Incoming,
    vm: VmCapacity,
) -> Projection {
    project_totals(
        Totals::of(view),
        view.pending_block_claims(),
        admitted,
        incoming,
        vm,
    )
}

/// Projects `totals` with `pending` block claims, admitted demand and incoming capacity.
pub fn project_totals(
    totals: Totals,
    pending: i64,
    admitted: AdmittedDemand,
    incoming: Incoming,
    vm: VmCapacity,
) -> Projection {
    let planned = pending + admitted.block_volumes;
    let room = totals.room + incoming.vms * vm.block_slots;
    let requested = totals.memory_requested + admitted.memory_bytes;
    let limits = totals.memory_limits + admitted.memory_bytes;
    let allocatable = totals.memory_allocatable + incoming.vms * vm.memory_bytes;
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
        max_node_block_volumes: totals.max_node_block_volumes,
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

/// When each trigger, signal and scale-down condition started to hold: kept by the caller
/// between evaluations and persisted, so a restart does not start a window again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    pub since: BTreeMap<String, Timestamp>,
    /// What the incident Events added up to (they expire long before the triggers forget).
    #[serde(default, skip_serializing_if = "crate::decide::incidents::Ledger::is_empty")]
    pub incidents: crate::decide::incidents::Ledger,
}

impl Windows {
    /// Records whether `name` holds at `now`; returns since when it has held.
    pub fn observe(&mut self, name: &str, holds: bool, now: Timestamp) -> Option<Timestamp> {
        if holds {
            // A moment in the future (a clock set back) counts from now.
            let since = self.since.entry(name.to_owned()).or_insert(now);
            *since = (*since).min(now);
            Some(*since)
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
    windows: &'a mut Windows,
    now: Timestamp,
    /// Scale-down conditions count from no earlier than the last removal: they held on the
    /// larger cluster, and must hold again for a whole window on the smaller one.
    scale_down_from: Option<Timestamp>,
}

impl Evaluator<'_> {
    /// A trigger or signal: held since it started to hold.
    fn check(&mut self, name: &'static str, holds: bool, r#for: Period, reason: String) -> Check {
        self.check_from(name, holds, r#for, reason, None)
    }

    /// A scale-down condition: held since it started to hold, and no earlier than the last
    /// removal.
    fn check_scale_down(&mut self, name: &'static str, holds: bool, r#for: Period, reason: String) -> Check {
        let from = self.scale_down_from;
        self.check_from(name, holds, r#for, reason, from)
    }

    fn check_from(
        &mut self,
        name: &'static str,
        holds: bool,
        r#for: Period,
        reason: String,
        not_before: Option<Timestamp>,
    ) -> Check {
        let since = self.windows.observe(name, holds, self.now);
        let since = match (since, not_before) {
            (Some(s), Some(from)) => Some(s.max(from)),
            (s, _) => s,
        };
        let held = since.map(|s| self.now.since(s));
        Check {
            name,
            firing: holds,
            sustained: held.is_some_and(|h| h >= r#for.0),
            r#for,
            held_for: held.map(|h| Period(Duration::from_secs(h.as_secs()))),
            reason,
        }
    }
}

/// A trigger's condition on one projection, before its `for:` is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub name: &'static str,
    pub holds: bool,
    pub r#for: Period,
    pub reason: String,
}

/// The trigger conditions alone, without windows: which triggers hold on `p`.
pub fn trigger_conditions(p: &Projection, config: &Config) -> Vec<Condition> {
    let t = &config.triggers;
    let mut out = Vec::new();
    if let Some(c) = t.free_block_slots {
        out.push(Condition {
            name: "freeBlockSlots",
            holds: p.free_block_slots < c.below,
            r#for: c.r#for,
            reason: format!(
                "{} free block slots (room {} − planned {}), below {}",
                p.free_block_slots, p.room, p.planned_block_volumes, c.below
            ),
        });
    }
    if let Some(c) = t.memory_request_ratio {
        out.push(Condition {
            name: "memoryRequestRatio",
            holds: p.memory_request_ratio > c.above,
            r#for: c.r#for,
            reason: format!(
                "memory requests at {:.0}% of allocatable, above {:.0}%",
                p.memory_request_ratio * 100.0,
                c.above * 100.0
            ),
        });
    }
    if let Some(c) = t.planned_block_volumes {
        // Satisfied once free slots (incoming included) cover the planned claims plus the
        // freeBlockSlots reserve.
        let reserve = t.free_block_slots.map_or(0, |f| f.below);
        let covered = p.room >= p.planned_block_volumes + reserve;
        out.push(Condition {
            name: "plannedBlockVolumes",
            holds: p.planned_block_volumes >= c.at_least
                && p.max_node_block_volumes >= c.when_max_node_at_least
                && !covered,
            r#for: c.r#for,
            reason: format!(
                "{} planned block volumes (≥ {}) while the fullest node holds {} (≥ {}); room {} for planned + reserve {}",
                p.planned_block_volumes, c.at_least, p.max_node_block_volumes, c.when_max_node_at_least, p.room, reserve
            ),
        });
    }
    out
}

/// Evaluates every trigger, signal and scale-down condition on `p` at `now`; scale-down
/// conditions count from no earlier than `last_scale_down`.
pub fn evaluate(
    p: &Projection,
    config: &Config,
    windows: &mut Windows,
    now: Timestamp,
    last_scale_down: Option<Timestamp>,
) -> Evaluation {
    let mut ev = Evaluator {
        windows,
        now,
        scale_down_from: last_scale_down,
    };
    let triggers = trigger_conditions(p, config)
        .into_iter()
        .map(|c| ev.check(c.name, c.holds, c.r#for, c.reason))
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
        scale_down.push(ev.check_scale_down(
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
        scale_down.push(ev.check_scale_down(
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
        scale_down.push(ev.check_scale_down(
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

/// Adds `conditions` (triggers not read off the projection: the incident triggers) to the
/// evaluation's triggers, each sustained after its `for:` as measured in `windows`.
pub fn add_triggers(
    evaluation: &mut Evaluation,
    conditions: Vec<Condition>,
    windows: &mut Windows,
    now: Timestamp,
) {
    let mut ev = Evaluator {
        windows,
        now,
        scale_down_from: None,
    };
    evaluation.triggers.extend(
        conditions
            .into_iter()
            .map(|c| ev.check(c.name, c.holds, c.r#for, c.reason)),
    );
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
        trigger_conditions(&p, config).iter().all(|c| !c.holds)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{Above, Below, Config},
        decide::accounting::{ClaimState, NodeUsage},
        model::Name,
    };

    const GI: i64 = 1024 * 1024 * 1024;
    const T0: Timestamp = Timestamp(1_780_000_000_000);

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
            block_ready: true,
            failing_to_attach: 0,
            pod_volumes: block,
            volume_keys: Default::default(),
        }
    }

    fn view(nodes: Vec<NodeUsage>, pending: usize) -> ClusterView {
        let block_claims = (0..pending)
            .map(|i| {
                (
                    (Name::from("ns"), Name::from(format!("c{i}"))),
                    (Name::from(format!("claim:ns/c{i}")), ClaimState::Pending),
                )
            })
            .collect();
        ClusterView {
            nodes: nodes.into_iter().collect(),
            block_claims,
            pending_claims: pending as i64,
            ..Default::default()
        }
    }

    fn vm() -> VmCapacity {
        VmCapacity {
            block_slots: 24,
            memory_bytes: 32 * GI,
            cpu_millis: 8000,
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
            let ev = evaluate(&p, &config, &mut Windows::default(), T0, None);
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
        let at = |s: u64| T0.plus(Duration::from_secs(s));
        let mut h = Windows::default();
        let step = |h: &mut Windows, v: &ClusterView, secs: u64| {
            let ev = evaluate(
                &project(v, AdmittedDemand::default(), Incoming::default(), vm()),
                &config,
                h,
                at(secs),
                None,
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
        let hours = |h: u64| T0.plus(Duration::from_secs(h * 3600));
        let mut h = Windows::default();
        let mut allowed = |v: &ClusterView, at: Timestamp| {
            evaluate(
                &project(v, AdmittedDemand::default(), Incoming::default(), vm()),
                &config,
                &mut h,
                at,
                None,
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

#[cfg(test)]
mod window_tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const T0: Timestamp = Timestamp(1_780_000_000_000);

    fn quiet() -> Projection {
        Projection {
            free_block_slots: 40,
            room: 40,
            pending_block_claims: 0,
            planned_block_volumes: 0,
            max_node_block_volumes: 5,
            memory_request_ratio: 0.2,
            memory_limit_ratio: 0.3,
            incoming_vms: 0,
        }
    }

    #[test]
    fn a_removal_starts_the_scale_down_window_again_and_windows_survive_a_round_trip() {
        let config = Config::default(); // for: 720h
        let hours = |h: u64| T0.plus(Duration::from_secs(h * 3600));
        let mut windows = Windows::default();
        // (hour, last removal, allowed)
        let rows: [(u64, Option<u64>, bool); 5] = [
            (0, None, false),
            (720, None, true),
            (721, Some(721), false),
            (721 + 719, Some(721), false),
            (721 + 720, Some(721), true),
        ];
        for (hour, removed, want) in rows {
            let ev = evaluate(&quiet(), &config, &mut windows, hours(hour), removed.map(hours));
            assert_eq!(
                ev.scale_down_allowed(),
                want,
                "hour {hour}, removal at {removed:?}"
            );
            // What a restart reads back is what was written: the window goes on.
            let text = serde_json::to_string(&windows).unwrap();
            windows = serde_json::from_str(&text).unwrap();
        }
        assert!(
            !ev_trigger_counts_from_removal(&config),
            "triggers are not restarted by a removal"
        );
    }

    /// A trigger's window ignores removals (only scale-down conditions restart).
    fn ev_trigger_counts_from_removal(config: &Config) -> bool {
        let mut tight = quiet();
        tight.free_block_slots = 1;
        let mut windows = Windows::default();
        evaluate(&tight, config, &mut windows, T0, None);
        let later = T0.plus(Duration::from_secs(3600));
        let ev = evaluate(&tight, config, &mut windows, later, Some(later));
        ev.triggers
            .iter()
            .find(|c| c.name == "freeBlockSlots")
            .and_then(|c| c.held_for)
            .is_some_and(|h| h.0 < Duration::from_secs(3600))
    }
}
