//! Leader election over the stand-in API server: one holder, takeover after expiry.

mod support;

use std::time::Duration;

use headroom::lease::{self, Timings};
use support::{apiserver::ApiServer, until};
use tokio::sync::watch;

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
    // While a renews, b asks and is refused: exactly one leader over several rounds of both
    // (counted in the requests the lease got, not waited out on the clock).
    let lease_requests = || server.requests().iter().filter(|r| r.contains("/leases")).count();
    let before = lease_requests();
    let (b_task, b) = contender("replica-b");
    until("b and a each try the lease several times", || {
        lease_requests() >= before + 8
    })
    .await;
    assert!(*a.borrow() && !*b.borrow(), "exactly one leader while a renews");

    a_task.abort();
    until("b takes over after the lease expires", || *b.borrow()).await;
    let leases = server.objects_under("/apis/coordination.k8s.io/v1/namespaces/headroom-system/leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["spec"]["holderIdentity"], "replica-b");
    assert_eq!(leases[0]["spec"]["leaseTransitions"], 1);
    b_task.abort();
}
