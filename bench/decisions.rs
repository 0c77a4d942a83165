//! Criterion micro-benchmarks of the pure decisions on the synthetic cluster of
//! `bench/gen_snapshot.py` (5,000 nodes, 150,000 pods, 100,000 bound, attached block claims),
//! built in memory: `cargo bench --bench decisions`. Under `cargo test` (no `--bench`) each runs
//! once on a 50-node cluster, so the suite checks they still run without paying for the scale.
//!
//! Besides the decisions alone, the `route` benchmarks post the bodies of `bench/make_bodies.py`
//! to the real routers in process: reading the JSON, deciding and writing the answer — the
//! server-side time, without TLS, HTTP and the load generator's share of the cores.

use std::{
    collections::BTreeSet,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::Request};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use tower::ServiceExt;

use criterion::{BatchSize, Criterion};

#[path = "echo.rs"]
mod echo;
use headroom::{
    config::Config,
    decide::{
        accounting::{self, Reservations, Settings},
        actuation::ActuatorStatus,
        admission::{self, Outlook},
        extender,
        live_view::LiveView,
        placement::{self, BlockDemand, Placement},
        projection::{self, AdmittedDemand, Incoming, VmCapacity, Windows},
        tick::{self, TickInput},
        time::Timestamp,
    },
    events::EventSink,
    index::{ClusterState, Object},
    model::{
        AttachmentInfo, ClaimInfo, Controller, CsiNodeInfo, Name, NodeInfo, PodInfo, StorageClassInfo,
        VolumeInfo, ns_name,
    },
    read_model::ReadModel,
    server,
    shared_index::SharedIndex,
};

const BLOCK: &str = "csi.proxmox.sinextra.dev";
const GI: i64 = 1 << 30;

/// The generator's cluster: claim `c` and pod `c` on node `c % nodes`, namespace `ns{c % 500}`.
fn synthetic(nodes: usize, pods: usize, claims: usize) -> ClusterState {
    let mut s = ClusterState::default();
    let node_name = |i: usize| format!("w{:05}", i % nodes);
    s.apply(Object::StorageClass(StorageClassInfo {
        name: "proxmox-lvm".into(),
        provisioner: BLOCK.into(),
        is_default: false,
    }));
    for n in 0..nodes {
        let name = Name::from(node_name(n));
        s.apply(Object::Node(NodeInfo {
            name: name.clone(),
            ready: true,
            memory_allocatable: 64 * GI,
            cpu_allocatable_millis: 16_000,
            provider_id: Some(format!("proxmox://lab/{}", 1000 + n)),
            ..Default::default()
        }));
        s.apply(Object::CsiNode(CsiNodeInfo {
            name,
            drivers: [(BLOCK.to_owned(), Some(28))].into_iter().collect(),
        }));
    }
    for c in 0..claims {
        let (ns, pv) = (
            Name::from(format!("ns{}", c % 500)),
            Name::from(format!("pv-{c}")),
        );
        s.apply(Object::Claim(ClaimInfo {
            namespace: ns,
            name: format!("data-{c}").into(),
            storage_class: Some("proxmox-lvm".into()),
            volume_name: Some(pv.clone()),
        }));
        s.apply(Object::Volume(VolumeInfo {
            name: pv.clone(),
            csi_driver: Some(BLOCK.into()),
            volume_handle: Some(format!("lab/pve/local-lvm/vm-9999-{pv}").into()),
            pinned_to: Box::default(),
        }));
        s.apply(Object::Attachment(AttachmentInfo {
            name: format!("csi-{c}").into(),
            attacher: BLOCK.into(),
            node_name: node_name(c).into(),
            pv_name: Some(pv),
            inline_handle: None,
            attached: true,
            detaching: false,
            attach_error: false,
        }));
    }
    for p in 0..pods {
        s.apply(Object::Pod(PodInfo {
            namespace: format!("ns{}", p % 500).into(),
            name: format!("pod-{p}").into(),
            node_name: Some(node_name(p).into()),
            terminal: false,
            claims: if p < claims {
                [format!("data-{p}").into()].into()
            } else {
                Box::default()
            },
            memory_request: GI / 4,
            memory_limit: GI / 4,
            cpu_request_millis: 100,
            controller: Controller::Other,
            owner: 1 + (p / 3) as u64,
            // Two labels, as a Deployment's pods carry (app, pod-template-hash).
            labels: headroom::model::label_hashes([
                (&"app".to_owned(), &format!("app-{}", p / 3)),
                (&"pod-template-hash".to_owned(), &"5d9".to_owned()),
            ])
            .into(),
        }));
    }
    s
}

fn main() {
    // `BENCH_SMALL=1` measures on the small cluster too (for callgrind, whose setup at full
    // scale takes minutes; a route's parse and answer do not depend on the cluster's size).
    let full = std::env::args().any(|a| a == "--bench") && std::env::var_os("BENCH_SMALL").is_none();
    let (nodes, pods, claims) = if full {
        (5_000, 150_000, 100_000)
    } else {
        (50, 1_500, 1_000)
    };
    let state = synthetic(nodes, pods, claims);
    let config = Config::default();
    let settings = Settings::from(&config);
    let none = Reservations::new();
    let view = accounting::account(&state, &settings, &none);
    let placement = Placement::new(&view, &none);
    let names: Vec<String> = state.nodes.keys().map(|n| n.to_string()).collect();
    // The benchmark bodies' pod: it mounts claim data-7 (already on w00007).
    let review: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/admission/pod-create.json"
        ))
        .expect("the fixture"),
    )
    .expect("JSON");
    let mut object = review["request"]["object"].clone();
    object["metadata"]["namespace"] = "ns7".into();
    object["spec"]["volumes"] =
        serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-7"}}]);
    let pod = Pod::deserialize(&object).expect("a pod");
    let demand = placement::pod_block_demand(&view, "ns7", &pod);
    assert_eq!(demand.keys.len(), 1, "the pod's claim resolves");
    // A new claim: what the extender weighs for a pod whose volume is on no node yet.
    let fresh = BlockDemand {
        keys: BTreeSet::from([Name::from("claim:ns7/new-0")]),
        ..Default::default()
    };
    let outlook = Outlook {
        incoming: false,
        may_add: true,
    };
    let vm = VmCapacity::from_config(&config);

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    c.bench_function("admission: parse pod, resolve claims, validate", |b| {
        b.iter(|| {
            let pod = Pod::deserialize(black_box(&object)).expect("a pod");
            let demand = placement::pod_block_demand(&view, "ns7", &pod);
            admission::validate_pod(placement, &config, &demand, outlook)
        })
    });
    c.bench_function("admission: validate_pod (new claim)", |b| {
        b.iter(|| admission::validate_pod(placement, &config, black_box(&fresh), outlook))
    });
    c.bench_function("admission: mutate_pod", |b| {
        b.iter(|| {
            headroom::server::patch::patch(black_box(&pod), &admission::steer(placement, &config, &demand))
        })
    });
    c.bench_function(&format!("extender: filter {nodes} nodes"), |b| {
        b.iter(|| extender::filter(placement, black_box(&fresh), &names))
    });
    c.bench_function(&format!("extender: prioritize {nodes} nodes"), |b| {
        b.iter(|| extender::prioritize(placement, black_box(&fresh), GI / 4, config.scoring, &names))
    });
    c.bench_function("projection: project + evaluate", |b| {
        let mut windows = Windows::default();
        b.iter(|| {
            let p = projection::project(&view, AdmittedDemand::default(), Incoming::default(), vm);
            projection::evaluate(&p, &config, &mut windows, Timestamp(0), None)
        })
    });
    c.bench_function("tick: project, evaluate, size, plan", |b| {
        let mut windows = Windows::default();
        let actuator = ActuatorStatus::default();
        b.iter(|| {
            tick::tick(
                &TickInput {
                    state: &state,
                    view: &view,
                    reservations: &none,
                    config: &config,
                    admitted: AdmittedDemand::default(),
                    actuator: &actuator,
                },
                &mut windows,
                Timestamp(0),
            )
        })
    });
    let mut group = c.benchmark_group("accounting");
    group.sample_size(10);
    group.bench_function(
        format!("account {nodes} nodes, {pods} pods, {claims} claims"),
        |b| {
            b.iter_batched(
                || (),
                |()| accounting::account(&state, &settings, &none),
                BatchSize::PerIteration,
            )
        },
    );
    // One change at a time: a pod moves between two nodes (its claim follows), a
    // VolumeAttachment flips attached/failing. What the index does per watch event.
    let mut live = LiveView::build(&state, settings.clone(), none.clone());
    let moved = state.pods.get(&ns_name("ns7", "pod-7")).cloned().expect("pod-7");
    let mut flip = 0usize;
    group.bench_function("live view: one pod moves to another node", |b| {
        let mut state = state.clone();
        b.iter(|| {
            flip += 1;
            let mut pod = moved.clone();
            pod.node_name = Some(format!("w{:05}", (7 + flip % 2) % nodes).into());
            let object = Object::Pod(*pod);
            let key = object.key();
            let old = state.apply(object);
            live.changed(&state, &key, old.as_ref());
        })
    });
    let attachment = state.attachments.get("csi-7").cloned().expect("csi-7");
    group.bench_function("live view: one VolumeAttachment fails and recovers", |b| {
        let mut state = state.clone();
        b.iter(|| {
            flip += 1;
            let mut va = attachment.clone();
            va.attach_error = flip.is_multiple_of(2);
            va.attached = flip % 2 == 1;
            let object = Object::Attachment(va);
            let key = object.key();
            let old = state.apply(object);
            live.changed(&state, &key, old.as_ref());
        })
    });
    // Publishing: what a reader gets per change. Shared nodes and persistent maps (what the
    // index does) against copying every node and claim (what a plain copy would cost).
    group.bench_function("publish: clone the view (shared nodes, persistent maps)", |b| {
        b.iter(|| Arc::new(black_box(live.view()).clone()))
    });
    group.bench_function("publish: deep copy of nodes and claims", |b| {
        b.iter(|| {
            let v = black_box(live.view());
            let nodes: Vec<accounting::NodeUsage> = v.nodes.iter().cloned().collect();
            let claims: std::collections::HashMap<_, _> = v
                .block_claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (nodes, claims)
        })
    });
    group.finish();
    // The request path's read of the published view while a writer publishes a new one every
    // 100 µs (10,000 changes/s): the index's ArcSwap against an RwLock around the Arc.
    let swapped = arc_swap::ArcSwap::new(Arc::new(live.view().clone()));
    let locked = std::sync::RwLock::new(Arc::new(live.view().clone()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let next = Arc::new(live.view().clone());
                swapped.store(next.clone());
                *locked.write().expect("lock") = next;
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        c.bench_function("view read under publishing: ArcSwap load", |b| {
            b.iter(|| black_box(swapped.load_full()))
        });
        c.bench_function("view read under publishing: RwLock<Arc> read + clone", |b| {
            b.iter(|| black_box(locked.read().expect("lock").clone()))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (sink, _events) = EventSink::channel();
    let app = Arc::new(ReadModel::new(
        config.clone(),
        SharedIndex::from_state(state.clone()),
        sink,
    ));
    // The floor, in the harness only: the same router reads the same body within the same
    // budget and answers a fixed AdmissionReview — everything but parse, decide and encode.
    let router = echo::with_echo(server::routes(app));
    let mut review = review;
    review["request"]["namespace"] = "ns7".into();
    review["request"]["object"] = object.clone();
    let review = review.to_string();
    let args = serde_json::json!({"Pod": object, "Nodes": null, "NodeNames": names}).to_string();
    let mut routes = Vec::new();
    for (route, body) in [
        ("/echo", &review),
        ("/validate", &review),
        ("/mutate", &review),
        ("/extender/filter", &args),
        ("/extender/prioritize", &args),
    ] {
        // The first request builds the accounting view, as `serve` does before it listens.
        let (status, answer) = runtime.block_on(post(&router, route, body));
        assert_eq!(status, 200, "{route}: {}", String::from_utf8_lossy(&answer));
        c.bench_function(&format!("route {route} (read, decide, write)"), |b| {
            b.iter(|| runtime.block_on(post(&router, route, black_box(body))))
        });
        routes.push((route, body));
    }
    c.final_summary();

    // Criterion reports means; the targets are about the tail. Each request timed alone.
    let samples = if full { 5_000 } else { 10 };
    println!("\nserver-side latency per request, {samples} requests each (read, decide, write):");
    for (route, body) in routes {
        let mut took: Vec<Duration> = (0..samples)
            .map(|_| {
                let start = Instant::now();
                black_box(runtime.block_on(post(&router, route, body)));
                start.elapsed()
            })
            .collect();
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        println!(
            "  {route:<22} p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
            at(0.5),
            at(0.99),
            took[took.len() - 1]
        );
    }
}

async fn post(router: &Router, route: &str, body: &str) -> (u16, axum::body::Bytes) {
    let request = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (status, bytes)
}
