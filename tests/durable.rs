//! Durable windows over the stand-in API server: the lease holder records when each condition
//! started to hold, and a process started a day later goes on from there instead of starting
//! the window again; a follower writes nothing.

mod support;

use std::time::Duration;

use headroom::{
    clock::Clock,
    config::{Config, Period},
    decide::time::Timestamp,
    durable::{Durable, NAME, Store},
    provisioner::{self, Persistence, Planned},
};
use support::{apiserver::ApiServer, app::Harness, *};
use tokio::sync::watch;

const T0: Timestamp = Timestamp(1_780_000_000_000);
const NS: &str = "headroom-system";

/// Runs a plan loop on a quiet cluster (every scale-down condition holds) with its clock at
/// `start` and the windows `store` holds, until `done(record, ticks seen)`; returns the
/// record.
async fn plan_loop_until(
    store: &Store,
    start: Timestamp,
    leading: bool,
    done: impl Fn(&Durable, u32) -> bool,
) -> Durable {
    let mut config = Config::default();
    config.scale_down.r#for = Period(Duration::from_secs(30 * 86_400));
    let harness = Harness::new(cluster(&[2, 5, 6]), config);
    let record = store.load().await.unwrap();
    let (plans, mut ticks) = watch::channel(Planned::default());
    let (_lead_tx, lead_rx) = watch::channel(leading);
    let task = tokio::spawn(provisioner::plan_loop(
        harness.app.clone(),
        harness.app.actuator.clone(),
        plans,
        record.windows,
        Clock::starting_at(start),
        Duration::from_millis(20),
        Some(Persistence {
            store: store.clone(),
            leading: lead_rx,
        }),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    loop {
        // Every tick sends a plan; count them (a tick's write comes before its next plan).
        if ticks.has_changed().unwrap() {
            ticks.borrow_and_update();
            seen += 1;
        }
        let record = store.load().await.unwrap();
        if done(&record, seen) {
            task.abort();
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "never done: {record:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn windows_survive_a_restart_and_only_the_lease_holder_writes_them() {
    install_crypto();
    let api = ApiServer::start().await;
    let store = Store::new(api.client(), NS);
    assert_eq!(store.load().await.unwrap(), Durable::default(), "nothing yet");

    // A follower ticks (its plans are made) but writes nothing.
    let _ = plan_loop_until(&store, T0, false, |_, ticks| ticks >= 3).await;
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.contains("configmaps") && !r.starts_with("GET")),
        "a follower wrote: {:?}",
        api.requests()
    );

    // The leader records when the scale-down conditions started to hold.
    let first = plan_loop_until(&store, T0, true, |r, _| {
        r.windows.since.contains_key("scaleDown.memoryRequestRatio")
    })
    .await;
    let since = first.windows.since["scaleDown.memoryRequestRatio"];
    assert!(
        since >= T0 && since < T0.plus(Duration::from_secs(5)),
        "{first:?}"
    );

    // A new process a day later loads the record: after several of its ticks the window still
    // starts at `since` (a reset would have written the later time).
    let day_later = T0.plus(Duration::from_secs(86_400));
    let again = plan_loop_until(&store, day_later, true, |_, ticks| ticks >= 3).await;
    assert_eq!(again.windows.since["scaleDown.memoryRequestRatio"], since);
    let cm = api
        .objects_under(&format!("/api/v1/namespaces/{NS}/configmaps"))
        .into_iter()
        .find(|c| c["metadata"]["name"] == NAME)
        .expect("the ConfigMap");
    assert!(
        cm["data"]["windows.json"]
            .as_str()
            .unwrap()
            .contains("scaleDown.memoryRequestRatio")
    );
}
