//! The HTTP listeners' I/O: accept (connection caps), TLS handshake (the same rustls set-up as
//! the NSQ listener, client certificates included), a screen of the raw request head, then
//! hyper serving each request (see below). The plain-HTTP listener goes through the same
//! caps, head deadline and screen, and only ever answers `TLS_REQUIRED`. PROXY headers from
//! `[connections] proxy_protocol_from` sources are read first (`net::proxied`), so caps and
//! the audit log see the real client. Every write toward a
//! client has the `timeouts.write_ms` deadline of the NSQ path (`deadline`).
//!
//! Connections are kept alive, served by one hyper dispatcher each, and every request head on
//! them passes the smuggling screen (`request::screen_head`) before hyper parses it: nsqgate
//! reads each head itself and gives hyper the head and the body its length declares, then the
//! next screened head (`kept::Screened`). A chunked body or a client asking to close ends the
//! connection after that request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::header::{HeaderValue, CONNECTION};
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cluster::slots::Full;
use crate::http::caller::Conn;
use crate::http::deadline::WriteDeadline;
use crate::http::kept;
use crate::http::metrics::Metrics;
use crate::http::origin;
use crate::http::reply::{self, Body};
use crate::http::request;
use crate::http::Front;
use crate::limit::conn::{ConnPermit, Refusal};
use crate::metrics::{handshake_failure, Leg};
use crate::net::accept::{self, Admission, Listeners, OnShutdown};
use crate::net::proxied;
use crate::net::stream::Replay;
use crate::net::workers::Workers;
use crate::shared::Shared;

/// Sent as-is when a head fails the screen: hyper never sees the request.
const BAD_HEAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json; charset=utf-8\r\n\
X-NSQ-Content-Type: nsq; version=1.0\r\n\
Content-Length: 30\r\n\
Connection: close\r\n\r\n\
{\"message\":\"INVALID_REQUEST\"}\n";

/// What one listener serves.
#[derive(Clone)]
pub enum Serve {
    /// HTTPS in front of one daemon.
    Tls(Arc<Front>),
    /// Plain HTTP: every request gets 403 `TLS_REQUIRED` naming the HTTPS port, as nsqd
    /// answers on its HTTP port with `--tls-required`; nothing is forwarded.
    Plain { https_port: u16 },
}

/// What every connection of one listener shares.
pub struct Listener {
    pub shared: Arc<Shared>,
    pub serve: Serve,
    pub metrics: Arc<Metrics>,
    /// Deadline for the request head (and, in the fronts, the body).
    pub request_timeout: Duration,
    /// Other origins whose browser requests may change state (`[http] allowed_origins`).
    pub allowed_origins: Vec<String>,
}

/// Serves `listener` until `shutdown` turns true; open connections are cut off then.
pub async fn serve(
    sockets: Listeners,
    listener: Arc<Listener>,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) {
    let address = sockets.local_addr().to_string();
    let kind = match &listener.serve {
        Serve::Tls(front) => {
            info!(%address, front = front.name(), "listening for HTTPS clients");
            format!("https_{}", front.name())
        }
        Serve::Plain { https_port } => {
            info!(
                %address,
                https_port,
                "listening for plain HTTP clients (answering TLS_REQUIRED)"
            );
            "http_plain".to_owned()
        }
    };
    let counts = listener.shared.metrics.listener(&kind, &address);
    // The same connection caps as the NSQ listeners (total here; per IP and new/s per IP once
    // the address is known).
    let admission = Admission {
        conns: listener.shared.conns.clone(),
        workers,
    };
    let connection = move |tcp, peer, permit| connection(tcp, peer, permit, listener.clone());
    let cut = OnShutdown::Cut;
    accept::serve(
        sockets,
        admission,
        shutdown,
        cut,
        ("http", counts),
        connection,
    )
    .await;
}

async fn connection(
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    mut permit: ConnPermit,
    listener: Arc<Listener>,
) {
    let _ = tcp.set_nodelay(true);
    let shared = &listener.shared;
    // A trusted load balancer names the real client in a PROXY header, exactly as on the NSQ
    // listener; from any other source a header is not believed (it reaches TLS and fails).
    let mut early = BytesMut::new();
    if shared.config().proxy_protocol_from.contains(&peer.ip()) {
        let header = proxied::read_header(&mut tcp, &mut early, peer);
        peer = match tokio::time::timeout(shared.config().timeouts.tls_handshake, header).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return info!(%peer, error = %e, "HTTP connection refused"),
            Err(_) => return debug!(%peer, "PROXY header timed out"),
        };
        debug!(client = %peer, "PROXY header");
    }
    // Over a per-IP cap (the real client's): closed at once, before any handshake.
    if permit.bind_ip(peer.ip()).is_err() {
        return;
    }
    // And over the per-IP cap shared by every replica (`[cluster]`), as on the NSQ listener.
    if let (Some(slots), Some(cap)) = (&shared.slots, shared.config().connections.max_per_ip) {
        match slots.claim(&format!("conns:ip:{}", peer.ip()), cap).await {
            Ok(Some(slot)) => permit.keep(slot),
            Ok(None) => {}
            Err(Full::Cap) => {
                shared.conns.count_refusal(Refusal::SharedPerIp);
                return debug!(%peer, "HTTP connection refused: {}", Refusal::SharedPerIp);
            }
            Err(full @ Full::Unavailable) => {
                return debug!(%peer, "HTTP connection refused: {full}")
            }
        }
    }
    // Every write to the client, the TLS handshake's included, must make progress within
    // write_ms: a client that stops reading is cut off.
    let io = Replay::new(
        early.freeze(),
        WriteDeadline::new(tcp, shared.config().timeouts.write),
    );
    match &listener.serve {
        Serve::Tls(front) => {
            let accept = shared.tls.acceptor().accept(io);
            let handshake =
                tokio::time::timeout(shared.config().timeouts.tls_handshake, accept).await;
            shared
                .metrics
                .tls_handshake(Leg::Client, handshake_failure(&handshake));
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "HTTPS handshake failed"),
                Err(_) => return debug!(%peer, "HTTPS handshake timed out"),
            };
            // rustls has verified the chain against the client CA (and CRLs) by now.
            let cert = crate::auth::identity::from_certificate(
                tls.get_ref().1.peer_certificates(),
                &shared.config().client.cert_identity_order,
            );
            let conn = Arc::new(Conn {
                peer,
                cert,
                permit: Mutex::new(permit),
                audited: Default::default(),
                remembered: Default::default(),
                buckets: Default::default(),
            });
            let last = Arc::new(AtomicBool::new(false));
            let service = front_service(front.clone(), conn, listener.clone(), &last);
            serve_screened(tls, peer, &listener, service, last, true).await;
        }
        Serve::Plain { https_port } => {
            serve_plain(io, peer, *https_port, &listener).await;
            drop(permit);
        }
    }
}

/// hyper serving the connection `io` (one dispatcher for all its requests, each head screened
/// first: `kept::Screened`) with the listener's head deadline, until the client closes, asks
/// to close, or a response says `Connection: close`. A head refused by the screen gets the
/// 400 here; the connection then ends with TLS's close_notify and a FIN.
async fn serve_screened<I, S>(
    io: I,
    peer: SocketAddr,
    listener: &Listener,
    service: S,
    last: Arc<AtomicBool>,
    keep_alive: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
        Request<Incoming>,
        Response = ::http::Response<Body>,
        Error = Infallible,
    >,
{
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        // The end of a request's bytes (the screen holding the next head back) is not the
        // client hanging up: answer it.
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(listener.request_timeout)
        .serve_connection(TokioIo::new(kept::Screened::new(io, last)), service)
        .without_shutdown()
        .await;
    let parts = match served {
        Ok(parts) => parts,
        Err(e) => return debug!(%peer, error = %e, "HTTP connection ended with an error"),
    };
    let (mut io, refused) = parts.io.into_inner().into_parts();
    if let Some(e) = refused {
        Metrics::add(&listener.metrics.smuggling, 1);
        warn!(%peer, error = %e, "HTTP request refused before parsing");
        let _ = io.write_all(BAD_HEAD).await;
    }
    let _ = io.shutdown().await;
}

/// The service hyper calls for each request on a front. A refusal (any 4xx or 5xx) ends the
/// connection (`Connection: close`): a client guessing credentials or names pays a handshake
/// per guess, and a connection in doubt is not reused. So does a request the screen saw as
/// the connection's `last`.
fn front_service(
    front: Arc<Front>,
    conn: Arc<Conn>,
    listener: Arc<Listener>,
    last: &Arc<AtomicBool>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = ::http::Response<Body>,
    Error = Infallible,
    Future: Send,
> {
    let last = last.clone();
    service_fn(move |req: Request<Incoming>| {
        let (front, conn, listener) = (front.clone(), conn.clone(), listener.clone());
        let last = last.clone();
        async move {
            let mut response = match refuse_cross_site(&listener, conn.peer, &req) {
                Some(refusal) => refusal,
                None => front.handle(&conn, req).await,
            };
            Metrics::add(&listener.metrics.requests, 1);
            if matches!(response.status().as_u16(), 401 | 403) {
                Metrics::add(&listener.metrics.refused, 1);
            }
            let refused =
                response.status().is_client_error() || response.status().is_server_error();
            if refused || last.load(Ordering::Relaxed) {
                let close = HeaderValue::from_static("close");
                response.headers_mut().insert(CONNECTION, close);
            }
            Ok::<_, Infallible>(response)
        }
    })
}

/// The CSRF screen of every front: a browser request from another site that would change
/// something is refused (403, audited, counted) before authentication.
fn refuse_cross_site(
    listener: &Listener,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Option<::http::Response<Body>> {
    let why = origin::check(req.method(), req.headers(), &listener.allowed_origins).err()?;
    let reason = format!(
        "cross-site {} {} refused: {}",
        req.method(),
        request::for_log(req.uri().path()),
        request::for_log(&why.to_string())
    );
    listener.shared.metrics.decision("request", false);
    crate::audit::record(&crate::audit::Event {
        remote: Some(peer),
        action: "request",
        outcome: "deny",
        reason: Some(&reason),
        ..crate::audit::Event::default()
    });
    Some(reply::error(
        ::http::StatusCode::FORBIDDEN,
        "CROSS_SITE_REQUEST_REFUSED",
    ))
}

/// The plain listener: the same head deadline and screen, then `TLS_REQUIRED` and close.
async fn serve_plain<S>(io: S, peer: SocketAddr, https_port: u16, listener: &Listener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = listener.metrics.clone();
    let service = service_fn(move |_req: Request<Incoming>| {
        Metrics::add(&metrics.requests, 1);
        let mut response = reply::tls_required(https_port);
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        async move { Ok::<_, Infallible>(response) }
    });
    serve_screened(io, peer, listener, service, Arc::default(), false).await;
}
