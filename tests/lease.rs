//! Leader election over the stand-in API server: one holder, takeover after expiry.

mod support;

use std::time::Duration;

use headroom::lease::{self, Timings};
use support::apiserver::ApiServer;
use tokio::sync::watch;

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_when_it_stops_renewing() {
    let server = ApiServer::start().await;
    let timings = Timings {
        duration: Duration::from_secs(1),
        renew: Duration::from_millis(100),
    };
    let contender = |holder: &str| {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(lease::run(
            server.client(),
            "headroom-system".into(),
            "headroom-provisioner".into(),
            holder.into(),
            timings,
            tx,
        ));
        (task, rx)
    };
    let (a_task, a) = contender("replica-a");
    until("a leads", || *a.borrow()).await;
    let (b_task, b) = contender("replica-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(*a.borrow() && !*b.borrow(), "exactly one leader while a renews");

    a_task.abort();
    until("b takes over after the lease expires", || *b.borrow()).await;
    let leases = server.objects_under("/apis/coordination.k8s.io/v1/namespaces/headroom-system/leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["spec"]["holderIdentity"], "replica-b");
    assert_eq!(leases[0]["spec"]["leaseTransitions"], 1);
    b_task.abort();
}
