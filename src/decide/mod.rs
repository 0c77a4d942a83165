//! Decisions: pure functions from a cluster state (and `now` as a value) to an answer.
//!
//! Nothing under this module performs I/O, reads the clock, takes a lock or touches a client,
//! and it imports only the crate's pure modules (`index`, `model`, `config`): `tests/purity.rs`
//! fails the build's tests when a file here names a runtime, a client, the network, the file
//! system or the clock.

pub mod accounting;
pub mod actuation;
pub mod addresses;
pub mod admission;
pub mod cleanup;
pub mod extender;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ghosts;
pub mod incidents;
pub mod live_view;
pub mod placement;
pub mod planner;
pub mod projection;
pub mod rebalance;
pub mod shared_map;
pub mod tick;
pub mod time;

use crate::{config::Config, index::ClusterState};

/// What the planner, rebalancing and the incident answers read, one tick's worth: the cluster,
/// the view and where volumes fit in it, the config, the actuator's status, and `now`.
pub struct Situation<'a> {
    pub state: &'a ClusterState,
    pub view: &'a accounting::ClusterView,
    pub placement: placement::Placement<'a>,
    pub config: &'a Config,
    pub actuator: &'a actuation::ActuatorStatus,
    pub now: time::Timestamp,
}
