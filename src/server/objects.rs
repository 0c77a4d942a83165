//! The objects the routes read, trimmed to what their decisions look at and read in the
//! request's one pass; the rest of each object (managedFields, status, …) is skipped unread.
//! Each converts into the Kubernetes type the decisions take.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSpec,
        ResourceRequirements, Volume,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use serde::Deserialize;

/// A Pod as admission reads it: the fields the decisions and the patch look at, each in its
/// Kubernetes type; the rest (managedFields, status, tolerations…) is skipped unread.
#[derive(Debug, Deserialize)]
pub struct PodIn {
    #[serde(default)]
    pub metadata: MetaIn,
    pub spec: Option<SpecIn>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MetaIn {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecIn {
    /// Go writes an empty list as null (the scheduler extender's arguments do).
    pub containers: Option<Vec<ContainerIn>>,
    pub init_containers: Option<Vec<ContainerIn>>,
    pub volumes: Option<Vec<Volume>>,
    pub overhead: Option<BTreeMap<String, Quantity>>,
    pub affinity: Option<Affinity>,
}

/// A container as admission reads it: what it requests, and whether it is a sidecar.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerIn {
    #[serde(default)]
    pub name: String,
    pub resources: Option<ResourceRequirements>,
    pub restart_policy: Option<String>,
}

impl From<ContainerIn> for Container {
    fn from(c: ContainerIn) -> Self {
        Container {
            name: c.name,
            resources: c.resources,
            restart_policy: c.restart_policy,
            ..Default::default()
        }
    }
}

impl From<PodIn> for Pod {
    fn from(pod: PodIn) -> Self {
        Pod {
            metadata: ObjectMeta {
                name: pod.metadata.name,
                namespace: pod.metadata.namespace,
                uid: pod.metadata.uid,
                labels: pod.metadata.labels,
                ..Default::default()
            },
            spec: pod.spec.map(|s| PodSpec {
                containers: s.containers.into_iter().flatten().map(Container::from).collect(),
                init_containers: s
                    .init_containers
                    .map(|cs| cs.into_iter().map(Container::from).collect()),
                volumes: s.volumes,
                overhead: s.overhead,
                affinity: s.affinity,
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// A PersistentVolumeClaim as admission reads it: its labels and its class.
#[derive(Debug, Deserialize)]
pub struct ClaimIn {
    #[serde(default)]
    pub metadata: MetaIn,
    pub spec: Option<ClaimSpecIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpecIn {
    pub storage_class_name: Option<String>,
}

impl From<ClaimIn> for PersistentVolumeClaim {
    fn from(claim: ClaimIn) -> Self {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: claim.metadata.name,
                namespace: claim.metadata.namespace,
                labels: claim.metadata.labels,
                ..Default::default()
            },
            spec: claim.spec.map(|s| PersistentVolumeClaimSpec {
                storage_class_name: s.storage_class_name,
                ..Default::default()
            }),
            status: None,
        }
    }
}
