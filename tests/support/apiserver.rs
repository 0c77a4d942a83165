//! A stand-in kube-apiserver: list and watch over HTTP for the kinds headroom reads.
//!
//! Speaks the wire format the real one does: `GET <collection>` returns a typed list with
//! `metadata.resourceVersion`; `?watch=true&resourceVersion=N` streams newline-delimited
//! `{"type": ADDED|MODIFIED|DELETED|ERROR, "object": …}` events after N, and answers an expired
//! resourceVersion with an `ERROR` event carrying a 410 `Status`, as etcd compaction does.
//! Tests drive it with `apply`, `delete`, `expire_watches` and `hold`.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::{Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Collection path, list kind, and API version for each kind served.
const COLLECTIONS: &[(&str, &str, &str, &str)] = &[
    ("Node", "/api/v1/nodes", "NodeList", "v1"),
    ("Event", "/api/v1/events", "EventList", "v1"),
    (
        "PodDisruptionBudget",
        "/apis/policy/v1/poddisruptionbudgets",
        "PodDisruptionBudgetList",
        "policy/v1",
    ),
    ("Pod", "/api/v1/pods", "PodList", "v1"),
    (
        "PersistentVolume",
        "/api/v1/persistentvolumes",
        "PersistentVolumeList",
        "v1",
    ),
    (
        "PersistentVolumeClaim",
        "/api/v1/persistentvolumeclaims",
        "PersistentVolumeClaimList",
        "v1",
    ),
    (
        "StorageClass",
        "/apis/storage.k8s.io/v1/storageclasses",
        "StorageClassList",
        "storage.k8s.io/v1",
    ),
    (
        "CSINode",
        "/apis/storage.k8s.io/v1/csinodes",
        "CSINodeList",
        "storage.k8s.io/v1",
    ),
    (
        "VolumeAttachment",
        "/apis/storage.k8s.io/v1/volumeattachments",
        "VolumeAttachmentList",
        "storage.k8s.io/v1",
    ),
];

#[derive(Clone, Debug)]
enum Feed {
    Event {
        path: &'static str,
        rv: u64,
        kind: &'static str,
        object: Value,
    },
    Expire,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// path → key → object
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Watches asking for a resourceVersion at or below this get 410 Gone.
    compacted: u64,
    /// Events kept for watches that resume from an older resourceVersion.
    log: Vec<(&'static str, u64, &'static str, Value)>,
    held: HashSet<&'static str>,
    requests: Vec<String>,
    bindings: Vec<Value>,
    /// Objects of kinds not listed/watched above (Leases, Events): full path → object.
    others: BTreeMap<String, Value>,
    protected: HashSet<String>,
    node_deletes: Vec<String>,
    /// Evicted pods come back on another node (a controller and the scheduler at work).
    place_evicted: bool,
}

/// A running stand-in API server.
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
    feed: broadcast::Sender<Feed>,
    released: Arc<tokio::sync::Notify>,
    pub addr: SocketAddr,
}

fn collection_of(kind: &str) -> &'static (&'static str, &'static str, &'static str, &'static str) {
    COLLECTIONS
        .iter()
        .find(|c| c.0 == kind)
        .unwrap_or_else(|| panic!("stand-in serves no {kind}"))
}

fn key_of(object: &Value) -> String {
    let m = &object["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

impl ApiServer {
    pub async fn start() -> Self {
        let (feed, _) = broadcast::channel(4096);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ApiServer {
            store: Arc::default(),
            feed,
            released: Arc::new(tokio::sync::Notify::new()),
            addr,
        };
        let app = Router::new().fallback(handle).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client pointed at this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: u\n  user: {{token: test}}\ncontexts:\n- name: c\n  context: {{cluster: stand-in, user: u}}\n\
             current-context: c\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or replaces an object (ADDED or MODIFIED to watchers).
    pub fn apply(&self, mut object: Value) {
        let kind = object["kind"].as_str().unwrap().to_owned();
        let (_, path, _, _) = collection_of(&kind);
        let mut store = self.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let existed = store
            .objects
            .entry(path)
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let event = if existed { "MODIFIED" } else { "ADDED" };
        store.log.push((path, rv, event, object.clone()));
        let _ = self.feed.send(Feed::Event {
            path,
            rv,
            kind: event,
            object,
        });
    }

    /// Deletes an object (DELETED to watchers).
    pub fn delete(&self, object: &Value) {
        let (_, path, _, _) = collection_of(object["kind"].as_str().unwrap());
        let mut store = self.store.lock().unwrap();
        let Some(mut old) = store.objects.entry(path).or_default().remove(&key_of(object)) else {
            return;
        };
        store.rv += 1;
        let rv = store.rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.log.push((path, rv, "DELETED", old.clone()));
        let _ = self.feed.send(Feed::Event {
            path,
            rv,
            kind: "DELETED",
            object: old,
        });
    }

    /// Deletes an object with no event, as if it went while watchers were disconnected.
    pub fn delete_silently(&self, object: &Value) {
        let (_, path, _, _) = collection_of(object["kind"].as_str().unwrap());
        let mut store = self.store.lock().unwrap();
        store.objects.entry(path).or_default().remove(&key_of(object));
        store.rv += 1;
    }

    /// Compacts history and ends every open watch with 410 Gone, forcing a relist.
    pub fn expire_watches(&self) {
        let mut store = self.store.lock().unwrap();
        store.compacted = store.rv;
        store.log.clear();
        let _ = self.feed.send(Feed::Expire);
    }

    /// Lists of `kind` wait until `release` is called.
    pub fn hold(&self, kind: &str) {
        self.store.lock().unwrap().held.insert(collection_of(kind).1);
    }

    pub fn release(&self) {
        self.store.lock().unwrap().held.clear();
        self.released.notify_waiters();
    }

    /// Binding bodies posted so far.
    pub fn bindings(&self) -> Vec<Value> {
        self.store.lock().unwrap().bindings.clone()
    }

    /// Request lines seen so far ("GET /api/v1/nodes?…").
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }
}

async fn handle(
    State(server): State<ApiServer>,
    Query(query): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    server
        .store
        .lock()
        .unwrap()
        .requests
        .push(format!("{} {}", req.method(), req.uri()));
    if req.method() == axum::http::Method::POST && path.ends_with("/binding") {
        return bind(server, &path, req).await;
    }
    if let Some((collection, name)) = cluster_write(&path, &req) {
        let (collection, name) = (collection, name.to_owned());
        let delete = req.method() == axum::http::Method::DELETE;
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        return cluster_write_apply(&server, delete, collection, &name, body.to_vec());
    }
    if req.method() == axum::http::Method::POST && path.ends_with("/eviction") {
        return evict(&server, &path);
    }
    if !COLLECTIONS.iter().any(|c| c.1 == path)
        && (path.contains("/namespaces/") || req.method() != axum::http::Method::GET)
    {
        return generic(server, &path, req).await;
    }
    let Some(&(_, collection, list_kind, api_version)) = COLLECTIONS.iter().find(|c| c.1 == path) else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find {path}"),
        );
    };
    if req.method() != axum::http::Method::GET {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read-only stand-in",
        );
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return watch(server, collection, since);
    }
    loop {
        let notified = server.released.notified();
        if !server.store.lock().unwrap().held.contains(collection) {
            break;
        }
        notified.await;
    }
    let store = server.store.lock().unwrap();
    // The one field selector headroom uses: pods on a node.
    let on_node = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("spec.nodeName="))
        .map(str::to_owned);
    // And the one label selector: `key=value`.
    let label = query
        .get("labelSelector")
        .and_then(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let on = |o: &&Value| {
        on_node.as_deref().is_none_or(|n| o["spec"]["nodeName"] == n)
            && label
                .as_ref()
                .is_none_or(|(k, v)| o["metadata"]["labels"][k.as_str()] == v.as_str())
    };
    // Pages as the real one: `limit` items in key order, and a `continue` token naming the
    // last key, given back to ask for the next page (clients page lists of 150,000 pods).
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = query.get("continue").cloned().unwrap_or_default();
    let mut matching = store
        .objects
        .get(collection)
        .into_iter()
        .flat_map(|m| m.range::<String, _>((std::ops::Bound::Excluded(&after), std::ops::Bound::Unbounded)))
        .filter(|(_, o)| on(o));
    let items: Vec<(&String, &Value)> = matching.by_ref().take(limit).collect();
    let mut metadata = json!({"resourceVersion": store.rv.to_string()});
    if let (Some((last, _)), Some(_)) = (items.last(), matching.next()) {
        metadata["continue"] = json!(last);
    }
    let items: Vec<&Value> = items.into_iter().map(|(_, o)| o).collect();
    axum::Json(json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": items}))
        .into_response()
}

/// Create (POST to a collection), get, and replace (PUT, with resourceVersion checked as the
/// API server does: a stale one is a 409 Conflict) for any other namespaced object.
async fn generic(server: ApiServer, path: &str, req: Request) -> Response {
    let method = req.method().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let mut store = server.store.lock().unwrap();
    match method {
        axum::http::Method::GET => match store.others.get(path) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => status_response(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found")),
        },
        axum::http::Method::POST => {
            let mut object: Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = object["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    let prefix = object["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("obj-")
                        .to_owned();
                    format!("{prefix}{}", store.rv + 1)
                });
            let full = format!("{path}/{name}");
            if store.others.contains_key(&full) {
                return status_response(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{name} already exists"),
                );
            }
            store.rv += 1;
            object["metadata"]["name"] = json!(name);
            object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
            store.others.insert(full, object.clone());
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        axum::http::Method::PUT => {
            let mut object: Value = serde_json::from_slice(&body).unwrap_or_default();
            let current = store
                .others
                .get(path)
                .map(|o| o["metadata"]["resourceVersion"].clone());
            match current {
                None => status_response(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found")),
                Some(rv) if object["metadata"]["resourceVersion"] != rv => status_response(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                ),
                Some(_) => {
                    store.rv += 1;
                    object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
                    store.others.insert(path.to_owned(), object.clone());
                    axum::Json(object).into_response()
                }
            }
        }
        // A JSON merge patch (RFC 7386), as kube's Event recorder sends for a series.
        axum::http::Method::PATCH => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            let Some(current) = store.others.get(path).cloned() else {
                return status_response(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found"));
            };
            let mut object = current;
            merge(&mut object, &patch);
            store.rv += 1;
            object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
            store.others.insert(path.to_owned(), object.clone());
            axum::Json(object).into_response()
        }
        _ => status_response(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", path),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Objects created through the generic store whose path starts with `prefix`.
impl ApiServer {
    pub fn objects_under(&self, prefix: &str) -> Vec<Value> {
        self.store
            .lock()
            .unwrap()
            .others
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The cluster-scoped collections that take PATCH (merge) and DELETE here.
const WRITABLE: [&str; 2] = ["/api/v1/nodes", "/apis/storage.k8s.io/v1/volumeattachments"];

/// PATCH (merge) or DELETE of a Node or a VolumeAttachment: its collection and name.
fn cluster_write<'a>(path: &'a str, req: &Request) -> Option<(&'static str, &'a str)> {
    let write = req.method() == axum::http::Method::PATCH || req.method() == axum::http::Method::DELETE;
    WRITABLE.iter().find_map(|collection| {
        let name = path.strip_prefix(collection)?.strip_prefix('/')?;
        (write && !name.contains('/')).then_some((*collection, name))
    })
}

/// Applies a merge PATCH or a DELETE as the API server does with finalizers: a DELETE of an
/// object that has finalizers only sets its deletionTimestamp; it goes once a PATCH leaves it
/// with none.
fn cluster_write_apply(
    server: &ApiServer,
    delete: bool,
    collection: &str,
    name: &str,
    body: Vec<u8>,
) -> Response {
    let current = server
        .store
        .lock()
        .unwrap()
        .objects
        .get(collection)
        .and_then(|m| m.get(&format!("/{name}")).cloned());
    let Some(mut object) = current else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("\"{name}\" not found"),
        );
    };
    let finalized = |o: &Value| {
        o["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
    };
    if delete {
        if finalized(&object) {
            server.delete(&object);
            if collection == "/api/v1/nodes" {
                server.store.lock().unwrap().node_deletes.push(name.to_owned());
            }
            return axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                .into_response();
        }
        object["metadata"]["deletionTimestamp"] = json!("2026-06-05T09:12:00Z");
        server.apply(object.clone());
        return axum::Json(object).into_response();
    }
    let patch: Value = serde_json::from_slice(&body).unwrap();
    json_patch::merge(&mut object, &patch);
    if object["metadata"].get("deletionTimestamp").is_some() && finalized(&object) {
        server.delete(&object);
    } else {
        server.apply(object.clone());
    }
    axum::Json(object).into_response()
}

/// A copy of a pod or a VolumeAttachment named `<name>-r`, on `node`.
fn moved_to(object: &Value, node: &str) -> Value {
    let mut moved = object.clone();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    moved["metadata"]["name"] = json!(format!("{name}-r"));
    moved["spec"]["nodeName"] = json!(node);
    moved
}

/// `POST …/pods/{name}/eviction`: 429 for pods a "PDB" protects, else the pod is deleted.
fn evict(server: &ApiServer, path: &str) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "eviction"] = parts[..] else {
        return status_response(StatusCode::NOT_FOUND, "NotFound", path);
    };
    if server
        .store
        .lock()
        .unwrap()
        .protected
        .contains(&format!("{ns}/{name}"))
    {
        return status_response(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
    }
    let pod = server
        .store
        .lock()
        .unwrap()
        .objects
        .get("/api/v1/pods")
        .and_then(|m| m.get(&format!("{ns}/{name}")).cloned());
    match pod {
        Some(pod) => {
            server.delete(&pod);
            if server.store.lock().unwrap().place_evicted {
                server.place_again(&pod);
            }
            (
                StatusCode::CREATED,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
            )
                .into_response()
        }
        None => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        ),
    }
}

impl ApiServer {
    /// From now on an evicted pod comes back at once as `<name>-r` on the schedulable node
    /// with the fewest pods, its block volumes attached there: what its controller and the
    /// scheduler would do.
    pub fn place_evicted_pods(&self) {
        self.store.lock().unwrap().place_evicted = true;
    }

    /// `f` of the objects of `kind` (key → object), under the store's lock.
    fn collection<T>(&self, kind: &str, f: impl FnOnce(Option<&BTreeMap<String, Value>>) -> T) -> T {
        let (_, path, _, _) = collection_of(kind);
        f(self.store.lock().unwrap().objects.get(path))
    }

    /// Every object of `kind`.
    pub fn all(&self, kind: &str) -> Vec<Value> {
        self.collection(kind, |m| {
            m.map(|m| m.values().cloned().collect()).unwrap_or_default()
        })
    }

    fn place_again(&self, pod: &Value) {
        let from = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
        let pods = self.all("Pod");
        let on = |node: &str| pods.iter().filter(|p| p["spec"]["nodeName"] == node).count();
        let target = self
            .all("Node")
            .into_iter()
            .filter_map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .map(str::to_owned)
                    .map(|name| (name, n))
            })
            .filter(|(name, n)| *name != from && n["spec"]["unschedulable"] != true)
            .min_by_key(|(name, _)| on(name))
            .map(|(name, _)| name);
        let Some(target) = target else { return };
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() else {
                continue;
            };
            let Some(pv) = self
                .get("PersistentVolumeClaim", &format!("{ns}/{claim}"))
                .and_then(|c| c["spec"]["volumeName"].as_str().map(str::to_owned))
            else {
                continue;
            };
            for va in self.all("VolumeAttachment") {
                if va["spec"]["source"]["persistentVolumeName"] == pv.as_str()
                    && va["spec"]["nodeName"] == from.as_str()
                {
                    self.delete(&va);
                    // A fresh attach on the new node: attached, whatever failed on the old one.
                    let mut attached = moved_to(&va, &target);
                    attached["status"] = json!({"attached": true});
                    self.apply(attached);
                }
            }
        }
        self.apply(moved_to(pod, &target));
    }

    /// Evictions of `namespace/name` are refused with 429, as a PodDisruptionBudget would.
    pub fn protect(&self, pod: &str) {
        self.store.lock().unwrap().protected.insert(pod.to_owned());
    }

    /// Nodes deleted through the API.
    pub fn node_deletes(&self) -> Vec<String> {
        self.store.lock().unwrap().node_deletes.clone()
    }

    /// The current object of `kind` named `key` (`namespace/name`, or `/name` when cluster-scoped).
    pub fn get(&self, kind: &str, key: &str) -> Option<Value> {
        self.collection(kind, |m| m.and_then(|m| m.get(key).cloned()))
    }
}

/// `POST /api/v1/namespaces/{ns}/pods/{name}/binding`: sets the pod's nodeName, as the
/// API server does, and records the Binding body for the test to inspect.
async fn bind(server: ApiServer, path: &str, req: Request) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "binding"] = parts[..] else {
        return status_response(StatusCode::NOT_FOUND, "NotFound", path);
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
    let binding: Value = serde_json::from_slice(&body).unwrap();
    server.store.lock().unwrap().bindings.push(binding.clone());
    let pod = server
        .store
        .lock()
        .unwrap()
        .objects
        .get("/api/v1/pods")
        .and_then(|m| m.get(&format!("{ns}/{name}")).cloned());
    let Some(mut pod) = pod else {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        );
    };
    if pod["spec"]["nodeName"].is_string() {
        return status_response(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("pod {name} is already assigned to a node"),
        );
    }
    pod["spec"]["nodeName"] = binding["target"]["name"].clone();
    server.apply(pod);
    (
        StatusCode::CREATED,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})),
    )
        .into_response()
}

fn watch(server: ApiServer, collection: &'static str, since: u64) -> Response {
    let mut rx = server.feed.subscribe();
    let (backlog, expired) = {
        let store = server.store.lock().unwrap();
        let backlog: Vec<String> = store
            .log
            .iter()
            .filter(|(p, rv, _, _)| *p == collection && *rv > since)
            .map(|(_, _, kind, object)| line(kind, object))
            .collect();
        (backlog, since < store.compacted)
    };
    let stream = async_stream(move |tx: tokio::sync::mpsc::Sender<String>| async move {
        if expired {
            let _ = tx.send(gone()).await;
            return;
        }
        for l in backlog {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok(Feed::Event {
                    path,
                    rv,
                    kind,
                    object,
                }) if path == collection && rv > since => {
                    if tx.send(line(kind, &object)).await.is_err() {
                        return;
                    }
                }
                Ok(Feed::Event { .. }) => {}
                Ok(Feed::Expire) | Err(_) => {
                    let _ = tx.send(gone()).await;
                    return;
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>)))
        .unwrap()
}

fn line(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

fn gone() -> String {
    line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

/// A stream fed by a task through a channel (keeps the watch loop readable).
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = String>
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<String>) -> impl futures::Stream<Item = String> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
