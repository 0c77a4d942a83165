//! Kubernetes Events headroom records: planned as values by whoever decides, queued without
//! waiting, and sent by one worker (or only logged without a client).

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio::sync::mpsc;

use crate::metrics::ResultLabels;

/// Events waiting to be sent; past this, new ones are dropped and counted, so a burst of
/// denials never blocks an admission answer.
const EVENT_QUEUE: usize = 256;

/// A Kubernetes Event headroom wants recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

/// Queues events for the event worker.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<PlannedEvent>,
}

impl EventSink {
    /// A sink and the receiving end the worker drains.
    pub fn new() -> (Self, mpsc::Receiver<PlannedEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        (Self { tx }, rx)
    }

    /// Queues without waiting; returns false when the queue is full (the event is dropped).
    pub fn emit(&self, event: PlannedEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }
}

/// Sends queued events to the API server (or only logs them without a client), counting each
/// under its result in `counted`.
pub async fn run_worker(
    mut rx: mpsc::Receiver<PlannedEvent>,
    client: Option<kube::Client>,
    counted: Family<ResultLabels, Counter>,
) {
    while let Some(e) = rx.recv().await {
        let result = match &client {
            None => {
                tracing::info!(namespace = %e.namespace, kind = %e.kind, name = %e.name, reason = %e.reason, message = %e.message, "event");
                "logged"
            }
            Some(client) => {
                let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), &e.namespace);
                let (event, params) = (to_event(&e), kube::api::PostParams::default());
                match tokio::time::timeout(Duration::from_secs(5), api.create(&params, &event)).await {
                    Ok(Ok(_)) => "created",
                    Ok(Err(error)) => {
                        tracing::warn!(%error, reason = %e.reason, "event not created");
                        "failed"
                    }
                    Err(_) => "timeout",
                }
            }
        };
        counted
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }
}

fn to_event(e: &PlannedEvent) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}.",
                if e.name.is_empty() { "headroom" } else { &e.name }
            )),
            namespace: Some(e.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(e.kind.clone()),
            name: Some(e.name.clone()),
            namespace: Some(e.namespace.clone()),
            ..Default::default()
        },
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("headroom".into()),
            host: None,
        }),
        reporting_component: Some("headroom".into()),
        reporting_instance: Some(std::env::var("POD_NAME").unwrap_or_else(|_| "headroom".into())),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}
