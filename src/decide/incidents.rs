//! Incidents as input: the runbook's LUN-cap incident (`FailedAttachVolume … no free lun
//! found`) and eviction churn (kubelet evictions, more than 20 a day for three days).
//!
//! Core Events live an hour, the windows these triggers look at are a day and more: each tick
//! counts what the Events add since they were last counted into a ledger the caller keeps (and
//! persists) with its windows. A LUN-cap incident is answered by moving the stuck pod — evicted
//! so the extender places it on a node with room — or, when no node has room or the pod cannot
//! move, by one VM. Sustained churn asks for one VM per `for:`.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    decide::{
        Situation,
        actuation::ActuatorStatus,
        placement::pod_block_keys,
        projection::Condition,
        rebalance::{MoveCause, PodMove, destination, replicas_on_nodes, unmovable},
        time::Timestamp,
    },
    index::ClusterState,
    model::{Incident, PodInfo},
};

const HOUR: u64 = 3600 * 1000;

/// One LUN-cap incident: when, and the pod whose volume found no LUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LunCapIncident {
    pub at: Timestamp,
    /// `namespace/name`.
    pub pod: String,
    pub count: i64,
}

/// What the incident Events added up to, kept between ticks and persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Event (`namespace/name`) → the count already counted, while the Event lives.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counted: BTreeMap<String, i64>,
    /// LUN-cap incidents within `lunCapIncidents.within`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lun_cap: Vec<LunCapIncident>,
    /// Kubelet evictions per hour (hours since the epoch), within `per` + `for`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evictions: BTreeMap<u64, i64>,
}

impl Ledger {
    pub fn is_empty(&self) -> bool {
        self.counted.is_empty() && self.lun_cap.is_empty() && self.evictions.is_empty()
    }

    /// Counts what the Events in `state` add since last counted, and forgets what is older
    /// than the triggers look.
    pub fn observe(&mut self, state: &ClusterState, config: &Config, now: Timestamp) {
        let mut counted = BTreeMap::new();
        for ((ns, name), e) in &state.events {
            let key = format!("{ns}/{name}");
            let before = self.counted.get(&key).copied().unwrap_or(0);
            // A count below the last one is a new Event under an old name.
            let new = if e.count >= before {
                e.count - before
            } else {
                e.count
            };
            counted.insert(key, e.count);
            if new == 0 {
                continue;
            }
            let at = if e.last_seen_ms == 0 {
                now
            } else {
                Timestamp(e.last_seen_ms).min(now)
            };
            match e.incident {
                Incident::LunCap => self.lun_cap.push(LunCapIncident {
                    at,
                    pod: format!("{ns}/{}", e.pod.as_deref().unwrap_or("?")),
                    count: new,
                }),
                Incident::KubeletEviction => *self.evictions.entry(at.0 / HOUR).or_default() += new,
            }
        }
        self.counted = counted;
        let t = &config.triggers;
        let keep_lun = t.lun_cap_incidents.map_or(Duration::ZERO, |c| c.within.0);
        self.lun_cap.retain(|i| now.since(i.at) < keep_lun);
        let keep_evictions = t.pod_evictions.map_or(Duration::ZERO, |c| c.per.0 + c.r#for.0);
        let oldest_hour = now.0.saturating_sub(keep_evictions.as_millis() as u64) / HOUR;
        self.evictions.retain(|hour, _| *hour >= oldest_hour);
    }

    fn lun_cap_within(&self, within: Duration, now: Timestamp) -> i64 {
        self.lun_cap
            .iter()
            .filter(|i| now.since(i.at) < within)
            .map(|i| i.count)
            .sum()
    }

    /// Evictions in the last `per`, counted in whole hours (the current one included).
    fn evictions_within(&self, per: Duration, now: Timestamp) -> i64 {
        let hours = per.as_millis() as u64 / HOUR;
        let current = now.0 / HOUR;
        self.evictions
            .range(current.saturating_sub(hours.saturating_sub(1))..=current)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The incident triggers' conditions and what answers them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// `lunCapIncidents` and `podEvictions`, evaluated like the other triggers.
    pub conditions: Vec<Condition>,
    /// A stuck pod to move.
    pub stuck_pod_move: Option<PodMove>,
    /// Why one more VM is wanted, when it is (1 VM; never more on an incident).
    pub wants_vm: Option<String>,
}

/// Counts the Events into `ledger` and decides the answer.
pub fn respond(input: &Situation<'_>, ledger: &mut Ledger) -> Response {
    let Situation {
        state, config, now, ..
    } = *input;
    ledger.observe(state, config, now);
    let mut out = Response::default();
    if let Some(c) = config.triggers.lun_cap_incidents {
        let n = ledger.lun_cap_within(c.within.0, now);
        let last = ledger.lun_cap.last().map(|i| i.pod.clone()).unwrap_or_default();
        out.conditions.push(Condition {
            name: "lunCapIncidents",
            holds: n >= c.at_least,
            r#for: Default::default(),
            reason: format!(
                "{n} LUN-cap incident(s) (FailedAttachVolume: no free lun found) in the last {}, at least {}{}",
                c.within,
                c.at_least,
                if last.is_empty() { String::new() } else { format!("; last: pod {last}") }
            ),
        });
        if n >= c.at_least {
            answer_lun_cap(input, ledger, &mut out);
        }
    }
    if let Some(c) = config.triggers.pod_evictions {
        let n = ledger.evictions_within(c.per.0, now);
        out.conditions.push(Condition {
            name: "podEvictions",
            holds: n >= c.at_least,
            r#for: c.r#for,
            reason: format!(
                "{n} kubelet evictions in the last {}, at least {} (sustained for {})",
                c.per, c.at_least, c.r#for
            ),
        });
    }
    out
}

/// Eviction churn that has held for its `for:` asks for one VM per `for:`.
pub fn churn_wants_vm(
    config: &Config,
    sustained: bool,
    actuator: &ActuatorStatus,
    now: Timestamp,
) -> Option<String> {
    let c = config.triggers.pod_evictions?;
    let recent_scale_up = actuator.last_scale_up.is_some_and(|t| now.since(t) < c.r#for.0);
    (sustained && !recent_scale_up && actuator.incoming_vms() == 0).then(|| {
        format!(
            "kubelet evictions stayed at {} or more per {} for {}: one more worker",
            c.at_least, c.per, c.r#for
        )
    })
}

/// The stuck pods — on a node where a volume of theirs failed to attach — are moved when
/// another node has room and they can move; otherwise one VM is wanted, unless one was added
/// since the incident.
fn answer_lun_cap(input: &Situation<'_>, ledger: &Ledger, out: &mut Response) {
    let Situation {
        state,
        view,
        actuator,
        ..
    } = *input;
    let mut stuck = stuck_pods(state);
    stuck.sort_by(|a, b| (&a.1.namespace, &a.1.name).cmp(&(&b.1.namespace, &b.1.name)));
    let mut refusals = Vec::new();
    for (node, pod) in stuck {
        if let Some(why) = unmovable(input, pod, node) {
            refusals.push(why);
            continue;
        }
        let keys = pod_block_keys(view, pod);
        match destination(input, pod, &keys, node, |_| true) {
            Some(to) if actuator.moving.is_none() && out.stuck_pod_move.is_none() => {
                out.stuck_pod_move = Some(PodMove {
                    namespace: pod.namespace.to_string(),
                    name: pod.name.to_string(),
                    from: node.to_owned(),
                    toward: to.name.to_string(),
                    cause: MoveCause::LunCapIncident,
                    reason: format!(
                        "a volume of it found no free LUN on {node} (FailedAttachVolume); {} has room under its soft cap",
                        to.name
                    ),
                    owner: pod.owner,
                    replicas: replicas_on_nodes(state, pod.owner),
                });
            }
            Some(_) => {}
            None => refusals.push(format!(
                "no other node has room for {}/{} under its soft cap",
                pod.namespace, pod.name
            )),
        }
    }
    let last_incident = ledger.lun_cap.iter().map(|i| i.at).max();
    let added_since = matches!((actuator.last_scale_up, last_incident), (Some(up), Some(at)) if up >= at);
    // A VM already on its way, or added since, answers the incident.
    let coming = actuator.incoming_vms() > 0;
    if out.stuck_pod_move.is_none() && !refusals.is_empty() && !added_since && !coming {
        out.wants_vm = Some(format!(
            "LUN-cap incident: {}; one more worker",
            refusals.join("; ")
        ));
    }
}

/// The pods stuck on their node: a volume of theirs failed to attach there (attach error, not
/// attached), each with that node. The failing attachments are few, so they are gathered first
/// and the pods looked up against them (not every pod against every attachment).
fn stuck_pods(state: &ClusterState) -> Vec<(&str, &PodInfo)> {
    let failing: HashSet<(&str, &str)> = state
        .attachments
        .values()
        .filter(|va| va.failing())
        .filter_map(|va| Some((va.node_name.as_str(), va.pv_name.as_deref()?)))
        .collect();
    if failing.is_empty() {
        return Vec::new();
    }
    state
        .pods
        .values()
        .filter(|p| !p.terminal)
        .filter_map(|p| Some((p.node_name.as_deref()?, &**p)))
        .filter(|(node, pod)| {
            pod.claims.iter().any(|claim| {
                state
                    .claims
                    .get_str(&pod.namespace, claim)
                    .and_then(|c| c.volume_name.as_deref())
                    .is_some_and(|pv| failing.contains(&(*node, pv)))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decide::fixtures::{add_pod, cluster, in_situation},
        model::{Controller, EventInfo},
    };

    const T0: Timestamp = Timestamp(1_780_000_000_000);

    fn at(mins: u64) -> Timestamp {
        T0.plus(Duration::from_secs(mins * 60))
    }

    fn event(name: &str, incident: Incident, pod: &str, count: i64, when: Timestamp) -> EventInfo {
        EventInfo {
            namespace: "apps".into(),
            name: name.into(),
            incident,
            pod: Some(pod.into()),
            count,
            last_seen_ms: when.0,
        }
    }

    fn with_events(events: &[EventInfo]) -> ClusterState {
        let mut s = ClusterState::default();
        for e in events {
            s.events.insert((e.namespace.clone(), e.name.clone()), e.clone());
        }
        s
    }

    #[test]
    fn the_ledger_counts_what_an_event_adds_once_and_outlives_the_event() {
        let config = Config::default();
        let mut ledger = Ledger::default();
        let lun = |count, when| event("e1", Incident::LunCap, "db-0", count, when);
        // (case, events in the index, now, LUN-cap incidents counted within 24h)
        let steps: Vec<(&str, Vec<EventInfo>, Timestamp, i64)> = vec![
            ("first sight", vec![lun(1, at(0))], at(0), 1),
            ("the same Event again", vec![lun(1, at(0))], at(1), 1),
            ("it happened twice more", vec![lun(3, at(5))], at(5), 3),
            ("the Event expired (1 h TTL)", vec![], at(70), 3),
            ("a new Event under the old name", vec![lun(1, at(80))], at(80), 4),
            ("a day after the first three", vec![], at(24 * 60 + 6), 1),
            ("a day after the last", vec![], at(24 * 60 + 81), 0),
        ];
        for (case, events, now, want) in steps {
            ledger.observe(&with_events(&events), &config, now);
            assert_eq!(
                ledger.lun_cap_within(Duration::from_secs(24 * 3600), now),
                want,
                "{case}"
            );
        }
        assert!(ledger.counted.is_empty(), "nothing kept for Events that are gone");
    }

    #[test]
    fn eviction_churn_counts_kubelet_evictions_per_rolling_day() {
        let config = Config::default();
        let mut ledger = Ledger::default();
        let day = Duration::from_secs(24 * 3600);
        // 25 evictions an hour apart, one Event each.
        for h in 0..25u64 {
            let e = event(&format!("ev{h}"), Incident::KubeletEviction, "web", 1, at(h * 60));
            ledger.observe(&with_events(&[e]), &config, at(h * 60));
        }
        assert_eq!(
            ledger.evictions_within(day, at(24 * 60)),
            24,
            "the first is a day old"
        );
        assert_eq!(ledger.evictions_within(day, at(47 * 60)), 1, "only the last");
        ledger.observe(&ClusterState::default(), &config, at(96 * 60));
        assert_eq!(ledger.evictions.len(), 25, "kept for per + for (96 h)");
        ledger.observe(&ClusterState::default(), &config, at(110 * 60));
        assert_eq!(
            ledger.evictions.len(),
            11,
            "older than 96 h goes: hours 14 to 24 stay"
        );
    }

    /// n1 and n2 holding `n1_volumes` and `n2_volumes`, and pod `apps/db-0` on n1 whose volume
    /// failed to attach there, owned by its own ReplicaSet unless `orphan`.
    fn stuck_cluster(n1_volumes: usize, n2_volumes: usize, orphan: bool) -> ClusterState {
        let mut s = cluster(&[n1_volumes, n2_volumes]);
        add_pod(&mut s, "n1", "db-0", 1);
        let va = s.attachments.get_mut("va-pv-db-0-c0").unwrap();
        (va.attached, va.attach_error) = (false, true);
        let db = s.pods.get_mut(&("apps".into(), "db-0".into())).unwrap();
        if orphan {
            db.controller = Controller::None;
            db.owner = 0;
        }
        s
    }

    fn respond_on(state: &ClusterState, actuator: &ActuatorStatus, ledger: &mut Ledger) -> Response {
        in_situation(state, &Config::default(), actuator, at(2), |s| respond(s, ledger))
    }

    #[test]
    fn a_lun_cap_incident_moves_the_stuck_pod_or_asks_for_one_vm() {
        let incident = event("e1", Incident::LunCap, "db-0", 1, at(1));
        let added_after = ActuatorStatus {
            last_scale_up: Some(at(2)),
            ..Default::default()
        };
        let moving_other = ActuatorStatus {
            moving: Some(crate::decide::rebalance::MoveInProgress {
                pod: PodMove {
                    namespace: "apps".into(),
                    name: "x".into(),
                    from: "n2".into(),
                    toward: "n1".into(),
                    cause: MoveCause::Rebalance,
                    reason: String::new(),
                    owner: 1,
                    replicas: 1,
                },
                since: at(0),
            }),
            ..Default::default()
        };
        let just_moved = ActuatorStatus {
            passed_over: [("apps/db-0".to_owned(), at(0))].into(),
            ..Default::default()
        };
        // (case, cluster, actuator, the event seen, moved toward, wants a VM)
        type Row = (
            &'static str,
            ClusterState,
            ActuatorStatus,
            bool,
            Option<&'static str>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "room on n2: move",
                stuck_cluster(24, 3, false),
                ActuatorStatus::default(),
                true,
                Some("n2"),
                false,
            ),
            (
                "no incident Event: nothing",
                stuck_cluster(24, 3, false),
                ActuatorStatus::default(),
                false,
                None,
                false,
            ),
            (
                "n2 at its soft cap: a VM",
                stuck_cluster(24, 24, false),
                ActuatorStatus::default(),
                true,
                None,
                true,
            ),
            (
                "no controller: a VM",
                stuck_cluster(24, 3, true),
                ActuatorStatus::default(),
                true,
                None,
                true,
            ),
            (
                "a VM added since the incident: wait for it",
                stuck_cluster(24, 24, false),
                added_after,
                true,
                None,
                false,
            ),
            (
                "another move under way: wait",
                stuck_cluster(24, 3, false),
                moving_other,
                true,
                None,
                false,
            ),
            (
                "moved within the hour and stuck again: a VM",
                stuck_cluster(24, 3, false),
                just_moved,
                true,
                None,
                true,
            ),
        ];
        for (case, state, actuator, seen, toward, vm) in rows {
            let mut state = state;
            if seen {
                state
                    .events
                    .insert(("apps".into(), "e1".into()), incident.clone());
            }
            let r = respond_on(&state, &actuator, &mut Ledger::default());
            let lun = r.conditions.iter().find(|c| c.name == "lunCapIncidents").unwrap();
            assert_eq!(lun.holds, seen, "{case}: {}", lun.reason);
            assert_eq!(
                r.stuck_pod_move.as_ref().map(|m| m.toward.as_str()),
                toward,
                "{case}"
            );
            if let Some(m) = &r.stuck_pod_move {
                assert_eq!(
                    (m.name.as_str(), m.from.as_str(), m.cause),
                    ("db-0", "n1", MoveCause::LunCapIncident)
                );
            }
            assert_eq!(r.wants_vm.is_some(), vm, "{case}: {:?}", r.wants_vm);
        }
    }

    #[test]
    fn sustained_churn_asks_for_one_vm_per_window() {
        let config = Config::default();
        let days = |d: u64| at(d * 24 * 60);
        let up = |t| ActuatorStatus {
            last_scale_up: Some(t),
            ..Default::default()
        };
        assert!(churn_wants_vm(&config, true, &ActuatorStatus::default(), days(3)).is_some());
        assert!(churn_wants_vm(&config, false, &ActuatorStatus::default(), days(3)).is_none());
        assert!(
            churn_wants_vm(&config, true, &up(days(1)), days(3)).is_none(),
            "one per 72 h"
        );
        assert!(churn_wants_vm(&config, true, &up(days(0)), days(3)).is_some());
    }
}
