//! The HTTP servers: the TLS listener (webhook, extender) with its connection limits and
//! caller identity, and the plain admin listener.

pub mod admin;
pub mod extender;
pub mod http;
pub mod objects;
pub mod patch;
pub mod tls;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulConnection},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;

use crate::metrics::ConnectionMetrics;
use http::HttpError;

/// A TLS handshake that has not finished in this long is dropped (slowloris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive: a ping after this much silence, and the connection closed when it goes
/// unanswered for `H2_PING_TIMEOUT` (a vanished peer must not hold a connection for ever).
const H2_PING_INTERVAL: Duration = Duration::from_secs(60);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is on the other end of a connection, as its TLS handshake proved it. Each request of
/// the connection carries it as an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Caller {
    /// No client certificate was asked for (`tls.clientCAFile` unset).
    #[default]
    Anonymous,
    /// A client certificate chained to `tls.clientCAFile` and named an allowed client.
    Authenticated,
}

/// Every route of the TLS listener: the webhook's and the extender's, with JSON answers for
/// unknown routes (404) and wrong methods (405), like every other error the listener gives.
pub fn routes(app: Arc<crate::read_model::ReadModel>) -> Router {
    use axum::http::StatusCode;
    async fn not_found(uri: axum::http::Uri) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
    }
    async fn not_allowed(method: axum::http::Method) -> HttpError {
        HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; the routes take POST"),
        )
    }
    webhook::router(app.clone())
        .merge(extender::router(app))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn(http::close_after_error))
}

/// What the TLS listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most: past it, new ones are closed at once (file descriptors are a
    /// resource a caller must not be able to exhaust).
    pub max_connections: usize,
    /// From accept to the first request's headers, TLS handshake included: a connection that
    /// says nothing is closed (slowloris, port scanners).
    pub first_request: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive,
    /// HTTP/2 GOAWAY). Longer than Go's 90 s idle timeout would let a client send on a
    /// connection the server is closing; equal is what Go's own servers do.
    pub idle: Duration,
    /// After stop, how long in-flight requests may take to finish.
    pub drain: Duration,
}

impl Limits {
    pub fn new(max_connections: usize, drain: Duration) -> Self {
        Self {
            max_connections,
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(90),
            drain,
        }
    }
}

/// What a connection has been doing, for its idle deadline.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    served: u64,
    /// Accept, or the end of the last request.
    since: Instant,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(watch::Sender<Activity>);

impl InFlight {
    fn enter(activity: &watch::Sender<Activity>) -> Self {
        activity.send_modify(|a| a.in_flight += 1);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            a.served += 1;
            a.since = Instant::now();
        });
    }
}

/// Resolves when the connection has had no request in flight for its deadline: the first
/// request's until one came, the idle one after.
async fn quiet(activity: &mut watch::Receiver<Activity>, limits: Limits) {
    loop {
        let now = *activity.borrow_and_update();
        if now.in_flight > 0 {
            if activity.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        let limit = if now.served == 0 {
            limits.first_request
        } else {
            limits.idle
        };
        tokio::select! {
            _ = tokio::time::sleep_until(now.since + limit) => return,
            changed = activity.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// Why a TLS handshake failed, as a bounded label value.
fn refusal(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match error.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no-certificate",
        Some(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)) => {
            "name-not-allowed"
        }
        Some(Error::InvalidCertificate(_)) => "untrusted-certificate",
        _ => "handshake",
    }
}

/// Serves `router` over TLS until `stop` fires, then stops accepting, lets in-flight requests
/// finish for up to `drain`, and closes idle connections at once, so the API server does not
/// keep sending to a terminating replica.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    metrics: ConnectionMetrics,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The connection's own deadlines (`quiet`) bound both protocols the same way; hyper's
    // header timer would also run while an HTTP/1.1 connection is idle and cut keep-alive
    // short, so it only backs the idle deadline up.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle + limits.first_request)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
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
            tracing::warn!(%peer, max_connections = limits.max_connections, "connection limit reached; closed");
            metrics.refused("limit");
            drop(tcp);
            continue;
        };
        // Answers are small and wanted at once: a TLS record left behind by Nagle's algorithm
        // waits for the peer's delayed ACK (40 ms on Linux).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let (acceptor, builder, router) = (acceptor.clone(), builder.clone(), router.clone());
        let (stop, metrics) = (stop.clone(), metrics.clone());
        tokio::spawn(async move {
            // Held for the connection's life; the drain waits for every slot to come back.
            let _slot = slot;
            let _open = metrics.open();
            let accepted = Instant::now();
            let handshake = HANDSHAKE_TIMEOUT.min(limits.first_request);
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    metrics.refused(refusal(&error));
                    return tracing::debug!(%peer, %error, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.refused("handshake-timeout");
                    return tracing::debug!(%peer, "TLS handshake timed out");
                }
            };
            // With client authentication on, the handshake only succeeds for allowed callers.
            let caller = match tls.get_ref().1.peer_certificates() {
                Some(_) => Caller::Authenticated,
                None => Caller::Anonymous,
            };
            let (activity, seen) = watch::channel(Activity {
                in_flight: 0,
                served: 0,
                since: accepted,
            });
            let service = tower::service_fn(
                move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(caller);
                    let in_flight = InFlight::enter(&activity);
                    let response = router.clone().oneshot(request);
                    async move {
                        let response = response.await;
                        drop(in_flight);
                        response
                    }
                },
            );
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(error) = run_connection(conn, seen, stop, limits).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    // Close the socket now, not when draining ends, so new connections are refused at once.
    drop(listener);
    tracing::info!("listener closed; draining in-flight requests");
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(drain = ?limits.drain, "drain timed out; closing remaining connections");
    }
}

/// Drives one connection until it ends; asks it to close (GOAWAY, or `Connection: close`
/// after the request in flight) when it goes quiet or the server stops.
async fn run_connection<C: GracefulConnection>(
    conn: C,
    mut activity: watch::Receiver<Activity>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = quiet(&mut activity, limits), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
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
