//! Certificate identities and the HTTP front across replicas sharing one real redis-server:
//! a client certificate's identity (no AUTH) takes a slot in the per-identity cap over every
//! replica, and the nsqd HTTPS front checks every request against the cluster's revocations:
//! a revoked API key (bearer) and a revoked certificate identity get 401 on `/pub` at every
//! replica; an HTTP request holds a slot in its identity's shared cap while it runs. Real
//! redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::redis::Redis;
use common::{nsqgate, Gate, GateConfig, Nsqd, Pki};
use nsqgate::certs::ClientSubject;

const SENSOR: &str = "spiffe://nsqgate.test/sensor";
const CAP: usize = 2;
const NOTICE: Duration = Duration::from_secs(10);

/// A writer role for an API key and for the sensor's certificate identity; the API key.
fn write_policy(pki: &Pki) -> String {
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

fn replica_config(nsqd: &Nsqd, redis: &Redis) -> GateConfig {
    GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"optional\"")
        .auth("require_identity = true")
        .policy("policy")
        .auth("revocation_grace_ms = 100")
        .table(&format!("[connections]\nmax_per_identity = {CAP}"))
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntimeout_ms = 500",
            redis.url()
        ))
}

fn sensor_cert(pki: &Pki) -> (std::path::PathBuf, std::path::PathBuf) {
    (pki.path("sensor.pem"), pki.path("sensor.key"))
}

/// An NSQ connection with the sensor's certificate (no AUTH) that published once; or what
/// it was told instead of OK.
async fn certificate_client(gate: &Gate, pki: &Pki) -> Result<RawClient, String> {
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

#[tokio::test]
async fn a_certificate_identity_takes_a_shared_slot_in_its_cap() {
    let redis = Redis::start();
    let pki = Pki::new();
    write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&nsqd, &redis);
    let replicas = [config.start(&pki), config.start(&pki)];

    // One on each replica: the shared cap of 2 is reached, though each holds 1 of a local 2.
    let mut held = Vec::new();
    for gate in &replicas {
        held.push(certificate_client(gate, &pki).await.expect("under the cap"));
    }
    for gate in &replicas {
        let refused = certificate_client(gate, &pki)
            .await
            .err()
            .expect("over the shared cap");
        assert!(
            refused.contains("too many connections for this identity (all replicas)"),
            "{refused}"
        );
    }
    // A closed one gives its slot back to the other replica.
    drop(held.pop());
    let deadline = Instant::now() + NOTICE;
    while let Err(text) = certificate_client(&replicas[0], &pki).await {
        assert!(Instant::now() < deadline, "slot not given back: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP/1.1 connection to `addr` over TLS, with the sensor's certificate or none.
async fn https(
    addr: SocketAddr,
    pki: &Pki,
    cert: bool,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in nsqgate::tls::load_certs(&pki.path("ca.pem")).unwrap() {
        roots.add(ca).unwrap();
    }
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
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
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
/// connection), with a bearer key or the sensor's certificate; the status.
async fn publish(pki: &Pki, addr: SocketAddr, topic: &str, bearer: Option<&str>) -> StatusCode {
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
    let _ = response.into_body().collect().await;
    status
}

fn revoke(redis: &Redis, target: &[&str]) {
    let url = redis.url();
    let mut args = vec!["revoke", "--for", "5m", "--redis-url", url.as_str()];
    args.extend_from_slice(target);
    let (code, out, err) = nsqgate(&args);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn the_http_front_refuses_revoked_keys_and_certificates_at_every_replica() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&nsqd, &redis).http_nsqd(nsqd.https);
    let replicas = [config.start(&pki), config.start(&pki)];
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    for &front in &fronts {
        assert_eq!(publish(&pki, front, "cc.key", Some(&key)).await, 200);
        assert_eq!(publish(&pki, front, "cc.cert", None).await, 200);
    }
    assert_eq!(nsqd.message_count("cc.key"), 2);
    assert_eq!(nsqd.message_count("cc.cert"), 2);

    revoke(&redis, &["--api-key-name", "ingest"]);
    revoke(&redis, &["--identity", SENSOR]);
    let revoked_at = Instant::now();
    for &front in &fronts {
        for bearer in [Some(key.as_str()), None] {
            loop {
                let status = publish(&pki, front, "cc.after", bearer).await;
                if status == StatusCode::UNAUTHORIZED {
                    break;
                }
                assert_eq!(status, 200);
                assert!(revoked_at.elapsed() < NOTICE, "still served after revoke");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!(
        "HTTP /pub refused at both replicas {:?} after the revocations",
        revoked_at.elapsed()
    );
}

/// A `/pub` whose body never finishes: the request is authenticated (and holds its slots)
/// while nsqgate waits for the rest.
async fn held_request(
    pki: &Pki,
    addr: SocketAddr,
    key: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut roots = rustls::RootCertStore::empty();
    for ca in nsqgate::tls::load_certs(&pki.path("ca.pem")).unwrap() {
        roots.add(ca).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
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

#[tokio::test]
async fn http_requests_count_against_the_shared_identity_cap() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&nsqd, &redis).http_nsqd(nsqd.https);
    let replicas = [config.start(&pki), config.start(&pki)];
    let fronts: Vec<SocketAddr> = replicas.iter().map(|g| g.http("nsqd")).collect();

    // One unfinished request per replica holds the identity's two shared slots; each replica
    // alone holds 1 of its local 2, so only the shared count can refuse the next one.
    let mut held = vec![
        held_request(&pki, fronts[0], &key).await,
        held_request(&pki, fronts[1], &key).await,
    ];
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = publish(&pki, fronts[0], "cc.more", Some(&key)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the shared cap never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Closing one gives its slot back.
    drop(held.pop());
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = publish(&pki, fronts[0], "cc.more", Some(&key)).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "slot not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
