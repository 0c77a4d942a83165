//! Hardening: every parser of outside input, fed generated and mutated documents, answers with a
//! value or a clear error and never panics — AdmissionReview (/validate, /mutate), ExtenderArgs
//! (/extender/*), snapshots, configs and Proxmox VE answers.
//!
//! Inputs come three ways: a real document with one node replaced by arbitrary JSON or removed
//! (so the parser gets past the envelope and meets a wrong type deep inside), the real document's
//! bytes flipped and truncated, and arbitrary JSON built from the keys the parsers look for.
//! Cases per property: `PROPTEST_CASES` (default 256). The long run in BENCHMARKS.md is
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz`.

mod support;

use std::sync::{Arc, LazyLock};

use headroom::{config::Config, proxmox, source::file};
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{app::Harness, *};

/// Words the parsers look for, as keys and as string values.
const WORDS: &[&str] = &[
    "kind",
    "apiVersion",
    "request",
    "response",
    "uid",
    "object",
    "oldObject",
    "operation",
    "CREATE",
    "UPDATE",
    "dryRun",
    "namespace",
    "name",
    "metadata",
    "spec",
    "status",
    "containers",
    "initContainers",
    "volumes",
    "persistentVolumeClaim",
    "claimName",
    "ephemeral",
    "resources",
    "requests",
    "limits",
    "memory",
    "cpu",
    "storageClassName",
    "volumeName",
    "nodeName",
    "Pod",
    "PersistentVolumeClaim",
    "Nodes",
    "NodeNames",
    "items",
    "PodName",
    "PodNamespace",
    "PodUID",
    "Node",
    "List",
    "allocatable",
    "capacity",
    "conditions",
    "Ready",
    "True",
    "taints",
    "effect",
    "NoSchedule",
    "drivers",
    "count",
    "csi",
    "driver",
    "volumeHandle",
    "attacher",
    "source",
    "persistentVolumeName",
    "attached",
    "phase",
    "Pending",
    "Bound",
    "data",
    "message",
    "errors",
    "vmid",
    "type",
    "qemu",
    "tags",
    "template",
    "lock",
    "maxmem",
    "maxcpu",
    "scsi1",
    "1Gi",
    "100m",
    "-1",
    "1e400",
    "csi.proxmox.sinextra.dev",
    "",
    "\u{0}",
    "é",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON, at most 4 levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `doc`, the root included.
fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `doc` with the `pick`-th node replaced by `with`, or removed when `with` is None.
fn splice(doc: &Value, pick: usize, with: Option<Value>) -> Value {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let target = &all[pick % all.len()];
    let mut out = doc.clone();
    match (with, target.rsplit_once('/')) {
        (Some(v), _) => *out.pointer_mut(target).expect("a pointer of this document") = v,
        (None, Some((parent, key))) => match out.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.remove(&key.replace("~1", "/").replace("~0", "~"));
            }
            Some(Value::Array(a)) => {
                a.remove(key.parse::<usize>().expect("an index"));
            }
            _ => {}
        },
        (None, None) => out = Value::Null,
    }
    out
}

/// `bytes` with some bytes overwritten, then cut at `cut` (when it is inside).
fn mangle(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for (at, b) in flips {
        let n = bytes.len();
        bytes[at % n] = *b;
    }
    bytes.truncate(cut);
    bytes
}

/// A document derived from `doc` three ways (see the module comment), as bytes.
fn derived(doc: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = doc.to_string().into_bytes();
    let len = text.len();
    prop_oneof![
        3 => (any::<usize>(), prop::option::weighted(0.8, json_value()))
            .prop_map(move |(pick, with)| splice(&doc, pick, with).to_string().into_bytes()),
        1 => (prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), 0..len + 1)
            .prop_map(move |(flips, cut)| mangle(text.clone(), &flips, cut)),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// A small snapshot with one object of every kind (the seed cluster's 150 objects make each
/// case 50× slower and reach no other code).
fn small_snapshot() -> Value {
    let mut items = cluster(&[2, 1]);
    items.extend(bound_claim("apps", "data-db-0", "proxmox-lvm"));
    items.push(unbound_claim("apps", "data-db-1", Some("proxmox-lvm")));
    items.push(pod("apps", "db-0", Some("n1"), &["data-db-0"], "1Gi"));
    list(items)
}

/// One headroom for every case: a cluster with room on one node and none on the other.
static HEADROOM: LazyLock<(tokio::runtime::Runtime, Arc<Harness>)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut items = cluster(&[3, 24]);
    items.extend(bound_claim("vaultwarden", "data-vaultwarden-0", "proxmox-lvm"));
    let harness = runtime.block_on(async { Harness::new(items, Config::default()) });
    (runtime, Arc::new(harness))
});

/// Posts `body` to `path`; the answer must be 200 with a JSON body, or 400 naming the problem.
fn answers_cleanly(path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let (runtime, harness) = &*HEADROOM;
    let (status, answer) = runtime.block_on(harness.post(path, body, "application/json"));
    match status {
        // A HostPriorityList is an array; every other answer an object.
        200 => prop_assert!(
            answer.is_object() || answer.is_array(),
            "{path}: 200 without a JSON answer: {answer}"
        ),
        400 => {
            let error = answer["error"].as_str().unwrap_or_default();
            prop_assert!(!error.is_empty(), "{path}: 400 without an error: {answer}");
        }
        other => prop_assert!(false, "{path}: status {other}: {answer}"),
    }
    Ok(())
}

proptest! {
    #[test]
    fn admission_reviews(
        route in prop::sample::select(&["/validate", "/mutate"][..]),
        body in prop_oneof![derived(admission_fixture("pod-create.json")), derived(admission_fixture("pvc-create.json"))],
    ) {
        answers_cleanly(route, body)?;
    }

    #[test]
    fn extender_args(
        route in prop::sample::select(&["/extender/filter", "/extender/prioritize"][..]),
        body in derived(json!({
            "Pod": admission_fixture("pod-create.json")["request"]["object"],
            "Nodes": {"metadata": {}, "items": [node("n1"), node("n2")]},
            "NodeNames": ["n1", "n2", "n9"],
        })),
    ) {
        answers_cleanly(route, body)?;
    }

    #[test]
    fn extender_binding_args(
        body in derived(json!({"PodName": "vaultwarden-0", "PodNamespace": "vaultwarden", "PodUID": "u1", "Node": "n1"})),
    ) {
        answers_cleanly("/extender/bind", body)?;
    }

    #[test]
    fn snapshots(body in derived(small_snapshot()), yaml in any::<bool>()) {
        // The same document as YAML goes through the YAML reader (JSON is YAML, but not the reverse).
        let text = String::from_utf8_lossy(&body).into_owned();
        let (name, text) = match (yaml, serde_json::from_str::<Value>(&text)) {
            (true, Ok(v)) => ("fuzz.yaml", serde_saphyr::to_string(&v).unwrap_or(text)),
            _ => ("fuzz.json", text),
        };
        if let Err(e) = file::parse(name, &text) {
            prop_assert!(e.to_string().starts_with(name), "{e}");
        }
    }

    #[test]
    fn configs(body in derived(json!({
        "softCap": 24, "enforcement": "deny", "excludedNamespaces": ["kube-system"],
        "triggers": {"freeBlockSlots": {"below": 4, "for": "0s"}},
        "scaleDown": {"for": "720h", "action": "shutdown"},
        "proxmox": {"url": "https://pve:8006", "tokenFile": "/t", "hosts": [{"name": "pve", "template": 2000, "storage": "local-lvm"}],
                    "vm": {"cores": 8, "memoryMiB": 32768, "vmidRange": [207, 299]}},
    }))) {
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Err(e) = Config::parse("fuzz.yaml", &text) {
            prop_assert!(e.to_string().contains("fuzz.yaml"), "{e}");
        }
    }

    #[test]
    fn proxmox_answers(code in 100u16..600, body in json_value(), resources in derived(json!([
        {"type": "qemu", "vmid": 206, "name": "k8s-node6", "node": "pve", "status": "running",
         "tags": "headroom;k8s", "template": 0, "maxmem": 34359738368u64, "maxcpu": 8},
        {"type": "qemu", "vmid": "2000", "name": "tpl", "node": "pve", "template": 1, "lock": ""},
        {"type": "lxc", "vmid": 300},
    ]))) {
        let status = StatusCode::from_u16(code).unwrap();
        match proxmox::client::decode("GET", "/cluster/resources", status, body.clone()) {
            Ok(_) => prop_assert!(status.is_success()),
            Err(e) => prop_assert!(!status.is_success() && !e.to_string().is_empty()),
        }
        if let Ok(data) = serde_json::from_slice::<Value>(&resources) {
            match proxmox::inventory::parse_vms(&data) {
                Ok(vms) => prop_assert!(vms.len() <= data.as_array().map_or(0, Vec::len)),
                Err(e) => prop_assert!(!data.is_array() && !e.to_string().is_empty()),
            }
        }
        if let Value::Object(config) = &body {
            for (key, name) in proxmox::inventory::csi_disks(config) {
                prop_assert!(key.starts_with("scsi") && name.contains("-pvc-"));
            }
        }
        if let Value::String(text) = &body {
            let _ = proxmox::tls::parse_fingerprint(text);
        }
    }
}
