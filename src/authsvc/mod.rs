//! The auth service (`[auth_service]`): nsqgate as the HTTP auth server stock nsqd calls with
//! `--auth-http-address`, answering from the same policy, API keys and JWTs nsqgate enforces,
//! so one policy holds at nsqgate and inside nsqd itself (for clients that reach nsqd
//! directly). Its own listener, apart from the client caps, like the admin listener.
//!
//! - [`query`]: the request nsqd makes, parsed and bounded (sans-io).
//! - [`answer`]: the JSON nsqd reads, from the principal and the policy (sans-io).
//! - here: the listener, TLS, hyper, the audit line and the counters.

pub mod answer;
pub mod query;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::http::{header, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::app::StartError;
use crate::audit::{self, Event};
use crate::auth::{self, identity};
use crate::config::authsvc::AuthServiceConfig;
use crate::metrics::authsvc::Outcome;
use crate::metrics::{self, Leg, ListenerCounts};
use crate::net::accept::{bind, BindError};
use crate::net::operators::{self, Bounds};
use crate::shared::Shared;

/// Connections served at once; more wait to be accepted (each holds one request).
const MAX_CONNECTIONS: usize = 64;
/// How long one connection may stay open, kept alive or not.
const CONNECTION_LIMIT: Duration = Duration::from_secs(300);
/// Room in the query beside the secret: `remote_ip`, `tls`, `common_name` and their names.
const QUERY_OVERHEAD: usize = 512;

/// What every connection shares.
struct Service {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    counts: ListenerCounts,
    /// How long nsqd may keep an answer.
    ttl: Duration,
    /// Longest query taken: a whole AUTH body (`limits.max_auth_size`), percent-encoded.
    max_query: usize,
}

/// Binds the auth service's listener and serves until `shutdown` turns true. Returns the
/// bound address (for the ready file).
pub async fn spawn(
    shared: Arc<Shared>,
    config: &AuthServiceConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    // Not reloaded: its certificate is read at start (the expiry metric names it).
    let tls = match &config.tls {
        Some(settings) => Some(TlsAcceptor::from(crate::tls::admin_config(settings)?)),
        None => None,
    };
    let tcp = bind(config.listen).await?;
    let address = tcp.local_addr().map_err(|source| BindError {
        address: config.listen,
        source,
    })?;
    let kind = if tls.is_some() {
        "auth_service_https"
    } else {
        "auth_service"
    };
    let max_auth = usize::try_from(shared.config().limits.max_auth_size).unwrap_or(usize::MAX);
    let service = Arc::new(Service {
        counts: shared.metrics.listener(kind, &address.to_string()),
        shared,
        tls,
        ttl: config.ttl,
        max_query: max_auth.saturating_add(QUERY_OVERHEAD).saturating_mul(3),
    });
    info!(
        %address,
        tls = service.tls.is_some(),
        ttl_secs = config.ttl.as_secs(),
        "auth service for nsqd's --auth-http-address: GET {}",
        query::PATH
    );
    tokio::spawn(serve(tcp, service, shutdown));
    Ok(address)
}

async fn serve(tcp: TcpListener, service: Arc<Service>, shutdown: watch::Receiver<bool>) {
    let bounds = Bounds {
        connections: MAX_CONNECTIONS,
        lifetime: CONNECTION_LIMIT,
    };
    let counts = &service.counts;
    operators::serve(
        tcp,
        "auth service",
        counts,
        bounds,
        shutdown,
        |stream, peer| {
            let service = service.clone();
            async move { connection(&service, stream, peer).await }
        },
    )
    .await;
}

async fn connection(service: &Arc<Service>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = &service.tls else {
        return http(service, tcp, peer).await;
    };
    let deadline = service.shared.config().timeouts.tls_handshake;
    let handshake = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
    let failure = metrics::handshake_failure(&handshake);
    service.shared.metrics.tls_handshake(Leg::Client, failure);
    match handshake {
        Ok(Ok(tls)) => http(service, tls, peer).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "auth service TLS handshake failed"),
        Err(_) => debug!(%peer, "auth service TLS handshake timed out"),
    }
}

/// Serves one HTTP/1.1 request on one connection, then closes it. nsqd v1.3.0 makes a new
/// HTTP client for every AUTH and never reuses its connection, but leaves it idle for 90 s:
/// kept alive, 64 of them would fill [`MAX_CONNECTIONS`] and the next AUTH would wait past
/// nsqd's 5 s request timeout (its E_AUTH_FAILED).
async fn http<S>(service: &Arc<Service>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let for_requests = service.clone();
    let handler = service_fn(move |req: Request<Incoming>| {
        let service = for_requests.clone();
        async move { Ok::<_, Infallible>(respond(&service, &req, peer)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(service.shared.config().timeouts.tls_handshake)
        .max_buf_size(service.max_query.saturating_add(8192))
        .serve_connection(TokioIo::new(io), handler)
        .await;
    if let Err(e) = served {
        debug!(error = %e, "auth service connection ended");
    }
}

fn respond(service: &Service, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let uri = req.uri();
    let asked = query::parse(req.method(), uri.path(), uri.query(), service.max_query);
    let asked = match asked {
        Ok(asked) => asked,
        Err(e) => {
            service
                .shared
                .metrics
                .auth_service
                .answered(Outcome::BadRequest);
            debug!(%peer, error = %e, "auth service request refused");
            return reply(e.status(), "text/plain; charset=utf-8", format!("{e}\n"));
        }
    };
    let policy = service.shared.policy.borrow().clone();
    let secret = asked.secret.as_bytes();
    let authenticated = identity::from_secret(secret, service.shared.jwt().as_deref(), &policy);
    let answer = answer::answer(&authenticated, &policy, service.ttl, SystemTime::now());
    let counters = &service.shared.metrics.auth_service;
    counters.answered(answer.outcome);
    counters.grants_omitted.inc_by(answer.omitted.len() as u64);
    record(peer, &asked, &authenticated, &answer, secret);
    match serde_json::to_string(&answer.reply) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => {
            warn!(error = %e, "auth service reply could not be encoded");
            let body = "internal error\n";
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", body)
        }
    }
}

/// The audit line: who nsqd asked about (its client's address, TLS, certificate CN), the
/// principal, and how many grants went back (and which were left out).
fn record(
    peer: SocketAddr,
    asked: &query::AuthQuery,
    authenticated: &Result<auth::Principal, auth::AuthError>,
    answer: &answer::Answer,
    secret: &[u8],
) {
    let fingerprint = auth::fingerprint(secret);
    let mut reason = format!(
        "nsqd client {} tls={} common_name={:?}; grants={}",
        asked.remote_ip,
        asked.tls,
        asked.common_name,
        answer.reply.authorizations.len()
    );
    if !answer.omitted.is_empty() {
        reason.push_str(&format!(
            "; left out (a deny overlaps): {}",
            answer.omitted.join(", ")
        ));
    }
    if let Some(refusal) = &answer.refusal {
        reason.push_str(&format!("; refused: {refusal}"));
    }
    let outcome = match answer.outcome {
        Outcome::Refused => "failure",
        _ => "success",
    };
    audit::record(&Event {
        remote: Some(peer),
        principal: authenticated.as_ref().ok(),
        action: "nsqd_auth",
        outcome,
        reason: Some(&reason),
        fingerprint: Some(&fingerprint),
        method: Some(identity::method_name(secret)),
        ..Event::default()
    });
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
