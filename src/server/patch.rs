//! The JSON patch `/mutate` answers with: the wire encoding of the admission decision's
//! `Steer` on the pod as the API server sent it (read once, into the typed Pod).

use std::collections::BTreeSet;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};
use serde_json::{Value, json};

use crate::{decide::admission::Steer, model::BLOCK_VOLUMES_RESOURCE};

/// The JSON patch `/mutate` returns for `pod` steered by `steer` (empty: nothing to change).
///
/// `BlockVolumes` puts `headroom.io/block-volumes: <n>` in the first container's limits (and
/// requests, if that map exists, since an extended resource's request must equal its limit).
/// `AvoidNodes` adds `kubernetes.io/hostname NotIn [nodes]` to every required node-selector
/// term. Both are no-ops on an already mutated pod.
pub fn patch(pod: &Pod, steer: &Steer) -> Vec<PatchOperation> {
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

fn extended_resource_patch(pod: &Pod, n: usize) -> Vec<PatchOperation> {
    let want = n.to_string();
    let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
        return Vec::new();
    };
    let base = ["spec", "containers", "0", "resources"];
    let Some(resources) = &container.resources else {
        return vec![add(&base, json!({"limits": {BLOCK_VOLUMES_RESOURCE: want}}))];
    };
    let mut ops = Vec::new();
    for (map, quantities, required) in [
        ("limits", &resources.limits, true),
        ("requests", &resources.requests, false),
    ] {
        match quantities {
            None if required => ops.push(add(
                &[&base[..], &[map]].concat(),
                json!({BLOCK_VOLUMES_RESOURCE: want}),
            )),
            None => {}
            Some(m) => match m.get(BLOCK_VOLUMES_RESOURCE) {
                Some(v) if v.0 == want => {}
                Some(_) => ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(&[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat()),
                    value: json!(want),
                })),
                None => ops.push(add(
                    &[&base[..], &[map, BLOCK_VOLUMES_RESOURCE]].concat(),
                    json!(want),
                )),
            },
        }
    }
    ops
}

fn affinity_patch(pod: &Pod, full: &BTreeSet<String>) -> Vec<PatchOperation> {
    if full.is_empty() {
        return Vec::new();
    }
    let expression = json!({"key": "kubernetes.io/hostname", "operator": "NotIn", "values": full});
    let ours = |e: &NodeSelectorRequirement| e.key == "kubernetes.io/hostname" && e.operator == "NotIn";
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    let Some(required) =
        node_affinity.and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    else {
        let term = json!({"nodeSelectorTerms": [{"matchExpressions": [expression]}]});
        let (path, value): (&[&str], Value) = match (affinity, node_affinity) {
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
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        let i = i.to_string();
        match &term.match_expressions {
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
        let pod: Pod = serde_json::from_value(pod).unwrap();
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
        assert_eq!(
            ops(json!({"spec": {"containers": []}}), &volumes),
            json!([]),
            "no container"
        );
        assert_eq!(
            ops(
                json!({"spec": {"containers": [{"name": "app"}]}}),
                &Steer::Nothing
            ),
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
            let mut pod = json!({"spec": {"containers": [{"name": "app"}]}});
            if !affinity.is_null() {
                pod["spec"]["affinity"] = affinity;
            }
            assert_eq!(ops(pod, &avoid), want, "{case}");
        }
        assert_eq!(
            ops(
                json!({"spec": {"containers": []}}),
                &Steer::AvoidNodes(Default::default())
            ),
            json!([]),
            "every node has room: nothing"
        );
    }
}
