//! The HTTP client leg to nsqd, nsqlookupd or nsqadmin: a fresh request built by nsqgate
//! (never the client's bytes) on a kept-alive connection from this worker's pool, or a new
//! one (plain, or TLS verified against the configured CA and server name); deadlines on
//! connect and on the response head.

mod connector;
mod pool;

use std::time::Duration;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::{Method, Request, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prometheus::IntCounter;

use crate::http::reply::Body;
use crate::tls::ToNsqd;
use connector::Connector;
pub use pool::PoolBounds;
use pool::Pools;

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
    /// Connecting or the exchange failed; `detail` is hyper's error and its causes.
    #[error("HTTP exchange with {address} failed: {detail}")]
    Exchange { address: String, detail: String },
    #[error("request could not be built: {0}")]
    Request(#[from] ::http::Error),
}

/// One upstream HTTP service.
pub struct HttpUpstream {
    /// `host:port`, resolved per connection so a container name works.
    address: String,
    pools: Pools,
    response_timeout: Duration,
}

/// How to reach one upstream: where, with which TLS set-up, and within what time.
pub struct UpstreamSettings {
    pub address: String,
    /// Present for HTTPS: the verifying client configuration and the name to verify.
    pub tls: Option<ToNsqd>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub bounds: PoolBounds,
    /// Counts the connections opened to it.
    pub opened: IntCounter,
}

// === impl HttpUpstream ===

impl HttpUpstream {
    pub fn new(settings: UpstreamSettings) -> HttpUpstream {
        let connector = Connector {
            address: settings.address.as_str().into(),
            trust: None,
            connect_timeout: settings.connect_timeout,
            opened: settings.opened,
        };
        HttpUpstream {
            pools: Pools::new(connector, settings.tls, settings.bounds),
            address: settings.address,
            response_timeout: settings.response_timeout,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `method path_and_query` with `headers` and `body`; returns the response head
    /// with its body still streaming (the connection goes back to the pool once it is read).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamHttpError> {
        // The pool is keyed by scheme and authority; the connector decides plain or TLS.
        let uri = format!("http://{}{path_and_query}", self.address);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))?;
        *request.headers_mut() = headers;
        let host = HeaderValue::from_str(&self.address).map_err(::http::Error::from)?;
        request.headers_mut().insert(header::HOST, host);
        let exchange = self.pools.client().request(request);
        tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| UpstreamHttpError::Timeout(self.address.clone()))?
            .map_err(|e| UpstreamHttpError::Exchange {
                address: self.address.clone(),
                detail: with_causes(&e),
            })
    }
}

/// An error and its causes, outermost first (hyper's own message is terse).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
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
