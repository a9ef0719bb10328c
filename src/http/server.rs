//! The HTTP listeners' I/O: accept, TLS handshake (the same rustls set-up as the NSQ listener,
//! client certificates included), a screen of the raw request head, then hyper serving one
//! request per connection. Also the plain-HTTP listener that only answers `TLS_REQUIRED`.
//!
//! One request per connection is deliberate: every request head passes the smuggling screen
//! (`request::screen_head`) before hyper parses it, which a kept-alive connection would skip
//! for its later requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::http::caller::Conn;
use crate::http::metrics::Metrics;
use crate::http::reply;
use crate::http::request::{self, HeadError};
use crate::http::Front;
use crate::proxy::stream::Replay;
use crate::proxy::Gateway;

/// The longest request head nsqgate reads before refusing it.
const MAX_HEAD: usize = 64 * 1024;

/// Sent as-is when a head fails the screen: hyper never sees the request.
const BAD_HEAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json; charset=utf-8\r\n\
X-NSQ-Content-Type: nsq; version=1.0\r\n\
Content-Length: 30\r\n\
Connection: close\r\n\r\n\
{\"message\":\"INVALID_REQUEST\"}\n";

/// Serves `front` over TLS on `listener` until `shutdown` turns true.
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    front: Arc<Front>,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // The same connection caps as the NSQ listeners (total, per IP, new/s per
                    // IP); over a cap the connection is closed at once.
                    let Ok(mut permit) = gateway.conns.admit() else { continue };
                    if permit.bind_ip(peer.ip()).is_err() {
                        continue;
                    }
                    let (gateway, front, metrics) = (gateway.clone(), front.clone(), metrics.clone());
                    connections.spawn(async move {
                        let _permit = permit;
                        connection(tcp, peer, gateway, front, metrics, request_timeout).await
                    });
                }
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    info!(open = connections.len(), "HTTP listener stopped");
    connections.shutdown().await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    front: Arc<Front>,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let accept = gateway.tls_acceptor.accept(tcp);
    let tls = match tokio::time::timeout(gateway.config.timeouts.tls_handshake, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(%peer, error = %e, "HTTPS handshake failed"),
        Err(_) => return debug!(%peer, "HTTPS handshake timed out"),
    };
    // rustls has verified the chain against the client CA (and CRLs) by now.
    let cert = crate::identity::from_certificate(
        tls.get_ref().1.peer_certificates(),
        &gateway.config.client.cert_identity_order,
    );
    let conn = Arc::new(Conn { peer, cert });
    serve_screened(tls, conn, front, metrics, request_timeout).await;
}

/// Reads the head, screens it, and hands the connection (head replayed) to hyper.
async fn serve_screened<S>(
    mut io: S,
    conn: Arc<Conn>,
    front: Arc<Front>,
    metrics: Arc<Metrics>,
    request_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let head = match tokio::time::timeout(request_timeout, read_head(&mut io)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return debug!(%peer, error = %e, "HTTP request head unreadable"),
        Err(_) => return debug!(%peer, "HTTP request head timed out"),
    };
    let screened = request::head_end(&head)
        .ok_or(HeadError::Malformed)
        .and_then(|end| request::screen_head(&head[..end]));
    if let Err(e) = screened {
        Metrics::add(&metrics.smuggling, 1);
        warn!(%peer, error = %e, "HTTP request refused before parsing");
        let _ = io.write_all(BAD_HEAD).await;
        let _ = io.shutdown().await;
        return;
    }
    let service = service_fn(move |req: Request<Incoming>| {
        let front = front.clone();
        let conn = conn.clone();
        let metrics = metrics.clone();
        async move {
            let response = front.handle(&conn, req).await;
            Metrics::add(&metrics.requests, 1);
            if matches!(response.status().as_u16(), 401 | 403) {
                Metrics::add(&metrics.refused, 1);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .serve_connection(TokioIo::new(Replay::new(head.freeze(), io)), service)
        .await;
    if let Err(e) = served {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Reads until the end of the request head. `None` when the client closed without a byte.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Option<BytesMut>> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if request::head_end(&buf).is_some() || buf.len() >= MAX_HEAD {
            return Ok(Some(buf));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
    }
}

/// The plain-HTTP listener: every request gets 403 `TLS_REQUIRED` with the HTTPS port, as
/// nsqd answers on its HTTP port with `--tls-required`; nothing is forwarded.
pub async fn serve_plain(
    listener: TcpListener,
    https_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    connections.spawn(async move {
                        let service = service_fn(move |_req: Request<Incoming>| async move {
                            Ok::<_, Infallible>(reply::tls_required(https_port))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    connections.shutdown().await;
}
