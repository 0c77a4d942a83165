//! One planning tick: the projection, the evaluation, the sizing and the plan, from one set of
//! inputs. `serve`'s planning loop, `status` and `simulate` all call this, so they cannot
//! disagree about what headroom would do.

use serde::Serialize;

use crate::{
    config::Config,
    decide::{
        Situation,
        accounting::{ClusterView, Reservations},
        actuation::ActuatorStatus,
        incidents,
        placement::Placement,
        planner::{self, Plan, PlanInput, Refusals, Sizing},
        projection::{self, AdmittedDemand, Evaluation, Incoming, Projection, VmCapacity, Windows},
        rebalance::{self, Next},
        time::Timestamp,
    },
    index::ClusterState,
};

/// What a tick reads.
pub struct TickInput<'a> {
    pub state: &'a ClusterState,
    pub view: &'a ClusterView,
    /// Volumes bound by the extender that the view does not show yet.
    pub reservations: &'a Reservations,
    pub config: &'a Config,
    /// Admitted demand not yet visible as objects.
    pub admitted: AdmittedDemand,
    pub actuator: &'a ActuatorStatus,
}

/// What a tick decides.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tick {
    /// The actuator generation the plan was made from: the actuator refuses a plan made
    /// before its own state last changed.
    pub basis: u64,
    pub projection: Projection,
    pub evaluation: Evaluation,
    pub sizing: Sizing,
    pub plan: Plan,
    /// Why no node is removed although the scale-down conditions hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale_down_refusals: Refusals,
    /// The block-volume spread and the next move (`rebalance:`).
    pub rebalance: rebalance::Outlook,
}

/// One tick at `now`; `windows` carries (and is updated with) when each condition started to
/// hold.
pub fn tick(input: &TickInput<'_>, windows: &mut Windows, now: Timestamp) -> Tick {
    let TickInput {
        state,
        view,
        reservations,
        config,
        admitted,
        actuator,
    } = *input;
    let incoming = Incoming {
        vms: actuator.incoming_vms(),
    };
    let projection = projection::project(view, admitted, incoming, VmCapacity::from_config(config));
    let mut evaluation = projection::evaluate(&projection, config, windows, now, actuator.last_scale_down);
    let placement = Placement::new(view, reservations);
    let situation = Situation {
        state,
        view,
        placement,
        config,
        actuator,
        now,
    };
    let incidents = incidents::respond(&situation, &mut windows.incidents);
    projection::add_triggers(&mut evaluation, incidents.conditions, windows, now);
    let churn = evaluation
        .triggers
        .iter()
        .any(|t| t.name == "podEvictions" && t.sustained);
    let incident_vm = incidents
        .wants_vm
        .or_else(|| incidents::churn_wants_vm(config, churn, actuator, now));
    let sizing = planner::size(
        state,
        view,
        placement,
        config,
        admitted,
        incoming.vms,
        i64::from(incident_vm.is_some()),
    );
    let (mut plan, scale_down_refusals) = planner::plan(&PlanInput {
        situation: &situation,
        evaluation: &evaluation,
        sizing: &sizing,
        admitted,
        incident_vm: incident_vm.as_deref(),
    });
    let rebalance = rebalance::outlook(&situation, windows);
    // Capacity first: a move waits while VMs are wanted or a node is removed; a pod stuck
    // for want of a LUN goes before a rebalancing move.
    if plan == Plan::Nothing && actuator.removal.is_none() {
        if let Some(m) = incidents.stuck_pod_move {
            plan = Plan::Move(m);
        } else if let Next::Move(m) = &rebalance.next {
            plan = Plan::Move(m.clone());
        }
    }
    Tick {
        basis: actuator.generation,
        projection,
        evaluation,
        sizing,
        plan,
        scale_down_refusals,
        rebalance,
    }
}
