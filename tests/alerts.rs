//! The alert rules: promtool checks and unit tests, every metric they name is exported, and a
//! real Prometheus scraping a running headroom sees the denial alert go pending.

mod support;

use std::{path::Path, process::Command, time::Duration};

use serde_json::{Value, json};

const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
const BIN: &str = env!("CARGO_BIN_EXE_headroom");

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "{name} is not installed: run ./scripts/test.sh, which installs it (Debian package prometheus)"
    );
    Command::new(name)
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let check = tool("promtool")
        .args(["check", "rules", "rules.yaml"])
        .current_dir(RULES_DIR)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = tool("promtool")
        .args(["test", "rules", "rules_test.yaml"])
        .current_dir(RULES_DIR)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// Every alert has a unit test that sees it fire.
#[test]
fn every_alert_is_unit_tested() {
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Path::new(RULES_DIR).join("rules.yaml")).unwrap())
            .unwrap();
    let tests = std::fs::read_to_string(Path::new(RULES_DIR).join("rules_test.yaml")).unwrap();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no unit test"
        );
    }
}

#[tokio::test]
async fn a_real_prometheus_scraping_headroom_sees_the_denial_alert_go_pending() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("full.json");
    std::fs::write(&snapshot, support::list(support::cluster(&[24, 24])).to_string()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "enforcement: deny\n").unwrap();
    let (port, admin) = (support::free_port(), support::free_port());
    let mut serve = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--plan-interval",
            "200ms",
        ])
        .env_remove("HEADROOM_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let line = tokio::io::BufReader::new(serve.stdout.take().unwrap())
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    let ca = line
        .split("(CA: ")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .unwrap()
        .to_owned();
    let client = support::tls_client(Path::new(&ca), &[b"http/1.1"]);

    // A PVC of a block class with no room and nothing coming: denied.
    let mut review: Value = serde_json::from_str(include_str!("data/admission/pvc-create.json")).unwrap();
    review["request"]["namespace"] = json!("apps");
    let deny = || async {
        let r = client
            .post(format!("https://localhost:{port}/validate"))
            .header("content-type", "application/json")
            .body(review.to_string())
            .send()
            .await;
        r.ok().map(|r| r.status().as_u16())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while deny().await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "headroom never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad = client
        .post(format!("https://localhost:{port}/mutate"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 415);
    // An extender filter that rejects both (full) nodes.
    let args = json!({"Pod": {"metadata": {"name": "db-0", "namespace": "apps", "uid": "u"}, "spec": {"containers": [],
        "volumes": [{"name": "data", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "proxmox-lvm"}}}}]}},
        "Nodes": null, "NodeNames": ["n1", "n2"]});
    let filtered: Value = client
        .post(format!("https://localhost:{port}/extender/filter"))
        .header("content-type", "application/json")
        .body(args.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["NodeNames"], json!([]), "{filtered}");

    // Every metric the rules name is exported, once a planning tick has published its gauges
    // (ghost disks need Proxmox: the provisioner tests assert `headroom_ghost_disks{node=…}`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let text = support::get_text(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .unwrap_or_default();
        if support::plan_ticks(&text) >= 1 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no planning tick ran:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // … and every metric the Grafana dashboard queries.
    let rules = std::fs::read_to_string(Path::new(RULES_DIR).join("rules.yaml")).unwrap()
        + &std::fs::read_to_string(Path::new(RULES_DIR).join("../grafana/headroom-dashboard.json")).unwrap();
    let mut names: Vec<&str> = rules
        .match_indices("headroom_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            &rest[..rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())]
        })
        // Ghost disks and the Proxmox-side gauges need Proxmox: the provisioner tests see them.
        .filter(|n| n.len() > "headroom_".len())
        .filter(|n| {
            ![
                "headroom_ghost_disks",
                "headroom_attachment_drift",
                "headroom_worker_vms",
                "headroom_provisioned_resources",
                "headroom_provision_steps_total",
            ]
            .contains(n)
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 9, "{names:?}");
    for name in &names {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name} is not exported:\n{metrics}"
        );
    }
    assert!(metrics.contains("verdict=\"deny\""), "{metrics}");

    // A real Prometheus: scrape every second, evaluate the shipped rules every second.
    let prom_port = support::free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}/rules.yaml]\n\
             scrape_configs:\n  - job_name: headroom\n    static_configs: [{{targets: ['127.0.0.1:{admin}']}}]\n",
            RULES_DIR
        ),
    )
    .unwrap();
    let _check = tool("prometheus");
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let state = loop {
        // Keep denying, so the rate over the window stays above zero.
        deny().await;
        let alerts = reqwest::get(format!("http://127.0.0.1:{prom_port}/api/v1/alerts")).await;
        if let Ok(r) = alerts
            && let Ok(body) = r.json::<Value>().await
            && let Some(a) = body["data"]["alerts"].as_array().and_then(|a| {
                a.iter()
                    .find(|a| a["labels"]["alertname"] == "HeadroomAdmissionDenied")
            })
        {
            assert_eq!(a["labels"]["kind"], "PersistentVolumeClaim");
            assert_eq!(a["labels"]["reason"], "no-capacity");
            break a["state"].as_str().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never saw the denial alert"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(state == "pending" || state == "firing", "{state}");
    prometheus.kill().await.unwrap();
    serve.kill().await.unwrap();
}
