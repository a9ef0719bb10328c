//! `[cluster]` over TLS: a real redis-server listening for `rediss://` and requiring a client
//! certificate. Two replicas with `tls_ca`, `tls_cert` and `tls_key` share a revocation made
//! by `nsqgate revoke --config`; a redis-server whose certificate comes from another CA is
//! refused (counted, `/readyz` not ready, a new client refused in closed mode, and `revoke`
//! fails without writing); `check-config` loads the TLS files and names a bad one. Real
//! redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::redis::{Redis, RedisTls};
use common::wire::FrameType;
use common::{nsqgate, write_secret, GateConfig, Nsqd, Pki};
use nsqgate::certs::{ClientSubject, DevCa};

/// A generous deadline for a loaded machine.
const NOTICE: Duration = Duration::from_secs(10);

fn metrics(admin: SocketAddr) -> Exposition {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

fn redis_up(admin: SocketAddr) -> f64 {
    metrics(admin).sum("nsqgate_cluster_redis_up", &[])
}

fn readyz(admin: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = get(admin, "/readyz");
    (status, serde_json::from_str(&body).expect("/readyz JSON"))
}

/// A policy with one publishing API key; the key.
fn write_policy(pki: &Pki) -> String {
    pki.write_publisher_policy("tls.*", "ingest")
}

/// nsqgate's certificate for Redis (its CA is the test PKI's, which Redis trusts).
fn client_certificate(pki: &Pki) {
    let subject = ClientSubject {
        common_name: "nsqgate-replica".into(),
        ..ClientSubject::default()
    };
    pki.issue_client("redis-client", &subject);
}

/// A redis-server whose certificate `server_ca` signed, asking for client certificates from
/// the test PKI's CA.
fn tls_redis(pki: &Pki, server_ca: &DevCa) -> Redis {
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let pem = server_ca.issue_server("redis", &hosts).expect("redis cert");
    pki.write("redis", &pem);
    Redis::start_tls(&RedisTls {
        cert: &pki.path("redis.pem"),
        key: &pki.path("redis.key"),
        client_ca: &pki.path("ca.pem"),
    })
}

/// A replica's config: Redis over TLS with the test PKI's CA and the client certificate;
/// closed mode, so a Redis it cannot trust stops publishes that need a budget.
fn replica_config(pki: &Pki, nsqd: &Nsqd, redis: &Redis) -> GateConfig {
    GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .auth("revocation_grace_ms = 100")
        .table("[rate_limits]\nidentity = { messages_per_sec = 1000, burst_messages = 1000 }")
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             timeout_ms = 500\non_unavailable = \"closed\"",
            redis.tls_url(),
            pki.path("ca.pem").display(),
            pki.path("redis-client.pem").display(),
            pki.path("redis-client.key").display(),
        ))
}

/// Sends the NSQ magic and reads: true if nsqgate closes the connection before any reply
/// (a served client would be waiting for IDENTIFY, and the read would time out).
fn closed_at_once(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"  V2").expect("magic");
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

async fn publish(gate_addr: SocketAddr, ca: &Path, key: &str) -> RawClient {
    RawClient::authenticated(gate_addr, &tls_connector(ca, None), key).await
}

fn reply_text(frame: Option<common::wire::Frame>) -> String {
    let frame = frame.expect("a reply");
    let text = frame_text(&frame);
    match frame.frame_type {
        FrameType::Response => text,
        _ => format!("error: {text}"),
    }
}

#[tokio::test]
async fn replicas_share_a_revocation_over_rediss_with_a_client_certificate() {
    let pki = Pki::new();
    client_certificate(&pki);
    let redis = tls_redis(&pki, &pki.ca);
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&pki, &nsqd, &redis);
    let replicas = [config.start(&pki), config.start(&pki)];
    for replica in &replicas {
        let deadline = Instant::now() + NOTICE;
        while redis_up(replica.admin()) != 1.0 {
            assert!(Instant::now() < deadline, "Redis over TLS not reached");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(readyz(replica.admin()).0, 200);
    }
    // Redis saw TLS clients with certificates: the plain socket is the harness's alone.
    let clients = redis.command("CLIENT LIST");
    assert!(clients.contains("laddr=127.0.0.1:"), "{clients}");

    let ca = pki.path("ca.pem");
    let mut publisher = publish(replicas[1].addr, &ca, &key).await;
    assert_eq!(
        reply_text(publisher.publish("tls.orders", b"a").await),
        "OK"
    );

    let config_path = pki.path("replica.toml");
    config.write(&config_path);
    let (code, out, err) = nsqgate(&[
        "revoke",
        "--api-key-name",
        "ingest",
        "--for",
        "5m",
        "--config",
        config_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // The publisher on replica 2 is cut, and replica 1 refuses a new AUTH with the key.
    let cut = publisher.read_frame_within(NOTICE).await;
    assert!(
        reply_text(cut).contains("E_UNAUTHORIZED"),
        "the revoked publisher was not cut"
    );
    let deadline = Instant::now() + NOTICE;
    loop {
        let connector = tls_connector(&ca, None);
        let (mut client, _) =
            RawClient::upgraded(replicas[0].addr, &connector, serde_json::json!({})).await;
        let reply = frame_text(&client.auth(&key).await.expect("AUTH reply"));
        if reply.contains("E_UNAUTHORIZED") || reply.contains("E_AUTH_FAILED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 1 still accepts: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nsqd.message_count("tls.orders"), 1);
}

#[tokio::test]
async fn a_redis_whose_certificate_another_ca_signed_is_refused() {
    let pki = Pki::new();
    client_certificate(&pki);
    let stranger = DevCa::generate("another CA").expect("CA");
    let redis = tls_redis(&pki, &stranger);
    write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let config = replica_config(&pki, &nsqd, &redis);
    let gate = config.start(&pki);
    let admin = gate.admin();

    // Not ready, and why: the certificate (not a Redis that is down: it answers on its socket).
    let deadline = Instant::now() + NOTICE;
    let body = loop {
        let (status, body) = readyz(admin);
        assert_eq!(status, 503, "{body}");
        let why = body["not_ready"]["redis"].as_str().unwrap_or_default();
        if why.contains("certificate") {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("/readyz: {body}");
    assert!(redis.command("PING").starts_with("+PONG"));
    let now = metrics(admin);
    assert_eq!(now.sum("nsqgate_cluster_redis_up", &[]), 0.0);
    assert!(now.sum("nsqgate_cluster_redis_errors_total", &[]) > 0.0);

    // Closed mode: a new connection needs a shared per-IP slot, so it is refused at accept.
    assert!(
        closed_at_once(gate.addr),
        "a client was served without Redis"
    );

    // `revoke` with the same files fails, and wrote nothing.
    let config_path = pki.path("replica.toml");
    config.write(&config_path);
    let (code, out, err) = nsqgate(&[
        "revoke",
        "--identity",
        "anyone",
        "--config",
        config_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(redis.command("ZCARD nsqgate:revocations").trim(), ":0");
}

/// check-config on `cluster` (a `[cluster]` body) beside an otherwise valid config.
fn check_cluster(pki: &Pki, cluster: &str) -> (i32, String) {
    let config = GateConfig::anonymous("127.0.0.1:1".parse().unwrap())
        .table(&format!("[cluster]\n{cluster}"));
    let path = pki.path("check.toml");
    config.write(&path);
    let (code, out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn check_config_loads_the_redis_tls_files() {
    let pki = Pki::new();
    client_certificate(&pki);
    let ca = pki.path("ca.pem").display().to_string();
    let cert = pki.path("redis-client.pem").display().to_string();
    let key = pki.path("redis-client.key").display().to_string();
    let url = "redis_url = \"rediss://127.0.0.1:6380\"";

    let good = format!("{url}\ntls_ca = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"");
    let (code, text) = check_cluster(&pki, &good);
    assert_eq!(code, 0, "{text}");

    // A certificate where the key belongs: named, and the key file is read (not only found).
    let not_a_key = pki.path("not-a-key.key");
    write_secret(
        &not_a_key,
        &std::fs::read(pki.path("redis-client.pem")).unwrap(),
    );
    let swapped = format!(
        "{url}\ntls_ca = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{}\"",
        not_a_key.display()
    );
    let (code, text) = check_cluster(&pki, &swapped);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("cluster.tls_key"), "{text}");
    assert!(text.contains("private key"), "{text}");

    // A CA file with no certificate in it.
    let empty = pki.path("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let hollow = format!("{url}\ntls_ca = \"{}\"", empty.display());
    let (code, text) = check_cluster(&pki, &hollow);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("cluster.tls_ca"), "{text}");

    // TLS files with a plain URL, half a client pair, and `#insecure` are refused.
    for (cluster, named, words) in [
        (
            format!("redis_url = \"redis://127.0.0.1:6379\"\ntls_ca = \"{ca}\""),
            "cluster.tls_ca",
            "rediss://",
        ),
        (
            format!("{url}\ntls_cert = \"{cert}\""),
            "cluster.tls_key",
            "required with tls_cert",
        ),
        (
            "redis_url = \"rediss://127.0.0.1:6380/#insecure\"".to_owned(),
            "cluster.redis_url",
            "#insecure",
        ),
    ] {
        let (code, text) = check_cluster(&pki, &cluster);
        assert_ne!(code, 0, "{cluster}: {text}");
        assert!(text.contains(named) && text.contains(words), "{text}");
    }
}
