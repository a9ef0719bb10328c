//! Shared by the cluster tests that use certificates and the HTTP front: a policy with a
//! writer role for an API key and for a client certificate's identity, a replica's config
//! around one real redis-server, and small NSQ and HTTPS clients that present the
//! certificate, a bearer key, or hold a request open.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::nsqclient::{frame_text, tls_connector, RawClient};
use crate::common::redis::Redis;
use crate::common::{nsqgate, Gate, GateConfig, Nsqd, Pki};
use nsqgate::certs::ClientSubject;

pub const SENSOR: &str = "spiffe://nsqgate.test/sensor";

/// A writer role for an API key (`ingest`) and for the sensor's certificate identity; the
/// API key.
pub fn write_policy(pki: &Pki) -> String {
    let key = nsqgate::auth::apikey::generate();
    let sha = Sha256::digest(key.as_bytes());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    pki.write_policy(
        "policy",
        "main.toml",
        &format!(
            "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"cc.*\"] }}]\n\
             [identities]\n\"{SENSOR}\" = [\"writer\"]\n\
             [api_keys.ingest]\nsha256 = \"{hex}\"\nroles = [\"writer\"]\n"
        ),
    );
    pki.issue_client(
        "sensor",
        &ClientSubject {
            common_name: "sensor".into(),
            uris: vec![SENSOR.into()],
            dns_names: vec![],
        },
    );
    key
}

/// Certificates optional, identity required, the policy above, `connections` (the body of
/// a `[connections]` table, if any), and `[cluster]` on `redis`.
pub fn replica_config(nsqd: &Nsqd, redis_url: &str, connections: Option<&str>) -> GateConfig {
    replica_config_with(nsqd, redis_url, connections, "")
}

/// [`replica_config`] with more `[cluster]` lines (`cluster`, e.g. `on_unavailable = ...`).
pub fn replica_config_with(
    nsqd: &Nsqd,
    redis_url: &str,
    connections: Option<&str>,
    cluster: &str,
) -> GateConfig {
    let config = GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"optional\"")
        .auth("require_identity = true")
        .policy("policy")
        .auth("revocation_grace_ms = 100");
    let config = match connections {
        Some(lines) => config.table(&format!("[connections]\n{lines}")),
        None => config,
    };
    config.table(&format!(
        "[cluster]\nredis_url = \"{redis_url}\"\ntimeout_ms = 500\n{cluster}"
    ))
}

/// Two replicas of `config`, each past its first answer from Redis: until then a replica in
/// `local` mode takes no shared slots (Redis counts as unavailable), so a test that counts
/// them must not start earlier.
pub fn two_replicas(config: &GateConfig, pki: &Pki) -> [Gate; 2] {
    let replicas = [config.start(pki), config.start(pki)];
    for gate in &replicas {
        gate.wait_log(&["Redis reachable: shared limits in force"]);
    }
    replicas
}

pub fn sensor_cert(pki: &Pki) -> (PathBuf, PathBuf) {
    (pki.path("sensor.pem"), pki.path("sensor.key"))
}

/// An NSQ connection with the sensor's certificate (no AUTH) that published once; or what
/// it was told instead of OK.
pub async fn certificate_client(gate: &Gate, pki: &Pki) -> Result<RawClient, String> {
    let (cert, key) = sensor_cert(pki);
    let connector = tls_connector(&pki.path("ca.pem"), Some((&cert, &key)));
    let (mut client, reply) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let _ = reply; // auth_required: the certificate is only seen after this reply
    match client.publish("cc.tcp", b"m").await {
        Some(frame) if frame_text(&frame) == "OK" => Ok(client),
        Some(frame) => Err(frame_text(&frame)),
        None => Err("closed without a reply".into()),
    }
}

/// A client TLS config trusting the test CA, with the sensor's certificate or none.
pub fn client_tls(pki: &Pki, cert: bool) -> Arc<rustls::ClientConfig> {
    let roots = crate::common::nsqclient::ca_roots(&pki.path("ca.pem"));
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if cert {
        let (cert, key) = sensor_cert(pki);
        builder
            .with_client_auth_cert(load_chain(&cert), load_key(&key))
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// An HTTP/1.1 connection to `addr` over TLS, with the sensor's certificate or none.
pub async fn https(
    addr: SocketAddr,
    pki: &Pki,
    cert: bool,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(client_tls(pki, cert))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn load_chain(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    nsqgate::tls::load_certs(path).unwrap()
}

fn load_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).unwrap()
}

/// POST /pub?topic=TOPIC on a new connection (the front answers one request per
/// connection), with a bearer key or the sensor's certificate; the status and body.
pub async fn publish_answer(
    pki: &Pki,
    addr: SocketAddr,
    topic: &str,
    bearer: Option<&str>,
) -> (StatusCode, String) {
    let mut sender = https(addr, pki, bearer.is_none()).await;
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("/pub?topic={topic}"))
        .header("host", addr.to_string());
    if let Some(key) = bearer {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request.body(Full::new(Bytes::from_static(b"m"))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// [`publish_answer`]'s status.
pub async fn publish(pki: &Pki, addr: SocketAddr, topic: &str, bearer: Option<&str>) -> StatusCode {
    publish_answer(pki, addr, topic, bearer).await.0
}

pub fn revoke(redis: &Redis, target: &[&str]) {
    let url = redis.url();
    let mut args = vec!["revoke", "--for", "5m", "--redis-url", url.as_str()];
    args.extend_from_slice(target);
    let (code, out, err) = nsqgate(&args);
    assert_eq!(code, 0, "{out}{err}");
}

/// A `/pub` whose body never finishes: the request is authenticated (and holds its slots)
/// while nsqgate waits for the rest.
pub async fn held_request(
    pki: &Pki,
    addr: SocketAddr,
    key: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = TlsConnector::from(client_tls(pki, false))
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /pub?topic=cc.held HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 10\r\n\r\nm"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}
