//! What must outlive a process: when each trigger and scale-down condition started to hold,
//! and when headroom last scaled. Kept in a ConfigMap headroom owns (`headroom-windows` in its
//! namespace), written by the lease holder, read at start and on taking the lease.
//!
//! Without it a `for: 720h` window starts again on every upgrade or reboot of the node headroom
//! runs on, and a removal could follow a restart at once.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, Client, api::PostParams};
use serde::{Deserialize, Serialize};

use crate::decide::{
    actuation::{ActuatorStatus, DemandLevel},
    projection::Windows,
    time::Timestamp,
};

/// The ConfigMap's name.
pub const NAME: &str = "headroom-windows";
/// The key holding the record (JSON).
const KEY: &str = "windows.json";

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("ConfigMap {NAME} key {KEY}: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Durable {
    pub windows: Windows,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_at_scale_down: Option<DemandLevel>,
    /// When the last pod move started or ended: a restart does not cut `rebalance.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_move: Option<Timestamp>,
}

impl Durable {
    /// The record of `windows` and the actuator's scale times.
    pub fn of(windows: &Windows, status: &ActuatorStatus) -> Self {
        Durable {
            windows: windows.clone(),
            last_scale_up: status.last_scale_up,
            last_scale_down: status.last_scale_down,
            demand_at_scale_down: status.demand_at_scale_down,
            last_move: status.last_move,
        }
    }

    /// Merges what another process recorded: a condition that holds in both has held since
    /// the earlier moment; the later scale times win.
    pub fn merge_into(&self, windows: &mut Windows) {
        for (name, since) in &self.windows.since {
            if let Some(mine) = windows.since.get_mut(name) {
                *mine = (*mine).min(*since);
            }
        }
        // What the last holder counted of the incident Events (they expire within the hour).
        if windows.incidents.is_empty() {
            windows.incidents = self.windows.incidents.clone();
        }
    }

    /// Takes the recorded scale times where they are later than `status`'s.
    pub fn merge_status(&self, status: &mut ActuatorStatus) {
        if self.last_scale_up > status.last_scale_up {
            status.last_scale_up = self.last_scale_up;
        }
        if self.last_scale_down > status.last_scale_down {
            status.last_scale_down = self.last_scale_down;
            status.demand_at_scale_down = self.demand_at_scale_down;
        }
        if self.last_move > status.last_move {
            status.last_move = self.last_move;
        }
    }
}

/// Where the record lives.
#[derive(Clone)]
pub struct Store {
    api: Api<ConfigMap>,
}

impl Store {
    pub fn new(client: Client, namespace: &str) -> Self {
        Store {
            api: Api::namespaced(client, namespace),
        }
    }

    /// The record, or an empty one when there is none yet.
    pub async fn load(&self) -> Result<Durable, DurableError> {
        let Some(cm) = self.api.get_opt(NAME).await? else {
            return Ok(Durable::default());
        };
        match cm.data.as_ref().and_then(|d| d.get(KEY)) {
            Some(text) => Ok(serde_json::from_str(text)?),
            None => Ok(Durable::default()),
        }
    }

    /// Writes the record (create, or replace at the version read: a concurrent writer makes
    /// this fail with a conflict rather than lose its write silently).
    pub async fn save(&self, record: &Durable) -> Result<(), DurableError> {
        let data = BTreeMap::from([(KEY.to_owned(), serde_json::to_string(record)?)]);
        match self.api.get_opt(NAME).await? {
            Some(mut cm) => {
                cm.data = Some(data);
                self.api.replace(NAME, &PostParams::default(), &cm).await?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/name".to_owned(),
                            "headroom".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                self.api.create(&PostParams::default(), &cm).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_earlier_start_and_the_later_scale_times() {
        let t = |s: u64| Timestamp(s * 1000);
        let recorded = Durable {
            windows: Windows {
                since: [("freeBlockSlots".to_owned(), t(10)), ("gone".to_owned(), t(5))].into(),
                ..Default::default()
            },
            last_scale_up: Some(t(3)),
            last_scale_down: Some(t(50)),
            demand_at_scale_down: Some(DemandLevel {
                block_volumes: 7,
                memory_bytes: 1,
            }),
            last_move: Some(t(20)),
        };
        let mut windows = Windows {
            since: [("freeBlockSlots".to_owned(), t(40))].into(),
            ..Default::default()
        };
        recorded.merge_into(&mut windows);
        assert_eq!(windows.since["freeBlockSlots"], t(10));
        assert!(
            !windows.since.contains_key("gone"),
            "a condition that no longer holds is not revived"
        );
        let mut status = ActuatorStatus {
            last_scale_up: Some(t(30)),
            last_move: Some(t(15)),
            ..Default::default()
        };
        recorded.merge_status(&mut status);
        assert_eq!(status.last_scale_up, Some(t(30)));
        assert_eq!(status.last_scale_down, Some(t(50)));
        assert_eq!(status.demand_at_scale_down.unwrap().block_volumes, 7);
        assert_eq!(
            status.last_move,
            Some(t(20)),
            "a restart does not cut the move interval"
        );
        let text = serde_json::to_string(&recorded).unwrap();
        assert_eq!(serde_json::from_str::<Durable>(&text).unwrap(), recorded);
    }
}
