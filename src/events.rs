//! Kubernetes Events headroom records: planned as values by whoever decides, and published
//! without waiting through kube's `Recorder` (events.k8s.io/v1, a repeat of the same Event
//! becomes its series), or only logged without a client, or handed to a receiver in tests.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::ResultLabels;

/// Events being published at once; past this, new ones are dropped and counted, so a burst of
/// denials never blocks an admission answer nor piles up tasks.
const IN_FLIGHT: usize = 256;
/// How long one publication may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kubernetes Event headroom wants recorded (always a Warning: each asks for attention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

impl PlannedEvent {
    /// What the Event is about.
    fn regarding(&self) -> ObjectReference {
        let api_version = match self.kind.as_str() {
            "VolumeAttachment" => "storage.k8s.io/v1",
            _ => "v1",
        };
        ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(self.kind.clone()),
            name: Some(if self.name.is_empty() {
                "headroom".into()
            } else {
                self.name.clone()
            }),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }

    fn event(&self) -> Event {
        Event {
            type_: EventType::Warning,
            reason: self.reason.clone(),
            note: Some(self.message.clone()),
            action: "Headroom".into(),
            secondary: None,
        }
    }
}

/// Where planned events go.
#[derive(Clone)]
pub struct EventSink {
    to: To,
    counted: Family<ResultLabels, Counter>,
}

#[derive(Clone)]
enum To {
    /// Published by kube's Recorder, each in its own task, at most [`IN_FLIGHT`] at once.
    Recorder {
        recorder: Recorder,
        in_flight: Arc<Semaphore>,
    },
    /// No cluster (snapshot mode): logged.
    Log,
    /// A receiver reads them (tests).
    Channel(mpsc::Sender<PlannedEvent>),
}

impl EventSink {
    /// Publishes through the API server as `reporter` (its controller name and instance).
    pub fn recording(client: kube::Client, reporter: Reporter) -> Self {
        Self::to(To::Recorder {
            recorder: Recorder::new(client, reporter),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        })
    }

    /// Logs events (no cluster to record them in).
    pub fn logging() -> Self {
        Self::to(To::Log)
    }

    /// A sink whose events a receiver reads, [`IN_FLIGHT`] at most waiting.
    pub fn channel() -> (Self, mpsc::Receiver<PlannedEvent>) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        (Self::to(To::Channel(tx)), rx)
    }

    fn to(to: To) -> Self {
        Self {
            to,
            counted: Family::default(),
        }
    }

    /// Counts results into `counted` (the `headroom_events_total` family).
    pub fn counting(mut self, counted: Family<ResultLabels, Counter>) -> Self {
        self.counted = counted;
        self
    }

    fn count(counted: &Family<ResultLabels, Counter>, result: &str) {
        counted
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Records `event` without waiting; false when it was dropped (too many in flight).
    pub fn emit(&self, event: PlannedEvent) -> bool {
        match &self.to {
            To::Log => {
                tracing::info!(namespace = %event.namespace, kind = %event.kind, name = %event.name, reason = %event.reason, message = %event.message, "event");
                Self::count(&self.counted, "logged");
                true
            }
            To::Channel(tx) => {
                let sent = tx.try_send(event).is_ok();
                if !sent {
                    Self::count(&self.counted, "dropped");
                }
                sent
            }
            To::Recorder { recorder, in_flight } => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    Self::count(&self.counted, "dropped");
                    return false;
                };
                let (recorder, counted) = (recorder.clone(), self.counted.clone());
                tokio::spawn(async move {
                    let published = tokio::time::timeout(
                        PUBLISH_TIMEOUT,
                        recorder.publish(&event.event(), &event.regarding()),
                    )
                    .await;
                    let result = match published {
                        Ok(Ok(())) => "created",
                        Ok(Err(error)) => {
                            tracing::warn!(%error, reason = %event.reason, "event not recorded");
                            "failed"
                        }
                        Err(_) => "timeout",
                    };
                    Self::count(&counted, result);
                    drop(permit);
                });
                true
            }
        }
    }
}
