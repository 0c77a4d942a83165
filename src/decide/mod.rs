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
pub mod placement;
pub mod planner;
pub mod projection;
pub mod rebalance;
pub mod tick;
pub mod time;
