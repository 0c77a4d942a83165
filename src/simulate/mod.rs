//! `headroom simulate`: a discrete-event replay of a scenario on a snapshot, one second per step.
//!
//! The proactive policy runs headroom's own decisions — admission, extender filter/prioritize,
//! bind, the planner on the projection — on a simulated clock. The reactive policy is
//! kproximate's: the default scheduler (memory fit and the CSINode attach limit, least
//! allocated first, no spread by volumes), and every 10 s one VM of a fixed size when a pod is
//! Pending and none is booting. Pods whose volume would be a node's 25th attach get stuck in
//! ContainerCreating, as in the seed incident: they count as waiting for the whole run.
//!
//! Scale-down follows each side's rule too: headroom drains the node its planner picks once the
//! `scaleDown` conditions have held for `for:` and keeps the VM as a cold spare (action
//! `shutdown`), which the next scale-up starts instead of cloning; kproximate removes one of
//! the nodes it made as soon as the others' allocatable covers its requests with 20% headroom,
//! and deletes the VM. While nothing waits and nothing boots, time advances to the next event
//! and the planner runs every hour, which is what makes a month cheap to replay.

mod plot;
mod policy;
mod report;
mod scenario;
mod world;

pub use plot::{PlotError, plot};
pub use policy::Policy;
pub use report::{Report, Sample};
pub use scenario::{
    CreatePods, DeletePods, Event, Fault, FaultReason, Scenario, ScenarioFiles, SimulateError,
};
pub use world::{run, run_traced};
