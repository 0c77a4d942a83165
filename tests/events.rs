//! Events as the API server receives them: kube's Recorder against the stand-in API server
//! (events.k8s.io/v1), a repeat about the same object becoming the first Event's series.

mod support;

use headroom::{
    events::{EventSink, PlannedEvent},
    metrics::Metrics,
};
use support::{apiserver::ApiServer, until};

#[tokio::test]
async fn a_repeated_event_becomes_a_series_and_another_a_new_event() {
    let api = ApiServer::start().await;
    let metrics = Metrics::default();
    let sink = EventSink::recording(
        api.client(),
        kube::runtime::events::Reporter {
            controller: "headroom".into(),
            instance: Some("headroom-0".into()),
        },
    )
    .counting(metrics.events.clone());
    let denial = |claim: &str| PlannedEvent {
        namespace: "apps".into(),
        kind: "PersistentVolumeClaim".into(),
        name: claim.into(),
        reason: "BlockCapacity".into(),
        message: "no node has room".into(),
    };
    let created = || {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("headroom_events_total{result=\"created\"} "))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    // The same reason about the same object is one Event with a series (kube's key: reason,
    // action, type, reporter, regarding); another object gets its own.
    for (i, claim) in ["data-db-0", "data-db-0", "data-db-1"].into_iter().enumerate() {
        assert!(sink.emit(denial(claim)));
        until("the Event recorded", || created() == i as u64 + 1).await;
    }
    let mut events = api.objects_under("/apis/events.k8s.io/v1/namespaces/apps/events");
    events.sort_by_key(|e| e["regarding"]["name"].as_str().unwrap().to_owned());
    assert_eq!(events.len(), 2, "{events:#?}");
    let first = &events[0];
    assert_eq!(first["note"], "no node has room");
    assert_eq!(
        first["series"]["count"], 2,
        "the repeat is the first one's series"
    );
    assert_eq!(first["reason"], "BlockCapacity");
    assert_eq!(first["type"], "Warning");
    assert_eq!(first["reportingController"], "headroom");
    assert_eq!(first["reportingInstance"], "headroom-0");
    assert_eq!(first["regarding"]["kind"], "PersistentVolumeClaim");
    assert_eq!(first["regarding"]["name"], "data-db-0");
    assert!(events[1]["series"].is_null());
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("PATCH /apis/events.k8s.io/v1/namespaces/apps/events/")),
        "{:?}",
        api.requests()
    );
}
