//! The planning loop: admitted demand that crosses a trigger becomes a plan at once, and
//! admissions do not re-plan more often than every 250 ms. On a paused clock.

mod support;

use std::time::Duration;

use headroom::{config::Config, decide::planner::Plan, provisioner};
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
    let (tx, mut plans) = tokio::sync::mpsc::channel(8);
    tokio::spawn(provisioner::plan_loop(
        harness.app.clone(),
        tx,
        Duration::from_secs(10),
    ));
    // Let the loop reach its wait; nothing fires yet.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(plans.try_recv().is_err(), "no plan before the demand");

    let start = Instant::now();
    let answer = harness.ok("/validate", &pvc_review("data-new-0")).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let plan = plans.recv().await.unwrap();
    assert!(matches!(plan, Plan::ScaleUp { count: 1, .. }), "{plan:?}");
    assert_eq!(start.elapsed(), Duration::ZERO, "planned without waiting");

    // A second admission right after wakes the loop, but it re-plans only 250 ms after the last.
    harness.ok("/validate", &pvc_review("data-new-1")).await;
    let plan = plans.recv().await.unwrap();
    assert!(matches!(plan, Plan::ScaleUp { .. }), "{plan:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}
