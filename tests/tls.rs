//! The TLS listener with real clients: reqwest and a raw rustls stream, certificates from
//! `headroom certs`, rotation through a Kubernetes-Secret-style `..data` symlink swap.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use headroom::{
    config::Config,
    events::EventSink,
    read_model::ReadModel,
    server::{
        self,
        tls::{ClientTrust, Reload, ReloadingCert},
    },
    shared_index::SharedIndex,
};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

const POD: &str = include_str!("data/admission/pod-create.json");

/// A Secret volume: `dir/tls.crt -> ..data/tls.crt`, `..data -> <generation dir>`.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: &Path) -> Self {
        let mut v = SecretVolume {
            dir: dir.to_owned(),
            generation: 0,
        };
        v.rotate();
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    /// Writes a new CA and certificate into a new directory and swaps `..data` atomically,
    /// as the kubelet does; returns the new CA path.
    fn rotate(&mut self) -> PathBuf {
        self.generation += 1;
        let generation = self.dir.join(format!("..2026_06_05_{}", self.generation));
        headroom::certs::write(&generation, vec!["localhost".into()], &[]).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(generation.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        generation.join("ca.crt")
    }
}

struct Running {
    addr: SocketAddr,
    cert: Arc<ReloadingCert>,
    app: Arc<ReadModel>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Running {
    start_with(dir, server::Limits::new(1024, Duration::from_secs(10)), None).await
}

async fn start_with(dir: &Path, limits: server::Limits, clients: Option<Arc<ClientTrust>>) -> Running {
    let cert = ReloadingCert::load(dir.join("tls.crt"), dir.join("tls.key")).unwrap();
    let tls = server::tls::server_config(cert.clone(), clients).unwrap();
    let items = vec![
        support::node("n1"),
        support::csinode("n1", Some(28)),
        support::storage_class("proxmox-lvm", "csi.proxmox.sinextra.dev", true),
    ];
    let app = Arc::new(ReadModel::new(
        Config::default(),
        SharedIndex::from_state(support::state(items)),
        EventSink::channel().0,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let router = server::routes(app.clone());
    let task = tokio::spawn(server::serve_tls(
        listener,
        tls,
        router,
        stop_rx,
        limits,
        app.metrics.connections.clone(),
    ));
    Running {
        addr,
        cert,
        app,
        stop,
        task,
    }
}

async fn post_review(client: &reqwest::Client, addr: SocketAddr) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("https://localhost:{}/validate?timeout=5s", addr.port()))
        .header("content-type", "application/json")
        .body(POD)
        .send()
        .await
}

#[tokio::test]
async fn reqwest_over_tls_with_the_ca_from_headroom_certs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headroom"))
        .args([
            "certs",
            "--service",
            "headroom",
            "--namespace",
            "headroom-system",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let bundle = String::from_utf8(out.stdout).unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .unwrap();
    assert_eq!(
        decoded,
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        "stdout is the base64 caBundle"
    );

    // The serving certificate carries the Service names; connect by one of them.
    let run = start(dir.path()).await;
    let by_name = reqwest::Client::builder()
        .use_preconfigured_tls(support::tls_client_config(
            &dir.path().join("ca.crt"),
            &[b"h2", b"http/1.1"],
        ))
        .resolve("headroom.headroom-system.svc", run.addr)
        .build()
        .unwrap();
    for name in ["headroom.headroom-system.svc"] {
        let response = by_name
            .post(format!("https://{name}:{}/validate", run.addr.port()))
            .header("content-type", "application/json")
            .body(POD)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["response"]["allowed"], true);
    }
    let h1 = support::tls_client(&dir.path().join("ca.crt"), &[b"http/1.1"]);
    let err = post_review(&h1, run.addr)
        .await
        .expect_err("localhost is not a Service name in this certificate");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
}

#[tokio::test]
async fn rotation_serves_new_handshakes_the_new_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretVolume::new(dir.path());
    let old_ca = dir.path().join("ca.crt").canonicalize().unwrap();
    let run = start(dir.path()).await;

    let old = support::tls_client(&old_ca, &[b"http/1.1"]);
    assert_eq!(post_review(&old, run.addr).await.unwrap().status(), 200);

    // A request in flight across the rotation: headers and half the body now, the rest after.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(support::tls_client_config(&old_ca, &[b"http/1.1"])));
    let tcp = TcpStream::connect(run.addr).await.unwrap();
    let mut in_flight = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        POD.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight
        .write_all(&POD.as_bytes()[..POD.len() / 2])
        .await
        .unwrap();

    let new_ca = secret.rotate();
    assert!(run.cert.reload().unwrap(), "the ..data swap is seen as a change");
    assert!(!run.cert.reload().unwrap(), "and only once");

    in_flight
        .write_all(&POD.as_bytes()[POD.len() / 2..])
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = in_flight.read(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the in-flight request finished: {response}"
    );

    // The pooled keep-alive connection made before the rotation still works.
    assert_eq!(post_review(&old, run.addr).await.unwrap().status(), 200);
    // New handshakes get the new certificate: a fresh client trusting only the old CA fails,
    // one trusting the new CA succeeds.
    let err = post_review(&support::tls_client(&old_ca, &[b"http/1.1"]), run.addr)
        .await
        .expect_err("old CA no longer matches");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    assert_eq!(
        post_review(&support::tls_client(&new_ca, &[b"http/1.1"]), run.addr)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_reload_task_notices_changes_and_survives_a_broken_pair() {
    let dir = tempfile::tempdir().unwrap();
    let mut secret = SecretVolume::new(dir.path());
    let run = start(dir.path()).await;
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(server::tls::watch(
        vec![run.cert.clone()],
        Duration::from_millis(20),
        stop_rx,
    ));

    // A half-written pair (key of another certificate) is refused; the old one keeps serving.
    let ca1 = dir.path().join("ca.crt").canonicalize().unwrap();
    let stray = tempfile::tempdir().unwrap();
    headroom::certs::write(stray.path(), vec!["localhost".into()], &[]).unwrap();
    let current = dir.path().join("..data").canonicalize().unwrap();
    std::fs::copy(stray.path().join("tls.key"), current.join("tls.key")).unwrap();
    assert!(run.cert.reload().is_err(), "mismatched key and certificate");
    assert_eq!(
        post_review(&support::tls_client(&ca1, &[b"http/1.1"]), run.addr)
            .await
            .unwrap()
            .status(),
        200
    );

    let ca2 = secret.rotate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if post_review(&support::tls_client(&ca2, &[b"http/1.1"]), run.addr)
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload task never picked up the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stop_closes_the_listener_and_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    SecretVolume::new(dir.path());
    let ca = dir.path().join("ca.crt").canonicalize().unwrap();
    let run = start(dir.path()).await;

    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(support::tls_client_config(&ca, &[b"http/1.1"])));
    let tcp = TcpStream::connect(run.addr).await.unwrap();
    let mut in_flight = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        POD.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&POD.as_bytes()[..100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the server start reading the body

    run.stop.send(true).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(run.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    in_flight.write_all(&POD.as_bytes()[100..]).await.unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("connection: close"),
        "the drained connection is closed after its answer: {response}"
    );
    tokio::time::timeout(Duration::from_secs(10), run.task)
        .await
        .expect("server finished draining")
        .unwrap();
}

/// A CA rotation: a bundle holding the old and the new CA verifies leaves of both with OpenSSL
/// (which picks an issuer by subject and key identifier) and with rustls; keys are 0600.
#[test]
fn a_bundle_of_old_and_new_cas_verifies_both_leaves_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let names = || vec!["headroom.headroom-system.svc".to_owned()];
    let old = headroom::certs::write(&dir.path().join("old"), names(), &[]).unwrap();
    let new = headroom::certs::write(&dir.path().join("new"), names(), &[]).unwrap();
    assert_eq!(
        std::fs::metadata(&new.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let subject = |ca: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(ca)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_ne!(
        subject(&old.ca),
        subject(&new.ca),
        "each CA has a subject of its own"
    );
    let bundle = dir.path().join("bundle.crt");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&old.ca).unwrap() + &std::fs::read_to_string(&new.ca).unwrap(),
    )
    .unwrap();
    for leaf in [&old.cert, &new.cert] {
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&bundle)
            .arg(leaf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            leaf.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(leaf)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("Authority Key Identifier"),
            "the leaf names its issuer's key"
        );
    }
    // rustls, through webpki, with the same bundle as roots.
    use rustls::{
        client::danger::ServerCertVerifier,
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&bundle).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .unwrap();
    for leaf in [&old.cert, &new.cert] {
        let der = CertificateDer::from_pem_file(leaf).unwrap();
        verifier
            .verify_server_cert(
                &der,
                &[],
                &ServerName::try_from("headroom.headroom-system.svc").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", leaf.display()));
    }
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_are_closed_until_one_frees() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    headroom::certs::write(dir.path(), vec!["localhost".into()], &[]).unwrap();
    let run = start_with(dir.path(), server::Limits::new(2, Duration::from_secs(10)), None).await;
    let config = Arc::new(support::tls_client_config(
        &dir.path().join("ca.crt"),
        &[b"http/1.1"],
    ));
    let connect = || {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(run.addr).await.unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    };
    let first = connect().await.expect("first");
    let _second = connect().await.expect("second");
    assert!(
        connect().await.is_err(),
        "the third is closed during its handshake"
    );
    drop(first);
    // The slot frees when the server sees the first close: the next handshake succeeds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connect().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = run.stop.send(true);
}

/// A client of the h2/http1.1 listener for what `headroom certs` wrote into `dir`.
fn client_as(dir: &Path, stem: Option<&str>) -> reqwest::Client {
    support::certs_client(dir, stem, &[b"h2", b"http/1.1"])
}

fn metric(app: &ReadModel, series: &str) -> f64 {
    let text = app.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn with_a_client_ca_only_allowed_client_certificates_reach_the_routes() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let clients = ["kube-apiserver", "system:kube-scheduler", "kubelet"].map(String::from);
    headroom::certs::write(dir.path(), vec!["localhost".into()], &clients).unwrap();
    // The same client name, issued by a CA headroom does not trust.
    let elsewhere = tempfile::tempdir().unwrap();
    headroom::certs::write(elsewhere.path(), vec!["localhost".into()], &clients[..1]).unwrap();
    std::fs::copy(dir.path().join("ca.crt"), elsewhere.path().join("ca.crt")).unwrap();

    let allowed = vec!["kube-apiserver".into(), "system:kube-scheduler".into()];
    let trust = ClientTrust::load(dir.path().join("ca.crt"), allowed).unwrap();
    let limits = server::Limits::new(1024, Duration::from_secs(10));
    let run = start_with(dir.path(), limits, Some(trust)).await;
    let app = run.app.clone();

    // No certificate, a certificate with a name not on the list (a kubelet's, from the same
    // CA), and an allowed name from another CA: each fails its handshake.
    let refused = [
        (client_as(dir.path(), None), "no-certificate"),
        (client_as(dir.path(), Some("kubelet")), "name-not-allowed"),
        (
            client_as(elsewhere.path(), Some("kube-apiserver")),
            "untrusted-certificate",
        ),
    ];
    for (client, reason) in &refused {
        let series = format!("headroom_connections_refused_total{{reason=\"{reason}\"}}");
        let before = metric(&app, &series);
        let err = post_review(client, run.addr).await.expect_err(reason);
        assert!(
            !err.is_status(),
            "{reason}: refused in the handshake, not by HTTP: {err:?}"
        );
        support::until(&format!("{reason} to be counted"), || {
            metric(&app, &series) != before
        })
        .await;
    }
    assert_eq!(app.admitted().block_volumes, 0);

    // The API server's certificate passes, and what it admits is demand at once.
    let pvc = include_str!("data/admission/pvc-create.json");
    let answer = client_as(dir.path(), Some("kube-apiserver"))
        .post(format!(
            "https://localhost:{}/validate?timeout=5s",
            run.addr.port()
        ))
        .header("content-type", "application/json")
        .body(pvc)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(app.admitted().block_volumes, 1, "an authenticated review vouches");

    // kube-scheduler's (CN with a colon, files named system-kube-scheduler.*), with curl.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(dir.path().join("ca.crt"))
        .arg("--cert")
        .arg(dir.path().join("system-kube-scheduler.crt"))
        .arg("--key")
        .arg(dir.path().join("system-kube-scheduler.key"))
        .args(["-H", "content-type: application/json", "--data"])
        .arg(
            r#"{"Pod":{"metadata":{"name":"p","namespace":"apps","uid":"u1"},"spec":{}},"NodeNames":["n1"]}"#,
        )
        .arg(format!("https://localhost:{}/extender/filter", run.addr.port()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n200"),
        "curl as kube-scheduler: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(dir.path().join("ca.crt"))
        .arg(format!("https://localhost:{}/healthz", run.addr.port()))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "curl without a certificate is refused");
    let _ = run.stop.send(true);
}

/// A raw TLS connection speaking HTTP/1.1.
async fn raw_h1(addr: SocketAddr, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(support::tls_client_config(ca, &[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes; what it sent (a reset after the answer counts as a close).
async fn read_until_closed(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_close_on_their_deadlines() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    headroom::certs::write(dir.path(), vec!["localhost".into()], &[]).unwrap();
    let ca = dir.path().join("ca.crt");
    let limits = server::Limits {
        first_request: Duration::from_millis(300),
        idle: Duration::from_millis(1200),
        ..server::Limits::new(1024, Duration::from_secs(10))
    };
    let run = start_with(dir.path(), limits, None).await;

    // TCP only, no ClientHello: closed at the first-request deadline, not before.
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(run.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    let waited = started.elapsed();
    assert!(waited >= limits.first_request, "closed after {waited:?}");

    // A finished handshake and then silence: the deadline counts from accept, too.
    let started = tokio::time::Instant::now();
    let mut silent = raw_h1(run.addr, &ca).await;
    let said = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut silent))
        .await
        .expect("closed");
    assert_eq!(said, "");
    let waited = started.elapsed();
    assert!(waited >= limits.first_request, "closed after {waited:?}");
    assert!(
        waited < limits.idle,
        "the first request's deadline, not the idle one: {waited:?}"
    );

    // After an answer, an HTTP/1.1 connection stays for the idle deadline, then closes.
    let mut kept = raw_h1(run.addr, &ca).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answered = tokio::time::Instant::now();
    let said = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut kept))
        .await
        .expect("closed");
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    let waited = answered.elapsed();
    assert!(
        waited >= limits.idle - Duration::from_millis(50),
        "kept alive for the idle deadline: {waited:?}"
    );

    // HTTP/2 the same: reqwest's pooled connection is sent GOAWAY once idle.
    let h2 = support::tls_client(&ca, &[b"h2"]);
    let response = post_review(&h2, run.addr).await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(metric(&run.app, "headroom_connections_open"), 1.0);
    let answered = tokio::time::Instant::now();
    let deadline = answered + Duration::from_secs(10);
    while metric(&run.app, "headroom_connections_open") > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle h2 connection stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered.elapsed() >= limits.idle - Duration::from_millis(50));
    let _ = run.stop.send(true);
}

#[tokio::test]
async fn unreadable_bodies_get_json_answers_over_both_protocols_and_http1_closes() {
    support::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    headroom::certs::write(dir.path(), vec!["localhost".into()], &[]).unwrap();
    let ca = dir.path().join("ca.crt");
    let run = start(dir.path()).await;
    let json_of = |said: &str| -> Value {
        let body = said.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {said}"))
    };

    // Over the limit, HTTP/2: 413 with its JSON body (not a bare HEADERS and a reset).
    // Both a body read past the limit and one whose declared length is answered at once.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(4 * 1024 * 1024));
    let huge = "x".repeat(16 * 1024 * 1024);
    let h2 = support::tls_client(&ca, &[b"h2"]);
    for body in [&big, &huge] {
        let response = h2
            .post(format!("https://localhost:{}/validate", run.addr.port()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 413);
        let answer: Value = response.json().await.expect("a JSON body");
        assert_eq!(answer["code"], 413);
    }

    // Over the limit, HTTP/1.1, a client that writes everything before it reads: it still
    // gets the answer, and the connection closes.
    let mut stream = raw_h1(run.addr, &ca).await;
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(big.as_bytes()).await.unwrap();
    let said = read_until_closed(&mut stream).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    assert!(said.contains("connection: close"), "{said}");
    assert_eq!(json_of(&said)["code"], 413);

    // Broken chunk framing: 400, not 413.
    let mut stream = raw_h1(run.addr, &ca).await;
    stream
        .write_all(
            b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n",
        )
        .await
        .unwrap();
    let said = read_until_closed(&mut stream).await;
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    assert!(
        json_of(&said)["error"]
            .as_str()
            .unwrap()
            .contains("malformed body"),
        "{said}"
    );

    // A body that stalls: 408 when the request's own timeout is spent, then the close.
    let mut stream = raw_h1(run.addr, &ca).await;
    let started = tokio::time::Instant::now();
    stream
        .write_all(
            b"POST /validate?timeout=1s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"apiVersion\":",
        )
        .await
        .unwrap();
    let said = read_until_closed(&mut stream).await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("connection: close"), "{said}");
    assert_eq!(json_of(&said)["code"], 408);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // A duplicated timeout and an unknown route: JSON too.
    for (request, status) in [
        ("POST /validate?timeout=1s&timeout=2s HTTP/1.1", "400"),
        ("POST /nowhere HTTP/1.1", "404"),
        ("GET /validate HTTP/1.1", "405"),
    ] {
        let mut stream = raw_h1(run.addr, &ca).await;
        let head = format!(
            "{request}\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let said = read_until_closed(&mut stream).await;
        assert!(
            said.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {said}"
        );
        assert_eq!(json_of(&said)["code"].to_string(), status, "{request}");
    }
    let _ = run.stop.send(true);
}

/// The client CA is re-read like the serving pair: a rotated CA takes effect, a broken file
/// keeps the one in use.
#[test]
fn the_client_ca_is_reread_when_its_file_changes() {
    use rustls::{
        pki_types::{CertificateDer, UnixTime, pem::PemObject},
        server::danger::ClientCertVerifier,
    };
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    let apiserver = ["kube-apiserver".to_owned()];
    headroom::certs::write(&old, vec!["localhost".into()], &apiserver).unwrap();
    headroom::certs::write(&new, vec!["localhost".into()], &apiserver).unwrap();
    let ca = dir.path().join("client-ca.crt");
    std::fs::copy(old.join("ca.crt"), &ca).unwrap();
    let trust = ClientTrust::load(ca.clone(), apiserver.to_vec()).unwrap();
    let accepts = |issued_by: &Path| {
        let leaf = CertificateDer::from_pem_file(issued_by.join("kube-apiserver.crt")).unwrap();
        trust.verify_client_cert(&leaf, &[], UnixTime::now()).is_ok()
    };
    assert!(accepts(&old) && !accepts(&new));
    assert!(!trust.reload().unwrap(), "unchanged");

    std::fs::write(&ca, "not a certificate").unwrap();
    assert!(trust.reload().is_err());
    assert!(accepts(&old), "a broken file keeps the CA in use");

    std::fs::copy(new.join("ca.crt"), &ca).unwrap();
    assert!(trust.reload().unwrap());
    assert!(accepts(&new) && !accepts(&old));
}
