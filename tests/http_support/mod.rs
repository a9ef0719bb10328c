//! Shared by the HTTP front tests: a policy with a writer and an operator key, an nsqgate with
//! an nsqd HTTPS front in front of a real nsqd, and a small HTTPS client (hyper over rustls)
//! that writes its own requests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{Gate, Nsqd, Pki};

pub const WRITER_KEY: &str = "nsqk_http_test_writer_key_000000000000000000000000";
pub const OPS_KEY: &str = "nsqk_http_test_ops_key_00000000000000000000000000000";
pub const ORDERS_ADMIN_KEY: &str = "nsqk_http_test_orders_admin_key_00000000000000000000";

/// `writer` may publish to `orders` and subscribe to its channels; `orders_admin` administers
/// `orders`; `ops` is an admin on every topic.
pub fn policy() -> String {
    format!(
        r#"
[roles.writer]
allow = [
  {{ action = "publish", topics = ["orders"] }},
  {{ action = "subscribe", topics = ["orders"], channels = ["*"] }},
]

[roles.ops]
allow = [
  {{ action = "admin", topics = ["**", "**#ephemeral"] }},
  {{ action = "publish", topics = ["**", "**#ephemeral"] }},
  {{ action = "subscribe", topics = ["**", "**#ephemeral"], channels = ["**", "**#ephemeral"] }},
]

[roles.orders_admin]
allow = [
  {{ action = "admin", topics = ["orders"] }},
  {{ action = "subscribe", topics = ["orders"], channels = ["*"] }},
]

[api_keys.orders_admin]
sha256 = "{}"
roles = ["orders_admin"]

[api_keys.writer]
sha256 = "{}"
roles = ["writer"]

[api_keys.ops]
sha256 = "{}"
roles = ["ops"]
"#,
        crate::common::key_sha256(ORDERS_ADMIN_KEY.as_bytes()),
        crate::common::key_sha256(WRITER_KEY.as_bytes()),
        crate::common::key_sha256(OPS_KEY.as_bytes()),
    )
}

/// nsqgate with an nsqd HTTPS front (and its plain TLS_REQUIRED listener), plus `extra`.
pub struct Setup {
    pub pki: Pki,
    pub nsqd: Nsqd,
    pub gate: Gate,
    pub https: SocketAddr,
    pub plain: SocketAddr,
}

pub fn start(extra_nsqd_args: &[&str], extra_config: &str) -> Setup {
    let pki = Pki::new();
    pki.write_policy("http-policy", "http.toml", &policy());
    let nsqd = Nsqd::start_with(&pki, "nsqd", extra_nsqd_args);
    let config = format!(
        r#"
[auth]
require_identity = true
policy_dir = "http-policy"

[http.nsqd]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
upstream = "{upstream}"
{extra_config}
"#,
        upstream = nsqd.https,
    );
    let gate = Gate::start_with(&pki, &nsqd, "127.0.0.1", "ca.pem", &config);
    let (https, plain) = (gate.http("nsqd"), gate.http("nsqd-plain"));
    Setup {
        pki,
        nsqd,
        gate,
        https,
        plain,
    }
}

// === a small HTTPS client ===

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connector(pki: &Pki) -> TlsConnector {
    let roots = crate::common::nsqclient::ca_roots(&pki.path("ca.pem"));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_stream(pki: &Pki, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector(pki).connect(name, tcp).await.unwrap()
}

/// One HTTPS request; `key` goes in `Authorization: Bearer`.
pub async fn request(
    pki: &Pki,
    addr: SocketAddr,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut headers = Vec::new();
    if let Some(key) = key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    request_with(pki, addr, method, path, &headers, body).await
}

pub async fn request_with(
    pki: &Pki,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Reply {
    let tls = tls_stream(pki, addr).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Raw bytes over TLS, for what a well-behaved client library would never send.
pub async fn raw_request(pki: &Pki, addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tls = tls_stream(pki, addr).await;
    // nsqgate may answer (and stop reading) before the whole request is sent.
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn assert_v1(reply: &Reply) {
    assert_eq!(
        reply
            .headers
            .get("x-nsq-content-type")
            .map(|v| v.to_str().unwrap()),
        Some("nsq; version=1.0"),
        "X-NSQ-Content-Type kept on {}",
        reply.status
    );
}
