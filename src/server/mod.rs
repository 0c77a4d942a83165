//! The HTTP servers: the TLS listener (webhook, extender) and the plain admin listener.

pub mod admin;
pub mod extender;
pub mod tls;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};

/// A TLS handshake that has not finished in this long is dropped (slowloris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive: a ping after this much silence, and the connection closed when it goes
/// unanswered for `H2_PING_TIMEOUT` (a vanished peer must not hold a connection for ever).
const H2_PING_INTERVAL: Duration = Duration::from_secs(60);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route of the TLS listener: the webhook's and the extender's, with JSON answers for
/// unknown routes (404) and wrong methods (405), like every other error the listener gives.
pub fn routes(app: Arc<crate::read_model::ReadModel>) -> Router {
    use axum::http::StatusCode;
    async fn not_found(uri: axum::http::Uri) -> webhook::HttpError {
        webhook::HttpError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
    }
    async fn not_allowed(method: axum::http::Method) -> webhook::HttpError {
        webhook::HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; the routes take POST"),
        )
    }
    webhook::router(app.clone())
        .merge(extender::router(app))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
}

/// What the TLS listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most: past it, new ones are closed at once (file descriptors are a
    /// resource a caller must not be able to exhaust).
    pub max_connections: usize,
    /// After stop, how long in-flight requests may take to finish.
    pub drain: Duration,
}

/// Serves `router` over TLS until `stop` fires, then stops accepting and lets in-flight
/// requests finish for up to `drain`; idle keep-alive connections are closed at once, so the
/// API server does not keep sending to a terminating replica.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let Limits {
        max_connections,
        drain,
    } = limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "connection limit reached; closed");
            drop(tcp);
            continue;
        };
        // Answers are small and wanted at once: a TLS record left behind by Nagle's algorithm
        // waits for the peer's delayed ACK (40 ms on Linux).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let (acceptor, builder, router) = (acceptor.clone(), builder.clone(), router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the connection's life.
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = TowerToHyperService::new(router);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    // Close the socket now, not when draining ends, so new connections are refused at once.
    drop(listener);
    tracing::info!("listener closed; draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "drain timed out; closing remaining connections");
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
