//! Wall-clock moments as plain values: what `now` is in every decision and what the durable
//! windows store. An `Instant` means nothing after a restart; a `for: 720h` window must not
//! start again when headroom does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_unix(since_epoch: Duration) -> Self {
        Timestamp(since_epoch.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    /// How long after `earlier` this is (zero when it is not after).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// RFC 3339 in UTC, to the second (`2026-12-02T09:14:25Z`).
    pub fn rfc3339(self) -> String {
        let secs = (self.0 / 1000) as i64;
        k8s_openapi::jiff::Timestamp::from_second(secs)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| format!("@{secs}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_formats() {
        let t = Timestamp::from_unix(Duration::from_secs(1_764_667_265));
        assert_eq!(t.rfc3339(), "2025-12-02T09:21:05Z");
        assert_eq!(t.plus(Duration::from_secs(5)).since(t), Duration::from_secs(5));
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
        assert_eq!(
            Timestamp(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }
}
