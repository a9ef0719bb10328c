//! The HTTP client leg to nsqd, nsqlookupd or nsqadmin: one connection per request (plain, or
//! TLS verified against the configured CA and server name), a fresh request built by nsqgate
//! (never the client's bytes), and deadlines on connect and on the response head.

use std::time::Duration;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::{Method, Request, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::http::reply::Body;
use crate::tls::ToNsqd;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamHttpError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS with {address} failed (certificate not trusted, or wrong name?): {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("HTTP exchange with {address} failed: {source}")]
    Http {
        address: String,
        source: hyper::Error,
    },
    #[error("request could not be built: {0}")]
    Request(#[from] ::http::Error),
}

/// One upstream HTTP service.
pub struct HttpUpstream {
    /// `host:port`, resolved per connection so a container name works.
    address: String,
    /// Present for HTTPS: the verifying client configuration and the name to verify.
    tls: Option<ToNsqd>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

// === impl HttpUpstream ===

impl HttpUpstream {
    pub fn new(
        address: String,
        tls: Option<ToNsqd>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> HttpUpstream {
        HttpUpstream {
            address,
            tls,
            connect_timeout,
            response_timeout,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `method path_and_query` with `headers` and `body`; returns the response head
    /// with its body still streaming.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamHttpError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .body(Full::new(body))?;
        *request.headers_mut() = headers;
        let host = HeaderValue::from_str(&self.address).map_err(::http::Error::from)?;
        request.headers_mut().insert(header::HOST, host);
        let exchange = async {
            let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
                .await
                .map_err(|_| UpstreamHttpError::Timeout(self.address.clone()))?
                .map_err(|source| UpstreamHttpError::Connect {
                    address: self.address.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(to_nsqd) => {
                    let handshake = to_nsqd.connector().connect(to_nsqd.server_name(), tcp);
                    let tls = tokio::time::timeout(self.connect_timeout, handshake)
                        .await
                        .map_err(|_| UpstreamHttpError::Timeout(self.address.clone()))?
                        .map_err(|source| UpstreamHttpError::Tls {
                            address: self.address.clone(),
                            source,
                        })?;
                    self.exchange(tls, request).await
                }
                None => self.exchange(tcp, request).await,
            }
        };
        tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| UpstreamHttpError::Timeout(self.address.clone()))?
    }

    async fn exchange<I>(
        &self,
        io: I,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamHttpError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |source| UpstreamHttpError::Http {
            address: self.address.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(failed)?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(upstream = %address, error = %e, "upstream HTTP connection ended");
            }
        });
        sender.send_request(request).await.map_err(failed)
    }
}

/// Request headers worth passing upstream; credentials and hop-by-hop headers never are.
pub fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let keep: [HeaderName; 3] = [header::ACCEPT, header::CONTENT_TYPE, header::USER_AGENT];
    let mut headers = HeaderMap::new();
    for name in keep {
        if let Some(value) = from.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers
}

/// An upstream response passed to the client as it streams, minus hop-by-hop headers
/// (`X-NSQ-Content-Type` and the rest are kept).
pub fn relay(response: Response<Incoming>) -> Response<Body> {
    let mut response = response.map(|body| body.boxed());
    strip_hop_by_hop(response.headers_mut());
    response
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}
