//! The provisioning actuator: the one task that changes Proxmox and Kubernetes.
//!
//! Plans arrive as values on a bounded channel from the planning loop; this task carries them
//! out with timeouts and counted outcomes, one at a time (so one clone per host and storage).
//! What is in flight is read back from Proxmox (tags, description) before every action, so a
//! restarted headroom resumes a half-done provision instead of starting a second one.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    config::{Proxmox, ScaleDownAction},
    decide::planner::Plan,
    metrics::StepLabels,
    proxmox::{
        client::{Auth, PveClient, PveError, Secret, encode_ssh_keys, waiting_out_locks},
        inventory::{self, DESCRIPTION_MARKER, TAG, TAG_FAILED, TAG_PROVISIONING, TAG_SPARE, Vm},
        tls::Trust,
    },
    server::state::{AppState, PlannedEvent},
};

/// How long a PVE lock (clone storage lock, VM config lock) is waited out.
const LOCK_PATIENCE: Duration = Duration::from_secs(120);
/// Clone of a full 256 GiB worker disk on thin storage.
const CLONE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const TASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// After a failed provision, no new one for this long (a broken template must not loop).
const FAILURE_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How often Proxmox is re-read between plans.
const REFRESH: Duration = Duration::from_secs(30);
/// The CSI plugin's own VMID for volume names: never ours.
const CSI_VMID: u32 = 9999;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error("{0}")]
    NoCapacity(String),
    #[error("node {name} did not register Ready within {timeout:?}")]
    JoinTimeout { name: String, timeout: Duration },
    #[error("proxmox.tokenFile {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("kubernetes: {0}")]
    Kube(String),
}

/// Builds the PVE client from the `proxmox:` section; the token is read from its file.
pub fn client(p: &Proxmox) -> Result<PveClient, ProvisionError> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| ProvisionError::Credentials {
                path: path.into(),
                reason: e.to_string(),
            })
    };
    let auth = match (&p.user, &p.password_file) {
        (Some(user), Some(file)) => Auth::Ticket {
            user: user.clone(),
            password: Secret::new(read(file)?),
        },
        _ => {
            let token = read(&p.token_file)?;
            if !token.contains('!') || !token.contains('=') {
                return Err(ProvisionError::Credentials {
                    path: p.token_file.clone(),
                    reason: "expected USER@REALM!TOKENID=SECRET".into(),
                });
            }
            Auth::Token(Secret::new(token))
        }
    };
    let trust = match (&p.ca_file, &p.fingerprint) {
        (Some(ca), _) => Trust::CaFile(ca.clone()),
        (None, Some(fp)) => Trust::Fingerprint(fp.clone()),
        (None, None) => Trust::System,
    };
    Ok(PveClient::new(&p.url, &trust, auth)?)
}

/// The actuator.
pub struct Actuator {
    pve: Option<PveClient>,
    app: Arc<AppState>,
    kube: Option<kube::Client>,
    last_failure: Option<Instant>,
    /// A resumed provision finished: plans made before it did not count that capacity.
    resumed: bool,
    /// Whether this replica holds the lease; followers change nothing.
    leading: tokio::sync::watch::Receiver<bool>,
}

impl Actuator {
    /// `pve` None: dry run, planned calls are logged and shown, nothing is called.
    pub fn new(pve: Option<PveClient>, app: Arc<AppState>, kube: Option<kube::Client>) -> Self {
        Self {
            pve,
            app,
            kube,
            last_failure: None,
            resumed: false,
            leading: tokio::sync::watch::channel(true).1,
        }
    }

    /// Acts only while `leading` is true (the lease holder); the default is always.
    pub fn with_leadership(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }

    fn proxmox(&self) -> &Proxmox {
        self.app
            .config
            .proxmox
            .as_ref()
            .expect("an actuator with a PVE client has a proxmox section")
    }

    fn note(&self, text: String) {
        tracing::info!(note = %text, "provisioner");
        self.app.note(text);
    }

    /// Counts a step and its duration under `result` ("ok" or an error kind).
    fn step(&self, step: &str, started: Instant, result: &str) {
        let labels = StepLabels {
            step: step.into(),
            result: result.into(),
        };
        self.app.metrics.provision_steps.get_or_create(&labels).inc();
        self.app
            .metrics
            .provision_step_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Carries out plans until the channel closes.
    pub async fn run(mut self, mut plans: mpsc::Receiver<Plan>) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "reading Proxmox at start failed");
        }
        loop {
            let plan = tokio::select! {
                plan = plans.recv() => match plan {
                    Some(plan) => plan,
                    None => return,
                },
                // Pick up what changed in Proxmox meanwhile (a restart elsewhere, an operator).
                _ = tokio::time::sleep(REFRESH) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "reading Proxmox failed");
                    }
                    continue;
                }
            };
            if !*self.leading.borrow() {
                tracing::debug!(?plan, "not the lease holder; plan ignored");
                continue;
            }
            if std::mem::take(&mut self.resumed) {
                tracing::info!(
                    ?plan,
                    "plan made before a resumed provision finished; dropped (the next one counts it)"
                );
                continue;
            }
            match plan {
                Plan::Nothing => {}
                Plan::ScaleUp { count, reason } => self.scale_up(count, &reason).await,
                Plan::ScaleDown { node, reason } => self.scale_down(&node, &reason).await,
            }
        }
    }

    /// Reads Proxmox, resumes any provision left in flight, and publishes the in-flight count.
    pub async fn refresh(&mut self) -> Result<i64, ProvisionError> {
        let Some(pve) = &self.pve else { return Ok(0) };
        // Every replica reads ghost disks (admission counts them); only the leader acts.
        let vms = inventory::vms(pve).await?;
        self.observe_workers(&vms);
        let known = self
            .app
            .index
            .with_state(|s, _| inventory::AttachedDisks::from_state(s, &self.app.config.block_driver));
        let ghosts = inventory::ghost_disks(pve, &vms, &known).await?;
        self.app.set_ghosts(ghosts);
        if !*self.leading.borrow() {
            return Ok(0);
        }
        let in_flight = self.in_flight(pve).await?;
        self.app.set_incoming(in_flight.len() as i64);
        for vm in in_flight {
            let started = Instant::now();
            let result = self.finish(&vm).await;
            self.step("resume", started, outcome(result.as_ref().err()));
            match result {
                Ok(()) => {
                    self.resumed = true;
                    self.note(format!("resumed and finished the provision of {}", vm.name));
                }
                Err(e) => self.failed(&vm, &e).await,
            }
        }
        let left = self.in_flight(self.pve.as_ref().expect("checked")).await?.len() as i64;
        self.app.set_incoming(left);
        Ok(left)
    }

    /// kproximate's "provisioned" gauges, from the VMs headroom manages.
    fn observe_workers(&self, vms: &[Vm]) {
        use crate::metrics::{ResourceLabels, StateLabels};
        let ours: Vec<&Vm> = vms.iter().filter(|v| v.has_tag(TAG) && !v.template).collect();
        let m = &self.app.metrics;
        m.worker_vms
            .get_or_create(&StateLabels {
                state: "total".into(),
            })
            .set(ours.len() as i64);
        m.worker_vms
            .get_or_create(&StateLabels {
                state: "running".into(),
            })
            .set(ours.iter().filter(|v| v.running()).count() as i64);
        let running = ours.iter().filter(|v| v.running());
        let (cores, memory) = running.fold((0.0, 0.0), |(c, m), v| {
            (c + v.max_cpu as f64, m + v.max_mem as f64)
        });
        m.provisioned
            .get_or_create(&ResourceLabels {
                resource: "cpu".into(),
                kind: "provisioned".into(),
            })
            .set(cores);
        m.provisioned
            .get_or_create(&ResourceLabels {
                resource: "memory".into(),
                kind: "provisioned".into(),
            })
            .set(memory);
    }

    async fn in_flight(&self, pve: &PveClient) -> Result<Vec<Vm>, ProvisionError> {
        in_flight(pve, self.proxmox()).await
    }

    async fn scale_up(&mut self, count: i64, reason: &str) {
        let Some(pve) = &self.pve else {
            self.note(format!("dry run: would add {count} worker VM(s): {reason}"));
            return;
        };
        if let Some(at) = self.last_failure
            && at.elapsed() < FAILURE_BACKOFF
        {
            tracing::info!(reason, "scale-up held back after a failed provision");
            return;
        }
        // Re-check against Proxmox: work may already be in flight (another leader, a restart).
        let in_flight = match self.in_flight(pve).await {
            Ok(v) => v.len() as i64,
            Err(e) => {
                self.note(format!(
                    "provision failed: cannot read Proxmox, scale-up postponed: {e}"
                ));
                return;
            }
        };
        for _ in in_flight..count {
            self.app.mark_scale_up();
            let started = Instant::now();
            let result = self.provision_one(reason).await;
            self.step(
                "provision",
                started,
                outcome(result.as_ref().err().map(|(_, e)| e)),
            );
            match result {
                Ok(name) => self.note(format!("added worker {name}: {reason}")),
                Err((vm, e)) => {
                    tracing::warn!(error = %e, "provision failed");
                    self.note(format!("provision failed: {e}"));
                    if let Some(vm) = vm {
                        self.failed(&vm, &e).await;
                    }
                    self.last_failure = Some(Instant::now());
                    break;
                }
            }
        }
        let _ = self.refresh().await;
    }

    /// One new worker: a cold spare if there is one, else a clone. On failure, the VM the
    /// attempt left behind (if any) comes back with the error, to be marked failed.
    async fn provision_one(&self, reason: &str) -> Result<String, (Option<Vm>, ProvisionError)> {
        let pve = self.pve.as_ref().expect("not a dry run");
        let vms = inventory::vms(pve).await.map_err(|e| (None, e.into()))?;
        if let Some(spare) = vms
            .iter()
            .find(|v| v.has_tag(TAG_SPARE) && !v.running() && !v.template)
        {
            self.app.set_incoming(1);
            self.set_tags(spare, &[TAG, TAG_PROVISIONING])
                .await
                .map_err(|e| (None, e))?;
            self.event(
                &spare.name,
                format!("starting cold spare VM {} ({reason})", spare.vmid),
            );
            let spare = Vm {
                tags: vec![TAG.into(), TAG_PROVISIONING.into()],
                ..spare.clone()
            };
            self.finish(&spare).await.map_err(|e| (Some(spare.clone()), e))?;
            return Ok(spare.name);
        }
        let vm = self
            .clone_worker(pve, &vms, reason)
            .await
            .map_err(|e| (None, e))?;
        self.app.set_incoming(1);
        self.finish(&vm).await.map_err(|e| (Some(vm.clone()), e))?;
        Ok(vm.name)
    }

    /// Picks host, VMID and name and full-clones the template; returns the new (stopped) VM.
    async fn clone_worker(&self, pve: &PveClient, vms: &[Vm], reason: &str) -> Result<Vm, ProvisionError> {
        let p = self.proxmox();
        let need = p.vm.memory_mib as i64 * 1024 * 1024 + p.host_memory_reserve_mi_b as i64 * 1024 * 1024;
        let mut best: Option<(&crate::config::ProxmoxHost, i64)> = None;
        let mut refused = Vec::new();
        for host in &p.hosts {
            if vms
                .iter()
                .any(|v| v.node == host.name && v.has_tag(TAG_PROVISIONING))
            {
                refused.push(format!("{}: a provision is in flight", host.name));
                continue;
            }
            let free = inventory::host_free_memory(pve, &host.name).await?;
            if free < need {
                refused.push(format!(
                    "{}: {} MiB free, need {} MiB",
                    host.name,
                    free >> 20,
                    need >> 20
                ));
                continue;
            }
            if inventory::storage_available(pve, &host.name, &host.storage).await? <= 0 {
                refused.push(format!("{}: storage {} is full", host.name, host.storage));
                continue;
            }
            if best.is_none_or(|(_, f)| free > f) {
                best = Some((host, free));
            }
        }
        let Some((host, _)) = best else {
            return Err(ProvisionError::NoCapacity(format!(
                "no Proxmox host can take a worker ({})",
                refused.join("; ")
            )));
        };
        let taken: std::collections::BTreeSet<u32> = vms.iter().map(|v| v.vmid).collect();
        let [lo, hi] = p.vm.vmid_range;
        let vmid = (lo..=hi)
            .find(|id| !taken.contains(id) && *id != CSI_VMID)
            .ok_or_else(|| ProvisionError::NoCapacity(format!("no free VMID in [{lo}, {hi}]")))?;
        let known_nodes = self
            .app
            .index
            .with_state(|s, _| s.nodes.keys().cloned().collect::<Vec<_>>());
        let name = (1..)
            .map(|n| p.vm.name_pattern.replace("{n}", &n.to_string()))
            .find(|name| !vms.iter().any(|v| &v.name == name) && !known_nodes.contains(name))
            .expect("an unbounded range has a free name");
        self.event(
            &name,
            format!(
                "cloning template {} on {} as VM {vmid} ({reason})",
                host.template, host.name
            ),
        );
        let form = [
            ("newid", vmid.to_string()),
            ("name", name.clone()),
            ("full", "1".into()),
            ("storage", host.storage.clone()),
            ("description", format!("{DESCRIPTION_MARKER} ({reason})")),
        ];
        let path = format!("/nodes/{}/qemu/{}/clone", host.name, host.template);
        let started = Instant::now();
        let result = waiting_out_locks(LOCK_PATIENCE, || pve.run_task(&path, &form, CLONE_TIMEOUT)).await;
        let result = match result {
            // The clone may have happened anyway: read the state again, never clone twice.
            Err(e @ (PveError::Unknown { .. } | PveError::Timeout(_) | PveError::Connect(_))) => {
                tracing::warn!(error = %e, vmid, "clone outcome unknown; reading Proxmox");
                match inventory::vms(pve).await?.into_iter().find(|v| v.vmid == vmid) {
                    Some(_) => Ok(()),
                    None => Err(e),
                }
            }
            other => other,
        };
        self.step(
            "clone",
            started,
            result.as_ref().err().map_or("ok", PveError::kind),
        );
        result?;
        Ok(Vm {
            vmid,
            name,
            node: host.name.clone(),
            status: "stopped".into(),
            template: false,
            lock: None,
            tags: Vec::new(),
            max_cpu: i64::from(self.proxmox().vm.cores),
            max_mem: self.proxmox().vm.memory_mib as i64 * 1024 * 1024,
        })
    }

    /// Drives an in-flight VM to a joined worker: (re)configure if stopped, start, wait for
    /// its Node, then drop the provisioning tag. Every step is safe to repeat.
    async fn finish(&self, vm: &Vm) -> Result<(), ProvisionError> {
        let pve = self.pve.as_ref().expect("not a dry run");
        let p = self.proxmox();
        let base = format!("/nodes/{}/qemu/{}", vm.node, vm.vmid);
        if !vm.running() {
            let started = Instant::now();
            let mut form = vec![
                ("cores", p.vm.cores.to_string()),
                ("memory", p.vm.memory_mib.to_string()),
                ("ciupgrade", "0".into()),
                ("tags", tags(&p.vm.tags, &[TAG, TAG_PROVISIONING])),
            ];
            if !vm.has_tag(TAG_SPARE) && !vm.has_tag(TAG) {
                form.push(("description", format!("{DESCRIPTION_MARKER}: {}", vm.name)));
            }
            if let Some(ci) = &p.vm.cloud_init {
                let n = worker_number(&p.vm.name_pattern, &vm.name).unwrap_or_default();
                if let Some(user) = &ci.user {
                    form.push(("ciuser", user.clone()));
                }
                if !ci.ssh_keys.is_empty() {
                    form.push(("sshkeys", encode_ssh_keys(&ci.ssh_keys)));
                }
                if let Some(ip) = &ci.ipconfig0 {
                    form.push(("ipconfig0", ip.replace("{n}", n)));
                }
                if let Some(ns) = &ci.nameserver {
                    form.push(("nameserver", ns.clone()));
                }
            }
            let path = format!("{base}/config");
            let result = waiting_out_locks(LOCK_PATIENCE, || pve.run_task(&path, &form, TASK_TIMEOUT))
                .await
                .map_err(ProvisionError::from);
            self.step("configure", started, outcome(result.as_ref().err()));
            result?;
            let started = Instant::now();
            let path = format!("{base}/status/start");
            let result = waiting_out_locks(LOCK_PATIENCE, || pve.run_task(&path, &[], TASK_TIMEOUT)).await;
            let result = match result {
                Err(
                    PveError::Task { exitstatus, .. }
                    | PveError::Api {
                        message: exitstatus, ..
                    },
                ) if exitstatus.contains("already running") => Ok(()),
                other => other,
            }
            .map_err(ProvisionError::from);
            self.step("start", started, outcome(result.as_ref().err()));
            result?;
        }
        let started = Instant::now();
        let result = self.wait_ready(&vm.name, p.join_timeout.0).await;
        self.step("join", started, outcome(result.as_ref().err()));
        result?;
        self.set_tags(vm, &[TAG]).await?;
        self.event(
            &vm.name,
            format!("worker {} (VM {}) joined and is Ready", vm.name, vm.vmid),
        );
        Ok(())
    }

    async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self
                .app
                .index
                .with_state(|s, _| s.nodes.get(name).is_some_and(|n| n.ready));
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProvisionError::JoinTimeout {
                    name: name.into(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A failed provision: stop the VM, mark it failed (never retried), tell the operator.
    async fn failed(&self, vm: &Vm, error: &ProvisionError) {
        let pve = self.pve.as_ref().expect("not a dry run");
        let base = format!("/nodes/{}/qemu/{}", vm.node, vm.vmid);
        let _ = pve
            .run_task(&format!("{base}/status/stop"), &[], TASK_TIMEOUT)
            .await;
        let _ = self.set_tags(vm, &[TAG, TAG_FAILED]).await;
        self.event(
            &vm.name,
            format!("provisioning VM {} failed and was stopped: {error}", vm.vmid),
        );
        self.app.metrics.provision_failures.inc();
    }

    async fn set_tags(&self, vm: &Vm, ours: &[&str]) -> Result<(), ProvisionError> {
        let pve = self.pve.as_ref().expect("not a dry run");
        let form = [("tags", tags(&self.proxmox().vm.tags, ours))];
        let path = format!("/nodes/{}/qemu/{}/config", vm.node, vm.vmid);
        waiting_out_locks(LOCK_PATIENCE, || pve.run_task(&path, &form, TASK_TIMEOUT)).await?;
        Ok(())
    }

    fn event(&self, node: &str, message: String) {
        tracing::info!(node, %message, "provisioner event");
        self.app.events.emit(PlannedEvent {
            namespace: "default".into(),
            kind: "Node".into(),
            name: node.into(),
            reason: "HeadroomProvisioning".into(),
            message,
        });
    }

    async fn scale_down(&mut self, node: &str, reason: &str) {
        let action = self.app.config.scale_down.action;
        let Some(pve) = &self.pve else {
            self.note(format!(
                "dry run: would drain and remove {node} ({action:?}): {reason}"
            ));
            return;
        };
        let Some(kube) = &self.kube else {
            return tracing::warn!(node, "scale-down needs a live cluster");
        };
        let started = Instant::now();
        let result = crate::drain::drain(kube, node, self.app.config.scale_down.drain_timeout.0).await;
        self.step("drain", started, if result.is_ok() { "ok" } else { "blocked" });
        if let Err(e) = result {
            self.note(format!("scale-down of {node} abandoned: {e}; node uncordoned"));
            return;
        }
        // The node is gone from the cluster whatever the VM step does next.
        self.app.mark_scale_down();
        let vm = match inventory::vms(pve).await {
            Ok(vms) => vms.into_iter().find(|v| v.name == node),
            Err(e) => return tracing::warn!(error = %e, node, "cannot find the VM; node drained and deleted"),
        };
        let Some(vm) = vm else { return };
        let base = format!("/nodes/{}/qemu/{}", vm.node, vm.vmid);
        let result = match action {
            ScaleDownAction::Shutdown => {
                let form = [("timeout", "300".to_owned()), ("forceStop", "1".to_owned())];
                let done = pve
                    .run_task(&format!("{base}/status/shutdown"), &form, TASK_TIMEOUT)
                    .await;
                match done {
                    Ok(()) => self.set_tags(&vm, &[TAG, TAG_SPARE]).await.map_err(|e| match e {
                        ProvisionError::Pve(p) => p,
                        other => PveError::Decode(other.to_string()),
                    }),
                    Err(e) => Err(e),
                }
            }
            // purge=1, never destroy-unreferenced-disks: CSI volumes are hot-plugged here.
            ScaleDownAction::Destroy => {
                let stop = pve
                    .run_task(&format!("{base}/status/stop"), &[], TASK_TIMEOUT)
                    .await;
                match stop {
                    Ok(()) => match pve.delete(&base, &[("purge", "1".into())]).await {
                        Ok(Value::String(upid)) => pve.wait_task(&upid, TASK_TIMEOUT).await,
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => self.note(format!("removed worker {node} ({action:?}): {reason}")),
            Err(e) => self.note(format!("{node} drained and deleted, but the VM step failed: {e}")),
        }
    }
}

/// The `{n}` of a worker's name under `pattern` ("k8s-node{n}", "k8s-node12" → "12").
fn worker_number<'a>(pattern: &str, name: &'a str) -> Option<&'a str> {
    let (pre, post) = pattern.split_once("{n}")?;
    name.strip_prefix(pre)?.strip_suffix(post)
}

/// The metric label of a step's result.
fn outcome(error: Option<&ProvisionError>) -> &'static str {
    match error {
        None => "ok",
        Some(ProvisionError::Pve(e)) => e.kind(),
        Some(ProvisionError::JoinTimeout { .. }) => "timeout",
        Some(ProvisionError::NoCapacity(_)) => "no-capacity",
        Some(_) => "error",
    }
}

/// The configured tags plus headroom's own, `;`-joined as PVE stores them.
fn tags(configured: &[String], ours: &[&str]) -> String {
    let mut all: Vec<String> = configured.iter().map(|t| t.to_lowercase()).collect();
    all.retain(|t| ![TAG_PROVISIONING, TAG_SPARE, TAG_FAILED].contains(&t.as_str()));
    all.extend(ours.iter().map(|t| (*t).to_owned()));
    all.sort();
    all.dedup();
    all.join(";")
}

/// VMs headroom started provisioning and has not finished: tagged, or (killed between clone
/// and configure) untagged but carrying headroom's description in its VMID range.
pub async fn in_flight(pve: &PveClient, p: &Proxmox) -> Result<Vec<Vm>, ProvisionError> {
    let [lo, hi] = p.vm.vmid_range;
    let mut out = Vec::new();
    for vm in inventory::vms(pve).await? {
        if vm.template || vm.has_tag(TAG_FAILED) {
            continue;
        }
        if vm.has_tag(TAG_PROVISIONING) {
            out.push(vm);
        } else if !vm.has_tag(TAG) && (lo..=hi).contains(&vm.vmid) {
            let config = inventory::config(pve, &vm).await?;
            if config
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains(DESCRIPTION_MARKER))
            {
                out.push(vm);
            }
        }
    }
    Ok(out)
}

/// What `status` shows from Proxmox: provisions in flight and ghost disks per node.
pub async fn observe(
    p: &Proxmox,
    attached: &inventory::AttachedDisks,
) -> Result<(Vec<Vm>, crate::decide::accounting::Reservations), ProvisionError> {
    let pve = client(p)?;
    let vms = inventory::vms(&pve).await?;
    let ghosts = inventory::ghost_disks(&pve, &vms, attached).await?;
    Ok((in_flight(&pve, p).await?, ghosts))
}

/// Evaluates the projection and sends plans to the actuator: every `every`, and at once when
/// the webhook admits new demand (so a VM can start before any pod is Pending).
pub async fn plan_loop(app: Arc<AppState>, plans: mpsc::Sender<Plan>, every: Duration) {
    use crate::decide::{
        placement::Placement,
        planner::{self, PlanInput},
        projection::{self, History, Incoming, VmCapacity},
    };
    let mut history = History::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = app.demand_changed.notified() => {}
        }
        if !app.index.is_synced() {
            continue;
        }
        let view = app.view();
        let reservations = app.reservations();
        let admitted = app.admitted();
        let incoming = Incoming {
            vms: app.incoming_vms.load(std::sync::atomic::Ordering::Relaxed),
        };
        let p = projection::project(&view, admitted, incoming, VmCapacity::from_config(&app.config));
        let evaluation = projection::evaluate(&p, &app.config, &mut history, Instant::now().into_std());
        app.metrics.cluster.observe(&view, &p, &evaluation);
        let plan = app.index.with_state(|state, _| {
            planner::plan(&PlanInput {
                state,
                view: &view,
                placement: Placement::new(&view, &reservations),
                config: &app.config,
                evaluation: &evaluation,
                admitted,
                incoming,
                since_scale_up: app.since_scale_up(),
                since_scale_down: app.since_scale_down(),
            })
        });
        if plan != Plan::Nothing {
            tracing::info!(?plan, "plan");
            // A full queue means the actuator is still at work; the next tick sees its progress.
            let _ = plans.try_send(plan);
        }
        // Admissions wake this loop; under a burst that would re-plan back to back. At most one
        // evaluation per 250 ms, counted from this plan: the first demand of a burst is acted
        // on at once.
        tokio::time::sleep(Duration::from_millis(250).min(every)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_numbers_follow_the_pattern() {
        assert_eq!(worker_number("k8s-node{n}", "k8s-node12"), Some("12"));
        assert_eq!(worker_number("k8s-node{n}", "k8s-node3"), Some("3"));
        assert_eq!(worker_number("w{n}.lab", "w7.lab"), Some("7"));
        assert_eq!(worker_number("k8s-node{n}", "gpu-1"), None);
    }

    #[test]
    fn tags_keep_the_configured_ones_and_replace_ours() {
        let configured = vec![
            "headroom".to_owned(),
            "K8s".to_owned(),
            "headroom-spare".to_owned(),
        ];
        assert_eq!(
            tags(&configured, &[TAG, TAG_PROVISIONING]),
            "headroom;headroom-provisioning;k8s"
        );
        assert_eq!(tags(&configured, &[TAG]), "headroom;k8s");
    }
}
