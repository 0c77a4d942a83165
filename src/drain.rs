//! Draining a node for scale-down, as `kubectl drain` does: cordon, evict through the
//! Eviction API (PodDisruptionBudgets apply), wait, delete the Node. Given up after a bound:
//! then the node is uncordoned and nothing else is touched.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::model::Controller;

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{pods} pod(s) still on {node} after {timeout:?} (a PodDisruptionBudget blocks eviction?)")]
    Blocked {
        node: String,
        pods: usize,
        timeout: Duration,
    },
}

/// Pods a drain must move: not DaemonSet-owned, not mirror pods, not finished.
fn evictable(pod: &Pod) -> bool {
    let done = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    Controller::of(&pod.metadata).evicted_by_drain() && !done
}

/// The label on a node headroom cordoned to drain: a process that dies mid-drain leaves it,
/// and the next lease holder uncordons what it finds (`release_abandoned`).
pub const DRAINING_LABEL: &str = "headroom.io/draining";

async fn cordon(nodes: &Api<Node>, node: &str, on: bool) -> Result<(), kube::Error> {
    let (unschedulable, label) = if on {
        (json!(true), json!("true"))
    } else {
        (json!(null), json!(null))
    };
    let patch =
        json!({"metadata": {"labels": {DRAINING_LABEL: label}}, "spec": {"unschedulable": unschedulable}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// What one eviction attempt came to.
#[derive(Debug)]
pub enum Eviction {
    Evicted,
    /// 429, or no answer within the limit: a PodDisruptionBudget allows no disruption now.
    Refused,
    /// 404: the pod is gone already.
    Gone,
    Failed(kube::Error),
}

/// One eviction of `namespace/name` through the Eviction API, cut at `limit`.
pub async fn evict(client: &Client, namespace: &str, name: &str, limit: Duration) -> Eviction {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // kube's client retries 429 itself (with backoff up to minutes); a PDB's 429 must come
    // back to the caller, so the call is cut at the time left.
    match tokio::time::timeout(limit, api.evict(name, &EvictParams::default())).await {
        Ok(Ok(_)) => Eviction::Evicted,
        Ok(Err(kube::Error::Api(s))) if s.code == 429 => Eviction::Refused,
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Eviction::Gone,
        Ok(Err(e)) => Eviction::Failed(e),
        Err(_) => Eviction::Refused,
    }
}

/// One eviction attempt of a pod on `node`, for the drain loop.
async fn evict_for_drain(client: &Client, node: &str, pod: &Pod, limit: Duration) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match evict(client, ns, name, limit).await {
        Eviction::Evicted => tracing::info!(node, namespace = ns, pod = name, "evicted"),
        Eviction::Gone => {}
        Eviction::Refused => tracing::info!(node, pod = name, "eviction not granted yet (disruption budget)"),
        Eviction::Failed(e) => tracing::warn!(node, pod = name, error = %e, "eviction failed"),
    }
}

/// Uncordons the nodes a drain cordoned and never finished (its process died); returns them.
pub async fn release_abandoned(client: &Client) -> Result<Vec<String>, DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let marked = nodes
        .list(&ListParams::default().labels(&format!("{DRAINING_LABEL}=true")))
        .await?;
    let mut released = Vec::new();
    for node in marked.items {
        let Some(name) = node.metadata.name else {
            continue;
        };
        cordon(&nodes, &name, false).await?;
        released.push(name);
    }
    Ok(released)
}

pub async fn drain(client: &Client, node: &str, timeout: Duration) -> Result<(), DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    cordon(&nodes, node, true).await?;
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left: Vec<Pod> = all
            .list(&on_node)
            .await?
            .items
            .into_iter()
            .filter(evictable)
            .collect();
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            cordon(&nodes, node, false).await?;
            return Err(DrainError::Blocked {
                node: node.into(),
                pods: left.len(),
                timeout,
            });
        }
        // Concurrently: one pod a budget protects must not hold up the others.
        let left_time = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(10));
        futures::future::join_all(
            left.iter()
                .map(|pod| evict_for_drain(client, node, pod, left_time)),
        )
        .await;
        // A PDB frees a slot when a replacement is Ready elsewhere: look again soon.
        tokio::time::sleep((timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))).await;
    }
    nodes.delete(node, &DeleteParams::default()).await?;
    Ok(())
}
