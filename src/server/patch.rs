//! The JSON patch `/mutate` answers with: the wire encoding of the admission decision's
//! `Steer` on the pod as the API server sent it.

use std::collections::BTreeSet;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation, jsonptr::PointerBuf};
use serde_json::{Value, json};

use crate::{decide::admission::Steer, model::BLOCK_VOLUMES_RESOURCE};

/// The JSON patch `/mutate` returns for `pod` steered by `steer` (empty: nothing to change).
///
/// `BlockVolumes` puts `headroom.io/block-volumes: <n>` in the first container's limits (and
/// requests, if that map exists, since an extended resource's request must equal its limit).
/// `AvoidNodes` adds `kubernetes.io/hostname NotIn [nodes]` to every required node-selector
/// term. Both are no-ops on an already mutated pod.
pub fn patch(pod: &Value, steer: &Steer) -> Vec<PatchOperation> {
    match steer {
        Steer::Nothing => Vec::new(),
        Steer::BlockVolumes(n) => extended_resource_patch(pod, *n),
        Steer::AvoidNodes(full) => affinity_patch(pod, full),
    }
}

fn pointer(parts: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(parts.iter().copied())
}

fn add(parts: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(parts),
        value,
    })
}

fn extended_resource_patch(pod: &Value, n: usize) -> Vec<PatchOperation> {
    let want = Value::String(n.to_string());
    let Some(container) = pod.pointer("/spec/containers/0") else {
        return Vec::new();
    };
    let base = ["spec", "containers", "0", "resources"];
    let Some(resources) = container.get("resources").filter(|r| r.is_object()) else {
        return vec![add(&base, json!({"limits": {BLOCK_VOLUMES_RESOURCE: want}}))];
    };
    let mut ops = Vec::new();
    for (map, required) in [("limits", true), ("requests", false)] {
        match resources.get(map).filter(|m| m.is_object()) {
            None if required => ops.push(add(
                &[&base[..], &[map]].concat(),
                json!({BLOCK_VOLUMES_RESOURCE: want}),
            )),
            None => {}
            Some(m) => match m.get(BLOCK_VOLUMES_RESOURCE) {
                Some(v) if *v == want => {}
                Some(_) => ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(&[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat()),
                    value: want.clone(),
                })),
                None => ops.push(add(
                    &[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat(),
                    want.clone(),
                )),
            },
        }
    }
    ops
}

fn affinity_patch(pod: &Value, full: &BTreeSet<String>) -> Vec<PatchOperation> {
    if full.is_empty() {
        return Vec::new();
    }
    let expression = json!({"key": "kubernetes.io/hostname", "operator": "NotIn", "values": full});
    let ours = |e: &Value| e["key"] == "kubernetes.io/hostname" && e["operator"] == "NotIn";
    let required = pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution");
    let Some(terms) = required
        .and_then(|r| r.get("nodeSelectorTerms"))
        .and_then(Value::as_array)
    else {
        let term = json!({"nodeSelectorTerms": [{"matchExpressions": [expression]}]});
        let (path, value): (&[&str], Value) = match (
            pod.pointer("/spec/affinity"),
            pod.pointer("/spec/affinity/nodeAffinity"),
        ) {
            (None, _) => (
                &["spec", "affinity"],
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}),
            ),
            (Some(_), None) => (
                &["spec", "affinity", "nodeAffinity"],
                json!({"requiredDuringSchedulingIgnoredDuringExecution": term}),
            ),
            (Some(_), Some(_)) => (
                &[
                    "spec",
                    "affinity",
                    "nodeAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                ],
                term,
            ),
        };
        return vec![add(path, value)];
    };
    // Terms are ORed: the exclusion must be ANDed into each of them.
    let base = [
        "spec",
        "affinity",
        "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        "nodeSelectorTerms",
    ];
    let mut ops = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let i = i.to_string();
        match term.get("matchExpressions").and_then(Value::as_array) {
            Some(exprs) if exprs.iter().any(ours) => {}
            Some(_) => ops.push(add(
                &[&base[..], &[&i, "matchExpressions", "-"]].concat(),
                expression.clone(),
            )),
            None => ops.push(add(
                &[&base[..], &[&i, "matchExpressions"]].concat(),
                json!([expression]),
            )),
        }
    }
    ops
}
