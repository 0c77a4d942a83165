//! `/mutate` and `/validate`: parse the AdmissionReview, decide, encode. Nothing else.
//!
//! Unreadable input gets an HTTP error with a JSON body (400 malformed, 413 too large, 415
//! wrong content type); every readable review gets HTTP 200 with an AdmissionReview v1 answer
//! echoing the request's uid. Work is bounded by the `?timeout=` the API server appends.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    decide::{
        admission::{self, Outcome, Verdict},
        placement::{self, Placement},
        projection::AdmittedDemand,
    },
    ledger::Admitted,
    metrics::{AdmissionLabels, RouteLabels},
};
use crate::{events::PlannedEvent, read_model::ReadModel};

/// The largest body accepted, as upstream's PSA webhook and controller-runtime do.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Without a `?timeout=`, the API server's default webhook timeout (10 s in v1).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's own maximum for a webhook call.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(app: Arc<ReadModel>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        // The trivial floor for benchmarks: TLS and HTTP only, no decision.
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(app)
}

/// An answer that is not an AdmissionReview: the request could not be read.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "code": self.status.as_u16()});
        (self.status, axum::Json(body)).into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct TimeoutQuery {
    timeout: Option<String>,
}

/// The time left for work: the API server's timeout minus a margin for the answer to travel.
pub fn budget(query: &TimeoutQuery) -> Duration {
    // The API server never waits longer than 30 s; a caller asking for more asks for a
    // connection held open at its pleasure.
    let total = query
        .timeout
        .as_deref()
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT);
    total.saturating_sub((total / 5).min(Duration::from_millis(500)))
}

/// Checks the content type and reads at most `MAX_BODY` bytes within `budget`.
pub async fn read_body(headers: &HeaderMap, body: Body, budget: Duration) -> Result<Bytes, HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got {content_type:?}"),
        ));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > MAX_BODY
    {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {len} bytes is over the {MAX_BODY}-byte limit"),
        ));
    }
    match tokio::time::timeout(budget, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the {MAX_BODY}-byte limit"),
        )),
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body not received before the request's timeout",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: String,
    kind: String,
    request: Option<RequestIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: GroupVersionKind,
    operation: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// A readable admission request.
struct Review {
    uid: String,
    group: String,
    kind: String,
    operation: String,
    namespace: String,
    name: String,
    object: Value,
    dry_run: bool,
}

fn parse_review(bytes: &[u8]) -> Result<Review, HttpError> {
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, m);
    let review: ReviewIn = crate::model::from_json_slice(bytes).map_err(|e| {
        let path = e.path().to_string();
        if e.inner().is_syntax() || e.inner().is_eof() {
            bad(format!("malformed JSON: {}", e.inner()))
        } else {
            bad(format!("AdmissionReview field `{path}`: {}", e.inner()))
        }
    })?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(bad(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {:?}, {:?}",
            review.api_version, review.kind
        )));
    }
    let r = review
        .request
        .ok_or_else(|| bad("AdmissionReview has no `request`".into()))?;
    if r.uid.is_empty() {
        return Err(bad("AdmissionReview field `request.uid` is empty".into()));
    }
    Ok(Review {
        uid: r.uid,
        group: r.kind.group,
        kind: r.kind.kind,
        operation: r.operation,
        namespace: r.namespace,
        name: r.name,
        object: r.object.unwrap_or(Value::Null),
        dry_run: r.dry_run.unwrap_or(false),
    })
}

/// The AdmissionReview v1 answer.
fn answer(uid: &str, verdict: Option<&Outcome>, patch: &[PatchOperation]) -> Response {
    let mut response = json!({"uid": uid, "allowed": true});
    match verdict {
        Some(Outcome::Warn(w)) => response["warnings"] = json!([w]),
        Some(Outcome::Deny(message)) => {
            response["allowed"] = json!(false);
            response["status"] =
                json!({"code": 403, "reason": "Forbidden", "message": message, "status": "Failure"});
        }
        _ => {}
    }
    if !patch.is_empty() {
        let bytes = serde_json::to_vec(patch).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    axum::Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
        .into_response()
}

/// Times a route (on drop) and counts its unreadable requests; shared by every route.
pub(super) struct Timer<'a> {
    app: &'a ReadModel,
    route: &'static str,
    start: std::time::Instant,
}

impl<'a> Timer<'a> {
    pub(super) fn start(app: &'a ReadModel, route: &'static str) -> Self {
        Self {
            app,
            route,
            start: std::time::Instant::now(),
        }
    }

    pub(super) fn bad(&self, e: HttpError) -> Response {
        self.app
            .metrics
            .bad_requests
            .get_or_create(&RouteLabels {
                route: self.route.into(),
            })
            .inc();
        tracing::debug!(route = self.route, status = e.status.as_u16(), error = %e.message, "bad request");
        e.into_response()
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.app
            .metrics
            .request_duration
            .get_or_create(&RouteLabels {
                route: self.route.into(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

fn count(app: &ReadModel, review: &Review, verdict: &str, reason: &str) {
    // The request names its kind and operation: only a closed set becomes a label value, or
    // made-up kinds would grow /metrics without bound.
    let kind = match review.kind.as_str() {
        k @ ("Pod" | "PersistentVolumeClaim") => k,
        _ => "other",
    };
    let operation = match review.operation.as_str() {
        o @ ("CREATE" | "UPDATE" | "DELETE" | "CONNECT") => o,
        _ => "other",
    };
    app.metrics
        .admission_requests
        .get_or_create(&AdmissionLabels {
            kind: kind.into(),
            operation: operation.into(),
            verdict: verdict.into(),
            reason: reason.into(),
        })
        .inc();
}

/// Pod and PVC CREATE in the core group are looked at; everything else passes untouched.
fn in_scope(review: &Review) -> bool {
    review.group.is_empty()
        && review.operation == "CREATE"
        && (review.kind == "Pod" || review.kind == "PersistentVolumeClaim")
}

fn labels_of(object: &Value) -> Option<std::collections::BTreeMap<String, String>> {
    serde_json::from_value(object.pointer("/metadata/labels")?.clone()).ok()
}

/// The answer for a review of an excluded namespace or an object labelled
/// `headroom.io/ignore`: allowed untouched, counted under the reason.
fn skipped(app: &ReadModel, review: &Review) -> Option<Response> {
    let reason = admission::skip_reason(&app.config, &review.namespace, labels_of(&review.object).as_ref())?;
    count(app, review, "allow", reason);
    Some(answer(&review.uid, None, &[]))
}

async fn read_review(
    timer: &Timer<'_>,
    q: &TimeoutQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Review, Response> {
    let bytes = read_body(headers, body, budget(q))
        .await
        .map_err(|e| timer.bad(e))?;
    let review = parse_review(&bytes).map_err(|e| timer.bad(e))?;
    if in_scope(&review) && review.object.is_null() {
        return Err(timer.bad(HttpError::new(
            StatusCode::BAD_REQUEST,
            "a CREATE review must carry `request.object`",
        )));
    }
    Ok(review)
}

async fn mutate(
    State(app): State<Arc<ReadModel>>,
    Query(q): Query<TimeoutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = Timer::start(&app, "mutate");
    let review = match read_review(&timer, &q, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) || review.kind != "Pod" {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review.uid, None, &[]);
    }
    if let Some(skipped) = skipped(&app, &review) {
        return skipped;
    }
    let pod = match admission::pod_of(&review.object) {
        Ok(p) => p,
        Err(e) => return timer.bad(HttpError::new(StatusCode::BAD_REQUEST, format!("Pod: {e}"))),
    };
    let view = app.view();
    let reservations = app.reservations();
    let placement = Placement::new(&view, &reservations);
    let demand = placement::pod_block_demand(&view, &review.namespace, &pod);
    let patch = admission::mutate_pod(placement, &app.config, &demand, &review.object);
    count(
        &app,
        &review,
        "allow",
        if patch.is_empty() { "unchanged" } else { "patched" },
    );
    answer(&review.uid, None, &patch)
}

async fn validate(
    State(app): State<Arc<ReadModel>>,
    Query(q): Query<TimeoutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = Timer::start(&app, "validate");
    let review = match read_review(&timer, &q, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review.uid, None, &[]);
    }
    if let Some(skipped) = skipped(&app, &review) {
        return skipped;
    }
    let view = app.view();
    let reservations = app.reservations();
    let placement = Placement::new(&view, &reservations);
    let outlook = app.outlook(&view);
    let (verdict, admitted) = if review.kind == "Pod" {
        let pod = match admission::pod_of(&review.object) {
            Ok(p) => p,
            Err(e) => return timer.bad(HttpError::new(StatusCode::BAD_REQUEST, format!("Pod: {e}"))),
        };
        let demand = placement::pod_block_demand(&view, &review.namespace, &pod);
        let verdict = admission::validate_pod(placement, &app.config, &demand, outlook);
        // Indexed claims are counted by accounting; only claims the pod brings (ephemeral) add.
        let memory = crate::model::pod_resources(&pod).map(|r| r.0).unwrap_or(0);
        (
            verdict,
            AdmittedDemand {
                block_volumes: demand.unindexed as i64,
                memory_bytes: memory,
            },
        )
    } else {
        let claim: PersistentVolumeClaim = match crate::model::from_json(&review.object) {
            Ok(c) => c,
            Err(e) => {
                return timer.bad(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("PersistentVolumeClaim: object.{}: {}", e.path(), e.inner()),
                ));
            }
        };
        let taken = view.pending_block_claims() + app.admitted().block_volumes;
        let verdict = admission::validate_claim(placement, &app.config, taken, &claim, outlook);
        let block = i64::from(verdict.reason != "not-block");
        (
            verdict,
            AdmittedDemand {
                block_volumes: block,
                memory_bytes: 0,
            },
        )
    };
    side_effects(&app, &review, &verdict, admitted);
    count(&app, &review, verdict.label(), verdict.reason);
    answer(&review.uid, Some(&verdict.outcome), &[])
}

/// Feeds admitted demand to the projection and records warnings and denials as Events;
/// a dry run causes nothing.
fn side_effects(app: &ReadModel, review: &Review, verdict: &Verdict, admitted: AdmittedDemand) {
    if review.dry_run {
        return;
    }
    let allowed = !matches!(verdict.outcome, Outcome::Deny(_));
    if allowed {
        let what = match (review.kind.as_str(), review.name.is_empty()) {
            (_, true) => Admitted::Unnamed {
                uid: review.uid.clone(),
            },
            ("Pod", false) => Admitted::Pod {
                namespace: review.namespace.clone(),
                name: review.name.clone(),
            },
            _ => Admitted::Claim {
                namespace: review.namespace.clone(),
                name: review.name.clone(),
            },
        };
        // No review is authenticated yet (client certificates are to come): nothing vouches.
        app.record_admitted(what, admitted, false);
    }
    if let Outcome::Warn(message) | Outcome::Deny(message) = &verdict.outcome {
        let event = PlannedEvent {
            namespace: review.namespace.clone(),
            kind: review.kind.clone(),
            name: review.name.clone(),
            reason: "BlockCapacity".into(),
            message: message.clone(),
        };
        if !app.events.emit(event) {
            app.metrics
                .events
                .get_or_create(&crate::metrics::ResultLabels {
                    result: "dropped".into(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_budget_follows_the_callers_timeout_capped_at_the_api_servers_30s() {
        let q = |t: Option<&str>| TimeoutQuery {
            timeout: t.map(str::to_owned),
        };
        let ms = Duration::from_millis;
        // (asked, budget: the timeout less a fifth, at most 500 ms, for the answer's way back)
        let rows = [
            (None, ms(9_500)),
            (Some("5s"), ms(4_500)),
            (Some("1s"), ms(800)),
            (Some("30s"), ms(29_500)),
            (Some("1000000h"), ms(29_500)),
            (Some("soon"), ms(9_500)),
        ];
        for (asked, want) in rows {
            assert_eq!(budget(&q(asked)), want, "{asked:?}");
        }
    }
}
