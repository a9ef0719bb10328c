//! HTTP GETs the way stock nsqd asks its auth server (`--auth-http-address`): nsqd v1.3.0 builds
//! a new HTTP client for every AUTH, so each request here is a new connection (TCP, and TLS
//! when `--ca` is given), `GET path` with nsqd's Accept header, the whole response read, then
//! closed. A status other than 200, or a body without `--expect`, is an error.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::conn::{self, Stream};
use crate::repeat::{self, Operation};
use crate::window::Watched;
use crate::{Error, Timing};

/// Responses larger than this are refused (an auth answer is a few hundred bytes).
const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Clone, Debug, clap::Args)]
pub struct Get {
    #[arg(long)]
    pub addr: SocketAddr,
    /// Path and query, e.g. "/auth?remote_ip=127.0.0.1&tls=true&secret=KEY&common_name=".
    #[arg(long)]
    pub path: String,
    /// HTTPS: the CA (PEM) the server's certificate must chain to.
    #[arg(long)]
    pub ca: Option<String>,
    /// Name to verify in the certificate; default: the address's IP.
    #[arg(long)]
    pub server_name: Option<String>,
    /// Text the response body must contain.
    #[arg(long)]
    pub expect: Option<String>,
    /// Requests in flight (one per worker).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
}

struct Request {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    bytes: Arc<Vec<u8>>,
    expect: Option<String>,
}

/// Where the header ends and the body's declared length, once the header is complete.
pub fn header_end(buf: &[u8]) -> Option<(usize, Option<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    });
    Some((end, length))
}

impl Request {
    async fn exchange(&self, mut io: Box<dyn Stream>) -> Result<BytesMut, Error> {
        conn::send(&mut io, &self.bytes).await?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if let Some((end, Some(length))) = header_end(&buf) {
                if buf.len() >= end + length {
                    return Ok(buf);
                }
            }
            if buf.len() > MAX_RESPONSE {
                return Err("response too large".into());
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(buf); // no Content-Length: the body ends with the connection
            }
        }
    }
}

impl Operation for Request {
    async fn once(&mut self) -> Result<(), Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &self.tls {
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            None => Box::new(tcp),
        };
        let response = self.exchange(io).await?;
        let text = String::from_utf8_lossy(&response);
        if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
            let status = text.lines().next().unwrap_or_default();
            return Err(format!("answered {status:?}").into());
        }
        if let Some(expect) = &self.expect {
            if !text.contains(expect.as_str()) {
                return Err(format!("the response lacks {expect:?}: {text}").into());
            }
        }
        Ok(())
    }
}

pub async fn run(
    args: &Get,
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
    let bytes = Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.nsq; version=1.0\r\n\
             Connection: close\r\n\r\n",
            args.path, args.addr
        )
        .into_bytes(),
    );
    let ops = (0..args.workers)
        .map(|_| Request {
            addr: args.addr,
            tls: tls.clone(),
            bytes: bytes.clone(),
            expect: args.expect.clone(),
        })
        .collect();
    repeat::repeat::<Request>(ops, timing.warmup(), timing.seconds(), watched).await
}
