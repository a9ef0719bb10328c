//! The HTTP side of nsqgate: HTTPS fronts for nsqd's HTTP API, nsqlookupd and nsqadmin, with
//! the same identities, policy and audit trail as the NSQ TCP listener.
//!
//! Layout (sans-io files first):
//! - [`request`]: request-head screening (smuggling), query parameters, credentials.
//! - [`args`]: topic and channel parameters checked as nsqd checks them.
//! - [`reply`]: nsqd-style V1 responses nsqgate answers itself.
//! - [`access`]: what a caller may see, as pure policy questions.
//! - [`publish`]: nsqd's `/pub` and `/mpub` body rules.
//! - [`sealed`]: `/pub` and `/mpub` bodies for a signed topic, sealed.
//! - [`stats`]: `/stats` filtered to what the caller may see, rendered as JSON or text.
//! - [`rewrite`]: nsqlookupd replies with producers mapped to nsqgate addresses.
//! - [`metrics`]: the fronts' counters; the admin-only `/metrics` renders the process's registry.
//! - [`origin`]: cross-site (CSRF) refusal of state-changing browser requests.
//! - [`caller`]: authentication and audited authorization of one request.
//! - [`body`], [`upstream`], [`server`], [`deadline`]: the I/O: capped body reads, the client
//!   leg to the NSQ daemons, the listeners, the write deadline toward clients.
//! - [`nsqd`], [`lookupd`], [`nsqadmin`]: the three fronts' routing.

pub mod access;
pub mod args;
pub mod body;
pub mod caller;
pub mod deadline;
pub mod kept;
pub mod lookupd;
pub mod metrics;
pub mod nsqadmin;
pub mod nsqd;
pub mod origin;
pub mod publish;
pub mod reply;
pub mod request;
pub mod rewrite;
pub mod sealed;
pub mod server;
pub mod stats;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use tokio::sync::watch;
use tracing::warn;

use crate::net::accept::{bind_per_worker, BindError, Listeners};
use crate::net::workers::Workers;
use crate::shared::Shared;
use caller::Conn;
use metrics::Metrics;
use reply::Body;
use upstream::{HttpUpstream, PoolBounds, UpstreamHttpError, UpstreamSettings};

/// Largest upstream reply nsqgate buffers to filter (/stats, /lookup, /nodes, /topics).
pub const MAX_FILTERED_RESPONSE: usize = 64 * 1024 * 1024;

/// One HTTP front: which daemon it stands in front of, and how.
pub enum Front {
    Nsqd(nsqd::NsqdFront),
    Lookupd(lookupd::LookupdFront),
    Nsqadmin(nsqadmin::AdminFront),
}

// === impl Front ===

impl Front {
    /// The daemon this front stands in front of, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Front::Nsqd(_) => "nsqd",
            Front::Lookupd(_) => "nsqlookupd",
            Front::Nsqadmin(_) => "nsqadmin",
        }
    }

    pub async fn handle(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        match self {
            Front::Nsqd(front) => front.handle(conn, req).await,
            Front::Lookupd(front) => front.handle(conn, req).await,
            Front::Nsqadmin(front) => front.handle(conn, req).await,
        }
    }
}

/// Binds every configured HTTP listener and spawns them; they stop when `shutdown` turns
/// true. Nothing is spawned unless every listener could be bound. Returns the bound
/// addresses by front: `nsqd`, `nsqlookupd`, `nsqadmin`, and `nsqd-plain`,
/// `nsqlookupd-plain` for the plain listeners.
pub async fn spawn(
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<(String, SocketAddr)>, BindError> {
    let metrics = Arc::new(shared.metrics.http.clone());
    let Some(config) = shared.config().http.clone() else {
        return Ok(Vec::new());
    };
    let connect = shared.config().timeouts.upstream_connect;
    let mut fronts: Vec<(Listeners, Front)> = Vec::new();
    let mut plain: Vec<(Listeners, u16)> = Vec::new();
    let http_upstream = |name, address, tls| {
        HttpUpstream::new(UpstreamSettings {
            address,
            tls,
            connect_timeout: connect,
            response_timeout: config.upstream_timeout,
            bounds: PoolBounds::of(&config),
            opened: metrics
                .upstream_connections_opened
                .with_label_values(&[name]),
        })
    };
    if let Some(front) = &config.nsqd {
        // Config validation refuses upstream_tls without [upstream] TLS settings.
        let tls = front
            .upstream_tls
            .then(|| shared.tls_to_upstream())
            .flatten();
        let upstream = http_upstream("nsqd", front.upstream.clone(), tls);
        let listener = bind_with_plain(front.listen, front.plain_listen, &workers, &mut plain)?;
        let nsqd = nsqd::NsqdFront::new(shared.clone(), upstream, metrics.clone(), &config);
        fronts.push((listener, Front::Nsqd(nsqd)));
    }
    if let Some(front) = &config.lookupd {
        let upstream = http_upstream("nsqlookupd", front.upstream.clone(), None);
        let listener = bind_with_plain(front.listen, front.plain_listen, &workers, &mut plain)?;
        let lookupd = lookupd::LookupdFront::new(shared.clone(), upstream, metrics.clone(), front);
        fronts.push((listener, Front::Lookupd(lookupd)));
    }
    if let Some(front) = &config.nsqadmin {
        let upstream = http_upstream("nsqadmin", front.upstream.clone(), None);
        let listener = bind_per_worker(front.listen, &workers)?;
        let admin = nsqadmin::AdminFront::new(shared.clone(), upstream, &config);
        fronts.push((listener, Front::Nsqadmin(admin)));
    }
    let listener = |serve| {
        Arc::new(server::Listener {
            shared: shared.clone(),
            serve,
            metrics: metrics.clone(),
            request_timeout: config.request_timeout,
            allowed_origins: config.allowed_origins.clone(),
        })
    };
    let bound = bound_addresses(&fronts, &plain);
    for (sockets, front) in fronts {
        let serve = server::Serve::Tls(Arc::new(front));
        tokio::spawn(server::serve(
            sockets,
            listener(serve),
            workers.clone(),
            shutdown.clone(),
        ));
    }
    for (sockets, https_port) in plain {
        let serve = server::Serve::Plain { https_port };
        tokio::spawn(server::serve(
            sockets,
            listener(serve),
            workers.clone(),
            shutdown.clone(),
        ));
    }
    Ok(bound)
}

/// Each listener's address by front name; a plain listener is named after the front whose
/// HTTPS port it points to.
fn bound_addresses(
    fronts: &[(Listeners, Front)],
    plain: &[(Listeners, u16)],
) -> Vec<(String, SocketAddr)> {
    let mut bound = Vec::new();
    for (sockets, front) in fronts {
        bound.push((front.name().to_owned(), sockets.local_addr()));
    }
    for (sockets, https_port) in plain {
        let front = bound.iter().find(|(_, a)| a.port() == *https_port);
        if let Some((name, _)) = front {
            bound.push((format!("{name}-plain"), sockets.local_addr()));
        }
    }
    bound
}

/// Binds a front's HTTPS listener and, when configured, its plain listener that points
/// clients at the HTTPS port.
fn bind_with_plain(
    listen: SocketAddr,
    plain_listen: Option<SocketAddr>,
    workers: &Workers,
    plain: &mut Vec<(Listeners, u16)>,
) -> Result<Listeners, BindError> {
    let listener = bind_per_worker(listen, workers)?;
    let port = listener.local_addr().port();
    if let Some(address) = plain_listen {
        plain.push((bind_per_worker(address, workers)?, port));
    }
    Ok(listener)
}

/// Sends one request upstream and relays the answer; a failure is a 502 and a log line.
pub async fn forward(
    upstream: &HttpUpstream,
    metrics: &Metrics,
    method: ::http::Method,
    path_and_query: &str,
    headers: ::http::HeaderMap,
    body: bytes::Bytes,
) -> Response<Body> {
    match upstream.send(method, path_and_query, headers, body).await {
        Ok(response) => upstream::relay(response),
        Err(e) => upstream_failed(metrics, &e),
    }
}

pub fn upstream_failed(metrics: &Metrics, error: &UpstreamHttpError) -> Response<Body> {
    Metrics::add(&metrics.upstream_errors, 1);
    warn!(error = %error, "upstream HTTP request failed");
    reply::bad_gateway()
}

/// The refusal for a body read that failed; one over its size limit is counted.
pub fn body_failed(
    metrics: &crate::metrics::Metrics,
    error: &body::BodyError,
    too_big: Response<Body>,
) -> Response<Body> {
    match error {
        body::BodyError::TooBig(_) => {
            metrics.size_limited("http_body");
            too_big
        }
        body::BodyError::Timeout => reply::error(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
        body::BodyError::Read(_) => reply::bad_request("INVALID_REQUEST"),
    }
}
