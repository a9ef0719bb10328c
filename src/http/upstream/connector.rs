//! How the upstream pool opens a connection: TCP to the configured `host:port` (resolved per
//! connection, so a container name works), then, for HTTPS, rustls verifying the server's
//! certificate against the trust this connector was built with. Every connection it hands
//! hyper was verified that way; each one is counted.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use prometheus::IntCounter;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::UpstreamHttpError;

/// The trust one connection is verified with: the CA set-up in force when the pool it feeds
/// was made, and the name the server's certificate must carry.
#[derive(Clone)]
pub struct Trust {
    pub config: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
}

/// Opens connections to one upstream for hyper's pooling client.
#[derive(Clone)]
pub struct Connector {
    pub address: Arc<str>,
    /// None for plain HTTP.
    pub trust: Option<Trust>,
    pub connect_timeout: Duration,
    /// `nsqgate_http_upstream_connections_opened_total` for this upstream.
    pub opened: IntCounter,
}

/// One upstream connection, plain or TLS.
pub struct UpstreamIo(TokioIo<Stream>);

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

// === impl Connector ===

impl Connector {
    async fn open(self) -> Result<UpstreamIo, UpstreamHttpError> {
        let address = self.address.to_string();
        let connect = TcpStream::connect(&*self.address);
        let tcp = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| UpstreamHttpError::Timeout(address.clone()))?
            .map_err(|source| UpstreamHttpError::Connect {
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = match self.trust {
            None => Stream::Plain(tcp),
            Some(trust) => {
                let handshake = TlsConnector::from(trust.config).connect(trust.name, tcp);
                let tls = tokio::time::timeout(self.connect_timeout, handshake)
                    .await
                    .map_err(|_| UpstreamHttpError::Timeout(address.clone()))?
                    .map_err(|source| UpstreamHttpError::Tls { address, source })?;
                Stream::Tls(Box::new(tls))
            }
        };
        self.opened.inc();
        Ok(UpstreamIo(TokioIo::new(stream)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = UpstreamHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, UpstreamHttpError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is ignored: a connector serves the one upstream it was made for.
    fn call(&mut self, _: Uri) -> Self::Future {
        Box::pin(self.clone().open())
    }
}

// === impl UpstreamIo ===

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.0)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

// === impl Stream ===

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
