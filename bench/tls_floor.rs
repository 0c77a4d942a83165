//! The product's TLS listener with every product route and, beside them, the `/echo` floor —
//! for `bench/run.sh`, which drives both with wrk so that a route's throughput is compared with
//! the same listener reading the same body and answering a fixed AdmissionReview.
//!
//! `cargo bench --bench tls_floor -- SNAPSHOT [LISTEN]` serves until killed. Under `cargo test`
//! (no snapshot argument) it serves the example snapshot on a free port, posts one review to
//! `/echo` and one to `/validate` over TLS, and checks both answer as they should.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, ensure};
use headroom::{
    certs,
    config::Config,
    events::EventSink,
    read_model::ReadModel,
    server::{self, tls::ReloadingCert},
    shared_index::SharedIndex,
    source::file,
};
use tokio::{net::TcpListener, sync::watch};

#[path = "echo.rs"]
mod echo;
#[path = "../tests/support/mod.rs"]
mod support;

const EXAMPLE: &str = "examples/seed-cluster.yaml";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [] => check().await,
        [snapshot] => serve(Path::new(snapshot), "127.0.0.1:18445".parse()?).await,
        [snapshot, listen] => serve(Path::new(snapshot), listen.parse()?).await,
        _ => anyhow::bail!("usage: tls_floor [SNAPSHOT [LISTEN]]"),
    }
}

/// What a started listener offers: where it listens and the CA its certificate chains to.
struct Started {
    addr: SocketAddr,
    ca: std::path::PathBuf,
    _stop: watch::Sender<bool>,
}

async fn start(snapshot: &Path, listen: SocketAddr) -> anyhow::Result<Started> {
    let state = file::load(snapshot)?;
    let app = Arc::new(ReadModel::new(
        Config::default(),
        SharedIndex::from_state(state),
        EventSink::logging(),
    ));
    let dir = certs::private_temp_dir()?;
    let written = certs::write(&dir, vec!["localhost".into(), "127.0.0.1".into()], &[])?;
    let tls = server::tls::server_config(ReloadingCert::load(written.cert, written.key)?, None)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(server::serve_tls(
        listener,
        tls,
        echo::with_echo(server::routes(app.clone())),
        stopped,
        server::Limits::new(1024, Duration::from_secs(1)),
        app.metrics.connections.clone(),
    ));
    Ok(Started {
        addr,
        ca: written.ca,
        _stop: stop,
    })
}

async fn serve(snapshot: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let started = start(snapshot, listen).await?;
    println!("listening on {} (CA {})", started.addr, started.ca.display());
    server::shutdown_signal().await;
    Ok(())
}

async fn check() -> anyhow::Result<()> {
    let started = start(Path::new(EXAMPLE), "127.0.0.1:0".parse()?).await?;
    let client = support::tls_client(&started.ca, &[]);
    let review = std::fs::read_to_string("tests/data/admission/pod-create.json")?;
    for route in ["/echo", "/validate"] {
        let answer = client
            .post(format!("https://localhost:{}{route}", started.addr.port()))
            .header("content-type", "application/json")
            .body(review.clone())
            .send()
            .await?;
        ensure!(answer.status() == 200, "{route}: {}", answer.status());
        let answer: serde_json::Value = answer.json().await?;
        ensure!(
            answer["response"]["allowed"] == true,
            "{route} did not allow the review: {answer}"
        );
    }
    let wrong = client
        .post(format!("https://localhost:{}/echo", started.addr.port()))
        .header("content-type", "text/plain")
        .body(review)
        .send()
        .await?;
    ensure!(
        wrong.status() == 415,
        "/echo must read the body as the routes do: {}",
        wrong.status()
    );
    println!("tls_floor: /echo and /validate answer over the product's TLS listener");
    Ok(())
}
