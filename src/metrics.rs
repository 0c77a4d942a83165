//! The one Prometheus registry and the metrics headroom exports.

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of `headroom_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub kind: &'static str,
    pub operation: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Why a pod was moved (`rebalance`, `lun-cap-incident`) and how the move ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    pub cause: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
    pub kind: String,
}

/// Gauges that describe the cluster, refreshed on every evaluation of the projection.
#[derive(Default)]
pub struct ClusterGauges {
    pub node_block_volumes: Family<NodeLabels, Gauge>,
    pub node_failing_to_attach: Family<NodeLabels, Gauge>,
    pub node_soft_cap: Family<NodeLabels, Gauge>,
    pub node_hard_cap: Family<NodeLabels, Gauge>,
    pub free_block_slots: Gauge,
    pub pending_block_claims: Gauge,
    pub memory_request_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub memory_limit_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub trigger_firing: Family<NameLabels, Gauge>,
    pub signal_firing: Family<NameLabels, Gauge>,
    /// kproximate's node gauges: worker nodes total and ready.
    pub nodes: Family<StateLabels, Gauge>,
    /// kproximate's resource gauges: cpu (cores) and memory (bytes), allocatable and allocated.
    pub resources: Family<ResourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The per-node values last set: a gauge is looked up (label hashed, family locked) only
    /// when its node changed — 5,000 nodes, four gauges each, on every evaluation.
    last_nodes: std::sync::Mutex<std::collections::HashMap<crate::model::Name, NodeGaugeValues>>,
}

/// One node's gauge values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeGaugeValues {
    block_volumes: i64,
    failing_to_attach: i64,
    soft_cap: i64,
    hard_cap: i64,
}

impl ClusterGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "node_block_volumes",
            "Block volumes holding a LUN on the node",
            self.node_block_volumes.clone(),
        );
        r.register(
            "node_block_volumes_failing",
            "Block volumes whose attachment to the node failed (no LUN; their pods wait)",
            self.node_failing_to_attach.clone(),
        );
        r.register(
            "node_block_soft_cap",
            "The node's block-PVC soft cap",
            self.node_soft_cap.clone(),
        );
        r.register(
            "node_block_hard_cap",
            "The node's CSINode attach limit (LUNs)",
            self.node_hard_cap.clone(),
        );
        r.register(
            "cluster_free_block_slots",
            "Free block slots under the soft caps, minus pending claims",
            self.free_block_slots.clone(),
        );
        r.register(
            "cluster_pending_block_claims",
            "Block claims waiting for a node",
            self.pending_block_claims.clone(),
        );
        r.register(
            "cluster_memory_request_ratio",
            "Memory requested ÷ allocatable on schedulable nodes",
            self.memory_request_ratio.clone(),
        );
        r.register(
            "cluster_memory_limit_ratio",
            "Memory limits ÷ allocatable on schedulable nodes",
            self.memory_limit_ratio.clone(),
        );
        r.register(
            "trigger_firing",
            "1 while a scale-up trigger's condition holds on the projection",
            self.trigger_firing.clone(),
        );
        r.register(
            "signal_firing",
            "1 while a signal's condition holds",
            self.signal_firing.clone(),
        );
        r.register("nodes", "Nodes by state (total, ready)", self.nodes.clone());
        r.register(
            "cluster_resources",
            "CPU (cores) and memory (bytes) of schedulable nodes: allocatable, and allocated (requested)",
            self.resources.clone(),
        );
    }

    /// Sets every gauge from a view, its projection and its evaluation.
    pub fn observe(
        &self,
        view: &crate::decide::accounting::ClusterView,
        p: &crate::decide::projection::Projection,
        evaluation: &crate::decide::projection::Evaluation,
    ) {
        let mut last = self.last_nodes.lock().unwrap_or_else(|e| e.into_inner());
        for n in &view.nodes {
            let now = NodeGaugeValues {
                block_volumes: n.block_volumes,
                failing_to_attach: n.failing_to_attach,
                soft_cap: n.soft_cap,
                hard_cap: n.hard_cap,
            };
            if last.get(&n.name) == Some(&now) {
                continue;
            }
            let l = NodeLabels {
                node: n.name.to_string(),
            };
            self.node_block_volumes.get_or_create(&l).set(now.block_volumes);
            self.node_failing_to_attach
                .get_or_create(&l)
                .set(now.failing_to_attach);
            self.node_soft_cap.get_or_create(&l).set(now.soft_cap);
            self.node_hard_cap.get_or_create(&l).set(now.hard_cap);
            last.insert(n.name.clone(), now);
        }
        drop(last);
        self.free_block_slots.set(p.free_block_slots);
        self.pending_block_claims.set(p.pending_block_claims);
        self.memory_request_ratio.set(p.memory_request_ratio);
        self.memory_limit_ratio.set(p.memory_limit_ratio);
        for c in &evaluation.triggers {
            self.trigger_firing
                .get_or_create(&NameLabels { name: c.name.into() })
                .set(i64::from(c.firing));
        }
        for c in &evaluation.signals {
            self.signal_firing
                .get_or_create(&NameLabels { name: c.name.into() })
                .set(i64::from(c.firing));
        }
        self.nodes
            .get_or_create(&StateLabels {
                state: "total".into(),
            })
            .set(view.nodes.len() as i64);
        self.nodes
            .get_or_create(&StateLabels {
                state: "schedulable".into(),
            })
            .set(view.schedulable().count() as i64);
        let sum = |f: fn(&crate::decide::accounting::NodeUsage) -> i64| {
            view.schedulable().map(f).sum::<i64>() as f64
        };
        let set = |resource: &str, kind: &str, v: f64| {
            self.resources
                .get_or_create(&ResourceLabels {
                    resource: resource.into(),
                    kind: kind.into(),
                })
                .set(v);
        };
        set("cpu", "allocatable", sum(|n| n.cpu_allocatable_millis) / 1000.0);
        set("cpu", "allocated", sum(|n| n.cpu_requested_millis) / 1000.0);
        set("memory", "allocatable", sum(|n| n.memory_allocatable_bytes));
        set("memory", "allocated", sum(|n| n.memory_requested_bytes));
    }
}

/// The TLS listener's connections: how many are open, and why handshakes or accepts were
/// refused (a closed set, every value exported from the start).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Family<RejectLabels, Counter>,
}

impl ConnectionMetrics {
    pub const REFUSALS: [&'static str; 6] = [
        "limit",
        "handshake-timeout",
        "no-certificate",
        "untrusted-certificate",
        "name-not-allowed",
        "handshake",
    ];

    fn register(&self, r: &mut Registry) {
        for reason in Self::REFUSALS {
            self.refused
                .get_or_create(&RejectLabels {
                    reason: reason.into(),
                })
                .get();
        }
        r.register(
            "connections_open",
            "Connections the TLS listener holds open",
            self.open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections the TLS listener closed before any request, by reason",
            self.refused.clone(),
        );
    }

    /// Counts a refusal; `reason` is one of `REFUSALS`.
    pub fn refused(&self, reason: &'static str) {
        debug_assert!(Self::REFUSALS.contains(&reason), "{reason}");
        self.refused
            .get_or_create(&RejectLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a connection open until the guard drops.
    pub fn open(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// One open connection, counted while it lives.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric, registered once at start-up.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub bad_requests: Family<RouteLabels, Counter>,
    pub events: Family<ResultLabels, Counter>,
    pub extender_rejections: Family<RejectLabels, Counter>,
    pub binds: Family<RejectLabels, Counter>,
    pub provision_steps: Family<StepLabels, Counter>,
    pub provision_step_duration: Family<StepLabels, Histogram>,
    pub provision_failures: Family<RejectLabels, Counter>,
    pub incoming_vms: Gauge,
    /// Pending pods no worker VM of the configured shape can hold.
    pub oversized_pods: Gauge,
    pub ghost_disks: Family<NodeLabels, Gauge>,
    /// Disks VolumeAttachments say are attached that the VM's config does not hold.
    pub attachment_drift: Family<NodeLabels, Gauge>,
    /// Stale VolumeAttachments removed (result: removed, failed).
    pub stale_attachments: Family<ResultLabels, Counter>,
    /// Pod moves (cause: rebalance, lun-cap-incident; result: moved, blocked, failed, timeout).
    pub rebalance_moves: Family<MoveLabels, Counter>,
    /// Ghost disks detached (result: detached, failed).
    pub ghost_repairs: Family<ResultLabels, Counter>,
    pub cluster: ClusterGauges,
    /// kproximate's "provisioned" gauges: worker VMs headroom manages, by state, and their
    /// configured cores and memory.
    pub worker_vms: Family<StateLabels, Gauge>,
    pub provisioned: Family<ResourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub synced: Gauge,
    /// Planning ticks run (the planner is alive; tests count what ran with it).
    pub plan_ticks: Counter,
    pub connections: ConnectionMetrics,
}

/// Seconds buckets from 50 µs to ~3 s: admission answers live in the sub-millisecond range,
/// and the API server's own buckets (5 ms and up) are too coarse to see them.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 3.0, 11,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("headroom");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by object kind, operation, verdict and reason",
            admission_requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time to answer a webhook or extender request, by route",
            request_duration.clone(),
        );
        let bad_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Requests rejected as unreadable (400/413/415), by route",
            bad_requests.clone(),
        );
        let events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "events",
            "Kubernetes Events emitted, by result (created, failed, dropped, logged)",
            events.clone(),
        );
        let extender_rejections = Family::<RejectLabels, Counter>::default();
        registry.register(
            "extender_rejected_nodes",
            "Nodes the extender filter rejected, by reason (soft-cap, unresolvable)",
            extender_rejections.clone(),
        );
        let binds = Family::<RejectLabels, Counter>::default();
        registry.register(
            "extender_binds",
            "Extender bind results (bound, failed)",
            binds.clone(),
        );
        let provision_steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "provision_steps",
            "Provisioning steps (clone, configure, start, join, resume, provision, drain) by result",
            provision_steps.clone(),
        );
        let provision_step_duration = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.1, 3.0, 10,
            ))
        });
        registry.register(
            "provision_step_duration_seconds",
            "Time each provisioning step took, by step and result",
            provision_step_duration.clone(),
        );
        let provision_failures = Family::<RejectLabels, Counter>::default();
        // Every reason exists from the start: `increase()` over a series that appears with
        // its first failure misses that failure.
        for reason in crate::decide::actuation::FailureReason::ALL {
            provision_failures
                .get_or_create(&RejectLabels {
                    reason: reason.as_str().into(),
                })
                .get();
        }
        registry.register(
            "provision_failures",
            "Provisions that ended without a registered node, by reason",
            provision_failures.clone(),
        );
        let incoming_vms = Gauge::default();
        registry.register(
            "incoming_vms",
            "Worker VMs being provisioned or cold spares starting",
            incoming_vms.clone(),
        );
        let oversized_pods = Gauge::default();
        registry.register(
            "oversized_pods",
            "Pending pods no worker VM of the configured shape can hold (never a reason to clone)",
            oversized_pods.clone(),
        );
        let ghost_disks = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "ghost_disks",
            "CSI disks in a worker VM's config with no VolumeAttachment (they hold a LUN)",
            ghost_disks.clone(),
        );
        let attachment_drift = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "attachment_drift",
            "Disks a VolumeAttachment says are attached to the node that its VM's config does not hold",
            attachment_drift.clone(),
        );
        let stale_attachments = results_counter(
            &mut registry,
            "stale_attachments",
            "VolumeAttachments of deleted nodes whose VM is down, removed by headroom, by result",
            &["removed", "failed"],
        );
        let rebalance_moves = Family::<MoveLabels, Counter>::default();
        for cause in ["rebalance", "lun-cap-incident"] {
            for result in ["moved", "blocked", "failed", "timeout"] {
                rebalance_moves
                    .get_or_create(&MoveLabels {
                        cause: cause.into(),
                        result: result.into(),
                    })
                    .get();
            }
        }
        registry.register(
            "rebalance_moves",
            "Pods evicted so the extender places them on another node, by cause (rebalance: closing the block-volume spread; lun-cap-incident: a volume found no LUN) and result",
            rebalance_moves.clone(),
        );
        let ghost_repairs = results_counter(
            &mut registry,
            "ghost_repairs",
            "Ghost disks detached from a worker VM's config (the volume kept as unusedN), by result",
            &["detached", "failed"],
        );
        let cluster = ClusterGauges::default();
        cluster.register(&mut registry);
        let worker_vms = Family::<StateLabels, Gauge>::default();
        registry.register(
            "worker_vms",
            "Worker VMs headroom manages in Proxmox, by state (total, running)",
            worker_vms.clone(),
        );
        let provisioned = Family::<ResourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "provisioned_resources",
            "CPU (cores) and memory (bytes) configured on the worker VMs headroom manages",
            provisioned.clone(),
        );
        let synced = Gauge::default();
        registry.register(
            "source_synced",
            "1 once every watched kind has been listed",
            synced.clone(),
        );
        let plan_ticks = Counter::default();
        registry.register(
            "plan_ticks",
            "Planning ticks run: each evaluates the triggers and hands the actuator a plan",
            plan_ticks.clone(),
        );
        let connections = ConnectionMetrics::default();
        connections.register(&mut registry);
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())])
            .set(1);
        registry.register("build_info", "Build information", build);
        Metrics {
            registry: Mutex::new(registry),
            admission_requests,
            request_duration,
            bad_requests,
            events,
            extender_rejections,
            binds,
            provision_steps,
            provision_step_duration,
            provision_failures,
            incoming_vms,
            oversized_pods,
            ghost_disks,
            attachment_drift,
            stale_attachments,
            rebalance_moves,
            ghost_repairs,
            cluster,
            worker_vms,
            provisioned,
            synced,
            plan_ticks,
            connections,
        }
    }
}

/// A counter family by `result`, every result exported at 0 from the start (an alert on an
/// increase needs the series to exist before the first one).
fn results_counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    results: &[&str],
) -> Family<ResultLabels, Counter> {
    let family = Family::<ResultLabels, Counter>::default();
    for result in results {
        family
            .get_or_create(&ResultLabels {
                result: (*result).into(),
            })
            .get();
    }
    registry.register(name, help, family.clone());
    family
}

impl Metrics {
    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}
