//! Live source: one kube-runtime watch per kind feeding the shared index.
//!
//! A relist (initial or after a 410 Gone) is buffered and applied as one `reset`, so objects
//! deleted while the watch was down disappear, and readers never see a half-listed kind.

use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod},
    policy::v1::PodDisruptionBudget,
    storage::v1::{CSINode, StorageClass, VolumeAttachment},
};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::Value;

use super::{EVENT_FIELDS, Watched};
use crate::{index::ObjectKey, shared_index::SharedIndex};

/// The live source could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no cluster config (in-cluster or KUBECONFIG): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("kube client: {0}")]
    Client(#[source] kube::Error),
    #[error("listing {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("encoding {kind}: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A client from `--kubeconfig` and `--context`, or inferred (KUBECONFIG, ~/.kube/config,
/// in-cluster).
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, LiveError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| LiveError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|source| LiveError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        (None, Some(_)) => {
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|source| LiveError::Kubeconfig {
                    path: "KUBECONFIG or ~/.kube/config".into(),
                    source,
                })?
        }
        (None, None) => kube::Config::infer().await.map_err(LiveError::Infer)?,
    };
    Client::try_from(config).map_err(LiveError::Client)
}

/// Watches every kind into `index` until the process stops; errors are retried with backoff.
pub async fn watch_all(client: Client, index: SharedIndex) {
    tokio::join!(
        watch::<Node>(client.clone(), index.clone()),
        watch::<CSINode>(client.clone(), index.clone()),
        watch::<StorageClass>(client.clone(), index.clone()),
        watch::<PersistentVolume>(client.clone(), index.clone()),
        watch::<PersistentVolumeClaim>(client.clone(), index.clone()),
        watch::<Pod>(client.clone(), index.clone()),
        watch::<VolumeAttachment>(client.clone(), index.clone()),
        watch::<PodDisruptionBudget>(client.clone(), index.clone()),
        watch::<Event>(client, index),
    );
}

/// What the watch of `K` selects: every object, but for Events only Warnings about Pods.
fn selector<K: Watched>() -> Option<&'static str> {
    (K::KIND == crate::index::Kind::Event).then_some(EVENT_FIELDS)
}

async fn watch<K: Watched>(client: Client, index: SharedIndex) {
    let kind = K::KIND.as_str();
    let api: Api<K> = Api::all(client);
    let mut config = watcher::Config::default();
    if let Some(fields) = selector::<K>() {
        config = config.fields(fields);
    }
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut relist = Vec::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(kind, %error, "watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(obj) => relist.extend(trim(&obj)),
            watcher::Event::InitDone => {
                let objects = std::mem::take(&mut relist);
                tracing::info!(kind, objects = objects.len(), "listed");
                // A relist rebuilds the accounting (~0.6 s at 150k pods): off the runtime's
                // threads, and awaited, so the events after it apply after it.
                let index = index.clone();
                let _ = tokio::task::spawn_blocking(move || index.reset(K::KIND, objects)).await;
            }
            watcher::Event::Apply(obj) => {
                if let Some(o) = trim(&obj) {
                    index.apply(o);
                }
            }
            watcher::Event::Delete(obj) => index.delete(&ObjectKey {
                kind: K::KIND,
                namespace: obj.namespace().unwrap_or_default().into(),
                name: obj.name_any().into(),
            }),
        }
    }
}

fn trim<K: Watched>(obj: &K) -> Option<crate::index::Object> {
    match obj.trim() {
        Ok(o) => o,
        Err(error) => {
            // The API server validates quantities, so this means a schema we do not know.
            tracing::warn!(kind = K::KIND.as_str(), name = obj.name_any(), %error, "object skipped");
            None
        }
    }
}

/// Lists every kind once and returns a kubectl-style `List` of the objects, with
/// managedFields and the last-applied annotation removed (they are large and never read).
pub async fn snapshot(client: Client) -> Result<Value, LiveError> {
    let mut items = Vec::new();
    list_into::<Node>(&client, &mut items).await?;
    list_into::<CSINode>(&client, &mut items).await?;
    list_into::<StorageClass>(&client, &mut items).await?;
    list_into::<PersistentVolume>(&client, &mut items).await?;
    list_into::<PersistentVolumeClaim>(&client, &mut items).await?;
    list_into::<Pod>(&client, &mut items).await?;
    list_into::<VolumeAttachment>(&client, &mut items).await?;
    list_into::<PodDisruptionBudget>(&client, &mut items).await?;
    list_into::<Event>(&client, &mut items).await?;
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
}

async fn list_into<K: Watched + serde::Serialize>(
    client: &Client,
    items: &mut Vec<Value>,
) -> Result<(), LiveError> {
    let kind = K::KIND.as_str();
    let api: Api<K> = Api::all(client.clone());
    let mut params = ListParams::default().limit(500);
    if let Some(fields) = selector::<K>() {
        params = params.fields(fields);
    }
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|source| LiveError::List { kind, source })?;
        // Only what headroom reads: a snapshot replays the same decisions.
        for obj in page.items.into_iter().filter(|o| matches!(o.trim(), Ok(Some(_)))) {
            items.push(export(obj, kind)?);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

fn export<K: Watched + serde::Serialize>(mut obj: K, kind: &'static str) -> Result<Value, LiveError> {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let mut value = serde_json::to_value(&obj).map_err(|source| LiveError::Encode { kind, source })?;
    // Items of a typed list come without apiVersion/kind; a List needs them on each item.
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    Ok(value)
}
