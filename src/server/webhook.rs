//! `/mutate` and `/validate`: parse the AdmissionReview, decide, encode. Nothing else.
//!
//! Unreadable input gets an HTTP error with a JSON body (400 malformed, 413 too large, 415
//! wrong content type); every readable review gets HTTP 200 with an AdmissionReview v1 answer
//! echoing the request's uid. Work is bounded by the `?timeout=` the API server appends.

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use json_patch::PatchOperation;
use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    response::StatusSummary,
};

use super::{
    Caller,
    http::{Budget, HttpError, Timer},
};
use crate::{
    decide::{
        admission::{self, Outcome, Verdict},
        placement,
        projection::AdmittedDemand,
    },
    ledger::Admitted,
    metrics::AdmissionLabels,
};
use crate::{events::PlannedEvent, read_model::ReadModel};

pub fn router(app: Arc<ReadModel>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        // The trivial floor for benchmarks: TLS and HTTP only, no decision.
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(app)
}

/// A readable admission request: kube's `AdmissionRequest`, the object's metadata typed and
/// the rest kept as JSON (the decisions parse only the spec they read).
struct Review {
    uid: String,
    group: String,
    kind: String,
    operation: &'static str,
    namespace: String,
    name: String,
    object: Option<DynamicObject>,
    dry_run: bool,
    /// The answer to fill in: the request's uid and API version.
    response: AdmissionResponse,
}

fn parse_review(bytes: &[u8]) -> Result<Review, HttpError> {
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, m);
    let review: AdmissionReview<DynamicObject> = crate::model::from_json_slice(bytes).map_err(|e| {
        let path = e.path().to_string();
        if e.inner().is_syntax() || e.inner().is_eof() {
            bad(format!("malformed JSON: {}", e.inner()))
        } else {
            bad(format!("AdmissionReview field `{path}`: {}", e.inner()))
        }
    })?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(bad(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {:?}, {:?}",
            review.types.api_version, review.types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| bad("AdmissionReview has no `request`".into()))?;
    if request.uid.is_empty() {
        return Err(bad("AdmissionReview field `request.uid` is empty".into()));
    }
    let response = AdmissionResponse::from(&request);
    Ok(Review {
        uid: request.uid,
        group: request.kind.group,
        kind: request.kind.kind,
        operation: match request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        },
        namespace: request.namespace.unwrap_or_default(),
        name: request.name,
        object: request.object,
        dry_run: request.dry_run,
        response,
    })
}

/// The AdmissionReview v1 answer to `review`: allowed, with a warning, denied (403), or
/// allowed with a JSON patch.
fn answer(review: &Review, verdict: Option<&Outcome>, patch: Vec<PatchOperation>) -> Response {
    let mut response = review.response.clone();
    match verdict {
        Some(Outcome::Warn(w)) => response.warnings = Some(vec![w.clone()]),
        Some(Outcome::Deny(message)) => {
            response = response.deny(message);
            response.result.code = 403;
            response.result.reason = "Forbidden".into();
            response.result.status = Some(StatusSummary::Failure);
        }
        _ => {}
    }
    let mut review = match serde_json::to_value(response.into_review()) {
        Ok(v) => v,
        Err(e) => return HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // kube's `AdmissionResponse::with_patch` writes the bytes as a JSON array of numbers
    // (kube-rs/kube#1781); the API server reads `patch` as base64, as Go encodes []byte.
    if !patch.is_empty() {
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        review["response"]["patchType"] = "JSONPatch".into();
        review["response"]["patch"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
    }
    axum::Json(review).into_response()
}

/// `K` (a Pod, a PersistentVolumeClaim) from the review's object: its metadata as parsed, its
/// spec from the JSON (`None` when absent). Errors name the path from `object`.
fn typed<K>(object: &DynamicObject, build: impl FnOnce(ObjectMeta, Option<K::Spec>) -> K) -> Result<K, String>
where
    K: Specced,
{
    let spec = match object.data.get("spec").filter(|s| !s.is_null()) {
        Some(spec) => Some(
            crate::model::from_json::<K::Spec>(spec)
                .map_err(|e| format!("object.spec.{}: {}", e.path(), e.inner()))?,
        ),
        None => None,
    };
    Ok(build(object.metadata.clone(), spec))
}

/// A kind whose decisions read only its metadata and spec.
trait Specced {
    type Spec: serde::de::DeserializeOwned;
}

impl Specced for Pod {
    type Spec = k8s_openapi::api::core::v1::PodSpec;
}

impl Specced for PersistentVolumeClaim {
    type Spec = k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;
}

fn count(app: &ReadModel, review: &Review, verdict: &str, reason: &str) {
    // The request names its kind and operation: only a closed set becomes a label value, or
    // made-up kinds would grow /metrics without bound.
    let kind = match review.kind.as_str() {
        k @ ("Pod" | "PersistentVolumeClaim") => k,
        _ => "other",
    };
    let operation = review.operation;
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

/// The answer for a review of an excluded namespace or an object labelled
/// `headroom.io/ignore`: allowed untouched, counted under the reason.
fn skipped(app: &ReadModel, review: &Review) -> Option<Response> {
    let labels = review.object.as_ref().and_then(|o| o.metadata.labels.as_ref());
    let reason = admission::skip_reason(&app.config, &review.namespace, labels)?;
    count(app, review, "allow", reason);
    Some(answer(review, None, Vec::new()))
}

async fn read_review(
    timer: &Timer<'_>,
    budget: Budget,
    headers: &HeaderMap,
    body: Body,
) -> Result<Review, Response> {
    let review = timer.read(budget, headers, body, parse_review).await?;
    if in_scope(&review) && review.object.is_none() {
        return Err(timer.bad(HttpError::new(
            StatusCode::BAD_REQUEST,
            "a CREATE review must carry `request.object`",
        )));
    }
    Ok(review)
}

async fn mutate(
    State(app): State<Arc<ReadModel>>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = Timer::start(&app, "mutate");
    let review = match read_review(&timer, budget, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) || review.kind != "Pod" {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review, None, Vec::new());
    }
    if let Some(skipped) = skipped(&app, &review) {
        return skipped;
    }
    let Some(object) = review.object.as_ref() else {
        return answer(&review, None, Vec::new());
    };
    let pod = match typed(object, |metadata, spec| Pod {
        metadata,
        spec,
        status: None,
    }) {
        Ok(p) => p,
        Err(e) => return timer.bad(HttpError::new(StatusCode::BAD_REQUEST, format!("Pod: {e}"))),
    };
    let basis = app.basis();
    let demand = placement::pod_block_demand(&basis.view, &review.namespace, &pod);
    let steer = admission::steer(basis.placement(), &app.config, &demand);
    // The patch's paths start at the object: its spec is at `/spec` of the object's data.
    let patch = super::patch::patch(&object.data, &steer);
    count(
        &app,
        &review,
        "allow",
        if patch.is_empty() { "unchanged" } else { "patched" },
    );
    answer(&review, None, patch)
}

async fn validate(
    State(app): State<Arc<ReadModel>>,
    caller: Option<Extension<Caller>>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = Timer::start(&app, "validate");
    let caller = caller.map(|Extension(c)| c).unwrap_or_default();
    let review = match read_review(&timer, budget, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review, None, Vec::new());
    }
    if let Some(skipped) = skipped(&app, &review) {
        return skipped;
    }
    let basis = app.basis();
    let (view, placement) = (&basis.view, basis.placement());
    let outlook = app.outlook(view);
    let Some(object) = review.object.as_ref() else {
        return answer(&review, None, Vec::new());
    };
    let (verdict, admitted) = if review.kind == "Pod" {
        let pod = match typed(object, |metadata, spec| Pod {
            metadata,
            spec,
            status: None,
        }) {
            Ok(p) => p,
            Err(e) => return timer.bad(HttpError::new(StatusCode::BAD_REQUEST, format!("Pod: {e}"))),
        };
        let demand = placement::pod_block_demand(view, &review.namespace, &pod);
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
        let claim = match typed(object, |metadata, spec| PersistentVolumeClaim {
            metadata,
            spec,
            status: None,
        }) {
            Ok(c) => c,
            Err(e) => {
                return timer.bad(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("PersistentVolumeClaim: {e}"),
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
    side_effects(&app, caller, &review, &verdict, admitted);
    count(&app, &review, verdict.label(), verdict.reason);
    answer(&review, Some(&verdict.outcome), Vec::new())
}

/// Feeds admitted demand to the projection and records warnings and denials as Events;
/// a dry run causes nothing.
fn side_effects(
    app: &ReadModel,
    caller: Caller,
    review: &Review,
    verdict: &Verdict,
    admitted: AdmittedDemand,
) {
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
        // Only a caller whose client certificate was checked vouches for what it admits:
        // anyone else who reaches the port could send reviews for objects that never exist.
        app.record_admitted(what, admitted, caller == Caller::Authenticated);
    }
    if let Outcome::Warn(message) | Outcome::Deny(message) = &verdict.outcome {
        let event = PlannedEvent {
            namespace: review.namespace.clone(),
            kind: review.kind.clone(),
            name: review.name.clone(),
            reason: "BlockCapacity".into(),
            message: message.clone(),
        };
        app.events.emit(event);
    }
}
