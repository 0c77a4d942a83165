//! The read model: what the handlers and the planner read — the index and its cached
//! accounting, reservations, admitted demand, ghost disks, the actuator's published status,
//! metrics and the event sink — without API calls on the request path.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config::Config,
    decide::{
        accounting::{ClusterView, Reservations, Settings},
        actuation::ActuatorStatus,
        admission::Outlook,
        placement::Placement,
        planner,
        projection::AdmittedDemand,
    },
    events::EventSink,
    ledger::{Admitted, AdmittedLedger, BindingLedger},
    metrics::Metrics,
    shared_index::SharedIndex,
};

/// How long a binding is held if the watch never shows its pod on the node.
const BINDING_TTL: Duration = Duration::from_secs(300);

/// What one request decides on: the view, and the extender's bindings the view does not
/// show yet, taken together.
pub struct Basis {
    pub view: Arc<ClusterView>,
    pub reservations: Reservations,
}

impl Basis {
    pub fn placement(&self) -> Placement<'_> {
        Placement::new(&self.view, &self.reservations)
    }
}

/// Everything the request handlers read.
pub struct ReadModel {
    pub config: Config,
    pub index: SharedIndex,
    /// Volumes placed by the extender's bind and not yet seen through the watch.
    pub bindings: Mutex<BindingLedger>,
    /// How bind reaches the API server (None: snapshot mode, bindings are only recorded).
    pub client: Option<kube::Client>,
    pub ledger: Mutex<AdmittedLedger>,
    pub metrics: Metrics,
    pub events: EventSink,
    /// What the actuator publishes about itself (it is the only writer).
    pub actuator: watch::Receiver<ActuatorStatus>,
    /// Woken when admitted demand changes, so planning does not wait for its next tick.
    pub demand_changed: tokio::sync::Notify,
    /// The planning loop has published its first tick's gauges (`/readyz` waits for it, so a
    /// rollout never shows 0 free slots to an alert). Written by the planning loop only.
    ticked: std::sync::atomic::AtomicBool,
}

impl ReadModel {
    pub fn new(config: Config, index: SharedIndex, events: EventSink) -> Self {
        let confirm_within = config.admission.confirm_within.0;
        let metrics = Metrics::default();
        let events = events.counting(metrics.events.clone());
        index.account(Settings::from(&config));
        Self {
            config,
            index,
            bindings: Mutex::new(BindingLedger::new(BINDING_TTL)),
            client: None,
            ledger: Mutex::new(AdmittedLedger::new(confirm_within)),
            metrics,
            events,
            actuator: watch::channel(ActuatorStatus::default()).1,
            demand_changed: tokio::sync::Notify::new(),
            ticked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Binds through this client instead of only recording bindings.
    pub fn with_client(mut self, client: Option<kube::Client>) -> Self {
        self.client = client;
        self
    }

    /// Reads the actuator's status from `actuator`.
    pub fn with_actuator(mut self, actuator: watch::Receiver<ActuatorStatus>) -> Self {
        self.actuator = actuator;
        self
    }

    /// The current accounting, kept current by the index change by change: read without a
    /// lock, and at least as new as every change written before the call. The planner reads the
    /// actuator's status first and then this: a VM the actuator saw register is then in the
    /// view too, so its capacity is never counted as neither incoming nor joined.
    pub fn view(&self) -> Arc<ClusterView> {
        self.index.view()
    }

    /// The view and the reservations over it: what a webhook or extender request decides on.
    pub fn basis(&self) -> Basis {
        Basis {
            view: self.view(),
            reservations: self.reservations(),
        }
    }

    /// Volumes bound by the extender that the watch does not show on their node yet.
    pub fn reservations(&self) -> Reservations {
        let mut bindings = self.bindings.lock().unwrap_or_else(|e| e.into_inner());
        if bindings.is_empty() {
            return Reservations::new();
        }
        self.index.with_state(|s, _| {
            bindings.reservations(Instant::now(), |pod, node| {
                s.pods
                    .get(pod)
                    .is_some_and(|p| p.node_name.as_deref() == Some(node))
            })
        })
    }

    /// Whether capacity can still arrive without a human.
    pub fn outlook(&self, view: &ClusterView) -> Outlook {
        let incoming = self.actuator.borrow().incoming_vms();
        let may_add = self.config.proxmox.is_some()
            && planner::room_for_vms(&self.config, view.nodes.len(), incoming) > 0;
        Outlook {
            incoming: incoming > 0,
            may_add,
        }
    }

    /// Records an admission (`vouched`: it came over an authenticated connection).
    pub fn record_admitted(&self, what: Admitted, demand: AdmittedDemand, vouched: bool) {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(what, demand, vouched, Instant::now());
        // Only vouched demand moves the projection; the watch wakes planning for the rest.
        if vouched {
            self.demand_changed.notify_one();
        }
    }

    /// Exports, per node whose VM was read, the disks its VolumeAttachments say are attached
    /// that the VM's config does not hold.
    pub fn set_attachment_drift(&self, drift: &crate::proxmox::inventory::DiskDrift) {
        for node in &drift.checked {
            let missing = drift.missing.get(node).map_or(0, |m| m.len() as i64);
            self.metrics
                .attachment_drift
                .get_or_create(&crate::metrics::NodeLabels { node: node.clone() })
                .set(missing);
        }
    }

    /// Replaces the ghost disks (CSI disks on worker VMs with no VolumeAttachment).
    pub fn set_ghosts(&self, ghosts: Reservations) {
        for (node, keys) in &ghosts {
            self.metrics
                .ghost_disks
                .get_or_create(&crate::metrics::NodeLabels {
                    node: node.to_string(),
                })
                .set(keys.len() as i64);
        }
        let before = self.index.set_reserved(ghosts.clone());
        for node in before.keys().filter(|n| !ghosts.contains_key(*n)) {
            self.metrics
                .ghost_disks
                .get_or_create(&crate::metrics::NodeLabels {
                    node: node.to_string(),
                })
                .set(0);
        }
    }

    /// The planning loop published a tick's gauges.
    pub fn mark_ticked(&self) {
        self.metrics.plan_ticks.inc();
        self.ticked.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the gauges of a first tick are published.
    pub fn ticked(&self) -> bool {
        self.ticked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Admitted demand not yet visible as objects.
    pub fn admitted(&self) -> AdmittedDemand {
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if ledger.is_empty() {
            return AdmittedDemand::default();
        }
        self.index.with_state(|s, _| {
            ledger.total(Instant::now(), |what| match what {
                Admitted::Pod { namespace, name } => s.pods.get_str(namespace, name).is_some(),
                Admitted::Claim { namespace, name } => s.claims.get_str(namespace, name).is_some(),
                Admitted::Unnamed { .. } => false,
            })
        })
    }
}
