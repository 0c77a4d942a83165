//! The planning loop: a review alone plans nothing, a watched claim that crosses a trigger
//! becomes a plan at once; a pod no worker can hold is told once; `status` and `serve` plan the
//! same on the same inputs. On a paused clock where time matters.

mod support;

use std::time::Duration;

use headroom::{config::Config, decide::planner::Plan, index::Object, model::ClaimInfo};
use support::{app::Harness, *};
use tokio::time::Instant;

fn pvc_review(name: &str) -> serde_json::Value {
    let mut review = admission_fixture("pvc-create.json");
    review["request"]["uid"] = name.into();
    review["request"]["name"] = name.into();
    review["request"]["object"]["metadata"]["name"] = name.into();
    review
}

#[tokio::test(start_paused = true)]
async fn fake_reviews_plan_nothing_and_a_watched_claim_is_planned_at_once() {
    // Two workers at 22 of 24: 4 free slots, and freeBlockSlots fires below 4.
    let harness = Harness::new(cluster(&[22, 22]), Config::default());
    let (_loop, mut plans) = harness.plan_loop(Duration::from_secs(10));
    // The first tick runs at once (its gauges make /readyz 200): nothing to do yet.
    plans.changed().await.unwrap();
    assert_eq!(
        plans.borrow_and_update().plan,
        Plan::Nothing,
        "no plan before the demand"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Eighty reviews for claims that never appear: no VM.
    for i in 0..80 {
        let answer = harness.ok("/validate", &pvc_review(&format!("fake-{i}"))).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    plans.changed().await.unwrap();
    assert_eq!(
        plans.borrow_and_update().plan,
        Plan::Nothing,
        "the next tick sees no demand: nobody vouched for those reviews"
    );

    // The claim the watch shows is demand: planned at once.
    let start = Instant::now();
    harness.app.index.apply(Object::Claim(ClaimInfo {
        namespace: "apps".into(),
        name: "data-new-0".into(),
        storage_class: Some("proxmox-lvm".into()),
        volume_name: None,
    }));
    plans.changed().await.unwrap();
    let planned = plans.borrow_and_update().clone();
    assert!(
        matches!(planned.plan, Plan::ScaleUp { count: 1, .. }),
        "{planned:?}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "planned without waiting");
}

#[tokio::test(start_paused = true)]
async fn a_pod_no_worker_can_hold_is_told_once_and_never_cloned_for() {
    let mut items = cluster(&[2, 2]);
    items.push(pod("ai", "llama-70b", None, &[], "48Gi"));
    let mut harness = Harness::new(items, Config::default());
    let (_loop, mut plans) = harness.plan_loop(Duration::from_secs(10));
    for _ in 0..3 {
        plans.changed().await.unwrap();
        let planned = plans.borrow_and_update().clone();
        assert_eq!(planned.plan, Plan::Nothing, "no clone for it");
    }
    let event = harness.event().expect("an event");
    assert_eq!((event.kind.as_str(), event.name.as_str()), ("Pod", "llama-70b"));
    assert_eq!(event.reason, "HeadroomNoWorkerFits");
    assert!(event.message.contains("49152 MiB"), "{}", event.message);
    assert!(harness.event().is_none(), "told once over three ticks");
    assert!(harness.app.metrics.encode().contains("headroom_oversized_pods 1"));
}

/// What `headroom status --output json` says the provisioner would do on `items` with `config`.
fn status_plan(items: &[serde_json::Value], config: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snap.json");
    std::fs::write(&snapshot, list(items.to_vec()).to_string()).unwrap();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args([
            "--config",
            config_file.to_str().unwrap(),
            "status",
            "--output",
            "json",
        ])
        .args(["--snapshot", snapshot.to_str().unwrap()])
        .env_remove("HEADROOM_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["provisioner"]["plan"].clone()
}

/// What `serve`'s planning loop plans first on the same inputs.
async fn serve_plan(items: &[serde_json::Value], config: &str) -> serde_json::Value {
    let harness = Harness::new(items.to_vec(), Config::parse("config.yaml", config).unwrap());
    let (task, mut plans) = harness.plan_loop(Duration::from_millis(10));
    plans.changed().await.unwrap();
    let plan = plans.borrow_and_update().plan.clone();
    task.abort();
    serde_json::to_value(plan).unwrap()
}

#[tokio::test]
async fn status_and_serve_plan_the_same_on_the_same_inputs() {
    let claims = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| unbound_claim("apps", &format!("want-{i}"), Some("proxmox-lvm")))
            .collect()
    };
    let mut unfit = cluster(&[2, 2]);
    unfit.push(pod("apps", "filler-1", Some("n1"), &[], "30Gi"));
    unfit.push(pod("apps", "filler-2", Some("n2"), &[], "30Gi"));
    unfit.push(pod("apps", "big", None, &[], "8Gi"));
    let mut oversized = cluster(&[2, 2]);
    oversized.push(pod("ai", "llama-70b", None, &[], "48Gi"));
    let week = "triggers:\n  freeBlockSlots: {below: 4, for: 168h}\n  memoryRequestRatio: {above: 0.9, for: 168h}\n  plannedBlockVolumes: {atLeast: 3, whenMaxNodeAtLeast: 22, for: 168h}\n";
    // (case, cluster, config, the action both must plan)
    let cases: Vec<(&str, Vec<serde_json::Value>, &str, &str)> = vec![
        (
            "trigger held long enough",
            [cluster(&[22, 23]), claims(30)].concat(),
            "{}",
            "scaleUp",
        ),
        (
            "trigger held 0s of its 168h",
            [cluster(&[22, 23]), claims(30)].concat(),
            week,
            "nothing",
        ),
        ("a pending pod fits no node", unfit, "{}", "scaleUp"),
        ("a pod no VM can hold", oversized, "{}", "nothing"),
        ("a roomy cluster", cluster(&[5, 5]), "{}", "nothing"),
    ];
    for (case, items, config, action) in cases {
        let status = status_plan(&items, config);
        let serve = serve_plan(&items, config).await;
        assert_eq!(status, serve, "{case}");
        assert_eq!(status["action"], action, "{case}: {status}");
    }
}
