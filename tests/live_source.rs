//! The live source against the stand-in API server: list, watch, relist after 410, readiness.

mod support;

use headroom::{
    config::Config, decide::accounting::Settings, index::Kind, shared_index::SharedIndex, source::live,
    status::StatusReport,
};
use serde_json::{Value, json};
use support::{apiserver::ApiServer, *};

fn status_json(index: &SharedIndex) -> Value {
    serde_json::to_value(
        index.with_state(|s, _| {
            StatusReport::once(s, &Config::default(), headroom::decide::time::Timestamp(0))
        }),
    )
    .unwrap()
}

fn node_field(status: &Value, node: &str, field: &str) -> Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| n[field].clone())
        .unwrap_or(Value::Null)
}

fn seed(server: &ApiServer) -> Vec<Value> {
    let objects: Vec<Value> = [
        vec![
            node("n1"),
            node("n2"),
            csinode("n1", Some(28)),
            csinode("n2", Some(28)),
        ],
        vec![storage_class("proxmox-lvm", BLOCK, false)],
        bound_claim("a", "c1", "proxmox-lvm"),
        bound_claim("a", "c2", "proxmox-lvm"),
        vec![
            attachment("va1", BLOCK, "n1", "pv-c1", true),
            pod("a", "p1", Some("n1"), &["c1"], "1Gi"),
        ],
    ]
    .concat();
    for o in &objects {
        server.apply(o.clone());
    }
    objects
}

#[tokio::test]
async fn watch_events_change_status() {
    let server = ApiServer::start().await;
    seed(&server);
    let index = SharedIndex::default();
    tokio::spawn(live::watch_all(server.client(), index.clone()));
    until("synced", || index.is_synced()).await;
    let s = status_json(&index);
    assert_eq!(node_field(&s, "n1", "blockVolumes"), 1);
    assert_eq!(node_field(&s, "n2", "blockVolumes"), 0);
    assert_eq!(s["cluster"]["memoryRequestRatio"], 1.0 / 64.0);

    // Added: an attachment for c2 on n2.
    let va2 = attachment("va2", BLOCK, "n2", "pv-c2", false);
    server.apply(va2.clone());
    until("va2 counted on n2", || {
        node_field(&status_json(&index), "n2", "blockVolumes") == 1
    })
    .await;

    // Modified: n2 cordoned.
    server.apply(with(node("n2"), |v| v["spec"]["unschedulable"] = json!(true)));
    until("n2 unschedulable", || {
        node_field(&status_json(&index), "n2", "schedulable") == false
    })
    .await;
    assert_eq!(
        status_json(&index)["cluster"]["freeBlockSlots"],
        23,
        "only n1's room is left"
    );

    // Deleted: the pod and attachment of c1 go; c1 becomes dormant.
    server.delete(&pod("a", "p1", Some("n1"), &["c1"], "1Gi"));
    server.delete(&attachment("va1", BLOCK, "n1", "pv-c1", true));
    until("n1 empty", || {
        node_field(&status_json(&index), "n1", "blockVolumes") == 0
    })
    .await;
    let s = status_json(&index);
    assert_eq!(s["cluster"]["dormantBlockClaims"], 1);
    assert_eq!(s["cluster"]["memoryRequestRatio"], 0.0);
}

#[tokio::test]
async fn a_watch_ending_in_410_relists_and_drops_what_was_deleted_meanwhile() {
    let server = ApiServer::start().await;
    seed(&server);
    server.apply(attachment("va2", BLOCK, "n2", "pv-c2", true));
    let index = SharedIndex::default();
    tokio::spawn(live::watch_all(server.client(), index.clone()));
    until("synced", || index.is_synced()).await;
    until("both attachments seen", || {
        node_field(&status_json(&index), "n2", "blockVolumes") == 1
    })
    .await;
    let lists_before = server
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/storage.k8s.io/v1/volumeattachments?") && !r.contains("watch=true")
        })
        .count();

    // va2 goes while nobody watches: no DELETED event is ever sent. Then history is compacted.
    server.delete_silently(&attachment("va2", BLOCK, "n2", "pv-c2", true));
    server.expire_watches();

    until("relist drops va2", || {
        node_field(&status_json(&index), "n2", "blockVolumes") == 0
    })
    .await;
    let lists_after = server
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/storage.k8s.io/v1/volumeattachments?") && !r.contains("watch=true")
        })
        .count();
    assert!(
        lists_after > lists_before,
        "a relist happened ({lists_before} → {lists_after})"
    );
    assert_eq!(
        node_field(&status_json(&index), "n1", "blockVolumes"),
        1,
        "objects still there survive the relist"
    );
}

#[tokio::test]
async fn not_synced_until_every_watch_has_listed() {
    let server = ApiServer::start().await;
    seed(&server);
    server.hold("Pod");
    let index = SharedIndex::default();
    tokio::spawn(live::watch_all(server.client(), index.clone()));
    until("every other kind listed", || index.unsynced() == [Kind::Pod]).await;
    assert!(!index.is_synced());
    server.release();
    until("synced", || index.is_synced()).await;
    assert_eq!(
        node_field(&status_json(&index), "n1", "memoryRequestedBytes"),
        1024 * 1024 * 1024
    );
}

/// A list longer than a page arrives in pages (`limit` and `continue`, as the API server pages
/// 150,000 pods), and the view the index publishes follows the watch from there.
#[tokio::test]
async fn a_paged_list_and_the_watch_after_it_reach_the_published_view() {
    let server = ApiServer::start().await;
    seed(&server);
    for i in 0..1_200 {
        server.apply(pod("b", &format!("web-{i}"), Some("n2"), &[], "1Mi"));
    }
    let index = SharedIndex::default();
    index.account(Settings::from(&Config::default()));
    tokio::spawn(live::watch_all(server.client(), index.clone()));
    until("synced", || index.is_synced()).await;
    assert_eq!(index.view().node("n2").map(|n| n.pods), Some(1_200));
    let pages = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch="))
        .count();
    assert_eq!(pages, 3, "1,200 pods in pages of 500: {:?}", server.requests());

    server.delete(&pod("b", "web-0", Some("n2"), &[], "1Mi"));
    until("the deleted pod leaves the published view", || {
        index.view().node("n2").map(|n| n.pods) == Some(1_199)
    })
    .await;
}
