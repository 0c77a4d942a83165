//! An in-process headroom (state + routers) driven with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::{body::Body, http::Request};
use headroom::{
    clock::Clock,
    config::Config,
    decide::{
        actuation::{ActuatorStatus, Planned},
        projection::Windows,
        time::Timestamp,
    },
    events::{EventSink, PlannedEvent},
    provisioner,
    read_model::ReadModel,
    server,
    shared_index::SharedIndex,
};
use serde_json::Value;
use tokio::sync::{mpsc::Receiver, watch};
use tower::ServiceExt;

pub struct Harness {
    pub app: Arc<ReadModel>,
    pub events: Receiver<PlannedEvent>,
    /// Where an actuator would publish its status (tests publish what one would).
    pub actuator: watch::Sender<ActuatorStatus>,
}

impl Harness {
    /// headroom on a snapshot of `items`.
    pub fn new(items: Vec<Value>, config: Config) -> Self {
        Self::on_index(SharedIndex::from_state(super::state(items)), config, None)
    }

    pub fn on_index(index: SharedIndex, config: Config, client: Option<kube::Client>) -> Self {
        let (sink, events) = EventSink::channel();
        let (actuator, status) = watch::channel(ActuatorStatus::default());
        let app = Arc::new(
            ReadModel::new(config, index, sink)
                .with_client(client)
                .with_actuator(status),
        );
        Self {
            app,
            events,
            actuator,
        }
    }

    /// Posts `body` to `path` on the TLS listener's routes; returns status and JSON body.
    pub async fn post(&self, path: &str, body: impl Into<Body>, content_type: &str) -> (u16, Value) {
        self.post_as(server::Caller::Anonymous, path, body, content_type)
            .await
    }

    /// Posts as the listener would for a connection whose handshake proved `caller`.
    pub async fn post_as(
        &self,
        caller: server::Caller,
        path: &str,
        body: impl Into<Body>,
        content_type: &str,
    ) -> (u16, Value) {
        let request = Request::post(path)
            .header("content-type", content_type)
            .extension(caller)
            .body(body.into())
            .unwrap();
        let router = server::routes(self.app.clone());
        let response = router.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Posts JSON that must be answered 200; returns the body.
    pub async fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body.to_string(), "application/json").await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// Runs the planning loop (serve's, every `every`) on this headroom, its clock at a fixed
    /// moment, nothing persisted; returns the task and where its plans arrive.
    pub fn plan_loop(
        &self,
        every: std::time::Duration,
    ) -> (tokio::task::JoinHandle<()>, watch::Receiver<Planned>) {
        let (tx, plans) = watch::channel(Planned::default());
        let task = tokio::spawn(provisioner::plan_loop(
            self.app.clone(),
            self.app.actuator.clone(),
            tx,
            Windows::default(),
            Clock::starting_at(Timestamp(1_780_000_000_000)),
            every,
            None,
        ));
        (task, plans)
    }

    pub fn event(&mut self) -> Option<PlannedEvent> {
        self.events.try_recv().ok()
    }
}
