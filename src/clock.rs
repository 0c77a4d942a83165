//! The wall clock as the loop reads it: a `Timestamp` advanced by tokio's clock, so a test on a
//! paused clock moves it, and a restart (a new `Clock`) still reads the same wall time.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::decide::time::Timestamp;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Timestamp,
    start: tokio::time::Instant,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::starting_at(Timestamp::from_unix(since))
    }

    /// A clock that reads `epoch` now (tests and simulations).
    pub fn starting_at(epoch: Timestamp) -> Self {
        Clock {
            epoch,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.epoch.plus(self.start.elapsed())
    }
}
