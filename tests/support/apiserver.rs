//! Filled in with the live-source tests.
