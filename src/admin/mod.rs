//! The admin listener (`[admin]`): `/metrics` (the process's one registry), `/healthz` (the
//! process runs) and `/readyz` (ready for traffic, else 503 naming what is not), over plain
//! HTTP or TLS with optional client certificates. Apart from the client listeners: its
//! connections count against none of the client caps, so a flood of clients cannot blind
//! the operator or fail the liveness check.
//!
//! - [`route`]: which endpoint a request asks for (sans-io).
//! - [`ready`]: the readiness state the reload code and the probes report into.
//! - [`probe`]: the periodic verified handshake with every configured nsqd.

pub mod probe;
pub mod ready;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{header, Method, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::app::StartError;
use crate::config::admin::AdminConfig;
use crate::metrics::{self, Leg, ListenerCounts};
use crate::net::accept::{bind, BindError};
use crate::net::operators::{self, Bounds};
use crate::proxy::Listener;
use crate::shared::Shared;

pub use ready::Readiness;

/// Admin connections served at once; more wait to be accepted (scrapers and probes are few).
const MAX_CONNECTIONS: usize = 64;
/// How long one admin connection may stay open, kept alive or not.
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);
/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
    NotFound,
    MethodNotAllowed,
}

/// The endpoint for `method` and `path`: GET or HEAD on the three known paths.
pub fn route(method: &Method, path: &str) -> Endpoint {
    let endpoint = match path {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Healthz,
        "/readyz" => Endpoint::Readyz,
        _ => return Endpoint::NotFound,
    };
    if method == Method::GET || method == Method::HEAD {
        endpoint
    } else {
        Endpoint::MethodNotAllowed
    }
}

/// What every admin connection shares. Its TLS set-up is the one in force in `shared.tls` at
/// each handshake (a reload replaces it).
struct Admin {
    shared: Arc<Shared>,
    /// TLS or plain HTTP, as started (only a restart changes it).
    tls: bool,
    counts: ListenerCounts,
    /// A passed probe older than this no longer makes an nsqd ready.
    fresh_for: Duration,
}

/// Binds the admin listener, starts probing every nsqd behind `listeners` for `/readyz`, and
/// serves until `shutdown` turns true. Returns the bound address (for the ready file).
pub async fn spawn(
    shared: Arc<Shared>,
    config: &AdminConfig,
    listeners: &[Arc<Listener>],
    shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let tls = shared.tls.admin_acceptor().is_some();
    let tcp = bind(config.listen).await?;
    let address = tcp.local_addr().map_err(|source| BindError {
        address: config.listen,
        source,
    })?;
    let kind = if tls { "admin_https" } else { "admin" };
    let admin = Arc::new(Admin {
        counts: shared.metrics.listener(kind, &address.to_string()),
        fresh_for: config.probe_interval * 2 + shared.config().timeouts.upstream_connect,
        shared: shared.clone(),
        tls,
    });
    probe::start(&shared, listeners, config.probe_interval, shutdown.clone());
    info!(%address, tls = admin.tls, "admin listener: /metrics, /healthz, /readyz");
    tokio::spawn(serve(tcp, admin, shutdown));
    Ok(address)
}

async fn serve(tcp: TcpListener, admin: Arc<Admin>, shutdown: watch::Receiver<bool>) {
    let bounds = Bounds {
        connections: MAX_CONNECTIONS,
        lifetime: CONNECTION_LIMIT,
    };
    let counts = &admin.counts;
    operators::serve(tcp, "admin", counts, bounds, shutdown, |stream, peer| {
        let admin = admin.clone();
        async move { connection(&admin, stream, peer).await }
    })
    .await;
}

async fn connection(admin: &Arc<Admin>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = admin.shared.tls.admin_acceptor().filter(|_| admin.tls) else {
        return http(admin, tcp).await;
    };
    let deadline = admin.shared.config().timeouts.tls_handshake;
    let handshake = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    let failure = metrics::handshake_failure(&handshake);
    admin.shared.metrics.tls_handshake(Leg::Client, failure);
    match handshake {
        Ok(Ok(tls)) => http(admin, tls).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "admin TLS handshake failed"),
        Err(_) => debug!(%peer, "admin TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 requests on one connection (kept alive for scrapers).
async fn http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(admin: &Arc<Admin>, io: S) {
    let for_requests = admin.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let admin = for_requests.clone();
        async move { Ok::<_, Infallible>(answer(&admin, &req)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(admin.shared.config().timeouts.tls_handshake)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        debug!(error = %e, "admin connection ended");
    }
}

fn answer(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match route(req.method(), req.uri().path()) {
        Endpoint::Metrics => reply(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            metrics::scrape::render(&admin.shared),
        ),
        Endpoint::Healthz => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        Endpoint::Readyz => {
            let report = admin.shared.readiness.report(admin.fresh_for);
            let status = if report.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = format!("{}\n", report.to_json());
            reply(status, "application/json", body)
        }
        Endpoint::NotFound => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        Endpoint::MethodNotAllowed => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
