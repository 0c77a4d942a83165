//! The provisioner against fakepve (a fake of the PVE API with tasks, locks, tokens and PVE's
//! own error catalogue) and the stand-in API server (Nodes register through its watch).

mod support;

use std::{sync::Arc, time::Duration};

use headroom::{
    clock::Clock,
    config::Config,
    decide::{
        actuation::{ActuatorStatus, OutcomeKind},
        planner::Plan,
        time::Timestamp,
    },
    events::EventSink,
    provisioner::{self, Actuator, Planned},
    proxmox::{
        client::{Auth, PveClient, PveError, Secret},
        tls::Trust,
    },
    read_model::ReadModel,
    shared_index::SharedIndex,
    source::live,
};
use serde_json::{Value, json};
use support::{apiserver::ApiServer, fakepve::FakePve, *};
use tokio::sync::watch;

struct Rig {
    pve: FakePve,
    api: ApiServer,
    app: Arc<ReadModel>,
    /// The Events the actuator planned.
    events: std::sync::Mutex<tokio::sync::mpsc::Receiver<headroom::events::PlannedEvent>>,
    _dir: tempfile::TempDir,
}

/// The workers' cloud-init of most tests: `{n}` numbering.
const NUMBERED: &str = "cloudInit: {user: ops, sshKeys: [\"ssh-ed25519 AAAAC3Nz+x/y= ops@laptop\"], ipconfig0: \"ip=10.0.20.{n}/22,gw=10.0.20.1\"}";

fn config_for(pve: &FakePve, dir: &std::path::Path, addressing: &str, extra: &str) -> Config {
    let token = dir.join("pve-token");
    std::fs::write(&token, format!("{}\n", pve.token)).unwrap();
    let yaml = format!(
        "proxmox:\n  url: {}\n  tokenFile: {}\n  fingerprint: \"{}\"\n  hosts: [{{name: pve1, template: 2000, storage: local-lvm}}]\n  \
         vm: {{cores: 4, memoryMiB: 2048, namePattern: \"k8s-node{{n}}\", vmidRange: [207, 299], tags: [headroom],\n       \
         {addressing}}}\n  \
         hostMemoryReserveMiB: 1024\n  joinTimeout: 60s\n  maxNodes: 10\nscaleDown: {{drainTimeout: 2s}}\n{extra}",
        pve.url,
        token.display(),
        pve.fingerprint
    );
    Config::parse("test.yaml", &yaml).unwrap()
}

impl Rig {
    /// fakepve with a template, a stand-in API server with two full workers, headroom's
    /// state watching it.
    async fn new() -> Self {
        Self::addressed(NUMBERED).await
    }

    /// The same, with `addressing` (cloudInit, ipPool) in `proxmox.vm`.
    async fn addressed(addressing: &str) -> Self {
        Self::configured(addressing, "").await
    }

    /// The same, with `extra` top-level config keys.
    async fn configured(addressing: &str, extra: &str) -> Self {
        // Logs show with a failing test only (the test writer is captured).
        let _ = tracing_subscriber::fmt()
            .with_env_filter("headroom=debug")
            .with_test_writer()
            .try_init();
        let mut pve = FakePve::start().await;
        pve.add_template().await;
        let api = ApiServer::start().await;
        for item in cluster(&[24, 24]) {
            api.apply(item);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&pve, dir.path(), addressing, extra);
        let index = SharedIndex::default();
        tokio::spawn(live::watch_all(api.client(), index.clone()));
        assert!(index.wait_synced(Duration::from_secs(20)).await);
        let (sink, events) = EventSink::channel();
        let app = Arc::new(ReadModel::new(config, index, sink).with_client(Some(api.client())));
        Self {
            pve,
            api,
            app,
            events: std::sync::Mutex::new(events),
            _dir: dir,
        }
    }

    /// Waits until the watched index shows `what`.
    async fn index_shows(&self, what: &str, f: impl Fn(&headroom::index::ClusterState) -> bool) {
        until(what, || self.app.index.with_state(|s, _| f(s))).await;
    }

    /// A fresh actuator (a restarted headroom) and where it publishes its status.
    fn actuator(&self) -> (Actuator, watch::Receiver<ActuatorStatus>) {
        let client = provisioner::client(self.app.config.proxmox.as_ref().unwrap()).unwrap();
        let (publish, status) = watch::channel(ActuatorStatus::default());
        let clock = Clock::starting_at(Timestamp(1_780_000_000_000));
        let actuator = Actuator::new(
            Some(client),
            self.app.clone(),
            Some(self.api.client()),
            publish,
            clock,
        );
        (actuator, status)
    }

    /// Starts a fresh actuator and hands it `plan`, made on its first generation (what the
    /// planner would send it first).
    fn start(&self, plan: Plan) -> Running {
        let (actuator, status) = self.actuator();
        let (plans, rx) = watch::channel(Planned::default());
        let task = tokio::spawn(actuator.run(rx));
        plans.send_replace(Planned { basis: 0, plan });
        Running {
            status,
            _plans: plans,
            task,
        }
    }

    /// Registers a Ready Node and its CSINode for every running worker VM, until aborted.
    fn kubelets(&self) -> tokio::task::JoinHandle<()> {
        kubelets(self.api.clone(), &self.pve, Duration::ZERO)
    }

    /// Runs one plan through a fresh actuator until `done(status)`; returns the status.
    async fn run(&self, plan: Plan, done: impl Fn(&ActuatorStatus) -> bool) -> ActuatorStatus {
        let mut running = self.start(plan);
        let status = running.until(done).await;
        running.task.abort();
        status
    }

    async fn workers(&mut self) -> Vec<Value> {
        self.pve
            .vms()
            .await
            .into_iter()
            .filter(|v| v["template"] == false)
            .collect()
    }

    /// Runs a scale-up through a fresh actuator until the worker VMs (read through the API)
    /// and its status satisfy `done`; returns the status.
    async fn run_until_vms(&self, done: impl Fn(&[Value], &ActuatorStatus) -> bool) -> ActuatorStatus {
        let running = self.start(scale_up());
        let view = FakePveView {
            url: self.pve.url.clone(),
            token: self.pve.token.clone(),
            fp: self.pve.fingerprint.clone(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let workers = view.workers().await;
            let status = running.status.borrow().clone();
            if done(&workers, &status) {
                running.task.abort();
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never done: {workers:?} {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An actuator running in the test.
struct Running {
    status: watch::Receiver<ActuatorStatus>,
    _plans: watch::Sender<Planned>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits (60 s at most) until the published status satisfies `done`.
    async fn until(&mut self, done: impl Fn(&ActuatorStatus) -> bool) -> ActuatorStatus {
        let waited = tokio::time::timeout(Duration::from_secs(60), self.status.wait_for(|s| done(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(status)) => status,
            _ => panic!("actuator did not finish: {:?}", self.status.borrow()),
        }
    }
}

/// What the outcomes say, oldest first.
fn details(status: &ActuatorStatus) -> Vec<String> {
    status.outcomes.iter().map(|o| o.detail.clone()).collect()
}

fn finished(status: &ActuatorStatus) -> bool {
    status
        .outcomes
        .iter()
        .any(|o| matches!(o.kind, OutcomeKind::Added | OutcomeKind::Failed(_)))
}

fn scale_up() -> Plan {
    Plan::ScaleUp {
        count: 1,
        reason: "test: 0 free block slots".into(),
    }
}

#[tokio::test]
async fn scale_up_clones_configures_starts_and_waits_for_the_node() {
    let mut rig = Rig::new().await;
    let kubelets = rig.kubelets();
    let status = rig.run(scale_up(), finished).await;
    kubelets.abort();
    let notes = details(&status);
    assert!(
        notes
            .iter()
            .any(|n| n == "added worker k8s-node1: test: 0 free block slots"),
        "{notes:?}"
    );
    assert!(status.last_scale_up.is_some());

    let workers = rig.workers().await;
    assert_eq!(workers.len(), 1, "exactly one VM: {workers:?}");
    let vm = &workers[0];
    assert_eq!(vm["vmid"], 207, "the lowest free VMID of the range");
    assert_eq!(vm["status"], "running");
    let config = &vm["config"];
    // PVE types config values loosely (numbers may come back as strings).
    let loose = |v: &Value| v.to_string().trim_matches('"').to_owned();
    assert_eq!(loose(&config["cores"]), "4");
    assert_eq!(loose(&config["memory"]), "2048");
    assert_eq!(config["tags"], "headroom", "provisioning tag dropped once joined");
    assert_eq!(config["ciuser"], "ops");
    assert_eq!(
        config["ipconfig0"], "ip=10.0.20.1/22,gw=10.0.20.1",
        "{{n}} of k8s-node1"
    );
    assert!(
        config["description"]
            .as_str()
            .unwrap()
            .starts_with("headroom: worker provisioned by headroom")
    );

    let requests = rig.pve.requests().await;
    let clone = requests
        .iter()
        .find(|r| r.0 == "POST" && r.1.ends_with("/qemu/2000/clone"))
        .expect("a clone");
    for field in ["newid=207", "name=k8s-node1", "full=1", "storage=local-lvm"] {
        assert!(clone.2.contains(field), "clone body {}: want {field}", clone.2);
    }
    assert!(
        !requests.iter().any(|r| r.1.contains("nextid")),
        "VMIDs come from /cluster/resources, not nextid"
    );
    let config_post = requests
        .iter()
        .find(|r| r.0 == "POST" && r.1.ends_with("/qemu/207/config") && r.2.contains("sshkeys"))
        .unwrap();
    // Percent-encoded once by headroom (PVE's format), once more by the form encoder.
    assert!(
        config_post
            .2
            .contains("sshkeys=ssh-ed25519%2520AAAAC3Nz%252Bx%252Fy%253D%2520ops%2540laptop"),
        "{}",
        config_post.2
    );
    assert!(
        !format!("{requests:?}").contains(rig.pve.token.split('=').nth(1).unwrap()),
        "the token secret never appears in a body"
    );
    // kproximate's "provisioned" gauges, from the VMs headroom manages, read by a refresh.
    rig.actuator().0.refresh().await.unwrap();
    let metrics = rig.app.metrics.encode();
    for line in [
        "headroom_worker_vms{state=\"total\"} 1",
        "headroom_worker_vms{state=\"running\"} 1",
        "headroom_provisioned_resources{resource=\"memory\",kind=\"provisioned\"} 2147483648.0",
        "headroom_provision_steps_total{step=\"clone\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "want {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_cold_spare_is_started_before_anything_is_cloned() {
    let mut rig = Rig::new().await;
    rig.pve
        .cmd(json!({"op": "add_vm", "vmid": 205, "name": "k8s-node5", "status": "stopped",
            "config": {"tags": "headroom;headroom-spare", "memory": "2048", "cores": 4, "scsi0": "local-lvm:vm-205-disk-0"}}))
        .await;
    let kubelets = rig.kubelets();
    let notes = details(&rig.run(scale_up(), finished).await);
    kubelets.abort();
    assert!(
        notes.iter().any(|n| n.starts_with("added worker k8s-node5")),
        "{notes:?}"
    );
    let requests = rig.pve.requests().await;
    assert!(
        !requests.iter().any(|r| r.1.ends_with("/clone")),
        "no clone when a spare exists"
    );
    let workers = rig.workers().await;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["status"], "running");
    assert_eq!(workers[0]["config"]["tags"], "headroom");
}

#[tokio::test]
async fn a_new_worker_gets_a_pool_address_no_node_or_vm_uses_and_its_node_labels() {
    let mut rig = Rig::addressed(
        "ipPool: [10.0.20.107-10.0.20.110], cloudInit: {ipconfig0: \"ip={ip}/22,gw=10.0.20.1\"},\n       \
         nodeLabels: {headroom.io/proxmox-host: \"{host}\", topology.kubernetes.io/zone: homelab}",
    )
    .await;
    // .107 is a Node's InternalIP, .108 a hand-made VM's ipconfig0.
    let mut taken = node("gpu-1");
    taken["status"]["addresses"] = json!([{"type": "InternalIP", "address": "10.0.20.107"},
                                          {"type": "Hostname", "address": "gpu-1"}]);
    rig.api.apply(taken);
    rig.pve
        .cmd(
            json!({"op": "add_vm", "vmid": 150, "name": "nas", "status": "running",
            "config": {"memory": "1024", "cores": 1, "ipconfig0": "ip=10.0.20.108/22,gw=10.0.20.1"}}),
        )
        .await;
    rig.index_shows("gpu-1", |s| s.nodes.contains_key("gpu-1")).await;
    let kubelets = rig.kubelets();
    rig.run(scale_up(), finished).await;
    kubelets.abort();
    let workers = rig.workers().await;
    let new = workers
        .iter()
        .find(|v| v["name"] == "k8s-node1")
        .expect("a new worker");
    assert_eq!(new["config"]["ipconfig0"], "ip=10.0.20.109/22,gw=10.0.20.1");
}

#[tokio::test]
async fn a_hand_made_spare_keeps_its_own_cloud_init() {
    let mut rig = Rig::new().await;
    // Not named after the pattern: `{n}` has no value for it, and it needs none.
    rig.pve
        .cmd(
            json!({"op": "add_vm", "vmid": 190, "name": "spare-a", "status": "stopped",
            "config": {"tags": "headroom-spare", "memory": "2048", "cores": 4,
                       "ipconfig0": "ip=10.0.20.150/22,gw=10.0.20.1", "ciuser": "admin"}}),
        )
        .await;
    let kubelets = rig.kubelets();
    let notes = details(&rig.run(scale_up(), finished).await);
    kubelets.abort();
    assert!(
        notes.iter().any(|n| n.starts_with("added worker spare-a")),
        "{notes:?}"
    );
    let workers = rig.workers().await;
    let spare = workers.iter().find(|v| v["name"] == "spare-a").unwrap();
    assert_eq!(spare["status"], "running");
    assert_eq!(spare["config"]["ipconfig0"], "ip=10.0.20.150/22,gw=10.0.20.1");
    assert_eq!(spare["config"]["ciuser"], "admin");
}

#[tokio::test]
async fn attachments_of_a_gone_node_go_only_once_its_vm_is_down() {
    let mut rig = Rig::new().await;
    // k8s-node4 was removed while its VM was off: its attachment is stuck with the
    // external-attacher's finalizer. k8s-node6's Node is gone too, but its VM runs (a reboot,
    // a re-join): nothing is certain there yet.
    rig.pve
        .cmd(json!({"op": "add_vm", "vmid": 204, "name": "k8s-node4", "status": "stopped", "config": {"memory": "2048"}}))
        .await;
    rig.pve
        .cmd(json!({"op": "add_vm", "vmid": 206, "name": "k8s-node6", "status": "running", "config": {"memory": "2048"}}))
        .await;
    let stuck = |name: &str, node: &str| {
        let mut va = attachment(name, BLOCK, node, &format!("pv-{name}"), true);
        va["metadata"]["finalizers"] = json!(["external-attacher/csi-proxmox-sinextra-dev"]);
        va["metadata"]["deletionTimestamp"] = json!("2026-05-26T08:00:00Z");
        va
    };
    rig.api.apply(stuck("va-node4", "k8s-node4"));
    rig.api.apply(stuck("va-node6", "k8s-node6"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig
        .app
        .index
        .with_state(|s, _| !s.attachments.contains_key("va-node6"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never showed the attachments"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: usize = rig.app.index.with_state(|s, _| s.attachments.len());

    // A follower reads, but removes nothing.
    let (follower, _) = rig.actuator();
    let (_lead, not_leading) = watch::channel(false);
    follower.with_leadership(not_leading).refresh().await.unwrap();
    assert!(rig.api.get("VolumeAttachment", "/va-node4").is_some());

    rig.actuator().0.refresh().await.unwrap();
    assert!(
        rig.api.get("VolumeAttachment", "/va-node4").is_none(),
        "finalizer cleared and deleted"
    );
    assert!(rig.api.get("VolumeAttachment", "/va-node6").is_some());
    rig.index_shows("only va-node4 gone", |s| s.attachments.len() == before - 1)
        .await;
    let event = rig.events.lock().unwrap().try_recv().expect("an Event");
    assert_eq!(
        (event.kind.as_str(), event.name.as_str()),
        ("VolumeAttachment", "va-node4")
    );
    assert!(
        rig.app
            .metrics
            .encode()
            .contains("headroom_stale_attachments_total{result=\"removed\"} 1")
    );
}

/// The states Proxmox is left in when the actuator dies after each step.
#[tokio::test]
async fn a_restarted_actuator_finishes_a_half_done_provision_and_makes_no_second_vm() {
    let after_clone = json!({"tags": null, "description": "headroom: worker provisioned by headroom (test)"});
    let after_config = json!({"tags": "headroom;headroom-provisioning", "description": "headroom: worker provisioned by headroom: k8s-node3"});
    for (step, status, config) in [
        ("after clone", "stopped", after_clone),
        ("after config", "stopped", after_config.clone()),
        ("after start", "running", after_config),
    ] {
        let mut rig = Rig::new().await;
        let mut config = config.as_object().unwrap().clone();
        config.retain(|_, v| !v.is_null());
        config.insert("scsi0".into(), json!("local-lvm:vm-207-disk-0"));
        config.insert("memory".into(), json!("2048"));
        rig.pve
            .cmd(
                json!({"op": "add_vm", "vmid": 207, "name": "k8s-node3", "status": status, "config": config}),
            )
            .await;
        let kubelets = rig.kubelets();
        // The planner asks again (the trigger still fires); the new actuator first resumes.
        let status = rig
            .run_until_vms(|workers, status| {
                // Joined, and the actuator has published that nothing is in flight any more.
                status.incoming_vms() == 0
                    && status.outcomes.iter().any(|o| o.kind == OutcomeKind::Added)
                    && workers
                        .iter()
                        .any(|w| w["config"]["tags"] == "headroom" && w["status"] == "running")
            })
            .await;
        let notes = details(&status);
        kubelets.abort();
        let workers = rig.workers().await;
        assert_eq!(
            workers.len(),
            1,
            "{step}: one VM for one intent: {workers:?} {notes:?}"
        );
        assert_eq!(workers[0]["vmid"], 207, "{step}");
        let requests = rig.pve.requests().await;
        assert!(
            !requests.iter().any(|r| r.1.ends_with("/clone")),
            "{step}: nothing cloned"
        );
        // The scale-up plan was made before the resumed provision changed the actuator's
        // state: it was refused, not carried out on top of the resumed VM.
        assert_eq!(
            status.outcomes.len(),
            1,
            "{step}: only the resumed provision: {notes:?}"
        );
    }
}

/// Reads VMs through the API (the harness's stdin belongs to the test body).
struct FakePveView {
    url: String,
    token: String,
    fp: String,
}

impl FakePveView {
    async fn workers(&self) -> Vec<Value> {
        let pve = PveClient::new(
            &self.url,
            &Trust::Fingerprint(self.fp.clone()),
            Auth::Token(Secret::new(self.token.clone())),
        )
        .unwrap();
        let Ok(Value::Array(vms)) = pve.get("/cluster/resources", &[("type", "vm".into())]).await else {
            return vec![];
        };
        let mut out = Vec::new();
        for vm in vms.into_iter().filter(|v| v["template"] == 0) {
            let config = pve
                .get(&format!("/nodes/pve1/qemu/{}/config", vm["vmid"]), &[])
                .await
                .unwrap_or_default();
            out.push(json!({"vmid": vm["vmid"], "status": vm["status"], "config": config}));
        }
        out
    }
}

#[tokio::test]
async fn faults_from_pves_catalogue_are_waited_out_or_fail_cleanly_never_twice() {
    // A storage-lock timeout on clone (twice), then success: one VM.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/2000/clone", "error": "config_lock_timeout", "times": 2})).await;
    let kubelets = rig.kubelets();
    let notes = details(&rig.run(scale_up(), finished).await);
    kubelets.abort();
    assert!(notes.iter().any(|n| n.starts_with("added worker")), "{notes:?}");
    assert_eq!(rig.workers().await.len(), 1);
    let clones = rig
        .pve
        .requests()
        .await
        .into_iter()
        .filter(|r| r.1.ends_with("/clone"))
        .count();
    assert_eq!(clones, 3, "two refused, one done");

    // A clone task ending in TASK ERROR: fails cleanly, no VM left, not retried at once.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/2000/clone", "status": 500, "message": "clone failed: storage full"})).await;
    let notes = details(&rig.run(scale_up(), finished).await);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("provision failed") && n.contains("clone failed: storage full")),
        "{notes:?}"
    );
    assert!(rig.workers().await.is_empty());

    // A 595 on clone (pveproxy lost the answer) where the clone did not happen: re-read, no VM,
    // clean failure; where it did happen it would be found by the re-read instead of recloned.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/2000/clone", "status": 595, "message": "Connection refused"})).await;
    let notes = details(&rig.run(scale_up(), finished).await);
    assert!(notes.iter().any(|n| n.contains("outcome unknown")), "{notes:?}");
    assert!(rig.workers().await.len() <= 1);
    assert_eq!(
        rig.pve
            .requests()
            .await
            .into_iter()
            .filter(|r| r.1.ends_with("/clone"))
            .count(),
        1,
        "never cloned twice"
    );

    // A revoked token: 401, clean failure, nothing created.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "revoke_token"})).await;
    let notes = details(&rig.run(scale_up(), finished).await);
    assert!(
        notes.iter().any(|n| n.contains("refused the credentials")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_locked_vm_is_waited_out() {
    let mut rig = Rig::new().await;
    rig.pve
        .cmd(json!({"op": "add_vm", "vmid": 205, "name": "k8s-node5", "status": "stopped",
            "lock": "backup", "config": {"tags": "headroom;headroom-spare", "memory": "2048", "scsi0": "local-lvm:vm-205-disk-0"}}))
        .await;
    let kubelets = rig.kubelets();
    let mut running = rig.start(scale_up());
    // Every change is refused while the lock is held: wait until PVE has refused one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !rig
        .pve
        .requests()
        .await
        .iter()
        .any(|r| r.0 == "POST" && r.1.contains("/qemu/205/"))
    {
        assert!(tokio::time::Instant::now() < deadline, "no change attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !finished(&running.status.borrow()),
        "cannot start while locked: {:?}",
        running.status.borrow()
    );
    rig.pve.cmd(json!({"op": "unlock", "vmid": 205})).await;
    let status = running.until(finished).await;
    running.task.abort();
    kubelets.abort();
    assert!(
        details(&status)
            .iter()
            .any(|n| n.starts_with("added worker k8s-node5")),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_wrong_pinned_fingerprint_refuses_before_the_token_is_sent() {
    let mut pve = FakePve::start().await;
    let wrong = "00:".repeat(31) + "00";
    let client = PveClient::new(
        &pve.url,
        &Trust::Fingerprint(wrong),
        Auth::Token(Secret::new(pve.token.clone())),
    )
    .unwrap();
    let err = client.get("/cluster/resources", &[]).await.unwrap_err();
    assert!(matches!(err, PveError::Connect(_)), "{err}");
    assert!(err.to_string().contains("fingerprint"), "{err}");
    assert!(pve.requests().await.is_empty(), "no request reached the server");
    let ca = PveClient::new(
        &pve.url,
        &Trust::CaFile(pve.ca.clone()),
        Auth::Token(Secret::new(pve.token.clone())),
    )
    .unwrap();
    assert!(ca.get("/version", &[]).await.is_ok(), "and the CA file works");
    let right = PveClient::new(
        &pve.url,
        &Trust::Fingerprint(pve.fingerprint.clone()),
        Auth::Token(Secret::new(pve.token.clone())),
    )
    .unwrap();
    assert!(right.get("/version", &[]).await.is_ok());
}

#[tokio::test]
async fn ticket_login_with_csrf_on_writes() {
    let mut pve = FakePve::start().await;
    pve.add_template().await;
    let client = PveClient::new(
        &pve.url,
        &Trust::CaFile(pve.ca.clone()),
        Auth::Ticket {
            user: "root@pam".into(),
            password: Secret::new("secret"),
        },
    )
    .unwrap();
    client
        .run_task(
            "/nodes/pve1/qemu/2000/clone",
            &[("newid", "300".into()), ("full", "1".into())],
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let vms = pve.vms().await;
    assert!(vms.iter().any(|v| v["vmid"] == 300));
    let bad = PveClient::new(
        &pve.url,
        &Trust::CaFile(pve.ca.clone()),
        Auth::Ticket {
            user: "root@pam".into(),
            password: Secret::new("nope"),
        },
    )
    .unwrap();
    assert!(matches!(
        bad.get("/version", &[]).await,
        Err(PveError::Auth { .. })
    ));
}

#[tokio::test]
async fn ghost_disks_count_on_their_node_and_the_reverse_drift_is_exported() {
    let mut rig = Rig::new().await;
    let pv = |name: &str, disk: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"csi": {"driver": BLOCK, "volumeHandle": format!("homelab/pve1/local-lvm/{disk}")}}})
    };
    rig.api.apply(pv("pv-aaa", "vm-9999-pvc-aaa"));
    rig.api.apply(pv("pv-bbb", "vm-9999-pvc-bbb"));
    rig.api.apply(attachment("va-aaa", BLOCK, "n2", "pv-aaa", true));
    // The reverse drift: attached by its VolumeAttachment, absent from the VM's config.
    rig.api.apply(pv("pv-ddd", "vm-9999-pvc-ddd"));
    rig.api.apply(attachment("va-ddd", BLOCK, "n2", "pv-ddd", true));
    // n2 is VM 202 through its providerID; its config holds three CSI disks.
    rig.api.apply(with(node("n2"), |v| {
        v["spec"]["providerID"] = json!("proxmox://homelab/202")
    }));
    rig.pve
        .cmd(
            json!({"op": "add_vm", "vmid": 202, "name": "worker-two", "status": "running", "config": {
            "scsi0": "local-lvm:vm-202-disk-0,size=32G",
            "scsi1": "local-lvm:vm-9999-pvc-aaa,backup=0,iothread=1,size=10G,wwn=0x5056432d49443031",
            "scsi2": "local-lvm:vm-9999-pvc-bbb,backup=0,iothread=1,size=10G,wwn=0x5056432d49443032",
            "scsi3": "local-lvm:vm-9999-pvc-ccc,backup=0,iothread=1,size=5G,wwn=0x5056432d49443033"}}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rig.app.index.with_state(|s, _| s.attachments.len()) < 50 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rig.app.view().node("n2").unwrap().block_volumes;
    rig.actuator().0.refresh().await.unwrap();
    let view = rig.app.view();
    let n2 = view.node("n2").unwrap();
    assert_eq!(
        n2.block_volumes,
        before + 2,
        "bbb (PV, no attachment) and ccc (no PV) hold LUNs on n2"
    );
    assert!(
        n2.volume_keys.contains("homelab/pve1/local-lvm/vm-9999-pvc-bbb"),
        "keyed by the PV's handle"
    );
    assert!(n2.volume_keys.contains("ghost:vm-9999-pvc-ccc"));
    let metrics = rig.app.metrics.encode();
    assert!(
        metrics.contains("headroom_ghost_disks{node=\"n2\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("headroom_attachment_drift{node=\"n2\"} 25"),
        "attached by their VolumeAttachments but not in VM 202's config: ddd and the 24 the \
         rig's cluster puts on n2 (aaa is in both):\n{metrics}"
    );
}

async fn worker_vm(rig: &mut Rig, vmid: u32, name: &str) {
    rig.pve
        .cmd(json!({"op": "add_vm", "vmid": vmid, "name": name, "status": "running",
            "config": {"tags": "headroom", "memory": "2048", "scsi0": format!("local-lvm:vm-{vmid}-disk-0")}}))
        .await;
}

fn scale_down(node: &str) -> Plan {
    Plan::ScaleDown {
        node: node.into(),
        reason: "test: quiet for 720h".into(),
        demand: Default::default(),
        singletons: Vec::new(),
    }
}

fn pods_on(api: &ApiServer, rig: &Rig, node: &str) -> usize {
    let _ = api;
    rig.app.index.with_state(|s, _| {
        s.pods
            .values()
            .filter(|p| p.node_name.as_deref() == Some(node))
            .count()
    })
}

#[tokio::test]
async fn scale_down_drains_deletes_the_node_and_keeps_a_cold_spare() {
    let mut rig = Rig::new().await;
    worker_vm(&mut rig, 201, "n1").await;
    assert_eq!(pods_on(&rig.api, &rig, "n1"), 24);
    let singleton = Plan::ScaleDown {
        node: "n1".into(),
        reason: "test: quiet for 720h".into(),
        demand: Default::default(),
        singletons: vec!["apps/n1-c0-pod".into()],
    };
    let status = rig
        .run(singleton, |s| s.outcomes.iter().any(|o| o.subject == "n1"))
        .await;
    assert!(status.removal.is_none() && status.last_scale_down.is_some());
    // The singleton was named in an Event before it was evicted.
    let named: Vec<_> = std::iter::from_fn(|| rig.events.lock().unwrap().try_recv().ok())
        .filter(|e| e.reason == "HeadroomSingletonEvicted")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(
        (named[0].namespace.as_str(), named[0].name.as_str()),
        ("apps", "n1-c0-pod")
    );
    let notes = details(&status);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("removed worker n1 (Shutdown)")),
        "{notes:?}"
    );
    assert_eq!(rig.api.node_deletes(), ["n1"]);
    assert!(rig.api.get("Pod", "apps/n1-c0-pod").is_none(), "evicted");
    let lists: Vec<String> = rig
        .api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch"))
        .collect();
    assert!(
        rig.api.get("Pod", "apps/n2-c0-pod").is_some(),
        "other nodes untouched: {lists:?}"
    );
    let vm = rig
        .pve
        .vms()
        .await
        .into_iter()
        .find(|v| v["vmid"] == 201)
        .unwrap();
    assert_eq!(vm["status"], "stopped");
    assert_eq!(
        vm["config"]["tags"], "headroom;headroom-spare",
        "kept as a cold spare"
    );
    let requests = rig.pve.requests().await;
    assert!(!requests.iter().any(|r| r.0 == "DELETE"), "shutdown, not destroy");
}

#[tokio::test]
async fn a_pdb_that_blocks_eviction_uncordons_and_touches_no_vm() {
    let mut rig = Rig::new().await;
    worker_vm(&mut rig, 201, "n1").await;
    rig.api.protect("apps/n1-c3-pod");
    let status = rig
        .run(scale_down("n1"), |s| s.outcomes.iter().any(|o| o.subject == "n1"))
        .await;
    assert!(status.removal.is_none() && status.last_scale_down.is_some());
    let notes = details(&status);
    assert!(
        notes.iter().any(|n| n.contains("scale-down of n1 abandoned")
            && n.contains("1 pod(s) still on n1")
            && n.contains("PodDisruptionBudget")),
        "{notes:?}"
    );
    let node = rig.api.get("Node", "/n1").expect("node kept");
    assert!(node["spec"]["unschedulable"].is_null(), "uncordoned: {node}");
    assert!(
        node["metadata"]["labels"]["headroom.io/draining"].is_null(),
        "unmarked: {node}"
    );
    assert!(rig.api.node_deletes().is_empty());
    assert!(
        rig.api.get("Pod", "apps/n1-c3-pod").is_some(),
        "the protected pod stays"
    );
    let vm = rig
        .pve
        .vms()
        .await
        .into_iter()
        .find(|v| v["vmid"] == 201)
        .unwrap();
    assert_eq!(vm["status"], "running", "no VM touched");
    assert!(
        !rig.pve
            .requests()
            .await
            .iter()
            .any(|r| r.0 == "POST" && r.1.contains("/qemu/201/")),
        "no call on the VM"
    );
}

#[tokio::test]
async fn start_tasks_ending_in_task_error() {
    // A lock reported by the start task (TASK ERROR: VM is locked) is waited out.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/207/status/start", "error": "locked", "times": 1})).await;
    let kubelets = rig.kubelets();
    let notes = details(&rig.run(scale_up(), finished).await);
    kubelets.abort();
    assert!(
        notes.iter().any(|n| n.starts_with("added worker k8s-node1")),
        "{notes:?}"
    );
    let starts = rig
        .pve
        .requests()
        .await
        .into_iter()
        .filter(|r| r.1.ends_with("/207/status/start"))
        .count();
    assert_eq!(starts, 2, "retried once after the locked task");

    // QEMU failing to start (TASK ERROR: QEMU exited with code 1): a clean failure, with the
    // error in the note and the metric, and only one VM.
    let mut rig = Rig::new().await;
    rig.pve.cmd(json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/207/status/start", "error": "qemu_exited_code"})).await;
    let notes = details(&rig.run(scale_up(), finished).await);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("VM 207 failed (task)") && n.contains("QEMU exited with code 1")),
        "{notes:?}"
    );
    assert_eq!(rig.workers().await.len(), 1, "no second VM");
    let metrics = rig.app.metrics.encode();
    assert!(
        metrics.contains("headroom_provision_steps_total{step=\"start\",result=\"task\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("headroom_provision_failures_total{reason=\"task\"} 1"),
        "counted once, under its reason: {metrics}"
    );
}

#[tokio::test]
async fn a_drain_left_by_a_dead_process_is_uncordoned_by_the_next() {
    let rig = Rig::new().await;
    // What a process that died mid-drain leaves: n1 cordoned and marked.
    let n1 = rig.api.get("Node", "/n1").unwrap();
    rig.api.apply(with(n1, |n| {
        n["spec"]["unschedulable"] = json!(true);
        n["metadata"]["labels"]["headroom.io/draining"] = json!("true");
    }));
    // n2 an operator cordoned: not headroom's to undo.
    let n2 = rig.api.get("Node", "/n2").unwrap();
    rig.api
        .apply(with(n2, |n| n["spec"]["unschedulable"] = json!(true)));
    let status = rig
        .run(Plan::Nothing, |s| {
            s.outcomes.iter().any(|o| o.kind == OutcomeKind::RemovalAbandoned)
        })
        .await;
    assert_eq!(status.outcomes[0].subject, "n1", "{status:?}");
    let node = rig.api.get("Node", "/n1").unwrap();
    assert!(node["spec"]["unschedulable"].is_null(), "{node}");
    assert!(
        node["metadata"]["labels"]["headroom.io/draining"].is_null(),
        "{node}"
    );
    assert_eq!(rig.api.get("Node", "/n2").unwrap()["spec"]["unschedulable"], true);
    assert_eq!(status.outcomes.len(), 1, "only n1: {status:?}");
}

/// `ghostDisks.repair: detach` against fakepve: three orphan ghost disks (no PV, no
/// VolumeAttachment) are detached one per read, each only from its second read on; a ghost
/// whose PV exists is kept, and so is one whose VolumeAttachment (on another node) appears
/// between the two reads. Only `delete=scsiN` is ever sent: no volume is deleted.
#[tokio::test]
async fn ghost_repair_detaches_only_orphans_one_per_read_and_keeps_every_volume() {
    let mut rig = Rig::configured(NUMBERED, "ghostDisks: {repair: detach, repairAfter: 0s}\n").await;
    let pv = |name: &str, disk: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"csi": {"driver": BLOCK, "volumeHandle": format!("homelab/pve1/local-lvm/{disk}")}}})
    };
    rig.api.apply(pv("pv-aaa", "vm-9999-pvc-aaa"));
    rig.api.apply(attachment("va-aaa", BLOCK, "n2", "pv-aaa", true));
    rig.api.apply(pv("pv-bbb", "vm-9999-pvc-bbb"));
    rig.api.apply(with(node("n2"), |v| {
        v["spec"]["providerID"] = json!("proxmox://homelab/202")
    }));
    // Stopped, so fakepve applies a delete at once (a running VM hot-unplugs on real PVE).
    let disk = |n: u32, name: &str| format!("local-lvm:vm-9999-pvc-{name},backup=0,size=5G,wwn=0x50564{n}");
    rig.pve
        .cmd(
            json!({"op": "add_vm", "vmid": 202, "name": "worker-two", "status": "stopped", "config": {
            "scsi0": "local-lvm:vm-202-disk-0,size=32G",
            "scsi1": disk(1, "aaa"), "scsi2": disk(2, "bbb"), "scsi3": disk(3, "ccc"),
            "scsi4": disk(4, "ddd"), "scsi5": disk(5, "eee"), "scsi6": disk(6, "fff")}}),
        )
        .await;
    rig.index_shows("the PVs, the attachment and n2's providerID", |s| {
        s.attachments.contains_key("va-aaa")
            && s.volumes.contains_key("pv-bbb")
            && s.nodes["n2"].provider_id.is_some()
    })
    .await;
    let scsi = |vms: &[Value]| -> Vec<String> {
        let vm = vms.iter().find(|v| v["vmid"] == 202).unwrap();
        let mut keys: Vec<String> = vm["config"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("scsi"))
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let (mut actuator, _) = rig.actuator();
    // Read 1: five ghosts (bbb through fff), none confirmed yet.
    actuator.refresh().await.unwrap();
    assert_eq!(
        scsi(&rig.pve.vms().await).len(),
        7,
        "nothing detached on the first read"
    );
    assert!(
        rig.app
            .metrics
            .encode()
            .contains("headroom_ghost_disks{node=\"n2\"} 5")
    );
    // Between the reads, fff's PV appears with an attachment on another node.
    rig.api.apply(pv("pv-fff", "vm-9999-pvc-fff"));
    rig.api.apply(attachment("va-fff", BLOCK, "n1", "pv-fff", true));
    rig.index_shows("va-fff", |s| s.attachments.contains_key("va-fff"))
        .await;
    // Reads 2–4 detach ccc, ddd and eee, one each; read 5 finds nothing more to do.
    for (read, left) in [(2, 6), (3, 5), (4, 4), (5, 4)] {
        actuator.refresh().await.unwrap();
        assert_eq!(scsi(&rig.pve.vms().await).len(), left, "after read {read}");
    }
    assert_eq!(
        scsi(&rig.pve.vms().await),
        ["scsi0", "scsi1", "scsi2", "scsi6"],
        "the attached disk, the one with a PV and the one attached elsewhere stay"
    );
    let metrics = rig.app.metrics.encode();
    assert!(
        metrics.contains("headroom_ghost_repairs_total{result=\"detached\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("headroom_ghost_repairs_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("headroom_ghost_disks{node=\"n2\"} 2"),
        "bbb and fff: {metrics}"
    );
    // Only detaches: three PUTs of delete=scsiN, no storage content deleted, no VM destroyed.
    let requests = rig.pve.requests().await;
    let writes: Vec<&(String, String, String)> =
        requests.iter().filter(|(method, _, _)| method != "GET").collect();
    assert_eq!(writes.len(), 3, "{writes:?}");
    for (n, (method, path, body)) in writes.iter().enumerate() {
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PUT", "/api2/json/nodes/pve1/qemu/202/config"),
            "{writes:?}"
        );
        assert_eq!(body, &format!("delete=scsi{}", n + 3), "{writes:?}");
    }
    let mut told = Vec::new();
    while let Ok(e) = rig.events.lock().unwrap().try_recv() {
        told.push(e);
    }
    assert_eq!(
        told.iter().filter(|e| e.reason == "HeadroomGhostDisk").count(),
        3,
        "{told:?}"
    );
}

/// The end state: a worker with three ghost disks and `repair: detach` ends with none,
/// one detached per read, and every volume kept (only `delete=scsiN` is sent).
#[tokio::test]
async fn three_ghost_disks_end_at_zero_one_per_read() {
    let mut rig = Rig::configured(NUMBERED, "ghostDisks: {repair: detach, repairAfter: 0s}\n").await;
    rig.api.apply(with(node("n2"), |v| {
        v["spec"]["providerID"] = json!("proxmox://homelab/202")
    }));
    rig.pve
        .cmd(
            json!({"op": "add_vm", "vmid": 202, "name": "worker-two", "status": "stopped", "config": {
            "scsi0": "local-lvm:vm-202-disk-0,size=32G",
            "scsi4": "local-lvm:vm-9999-pvc-g1,backup=0,size=5G",
            "scsi5": "local-lvm:vm-9999-pvc-g2,backup=0,size=5G",
            "scsi6": "local-lvm:vm-9999-pvc-g3,backup=0,size=5G"}}),
        )
        .await;
    rig.index_shows("n2's providerID", |s| s.nodes["n2"].provider_id.is_some())
        .await;
    let (mut actuator, _) = rig.actuator();
    let ghosts = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("headroom_ghost_disks{node=\"n2\"} "))
            .map(|v| v.parse::<i64>().unwrap())
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        actuator.refresh().await.unwrap();
        seen.push(ghosts(&rig.app.metrics.encode()).unwrap());
    }
    // Read 1 confirms nothing; reads 2–4 detach one each (the gauge is what that read saw).
    assert_eq!(seen, [3, 3, 2, 1, 0]);
    let vm = rig
        .pve
        .vms()
        .await
        .into_iter()
        .find(|v| v["vmid"] == 202)
        .unwrap();
    let keys: Vec<&String> = vm["config"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("scsi"))
        .collect();
    assert_eq!(keys, ["scsi0"]);
    let writes: Vec<String> = rig
        .pve
        .requests()
        .await
        .into_iter()
        .filter(|(method, _, _)| method != "GET")
        .map(|(method, path, body)| format!("{method} {path} {body}"))
        .collect();
    assert_eq!(
        writes,
        ["scsi4", "scsi5", "scsi6"].map(|s| format!("PUT /api2/json/nodes/pve1/qemu/202/config delete={s}"))
    );
    assert!(
        rig.app
            .metrics
            .encode()
            .contains("headroom_ghost_repairs_total{result=\"detached\"} 3")
    );
}
