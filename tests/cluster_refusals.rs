//! What a refused client is told, and what the log says, when a connection cap refuses it:
//! a client that never sent AUTH (a certificate's identity) is not told its AUTH failed, and
//! while Redis is away in `on_unavailable = "closed"` mode no one is told (or logged as)
//! having too many connections: the shared state is unavailable, and the metrics and
//! `/readyz` say so. Real redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use cluster_support::write_policy;
use cluster_support::{certificate_client, client_tls, publish_answer, replica_config_with};
use common::nsqclient::{tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::redis::Redis;
use common::{Gate, GateConfig, Nsqd, Pki};

const UNAVAILABLE: &str =
    "shared state unavailable (Redis): the connection caps over every replica cannot be checked";

#[tokio::test]
async fn a_certificate_client_over_the_local_identity_cap_is_told_without_auth_words() {
    let pki = Pki::new();
    write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"optional\"")
        .auth("require_identity = true")
        .policy("policy")
        .table("[connections]\nmax_per_identity = 1")
        .start(&pki);
    let _held = certificate_client(&gate, &pki)
        .await
        .expect("under the cap");
    let refused = certificate_client(&gate, &pki)
        .await
        .err()
        .expect("over it");
    assert_eq!(
        refused,
        "E_IDENTIFY_FAILED nsqgate refused: too many connections for this identity"
    );
}

fn readyz_status(admin: SocketAddr) -> u16 {
    get(admin, "/readyz").0
}

fn wait_readyz(gate: &Gate, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz_status(gate.admin()) != status {
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(gate: &Gate) -> Exposition {
    let (status, body) = get(gate.admin(), "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

/// A TLS connection to an HTTPS front, or why it failed (closed at once when refused).
async fn tls_to(pki: &Pki, addr: SocketAddr) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(pki, false));
    match connector.connect(name, tcp).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn in_closed_mode_without_redis_refusals_say_the_shared_state_is_unavailable() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let closed = "on_unavailable = \"closed\"";
    let start = |connections: &str| {
        replica_config_with(&nsqd, &redis.url(), Some(connections), closed)
            .table("[admin]\nlisten = \"127.0.0.1:0\"")
            .http_nsqd(nsqd.https)
            .start(&pki)
    };
    // One replica caps each address, the other each identity only (an address cap, 1024 by
    // default, would refuse every connection before its identity is known).
    let by_ip = start("max_per_ip = 50");
    let by_identity = start("max_per_identity = 50\nmax_per_ip = 0");
    for gate in [&by_ip, &by_identity] {
        wait_readyz(gate, 200);
    }
    redis.kill();
    for gate in [&by_ip, &by_identity] {
        wait_readyz(gate, 503);
    }

    // Per address, NSQ: closed at once (before any handshake), and the log says why.
    let mut client = RawClient::plain(by_ip.addr).await;
    assert!(client.closed_within(Duration::from_secs(5)).await);
    let line = by_ip.wait_log(&["connection refused: ", UNAVAILABLE]);
    assert!(
        line.contains("limit") && line.contains("configuration"),
        "{line}"
    );
    // Per address, HTTP: closed at once too.
    let front = by_ip.http("nsqd");
    tls_to(&pki, front).await.expect_err("refused");
    by_ip.wait_log(&["HTTP connection refused: ", UNAVAILABLE]);
    assert!(
        !by_ip.log().contains("too many connections"),
        "nothing went over a cap:\n{}",
        by_ip.log()
    );
    // Counted as decided without Redis, not as a cap's refusal.
    let seen = metrics(&by_ip);
    assert!(seen.sum("nsqgate_cluster_unavailable_total", &[("mode", "closed")]) >= 2.0);
    assert_eq!(seen.sum("nsqgate_connections_refused_total", &[]), 0.0);

    // Per identity: an AUTH, a certificate (no AUTH) and an HTTP request.
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let auth = RawClient::try_authenticated(by_identity.addr, &connector, &key).await;
    assert_eq!(
        auth.err().unwrap(),
        format!("E_AUTH_FAILED AUTH failed: {UNAVAILABLE}")
    );
    let certificate = certificate_client(&by_identity, &pki).await;
    assert_eq!(
        certificate.err().unwrap(),
        format!("E_IDENTIFY_FAILED nsqgate refused: {UNAVAILABLE}")
    );
    let front = by_identity.http("nsqd");
    let (status, body) = publish_answer(&pki, front, "cc.http", Some(&key)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, "{\"message\":\"SHARED_STATE_UNAVAILABLE\"}");
    let event = by_identity.wait_audit("the HTTP refusal", |e| {
        e["action"] == "connect" && e["outcome"] == "deny"
    });
    assert_eq!(event["reason"], UNAVAILABLE, "{event}");
    assert!(!by_identity.log().contains("too many connections"));
    let seen = metrics(&by_identity);
    assert_eq!(seen.sum("nsqgate_connections_refused_total", &[]), 0.0);
}

#[tokio::test]
async fn in_closed_mode_without_redis_a_publish_is_told_its_quota_is_unchecked_not_exceeded() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let key = write_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    // No connection caps (they too would need Redis): only the shared rate quota does.
    let gate = replica_config_with(
        &nsqd,
        &redis.url(),
        Some("max_per_ip = 0\nmax_per_identity = 0"),
        "on_unavailable = \"closed\"",
    )
    .table("[rate_limits]\nidentity = { messages_per_sec = 1000, burst_messages = 1000 }")
    .table("[admin]\nlisten = \"127.0.0.1:0\"")
    .http_nsqd(nsqd.https)
    .start(&pki);
    wait_readyz(&gate, 200);
    let front = gate.http("nsqd");
    let (status, body) = publish_answer(&pki, front, "cc.quota", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    redis.kill();
    // A replica's lease of the quota lasts a second at most; then a publish needs Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = publish_answer(&pki, front, "cc.quota", Some(&key)).await;
        if status != StatusCode::OK {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "still published without Redis");
    };
    let unchecked = "shared state unavailable (Redis): the identity quota over every replica \
                     cannot be checked";
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "SHARED_STATE_UNAVAILABLE", "{body}");
    assert_eq!(body["detail"], unchecked, "{body}");
    let event = gate.wait_audit("the publish refusal", |e| {
        e["action"] == "publish" && e["outcome"] == "deny"
    });
    assert_eq!(event["reason"], unchecked, "{event}");
    // Not counted as rate limited: the caller may well be under its quota.
    let seen = metrics(&gate);
    assert_eq!(seen.sum("nsqgate_rate_limit_refusals_total", &[]), 0.0);
    assert!(seen.sum("nsqgate_cluster_unavailable_total", &[("mode", "closed")]) >= 1.0);
}
