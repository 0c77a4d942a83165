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
    index::SharedIndex,
    read_model::ReadModel,
    server::{self, tls::ReloadingCert},
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
        headroom::certs::write(&generation, vec!["localhost".into()]).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(generation.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        generation.join("ca.crt")
    }
}

struct Running {
    addr: SocketAddr,
    cert: Arc<ReloadingCert>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Running {
    start_with(dir, 1024).await
}

async fn start_with(dir: &Path, max_connections: usize) -> Running {
    let cert = ReloadingCert::load(dir.join("tls.crt"), dir.join("tls.key")).unwrap();
    let tls = server::tls::server_config(cert.clone()).unwrap();
    let items = vec![support::node("n1"), support::csinode("n1", Some(28))];
    let app = Arc::new(ReadModel::new(
        Config::default(),
        SharedIndex::from_state(support::state(items)),
        EventSink::new().0,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let router = server::webhook::router(app);
    let task = tokio::spawn(server::serve_tls(
        listener,
        tls,
        router,
        stop_rx,
        server::Limits {
            max_connections,
            drain: Duration::from_secs(10),
        },
    ));
    Running {
        addr,
        cert,
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
    tokio::spawn(run.cert.clone().watch(Duration::from_millis(20), stop_rx));

    // A half-written pair (key of another certificate) is refused; the old one keeps serving.
    let ca1 = dir.path().join("ca.crt").canonicalize().unwrap();
    let stray = tempfile::tempdir().unwrap();
    headroom::certs::write(stray.path(), vec!["localhost".into()]).unwrap();
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
    let old = headroom::certs::write(&dir.path().join("old"), names()).unwrap();
    let new = headroom::certs::write(&dir.path().join("new"), names()).unwrap();
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
    headroom::certs::write(dir.path(), vec!["localhost".into()]).unwrap();
    let run = start_with(dir.path(), 2).await;
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
