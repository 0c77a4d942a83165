//! The snapshot file: a kubectl `List` (YAML or JSON), multi-document YAML, or one object.
//!
//! Objects of kinds headroom does not read are skipped; a malformed object of a kind it does
//! read is an error naming the object, because silently dropping a Pod would skew the counts.

use std::path::Path;

use serde_json::Value;

use super::Watched;
use crate::index::{ClusterState, Kind, Object};

/// A snapshot that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML or JSON: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: {object}: {reason}")]
    Object {
        file: String,
        object: String,
        reason: String,
    },
}

/// Reads a snapshot file into a cluster state.
pub fn load(path: &Path) -> Result<ClusterState, SnapshotError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parses snapshot text; `file` names the source in errors.
pub fn parse(file: &str, text: &str) -> Result<ClusterState, SnapshotError> {
    let syntax = |reason: String| SnapshotError::Syntax {
        file: file.into(),
        reason,
    };
    let documents: Vec<Value> = if text.trim_start().starts_with('{') {
        // JSON (what `snapshot` writes, and large clusters): items are decoded and trimmed
        // one at a time, so a 100 MB List never exists as one value tree.
        return parse_json_stream(file, text);
    } else {
        serde_saphyr::from_multiple(text)
            .map_err(|e| syntax(e.to_string().lines().next().unwrap_or_default().to_owned()))?
    };
    let mut objects = Vec::new();
    for (d, doc) in documents.into_iter().enumerate() {
        match doc {
            Value::Null => continue,
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                let items = match map.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(_) => {
                        return Err(SnapshotError::Object {
                            file: file.into(),
                            object: format!("document {d}"),
                            reason: "`items` is not a list".into(),
                        });
                    }
                };
                for (i, item) in items.into_iter().enumerate() {
                    objects.extend(decode(file, &format!("items[{i}]"), item)?);
                }
            }
            other => objects.extend(decode(file, &format!("document {d}"), other)?),
        }
    }
    Ok(ClusterState::from_objects(objects))
}

/// Streams a JSON List (or a single JSON object) into the state.
fn parse_json_stream(file: &str, text: &str) -> Result<ClusterState, SnapshotError> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Doc<'a> {
        file: &'a str,
        state: &'a mut ClusterState,
        failure: &'a mut Option<SnapshotError>,
        /// Top-level fields other than `items`, for a document that is a single object.
        rest: serde_json::Map<String, Value>,
        saw_items: bool,
    }
    struct Items<'a, 'b>(&'b mut Doc<'a>);

    impl<'de> Visitor<'de> for &mut Doc<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "items" {
                    self.saw_items = true;
                    map.next_value_seed(Items(self))?;
                } else {
                    let v: Value = map.next_value()?;
                    self.rest.insert(key, v);
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Items<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of objects")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while let Some(item) = seq.next_element::<Value>()? {
                match decode(self.0.file, &format!("items[{i}]"), item) {
                    Ok(Some(object)) => drop(self.0.state.apply(object)),
                    Ok(None) => {}
                    Err(e) => {
                        *self.0.failure = Some(e);
                        return Err(serde::de::Error::custom("object rejected"));
                    }
                }
                i += 1;
            }
            Ok(())
        }
    }

    let mut state = ClusterState::default();
    let mut failure = None;
    let mut doc = Doc {
        file,
        state: &mut state,
        failure: &mut failure,
        rest: Default::default(),
        saw_items: false,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de.deserialize_map(&mut doc).and_then(|()| de.end());
    let (rest, saw_items) = (std::mem::take(&mut doc.rest), doc.saw_items);
    if let Some(e) = failure {
        return Err(e);
    }
    parsed.map_err(|e| SnapshotError::Syntax {
        file: file.into(),
        reason: e.to_string(),
    })?;
    let is_list = rest
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    if !is_list && !saw_items {
        // A single object rather than a List.
        if let Some(object) = decode(file, "document 0", Value::Object(rest))? {
            state.apply(object);
        }
    }
    Ok(state)
}

/// Decodes one object; `Ok(None)` for kinds headroom does not read.
fn decode(file: &str, position: &str, value: Value) -> Result<Option<Object>, SnapshotError> {
    let fail = |object: String, reason: String| SnapshotError::Object {
        file: file.into(),
        object,
        reason,
    };
    let Value::Object(map) = &value else {
        return Err(fail(position.into(), "not an object".into()));
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let meta = map.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let described = match meta.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
        Some(ns) => format!("{position} ({kind} {ns}/{name})"),
        None => format!("{position} ({kind} {name})"),
    };
    let kind = match kind.as_str() {
        "Node" => Kind::Node,
        "CSINode" => Kind::CsiNode,
        "StorageClass" => Kind::StorageClass,
        "PersistentVolume" => Kind::PersistentVolume,
        "PersistentVolumeClaim" => Kind::PersistentVolumeClaim,
        "Pod" => Kind::Pod,
        "VolumeAttachment" => Kind::VolumeAttachment,
        "Event" => Kind::Event,
        "PodDisruptionBudget" => Kind::PodDisruptionBudget,
        "" => return Err(fail(described, "has no `kind`".into())),
        _ => return Ok(None),
    };
    if name == "?" {
        return Err(fail(described, "has no `metadata.name`".into()));
    }
    fn typed<K: Watched>(value: Value) -> Result<Option<Object>, String> {
        let obj: K =
            serde_path_to_error::deserialize(value).map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
        obj.trim().map_err(|e| e.to_string())
    }
    use k8s_openapi::api::{core::v1 as core, storage::v1 as storage};
    let object = match kind {
        Kind::Node => typed::<core::Node>(value),
        Kind::CsiNode => typed::<storage::CSINode>(value),
        Kind::StorageClass => typed::<storage::StorageClass>(value),
        Kind::PersistentVolume => typed::<core::PersistentVolume>(value),
        Kind::PersistentVolumeClaim => typed::<core::PersistentVolumeClaim>(value),
        Kind::Pod => typed::<core::Pod>(value),
        Kind::VolumeAttachment => typed::<storage::VolumeAttachment>(value),
        Kind::Event => typed::<core::Event>(value),
        Kind::PodDisruptionBudget => typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(value),
    }
    .map_err(|reason| fail(described, reason))?;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_formats_read_the_same() {
        let list_yaml = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: a}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: ignored, namespace: x}}
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: x}, spec: {containers: []}}
"#;
        let multi = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: x}\nspec: {containers: []}\n";
        let json = r#"{"kind":"List","apiVersion":"v1","items":[{"kind":"Node","apiVersion":"v1","metadata":{"name":"a"}},{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"x"},"spec":{"containers":[]}}]}"#;
        let a = parse("a", list_yaml).unwrap();
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.pods.len(), 1);
        assert_eq!(parse("b", multi).unwrap(), a);
        assert_eq!(parse("c", json).unwrap(), a);
    }

    #[test]
    fn a_malformed_object_is_named() {
        let cases = [
            (
                "kind: List\nitems:\n- {kind: Pod, metadata: {name: web, namespace: shop}, spec: {containers: 3}}\n",
                "items[0] (Pod shop/web)",
                "spec.containers",
            ),
            (
                "kind: Node\nmetadata: {name: n1}\nstatus: {allocatable: {memory: lots}}\n",
                "document 0 (Node n1)",
                "memory",
            ),
            (
                "kind: List\nitems:\n- {kind: Node}\n",
                "items[0] (Node ?)",
                "metadata.name",
            ),
            (
                "kind: List\nitems:\n- {metadata: {name: x}}\n",
                "items[0]",
                "kind",
            ),
        ];
        let json_case = r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"a"}},{"kind":"Pod","metadata":{"name":"web","namespace":"shop"},"spec":{"containers":3}}]}"#;
        let err = parse("snap.json", json_case).unwrap_err().to_string();
        assert!(
            err.starts_with("snap.json: items[1] (Pod shop/web)") && err.contains("spec.containers"),
            "{err}"
        );
        for (text, object, reason) in cases {
            let err = parse("snap.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("snap.yaml: {object}")), "{err}");
            assert!(err.contains(reason), "want {reason:?} in {err}");
        }
    }

    #[test]
    fn broken_syntax_is_reported() {
        assert!(matches!(
            parse("s", "kind: [List"),
            Err(SnapshotError::Syntax { .. })
        ));
        assert!(matches!(
            parse("s", "{\"kind\": "),
            Err(SnapshotError::Syntax { .. })
        ));
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::model::Incident;

    /// An Event as the API server serves it, with `reason`, `message` and `source`.
    fn event(name: &str, reason: &str, message: &str, component: &str, extra: &str) -> String {
        format!(
            "- {{apiVersion: v1, kind: Event, metadata: {{name: {name}, namespace: apps}}, type: Warning,\n   \
             involvedObject: {{kind: Pod, namespace: apps, name: db-0}}, reason: {reason}, message: \"{message}\",\n   \
             source: {{component: {component}}}, lastTimestamp: \"2026-05-26T08:00:00Z\"{extra}}}\n"
        )
    }

    #[test]
    fn snapshots_keep_the_events_headroom_reads_and_drop_the_rest() {
        let lun = "AttachVolume.Attach failed for volume \\\"pv-x\\\" : rpc error: code = Internal desc = no free lun found";
        let text = String::from("kind: List\nitems:\n")
            + &event(
                "a",
                "FailedAttachVolume",
                lun,
                "attachdetach-controller",
                ", count: 4",
            )
            + &event(
                "b",
                "FailedAttachVolume",
                "timed out waiting for external-attacher",
                "attachdetach-controller",
                "",
            )
            + &event(
                "c",
                "Evicted",
                "The node was low on resource: memory.",
                "kubelet",
                "",
            )
            + &event(
                "d",
                "Evicted",
                "evicted by the taint manager",
                "taint-eviction-controller",
                "",
            )
            + &event(
                "e",
                "BackOff",
                "Back-off restarting failed container",
                "kubelet",
                "",
            )
            + &event(
                "f",
                "Evicted",
                "The node was low on resource: ephemeral-storage.",
                "kubelet",
                ", series: {count: 7, lastObservedTime: \"2026-05-26T09:00:00.000000Z\"}",
            );
        let state = parse("s.yaml", &text).unwrap();
        let got: Vec<(&str, Incident, i64, u64)> = state
            .events
            .values()
            .map(|e| (e.name.as_str(), e.incident, e.count, e.last_seen_ms))
            .collect();
        let t = |s: &str| {
            s.parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
                .as_millisecond() as u64
        };
        assert_eq!(
            got,
            [
                ("a", Incident::LunCap, 4, t("2026-05-26T08:00:00Z")),
                ("c", Incident::KubeletEviction, 1, t("2026-05-26T08:00:00Z")),
                ("f", Incident::KubeletEviction, 7, t("2026-05-26T09:00:00Z")),
            ]
        );
        assert!(state.events.values().all(|e| e.pod.as_deref() == Some("db-0")));
    }
}
