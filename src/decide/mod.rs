//! Decisions: pure functions from a cluster state (and `now` as a value) to an answer.
//!
//! Nothing under this module performs I/O, reads the clock or touches a client; the compiler
//! keeps it that way because none of those crates is imported here.

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
