//! Churn: claims, pods and VolumeAttachments created and deleted through the stand-in API
//! server at a steady rate, into headroom's live watches on the cluster of
//! `bench/gen_snapshot.py` (5,000 nodes, 150,000 pods, 100,000 block claims):
//! `cargo bench --bench churn`. Under `cargo test` (no `--bench`) it runs for a second on 50
//! nodes, so the suite checks that every event still becomes visible.
//!
//! Two measurements, each at 100 and 1,000 events/s:
//! 1. **Event → decision.** headroom's read path in this process — `live::watch_all` into the
//!    `SharedIndex` and its accounting, on a runtime of its own — and for every event, the time
//!    from the stand-in sending it on the watch to the first published view that shows it (a
//!    claim known, a volume held on its pod's node, an attachment's node listed, and each gone
//!    again). headroom's CPU is that of its runtime's threads.
//! 2. **The whole process.** The real `headroom serve` (watches, planning loop, servers) against
//!    the same stand-in and stream: its CPU share from `/proc/PID/stat` and its resident memory.
//!
//! Every slot `s` goes through six events half a second apart — claim `churn-s` created (bound
//! to `pv-churn-s`), pod `churn-s` on node `s`, an attachment of the volume on node `s+1`, the
//! pod deleted, the attachment deleted, the claim deleted — interleaved with other slots'.

#[path = "../tests/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apiserver::ApiServer;
use headroom::{
    config::Config,
    decide::accounting::{ClusterView, Settings},
    model::ns_name,
    shared_index::SharedIndex,
    source::live,
};
use serde_json::{Value, json};

const BLOCK: &str = "csi.proxmox.sinextra.dev";
const BIN: &str = env!("CARGO_BIN_EXE_headroom");

/// The size of the run.
struct Scale {
    nodes: usize,
    pods: usize,
    claims: usize,
    seconds: u64,
    rates: &'static [u64],
}

/// One step of a slot's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    ClaimCreated,
    PodCreated,
    AttachmentCreated,
    PodDeleted,
    AttachmentDeleted,
    ClaimDeleted,
}

const STEPS: [Step; 6] = [
    Step::ClaimCreated,
    Step::PodCreated,
    Step::AttachmentCreated,
    Step::PodDeleted,
    Step::AttachmentDeleted,
    Step::ClaimDeleted,
];

/// One event sent, and what the view shows once it has it.
struct Sent {
    step: Step,
    slot: usize,
    at: Instant,
}

/// The objects of slot `s` on a cluster of `nodes` nodes.
struct Slot {
    namespace: String,
    name: String,
    node: String,
    other_node: String,
    key: String,
}

impl Slot {
    fn new(s: usize, nodes: usize) -> Self {
        Slot {
            namespace: format!("ns{}", s % 500),
            name: format!("churn-{s}"),
            node: format!("w{:05}", s % nodes),
            other_node: format!("w{:05}", (s + 1) % nodes),
            // A claim bound to a PV the index has not seen is keyed by the PV's name.
            key: format!("pv:pv-churn-{s}"),
        }
    }

    fn claim(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"storageClassName": "proxmox-lvm", "volumeName": format!("pv-{}", self.name)},
            "status": {"phase": "Bound"}})
    }

    fn pod(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"nodeName": self.node,
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": self.name}}],
                "containers": [{"name": "app", "image": "app",
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]},
            "status": {"phase": "Running"}})
    }

    fn attachment(&self) -> Value {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": self.name},
            "spec": {"attacher": BLOCK, "nodeName": self.other_node,
                "source": {"persistentVolumeName": format!("pv-{}", self.name)}},
            "status": {"attached": true}})
    }

    /// Sends `step` of this slot to the stand-in.
    fn send(&self, api: &ApiServer, step: Step) {
        match step {
            Step::ClaimCreated => api.apply(self.claim()),
            Step::PodCreated => api.apply(self.pod()),
            Step::AttachmentCreated => api.apply(self.attachment()),
            Step::PodDeleted => api.delete(&self.pod()),
            Step::AttachmentDeleted => api.delete(&self.attachment()),
            Step::ClaimDeleted => api.delete(&self.claim()),
        }
    }

    /// Whether `view` shows `step` of this slot.
    fn shown(&self, view: &ClusterView, step: Step) -> bool {
        let claim = ns_name(&self.namespace, &self.name);
        let on_node = || {
            view.node(&self.node)
                .is_some_and(|n| n.volume_keys.contains(self.key.as_str()))
        };
        let attached = || {
            view.key_nodes
                .get(self.key.as_str())
                .is_some_and(|nodes| nodes.iter().any(|n| *n == self.other_node))
        };
        match step {
            Step::ClaimCreated => view.block_claims.contains_key(&claim),
            Step::PodCreated => on_node(),
            Step::AttachmentCreated => attached(),
            Step::PodDeleted => !on_node(),
            Step::AttachmentDeleted => !attached(),
            Step::ClaimDeleted => !view.block_claims.contains_key(&claim),
        }
    }
}

/// The stand-in API server holding the generator's cluster, on a runtime of its own.
fn cluster(scale: &Scale, runtime: &tokio::runtime::Runtime) -> ApiServer {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen_snapshot.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            &scale.nodes.to_string(),
            &scale.pods.to_string(),
            &scale.claims.to_string(),
        ])
        .output()
        .expect("python3 runs the generator");
    assert!(
        out.status.success(),
        "gen_snapshot.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("the generator's JSON");
    let api = runtime.block_on(ApiServer::start());
    for item in list["items"].as_array().expect("items") {
        api.apply(item.clone());
    }
    api
}

/// CPU seconds (user + system) of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some(rest) = comm_and_rest(&stat).filter(|(comm, _)| comm.starts_with(prefix)) {
            ticks += cpu_ticks(rest.1);
        }
    }
    ticks as f64 / 100.0
}

/// CPU seconds (user + system) of process `pid`.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    comm_and_rest(&stat).map_or(0, |(_, rest)| cpu_ticks(rest)) as f64 / 100.0
}

/// `/proc/…/stat` split after the command name (which may hold spaces).
fn comm_and_rest(stat: &str) -> Option<(&str, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some((&stat[open + 1..close], &stat[close + 1..]))
}

/// utime + stime (fields 14 and 15; the rest starts at field 3).
fn cpu_ticks(rest: &str) -> u64 {
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// `VmRSS` and `VmHWM` of `pid`, MiB.
fn resident(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Streams `rate` events/s for `seconds` from slot `first_slot` on; calls `sent` before each
/// event goes out. Returns the next free slot.
async fn stream(
    api: &ApiServer,
    nodes: usize,
    rate: u64,
    seconds: u64,
    first_slot: usize,
    mut sent: impl FnMut(Sent),
) -> usize {
    // A slot's steps are half a second apart: `apart` slots start between two of them.
    let apart = (rate as usize / 12).max(1);
    let slots = (rate * seconds) as usize / 6;
    // Enough ticks after the last start for every slot to finish.
    let ticks = 6 * (slots + 5 * apart);
    let start = tokio::time::Instant::now();
    let mut last = first_slot;
    for k in 0..ticks {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate as f64)).await;
        let (j, started) = (k % 6, k / 6);
        let Some(s) = started.checked_sub(j * apart) else {
            continue;
        };
        // Slots start only while the stream runs; the tail only finishes them.
        if s >= slots {
            continue;
        }
        let slot = first_slot + s;
        last = last.max(slot + 1);
        sent(Sent {
            step: STEPS[j],
            slot,
            at: Instant::now(),
        });
        Slot::new(slot, nodes).send(api, STEPS[j]);
    }
    last
}

/// Whether `GET /readyz` on `admin` answers 200.
fn ready(admin: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(admin) else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q) as usize)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full {
        Scale {
            nodes: 5_000,
            pods: 150_000,
            claims: 100_000,
            seconds: 20,
            rates: &[100, 1_000],
        }
    } else {
        Scale {
            nodes: 50,
            pods: 1_500,
            claims: 1_000,
            seconds: 1,
            rates: &[100],
        }
    };
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("apiserver")
        .enable_all()
        .build()
        .expect("a runtime");
    // Blocking threads kept alive: a thread that ends takes its CPU time out of the count.
    let headroom_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("headroom")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .expect("a runtime");
    let api = cluster(&scale, &api_runtime);
    println!(
        "churn: {} nodes, {} pods, {} claims; {} s per rate",
        scale.nodes, scale.pods, scale.claims, scale.seconds
    );

    // 1. Event → decision, in process.
    let index = SharedIndex::default();
    index.account(Settings::from(&Config::default()));
    let listed = Instant::now();
    let client = {
        let _inside = headroom_runtime.enter();
        api.client()
    };
    headroom_runtime.spawn(live::watch_all(client, index.clone()));
    assert!(
        headroom_runtime.block_on(index.wait_synced(Duration::from_secs(600))),
        "headroom listed the stand-in"
    );
    println!("  listed and accounted in {:.2?}", listed.elapsed());
    let mut slot = 0;
    for &rate in scale.rates {
        let pending: Arc<Mutex<VecDeque<Sent>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let checker = api_runtime.spawn({
            let (index, pending, seen) = (index.clone(), pending.clone(), seen.clone());
            let nodes = scale.nodes;
            async move {
                let mut changes = index.subscribe();
                while changes.changed().await.is_ok() {
                    let view = index.view();
                    let now = Instant::now();
                    pending.lock().expect("lock").retain(|sent| {
                        let shown = Slot::new(sent.slot, nodes).shown(&view, sent.step);
                        if shown {
                            seen.lock().expect("lock").push(now - sent.at);
                        }
                        !shown
                    });
                }
            }
        });
        let cpu = thread_cpu("headroom");
        let began = Instant::now();
        slot = api_runtime.block_on(stream(&api, scale.nodes, rate, scale.seconds, slot, |sent| {
            pending.lock().expect("lock").push_back(sent)
        }));
        // The last events: give them a second to show.
        let deadline = Instant::now() + Duration::from_secs(1);
        while !pending.lock().expect("lock").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let cpu = (thread_cpu("headroom") - cpu) / began.elapsed().as_secs_f64();
        checker.abort();
        let mut took = std::mem::take(&mut *seen.lock().expect("lock"));
        took.sort();
        let unseen = pending.lock().expect("lock").len();
        println!(
            "  {rate:>5} events/s  event → view p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}  ({} events, {unseen} never shown)  headroom CPU {:.1} % of a core",
            quantile(&took, 0.5),
            quantile(&took, 0.99),
            took.last().copied().unwrap_or_default(),
            took.len(),
            cpu * 100.0,
        );
        assert_eq!(unseen, 0, "every event shows in the view");
    }
    drop(headroom_runtime);

    // 2. The whole `headroom serve` process under the same stream.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs =
        headroom::certs::write(&dir.path().join("tls"), vec!["localhost".into()], &[]).expect("certs");
    let port = |l: std::net::TcpListener| l.local_addr().expect("an address").port();
    let free = || port(std::net::TcpListener::bind("127.0.0.1:0").expect("a port"));
    let admin = format!("127.0.0.1:{}", free());
    let started = Instant::now();
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path()))
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .args(["--listen", &format!("127.0.0.1:{}", free())])
        .args(["--admin-listen", &admin])
        .env_remove("HEADROOM_CONFIG")
        .env("POD_NAMESPACE", "headroom-system")
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("headroom serve starts");
    let ready = (0..6000).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        ready(&admin)
    });
    assert!(ready, "headroom serve became ready");
    let pid = child.id();
    let (rss, _) = resident(pid);
    println!(
        "  serve: /readyz after {:.2?} (live list); resident {rss:.1} MiB",
        started.elapsed()
    );
    for &rate in scale.rates {
        let cpu = process_cpu(pid);
        let began = Instant::now();
        slot = api_runtime.block_on(stream(&api, scale.nodes, rate, scale.seconds, slot, |_| {}));
        let cpu = (process_cpu(pid) - cpu) / began.elapsed().as_secs_f64();
        let (rss, peak) = resident(pid);
        println!(
            "  serve {rate:>5} events/s  CPU {:.1} % of a core  resident {rss:.1} MiB (peak {peak:.1} MiB)",
            cpu * 100.0
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
