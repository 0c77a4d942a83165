//! End to end with the real binary: `headroom serve` against the stand-in API server (live
//! watches, the Lease, the durable windows) and fakepve, in a cluster that answers back —
//! kubelets register each started VM's Node, and its CSI plugin registers a second later.

mod support;

use std::{path::Path, time::Duration};

use serde_json::Value;
use support::{apiserver::ApiServer, fakepve::FakePve, kubelets, *};

const BIN: &str = env!("CARGO_BIN_EXE_headroom");

/// headroom's config for fakepve, with `extra` appended; returns its path.
fn config(pve: &FakePve, dir: &Path, extra: &str) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, &pve.token).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "proxmox:\n  url: {}\n  tokenFile: {}\n  caFile: {}\n  hosts: [{{name: pve1, template: 2000, storage: local-lvm}}]\n  \
             vm: {{memoryMiB: 2048}}\n  hostMemoryReserveMiB: 512\n  joinTimeout: 2m\n  maxNodes: 10\n{extra}",
            pve.url,
            token.display(),
            pve.ca
        ),
    )
    .unwrap();
    config
}

/// `headroom serve` on the stand-in API server and fakepve with `config`; returns the process
/// and its admin address.
fn serve(api: &ApiServer, config: &Path, dir: &Path) -> (tokio::process::Child, String) {
    let certs = headroom::certs::write(&dir.join("tls"), vec!["localhost".into()], &[]).unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir))
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .args(["--plan-interval", "100ms"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &admin])
        .env_remove("HEADROOM_CONFIG")
        .env("POD_NAMESPACE", "headroom-system")
        .env("POD_NAME", "headroom-e2e")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, admin)
}

/// The admin port's /metrics text (empty while it is not up).
async fn metrics(admin: &str) -> String {
    get_text(&format!("http://{admin}/metrics"))
        .await
        .unwrap_or_default()
}

/// The /metrics text once it contains `line` (within a minute).
async fn metrics_showing(admin: &str, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(admin).await;
        if m.contains(line) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never showed {line}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_clones_exactly_the_two_vms_thirty_pending_claims_need() {
    install_crypto();
    let mut pve = FakePve::start().await;
    pve.add_template().await;
    let api = ApiServer::start().await;
    // Both workers at their soft cap and 30 claims waiting: 30 + the reserve of 4 need two
    // workers of 24 slots.
    for item in cluster(&[24, 24]) {
        api.apply(item);
    }
    for i in 0..30 {
        api.apply(unbound_claim("apps", &format!("want-{i}"), Some("proxmox-lvm")));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubelets = kubelets(api.clone(), &pve, Duration::from_secs(1));
    let config = config(&pve, dir.path(), "");
    let (mut headroom, admin) = serve(&api, &config, dir.path());

    // Both join (Ready, CSI registered, provisioning tag dropped) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let workers: Vec<Value> = pve
            .vms()
            .await
            .into_iter()
            .filter(|v| v["template"] == false)
            .collect();
        let joined = workers
            .iter()
            .filter(|v| v["status"] == "running" && v["config"]["tags"] == "headroom")
            .count();
        if joined == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never two joined: {workers:?}\n{}",
            metrics(&admin).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and a tick after both joins sees nothing in flight and no trigger firing: from then
    // on no plan asks for a VM, so a third can only come from a plan made earlier.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&admin).await;
        let calm = m.contains("headroom_incoming_vms 0")
            && m.contains("headroom_trigger_firing{name=\"freeBlockSlots\"} 0")
            && m.contains("headroom_trigger_firing{name=\"plannedBlockVolumes\"} 0");
        if calm {
            assert!(
                m.contains("headroom_provision_steps_total{step=\"clone\",result=\"ok\"} 2"),
                "{m}"
            );
            assert!(
                !m.lines()
                    .any(|l| l.starts_with("headroom_provision_failures_total{") && !l.ends_with(" 0")),
                "{m}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never calm:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let workers = pve
        .vms()
        .await
        .into_iter()
        .filter(|v| v["template"] == false)
        .count();
    assert_eq!(workers, 2, "exactly the two VMs the claims need");
    // The lease holder recorded its windows and scale times.
    let windows = api.objects_under("/api/v1/namespaces/headroom-system/configmaps");
    assert!(
        windows.iter().any(|c| c["data"]["windows.json"]
            .as_str()
            .is_some_and(|w| w.contains("lastScaleUp"))),
        "{windows:?}"
    );
    kubelets.abort();
    headroom.kill().await.unwrap();
}

/// `headroom status --output json` against the stand-in API server.
async fn status(api: &ApiServer, config: &Path, dir: &Path) -> Value {
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("status")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir))
        .args(["--output", "json"])
        .env_remove("HEADROOM_CONFIG")
        .env("POD_NAMESPACE", "headroom-system")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_short_scale_down_window_removes_one_node_per_window_and_stops_while_calm() {
    install_crypto();
    let mut pve = FakePve::start().await;
    pve.add_template().await;
    let api = ApiServer::start().await;
    // Four workers at 8 of 24: 32 volumes. Without one, 40 slots stay free; without two, 16;
    // without three the last would need 32 of its 24 — freeBlockSlots would fire.
    for item in cluster(&[8, 8, 8, 8]) {
        api.apply(item);
    }
    api.place_evicted_pods();
    for (i, node) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
        let vmid = 201 + i;
        pve.cmd(serde_json::json!({"op": "add_vm", "vmid": vmid, "name": node, "status": "running",
            "config": {"tags": "headroom", "memory": "2048", "scsi0": format!("local-lvm:vm-{vmid}-disk-0")}}))
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        &pve,
        dir.path(),
        "scaleDown:\n  maxNodeBlockVolumes: {atMost: 24}\n  memoryRequestRatio: {below: 0.9}\n  \
         memoryLimitRatio: {below: 2.0}\n  for: 5s\n  drainTimeout: 20s\n  action: shutdown\n",
    );
    let (mut headroom, admin) = serve(&api, &config, dir.path());

    // Two removals, one per window: the second waits a whole window on the smaller cluster.
    let started = tokio::time::Instant::now();
    let mut deleted_at = Vec::new();
    while deleted_at.len() < 2 {
        let deletes = api.node_deletes();
        if deletes.len() > deleted_at.len() {
            deleted_at.push(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{deletes:?}\n{}",
            metrics(&admin).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        deleted_at[1] - deleted_at[0] >= Duration::from_secs(4),
        "removals {deleted_at:?} closer than the 5 s window"
    );
    // The third is refused, by the same tick `status` runs on the same inputs (the durable
    // windows included): the conditions held, but the last node cannot take the other's 16
    // volumes under its soft cap.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&api, &config, dir.path()).await;
        let held = s["scaleDown"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["sustained"] == true);
        let refused = s["provisioner"]["scaleDownRefusals"].as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r.as_str()
                    .unwrap()
                    .contains("cannot take its 16 pods under their soft caps")
            })
        });
        if held && refused {
            assert_eq!(s["provisioner"]["plan"]["action"], "nothing", "{s}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.node_deletes().len(), 2, "{:?}", api.node_deletes());
    // The drained nodes' VMs are cold spares; every evicted pod runs again elsewhere.
    let spares = pve
        .vms()
        .await
        .into_iter()
        .filter(|v| v["config"]["tags"] == "headroom;headroom-spare" && v["status"] == "stopped")
        .count();
    assert_eq!(spares, 2);
    let deleted = api.node_deletes();
    let pods = api.all("Pod");
    assert_eq!(pods.len(), 32, "every pod still exists");
    assert!(
        pods.iter()
            .all(|p| !deleted.iter().any(|n| p["spec"]["nodeName"] == n.as_str())),
        "none left on a removed node"
    );
    headroom.kill().await.unwrap();
}

/// Rebalancing in the live loop, without Proxmox (a move changes only the cluster): n1 holds 8
/// block volumes and n2 1. One pod at a time is evicted through the Eviction API, its
/// replacement comes back on n2, and the moves stop once the spread is at most `stopAt`. The pod
/// a disruption budget protects is refused once and then passed over.
#[tokio::test]
async fn serve_rebalances_one_pod_at_a_time_and_passes_over_a_protected_pod() {
    install_crypto();
    let api = ApiServer::start().await;
    for item in cluster(&[8, 1]) {
        api.apply(item);
    }
    api.place_evicted_pods();
    // The first pick (fewest volumes, least memory, then by name) is n1-c0-pod.
    api.protect("apps/n1-c0-pod");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "rebalance: {enabled: true, startAt: 4, stopAt: 2, interval: 1s}\n",
    )
    .unwrap();
    let (mut headroom, admin) = serve(&api, &config, dir.path());

    // 8/1 → 7/2 → 6/3 → 5/4: three moves, after one refusal.
    let moved = "headroom_rebalance_moves_total{cause=\"rebalance\",result=\"moved\"} 3";
    let m = metrics_showing(&admin, moved).await;
    assert!(
        m.contains("headroom_rebalance_moves_total{cause=\"rebalance\",result=\"blocked\"} 1"),
        "{m}"
    );
    let on = |node: &str| {
        api.all("Pod")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert_eq!((on("n1"), on("n2")), (5, 4));
    assert!(
        api.get("Pod", "apps/n1-c0-pod")
            .is_some_and(|p| p["spec"]["nodeName"] == "n1"),
        "the protected pod stayed"
    );
    // Events are posted by the recorder's own task, after the moves are counted.
    let told = |reason: &str| {
        api.objects_under("/apis/events.k8s.io/v1/namespaces/apps/events")
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    };
    until("three HeadroomMove Events and one HeadroomMoveFailed", || {
        told("HeadroomMove") == 3 && told("HeadroomMoveFailed") == 1
    })
    .await;
    // Stopped at the spread: `status` on the same inputs says balanced, and no fourth move
    // came in the ticks since (each tick is counted).
    let s = status(&api, &config, dir.path()).await;
    assert_eq!(s["rebalance"]["spread"], 1, "{s}");
    assert_eq!(s["rebalance"]["next"]["state"], "balanced", "{s}");
    let from = plan_ticks(&metrics(&admin).await);
    while plan_ticks(&metrics(&admin).await) < from + 20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics(&admin).await;
    assert!(m.contains(moved), "{m}");
    headroom.kill().await.unwrap();
}

/// A LUN-cap incident in the live loop, without Proxmox: the attach-detach controller's
/// `FailedAttachVolume … no free lun found` Event and the attachment's error arrive through the
/// watches; the trigger fires and the stuck pod is evicted, to come back on the node with room.
#[tokio::test]
async fn serve_moves_the_pod_a_no_free_lun_event_names() {
    install_crypto();
    let api = ApiServer::start().await;
    for item in cluster(&[23, 2]) {
        api.apply(item);
    }
    api.place_evicted_pods();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "softCap: 24\n").unwrap();
    let (mut headroom, admin) = serve(&api, &config, dir.path());
    // Once it runs: the stuck pod, then the Event about it.
    metrics_showing(&admin, "headroom_source_synced 1").await;
    let message = "AttachVolume.Attach failed for volume \"pv-db-data\" : rpc error: code = Internal desc = no free lun found";
    for item in bound_claim("apps", "db-data", "proxmox-lvm") {
        api.apply(item);
    }
    api.apply(with(attachment("va-db", BLOCK, "n1", "pv-db-data", false), |v| {
        v["status"]["attachError"] = serde_json::json!({"message": message})
    }));
    api.apply(pod("apps", "db-0", Some("n1"), &["db-data"], "1Gi"));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "db-0.18a2f3c4d5e6f7a8", "namespace": "apps"},
        "involvedObject": {"kind": "Pod", "namespace": "apps", "name": "db-0"},
        "reason": "FailedAttachVolume", "message": message, "type": "Warning",
        "source": {"component": "attachdetach-controller"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1}));

    let moved = "headroom_rebalance_moves_total{cause=\"lun-cap-incident\",result=\"moved\"} 1";
    let m = metrics_showing(&admin, moved).await;
    assert!(
        m.contains("headroom_trigger_firing{name=\"lunCapIncidents\"} 1"),
        "{m}"
    );
    let pods = api.all("Pod");
    let db: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["name"].as_str().unwrap().starts_with("db-0"))
        .collect();
    assert_eq!(db.len(), 1, "{db:?}");
    assert_eq!(
        db[0]["spec"]["nodeName"], "n2",
        "placed again on the node with room: {db:?}"
    );
    // The Event is posted by the recorder's own task, after the move is counted.
    until("the HeadroomMove Event naming n1", || {
        api.objects_under("/apis/events.k8s.io/v1/namespaces/apps/events")
            .iter()
            .any(|e| {
                e["reason"] == "HeadroomMove"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("found no free LUN on n1"))
            })
    })
    .await;
    headroom.kill().await.unwrap();
}
