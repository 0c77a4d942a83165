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
    pub kind: String,
    pub operation: String,
    pub verdict: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
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
    pub provision_failures: Counter,
    pub incoming_vms: Gauge,
    pub ghost_disks: Family<NodeLabels, Gauge>,
    pub synced: Gauge,
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
        let provision_failures = Counter::default();
        registry.register(
            "provision_failures",
            "Provisions that failed (VM stopped and tagged headroom-failed)",
            provision_failures.clone(),
        );
        let incoming_vms = Gauge::default();
        registry.register(
            "incoming_vms",
            "Worker VMs being provisioned or cold spares starting",
            incoming_vms.clone(),
        );
        let ghost_disks = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "ghost_disks",
            "CSI disks in a worker VM's config with no VolumeAttachment (they hold a LUN)",
            ghost_disks.clone(),
        );
        let synced = Gauge::default();
        registry.register(
            "source_synced",
            "1 once every watched kind has been listed",
            synced.clone(),
        );
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
            ghost_disks,
            synced,
        }
    }
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
