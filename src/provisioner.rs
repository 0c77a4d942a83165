//! The provisioning actuator: the one task that changes Proxmox and Kubernetes, and the one
//! writer of its own status.
//!
//! Plans arrive latest-wins on a watch channel, each naming the status generation it was made
//! from; a plan made before the actuator's state last changed is dropped, and the planner,
//! woken by that change, makes a fresh one. A plan for N VMs queues N intents at once, so the
//! next plan counts all N as incoming; each queued intent starts only after a plan made on the
//! current state still wants it. Provisions run one at a time (one clone per host and
//! storage). What is in flight is read back from Proxmox (tags, description), so a restarted
//! headroom resumes a half-done provision instead of starting a second one.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::Value;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

pub use crate::decide::actuation::Planned;
use crate::{
    clock::Clock,
    config::{Proxmox, ScaleDownAction},
    decide::{
        actuation::{Accepted, ActuatorStatus, FailureReason, OutcomeKind, Phase},
        addresses::{IpPool, ipconfig_address},
        cleanup,
        ghosts::{self, GhostDisk, GhostWatch, Repair, Verdict},
        planner::Plan,
        projection::{VmCapacity, Windows},
        rebalance::{self, MoveInProgress, MoveResult, PodMove},
        tick::{self, TickInput},
    },
    durable::{self, Durable},
    events::PlannedEvent,
    metrics::{RejectLabels, ResultLabels, StepLabels},
    proxmox::{
        client::{Auth, PveClient, PveError, Secret, encode_ssh_keys, waiting_out_locks},
        inventory::{self, DESCRIPTION_MARKER, TAG, TAG_FAILED, TAG_PROVISIONING, TAG_SPARE, Vm},
        tls::Trust,
    },
    read_model::ReadModel,
};

/// How long a PVE lock (clone storage lock, VM config lock) is waited out.
const LOCK_PATIENCE: Duration = Duration::from_secs(120);
/// Clone of a full 256 GiB worker disk on thin storage.
const CLONE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const TASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How often Proxmox is re-read between plans.
const REFRESH: Duration = Duration::from_secs(30);
/// Attempts at stopping and tagging a failed VM before it is left to the next refresh.
const CLEANUP_ATTEMPTS: u32 = 5;
/// The CSI plugin's own VMID for volume names: never ours.
const CSI_VMID: u32 = 9999;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error("{0}")]
    NoCapacity(String),
    #[error("node {name} did not register (Ready, block driver in its CSINode) within {timeout:?}")]
    JoinTimeout { name: String, timeout: Duration },
    #[error("proxmox.tokenFile {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("kubernetes: {0}")]
    Kube(String),
    /// What a new worker was to take (its VMID, name or address) was taken meanwhile.
    #[error("{0}")]
    Taken(String),
    /// The config cannot describe this worker (e.g. `{n}` for a name outside the pattern).
    #[error("{0}")]
    Config(String),
}

impl ProvisionError {
    /// The failure reason it is counted under.
    pub fn reason(&self) -> FailureReason {
        match self {
            ProvisionError::Pve(e) => match e {
                PveError::Auth { .. } | PveError::Api { status: 403, .. } => FailureReason::Credentials,
                PveError::Connect(_) | PveError::Unknown { .. } | PveError::Timeout(_) => {
                    FailureReason::Transient
                }
                _ if e.is_lock() => FailureReason::Transient,
                PveError::Api { status, .. } if *status >= 500 => FailureReason::Transient,
                PveError::Task { .. } => FailureReason::Task,
                _ => FailureReason::Api,
            },
            ProvisionError::NoCapacity(_) => FailureReason::NoCapacity,
            ProvisionError::JoinTimeout { .. } => FailureReason::JoinTimeout,
            ProvisionError::Credentials { .. } => FailureReason::Credentials,
            ProvisionError::Kube(_) | ProvisionError::Config(_) => FailureReason::Api,
            ProvisionError::Taken(_) => FailureReason::Transient,
        }
    }
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
    pve: Option<Arc<PveClient>>,
    app: Arc<ReadModel>,
    kube: Option<kube::Client>,
    clock: Clock,
    status: ActuatorStatus,
    publish: watch::Sender<ActuatorStatus>,
    /// Whether this replica holds the lease; followers change nothing.
    leading: watch::Receiver<bool>,
    /// Where the last lease holder recorded its scale times.
    durable: Option<durable::Store>,
    /// Joins waited for in their own tasks report here.
    joins_tx: mpsc::UnboundedSender<Joined>,
    joins: mpsc::UnboundedReceiver<Joined>,
    /// Moves watched in their own tasks report how they ended here.
    moves_tx: mpsc::UnboundedSender<MoveEnded>,
    moves: mpsc::UnboundedReceiver<MoveEnded>,
    /// Ghost disks seen on the last reads (lease holder only), for repair.
    ghost_watch: GhostWatch,
}

/// A move that ended, reported by its watching task.
struct MoveEnded {
    result: MoveResult,
    detail: String,
}

/// How often a move's watcher looks at the index for the replacement.
const MOVE_POLL: Duration = Duration::from_secs(2);
/// How long an eviction call may wait for an answer (a PodDisruptionBudget's 429).
const EVICTION_LIMIT: Duration = Duration::from_secs(10);

/// A join that ended, reported by its task.
struct Joined {
    vm: Vm,
    reason: String,
    result: Result<(), ProvisionError>,
    /// When its provision started.
    started: Instant,
}

impl Actuator {
    /// `pve` None: dry run, planned calls are recorded and shown, nothing is called. The
    /// actuator publishes its status on `publish`.
    pub fn new(
        pve: Option<PveClient>,
        app: Arc<ReadModel>,
        kube: Option<kube::Client>,
        publish: watch::Sender<ActuatorStatus>,
        clock: Clock,
    ) -> Self {
        let status = publish.borrow().clone();
        let (joins_tx, joins) = mpsc::unbounded_channel();
        let (moves_tx, moves) = mpsc::unbounded_channel();
        Self {
            pve: pve.map(Arc::new),
            app,
            kube,
            clock,
            status,
            publish,
            leading: watch::channel(true).1,
            durable: None,
            joins_tx,
            joins,
            moves_tx,
            moves,
            ghost_watch: GhostWatch::default(),
        }
    }

    /// Takes the recorded scale times from `store` when this replica takes the lease.
    pub fn with_durable(mut self, store: durable::Store) -> Self {
        self.durable = Some(store);
        self
    }

    /// Acts only while `leading` is true (the lease holder); the default is always.
    pub fn with_leadership(mut self, leading: watch::Receiver<bool>) -> Self {
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

    /// Publishes the status (after the state machine changed it).
    fn publish(&mut self) {
        self.app.metrics.incoming_vms.set(self.status.incoming_vms());
        self.publish.send_replace(self.status.clone());
    }

    fn step(&self, step: &str, started: Instant, result: &str) {
        count_step(&self.app, step, started, result);
    }

    /// Uncordons what a drain left cordoned when its process died (lease holder only).
    async fn release_abandoned_drains(&mut self) {
        let Some(kube) = self.kube.clone() else { return };
        if !*self.leading.borrow() {
            return;
        }
        match crate::drain::release_abandoned(&kube).await {
            Ok(nodes) => {
                for node in nodes {
                    let detail = format!("a drain of {node} was abandoned by a restart; node uncordoned");
                    tracing::warn!(node, "{detail}");
                    self.status
                        .record(self.clock.now(), OutcomeKind::RemovalAbandoned, &node, detail);
                    self.status.bump();
                    self.publish();
                }
            }
            Err(error) => tracing::warn!(%error, "looking for abandoned drains failed"),
        }
    }

    /// Carries out plans until the plan channel closes.
    pub async fn run(mut self, mut plans: watch::Receiver<Planned>) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "reading Proxmox at start failed");
        }
        self.release_abandoned_drains().await;
        loop {
            if *self.leading.borrow()
                && self.pve.is_some()
                && let Some(index) = self.status.next_to_start(self.clock.now())
            {
                self.provision(index).await;
                continue;
            }
            let retry = self
                .status
                .retry_at
                .filter(|_| self.status.queued() > 0)
                .map(|at| at.since(self.clock.now()));
            tokio::select! {
                Some(joined) = self.joins.recv() => {
                    self.joined(joined).await;
                    continue;
                }
                Some(ended) = self.moves.recv() => {
                    self.move_ended(ended);
                    continue;
                }
                changed = plans.changed() => if changed.is_err() { return },
                // Pick up what changed in Proxmox meanwhile (a restart elsewhere, an operator).
                _ = tokio::time::sleep(REFRESH) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "reading Proxmox failed");
                    }
                    continue;
                }
                _ = tokio::time::sleep(retry.unwrap_or(REFRESH)), if retry.is_some() => {
                    self.status.retry_due();
                    self.publish();
                    continue;
                }
            }
            if self.leading.has_changed().unwrap_or(false)
                && *self.leading.borrow_and_update()
                && let Some(store) = &self.durable
            {
                match store.load().await {
                    Ok(record) => {
                        record.merge_status(&mut self.status);
                        self.status.bump();
                        self.publish();
                    }
                    Err(error) => tracing::warn!(%error, "reading the persisted scale times failed"),
                }
                self.release_abandoned_drains().await;
                continue;
            }
            let planned = plans.borrow_and_update().clone();
            if !*self.leading.borrow() {
                tracing::debug!(?planned, "not the lease holder; plan ignored");
                continue;
            }
            let capacity = VmCapacity::from_config(&self.app.config);
            let before = self.status.generation;
            // A move needs only the cluster; everything else changes Proxmox.
            let dry_run = match planned.plan {
                Plan::Move(_) => self.kube.is_none(),
                _ => self.pve.is_none(),
            };
            let accepted = self.status.accept(&planned, capacity, self.clock.now(), dry_run);
            if self.status.generation != before {
                self.publish();
            }
            match accepted {
                Accepted::Stale => tracing::debug!(
                    ?planned,
                    generation = self.status.generation,
                    "plan made before the last change; dropped"
                ),
                Accepted::Nothing => {}
                Accepted::Remove {
                    node,
                    reason,
                    singletons,
                } => {
                    self.name_singletons(&node, &singletons);
                    self.scale_down(&node, &reason).await
                }
                Accepted::Evict(m) => self.start_move(m).await,
            }
        }
    }

    /// Evicts the pod of move `m` (marked under way by the state machine) and watches, in its
    /// own task, for its replacement to be placed on another node.
    async fn start_move(&mut self, m: PodMove) {
        let kube = self.kube.clone().expect("a move is dry-run without a cluster");
        let id = format!("{}/{}", m.namespace, m.name);
        let eviction = crate::drain::evict(&kube, &m.namespace, &m.name, EVICTION_LIMIT).await;
        let refused = match eviction {
            crate::drain::Eviction::Evicted => None,
            crate::drain::Eviction::Refused => Some((
                MoveResult::Blocked,
                format!(
                    "move of {id} off {} refused: a PodDisruptionBudget allows no disruption now",
                    m.from
                ),
            )),
            crate::drain::Eviction::Gone => Some((
                MoveResult::Failed,
                format!("move of {id} off {}: the pod is gone already", m.from),
            )),
            crate::drain::Eviction::Failed(e) => Some((
                MoveResult::Failed,
                format!("move of {id} off {} failed: {e}", m.from),
            )),
        };
        if let Some((result, detail)) = refused {
            return self.move_ended(MoveEnded { result, detail });
        }
        tracing::info!(pod = %id, from = %m.from, toward = %m.toward, reason = %m.reason, "pod evicted to move it");
        self.app.events.emit(PlannedEvent {
            namespace: m.namespace.clone(),
            kind: "Pod".into(),
            name: m.name.clone(),
            reason: "HeadroomMove".into(),
            message: format!("evicted to move it off {}: {}", m.from, m.reason),
        });
        let Some(moving) = self.status.moving.clone() else {
            return;
        };
        let (app, clock, ended) = (self.app.clone(), self.clock, self.moves_tx.clone());
        tokio::spawn(async move {
            let result = loop {
                let now = clock.now();
                if let Some(result) = app.index.with_state(|s, _| rebalance::settle(s, &moving, now)) {
                    break result;
                }
                tokio::time::sleep(MOVE_POLL).await;
            };
            let detail = match result {
                MoveResult::Moved => format!(
                    "moved {}/{} off {}: its replacement is on another node",
                    moving.pod.namespace, moving.pod.name, moving.pod.from
                ),
                _ => format!(
                    "moved {}/{} off {}, but no replacement was placed elsewhere within {:?}",
                    moving.pod.namespace,
                    moving.pod.name,
                    moving.pod.from,
                    rebalance::MOVE_TIMEOUT
                ),
            };
            let _ = ended.send(MoveEnded { result, detail });
        });
    }

    /// A move ended: counted, told, and the interval to the next starts.
    fn move_ended(&mut self, ended: MoveEnded) {
        let MoveEnded { result, detail } = ended;
        let Some(MoveInProgress { pod, .. }) = self.status.moving.clone() else {
            return;
        };
        self.app
            .metrics
            .rebalance_moves
            .get_or_create(&crate::metrics::MoveLabels {
                cause: pod.cause.as_str().into(),
                result: result.as_str().into(),
            })
            .inc();
        if result == MoveResult::Moved {
            tracing::info!(%detail, "move");
        } else {
            tracing::warn!(%detail, result = result.as_str(), "move");
            self.app.events.emit(PlannedEvent {
                namespace: pod.namespace.clone(),
                kind: "Pod".into(),
                name: pod.name.clone(),
                reason: "HeadroomMoveFailed".into(),
                message: detail.clone(),
            });
        }
        self.status.move_ended(result, detail, self.clock.now());
        self.publish();
    }

    /// Reads Proxmox, resumes any provision left in flight, and publishes it as intents.
    pub async fn refresh(&mut self) -> Result<i64, ProvisionError> {
        let Some(pve) = self.pve.clone() else { return Ok(0) };
        // Every replica reads ghost disks (admission counts them); only the leader acts.
        let vms = inventory::vms(&pve).await?;
        self.observe_workers(&vms);
        let known = self
            .app
            .index
            .with_state(|s, _| inventory::AttachedDisks::from_state(s, &self.app.config.block_driver));
        let drift = inventory::disk_drift(&pve, &vms, &known).await?;
        self.app.set_attachment_drift(&drift);
        self.app.set_ghosts(drift.ghosts);
        if !*self.leading.borrow() {
            return Ok(0);
        }
        self.ghost_watch.observe(&drift.found, self.clock.now());
        self.repair_one_ghost(&pve, &drift.found).await;
        self.remove_stale_attachments(&vms).await;
        // Only while nothing of ours runs: a provision in progress is tagged too.
        if self.status.intents.iter().any(|i| i.phase != Phase::Queued) {
            return Ok(self.status.incoming_vms());
        }
        let in_flight = in_flight(&pve, self.proxmox(), vms).await?;
        if in_flight.is_empty() {
            return Ok(self.status.incoming_vms());
        }
        let names: Vec<String> = in_flight.iter().map(|v| v.name.clone()).collect();
        self.status.resume(
            &names,
            VmCapacity::from_config(&self.app.config),
            self.clock.now(),
        );
        self.publish();
        for vm in in_flight {
            let started = Instant::now();
            let result = self.finish(&vm).await;
            self.step("resume", started, outcome(result.as_ref().err()));
            let result = match result {
                Ok(()) => Ok(format!("resumed and finished the provision of {}", vm.name)),
                Err(e) => Err((e.reason(), self.failed(Some(&vm), &e).await)),
            };
            self.status.resumed(&vm.name, result, self.clock.now());
            self.publish();
        }
        Ok(self.status.incoming_vms())
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

    /// Starts queued intent `index`: clone (or start a spare), configure, start. The join is
    /// waited for in its own task, so the next intent's clone need not wait for this boot.
    async fn provision(&mut self, index: usize) {
        let reason = self.status.intents[index].reason.clone();
        self.status
            .progress(index, Phase::Cloning, None, self.clock.now());
        self.publish();
        let started = Instant::now();
        match self.provision_one(index, &reason).await {
            Ok(vm) => {
                self.status
                    .progress(index, Phase::Joining, Some(&vm.name), self.clock.now());
                let (app, pve, joined) = (
                    self.app.clone(),
                    self.pve.clone().expect("not a dry run"),
                    self.joins_tx.clone(),
                );
                tokio::spawn(async move {
                    let result = join(&app, &pve, &vm).await;
                    let _ = joined.send(Joined {
                        vm,
                        reason,
                        result,
                        started,
                    });
                });
            }
            Err((vm, e)) => {
                self.step("provision", started, outcome(Some(&e)));
                let detail = self.failed(vm.as_ref(), &e).await;
                let left = vm.as_ref().map(|v| v.name.as_str());
                self.status
                    .failed(index, e.reason(), left, detail, self.clock.now());
            }
        }
        self.publish();
    }

    /// A join waited for in its own task ended.
    async fn joined(&mut self, joined: Joined) {
        let Joined {
            vm,
            reason,
            result,
            started,
        } = joined;
        self.step("provision", started, outcome(result.as_ref().err()));
        let Some(index) = self
            .status
            .intents
            .iter()
            .position(|i| i.vm.as_deref() == Some(vm.name.as_str()))
        else {
            return;
        };
        match result {
            Ok(()) => {
                let detail = format!("added worker {}: {reason}", vm.name);
                tracing::info!(%detail, "provisioner");
                self.status.joined(index, &vm.name, detail, self.clock.now());
            }
            Err(e) => {
                let detail = self.failed(Some(&vm), &e).await;
                self.status
                    .failed(index, e.reason(), Some(&vm.name), detail, self.clock.now());
            }
        }
        self.publish();
    }

    fn set_phase(&mut self, index: usize, phase: Phase, vm: &str) {
        self.status.progress(index, phase, Some(vm), self.clock.now());
        self.publish();
    }

    /// One new worker: a cold spare if one passes the host checks, else a clone. On failure,
    /// the VM the attempt left behind (if any) comes back with the error, to be marked failed.
    async fn provision_one(
        &mut self,
        index: usize,
        reason: &str,
    ) -> Result<Vm, (Option<Vm>, ProvisionError)> {
        let pve = self.pve.clone().expect("not a dry run");
        let vms = inventory::vms(&pve).await.map_err(|e| (None, e.into()))?;
        // Re-check against Proxmox: work may already be in flight (another leader, an operator)
        // that none of our intents covers.
        let ours: Vec<&str> = self
            .status
            .intents
            .iter()
            .filter_map(|i| i.vm.as_deref())
            .collect();
        if let Some(vm) = vms.iter().find(|v| {
            v.has_tag(TAG_PROVISIONING)
                && !v.template
                && !v.has_tag(TAG_FAILED)
                && !ours.contains(&v.name.as_str())
        }) {
            let vm = vm.clone();
            self.set_phase(index, Phase::Starting, &vm.name);
            self.bring_up(&vm).await.map_err(|e| (Some(vm.clone()), e))?;
            return Ok(vm);
        }
        let spares: Vec<&Vm> = vms
            .iter()
            .filter(|v| v.has_tag(TAG_SPARE) && !v.running() && !v.template)
            .collect();
        let mut refused = Vec::new();
        for spare in spares {
            // A spare takes the same host memory a clone would: the hosts are memory-bound.
            match self
                .host_fits(&pve, &spare.node, vm_memory(self.proxmox()), None)
                .await
            {
                Ok(Ok(_free)) => {}
                Ok(Err(why)) => {
                    refused.push(format!("cold spare {}: {why}", spare.name));
                    continue;
                }
                Err(e) => return Err((None, e)),
            }
            let spare = Vm {
                tags: vec![TAG.into(), TAG_PROVISIONING.into()],
                ..spare.clone()
            };
            self.set_phase(index, Phase::Starting, &spare.name);
            self.set_tags(&spare, &[TAG, TAG_PROVISIONING])
                .await
                .map_err(|e| (None, e))?;
            self.event(
                &spare.name,
                format!("starting cold spare VM {} ({reason})", spare.vmid),
            );
            self.bring_up(&spare)
                .await
                .map_err(|e| (Some(spare.clone()), e))?;
            return Ok(spare);
        }
        let vm = self
            .clone_worker(&pve, &vms, reason, refused)
            .await
            .map_err(|e| (None, e))?;
        self.set_phase(index, Phase::Starting, &vm.name);
        self.bring_up(&vm).await.map_err(|e| (Some(vm.clone()), e))?;
        Ok(vm)
    }

    /// Whether `host` can run a VM of `memory` bytes (and, for a clone, store its disk on
    /// `storage`): its free memory when it can, why not when it cannot.
    async fn host_fits(
        &self,
        pve: &PveClient,
        host: &str,
        memory: i64,
        storage: Option<&str>,
    ) -> Result<Result<i64, String>, ProvisionError> {
        let need = memory + self.proxmox().host_memory_reserve_mib as i64 * 1024 * 1024;
        let free = inventory::host_free_memory(pve, host).await?;
        if free < need {
            return Ok(Err(format!(
                "{host}: {} MiB free, need {} MiB",
                free >> 20,
                need >> 20
            )));
        }
        if let Some(storage) = storage
            && inventory::storage_available(pve, host, storage).await? <= 0
        {
            return Ok(Err(format!("{host}: storage {storage} is full")));
        }
        Ok(Ok(free))
    }

    /// Picks host, VMID and name and full-clones the template; returns the new (stopped) VM.
    async fn clone_worker(
        &self,
        pve: &PveClient,
        vms: &[Vm],
        reason: &str,
        mut refused: Vec<String>,
    ) -> Result<Vm, ProvisionError> {
        let p = self.proxmox();
        let mut best: Option<(&crate::config::ProxmoxHost, i64)> = None;
        for host in &p.hosts {
            // One clone at a time per host (its storage lock); a VM already started and
            // joining does not hold it.
            if vms
                .iter()
                .any(|v| v.node == host.name && v.has_tag(TAG_PROVISIONING) && !v.running())
            {
                refused.push(format!("{}: a clone is in flight", host.name));
                continue;
            }
            let free = match self
                .host_fits(pve, &host.name, vm_memory(p), Some(&host.storage))
                .await?
            {
                Ok(free) => free,
                Err(why) => {
                    refused.push(why);
                    continue;
                }
            };
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
            .find(|name| !vms.iter().any(|v| &v.name == name) && !known_nodes.iter().any(|n| n == name))
            .expect("an unbounded range has a free name");
        // Read again right before cloning: a VM made by hand since the first read must not be
        // cloned over, nor share its name (the runbook's clone script aborts the same way).
        let fresh = inventory::vms(pve).await?;
        // No clone without an address for it (configure takes it, and checks it again).
        self.address_for(pve, &fresh, None).await?;
        if let Some(v) = fresh.iter().find(|v| v.vmid == vmid || v.name == name) {
            return Err(ProvisionError::Taken(format!(
                "VM {} ({}) on {} appeared before the clone of {name} as {vmid}; not cloning",
                v.vmid, v.name, v.node
            )));
        }
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
            max_cpu: i64::from(p.vm.cores),
            max_mem: vm_memory(p),
        })
    }

    /// Removes the VolumeAttachments of deleted Nodes whose VM is down (`cleanup.staleAttachments`):
    /// finalizers cleared, then deleted, each with an Event. Only on a synced index, where a
    /// Node missing from it is gone.
    async fn remove_stale_attachments(&self, vms: &[Vm]) {
        let Some(client) = self.kube.clone() else { return };
        if !self.app.config.cleanup.stale_attachments || !self.app.index.is_synced() {
            return;
        }
        let running: BTreeSet<&str> = vms
            .iter()
            .filter(|v| v.running())
            .map(|v| v.name.as_str())
            .collect();
        let stale = self
            .app
            .index
            .with_state(|s, _| cleanup::stale_attachments(s, &self.app.config.block_driver, &running));
        let api: kube::Api<VolumeAttachment> = kube::Api::all(client);
        for va in stale {
            let unblock = serde_json::json!({"metadata": {"finalizers": null}});
            let removed = async {
                api.patch(&va.name, &PatchParams::default(), &Patch::Merge(&unblock))
                    .await?;
                api.delete(&va.name, &DeleteParams::default()).await.map(|_| ())
            }
            .await;
            let result = match removed {
                // Gone already: someone (the attach-detach controller, an operator) was first.
                Ok(()) => "removed",
                Err(kube::Error::Api(s)) if s.code == 404 => "removed",
                Err(error) => {
                    tracing::warn!(attachment = %va.name, node = %va.node, %error, "removing a stale VolumeAttachment failed");
                    "failed"
                }
            };
            self.app
                .metrics
                .stale_attachments
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .inc();
            if result == "removed" {
                tracing::info!(attachment = %va.name, node = %va.node, "stale VolumeAttachment removed");
                self.app.events.emit(PlannedEvent {
                    namespace: "default".into(),
                    kind: "VolumeAttachment".into(),
                    name: va.name.clone(),
                    reason: "HeadroomStaleAttachment".into(),
                    message: format!(
                        "removed: node {} is gone and its VM is not running in Proxmox, so nothing can detach it",
                        va.node
                    ),
                });
            }
        }
    }

    /// Detaches one ghost disk that is due (`ghostDisks.repair: detach`): one per read,
    /// cluster-wide, by the lease holder. Right before the call the VM's config is read again
    /// and the index asked again, so a disk that an attachment or a PV names meanwhile (a pod
    /// attaching it right now) is left alone. `delete=scsiN` only detaches: PVE keeps the
    /// volume as `unusedN`.
    async fn repair_one_ghost(&mut self, pve: &PveClient, found: &[GhostDisk]) {
        let config = &self.app.config;
        if config.ghost_disks.repair != crate::config::GhostRepair::Detach || !self.app.index.is_synced() {
            return;
        }
        let now = self.clock.now();
        let due = self.app.index.with_state(|s, _| {
            ghosts::repairs(found, Some(&self.ghost_watch), s, config, now)
                .into_iter()
                .find(|r| r.verdict == Verdict::Detach)
        });
        let Some(Repair { ghost, .. }) = due else { return };
        let still_there = match inventory::config_at(pve, &ghost.host, ghost.vmid).await {
            Ok(current) => inventory::csi_disks(&current)
                .into_iter()
                .any(|(slot, disk)| slot == ghost.slot && disk == ghost.disk),
            Err(error) => {
                tracing::warn!(%error, vmid = ghost.vmid, "reading the VM config before a ghost repair failed");
                return;
            }
        };
        let named = self
            .app
            .index
            .with_state(|s, _| ghosts::named_by(s, &config.block_driver, &ghost.disk));
        if !still_there || named.is_some() {
            tracing::info!(disk = %ghost.disk, vmid = ghost.vmid, ?named, "ghost disk changed before its repair; left alone");
            return;
        }
        self.ghost_watch.attempted(&ghost);
        let path = format!("/nodes/{}/qemu/{}/config", ghost.host, ghost.vmid);
        let form = [("delete", ghost.slot.clone())];
        let result = waiting_out_locks(LOCK_PATIENCE, || pve.put(&path, &form)).await;
        let what = format!(
            "ghost disk {} ({} of VM {}): in the VM config with no VolumeAttachment or PV naming it",
            ghost.disk, ghost.slot, ghost.vmid
        );
        let (label, message) = match &result {
            Ok(_) => (
                "detached",
                format!("detached {what}; the volume stays as unusedN"),
            ),
            Err(e) => ("failed", format!("could not detach {what}: {e}")),
        };
        if result.is_ok() {
            tracing::info!(node = %ghost.node, %message, "ghost repair");
        } else {
            tracing::warn!(node = %ghost.node, %message, "ghost repair");
        }
        self.app
            .metrics
            .ghost_repairs
            .get_or_create(&ResultLabels { result: label.into() })
            .inc();
        self.app.events.emit(PlannedEvent {
            namespace: "default".into(),
            kind: "Node".into(),
            name: ghost.node.clone(),
            reason: "HeadroomGhostDisk".into(),
            message,
        });
    }

    /// `cloudInit.ipconfig0` for `vm`: `{n}` its worker number, `{ip}` an address of the pool.
    async fn ipconfig0(&self, pve: &PveClient, vm: &Vm, template: &str) -> Result<String, ProvisionError> {
        let p = self.proxmox();
        let mut ipconfig = template.to_owned();
        if ipconfig.contains("{n}") {
            let n = worker_number(&p.vm.name_pattern, &vm.name).ok_or_else(|| {
                ProvisionError::Config(format!(
                    "VM {} ({}) does not match namePattern {:?}, so ipconfig0's {{n}} has no value; \
                     give it an ipconfig0 of its own or use ipPool and {{ip}}",
                    vm.vmid, vm.name, p.vm.name_pattern
                ))
            })?;
            ipconfig = ipconfig.replace("{n}", n);
        }
        if ipconfig.contains("{ip}")
            && let Some(address) = self
                .address_for(pve, &inventory::vms(pve).await?, Some(vm))
                .await?
        {
            ipconfig = ipconfig.replace("{ip}", &address.to_string());
        }
        Ok(ipconfig)
    }

    /// An address of `proxmox.vm.ipPool` that no Node and none of the other `vms` (templates
    /// included) uses: the one `vm` already has when it is free, else the first free one.
    /// `None` when no pool is configured; an error when the pool is exhausted.
    async fn address_for(
        &self,
        pve: &PveClient,
        vms: &[Vm],
        vm: Option<&Vm>,
    ) -> Result<Option<Ipv4Addr>, ProvisionError> {
        let p = self.proxmox();
        let pool = IpPool::parse(&p.vm.ip_pool).map_err(ProvisionError::Config)?;
        if pool.is_empty() {
            return Ok(None);
        }
        let mut taken: BTreeSet<Ipv4Addr> = self
            .app
            .index
            .with_state(|s, _| s.nodes.values().flat_map(|n| n.internal_ips.clone()).collect());
        let mut own = None;
        for other in vms {
            let config = inventory::config(pve, other).await?;
            let address = config
                .get("ipconfig0")
                .and_then(Value::as_str)
                .and_then(ipconfig_address);
            match vm {
                Some(vm) if vm.vmid == other.vmid => own = address,
                _ => taken.extend(address),
            }
        }
        if let Some(own) = own.filter(|a| pool.contains(*a) && !taken.contains(a)) {
            return Ok(Some(own));
        }
        pool.next_free(&taken).map(Some).ok_or_else(|| {
            ProvisionError::NoCapacity(format!(
                "proxmox.vm.ipPool {:?} has no free address ({} taken by Nodes and VMs)",
                p.vm.ip_pool,
                taken.len()
            ))
        })
    }

    /// Drives an in-flight VM to a registered worker: brought up, then joined. Every step is
    /// safe to repeat.
    async fn finish(&self, vm: &Vm) -> Result<(), ProvisionError> {
        self.bring_up(vm).await?;
        let pve = self.pve.as_ref().expect("not a dry run");
        join(&self.app, pve, vm).await
    }

    /// (Re)configures the VM if it is stopped and starts it.
    async fn bring_up(&self, vm: &Vm) -> Result<(), ProvisionError> {
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
            // A VM headroom did not clone (a spare made by hand) keeps the cloud-init it has;
            // one without gets ours. Clones carry the marker in their description.
            let current = inventory::config(pve, vm).await?;
            let cloned = current
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with(DESCRIPTION_MARKER));
            let keeps_its_own = !cloned && current.contains_key("ipconfig0");
            if let Some(ci) = p.vm.cloud_init.as_ref().filter(|_| !keeps_its_own) {
                if let Some(user) = &ci.user {
                    form.push(("ciuser", user.clone()));
                }
                if !ci.ssh_keys.is_empty() {
                    form.push(("sshkeys", encode_ssh_keys(&ci.ssh_keys)));
                }
                if let Some(template) = &ci.ipconfig0 {
                    form.push(("ipconfig0", self.ipconfig0(pve, vm, template).await?));
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
        Ok(())
    }

    /// A failed provision: counted once under its reason, told as an Event, and the VM it
    /// left (if any) stopped and tagged failed (never retried), with the cleanup itself
    /// retried rather than counted again. Returns what happened, in words.
    async fn failed(&self, vm: Option<&Vm>, error: &ProvisionError) -> String {
        let reason = error.reason();
        self.app
            .metrics
            .provision_failures
            .get_or_create(&RejectLabels {
                reason: reason.as_str().into(),
            })
            .inc();
        let subject = vm.map_or("", |v| v.name.as_str()).to_owned();
        let message = match vm {
            Some(vm) => format!(
                "provisioning VM {} failed ({}): {error}",
                vm.vmid,
                reason.as_str()
            ),
            None => format!(
                "provision failed before a VM existed ({}): {error}",
                reason.as_str()
            ),
        };
        if reason == FailureReason::Credentials {
            tracing::error!(%error, "Proxmox refused headroom's credentials");
        } else {
            tracing::warn!(%error, reason = reason.as_str(), "provision failed");
        }
        self.event(
            if subject.is_empty() { "headroom" } else { &subject },
            message.clone(),
        );
        let Some(vm) = vm else { return message };
        let pve = self.pve.clone().expect("not a dry run");
        let base = format!("/nodes/{}/qemu/{}", vm.node, vm.vmid);
        for attempt in 1..=CLEANUP_ATTEMPTS {
            let stop = pve
                .run_task(&format!("{base}/status/stop"), &[], TASK_TIMEOUT)
                .await;
            let tagged = match stop {
                Ok(()) => self.set_tags(vm, &[TAG, TAG_FAILED]).await,
                Err(e) => Err(e.into()),
            };
            match tagged {
                Ok(()) => return message,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, vm = vm.vmid, "cleaning up a failed VM");
                    tokio::time::sleep(Duration::from_secs(2u64 << attempt)).await;
                }
            }
        }
        message
    }

    async fn set_tags(&self, vm: &Vm, ours: &[&str]) -> Result<(), ProvisionError> {
        let pve = self.pve.as_ref().expect("not a dry run");
        set_tags(&self.app, pve, vm, ours).await
    }

    fn event(&self, node: &str, message: String) {
        event(&self.app, node, message);
    }

    /// A Warning Event on each singleton about to be evicted: it is down until it runs again
    /// elsewhere, and an operator should hear that before, not after.
    fn name_singletons(&self, node: &str, singletons: &[String]) {
        for pod in singletons {
            let Some((namespace, name)) = pod.split_once('/') else {
                continue;
            };
            self.app.events.emit(PlannedEvent {
                namespace: namespace.into(),
                kind: "Pod".into(),
                name: name.into(),
                reason: "HeadroomSingletonEvicted".into(),
                message: format!(
                    "draining {node}: this pod's controller runs no other replica, so it is down until it runs again elsewhere"
                ),
            });
        }
    }

    /// Drains `node` (marked in progress by the state machine) and removes its VM.
    async fn scale_down(&mut self, node: &str, reason: &str) {
        let action = self.app.config.scale_down.action;
        let (Some(pve), Some(kube)) = (self.pve.clone(), self.kube.clone()) else {
            tracing::warn!(node, "scale-down needs Proxmox and a live cluster");
            let detail = format!("scale-down of {node} skipped: no live cluster");
            self.status
                .removal_ended(OutcomeKind::RemovalRefused, node, detail, self.clock.now());
            return self.publish();
        };
        let started = Instant::now();
        let result = crate::drain::drain(&kube, node, self.app.config.scale_down.drain_timeout.0).await;
        self.step("drain", started, if result.is_ok() { "ok" } else { "blocked" });
        let (kind, detail) = match result {
            Err(e) => (
                OutcomeKind::RemovalAbandoned,
                format!("scale-down of {node} abandoned: {e}; node uncordoned"),
            ),
            Ok(()) => match self.remove_vm(&pve, node, action).await {
                Ok(()) => (
                    OutcomeKind::Removed,
                    format!("removed worker {node} ({action:?}): {reason}"),
                ),
                Err(e) => (
                    OutcomeKind::Removed,
                    format!("{node} drained and deleted, but the VM step failed: {e}"),
                ),
            },
        };
        tracing::info!(node, %detail, "provisioner");
        self.status.removal_ended(kind, node, detail, self.clock.now());
        self.publish();
    }

    /// Shuts the drained node's VM down as a cold spare, or destroys it.
    async fn remove_vm(&self, pve: &PveClient, node: &str, action: ScaleDownAction) -> Result<(), PveError> {
        let Some(vm) = inventory::vms(pve).await?.into_iter().find(|v| v.name == node) else {
            return Ok(());
        };
        let base = format!("/nodes/{}/qemu/{}", vm.node, vm.vmid);
        match action {
            ScaleDownAction::Shutdown => {
                let form = [("timeout", "300".to_owned()), ("forceStop", "1".to_owned())];
                pve.run_task(&format!("{base}/status/shutdown"), &form, TASK_TIMEOUT)
                    .await?;
                self.set_tags(&vm, &[TAG, TAG_SPARE]).await.map_err(|e| match e {
                    ProvisionError::Pve(p) => p,
                    other => PveError::Decode(other.to_string()),
                })
            }
            // purge=1, never destroy-unreferenced-disks: CSI volumes are hot-plugged here.
            ScaleDownAction::Destroy => {
                pve.run_task(&format!("{base}/status/stop"), &[], TASK_TIMEOUT)
                    .await?;
                match pve.delete(&base, &[("purge", "1".into())]).await? {
                    Value::String(upid) => pve.wait_task(&upid, TASK_TIMEOUT).await,
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Counts a step and its duration under `result` ("ok" or an error kind).
fn count_step(app: &ReadModel, step: &str, started: Instant, result: &str) {
    let labels = StepLabels {
        step: step.into(),
        result: result.into(),
    };
    app.metrics.provision_steps.get_or_create(&labels).inc();
    app.metrics
        .provision_step_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// Sets the configured tags plus `ours` on `vm`.
async fn set_tags(app: &ReadModel, pve: &PveClient, vm: &Vm, ours: &[&str]) -> Result<(), ProvisionError> {
    let configured = app
        .config
        .proxmox
        .as_ref()
        .map(|p| p.vm.tags.as_slice())
        .unwrap_or_default();
    let form = [("tags", tags(configured, ours))];
    let path = format!("/nodes/{}/qemu/{}/config", vm.node, vm.vmid);
    waiting_out_locks(LOCK_PATIENCE, || pve.run_task(&path, &form, TASK_TIMEOUT)).await?;
    Ok(())
}

fn event(app: &ReadModel, node: &str, message: String) {
    tracing::info!(node, %message, "provisioner event");
    app.events.emit(PlannedEvent {
        namespace: "default".into(),
        kind: "Node".into(),
        name: node.into(),
        reason: "HeadroomProvisioning".into(),
        message,
    });
}

/// Waits, within `joinTimeout`, for a started VM's node to register (Ready, and its CSINode
/// listing the block driver with a count), then drops the provisioning tag.
async fn join(app: &ReadModel, pve: &PveClient, vm: &Vm) -> Result<(), ProvisionError> {
    let timeout = app
        .config
        .proxmox
        .as_ref()
        .map_or(Duration::from_secs(15 * 60), |p| p.join_timeout.0);
    let started = Instant::now();
    let result = wait_registered(app, &vm.name, timeout).await;
    count_step(app, "join", started, outcome(result.as_ref().err()));
    result?;
    label_node(app, vm).await?;
    set_tags(app, pve, vm, &[TAG]).await?;
    event(
        app,
        &vm.name,
        format!(
            "worker {} (VM {}) joined: Ready, block driver registered",
            vm.name, vm.vmid
        ),
    );
    Ok(())
}

/// Puts `proxmox.vm.nodeLabels` on the joined worker's Node, `{host}` its Proxmox host.
async fn label_node(app: &ReadModel, vm: &Vm) -> Result<(), ProvisionError> {
    let (Some(p), Some(client)) = (&app.config.proxmox, &app.client) else {
        return Ok(());
    };
    if p.vm.node_labels.is_empty() {
        return Ok(());
    }
    let labels: std::collections::BTreeMap<&str, String> =
        p.vm.node_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.replace("{host}", &vm.node)))
            .collect();
    let patch = serde_json::json!({"metadata": {"labels": labels}});
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch(&vm.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| ProvisionError::Kube(format!("labelling node {}: {e}", vm.name)))
}

/// Waits until the node is Ready and its CSINode lists the block driver with a count:
/// only then can it hold a block volume.
async fn wait_registered(app: &ReadModel, name: &str, timeout: Duration) -> Result<(), ProvisionError> {
    let deadline = Instant::now() + timeout;
    let driver = app.config.block_driver.as_str();
    let mut changes = app.index.subscribe();
    loop {
        let registered = app.index.with_state(|s, _| {
            s.nodes.get(name).is_some_and(|n| n.ready)
                && s.csi_nodes
                    .get(name)
                    .and_then(|c| c.drivers.get(driver))
                    .is_some_and(Option::is_some)
        });
        if registered {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProvisionError::JoinTimeout {
                name: name.into(),
                timeout,
            });
        }
        // Woken by any index change; the bound covers a quiet index.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), changes.changed()).await;
    }
}

/// A worker's memory in bytes, as configured.
fn vm_memory(p: &Proxmox) -> i64 {
    p.vm.memory_mib as i64 * 1024 * 1024
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

/// Of `vms` (as `/cluster/resources` showed them), those headroom started provisioning and has
/// not finished: tagged, or (killed between clone and configure) untagged but carrying
/// headroom's description in its VMID range.
pub async fn in_flight(pve: &PveClient, p: &Proxmox, vms: Vec<Vm>) -> Result<Vec<Vm>, ProvisionError> {
    let [lo, hi] = p.vm.vmid_range;
    let mut out = Vec::new();
    for vm in vms {
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

/// One Event per pending pod no worker VM can hold, and the gauge of how many there are.
fn tell_oversized(
    app: &ReadModel,
    pods: &[crate::decide::planner::OversizedPod],
    told: &mut std::collections::BTreeSet<(String, String)>,
) {
    app.metrics.oversized_pods.set(pods.len() as i64);
    let now: std::collections::BTreeSet<(String, String)> = pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    for pod in pods {
        if told.contains(&(pod.namespace.clone(), pod.name.clone())) {
            continue;
        }
        app.events.emit(PlannedEvent {
            namespace: pod.namespace.clone(),
            kind: "Pod".into(),
            name: pod.name.clone(),
            reason: "HeadroomNoWorkerFits".into(),
            message: format!(
                "no worker VM can hold this pod, so none is cloned for it: {}",
                pod.reason
            ),
        });
    }
    *told = now;
}

/// Writes the record when it changed (lease holder only); on taking the lease, first merges
/// what the previous holder wrote.
async fn persist(
    p: &mut Persistence,
    windows: &mut Windows,
    status: &ActuatorStatus,
    saved: &mut Option<Durable>,
) {
    if p.leading.has_changed().unwrap_or(false) {
        let leading = *p.leading.borrow_and_update();
        if leading {
            match p.store.load().await {
                Ok(record) => record.merge_into(windows),
                Err(error) => tracing::warn!(%error, "reading the persisted windows failed"),
            }
        }
        *saved = None;
    }
    if !*p.leading.borrow() {
        return;
    }
    let record = Durable::of(windows, status);
    if saved.as_ref() == Some(&record) {
        return;
    }
    match p.store.save(&record).await {
        Ok(()) => *saved = Some(record),
        Err(error) => tracing::warn!(%error, "persisting the windows failed; retried next tick"),
    }
}

/// The status an actuator starting now would publish: the provisions `in_flight` resumed.
pub fn resumed_status(
    config: &crate::config::Config,
    in_flight: &[Vm],
    now: crate::decide::time::Timestamp,
) -> ActuatorStatus {
    let names: Vec<String> = in_flight.iter().map(|v| v.name.clone()).collect();
    let mut status = ActuatorStatus::default();
    status.resume(&names, VmCapacity::from_config(config), now);
    status
}

/// What `status` shows from Proxmox: provisions in flight and ghost disks per node.
pub async fn observe(p: &Proxmox, attached: &inventory::AttachedDisks) -> Result<Observed, ProvisionError> {
    let pve = client(p)?;
    let vms = inventory::vms(&pve).await?;
    let drift = inventory::disk_drift(&pve, &vms, attached).await?;
    Ok(Observed {
        in_flight: in_flight(&pve, p, vms).await?,
        drift,
    })
}

/// What `status` reads from Proxmox.
pub struct Observed {
    /// Provisions in flight (what the actuator would resume).
    pub in_flight: Vec<Vm>,
    pub drift: inventory::DiskDrift,
}

/// Where the plan loop keeps its windows: the store, and whether this replica may write it.
pub struct Persistence {
    pub store: durable::Store,
    pub leading: watch::Receiver<bool>,
}

/// Runs the tick and sends its plan to the actuator: every `every`, at once when the webhook
/// admits new demand (so a VM can start before any pod is Pending), and whenever the
/// actuator's status changes (a plan made before the change is refused, so a fresh one is
/// due). `windows` start as persisted; with `persistence`, the lease holder writes them (and
/// the actuator's scale times) whenever they change, and a replica taking the lease merges
/// what the last holder wrote.
pub async fn plan_loop(
    app: Arc<ReadModel>,
    mut actuator: watch::Receiver<ActuatorStatus>,
    plans: watch::Sender<Planned>,
    mut windows: Windows,
    clock: Clock,
    every: Duration,
    mut persistence: Option<Persistence>,
) {
    let mut saved: Option<Durable> = None;
    // Oversized pods already told about (an Event each, once).
    let mut told: std::collections::BTreeSet<(String, String)> = Default::default();
    // The first tick runs as soon as every kind has listed: `/readyz` waits for its gauges.
    while !app.index.wait_synced(Duration::from_secs(3600)).await {}
    let mut first = true;
    // A watched object arrives within milliseconds of its admission: planning follows the
    // index, so demand is acted on as soon as it is confirmed.
    let mut index_changes = app.index.subscribe();
    loop {
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = app.demand_changed.notified() => {}
                changed = actuator.changed() => if changed.is_err() { return },
                _ = index_changes.changed() => {}
            }
        }
        index_changes.borrow_and_update();
        if !app.index.is_synced() {
            continue;
        }
        // The status first, then a view at least as new: see `ReadModel::view`.
        let status = actuator.borrow_and_update().clone();
        let view = app.view();
        let reservations = app.reservations();
        let admitted = app.admitted();
        let tick = app.index.with_state(|state, _| {
            tick::tick(
                &TickInput {
                    state,
                    view: &view,
                    reservations: &reservations,
                    config: &app.config,
                    admitted,
                    actuator: &status,
                },
                &mut windows,
                clock.now(),
            )
        });
        app.metrics
            .cluster
            .observe(&view, &tick.projection, &tick.evaluation);
        tell_oversized(&app, &tick.sizing.oversized_pods, &mut told);
        app.mark_ticked();
        if tick.plan != Plan::Nothing {
            tracing::info!(plan = ?tick.plan, basis = tick.basis, "plan");
        }
        plans.send_replace(Planned {
            basis: tick.basis,
            plan: tick.plan,
        });
        if let Some(p) = &mut persistence {
            persist(p, &mut windows, &status, &mut saved).await;
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
