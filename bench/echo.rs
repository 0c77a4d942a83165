//! The floor the routes are measured against, for the bench harnesses only (never the
//! product): `/echo` reads the body as every route does — same content-type check, size limit
//! and budget — and answers a fixed AdmissionReview; what a route costs beyond it is parse,
//! decide and encode.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use headroom::server::http::{Budget, read_body};

/// What the echo answers: an allowed AdmissionReview of the shape headroom writes.
pub const ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true,"status":{}}}"#;

/// `router` with `/echo` added.
pub fn with_echo(router: Router) -> Router {
    router.route("/echo", axum::routing::post(echo))
}

async fn echo(budget: Budget, headers: HeaderMap, body: Body) -> Response {
    match read_body(&headers, body, budget).await {
        Ok(_) => ([(header::CONTENT_TYPE, "application/json")], ANSWER).into_response(),
        Err(e) => e.into_response(),
    }
}
