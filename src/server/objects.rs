//! The objects the routes read, trimmed to what their decisions look at and read in the
//! request's one pass; the rest of each object (managedFields, status, …) is skipped unread.
//! Each converts into the Kubernetes type the decisions take.

use std::{borrow::Cow, collections::BTreeMap};

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
    /// Of the labels, only `headroom.io/ignore`'s value: no decision reads the others, and
    /// keeping them cost a map and two strings per label on every request.
    #[serde(rename = "labels", default, deserialize_with = "ignore_label")]
    pub ignore: Option<String>,
}

/// The value of the `headroom.io/ignore` label in a `labels` map (null or absent: none).
fn ignore_label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Labels;
    impl<'de> serde::de::Visitor<'de> for Labels {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of labels")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut ignore = None;
            while let Some(key) = map.next_key::<Text<'de>>()? {
                let value = map.next_value::<Text<'de>>()?;
                if key.0 == crate::decide::admission::IGNORE_LABEL {
                    ignore = Some(value.0.into_owned());
                }
            }
            Ok(ignore)
        }
    }
    d.deserialize_any(Labels)
}

/// A JSON string borrowed from the body unless escapes made it differ. serde borrows a `Cow`
/// only as a field of its own: inside a `Vec` or as a map's key it copies every one.
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_json_slice;

    fn ignore(meta: &str) -> Result<Option<String>, String> {
        from_json_slice::<MetaIn>(meta.as_bytes())
            .map(|m| m.ignore)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn of_the_labels_only_the_ignore_label_is_kept() {
        // The ignore label's value, or where the error is.
        type Want = Result<Option<&'static str>, &'static str>;
        // (case, metadata, want)
        let rows: [(&str, &str, Want); 6] = [
            ("no labels", r#"{"name":"p"}"#, Ok(None)),
            ("null labels", r#"{"labels":null}"#, Ok(None)),
            (
                "among others",
                r#"{"labels":{"app":"x","headroom.io/ignore":"true","tier":"db"}}"#,
                Ok(Some("true")),
            ),
            (
                "a key spelled with escapes",
                r#"{"labels":{"headroom.io\/ignore":"tr\u0075e"}}"#,
                Ok(Some("true")),
            ),
            ("other labels only", r#"{"labels":{"app":"x"}}"#, Ok(None)),
            (
                "a value that is not a string",
                r#"{"labels":{"app":7}}"#,
                Err("labels.app"),
            ),
        ];
        for (case, meta, want) in rows {
            let got = ignore(meta);
            match (want, &got) {
                (Ok(want), Ok(got)) => assert_eq!(got.as_deref(), want, "{case}"),
                (Err(path), Err(e)) => assert!(e.starts_with(path), "{case}: {e}"),
                _ => panic!("{case}: {got:?}"),
            }
        }
    }

    #[test]
    fn text_is_checked_for_utf8_once_and_still_refused_when_it_is_not() {
        let name = from_json_slice::<MetaIn>(r#"{"name":"café"}"#.as_bytes())
            .unwrap()
            .name;
        assert_eq!(name.as_deref(), Some("café"));
        let refused = from_json_slice::<MetaIn>(b"{\"name\":\"caf\xe9\"}").unwrap_err();
        assert!(refused.to_string().contains("invalid unicode"), "{refused}");
    }
}
