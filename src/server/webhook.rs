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
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::core::{admission::AdmissionResponse, response::StatusSummary};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Caller,
    http::{Budget, HttpError, Timer},
    objects::{ClaimIn, PodIn},
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: String,
    kind: String,
    request: Option<RequestIn>,
}

#[derive(Debug)]
struct RequestIn {
    uid: String,
    kind: GroupVersionKind,
    operation: String,
    namespace: String,
    name: String,
    object: Option<ObjectIn>,
    dry_run: Option<bool>,
}

/// A review's object, read in the envelope's one pass into the trimmed type its kind needs
/// when the kind came first (the API server writes `kind` before `object`); otherwise kept as
/// its text, read once the kind is known.
#[derive(Debug)]
enum ObjectIn {
    Pod(Box<PodIn>),
    Claim(Box<ClaimIn>),
    Text(Box<RawValue>),
}

/// The fields of an admission request headroom reads.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RequestField {
    Uid,
    Kind,
    Operation,
    Namespace,
    Name,
    Object,
    DryRun,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for RequestIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RequestIn;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an admission request")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RequestIn, A::Error> {
                use serde::de::Error;
                let (mut uid, mut kind, mut operation) = (None, None::<GroupVersionKind>, None);
                let (mut namespace, mut name, mut object, mut dry_run) = (None, None, None, None);
                while let Some(field) = map.next_key::<RequestField>()? {
                    match field {
                        RequestField::Uid => uid = Some(map.next_value::<String>()?),
                        RequestField::Kind => kind = Some(map.next_value()?),
                        RequestField::Operation => operation = Some(map.next_value::<String>()?),
                        RequestField::Namespace => namespace = Some(map.next_value::<String>()?),
                        RequestField::Name => name = Some(map.next_value::<String>()?),
                        RequestField::DryRun => dry_run = map.next_value::<Option<bool>>()?,
                        RequestField::Object => {
                            let core = kind
                                .as_ref()
                                .filter(|k| k.group.is_empty())
                                .map(|k| k.kind.as_str());
                            object = match core {
                                Some("Pod") => map
                                    .next_value::<Option<PodIn>>()?
                                    .map(|p| ObjectIn::Pod(Box::new(p))),
                                Some("PersistentVolumeClaim") => map
                                    .next_value::<Option<ClaimIn>>()?
                                    .map(|c| ObjectIn::Claim(Box::new(c))),
                                _ => map.next_value::<Option<Box<RawValue>>>()?.map(ObjectIn::Text),
                            };
                        }
                        RequestField::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(RequestIn {
                    uid: uid.ok_or_else(|| A::Error::missing_field("uid"))?,
                    kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
                    operation: operation.ok_or_else(|| A::Error::missing_field("operation"))?,
                    namespace: namespace.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    object,
                    dry_run,
                })
            }
        }
        d.deserialize_map(Fields)
    }
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
    object: Option<ObjectIn>,
    dry_run: bool,
}

/// An object admission reads, taken from the review it came in.
trait FromReview: serde::de::DeserializeOwned {
    const KIND: &'static str;
    /// The object, when the envelope's pass read it as this type.
    fn read(object: ObjectIn) -> Option<Self>;
    /// The value of its `headroom.io/ignore` label.
    fn ignore_label(&self) -> Option<&str>;
}

impl Review {
    /// The object as `T`: as the envelope's pass read it, or now from its text; refused with
    /// the path to the refused field.
    fn object<T: FromReview>(&mut self) -> Result<T, HttpError> {
        let text = match self.object.take() {
            Some(ObjectIn::Text(text)) => text,
            Some(object) => {
                return T::read(object).ok_or_else(|| {
                    HttpError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the object is not a {}", T::KIND),
                    )
                });
            }
            None => {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "the review has no `request.object`",
                ));
            }
        };
        crate::model::from_json_slice(text.get().as_bytes()).map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                format!("{}: object.{}: {}", T::KIND, e.path(), e.inner()),
            )
        })
    }
}

impl FromReview for PodIn {
    const KIND: &'static str = "Pod";
    fn read(object: ObjectIn) -> Option<Self> {
        match object {
            ObjectIn::Pod(pod) => Some(*pod),
            _ => None,
        }
    }
    fn ignore_label(&self) -> Option<&str> {
        self.metadata.ignore.as_deref()
    }
}

impl FromReview for ClaimIn {
    const KIND: &'static str = "PersistentVolumeClaim";
    fn read(object: ObjectIn) -> Option<Self> {
        match object {
            ObjectIn::Claim(claim) => Some(*claim),
            _ => None,
        }
    }
    fn ignore_label(&self) -> Option<&str> {
        self.metadata.ignore.as_deref()
    }
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
        object: r.object,
        dry_run: r.dry_run.unwrap_or(false),
    })
}

/// The AdmissionReview v1 answer, built with kube's `AdmissionResponse`: allowed, with a
/// warning, denied (403), or allowed with a JSON patch.
///
/// The request is read with the trimmed types above rather than kube's `AdmissionRequest`:
/// that parse is measurably faster on the hot path (BENCHMARKS.md, "AdmissionReview"), so the
/// response starts from `invalid` and gets the request's uid instead of `From<&AdmissionRequest>`.
fn answer(uid: &str, verdict: Option<&Outcome>, patch: &[PatchOperation]) -> Response {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Default::default();
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
    let review = response.into_review();
    if patch.is_empty() {
        return axum::Json(review).into_response();
    }
    let mut review = match serde_json::to_value(review) {
        Ok(v) => v,
        Err(e) => return HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // kube's `AdmissionResponse::with_patch` writes the bytes as a JSON array of numbers
    // (kube-rs/kube#1781); the API server reads `patch` as base64, as Go encodes []byte.
    let bytes = serde_json::to_vec(patch).unwrap_or_default();
    review["response"]["patchType"] = "JSONPatch".into();
    review["response"]["patch"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
    axum::Json(review).into_response()
}

fn count(app: &ReadModel, review: &Review, verdict: &'static str, reason: &'static str) {
    // The request names its kind and operation: only a closed set becomes a label value, or
    // made-up kinds would grow /metrics without bound.
    let kind = match review.kind.as_str() {
        "Pod" => "Pod",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        _ => "other",
    };
    let operation = match review.operation.as_str() {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "other",
    };
    app.metrics
        .admission_requests
        .get_or_create(&AdmissionLabels {
            kind,
            operation,
            verdict,
            reason,
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
/// `headroom.io/ignore` (`ignore_label`: that label's value on the object, when it could be
/// read): allowed untouched, counted under the reason.
fn skipped(app: &ReadModel, review: &Review, ignore_label: Option<&str>) -> Option<Response> {
    let reason = admission::skip_reason(&app.config, &review.namespace, ignore_label)?;
    count(app, review, "allow", reason);
    Some(answer(&review.uid, None, &[]))
}

/// The review's object as `T` with its labels checked: `Err` is the answer to give instead
/// (skipped, or a 400 for an object that cannot be read outside an excluded namespace).
fn read_object<T: FromReview>(
    app: &ReadModel,
    timer: &Timer<'_>,
    review: &mut Review,
) -> Result<T, Box<Response>> {
    match review.object::<T>() {
        Ok(object) => match skipped(app, review, object.ignore_label()) {
            Some(answer) => Err(Box::new(answer)),
            None => Ok(object),
        },
        Err(e) => Err(Box::new(
            skipped(app, review, None).unwrap_or_else(|| timer.bad(e)),
        )),
    }
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
    let mut review = match read_review(&timer, budget, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) || review.kind != "Pod" {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review.uid, None, &[]);
    }
    let pod: Pod = match read_object::<PodIn>(&app, &timer, &mut review) {
        Ok(pod) => pod.into(),
        Err(answer) => return *answer,
    };
    let basis = app.basis();
    let demand = placement::pod_block_demand(&basis.view, &review.namespace, &pod);
    let steer = admission::steer(basis.placement(), &app.config, &demand);
    let patch = super::patch::patch(&pod, &steer);
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
    caller: Option<Extension<Caller>>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let timer = Timer::start(&app, "validate");
    let caller = caller.map(|Extension(c)| c).unwrap_or_default();
    let mut review = match read_review(&timer, budget, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !in_scope(&review) {
        count(&app, &review, "allow", "out-of-scope");
        return answer(&review.uid, None, &[]);
    }
    let basis = app.basis();
    let (view, placement) = (&basis.view, basis.placement());
    let outlook = app.outlook(view);
    let (verdict, admitted) = if review.kind == "Pod" {
        let pod: Pod = match read_object::<PodIn>(&app, &timer, &mut review) {
            Ok(pod) => pod.into(),
            Err(answer) => return *answer,
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
        let claim: PersistentVolumeClaim = match read_object::<ClaimIn>(&app, &timer, &mut review) {
            Ok(claim) => claim.into(),
            Err(answer) => return *answer,
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
    answer(&review.uid, Some(&verdict.outcome), &[])
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
