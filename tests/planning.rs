//! The planning loop: admitted demand that crosses a trigger becomes a plan at once, and
//! admissions do not re-plan more often than every 250 ms. On a paused clock.

mod support;

use std::time::Duration;

use headroom::{
    clock::Clock,
    config::Config,
    decide::{planner::Plan, projection::Windows, time::Timestamp},
    provisioner::{self, Planned},
};
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
async fn a_trigger_crossing_admission_is_planned_at_once_and_bursts_are_throttled() {
    // Two workers at 22 of 24: 4 free slots, and freeBlockSlots fires below 4.
    let harness = Harness::new(cluster(&[22, 22]), Config::default());
    let (tx, mut plans) = tokio::sync::watch::channel(Planned::default());
    tokio::spawn(provisioner::plan_loop(
        harness.app.clone(),
        harness.app.actuator.clone(),
        tx,
        Windows::default(),
        Clock::starting_at(Timestamp(1_780_000_000_000)),
        Duration::from_secs(10),
        None,
    ));
    // Let the loop reach its wait; nothing is planned yet.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!plans.has_changed().unwrap(), "no plan before the demand");

    let start = Instant::now();
    let answer = harness.ok("/validate", &pvc_review("data-new-0")).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    plans.changed().await.unwrap();
    let planned = plans.borrow_and_update().clone();
    assert!(
        matches!(planned.plan, Plan::ScaleUp { count: 1, .. }),
        "{planned:?}"
    );
    assert_eq!(planned.basis, 0, "made on the actuator's first generation");
    assert_eq!(start.elapsed(), Duration::ZERO, "planned without waiting");

    // A second admission right after wakes the loop, but it re-plans only 250 ms after the last.
    harness.ok("/validate", &pvc_review("data-new-1")).await;
    plans.changed().await.unwrap();
    let planned = plans.borrow_and_update().clone();
    assert!(matches!(planned.plan, Plan::ScaleUp { .. }), "{planned:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_pod_no_worker_can_hold_is_told_once_and_never_cloned_for() {
    let mut items = cluster(&[2, 2]);
    items.push(pod("ai", "llama-70b", None, &[], "48Gi"));
    let mut harness = Harness::new(items, Config::default());
    let (tx, mut plans) = tokio::sync::watch::channel(Planned::default());
    tokio::spawn(provisioner::plan_loop(
        harness.app.clone(),
        harness.app.actuator.clone(),
        tx,
        Windows::default(),
        Clock::starting_at(Timestamp(1_780_000_000_000)),
        Duration::from_secs(10),
        None,
    ));
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
