//! Demand admitted by the webhook and not yet visible as objects.
//!
//! Fed at once by every admitted, non-dry-run request that adds block or memory demand, so the
//! projection can cross a trigger before any pod is Pending. An entry leaves when its object
//! shows up in the index (then accounting counts it) or after `ttl` (the object never came:
//! a later admission webhook denied it, or the client gave up).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::decide::projection::AdmittedDemand;

/// What one admitted object will need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    demand: AdmittedDemand,
    at: Instant,
}

/// Identifies the object an admission was for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Admitted {
    Pod {
        namespace: String,
        name: String,
    },
    Claim {
        namespace: String,
        name: String,
    },
    /// A pod created from `generateName`: no name to match later, it only expires.
    Unnamed {
        uid: String,
    },
}

#[derive(Debug)]
pub struct AdmittedLedger {
    entries: HashMap<Admitted, Entry>,
    ttl: Duration,
}

impl AdmittedLedger {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
        }
    }

    pub fn record(&mut self, what: Admitted, demand: AdmittedDemand, now: Instant) {
        if demand != AdmittedDemand::default() {
            self.entries.insert(what, Entry { demand, at: now });
        }
    }

    /// Drops entries that expired or whose object `seen` reports, and sums the rest.
    pub fn total(&mut self, now: Instant, seen: impl Fn(&Admitted) -> bool) -> AdmittedDemand {
        self.entries
            .retain(|what, e| now.saturating_duration_since(e.at) < self.ttl && !seen(what));
        self.entries
            .values()
            .fold(AdmittedDemand::default(), |acc, e| AdmittedDemand {
                block_volumes: acc.block_volumes + e.demand.block_volumes,
                memory_bytes: acc.memory_bytes + e.demand.memory_bytes,
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Admitted {
        Admitted::Pod {
            namespace: "a".into(),
            name: name.into(),
        }
    }

    #[test]
    fn entries_leave_when_seen_or_expired() {
        let t0 = Instant::now();
        let mut l = AdmittedLedger::new(Duration::from_secs(120));
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 10,
            },
            t0,
        );
        l.record(
            pod("p2"),
            AdmittedDemand {
                block_volumes: 0,
                memory_bytes: 5,
            },
            t0 + Duration::from_secs(60),
        );
        l.record(pod("nothing"), AdmittedDemand::default(), t0);
        assert_eq!(l.len(), 2, "zero demand is not recorded");
        assert_eq!(
            l.total(t0, |_| false),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 15
            }
        );
        assert_eq!(
            l.total(t0, |w| *w == pod("p1")),
            AdmittedDemand {
                block_volumes: 0,
                memory_bytes: 5
            }
        );
        assert_eq!(
            l.total(t0 + Duration::from_secs(180), |_| false),
            AdmittedDemand::default(),
            "p2 expired at 180s"
        );
        assert!(l.is_empty());
    }

    #[test]
    fn readmitting_the_same_object_replaces_its_entry() {
        let t0 = Instant::now();
        let mut l = AdmittedLedger::new(Duration::from_secs(120));
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 0,
            },
            t0,
        );
        l.record(
            pod("p1"),
            AdmittedDemand {
                block_volumes: 1,
                memory_bytes: 0,
            },
            t0,
        );
        assert_eq!(l.total(t0, |_| false).block_volumes, 1);
    }
}
