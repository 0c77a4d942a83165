//! The binary as an operator runs it: status on the seed snapshot, bad input, snapshot round trip.

mod support;

use std::{path::Path, process::Output};

use serde_json::Value;
use support::apiserver::ApiServer;

const BIN: &str = env!("CARGO_BIN_EXE_headroom");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.yaml");
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml");

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("HEADROOM_CONFIG")
        .output()
        .await
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counts(status: &Value) -> Vec<(String, i64)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["blockVolumes"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn status_on_the_seed_snapshot_shows_the_runbook_counts() {
    let s = json_of(
        &run(&[
            "status",
            "--snapshot",
            SEED,
            "--config",
            CONFIG,
            "--output",
            "json",
        ])
        .await,
    );
    let want = [
        ("k8s-master", 0),
        ("k8s-node1", 9),
        ("k8s-node2", 12),
        ("k8s-node3", 12),
        ("k8s-node4", 12),
        ("k8s-node5", 3),
        ("k8s-node6", 21),
    ];
    let want: Vec<(String, i64)> = want.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(counts(&s), want);
    let node = |name: &str| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(node("k8s-node6")["softCap"], 24);
    assert_eq!(node("k8s-node6")["hardCap"], 28);
    assert_eq!(node("k8s-master")["schedulable"], false);
    assert_eq!(
        node("k8s-node1")["schedulable"],
        true,
        "PreferNoSchedule keeps the GPU node schedulable"
    );
    assert_eq!(node("k8s-node1")["gpus"], 1);
    assert_eq!(s["cluster"]["pendingBlockClaims"], 3);
    assert_eq!(
        s["cluster"]["freeBlockSlots"],
        (24 - 9) + 3 * (24 - 12) + (24 - 3) + (24 - 21) - 3
    );
    let names: Vec<&str> = s["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "freeBlockSlots",
            "memoryRequestRatio",
            "plannedBlockVolumes",
            "lunCapIncidents",
            "podEvictions"
        ]
    );
    assert_eq!(s["signals"][0]["name"], "maxNodeBlockVolumes");

    let table = run(&["status", "--snapshot", SEED]).await;
    let table = String::from_utf8(table.stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("k8s-node6")).unwrap();
    assert!(
        row.contains("   21      24/28  [#####################...|"),
        "{row}"
    );
    assert!(table.contains("freeBlockSlots 72"), "{table}");
}

/// One line on stderr starting `error:` that contains `needles`, and a failing exit code.
async fn assert_fails(args: &[&str], needles: &[&str]) {
    let out = run(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: want {n:?} in {stderr}");
    }
}

#[tokio::test]
async fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let missing = dir.path().join("nope.yaml").display().to_string();
    assert_fails(&["status", "--snapshot", &missing], &["nope.yaml", "cannot read"]).await;

    let malformed = write(
        "bad.yaml",
        "kind: List\nitems:\n- {kind: Node, apiVersion: v1, metadata: {name: ok}}\n\
         - {kind: Pod, apiVersion: v1, metadata: {name: web-0, namespace: shop}, spec: {containers: {}}}\n",
    );
    assert_fails(
        &["status", "--snapshot", &malformed],
        &["bad.yaml", "items[1] (Pod shop/web-0)", "spec.containers"],
    )
    .await;

    let syntax = write("syntax.yaml", "kind: List\nitems: [\n");
    assert_fails(&["status", "--snapshot", &syntax], &["syntax.yaml", "not valid"]).await;

    let unknown = write("unknown.yaml", "softCap: 20\nsoftcapp: 3\n");
    assert_fails(
        &["check-config", "--config", &unknown],
        &["unknown.yaml", "`softcapp`", "unknown field"],
    )
    .await;
    assert_fails(
        &["status", "--snapshot", SEED, "--config", &unknown],
        &["unknown.yaml", "`softcapp`"],
    )
    .await;

    let wrong = write("wrong.yaml", "triggers:\n  freeBlockSlots: {below: lots}\n");
    assert_fails(
        &["check-config", "--config", &wrong],
        &["wrong.yaml", "`triggers.freeBlockSlots.below`", "invalid type"],
    )
    .await;
}

#[tokio::test]
async fn check_config_prints_the_effective_config_which_reads_back() {
    let out = run(&["check-config", "--config", CONFIG]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "blockDriver: csi.proxmox.sinextra.dev",
        "softCap: 24",
        "hardCapDefault: 29",
        "for: 720h",
        "action: shutdown",
    ] {
        assert!(text.contains(key), "want {key:?} in\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("effective.yaml");
    std::fs::write(&again, &text).unwrap();
    let out2 = run(&["check-config", "--config", again.to_str().unwrap()]).await;
    assert_eq!(
        String::from_utf8(out2.stdout).unwrap(),
        text,
        "the effective config is a fixed point"
    );
    // Defaults only, without a file.
    let defaults = run(&["check-config"]).await;
    assert!(
        String::from_utf8(defaults.stdout)
            .unwrap()
            .contains("softCap: 24")
    );
}

#[tokio::test]
async fn snapshot_then_status_gives_the_same_json_as_the_live_source() {
    let server = ApiServer::start().await;
    let seed: Value = serde_saphyr::from_str(&std::fs::read_to_string(SEED).unwrap()).unwrap();
    for item in seed["items"].as_array().unwrap() {
        server.apply(item.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let file = dir.path().join("snap.json");
    let out = run(&[
        "snapshot",
        "--kubeconfig",
        kubeconfig,
        "--out",
        file.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(!written.contains("managedFields") && !written.contains("last-applied-configuration"));

    let live = json_of(
        &run(&[
            "status",
            "--kubeconfig",
            kubeconfig,
            "--config",
            CONFIG,
            "-o",
            "json",
        ])
        .await,
    );
    let from_file = json_of(
        &run(&[
            "status",
            "--snapshot",
            file.to_str().unwrap(),
            "--config",
            CONFIG,
            "-o",
            "json",
        ])
        .await,
    );
    let from_seed = json_of(&run(&["status", "--snapshot", SEED, "--config", CONFIG, "-o", "json"]).await);
    assert_eq!(from_file, live);
    assert_eq!(from_file, from_seed);
    assert!(Path::new(&file).exists());
}

#[tokio::test]
async fn serve_on_the_seed_snapshot_answers_over_tls_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let (port, admin) = (support::free_port(), support::free_port());
    let mut child = serve_seed("50ms", port, admin);
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = stdout
        .next_line()
        .await
        .unwrap()
        .expect("serve prints where its throw-away certificate is");
    let ca = line
        .split("(CA: ")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .expect(&line)
        .to_owned();
    // The throw-away pair is private: its directory 0700, its key 0600.
    let dir = std::path::Path::new(&ca).parent().unwrap().to_owned();
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&dir.join("tls.key")), 0o600);
    let client = support::tls_client(std::path::Path::new(&ca), &[b"http/1.1"]);
    let mut review: Value = serde_json::from_str(include_str!("data/admission/pod-create.json")).unwrap();
    review["request"]["namespace"] = "immich".into();
    review["request"]["object"]["spec"]["volumes"] =
        serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-elements-0"}}]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let response = loop {
        match client
            .post(format!("https://localhost:{port}/mutate?timeout=5s"))
            .header("content-type", "application/json")
            .body(review.to_string())
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "serve never answered: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["patchType"], "JSONPatch",
        "the pending block claim is steered: {body}"
    );
    support::install_crypto();
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = support::get_text(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap();
    assert!(metrics.contains("headroom_admission_requests_total{kind=\"Pod\",operation=\"CREATE\",verdict=\"allow\",reason=\"patched\"} 1"), "{metrics}");

    // The planning loop publishes the cluster gauges on each evaluation.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let metrics = loop {
        let text = support::get_text(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .unwrap();
        if text.contains("headroom_node_block_volumes{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cluster gauges: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for line in [
        "headroom_node_block_volumes{node=\"k8s-node6\"} 21",
        "headroom_node_block_soft_cap{node=\"k8s-node6\"} 24",
        "headroom_node_block_hard_cap{node=\"k8s-master\"} 29",
        "headroom_cluster_free_block_slots 72",
        "headroom_trigger_firing{name=\"freeBlockSlots\"} 0",
        "headroom_signal_firing{name=\"maxNodeBlockVolumes\"} 0",
        "headroom_nodes{state=\"total\"} 7",
        "headroom_nodes{state=\"schedulable\"} 6",
    ] {
        assert!(metrics.contains(line), "want {line} in\n{metrics}");
    }

    let pid = child.id().unwrap() as i32;
    assert_eq!(unsafe_kill(pid), 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    assert!(!dir.exists(), "the throw-away pair goes with the process");
}

/// Sends SIGTERM through the `kill` command (no libc binding needed).
fn unsafe_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}

/// A config for fakepve (one host, template 2000) with `extra` lines of the `proxmox:` section.
fn pve_config(pve: &support::fakepve::FakePve, dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, &pve.token).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "proxmox:\n  url: {}\n  tokenFile: {}\n  caFile: {}\n  hosts: [{{name: pve1, template: 2000, storage: local-lvm}}]\n{extra}",
            pve.url,
            token.display(),
            pve.ca
        ),
    )
    .unwrap();
    config
}

/// `status` as a table.
async fn status_table(snapshot: &str, config: &str) -> String {
    String::from_utf8(
        run(&["status", "--snapshot", snapshot, "--config", config])
            .await
            .stdout,
    )
    .unwrap()
}

#[tokio::test]
async fn serve_provisions_when_the_snapshot_crosses_a_trigger_and_status_shows_it() {
    support::install_crypto();
    let mut pve = support::fakepve::FakePve::start().await;
    pve.add_template().await;
    let dir = tempfile::tempdir().unwrap();
    // Two workers at their soft cap: freeBlockSlots 0 < 4 fires.
    let snapshot = dir.path().join("full.json");
    std::fs::write(&snapshot, support::list(support::cluster(&[24, 24])).to_string()).unwrap();
    let config = pve_config(
        &pve,
        dir.path(),
        "  vm: {memoryMiB: 2048}\n  hostMemoryReserveMiB: 512\n  joinTimeout: 10m\n",
    );
    let (snapshot, config) = (snapshot.to_str().unwrap(), config.to_str().unwrap());
    let admin = support::free_port();
    let mut serve = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--snapshot",
            snapshot,
            "--config",
            config,
            "--plan-interval",
            "100ms",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", support::free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .env_remove("HEADROOM_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let worker = loop {
        let vms = pve.vms().await;
        if let Some(vm) = vms
            .iter()
            .find(|v| v["template"] == false && v["status"] == "running")
        {
            break vm.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no worker cloned and started: {vms:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        worker["config"]["tags"], "headroom;headroom-provisioning",
        "joining: still in flight"
    );

    let s = json_of(&run(&["status", "--snapshot", snapshot, "--config", config, "-o", "json"]).await);
    assert_eq!(s["provisioner"]["mode"], "proxmox");
    assert_eq!(s["provisioner"]["incomingVms"], 1);
    assert_eq!(
        s["provisioner"]["inFlight"],
        serde_json::json!([format!(
            "{} (VM {})",
            worker["name"].as_str().unwrap(),
            worker["vmid"]
        )])
    );
    assert_eq!(
        s["cluster"]["room"], 24,
        "the incoming VM's slots count in the projection"
    );
    let table = status_table(snapshot, config).await;
    assert!(table.contains("provisioning: k8s-node1 (VM 207)"), "{table}");

    // Still one VM after ten more ticks, each planning on the same firing trigger: the
    // in-flight provision covers the intent.
    let ticks = || async {
        let text = support::get_text(&format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .unwrap_or_default();
        support::plan_ticks(&text)
    };
    let seen = ticks().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while ticks().await < seen + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the planner stopped ticking"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let clones = pve
        .requests()
        .await
        .into_iter()
        .filter(|r| r.0 == "POST" && r.1.ends_with("/clone"))
        .count();
    assert_eq!(clones, 1, "one clone in all those ticks");
    assert_eq!(
        pve.vms().await.iter().filter(|v| v["template"] == false).count(),
        1
    );
    serve.kill().await.unwrap();
}

#[tokio::test]
async fn readyz_turns_200_only_with_the_first_ticks_gauges_published() {
    // A planning interval of an hour: only the first tick, at start, can publish the gauges.
    support::install_crypto();
    let admin = support::free_port();
    let mut child = serve_seed("1h", support::free_port(), admin);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let metrics = support::get_text(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.contains("headroom_cluster_free_block_slots 72"),
        "the seed's 72 free slots at the first 200, not 0:\n{metrics}"
    );
    child.kill().await.unwrap();
}

/// `headroom serve` on the seed snapshot with the example config (stdout piped: it prints
/// where its throw-away certificate is).
fn serve_seed(plan_interval: &str, port: u16, admin: u16) -> tokio::process::Child {
    let args = ["--config", CONFIG, "--plan-interval", plan_interval];
    spawn_serve(
        &args.map(std::ffi::OsStr::new),
        port,
        admin,
        std::process::Stdio::piped(),
    )
}

/// `headroom serve --snapshot SEED` with `args`, listening on `port` and `admin`.
fn spawn_serve(
    args: &[&std::ffi::OsStr],
    port: u16,
    admin: u16,
    stdout: std::process::Stdio,
) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["serve", "--snapshot", SEED])
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env_remove("HEADROOM_CONFIG")
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The composition root wires `tls:` from the config file: with a client CA set, `serve` turns
/// away a caller without a certificate in the handshake and answers the API server's.
#[tokio::test]
async fn serve_with_tls_client_ca_requires_the_callers_certificates() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let status = std::process::Command::new(BIN)
        .args([
            "certs",
            "--service",
            "localhost",
            "--client",
            "kube-apiserver",
            "--out",
        ])
        .arg(&certs)
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  clientCAFile: {}\n  allowedClientNames: [kube-apiserver]\n",
            certs.join("ca.crt").display()
        ),
    )
    .unwrap();
    let (port, admin) = (support::free_port(), support::free_port());
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    let args = [
        "--config".as_ref(),
        config.as_os_str(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ];
    let _child = spawn_serve(&args, port, admin, std::process::Stdio::null());
    let client =
        |identity: bool| support::certs_client(&certs, identity.then_some("kube-apiserver"), &[b"http/1.1"]);
    let review = include_str!("data/admission/pod-create.json");
    let post = |client: reqwest::Client| async move {
        client
            .post(format!("https://localhost:{port}/validate?timeout=5s"))
            .header("content-type", "application/json")
            .body(review)
            .send()
            .await
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let answer = loop {
        match post(client(true)).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "serve never answered: {e:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(answer.status(), 200);
    let refused = post(client(false)).await.expect_err("no certificate");
    assert!(!refused.is_status(), "refused in the handshake: {refused:?}");
}

/// `status` with Proxmox names each ghost disk and what repair would do: with
/// `ghostDisks.repair: off` a dry-run line, and a disk a PV names is kept for the operator.
#[tokio::test]
async fn status_shows_what_ghost_repair_would_do() {
    support::install_crypto();
    let mut pve = support::fakepve::FakePve::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut items = support::cluster(&[1, 1]);
    items.push(serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-bbb"},
        "spec": {"csi": {"driver": support::BLOCK, "volumeHandle": "homelab/pve1/local-lvm/vm-9999-pvc-bbb"}}}));
    let snapshot = dir.path().join("cluster.json");
    std::fs::write(&snapshot, support::list(items).to_string()).unwrap();
    // n1's VM holds two CSI disks no attachment names.
    pve.cmd(
        serde_json::json!({"op": "add_vm", "vmid": 201, "name": "n1", "status": "running", "config": {
        "scsi0": "local-lvm:vm-201-disk-0,size=32G",
        "scsi1": "local-lvm:vm-9999-pvc-aaa,backup=0,size=5G",
        "scsi2": "local-lvm:vm-9999-pvc-bbb,backup=0,size=5G"}}),
    )
    .await;
    let config = pve_config(&pve, dir.path(), "");
    let (snapshot, config) = (snapshot.to_str().unwrap(), config.to_str().unwrap());
    let s = json_of(&run(&["status", "--snapshot", snapshot, "--config", config, "-o", "json"]).await);
    let repairs = s["ghostRepairs"].as_array().unwrap_or_else(|| panic!("{s}"));
    let verdicts: Vec<(&str, &str, &str, bool)> = repairs
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap(),
                r["slot"].as_str().unwrap(),
                r["verdict"]["state"].as_str().unwrap(),
                r["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [("n1", "scsi1", "waiting", false), ("n1", "scsi2", "kept", false)],
        "{s}"
    );
    let table = status_table(snapshot, config).await;
    assert!(
        table.contains(
            "n1 VM 201 scsi1 vm-9999-pvc-aaa: would detach once confirmed (ghostDisks.repair: off)"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "scsi2 vm-9999-pvc-bbb: kept, detach by hand if it is a ghost: PersistentVolume pv-bbb names it"
        ),
        "{table}"
    );
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    // (shell, what its script starts or is recognised by)
    let rows = [
        ("bash", "_headroom()"),
        ("zsh", "#compdef headroom"),
        ("fish", "complete -c headroom"),
    ];
    for (shell, marker) in rows {
        let out = run(&["completions", shell]).await;
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {}", &text[..text.len().min(300)]);
        for sub in ["status", "simulate", "completions"] {
            assert!(text.contains(sub), "{shell} completes {sub}");
        }
    }
    let bad = run(&["completions", "tcsh"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'tcsh'"));
}

/// `kubectl headroom …`: the binary on PATH as `kubectl-headroom` is found by the real kubectl,
/// which hands it every argument, `--context` and `-n` included.
#[tokio::test]
async fn kubectl_finds_the_plugin_and_passes_context_and_namespace() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join("kubectl-headroom")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        tokio::process::Command::new("kubectl")
            .arg("headroom")
            .args(args)
            .env("PATH", &path)
            .env_remove("HEADROOM_CONFIG")
            .env_remove("KUBECONFIG")
            .output()
    };
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.yaml");
    let s = json_of(
        &kubectl(&["status", "--snapshot", seed, "-o", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(s["nodes"].as_array().unwrap().len(), 7);

    // Two contexts: the current one points nowhere, `--context` picks the stand-in.
    let api = support::apiserver::ApiServer::start().await;
    for item in support::cluster(&[3, 1]) {
        api.apply(item);
    }
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{}\"}}\n\
             - name: gone\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\n\
             users:\n- name: u\n  user: {{token: test}}\ncontexts:\n\
             - name: lab\n  context: {{cluster: stand-in, user: u}}\n\
             - name: old\n  context: {{cluster: gone, user: u}}\ncurrent-context: old\n",
            api.url(),
            support::free_port()
        ),
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let live = ["status", "--kubeconfig", kc, "--sync-timeout", "5s", "-o", "json"];
    let s = json_of(
        &kubectl(&[&live[..], &["--context", "lab", "-n", "headroom-lab"]].concat())
            .await
            .unwrap(),
    );
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2, "{s}");
    // The persisted windows are read from the namespace -n names.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("/namespaces/headroom-lab/configmaps/headroom-windows")),
        "{:?}",
        api.requests()
    );
    let old = kubectl(&live).await.unwrap();
    assert!(!old.status.success(), "the current context reaches nothing");
}

/// The README's picture is what `simulate --plot` draws today, and it is an SVG with the four
/// panels and a line per policy in each.
#[tokio::test]
async fn the_readme_plot_is_what_simulate_draws() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("incident.svg");
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scenarios/incident-2026-05-26.yaml"
    );
    let out = run(&[
        "simulate",
        "--scenario",
        scenario,
        "--plot",
        svg.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    for panel in [
        "schedulable nodes",
        "pods waiting",
        "free block slots under the soft cap",
        "block volumes on the fullest node",
    ] {
        assert!(drawn.contains(panel), "{panel}");
    }
    // Per panel, each policy's line and its legend entry, in the policy's colour.
    for colour in ["#1F77B4", "#D62728"] {
        let drawn_in = drawn.matches(&format!("stroke=\"{colour}\"")).count();
        assert_eq!(drawn_in, 4 * 2, "{colour}");
    }
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/img/incident-2026-05-26.svg"
    ))
    .unwrap();
    assert!(
        drawn == committed,
        "docs/img/incident-2026-05-26.svg is stale: run `headroom simulate --scenario examples/scenarios/incident-2026-05-26.yaml --plot docs/img/incident-2026-05-26.svg`"
    );
}

/// The README's `status` table is what the first set-up command prints today, column for
/// column (a name type that ignored the width once shifted every row).
#[tokio::test]
async fn the_readme_status_table_is_what_status_prints() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme
        .split("## What `status` shows")
        .nth(1)
        .expect("the README shows a status table");
    let shown = section
        .split("```")
        .nth(1)
        .expect("in a code block")
        .trim_start_matches('\n');
    let out = run(&[
        "status",
        "--snapshot",
        &format!("{root}/examples/seed-cluster.yaml"),
        "--config",
        &format!("{root}/examples/config.yaml"),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim_end(), shown.trim_end());
}
