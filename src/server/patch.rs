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

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(pod: Value, steer: &Steer) -> Value {
        serde_json::to_value(patch(&pod, steer)).unwrap()
    }

    #[test]
    fn the_extended_resource_goes_into_limits_and_existing_requests() {
        let volumes = Steer::BlockVolumes(2);
        // (case, the first container's resources, the patch)
        let rows: Vec<(&str, Value, Value)> = vec![
            (
                "no resources",
                json!(null),
                json!([{"op": "add", "path": "/spec/containers/0/resources",
                        "value": {"limits": {BLOCK_VOLUMES_RESOURCE: "2"}}}]),
            ),
            (
                "limits only",
                json!({"limits": {"memory": "1Gi"}}),
                json!([{"op": "add", "path": "/spec/containers/0/resources/limits/headroom.io~1block-volumes", "value": "2"}]),
            ),
            (
                "requests too (must equal the limit)",
                json!({"requests": {"memory": "1Gi"}}),
                json!([{"op": "add", "path": "/spec/containers/0/resources/limits", "value": {BLOCK_VOLUMES_RESOURCE: "2"}},
                       {"op": "add", "path": "/spec/containers/0/resources/requests/headroom.io~1block-volumes", "value": "2"}]),
            ),
            (
                "a stale count is replaced",
                json!({"limits": {BLOCK_VOLUMES_RESOURCE: "1"}}),
                json!([{"op": "replace", "path": "/spec/containers/0/resources/limits/headroom.io~1block-volumes", "value": "2"}]),
            ),
            (
                "already mutated: nothing",
                json!({"limits": {BLOCK_VOLUMES_RESOURCE: "2"}}),
                json!([]),
            ),
        ];
        for (case, resources, want) in rows {
            let mut container = json!({"name": "app"});
            if !resources.is_null() {
                container["resources"] = resources;
            }
            let pod = json!({"spec": {"containers": [container]}});
            assert_eq!(ops(pod, &volumes), want, "{case}");
        }
        assert_eq!(ops(json!({"spec": {}}), &volumes), json!([]), "no container");
        assert_eq!(
            ops(json!({"spec": {"containers": [{}]}}), &Steer::Nothing),
            json!([])
        );
    }

    #[test]
    fn avoided_nodes_are_anded_into_every_required_term() {
        let avoid = Steer::AvoidNodes(["n1".to_owned(), "n2".to_owned()].into());
        let ours = json!({"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n1", "n2"]});
        let required = "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution";
        // (case, the pod's affinity, the patch)
        let rows: Vec<(&str, Value, Value)> = vec![
            (
                "no affinity",
                json!(null),
                json!([{"op": "add", "path": "/spec/affinity",
                        "value": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                  {"nodeSelectorTerms": [{"matchExpressions": [ours]}]}}}}]),
            ),
            (
                "two terms: one expression each",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}),
                json!([{"op": "add", "path": format!("{required}/nodeSelectorTerms/0/matchExpressions/-"), "value": ours},
                       {"op": "add", "path": format!("{required}/nodeSelectorTerms/1/matchExpressions"), "value": [ours]}]),
            ),
            (
                "already there: nothing",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [ours]}]}}}),
                json!([]),
            ),
        ];
        for (case, affinity, want) in rows {
            let mut pod = json!({"spec": {"containers": [{}]}});
            if !affinity.is_null() {
                pod["spec"]["affinity"] = affinity;
            }
            assert_eq!(ops(pod, &avoid), want, "{case}");
        }
        assert_eq!(
            ops(json!({"spec": {}}), &Steer::AvoidNodes(Default::default())),
            json!([]),
            "every node has room: nothing"
        );
    }
}
