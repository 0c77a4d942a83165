//! The scheduler extender: upstream wire encodings, both node modes, burst and spread.

mod support;

use std::collections::BTreeMap;

use headroom::{config::Config, shared_index::SharedIndex, source::live};
use serde_json::{Value, json};
use support::{app::Harness, *};

/// `kubernetes/kube-scheduler` `extender/v1/types_test.go`: ExtenderArgs as Go encodes it.
const UPSTREAM_ARGS: &str = r#"{"Pod":{"metadata":{"name":"podname","creationTimestamp":null},"spec":{"containers":null},"status":{}},"Nodes":{"metadata":{},"items":[{"metadata":{"name":"nodename","creationTimestamp":null},"spec":{},"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":0}},"nodeInfo":{"machineID":"","systemUUID":"","bootID":"","kernelVersion":"","osImage":"","containerRuntimeVersion":"","kubeletVersion":"","kubeProxyVersion":"","operatingSystem":"","architecture":""}}}]},"NodeNames":["node1"]}"#;
/// The same file's binding args.
const UPSTREAM_BIND: &str =
    r#"{"PodName":"mypodname","PodNamespace":"mypodnamespace","PodUID":"mypoduid","Node":"mynode"}"#;

/// A real pod as the scheduler sends it (from the captured pod), mounting `claims`.
fn sched_pod(name: &str, claims: &[&str]) -> Value {
    let review: Value = serde_json::from_str(include_str!("data/admission/pod-create.json")).unwrap();
    let mut p = review["request"]["object"].clone();
    p["metadata"]["name"] = json!(name);
    p["metadata"]["namespace"] = json!("apps");
    p["metadata"]["uid"] = json!(format!("uid-{name}"));
    p["spec"]["volumes"] = Value::Array(
        claims
            .iter()
            .map(|c| json!({"name": format!("v-{c}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect(),
    );
    p
}

/// `pod` as the API server stores it: a Pending Pod the index sees before it is scheduled.
fn pending(pod: &Value) -> Value {
    let mut p = pod.clone();
    p["kind"] = json!("Pod");
    p["apiVersion"] = json!("v1");
    p["status"] = json!({"phase": "Pending"});
    p
}

/// A HostPriorityList as (host, score) pairs.
fn scores_of(list: &Value) -> Vec<(String, i64)> {
    let entries = list.as_array().expect("a HostPriorityList is a bare array");
    entries
        .iter()
        .map(|e| {
            (
                e["Host"].as_str().unwrap().to_owned(),
                e["Score"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn names_args(pod: &Value, nodes: &[&str]) -> Value {
    json!({"Pod": pod, "Nodes": null, "NodeNames": nodes})
}

/// Full Node objects, as the scheduler sends them without nodeCacheCapable.
fn nodes_args(pod: &Value, nodes: &[&str]) -> Value {
    let items: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut v = node(n);
            v.as_object_mut().unwrap().remove("kind");
            v.as_object_mut().unwrap().remove("apiVersion");
            v["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": 10250}});
            v
        })
        .collect();
    json!({"Pod": pod, "Nodes": {"metadata": {}, "items": items}, "NodeNames": null})
}

#[tokio::test]
async fn upstream_encodings_parse_in_pascal_case_and_lowercased() {
    let h = Harness::new(cluster(&[1]), Config::default());
    for (name, args) in [
        ("PascalCase", UPSTREAM_ARGS.to_owned()),
        ("lowercased", UPSTREAM_ARGS.to_lowercase()),
    ] {
        let args: Value = serde_json::from_str(&args).unwrap();
        let r = h.ok("/extender/filter", &args).await;
        // NodeNames present: cache mode, and a pod without block claims passes untouched.
        assert_eq!(
            r,
            json!({"Nodes": null, "NodeNames": ["node1"], "FailedNodes": {}, "FailedAndUnresolvableNodes": {}, "Error": ""}),
            "{name}"
        );
        let r = h.ok("/extender/prioritize", &args).await;
        assert_eq!(r.as_array().unwrap().len(), 1, "{name}: only input nodes: {r}");
        assert_eq!(r[0]["Host"], "node1");
    }
    for bind in [UPSTREAM_BIND.to_owned(), UPSTREAM_BIND.to_lowercase()] {
        let r = h
            .ok("/extender/bind", &serde_json::from_str(&bind).unwrap())
            .await;
        // Parsed, and refused: headroom never filtered that pod, which does not exist.
        assert!(r["Error"].as_str().unwrap().starts_with("bind refused"), "{r}");
    }
}

#[tokio::test]
async fn filter_in_both_modes_keeps_the_input_mode() {
    let mut items = cluster(&[24, 10, 23]);
    items.push(unbound_claim("apps", "new-a", Some("proxmox-lvm")));
    items.push(unbound_claim("apps", "new-b", Some("proxmox-lvm")));
    let h = Harness::new(items, Config::default());
    let pod = sched_pod("db-0", &["new-a", "new-b"]);

    let r = h
        .ok("/extender/filter", &names_args(&pod, &["n1", "n2", "n3"]))
        .await;
    assert_eq!(r["NodeNames"], json!(["n2"]));
    assert_eq!(r["Nodes"], Value::Null);
    assert_eq!(r["Error"], "");
    assert_eq!(
        r["FailedNodes"]["n1"],
        "block-PVC soft cap: 24/24 on n1, pod needs 2 more"
    );
    assert_eq!(
        r["FailedNodes"]["n3"],
        "block-PVC soft cap: 23/24 on n3, pod needs 2 more"
    );

    let args = nodes_args(&pod, &["n1", "n2", "n3"]);
    let r = h.ok("/extender/filter", &args).await;
    assert_eq!(r["NodeNames"], Value::Null);
    assert_eq!(
        r["Nodes"]["items"],
        json!([args["Nodes"]["items"][1]]),
        "the input Node object, untouched"
    );
    assert_eq!(r["FailedNodes"].as_object().unwrap().len(), 2);

    // A claim already on n1 needs no new slot there.
    let r = h
        .ok(
            "/extender/filter",
            &names_args(&sched_pod("db-1", &["n1-c5"]), &["n1", "n3"]),
        )
        .await;
    assert_eq!(r["NodeNames"], json!(["n1", "n3"]));
    // A node headroom has not seen yet (just joined) cannot attach a new volume yet.
    let r = h.ok("/extender/filter", &names_args(&pod, &["n2", "n9"])).await;
    assert_eq!(r["NodeNames"], json!(["n2"]));
    assert_eq!(
        r["FailedNodes"]["n9"],
        "n9 is joining: not yet in headroom's view"
    );
    // Nor can one whose CSINode does not list the block driver with a count; a pod that needs
    // no new volume is welcome on both.
    let mut items = cluster(&[10]);
    items.extend([node("n2"), csinode("n2", None)]);
    items.push(unbound_claim("apps", "new-a", Some("proxmox-lvm")));
    let h = Harness::new(items, Config::default());
    let r = h
        .ok(
            "/extender/filter",
            &names_args(&sched_pod("db-0", &["new-a"]), &["n1", "n2", "n9"]),
        )
        .await;
    assert_eq!(r["NodeNames"], json!(["n1"]));
    assert!(
        r["FailedNodes"]["n2"]
            .as_str()
            .unwrap()
            .contains("does not list the block driver"),
        "{r}"
    );
    let r = h
        .ok(
            "/extender/filter",
            &names_args(&sched_pod("web", &[]), &["n1", "n2", "n9"]),
        )
        .await;
    assert_eq!(r["NodeNames"], json!(["n1", "n2", "n9"]));
    // And the extender never scores it above a node that can attach.
    let r = h
        .ok(
            "/extender/prioritize",
            &names_args(&sched_pod("db-0", &["new-a"]), &["n1", "n2"]),
        )
        .await;
    let score = |n: &str| {
        r.as_array().unwrap().iter().find(|e| e["Host"] == n).unwrap()["Score"]
            .as_i64()
            .unwrap()
    };
    assert!(score("n1") > score("n2"), "{r}");
}

#[tokio::test]
async fn slots_held_by_no_pod_are_unresolvable() {
    // n1: 24 attachments with no pods (detaching, orphaned): preemption frees nothing.
    let mut items = cluster(&[0, 24]);
    for v in 0..24 {
        let claim = format!("orphan{v}");
        items.extend(bound_claim("apps", &claim, "proxmox-lvm"));
        items.push(attachment(
            &format!("va-{claim}"),
            BLOCK,
            "n1",
            &format!("pv-{claim}"),
            true,
        ));
    }
    items.push(unbound_claim("apps", "new", Some("proxmox-lvm")));
    let h = Harness::new(items, Config::default());
    let r = h
        .ok(
            "/extender/filter",
            &names_args(&sched_pod("p", &["new"]), &["n1", "n2"]),
        )
        .await;
    assert_eq!(r["NodeNames"], json!([]));
    assert!(
        r["FailedAndUnresolvableNodes"]["n1"]
            .as_str()
            .unwrap()
            .contains("not freed by preemption"),
        "{r}"
    );
    assert!(
        r["FailedNodes"]["n2"].is_string(),
        "n2's volumes belong to pods preemption could evict: {r}"
    );
}

#[tokio::test]
async fn prioritize_prefers_free_slots_and_memory_and_stays_in_range() {
    let mut items = cluster(&[20, 4, 12]);
    items.push(unbound_claim("apps", "new", Some("proxmox-lvm")));
    let h = Harness::new(items, Config::default());
    let r = h
        .ok(
            "/extender/prioritize",
            &names_args(&sched_pod("p", &["new"]), &["n3", "n1", "n2"]),
        )
        .await;
    let scores: BTreeMap<String, i64> = scores_of(&r).into_iter().collect();
    assert_eq!(scores.len(), 3, "exactly the input nodes: {r}");
    assert!(scores.values().all(|s| (0..=10).contains(s)));
    assert_eq!(scores["n2"], 10);
    assert_eq!(scores["n1"], 0);
    assert!(scores["n3"] > 0 && scores["n3"] < 10, "{scores:?}");
}

/// filter → prioritize → take the top (ties broken by a fixed pseudo-random sequence, like the
/// scheduler's random tie-break) → bind, with no watch event in between.
async fn place(h: &Harness, pod: &Value, nodes: &[&str], rng: &mut u64) -> Option<String> {
    let f = h.ok("/extender/filter", &names_args(pod, nodes)).await;
    let feasible: Vec<String> = serde_json::from_value(f["NodeNames"].clone()).unwrap();
    if feasible.is_empty() {
        return None;
    }
    let feasible_refs: Vec<&str> = feasible.iter().map(String::as_str).collect();
    let p = h
        .ok("/extender/prioritize", &names_args(pod, &feasible_refs))
        .await;
    let scores = scores_of(&p);
    let top = scores.iter().map(|s| s.1).max().unwrap();
    let best: Vec<&String> = scores.iter().filter(|s| s.1 == top).map(|s| &s.0).collect();
    *rng = rng
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let chosen = best[(*rng >> 33) as usize % best.len()].clone();
    let bind = json!({"PodName": pod["metadata"]["name"], "PodNamespace": "apps", "PodUID": pod["metadata"]["uid"], "Node": chosen});
    assert_eq!(h.ok("/extender/bind", &bind).await, json!({"Error": ""}));
    Some(chosen)
}

fn block_volumes(h: &Harness) -> BTreeMap<String, i64> {
    let view = h.app.view();
    let reservations = h.app.reservations();
    let placement = headroom::decide::placement::Placement::new(&view, &reservations);
    view.nodes
        .iter()
        .map(|n| (n.name.to_string(), placement.block_volumes(n)))
        .collect()
}

#[tokio::test]
async fn a_burst_of_forty_pods_fills_every_slot_and_passes_no_soft_cap() {
    // Free under the soft cap: 4 + 2 + 1 + 0 + 9 = 16 slots for 40 pods.
    let counts = [20, 22, 23, 24, 15];
    let mut items = cluster(&counts);
    let pods: Vec<Value> = (0..40)
        .map(|i| sched_pod(&format!("burst-{i}"), &[&format!("burst-{i}")]))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        items.push(unbound_claim("apps", &format!("burst-{i}"), Some("proxmox-lvm")));
        items.push(pending(pod));
    }
    let h = Harness::new(items, Config::default());
    let nodes = ["n1", "n2", "n3", "n4", "n5"];
    let mut rng = 7;
    let mut placed = 0;
    for pod in &pods {
        placed += usize::from(place(&h, pod, &nodes, &mut rng).await.is_some());
    }
    assert_eq!(placed, 16, "every slot that existed is used, and no more");
    let after = block_volumes(&h);
    assert!(
        after.values().all(|v| *v == 24),
        "every node exactly at its soft cap: {after:?}"
    );
}

#[tokio::test]
async fn sixty_placements_on_the_seed_cluster_end_evenly_spread() {
    let mut items: Vec<Value> = {
        let seed: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.yaml"))
                .unwrap(),
        )
        .unwrap();
        seed["items"].as_array().unwrap().clone()
    };
    let h0 = Harness::new(items.clone(), Config::default());
    let before = block_volumes(&h0);
    let workers: Vec<String> = h0.app.view().schedulable().map(|n| n.name.to_string()).collect();
    let worker_refs: Vec<&str> = workers.iter().map(String::as_str).collect();
    // Pods bring generic ephemeral block volumes: the claim does not exist before the pod.
    items.push(storage_class("proxmox-lvm", BLOCK, false));
    let pods: Vec<Value> = (0..60)
        .map(|i| {
            let mut pod = sched_pod(&format!("spread-{i}"), &[]);
            pod["spec"]["volumes"] = json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
                "storageClassName": "proxmox-lvm", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]);
            pod
        })
        .collect();
    items.extend(pods.iter().map(pending));
    let h = Harness::new(items, Config::default());
    let mut rng = 42;
    for (i, pod) in pods.iter().enumerate() {
        assert!(
            place(&h, pod, &worker_refs, &mut rng).await.is_some(),
            "placement {i} found room"
        );
    }
    let after = block_volumes(&h);
    let added: i64 = workers.iter().map(|w| after[w] - before[w]).sum();
    assert_eq!(added, 60);
    let (min, max) = workers
        .iter()
        .map(|w| after[w])
        .fold((i64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    assert!(max - min <= 2, "spread {min}..{max}: {after:?}");
    assert!(max <= 24);
}

#[tokio::test]
async fn live_bind_creates_the_binding_and_holds_slots_until_the_watch_sees_the_pod() {
    let server = support::apiserver::ApiServer::start().await;
    let mut items = cluster(&[23, 23]);
    items.push(unbound_claim("apps", "new", Some("proxmox-lvm")));
    let db = sched_pod("db-0", &["new"]);
    items.push(pending(&db));
    for item in &items {
        server.apply(item.clone());
    }
    let index = SharedIndex::default();
    tokio::spawn(live::watch_all(server.client(), index.clone()));
    assert!(index.wait_synced(std::time::Duration::from_secs(20)).await);
    let h = Harness::on_index(index, Config::default(), Some(server.client()));

    let r = h.ok("/extender/filter", &names_args(&db, &["n1", "n2"])).await;
    assert_eq!(r["NodeNames"], json!(["n1", "n2"]));
    let r = h
        .ok(
            "/extender/bind",
            &json!({"PodName": "db-0", "PodNamespace": "apps", "PodUID": "uid-db-0", "Node": "n2"}),
        )
        .await;
    assert_eq!(r, json!({"Error": ""}));
    let binding = &server.bindings()[0];
    assert_eq!(
        binding["target"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "n2"})
    );
    assert_eq!(binding["metadata"]["name"], "db-0");
    assert_eq!(binding["metadata"]["uid"], "uid-db-0");

    // Before or after the watch catches up, n2 holds 24 and a second pod cannot go there.
    let r = h
        .ok(
            "/extender/filter",
            &names_args(&sched_pod("db-1", &["n1-c0", "new"]), &["n2"]),
        )
        .await;
    assert_eq!(r["NodeNames"], json!([]), "{r}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // Reading the reservations prunes bindings the watch now shows.
    while !h.app.reservations().is_empty() || !h.app.bindings.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binding was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(block_volumes(&h)["n2"], 24, "now counted from the watched pod");

    // A pod bound already is not bound again.
    let r = h
        .ok(
            "/extender/bind",
            &json!({"PodName": "db-0", "PodNamespace": "apps", "PodUID": "uid-db-0", "Node": "n1"}),
        )
        .await;
    assert!(r["Error"].as_str().unwrap().contains("bound already"), "{r}");
    // A bind the API server refuses is reported in Error: the pod went, and the watch has
    // not said so yet.
    let late = sched_pod("db-2", &[]);
    server.apply(pending(&late));
    while h
        .app
        .index
        .with_state(|s, _| !s.pods.contains_key(&("apps".into(), "db-2".into())))
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    h.ok("/extender/filter", &names_args(&late, &["n1"])).await;
    server.delete_silently(&pending(&late));
    let r = h
        .ok(
            "/extender/bind",
            &json!({"PodName": "db-2", "PodNamespace": "apps", "PodUID": "uid-db-2", "Node": "n1"}),
        )
        .await;
    assert!(r["Error"].as_str().unwrap().contains("not found"), "{r}");
}

#[tokio::test]
async fn bad_extender_requests_get_their_status_and_the_server_keeps_serving() {
    let h = Harness::new(cluster(&[1]), Config::default());
    let good = names_args(&sched_pod("p", &[]), &["n1"]);
    let huge = format!("{{\"Pod\": \"{}\"}}", "x".repeat(8 * 1024 * 1024));
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "truncated",
            good.to_string()[..40].to_owned(),
            "application/json",
            400,
            "malformed JSON",
        ),
        (
            "no pod",
            json!({"NodeNames": ["n1"]}).to_string(),
            "application/json",
            400,
            "Pod",
        ),
        (
            "no nodes",
            json!({"Pod": good["Pod"]}).to_string(),
            "application/json",
            400,
            "NodeNames",
        ),
        (
            "wrong type",
            json!({"Pod": good["Pod"], "NodeNames": "n1"}).to_string(),
            "application/json",
            400,
            "NodeNames",
        ),
        ("8 MiB", huge, "application/json", 413, "limit"),
        (
            "content type",
            good.to_string(),
            "application/x-www-form-urlencoded",
            415,
            "application/json",
        ),
    ];
    for route in ["/extender/filter", "/extender/prioritize"] {
        for (name, body, ct, status, needle) in &cases {
            let (got, answer) = h.post(route, body.clone(), ct).await;
            assert_eq!(got, *status, "{route} {name}: {answer}");
            assert!(
                answer["error"].as_str().unwrap_or_default().contains(needle),
                "{route} {name}: {answer}"
            );
        }
        assert_eq!(
            h.post(route, good.to_string(), "application/json").await.0,
            200,
            "{route} still serves"
        );
    }
    let (status, _) = h
        .post(
            "/extender/bind",
            json!({"PodName": "p"}).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(status, 400);
    let (status, answer) = h.post("/extender/nope", "{}", "application/json").await;
    assert_eq!(status, 404);
    assert_eq!(
        answer["error"], "no route /extender/nope",
        "a JSON body: {answer}"
    );
    let request = axum::http::Request::get("/extender/filter")
        .body(axum::body::Body::empty())
        .unwrap();
    use tower::ServiceExt;
    let response = headroom::server::routes(h.app.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(body["code"], 405, "{body}");
}

#[tokio::test]
async fn bind_places_only_a_pending_pod_the_filter_passed_on_that_node() {
    let mut items = cluster(&[10, 10]);
    items.push(unbound_claim("apps", "new", Some("proxmox-lvm")));
    let db = sched_pod("db-0", &["new"]);
    items.push(pending(&db));
    let mut running = pending(&sched_pod("web-0", &[]));
    running["spec"]["nodeName"] = json!("n1");
    running["status"]["phase"] = json!("Running");
    items.push(running.clone());
    let h = Harness::new(items, Config::default());
    let bind = |pod: &Value, node: &str| {
        json!({"PodName": pod["metadata"]["name"], "PodNamespace": "apps",
               "PodUID": pod["metadata"]["uid"], "Node": node})
    };
    let refused = |r: &Value, words: &str| r["Error"].as_str().unwrap().contains(words);
    // Never filtered: refused, and nothing reserved.
    let r = h.ok("/extender/bind", &bind(&db, "n1")).await;
    assert!(refused(&r, "the filter did not pass"), "{r}");
    assert!(h.app.reservations().is_empty());
    // Filtered on n1 only: n2 is refused, n1 binds.
    let f = h.ok("/extender/filter", &names_args(&db, &["n1"])).await;
    assert_eq!(f["NodeNames"], json!(["n1"]));
    let r = h.ok("/extender/bind", &bind(&db, "n2")).await;
    assert!(refused(&r, "the filter did not pass"), "{r}");
    assert_eq!(
        h.ok("/extender/bind", &bind(&db, "n1")).await,
        json!({"Error": ""})
    );
    // A pod already running elsewhere, even once filtered, is not moved.
    h.ok("/extender/filter", &names_args(&running, &["n2"])).await;
    let r = h.ok("/extender/bind", &bind(&running, "n2")).await;
    assert!(refused(&r, "bound already"), "{r}");
    // A pod that does not exist, even once filtered.
    let ghost = sched_pod("ghost", &[]);
    h.ok("/extender/filter", &names_args(&ghost, &["n2"])).await;
    let r = h.ok("/extender/bind", &bind(&ghost, "n2")).await;
    assert!(refused(&r, "no such pod"), "{r}");
    assert!(
        h.app
            .metrics
            .encode()
            .contains("headroom_extender_binds_total{reason=\"refused\"} 4"),
        "{}",
        h.app.metrics.encode()
    );
}
