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
                    objects.extend(decode(file, Position::Item(i), Item::Tree(item))?);
                }
            }
            other => objects.extend(decode(file, Position::Document(d), Item::Tree(other))?),
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
            let Doc {
                file, state, failure, ..
            } = &mut *self.0;
            let file: &str = file;
            // This thread reads the items' text and applies what comes back, in order; batches
            // decode on threads of their own meanwhile (decoding is most of the work).
            std::thread::scope(|scope| {
                let mut in_flight = std::collections::VecDeque::new();
                let mut apply_oldest = |in_flight: &mut std::collections::VecDeque<
                    std::thread::ScopedJoinHandle<'_, Result<Vec<Object>, SnapshotError>>,
                >| {
                    let Some(decoding) = in_flight.pop_front() else {
                        return Ok(());
                    };
                    // A panic while decoding is a bug, not bad input: let it surface.
                    match decoding
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    {
                        Ok(objects) => {
                            objects.into_iter().for_each(|o| drop(state.apply(o)));
                            Ok(())
                        }
                        Err(e) => {
                            **failure = Some(e);
                            Err(serde::de::Error::custom("object rejected"))
                        }
                    }
                };
                let mut batch: Vec<&'de str> = Vec::with_capacity(BATCH);
                let mut first = 0usize;
                loop {
                    let item = seq.next_element::<&'de serde_json::value::RawValue>()?;
                    let done = item.is_none();
                    batch.extend(item.map(|i| i.get()));
                    if batch.len() == BATCH || (done && !batch.is_empty()) {
                        let items = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        let at = first;
                        first += items.len();
                        in_flight.push_back(scope.spawn(move || decode_all(file, at, &items)));
                        if in_flight.len() > IN_FLIGHT {
                            apply_oldest(&mut in_flight)?;
                        }
                    }
                    if done {
                        break;
                    }
                }
                while !in_flight.is_empty() {
                    apply_oldest(&mut in_flight)?;
                }
                Ok(())
            })
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
        if let Some(object) = decode(file, Position::Document(0), Item::Tree(Value::Object(rest)))? {
            state.apply(object);
        }
    }
    Ok(state)
}

/// Items of a JSON List decoded by one thread at a time.
const BATCH: usize = 2048;

/// Batches decoding at once while the reading thread reads and applies: two, for two cores.
const IN_FLIGHT: usize = 2;

/// Decodes `items` (JSON text, the first at position `first` of the List), in their order.
fn decode_all(file: &str, first: usize, items: &[&str]) -> Result<Vec<Object>, SnapshotError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, text) in items.iter().enumerate() {
        out.extend(decode(file, Position::Item(first + i), Item::Text(text))?);
    }
    Ok(out)
}

/// Where an object is in its file, as errors name it.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// In a List's `items`.
    Item(usize),
    /// A document of its own (multi-document YAML, a single object).
    Document(usize),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Item(i) => write!(f, "items[{i}]"),
            Position::Document(d) => write!(f, "document {d}"),
        }
    }
}

/// One object of a snapshot: a parsed tree (YAML, a single object) or the JSON text of a
/// List's item, decoded straight into its type without a tree in between.
enum Item<'a> {
    Tree(Value),
    Text(&'a str),
}

/// What names an object in errors: its kind, name and namespace, read ahead of the rest.
#[derive(Default, serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<HeadMeta<'a>>,
}

#[derive(Default, serde::Deserialize)]
struct HeadMeta<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<std::borrow::Cow<'a, str>>,
}

/// Decodes one object; `Ok(None)` for kinds headroom does not read.
fn decode(file: &str, position: Position, item: Item<'_>) -> Result<Option<Object>, SnapshotError> {
    let fail = |object: String, reason: String| SnapshotError::Object {
        file: file.into(),
        object,
        reason,
    };
    let text_head;
    let (kind, name, namespace) = match &item {
        Item::Tree(Value::Object(map)) => {
            let meta = map.get("metadata");
            let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
            (
                map.get("kind").and_then(Value::as_str).unwrap_or_default(),
                field("name"),
                field("namespace"),
            )
        }
        Item::Text(text) if text.starts_with('{') => {
            text_head = serde_json::from_str::<Head>(text).unwrap_or_default();
            let meta = text_head.metadata.as_ref();
            (
                text_head.kind.as_deref().unwrap_or_default(),
                meta.and_then(|m| m.name.as_deref()),
                meta.and_then(|m| m.namespace.as_deref()),
            )
        }
        _ => return Err(fail(position.to_string(), "not an object".into())),
    };
    let name = name.unwrap_or("?");
    // Written only for an error: 150,000 of them cost a twentieth of the load.
    let described = || match namespace {
        Some(ns) => format!("{position} ({kind} {ns}/{name})"),
        None => format!("{position} ({kind} {name})"),
    };
    let kind = match kind {
        "Node" => Kind::Node,
        "CSINode" => Kind::CsiNode,
        "StorageClass" => Kind::StorageClass,
        "PersistentVolume" => Kind::PersistentVolume,
        "PersistentVolumeClaim" => Kind::PersistentVolumeClaim,
        "Pod" => Kind::Pod,
        "VolumeAttachment" => Kind::VolumeAttachment,
        "Event" => Kind::Event,
        "PodDisruptionBudget" => Kind::PodDisruptionBudget,
        "" => return Err(fail(described(), "has no `kind`".into())),
        _ => return Ok(None),
    };
    if name == "?" {
        return Err(fail(described(), "has no `metadata.name`".into()));
    }
    fn typed<K: Watched>(item: &Item<'_>) -> Result<Option<Object>, String> {
        let obj: K = match item {
            Item::Tree(value) => serde_path_to_error::deserialize(value),
            Item::Text(text) => crate::model::from_json_slice(text.as_bytes()),
        }
        .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
        obj.trim().map_err(|e| e.to_string())
    }
    use k8s_openapi::api::{core::v1 as core, storage::v1 as storage};
    let object = match kind {
        Kind::Node => typed::<core::Node>(&item),
        Kind::CsiNode => typed::<storage::CSINode>(&item),
        Kind::StorageClass => typed::<storage::StorageClass>(&item),
        Kind::PersistentVolume => typed::<core::PersistentVolume>(&item),
        Kind::PersistentVolumeClaim => typed::<core::PersistentVolumeClaim>(&item),
        Kind::Pod => typed::<core::Pod>(&item),
        Kind::VolumeAttachment => typed::<storage::VolumeAttachment>(&item),
        Kind::Event => typed::<core::Event>(&item),
        Kind::PodDisruptionBudget => typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&item),
    }
    .map_err(|reason| fail(described(), reason))?;
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
    fn a_long_list_decodes_in_batches_in_order_and_names_a_bad_item_by_its_place() {
        // More items than a few batches, ending mid-batch; a later duplicate replaces an earlier.
        let count = 3 * BATCH + 17;
        let item = |i: usize, memory: &str| {
            format!(
                r#"{{"kind":"Node","metadata":{{"name":"n{}"}},"status":{{"allocatable":{{"memory":"{memory}"}}}}}}"#,
                i % (count - 1)
            )
        };
        let items: Vec<String> = (0..count).map(|i| item(i, &format!("{}", i + 1))).collect();
        let list = format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","));
        let state = parse("big.json", &list).unwrap();
        assert_eq!(state.nodes.len(), count - 1);
        assert_eq!(
            state.nodes["n0"].memory_allocatable, count as i64,
            "the last of two wins"
        );
        assert_eq!(state.nodes["n5"].memory_allocatable, 6);

        let bad = 2 * BATCH + 3;
        let mut items = items;
        items[bad] = item(bad, "lots");
        let list = format!(r#"{{"kind":"List","items":[{}]}}"#, items.join(","));
        let err = parse("big.json", &list).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("big.json: items[{bad}] (Node n{bad})")),
            "{err}"
        );
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
