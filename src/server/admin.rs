//! The plain admin port: `/livez`, `/readyz` and `/metrics`.

use std::sync::Arc;

use crate::read_model::ReadModel;

/// `/livez`, `/readyz` (200 once every source synced) and `/metrics` on the plain admin port.
pub fn admin_router(app: Arc<ReadModel>) -> axum::Router {
    use axum::{extract::State, http::StatusCode, routing::get};
    async fn readyz(State(app): State<Arc<ReadModel>>) -> (StatusCode, String) {
        let missing = app.index.unsynced();
        app.metrics.synced.set(i64::from(missing.is_empty()));
        if missing.is_empty() && app.ticked() {
            (StatusCode::OK, "ok\n".into())
        } else if missing.is_empty() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "synced; waiting for the first planning tick\n".into(),
            )
        } else {
            let kinds: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not synced: {}\n", kinds.join(", ")),
            )
        }
    }
    async fn metrics(State(app): State<Arc<ReadModel>>) -> impl axum::response::IntoResponse {
        app.metrics.synced.set(i64::from(app.index.is_synced()));
        (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            app.metrics.encode(),
        )
    }
    axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}
