//! `/extender/filter`, `/extender/prioritize`, `/extender/bind`: kube-scheduler's extender
//! protocol (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The wire types have no JSON tags upstream, so kube-scheduler sends Go field names
//! (`Pod`, `NodeNames`, …) and decodes replies case-insensitively. Input accepts PascalCase
//! and the lowercase spellings older clients use; output is always PascalCase.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    http::{Budget, HttpError, Timer, json_bytes, json_sized},
    objects::{PodIn, Text},
};
use crate::read_model::ReadModel;
use crate::{
    decide::{
        extender,
        placement::{self, BlockDemand, Placement},
    },
    metrics::RejectLabels,
    model::{Name, NsName, ns_name},
};

pub fn router(app: Arc<ReadModel>) -> Router {
    Router::new()
        .route("/extender/filter", post(filter))
        .route("/extender/prioritize", post(prioritize))
        .route("/extender/bind", post(bind))
        .with_state(app)
}

/// ExtenderArgs: the pod trimmed to what placement reads, and the candidates' names borrowed
/// from the body (5,000 of them, copied nowhere unless escaped).
#[derive(Debug, Deserialize)]
struct ExtenderArgs<'a> {
    #[serde(rename = "Pod", alias = "pod")]
    pod: Option<PodIn>,
    #[serde(rename = "Nodes", alias = "nodes", default)]
    nodes: Option<NodeList>,
    #[serde(
        rename = "NodeNames",
        alias = "nodenames",
        alias = "nodeNames",
        default,
        borrow
    )]
    node_names: Option<Vec<Text<'a>>>,
}

#[derive(Debug, Deserialize)]
struct NodeList {
    #[serde(default, alias = "Items")]
    items: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct BindingArgs {
    #[serde(rename = "PodName", alias = "podname", alias = "podName")]
    pod_name: String,
    #[serde(rename = "PodNamespace", alias = "podnamespace", alias = "podNamespace")]
    pod_namespace: String,
    #[serde(rename = "PodUID", alias = "poduid", alias = "podUID", default)]
    pod_uid: String,
    #[serde(rename = "Node", alias = "node")]
    node: String,
}

/// The candidates in the mode the scheduler used: names (nodeCacheCapable) or full Nodes.
enum Candidates<'a> {
    Names(Vec<Text<'a>>),
    Nodes(Vec<Value>),
}

impl Candidates<'_> {
    fn names(&self) -> Vec<&str> {
        match self {
            Candidates::Names(n) => n.iter().map(|n| n.0.as_ref()).collect(),
            Candidates::Nodes(items) => items.iter().map(node_name).collect(),
        }
    }
}

fn node_name(node: &Value) -> &str {
    node.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// ExtenderFilterResult, written field by field (no JSON tree of 5,000 names in between).
#[derive(Serialize)]
struct FilterResult<'a> {
    #[serde(rename = "Nodes")]
    nodes: Option<NodeListOut<'a>>,
    #[serde(rename = "NodeNames")]
    node_names: Option<&'a [&'a str]>,
    #[serde(rename = "FailedNodes")]
    failed: &'a BTreeMap<&'a str, String>,
    #[serde(rename = "FailedAndUnresolvableNodes")]
    unresolvable: &'a BTreeMap<&'a str, String>,
    #[serde(rename = "Error")]
    error: &'static str,
}

#[derive(Serialize)]
struct NodeListOut<'a> {
    metadata: Empty,
    items: Vec<&'a Value>,
}

#[derive(Serialize)]
struct Empty {}

/// A parsed filter/prioritize request.
struct Request<'a> {
    pod: Pod,
    namespace: String,
    candidates: Candidates<'a>,
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, HttpError> {
    crate::model::from_json_slice(bytes).map_err(|e| {
        let message = if e.inner().is_syntax() || e.inner().is_eof() {
            format!("malformed JSON: {}", e.inner())
        } else {
            format!("{what} field `{}`: {}", e.path(), e.inner())
        };
        HttpError::new(StatusCode::BAD_REQUEST, message)
    })
}

fn parse_args(bytes: &[u8]) -> Result<Request<'_>, HttpError> {
    let bad = |m: &str| HttpError::new(StatusCode::BAD_REQUEST, m.to_owned());
    let args: ExtenderArgs = parse(bytes, "ExtenderArgs")?;
    let pod: Pod = args.pod.ok_or_else(|| bad("ExtenderArgs has no `Pod`"))?.into();
    let candidates = match (args.node_names, args.nodes) {
        (Some(names), _) => Candidates::Names(names),
        (None, Some(list)) => Candidates::Nodes(list.items.unwrap_or_default()),
        (None, None) => return Err(bad("ExtenderArgs has neither `NodeNames` nor `Nodes`")),
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    Ok(Request {
        pod,
        namespace,
        candidates,
    })
}

/// The pod's block demand, remembered for the bind that follows.
fn demand_of(app: &ReadModel, placement: Placement<'_>, req: &Request) -> BlockDemand {
    let demand = placement::pod_block_demand(placement.view, &req.namespace, &req.pod);
    if let Some(uid) = req.pod.metadata.uid.as_deref() {
        app.bindings.lock().unwrap_or_else(|e| e.into_inner()).remember(
            uid,
            demand.keys.clone(),
            Instant::now(),
        );
    }
    demand
}

/// What filter and prioritize share: read and parse ExtenderArgs, take the view, resolve and
/// remember the pod's block demand; then `answer` decides and encodes.
async fn extender_route(
    app: Arc<ReadModel>,
    route: &'static str,
    (budget, headers, body): (Budget, HeaderMap, Body),
    answer: fn(Asked<'_>) -> Response,
) -> Response {
    let verb = Timer::start(&app, route);
    let bytes = match verb.body(budget, &headers, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let req = match parse_args(&bytes) {
        Ok(r) => r,
        Err(e) => return verb.bad(e),
    };
    let basis = app.basis();
    let placement = basis.placement();
    let demand = demand_of(&app, placement, &req);
    answer(Asked {
        app: &app,
        placement,
        req: &req,
        demand,
        body_len: bytes.len(),
    })
}

/// A parsed extender request with the view it is answered from.
struct Asked<'r> {
    app: &'r ReadModel,
    placement: Placement<'r>,
    req: &'r Request<'r>,
    /// The pod's block demand, resolved in `placement`'s view.
    demand: BlockDemand,
    /// The request body's size, which bounds the filter's answer.
    body_len: usize,
}

async fn filter(
    State(app): State<Arc<ReadModel>>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    extender_route(app, "extender_filter", (budget, headers, body), filter_answer).await
}

async fn prioritize(
    State(app): State<Arc<ReadModel>>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Response {
    extender_route(
        app,
        "extender_prioritize",
        (budget, headers, body),
        prioritize_answer,
    )
    .await
}

fn filter_answer(asked: Asked<'_>) -> Response {
    let Asked {
        app,
        placement,
        req,
        demand,
        body_len,
    } = asked;
    let names = req.candidates.names();
    let outcome = if demand.is_empty() {
        extender::FilterOutcome {
            passed: names,
            ..Default::default()
        }
    } else {
        extender::filter(placement, &demand, &names)
    };
    for (reason, count) in [
        ("soft-cap", outcome.failed.len()),
        ("unresolvable", outcome.unresolvable.len()),
    ] {
        app.metrics
            .extender_rejections
            .get_or_create(&RejectLabels {
                reason: reason.into(),
            })
            .inc_by(count as u64);
    }
    if let Some(uid) = req.pod.metadata.uid.as_deref() {
        app.bindings.lock().unwrap_or_else(|e| e.into_inner()).filtered(
            uid,
            outcome.passed.iter().copied(),
            Instant::now(),
        );
    }
    match &req.candidates {
        Candidates::Names(_) => json_bytes(wire::filter_names(&outcome, body_len)),
        Candidates::Nodes(items) => {
            let passed: BTreeSet<&str> = outcome.passed.iter().copied().collect();
            let items = items.iter().filter(|n| passed.contains(node_name(n))).collect();
            let answer = FilterResult {
                nodes: Some(NodeListOut {
                    metadata: Empty {},
                    items,
                }),
                node_names: None,
                failed: &outcome.failed,
                unresolvable: &outcome.unresolvable,
                error: "",
            };
            // The Nodes passed back: at most the body's size.
            json_sized(&answer, body_len)
        }
    }
}

fn prioritize_answer(asked: Asked<'_>) -> Response {
    let memory = crate::model::pod_resources(&asked.req.pod)
        .map(|r| r.0)
        .unwrap_or(0);
    let names = asked.req.candidates.names();
    let scoring = asked.app.config.scoring;
    let scores = extender::prioritize(asked.placement, &asked.demand, memory, scoring, &names);
    json_bytes(wire::priorities(&scores))
}

/// The extender's answers over names, written straight into one buffer. serde_json writes each
/// string through its formatter byte by byte, field names included, for each of 5,000 entries:
/// 140 instructions per name in filter's answer and 540 per entry in prioritize's (callgrind).
/// `FilterResult` and `HostPriority` stay the definition of the wire format: a test holds these
/// writers to the bytes serde_json writes for them.
mod wire {
    use std::collections::BTreeMap;

    use crate::decide::extender::FilterOutcome;

    /// ExtenderFilterResult in names mode (`Nodes` null).
    pub fn filter_names(outcome: &FilterOutcome<'_>, size_hint: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_hint);
        out.extend_from_slice(br#"{"Nodes":null,"NodeNames":["#);
        for (i, name) in outcome.passed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, name);
        }
        out.extend_from_slice(br#"],"FailedNodes":"#);
        map(&mut out, &outcome.failed);
        out.extend_from_slice(br#","FailedAndUnresolvableNodes":"#);
        map(&mut out, &outcome.unresolvable);
        out.extend_from_slice(br#","Error":""}"#);
        out
    }

    /// A list of HostPriority.
    pub fn priorities(scores: &[(&str, i64)]) -> Vec<u8> {
        let names: usize = scores.iter().map(|(host, _)| host.len()).sum();
        let mut out = Vec::with_capacity(names + scores.len() * 26 + 2);
        out.push(b'[');
        let mut digits = itoa::Buffer::new();
        for (i, (host, score)) in scores.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"Host":"#);
            string(&mut out, host);
            out.extend_from_slice(br#","Score":"#);
            out.extend_from_slice(digits.format(*score).as_bytes());
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    fn map(out: &mut Vec<u8>, entries: &BTreeMap<&str, String>) {
        out.push(b'{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key);
            out.push(b':');
            string(out, value);
        }
        out.push(b'}');
    }

    /// A JSON string. Node names never hold what JSON escapes (a quote, a backslash, a control
    /// character); a name from the request that does is written by serde_json.
    fn string(out: &mut Vec<u8>, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(serde_json::Value::from(s).to_string().as_bytes());
        }
    }
}

async fn bind(State(app): State<Arc<ReadModel>>, budget: Budget, headers: HeaderMap, body: Body) -> Response {
    let verb = Timer::start(&app, "extender_bind");
    let args: BindingArgs = match verb
        .read(budget, &headers, body, |b| parse(b, "ExtenderBindingArgs"))
        .await
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    if args.pod_name.is_empty() || args.pod_namespace.is_empty() || args.node.is_empty() {
        return verb.bad(HttpError::new(
            StatusCode::BAD_REQUEST,
            "ExtenderBindingArgs needs PodName, PodNamespace and Node",
        ));
    }
    let pod: NsName = ns_name(&args.pod_namespace, &args.pod_name);
    if let Some(why) = bind_refusal(&app, &pod, &args) {
        tracing::warn!(pod = %args.pod_name, namespace = %args.pod_namespace, node = %args.node, why, "bind refused");
        app.metrics
            .binds
            .get_or_create(&RejectLabels {
                reason: "refused".into(),
            })
            .inc();
        return axum::Json(json!({"Error": format!("bind refused: {why}")})).into_response();
    }
    let keys = bound_keys(&app, &pod, &args.pod_uid);
    if let Some(client) = &app.client
        && let Err(e) = create_binding(client, &args).await
    {
        tracing::warn!(pod = %args.pod_name, namespace = %args.pod_namespace, node = %args.node, error = %e, "bind failed");
        app.metrics
            .binds
            .get_or_create(&RejectLabels {
                reason: "failed".into(),
            })
            .inc();
        return axum::Json(json!({"Error": e.to_string()})).into_response();
    }
    app.bindings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(pod, &args.node, keys, Instant::now());
    app.metrics
        .binds
        .get_or_create(&RejectLabels {
            reason: "bound".into(),
        })
        .inc();
    tracing::debug!(pod = %args.pod_name, namespace = %args.pod_namespace, node = %args.node, "bound");
    axum::Json(json!({"Error": ""})).into_response()
}

/// The block volume keys a bound pod holds: from the index when it has the pod, else from
/// what filter/prioritize saw for that UID.
/// Why bind must not place this pod, if it must not: headroom's service account may bind any
/// pod, so only a Pending, unbound pod the filter passed on that node (by UID, recently) is.
fn bind_refusal(app: &ReadModel, pod: &NsName, args: &BindingArgs) -> Option<&'static str> {
    let passed = app.bindings.lock().unwrap_or_else(|e| e.into_inner()).passed(
        &args.pod_uid,
        &args.node,
        Instant::now(),
    );
    if !passed {
        return Some("the filter did not pass this pod on this node in the last minutes");
    }
    match app
        .index
        .with_state(|s, _| s.pods.get(pod).map(|p| (p.terminal, p.node_name.is_some())))
    {
        None => Some("no such pod"),
        Some((true, _)) => Some("the pod has finished"),
        Some((_, true)) => Some("the pod is bound already"),
        Some((false, false)) => None,
    }
}

/// The volume keys a bound pod takes: its indexed block claims, and what filter and
/// prioritize resolved for it (generic ephemeral volumes whose claims do not exist yet).
fn bound_keys(app: &ReadModel, pod: &NsName, uid: &str) -> BTreeSet<Name> {
    let view = app.view();
    let mut keys = app.index.with_state(|s, _| {
        s.pods
            .get(pod)
            .map(|p| placement::pod_block_keys(&view, p))
            .unwrap_or_default()
    });
    if let Some(demand) = app.bindings.lock().unwrap_or_else(|e| e.into_inner()).demand(uid) {
        keys.extend(demand.iter().cloned());
    }
    keys
}

async fn create_binding(client: &kube::Client, args: &BindingArgs) -> Result<(), kube::Error> {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &args.pod_namespace);
    let binding = Binding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(args.pod_name.clone()),
            namespace: Some(args.pod_namespace.clone()),
            uid: (!args.pod_uid.is_empty()).then(|| args.pod_uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(args.node.clone()),
            api_version: Some("v1".into()),
            ..Default::default()
        },
    };
    let params = kube::api::PostParams::default();
    let call = api.create_subresource::<Binding, Value>("binding", &args.pod_name, &params, &binding);
    // The scheduler's httpTimeout (5 s by default) covers this whole request.
    tokio::time::timeout(std::time::Duration::from_secs(4), call)
        .await
        .map_err(|_| kube::Error::Service("binding timed out".into()))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::decide::extender::FilterOutcome;

    /// One HostPriority: the wire format `wire::priorities` writes.
    #[derive(Serialize)]
    struct HostPriority<'a> {
        #[serde(rename = "Host")]
        host: &'a str,
        #[serde(rename = "Score")]
        score: i64,
    }

    #[test]
    fn the_hand_written_answers_are_the_bytes_serde_json_writes() {
        let odd = [
            "w00001",
            "",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "nul\u{0}bell\u{7}esc\u{1b}del\u{7f}",
            "line\nfeed\r",
            "ünïcødé-節点",
            "\u{2028}sep",
        ];
        /// Nodes and why they were refused.
        type Reasons<'a> = Vec<(&'a str, &'a str)>;
        // (case, passed, failed, unresolvable)
        let rows: Vec<(&str, Vec<&str>, Reasons, Reasons)> = vec![
            ("nothing passed", vec![], vec![], vec![]),
            ("plain names", vec!["w00001", "w00002"], vec![], vec![]),
            ("names JSON escapes", odd.to_vec(), vec![], vec![]),
            (
                "reasons",
                vec!["a"],
                vec![("b", "block-PVC soft cap: 24/24 on b"), ("c\"", "why \"so\"\n")],
                vec![("d", "not freed by preemption")],
            ),
        ];
        for (case, passed, failed, unresolvable) in rows {
            let outcome = FilterOutcome {
                passed: passed.clone(),
                failed: failed.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                unresolvable: unresolvable.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            };
            let by_serde = serde_json::to_vec(&FilterResult {
                nodes: None,
                node_names: Some(&passed),
                failed: &outcome.failed,
                unresolvable: &outcome.unresolvable,
                error: "",
            })
            .unwrap();
            let written = wire::filter_names(&outcome, 0);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(by_serde).unwrap(),
                "{case}"
            );

            let scores: Vec<(&str, i64)> = passed
                .iter()
                .zip([0, 10, 7, -1, i64::MAX])
                .map(|(h, s)| (*h, s))
                .collect();
            let list: Vec<HostPriority> = scores
                .iter()
                .map(|&(host, score)| HostPriority { host, score })
                .collect();
            assert_eq!(
                String::from_utf8(wire::priorities(&scores)).unwrap(),
                serde_json::to_string(&list).unwrap(),
                "{case}"
            );
        }
    }

    #[test]
    fn candidate_names_are_borrowed_from_the_body_and_unescaped_when_they_must_be() {
        let body = br#"{"Pod":{"metadata":{"name":"p","namespace":"a"},"spec":{"containers":[]}},
            "NodeNames":["w00001","w\u0030\u0030002"]}"#;
        let req = parse_args(body).unwrap();
        let Candidates::Names(names) = &req.candidates else {
            panic!("names mode");
        };
        assert!(
            matches!(names[0].0, Cow::Borrowed(_)),
            "a plain name is not copied"
        );
        assert!(matches!(names[1].0, Cow::Owned(_)));
        assert_eq!(req.candidates.names(), ["w00001", "w00002"]);
        let refused = parse_args(br#"{"Pod":{"metadata":{"name":"p"}},"NodeNames":[7]}"#);
        assert!(matches!(refused, Err(e) if e.status == StatusCode::BAD_REQUEST));
    }
}
