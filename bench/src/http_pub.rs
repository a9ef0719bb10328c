//! HTTP `POST /pub` on kept-alive connections (HTTP/1.1, plain or TLS): each connection sends
//! one request and reads its whole response before the next (one in flight, as an HTTP
//! client library does). Every answer must be 200; anything else ends the run with the status
//! and body. A server that answers `Connection: close` (nsqgate's HTTPS fronts serve one
//! request per connection) gets a new connection for the next request, as a client library
//! would open one; the report counts them (`reconnects`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::conn::{self, Stream};
use crate::http_get::header_end;
use crate::publish::{self, Body};
use crate::repeat::{self, Operation};
use crate::window::Watched;
use crate::{Error, Timing};

#[cfg(test)]
mod tests;

/// A /pub answer is a few bytes; anything near this is not one.
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Clone, Debug, clap::Args)]
pub struct HttpPub {
    /// The target's HTTP(S) address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// HTTPS: the CA (PEM) the server's certificate must chain to.
    #[arg(long)]
    pub ca: Option<String>,
    /// Name to verify in the certificate; default: the address's IP.
    #[arg(long)]
    pub server_name: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    #[arg(long)]
    pub token: Option<String>,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, value_enum, default_value = "repeated")]
    pub body: Body,
}

/// The request's bytes: the same for every message of a run.
pub fn request(args: &HttpPub) -> Vec<u8> {
    let body = publish::body(args.body, args.size, 0);
    let auth = match &args.token {
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    let mut bytes = format!(
        "POST /pub?topic={} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: {}\r\n\r\n",
        args.topic,
        args.addr,
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The status code and whether the server will close the connection, from a complete head.
pub fn status_of(head: &[u8]) -> Result<(u16, bool), Error> {
    let text = String::from_utf8_lossy(head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let closing = text
        .to_ascii_lowercase()
        .lines()
        .any(|line| line.starts_with("connection:") && line.contains("close"));
    Ok((status, closing))
}

/// Where every connection goes, and what each request is.
struct Endpoint {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    request: Vec<u8>,
    /// Connections opened after a `Connection: close` answer.
    reconnects: AtomicU64,
}

impl Endpoint {
    async fn open(&self) -> Result<Box<dyn Stream>, Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        })
    }
}

struct Publisher {
    endpoint: Arc<Endpoint>,
    /// None after the server said it closes: the next request opens a new one.
    io: Option<Box<dyn Stream>>,
    buf: BytesMut,
}

impl Publisher {
    /// Reads one whole response; whether the server closes the connection after it.
    async fn response(&mut self, io: &mut Box<dyn Stream>) -> Result<bool, Error> {
        loop {
            if let Some((end, length)) = header_end(&self.buf) {
                let length = length.ok_or("a response without Content-Length")?;
                if self.buf.len() >= end + length {
                    let response = self.buf.split_to(end + length);
                    let (status, closing) = status_of(&response[..end])?;
                    if status != 200 {
                        let body = String::from_utf8_lossy(&response[end..]);
                        return Err(format!("answered {status}: {body}").into());
                    }
                    return Ok(closing);
                }
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err("response too large".into());
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                return Err("the server closed the connection without an answer".into());
            }
        }
    }
}

impl Operation for Publisher {
    async fn once(&mut self) -> Result<(), Error> {
        let mut io = match self.io.take() {
            Some(io) => io,
            None => {
                self.endpoint.reconnects.fetch_add(1, Ordering::Relaxed);
                self.endpoint.open().await?
            }
        };
        conn::send(&mut io, &self.endpoint.request).await?;
        if !self.response(&mut io).await? {
            self.io = Some(io);
        } else if !self.buf.is_empty() {
            return Err("bytes after a Connection: close answer".into());
        }
        Ok(())
    }
}

/// Opens every connection, then publishes on each until the window ends; the report names
/// the count `messages`/`msgs_per_s` as the NSQ workloads do (each request is one message).
pub async fn run(
    args: &HttpPub,
    timing: &Timing,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let tls = match &args.ca {
        Some(ca) => {
            let name = (args.server_name.clone()).unwrap_or_else(|| args.addr.ip().to_string());
            Some((conn::tls_connector(ca, false)?, ServerName::try_from(name)?))
        }
        None => None,
    };
    let endpoint = Arc::new(Endpoint {
        addr: args.addr,
        tls,
        request: request(args),
        reconnects: AtomicU64::new(0),
    });
    let mut publishers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        publishers.push(Publisher {
            endpoint: endpoint.clone(),
            io: Some(endpoint.open().await?),
            buf: BytesMut::with_capacity(4096),
        });
    }
    let mut out = repeat::repeat(publishers, timing.warmup(), timing.seconds(), watched).await?;
    // Over the whole run, warm-up included: a server keeps its connections or it does not.
    let reconnects = endpoint.reconnects.load(Ordering::Relaxed);
    out.insert("reconnects".into(), reconnects.into());
    for (from, to) in [("operations", "messages"), ("ops_per_s", "msgs_per_s")] {
        if let Some(value) = out.remove(from) {
            out.insert(to.into(), value);
        }
    }
    // Closed-loop request times, not the open-loop latency the latency rows report.
    for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
        if let Some(value) = out.remove(key) {
            out.insert(format!("request_{key}"), value);
        }
    }
    Ok(out)
}
