//! Test support: Kubernetes objects as the API server encodes them, and helpers to load them.
#![allow(dead_code)]

pub mod apiserver;
pub mod app;
pub mod fakepve;

use serde_json::{Value, json};

pub const BLOCK: &str = "csi.proxmox.sinextra.dev";
pub const NFS: &str = "nfs.csi.k8s.io";

pub fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"memory": "32Gi", "cpu": "8"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// Applies `f` to a JSON object and returns it (builder style).
pub fn with(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut v);
    v
}

pub fn csinode(name: &str, count: Option<i64>) -> Value {
    let mut driver = json!({"name": BLOCK, "nodeID": name});
    if let Some(c) = count {
        driver["allocatable"] = json!({"count": c});
    }
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": name},
        "spec": {"drivers": [driver, {"name": NFS, "nodeID": name}]}})
}

pub fn storage_class(name: &str, provisioner: &str, default: bool) -> Value {
    let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
        "provisioner": provisioner, "volumeBindingMode": "WaitForFirstConsumer"});
    if default {
        sc["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    sc
}

/// A bound claim `ns/name` of `class` and its PV (`pv-<name>`, handle `h-<name>`).
pub fn bound_claim(ns: &str, name: &str, class: &str) -> Vec<Value> {
    let driver = if class == "nfs" { NFS } else { BLOCK };
    vec![
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"storageClassName": class, "volumeName": format!("pv-{name}"), "accessModes": ["ReadWriteOnce"]},
            "status": {"phase": "Bound"}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("pv-{name}")},
            "spec": {"csi": {"driver": driver, "volumeHandle": format!("h-{name}")},
                     "claimRef": {"namespace": ns, "name": name}},
            "status": {"phase": "Bound"}}),
    ]
}

/// An unbound claim (`storageClassName` omitted when `class` is None).
pub fn unbound_claim(ns: &str, name: &str, class: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"]});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
        "spec": spec, "status": {"phase": "Pending"}})
}

pub fn attachment(name: &str, attacher: &str, node: &str, pv: &str, attached: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": name},
        "spec": {"attacher": attacher, "nodeName": node, "source": {"persistentVolumeName": pv}},
        "status": {"attached": attached}})
}

/// A running pod in `ns` mounting `claims`, on `node` when given, requesting `memory`.
pub fn pod(ns: &str, name: &str, node: Option<&str>, claims: &[&str], memory: &str) -> Value {
    let volumes: Vec<Value> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    // Owned by a ReplicaSet, as most pods are: a drain may move it.
    let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-rs"),
                        "uid": format!("uid-{name}"), "controller": true}]);
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "ownerReferences": owner},
        "spec": {"containers": [{"name": "app", "image": "app", "resources": {"requests": {"memory": memory}}}],
                 "volumes": volumes},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// A block class, an NFS class (the default) and nodes n1..nN, each with `counts[i]` block
/// volumes attached for pods running there (claims `n<i>-c<v>` in namespace `apps`), CSINode
/// count 28 (soft cap 24).
pub fn cluster(counts: &[usize]) -> Vec<Value> {
    let mut items = vec![
        storage_class("proxmox-lvm", BLOCK, false),
        storage_class("nfs", NFS, true),
    ];
    for (i, count) in counts.iter().enumerate() {
        let n = format!("n{}", i + 1);
        items.push(node(&n));
        items.push(csinode(&n, Some(28)));
        for v in 0..*count {
            let claim = format!("{n}-c{v}");
            items.extend(bound_claim("apps", &claim, "proxmox-lvm"));
            items.push(attachment(
                &format!("va-{claim}"),
                BLOCK,
                &n,
                &format!("pv-{claim}"),
                true,
            ));
            items.push(pod("apps", &format!("{claim}-pod"), Some(&n), &[&claim], "64Mi"));
        }
    }
    items
}

/// A kubectl `List` of `items`.
pub fn list(items: impl IntoIterator<Item = Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items.into_iter().collect::<Vec<_>>()})
}

/// A rustls client config trusting the CA in `ca` (PEM), offering `alpn`.
pub fn tls_client_config(ca: &std::path::Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    tls_client_config_as(ca, alpn, None)
}

/// A client certificate and its key, as files.
pub struct Identity<'a> {
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
}

/// A rustls client trusting only `ca`, presenting `identity` when the server asks for one.
pub fn tls_client_config_as(
    ca: &std::path::Path,
    alpn: &[&[u8]],
    identity: Option<Identity<'_>>,
) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("usable CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => config.with_no_client_auth(),
        Some(Identity { cert, key }) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("client certificate file")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            config.with_client_auth_cert(chain, key).expect("client identity")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Installs ring as the process's rustls provider (what `main` does), for plain clients.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client for what `headroom certs` wrote into `dir`: trusting `dir/ca.crt`, and
/// presenting `dir/STEM.crt` and `dir/STEM.key` when `stem` is given.
pub fn certs_client(dir: &std::path::Path, stem: Option<&str>, alpn: &[&[u8]]) -> reqwest::Client {
    let files = stem.map(|stem| (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key"))));
    let identity = files.as_ref().map(|(cert, key)| Identity { cert, key });
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_client_config_as(&dir.join("ca.crt"), alpn, identity))
        .build()
        .expect("client")
}

/// A reqwest client trusting only the CA in `ca`.
pub fn tls_client(ca: &std::path::Path, alpn: &[&[u8]]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_client_config(ca, alpn))
        .build()
        .expect("client")
}

/// A captured AdmissionReview from `tests/data/admission/` (`pod-create.json`, `pvc-create.json`).
pub fn admission_fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/admission/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Reads `items` through the snapshot decoder, exactly as a snapshot file would be.
pub fn state(items: impl IntoIterator<Item = Value>) -> headroom::index::ClusterState {
    headroom::source::file::parse("fixture", &list(items).to_string()).expect("fixture decodes")
}

/// Waits (up to 30 s) until `cond` holds: what a watch, a task or a process does happens
/// asynchronously; the condition itself is exact.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The planning ticks a `/metrics` text counts (`headroom_plan_ticks_total`; 0 before the
/// first): "the planner ran N ticks and did nothing" is proven by this counter, not a sleep.
pub fn plan_ticks(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("headroom_plan_ticks_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A TCP port free on loopback now (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Registers a Ready Node for every running worker VM fakepve shows (named `k8s-node…`, or
/// `spare-…` for hand-made spares), and its CSINode (the block driver with a count)
/// `csi_delay` later: what kubeadm join and proxmox-csi's node plugin do. Runs until aborted.
pub fn kubelets(
    api: apiserver::ApiServer,
    pve: &fakepve::FakePve,
    csi_delay: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    use headroom::proxmox::{
        client::{Auth, PveClient, Secret},
        tls::Trust,
    };
    let client = PveClient::new(
        &pve.url,
        &Trust::Fingerprint(pve.fingerprint.clone()),
        Auth::Token(Secret::new(pve.token.clone())),
    )
    .unwrap();
    tokio::spawn(async move {
        let mut joined = std::collections::BTreeSet::new();
        loop {
            if let Ok(Value::Array(vms)) = client.get("/cluster/resources", &[("type", "vm".into())]).await {
                for vm in vms {
                    let name = vm["name"].as_str().unwrap_or_default().to_owned();
                    if vm["status"] == "running"
                        && (name.starts_with("k8s-node") || name.starts_with("spare-"))
                        && joined.insert(name.clone())
                    {
                        api.apply(node(&name));
                        let api = api.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(csi_delay).await;
                            api.apply(csinode(&name, Some(28)));
                        });
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
}

/// The body of a GET of `url` (plain HTTP: the admin port, Prometheus).
pub async fn get_text(url: &str) -> reqwest::Result<String> {
    reqwest::get(url).await?.text().await
}
