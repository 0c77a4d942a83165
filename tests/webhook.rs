//! /mutate and /validate: every decision branch, from full AdmissionReview v1 envelopes.

mod support;

use axum::body::Body;
use base64::Engine;
use headroom::{
    config::{Config, Enforcement, Steering},
    decide::{
        actuation::{Intent, Phase},
        projection::VmCapacity,
        time::Timestamp,
    },
};
use serde_json::{Value, json};
use support::{app::Harness, *};

const POD: &str = include_str!("data/admission/pod-create.json");
const PVC: &str = include_str!("data/admission/pvc-create.json");

/// Posts an AdmissionReview and checks the envelope of the answer; returns `response`.
async fn admit(h: &Harness, path: &str, review: &Value) -> Value {
    let body = h.ok(path, review).await;
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], review["request"]["uid"], "uid echoed");
    body["response"].clone()
}

fn config(enforcement: Enforcement) -> Config {
    Config {
        enforcement,
        ..Config::default()
    }
}

/// The captured pod review, mounting `claims` (block or not) in namespace `apps`.
fn pod_review(claims: &[&str]) -> Value {
    let mut r: Value = serde_json::from_str(POD).unwrap();
    r["request"]["namespace"] = json!("apps");
    r["request"]["object"]["metadata"]["namespace"] = json!("apps");
    r["request"]["object"]["spec"]["volumes"] = Value::Array(
        claims
            .iter()
            .map(|c| json!({"name": format!("v-{c}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect(),
    );
    r
}

fn pvc_review(class: &str) -> Value {
    let mut r: Value = serde_json::from_str(PVC).unwrap();
    r["request"]["object"]["spec"]["storageClassName"] = json!(class);
    r
}

fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let b64 = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// A new unbound block claim `new` (the pod's claim, created just before it).
fn with_new_claim(mut items: Vec<Value>) -> Vec<Value> {
    items.push(unbound_claim("apps", "new", Some("proxmox-lvm")));
    items
}

#[tokio::test]
async fn validate_pod_allows_when_some_node_has_room() {
    let mut h = Harness::new(with_new_claim(cluster(&[24, 23])), config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pod_review(&["new"])).await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none() && r.get("patch").is_none() && r.get("patchType").is_none());
    assert!(h.event().is_none());
}

#[tokio::test]
async fn validate_pod_denies_with_a_message_that_says_what_to_do() {
    // n3 has two free slots, but the pod needs three new block volumes.
    let mut items = with_new_claim(cluster(&[24, 24, 22]));
    items.push(unbound_claim("apps", "new2", Some("proxmox-lvm")));
    items.push(unbound_claim("apps", "new3", Some("proxmox-lvm")));
    let mut h = Harness::new(items, config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pod_review(&["new", "new2", "new3"])).await;
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    let message = r["status"]["message"].as_str().unwrap();
    for needle in [
        "3 more block volumes",
        "soft cap of 24",
        "n1 24/24",
        "n2 24/24",
        "n3 22/24",
        "NFS class",
        "add a worker",
    ] {
        assert!(message.contains(needle), "want {needle:?} in {message}");
    }
    let event = h.event().expect("a denial becomes an Event");
    assert_eq!(
        (event.reason.as_str(), event.kind.as_str(), event.name.as_str()),
        ("BlockCapacity", "Pod", "vaultwarden-0")
    );
    assert_eq!(event.message, message);
}

/// (case, enforcement, incoming VMs, proxmox configured, want allowed, want warning containing)
type OutlookCase = (&'static str, Enforcement, i64, bool, bool, Option<&'static str>);

#[tokio::test]
async fn validate_pod_by_enforcement_and_outlook() {
    let cases: Vec<OutlookCase> = vec![
        (
            "warn",
            Enforcement::Warn,
            0,
            false,
            true,
            Some("may stay Pending"),
        ),
        ("off", Enforcement::Off, 0, false, true, None),
        (
            "a VM on its way",
            Enforcement::Deny,
            1,
            false,
            true,
            Some("a new worker is on its way"),
        ),
        (
            "the provisioner may add one",
            Enforcement::Deny,
            0,
            true,
            true,
            Some("headroom is adding a worker"),
        ),
        ("deny", Enforcement::Deny, 0, false, false, None),
    ];
    for (name, enforcement, incoming, proxmox, allowed, warning) in cases {
        let mut c = config(enforcement);
        if proxmox {
            c.proxmox = Some(
                serde_saphyr::from_str(
                    "url: https://pve:8006\nhosts: [{name: pve, template: 2000, storage: local-lvm}]",
                )
                .unwrap(),
            );
        }
        let mut h = Harness::new(with_new_claim(cluster(&[24, 24])), c);
        h.actuator.send_modify(|s| {
            s.intents = (0..incoming)
                .map(|_| Intent {
                    vm: None,
                    phase: Phase::Queued,
                    capacity: VmCapacity::from_config(&h.app.config),
                    reason: "test".into(),
                    since: Timestamp(0),
                })
                .collect()
        });
        let r = admit(&h, "/validate", &pod_review(&["new"])).await;
        assert_eq!(r["allowed"], allowed, "{name}: {r}");
        match warning {
            Some(w) => {
                let got = r["warnings"][0]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no warning in {r}"));
                assert!(got.contains(w), "{name}: {got}");
                assert!(
                    got.chars().count() <= 120,
                    "{name}: warning too long ({})",
                    got.len()
                );
                assert_eq!(
                    h.event().map(|e| e.reason),
                    Some("BlockCapacity".into()),
                    "{name}: a warning is an Event"
                );
            }
            None => assert!(r.get("warnings").is_none(), "{name}: {r}"),
        }
    }
}

#[tokio::test]
async fn validate_pod_counts_only_claims_not_already_on_the_node() {
    // n1 is full, but the pod's claim is one of n1's: it needs no new slot there.
    let h = Harness::new(cluster(&[24, 24]), config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pod_review(&["n1-c3"])).await;
    assert_eq!(r["allowed"], true, "{r}");
    // A claim on n1 plus a new one: n1 needs one slot (none), n2 needs two (none).
    let h = Harness::new(with_new_claim(cluster(&[24, 24])), config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pod_review(&["n1-c3", "new"])).await;
    assert_eq!(r["allowed"], false, "{r}");
}

#[tokio::test]
async fn validate_skips_what_is_not_ours() {
    let h = Harness::new(with_new_claim(cluster(&[24, 24])), config(Enforcement::Deny));
    let full_pod = pod_review(&["new"]);

    let mut nfs_pod = pod_review(&["media"]);
    nfs_pod["request"]["uid"] = json!("nfs");
    let mut excluded = full_pod.clone();
    excluded["request"]["namespace"] = json!("kube-system");
    let mut labelled = full_pod.clone();
    labelled["request"]["object"]["metadata"]["labels"]["headroom.io/ignore"] = json!("true");
    let mut update = full_pod.clone();
    update["request"]["operation"] = json!("UPDATE");
    let mut delete = full_pod.clone();
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["object"] = Value::Null;
    let mut deployment = full_pod.clone();
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    for (name, review) in [
        ("pod without block claims", nfs_pod),
        ("excluded namespace", excluded),
        ("headroom.io/ignore", labelled),
        ("UPDATE", update),
        ("DELETE", delete),
        ("another kind", deployment),
    ] {
        let r = admit(&h, "/validate", &review).await;
        assert_eq!(r["allowed"], true, "{name}: {r}");
        // An allowed answer's status is empty (kube's AdmissionResponse writes `{}`).
        assert!(
            r.get("warnings").is_none() && r["status"].as_object().is_none_or(|s| s.is_empty()),
            "{name}: {r}"
        );
    }
    let r = admit(&h, "/validate", &full_pod).await;
    assert_eq!(r["allowed"], false, "and the same pod, in scope, is denied");
}

#[tokio::test]
async fn validate_claim_against_free_slots_and_pending_claims() {
    // Room: n1 1 + n2 2 = 3; two claims already pending take two of them.
    let mut items = cluster(&[23, 22]);
    items.push(unbound_claim("apps", "p1", Some("proxmox-lvm")));
    let h = Harness::new(items.clone(), config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pvc_review("proxmox-lvm")).await;
    assert_eq!(r["allowed"], true, "3 room − 1 pending leaves a slot: {r}");
    items.push(unbound_claim("apps", "p2", Some("proxmox-lvm")));
    items.push(unbound_claim("apps", "p3", Some("proxmox-lvm")));
    let h = Harness::new(items, config(Enforcement::Deny));
    let r = admit(&h, "/validate", &pvc_review("proxmox-lvm")).await;
    assert_eq!(r["allowed"], false, "3 room − 3 pending: {r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("1 more block volume ")
    );
    let r = admit(&h, "/validate", &pvc_review("nfs")).await;
    assert_eq!(r["allowed"], true, "an NFS claim is not block");
}

#[tokio::test]
async fn unconfirmed_admissions_count_for_nothing_and_turn_no_legitimate_claim_away() {
    let mut h = Harness::new(cluster(&[22, 24]), config(Enforcement::Deny));
    let mut dry = pvc_review("proxmox-lvm");
    dry["request"]["dryRun"] = json!(true);
    let r = admit(&h, "/validate", &dry).await;
    assert_eq!(r["allowed"], true);
    assert_eq!(h.app.admitted().block_volumes, 0, "a dry run feeds nothing");

    // Eighty reviews for claims that never appear (anyone who reaches the port can send them):
    // no demand, and the room of 2 still takes a legitimate claim.
    for i in 0..80 {
        let mut fake = pvc_review("proxmox-lvm");
        fake["request"]["uid"] = json!(format!("fake-{i}"));
        fake["request"]["name"] = json!(format!("fake-{i}"));
        assert_eq!(admit(&h, "/validate", &fake).await["allowed"], true);
    }
    assert_eq!(h.app.admitted().block_volumes, 0, "nobody vouched for them");
    // The same review over a connection whose client certificate was checked is demand at once,
    // before any watch shows the claim.
    let mut vouched = pvc_review("proxmox-lvm");
    vouched["request"]["name"] = json!("data-immich-0");
    let (status, _) = h
        .post_as(
            headroom::server::Caller::Authenticated,
            "/validate",
            vouched.to_string(),
            "application/json",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.app.admitted().block_volumes, 1, "the API server vouched for it");
    let mut real = pvc_review("proxmox-lvm");
    real["request"]["name"] = json!("data-vaultwarden-2");
    assert_eq!(admit(&h, "/validate", &real).await["allowed"], true);
    while h.event().is_some() {}

    // Claims the index shows do count: with two pending, the room of 2 is taken.
    let items = [
        cluster(&[22, 24]),
        vec![
            unbound_claim("apps", "a", Some("proxmox-lvm")),
            unbound_claim("apps", "b", Some("proxmox-lvm")),
        ],
    ]
    .concat();
    let mut h = Harness::new(items, config(Enforcement::Deny));
    let mut third = pvc_review("proxmox-lvm");
    third["request"]["name"] = json!("data-vaultwarden-3");
    let mut third_dry = third.clone();
    third_dry["request"]["dryRun"] = json!(true);
    let dry_answer = admit(&h, "/validate", &third_dry).await;
    assert!(h.event().is_none(), "a dry-run denial records no Event");
    let answer = admit(&h, "/validate", &third).await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(
        dry_answer["status"], answer["status"],
        "a dry run gets the same answer"
    );
    assert!(h.event().is_some());
}

#[tokio::test]
async fn mutate_adds_the_extended_resource_once() {
    let h = Harness::new(with_new_claim(cluster(&[10])), Config::default());
    let review = pod_review(&["new", "n1-c0", "media"]);
    let r = admit(&h, "/mutate", &review).await;
    assert_eq!(r["allowed"], true);
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&r).expect("a patch")).unwrap();
    let mut want = review["request"]["object"].clone();
    want["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "512Mi", "headroom.io/block-volumes": "2"},
               "requests": {"cpu": "50m", "memory": "256Mi", "headroom.io/block-volumes": "2"}});
    assert_eq!(pod, want, "two distinct block claims; the NFS one does not count");

    let mut again = review.clone();
    again["request"]["object"] = pod;
    let r = admit(&h, "/mutate", &again).await;
    assert!(patch_of(&r).is_none(), "reinvocation changes nothing: {r}");
}

#[tokio::test]
async fn mutate_shapes_of_resources() {
    let h = Harness::new(with_new_claim(cluster(&[10])), Config::default());
    // (case, first container's resources, resources after the patch)
    let cases = vec![
        (
            "no resources",
            None,
            json!({"limits": {"headroom.io/block-volumes": "1"}}),
        ),
        (
            "limits only",
            Some(json!({"limits": {"cpu": "1"}})),
            json!({"limits": {"cpu": "1", "headroom.io/block-volumes": "1"}}),
        ),
        (
            "a stale count is replaced in both maps",
            Some(
                json!({"limits": {"headroom.io/block-volumes": "3"}, "requests": {"headroom.io/block-volumes": "3"}}),
            ),
            json!({"limits": {"headroom.io/block-volumes": "1"}, "requests": {"headroom.io/block-volumes": "1"}}),
        ),
    ];
    for (name, before, after) in cases {
        let mut review = pod_review(&["new"]);
        match before {
            Some(r) => review["request"]["object"]["spec"]["containers"][0]["resources"] = r,
            None => {
                review["request"]["object"]["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("resources");
            }
        }
        let r = admit(&h, "/mutate", &review).await;
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(
            &mut pod,
            &patch_of(&r).unwrap_or_else(|| panic!("{name}: no patch")),
        )
        .unwrap();
        assert_eq!(pod["spec"]["containers"][0]["resources"], after, "{name}");
    }
}

#[tokio::test]
async fn mutate_never_denies_and_leaves_other_pods_alone() {
    let h = Harness::new(with_new_claim(cluster(&[24])), config(Enforcement::Deny));
    let r = admit(&h, "/mutate", &pod_review(&["new"])).await;
    assert_eq!(r["allowed"], true, "even with no room");
    for review in [pod_review(&["media"]), pod_review(&[])] {
        let r = admit(&h, "/mutate", &review).await;
        assert!(r.get("patch").is_none(), "{r}");
    }
}

#[tokio::test]
async fn affinity_steering_excludes_nodes_without_room() {
    let c = Config {
        steering: Steering::Affinity,
        ..Config::default()
    };
    let h = Harness::new(with_new_claim(cluster(&[24, 10, 24])), c);
    let review = pod_review(&["new"]);
    let r = admit(&h, "/mutate", &review).await;
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&r).unwrap()).unwrap();
    let want = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n1", "n3"]}]}]}}});
    assert_eq!(pod["spec"]["affinity"], want);
    let mut again = review.clone();
    again["request"]["object"] = pod;
    assert!(
        patch_of(&admit(&h, "/mutate", &again).await).is_none(),
        "reinvocation changes nothing"
    );

    // Existing terms are ORed: the exclusion is added to each.
    let mut with_terms = review.clone();
    with_terms["request"]["object"]["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}});
    let r = admit(&h, "/mutate", &with_terms).await;
    let mut pod = with_terms["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(&r).unwrap()).unwrap();
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms[0]["matchExpressions"][1]["values"], json!(["n1", "n3"]));
    assert_eq!(terms[1]["matchExpressions"][0]["operator"], "NotIn");
    assert_eq!(
        terms[1]["matchFields"][0]["key"], "metadata.name",
        "the rest of the term is kept"
    );
}

#[tokio::test]
async fn bad_requests_get_their_status_and_the_server_keeps_serving() {
    let h = Harness::new(with_new_claim(cluster(&[10])), Config::default());
    let good = pod_review(&["new"]);
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut wrong_type = good.clone();
    wrong_type["request"]["object"]["spec"]["containers"] = json!(3);
    let mut wrong_dry_run = good.clone();
    wrong_dry_run["request"]["dryRun"] = json!("yes");
    let truncated = &good.to_string()[..200];
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(8 * 1024 * 1024));
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "truncated JSON",
            truncated.to_owned(),
            "application/json",
            400,
            "malformed JSON",
        ),
        (
            "not JSON",
            "<xml/>".into(),
            "application/json",
            400,
            "malformed JSON",
        ),
        (
            "wrong apiVersion",
            wrong_version.to_string(),
            "application/json",
            400,
            "admission.k8s.io/v1",
        ),
        ("missing uid", no_uid.to_string(), "application/json", 400, "uid"),
        (
            "wrong type in the object",
            wrong_type.to_string(),
            "application/json",
            400,
            "spec.containers",
        ),
        (
            "wrong type in the request",
            wrong_dry_run.to_string(),
            "application/json",
            400,
            "request.dryRun",
        ),
        ("8 MiB body", huge, "application/json", 413, "limit"),
        (
            "wrong content type",
            good.to_string(),
            "text/plain",
            415,
            "application/json",
        ),
    ];
    for route in ["/mutate", "/validate"] {
        for (name, body, content_type, status, needle) in &cases {
            let (got, body) = h.post(route, body.clone(), content_type).await;
            assert_eq!(got, *status, "{route} {name}: {body}");
            let error = body["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{route} {name}: JSON error body, got {body}"));
            assert!(error.contains(needle), "{route} {name}: {error}");
        }
        let r = admit(&h, route, &good).await;
        assert_eq!(r["allowed"], true, "{route} still serves");
    }
    let metrics = h.app.metrics.encode();
    assert!(
        metrics.contains("headroom_bad_requests_total{route=\"validate\"} 8"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_api_servers_timeout_is_honoured() {
    let h = Harness::new(cluster(&[1]), Config::default());
    for (query, budget) in [("?timeout=2s", 1600), ("", 9500)] {
        // A body that starts and never ends: the answer must come before the API server gives up.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        tx.send(Ok(axum::body::Bytes::from_static(b"{\"apiVersion\":")))
            .await
            .unwrap();
        let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|c| (c, rx))
        }));
        let started = tokio::time::Instant::now();
        let (status, json) = h
            .post(&format!("/validate{query}"), body, "application/json")
            .await;
        let waited = started.elapsed().as_millis();
        assert_eq!(status, 408, "{json}");
        assert_eq!(
            waited, budget,
            "answered {waited} ms in, with the margin taken off {query:?}"
        );
        drop(tx);
    }
}

#[tokio::test]
async fn made_up_kinds_and_operations_do_not_grow_the_metrics() {
    let h = Harness::new(cluster(&[2, 2]), config(Enforcement::Deny));
    let once = |i: usize| {
        let mut r = pod_review(&[]);
        r["request"]["uid"] = json!(format!("u-{i}"));
        r["request"]["kind"]["kind"] = json!(format!("Made{i}"));
        r["request"]["operation"] = json!(format!("OP{i}"));
        r
    };
    admit(&h, "/validate", &once(0)).await;
    let series = |m: &str| m.lines().filter(|l| !l.starts_with('#')).count();
    let before = series(&h.app.metrics.encode());
    for i in 1..5_000 {
        admit(&h, "/validate", &once(i)).await;
    }
    let metrics = h.app.metrics.encode();
    assert_eq!(
        series(&metrics),
        before,
        "no new series after the first made-up kind"
    );
    assert!(
        metrics.contains("kind=\"other\",operation=\"other\""),
        "{metrics}"
    );
    assert!(!metrics.contains("Made1"));
}

/// The API server writes `kind` before `object`, and the object is then read in the envelope's
/// one pass; a review whose object comes first is read all the same, and decided the same.
#[tokio::test]
async fn the_object_is_read_whether_its_kind_comes_before_or_after_it() {
    let h = Harness::new(with_new_claim(cluster(&[24, 24])), config(Enforcement::Deny));
    let review = pod_review(&["new"]);
    let request = &review["request"];
    let kind_first = review.to_string();
    assert!(kind_first.find("\"kind\":{").unwrap() < kind_first.find("\"object\"").unwrap());
    let object_first = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"object":{},"uid":{},"kind":{},"operation":"CREATE","namespace":"apps","name":{}}}}}"#,
        request["object"], request["uid"], request["kind"], request["name"]
    );
    for (order, body) in [("kind first", kind_first), ("object first", object_first)] {
        let (status, answer) = h.post("/validate", body, "application/json").await;
        assert_eq!(status, 200, "{order}: {answer}");
        assert_eq!(
            answer["response"]["allowed"], false,
            "{order}: both nodes are full"
        );
        assert_eq!(answer["response"]["status"]["code"], 403, "{order}");
    }
}
