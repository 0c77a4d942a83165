//! The TLS listener under attack while a normal client keeps calling: slowloris, idle
//! connections past the connection cap, and HTTP/2 rapid reset.
//!
//! `cargo bench --bench attacks` (release build). It starts `headroom serve` on the seed
//! snapshot, then runs each phase for 20 s: a normal client posts `/validate` one
//! call at a time over a keep-alive HTTP/1.1 connection (as the API server does), and once a
//! second opens a fresh connection (as a restarted API server would). Printed per phase: calls
//! served, their p50/p99, fresh connections that got an answer, and the most file descriptors
//! headroom held.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[path = "../tests/support/mod.rs"]
mod support;

/// How long each phase lasts and how many connections attack: `cargo bench` measures;
/// `cargo test --all-targets` runs a short smoke so the bench cannot rot.
struct Scale {
    phase: Duration,
    attackers: usize,
}

fn scale() -> Scale {
    if std::env::args().any(|a| a == "--bench") {
        Scale {
            phase: Duration::from_secs(20),
            attackers: 2000,
        }
    } else {
        Scale {
            phase: Duration::from_secs(1),
            attackers: 50,
        }
    }
}
const POD: &str = include_str!("../tests/data/admission/pod-create.json");

fn tls_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    Arc::new(support::tls_client_config(ca, alpn))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(port: u16, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn request(close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         connection: {connection}\r\ncontent-length: {}\r\n\r\n{POD}",
        POD.len()
    )
    .into_bytes()
}

/// Sends one request and reads one answer with a content-length body; false when it failed.
async fn call(stream: &mut Tls, close: bool) -> bool {
    if stream.write_all(&request(close)).await.is_err() {
        return false;
    }
    let mut got = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.starts_with("HTTP/1.1 200");
            }
        }
    }
}

#[derive(Default)]
struct Normal {
    latencies: Vec<Duration>,
    failed: u64,
    fresh_ok: u64,
    fresh_tried: u64,
}

/// The normal client for `for_how_long`: sequential calls on one kept connection, and a fresh
/// connection once a second.
async fn normal_client(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    kept: &mut Option<Tls>,
    for_how_long: Duration,
) -> Normal {
    let mut out = Normal::default();
    let end = Instant::now() + for_how_long;
    let mut next_fresh = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_fresh {
            next_fresh += Duration::from_secs(1);
            out.fresh_tried += 1;
            let fresh = tokio::time::timeout(Duration::from_secs(5), async {
                let mut s = connect(port, &config).await.ok()?;
                call(&mut s, true).await.then_some(())
            })
            .await;
            if matches!(fresh, Ok(Some(()))) {
                out.fresh_ok += 1;
            }
        }
        if kept.is_none() {
            *kept = connect(port, &config).await.ok();
        }
        let Some(stream) = kept.as_mut() else {
            out.failed += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let started = Instant::now();
        if call(stream, false).await {
            out.latencies.push(started.elapsed());
        } else {
            out.failed += 1;
            *kept = None;
        }
    }
    out
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `n` tasks that each connect, hand the connection to `on_connection`, and connect again
/// when it returns.
fn attack<F, Fut>(port: u16, config: &Arc<rustls::ClientConfig>, n: usize, on_connection: F) -> Attack
where
    F: Fn(Tls) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks = (0..n).map(|_| {
        let (config, on_connection) = (config.clone(), on_connection.clone());
        tokio::spawn(async move {
            loop {
                match connect(port, &config).await {
                    Ok(tls) => on_connection(tls).await,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    });
    Attack(tasks.collect())
}

const SLOW_HEAD: &[u8] = b"POST /validate HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaa";

/// Slowloris: `n` connections that finish the handshake and send a request head a byte at a
/// time, one byte a second.
fn slowloris(port: u16, config: &Arc<rustls::ClientConfig>, n: usize) -> Attack {
    attack(port, config, n, |mut tls| async move {
        for byte in SLOW_HEAD {
            if tls.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Idle: `n` connections that make one call and then say nothing until the server closes them.
fn idle(port: u16, config: &Arc<rustls::ClientConfig>, n: usize) -> Attack {
    attack(port, config, n, |mut tls| async move {
        call(&mut tls, false).await;
        let mut buf = [0u8; 16];
        let _ = tls.read(&mut buf).await;
    })
}

/// HTTP/2 rapid reset: `n` connections each opening streams and cancelling them at once;
/// counts the streams opened.
fn rapid_reset(port: u16, config: &Arc<rustls::ClientConfig>, n: usize, streams: Arc<AtomicU64>) -> Attack {
    attack(port, config, n, move |tls| {
        let streams = streams.clone();
        async move {
            let Ok((mut client, conn)) = h2::client::handshake(tls).await else {
                return;
            };
            let driver = tokio::spawn(conn);
            loop {
                let Ok(ready) = client.ready().await else { break };
                client = ready;
                let req = axum::http::Request::post(format!("https://localhost:{port}/validate"))
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                let Ok((response, mut body)) = client.send_request(req, false) else {
                    break;
                };
                body.send_reset(h2::Reason::CANCEL);
                drop(response);
                streams.fetch_add(1, Ordering::Relaxed);
                // h2 is ready at once again and again: without a yield these tasks would
                // starve the normal client sharing the runtime, not headroom.
                tokio::task::yield_now().await;
            }
            driver.abort();
        }
    })
}

/// Attacking tasks; dropping them ends the attack and closes their connections.
struct Attack(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Attack {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn report(name: &str, normal: &Normal, max_fds: usize, extra: &str) {
    let mut sorted = normal.latencies.clone();
    sorted.sort();
    println!(
        "{name:<28} served {:>6}  p50 {:>7.0} µs  p99 {:>7.0} µs  failed {:>3}  fresh {:>2}/{:<2}  max fds {:>5}  {extra}",
        sorted.len(),
        percentile(&sorted, 0.5).as_secs_f64() * 1e6,
        percentile(&sorted, 0.99).as_secs_f64() * 1e6,
        normal.failed,
        normal.fresh_ok,
        normal.fresh_tried,
        max_fds,
    );
}

async fn phase(
    scale: &Scale,
    name: &str,
    port: u16,
    pid: u32,
    config: &Arc<rustls::ClientConfig>,
    kept: &mut Option<Tls>,
    extra: impl Fn() -> String,
) {
    let sampling = Arc::new(AtomicU64::new(0));
    let max_fds = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, max_fds) = (sampling.clone(), max_fds.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) == 0 {
                max_fds.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let normal = normal_client(port, config.clone(), kept, scale.phase).await;
    assert!(
        !normal.latencies.is_empty(),
        "{name}: the normal client was never served"
    );
    sampling.store(1, Ordering::Relaxed);
    let _ = sampler.await;
    report(name, &normal, max_fds.load(Ordering::Relaxed) as usize, &extra());
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = env!("CARGO_BIN_EXE_headroom");
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    let ok = std::process::Command::new(bin)
        .args(["certs", "--service", "localhost", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let snapshot = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-cluster.yaml");
    let mut serve = tokio::process::Command::new(bin)
        .args(["serve", "--snapshot", snapshot, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = serve.id().unwrap();
    let h1 = tls_config(&certs.join("ca.crt"), &[b"http/1.1"]);
    let h2 = tls_config(&certs.join("ca.crt"), &[b"h2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while connect(port, &h1).await.is_err() {
        assert!(Instant::now() < deadline, "headroom did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scale = scale();
    println!(
        "{} s per phase, {} attacking connections; headroom pid {pid}, --max-connections 1024 (the default)",
        scale.phase.as_secs(),
        scale.attackers
    );
    let mut kept = None;
    phase(&scale, "no attack", port, pid, &h1, &mut kept, String::new).await;

    let attack = slowloris(port, &h1, scale.attackers);
    phase(&scale, "slowloris", port, pid, &h1, &mut kept, String::new).await;
    drop(attack);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let attack = idle(port, &h1, scale.attackers);
    phase(&scale, "idle", port, pid, &h1, &mut kept, String::new).await;
    drop(attack);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let streams = Arc::new(AtomicU64::new(0));
    let attack = rapid_reset(port, &h2, 8, streams.clone());
    let counted = streams.clone();
    phase(
        &scale,
        "h2 rapid reset (8 conns)",
        port,
        pid,
        &h1,
        &mut kept,
        move || format!("{} streams opened and reset", counted.load(Ordering::Relaxed)),
    )
    .await;
    drop(attack);
    let _ = serve.kill().await;
}
