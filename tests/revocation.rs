//! Live connections lose what a reload takes away: a deleted API key, a key's changed roles, a
//! certificate a reloaded CRL revokes, and a publish held by a rate-limit delay while its key is
//! deleted. Real nsqd and the real nsqgate binary; raw clients write their own bytes; nsqd's
//! /stats and nsqgate's audit lines show what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, Frame, FrameType};
use common::{api_key_entry, Gate, GateConfig, Nsqd, Pki};

/// Long enough for a loaded machine, short against the grace (500 ms) + reload (200 ms) bound.
const NOTICE: Duration = Duration::from_secs(15);

const ROLES: &str = r#"
[roles.worker]
allow = [
  { action = "publish", topics = ["orders.*"] },
  { action = "subscribe", topics = ["orders.*"], channels = ["*"] },
]

[roles.reader]
allow = [{ action = "subscribe", topics = ["orders.*"], channels = ["*"] }]
"#;

fn policy_with_key(key: &str, roles: &[&str]) -> String {
    format!("{ROLES}\n{}", api_key_entry("ingest", key, roles))
}

/// Keys and identities from the `policy` folder, re-read every 200 ms; a revoked subscriber
/// gets 500 ms of grace.
fn gate_config(nsqd: &Nsqd) -> GateConfig {
    GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .auth("policy_reload_ms = 200\nrevocation_grace_ms = 500")
}

async fn authed(gate: &Gate, ca: &Path, key: &str) -> RawClient {
    let connector = tls_connector(ca, None);
    RawClient::authenticated(gate.addr, &connector, key).await
}

async fn subscribed(client: &mut RawClient, topic: &str, channel: &str) {
    let reply = client.sub(topic, channel).await.expect("SUB reply");
    assert_eq!(frame_text(&reply), "OK");
    client.send(&Command::Rdy { count: 10 }).await;
}

fn is_ok(frame: &Option<Frame>) -> bool {
    frame
        .as_ref()
        .is_some_and(|f| f.frame_type == FrameType::Response && &f.data[..] == b"OK")
}

/// Reads past messages (finishing them) until a non-message frame or the end; that frame.
async fn next_non_message(client: &mut RawClient, limit: Duration) -> Option<Frame> {
    let started = Instant::now();
    loop {
        let frame = client
            .read_frame_within(limit.saturating_sub(started.elapsed()))
            .await?;
        if frame.frame_type != FrameType::Message {
            return Some(frame);
        }
        let message = frame.message().expect("a message frame");
        client.send(&Command::Fin { id: message.id }).await;
    }
}

#[track_caller]
fn assert_unauthorized(frame: Option<Frame>, what: &str) -> String {
    let frame = frame.unwrap_or_else(|| panic!("{what}: closed without a word"));
    let text = frame_text(&frame);
    assert_eq!(frame.frame_type, FrameType::Error, "{what}: {text}");
    assert!(text.starts_with("E_UNAUTHORIZED"), "{what}: {text}");
    text
}

/// The audit events matching `pred`, waiting up to 5 s for at least `want` of them.
fn audit_events(gate: &Gate, want: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events: Vec<Value> = gate.audit_events().into_iter().filter(&pred).collect();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_deleted_api_key_ends_its_publishers_and_its_subscriber() {
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy("policy", "main.toml", &policy_with_key(&key, &["worker"]));
    let nsqd = Nsqd::start(&pki);
    let gate = gate_config(&nsqd).start(&pki);
    let ca = pki.path("ca.pem");

    let mut busy = authed(&gate, &ca, &key).await;
    let mut idle = authed(&gate, &ca, &key).await;
    let mut consumer = authed(&gate, &ca, &key).await;
    subscribed(&mut consumer, "orders.rev", "billing").await;
    assert!(is_ok(&busy.publish("orders.rev", b"before").await));
    assert!(is_ok(&idle.publish("orders.rev", b"before").await));
    let first = consumer.read_frame().await.expect("a message");
    assert_eq!(
        first.frame_type,
        FrameType::Message,
        "{}",
        frame_text(&first)
    );

    // The key is deleted: only the roles stay.
    pki.write_policy("policy", "main.toml", ROLES);

    // The busy publisher keeps publishing; its first refusal is E_UNAUTHORIZED, and every OK it
    // got is a message in nsqd.
    let started = Instant::now();
    let mut oks = 2;
    let refusal = loop {
        let reply = busy.publish("orders.rev", b"after").await;
        if !is_ok(&reply) {
            break reply;
        }
        oks += 1;
        assert!(started.elapsed() < NOTICE, "PUB still OK after {NOTICE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_unauthorized(refusal, "the busy publisher's next PUB");
    assert!(busy.closed_within(Duration::from_secs(5)).await);

    // The idle publisher and the subscriber are told without sending anything.
    let text = assert_unauthorized(next_non_message(&mut idle, NOTICE).await, "idle publisher");
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    assert!(idle.closed_within(Duration::from_secs(5)).await);
    let text = assert_unauthorized(next_non_message(&mut consumer, NOTICE).await, "consumer");
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    assert!(consumer.closed_within(Duration::from_secs(5)).await);
    assert_eq!(nsqd.message_count("orders.rev"), oks);

    // Counted once per connection, in the audit log.
    let revokes = audit_events(&gate, 3, |e| {
        e["action"] == "revoke" && e["reason"] == "API key no longer in the policy"
    });
    assert_eq!(revokes.len(), 3, "{revokes:?}");
    assert!(
        revokes.iter().all(|e| e["identity"] == "ingest"),
        "{revokes:?}"
    );

    // And the key opens nothing new.
    let connector = tls_connector(&ca, None);
    let (mut again, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let reply = again.auth(&key).await.expect("AUTH reply");
    assert_eq!(frame_text(&reply), "E_AUTH_FAILED AUTH failed");
}

#[tokio::test]
async fn a_key_whose_roles_change_is_judged_by_its_new_roles() {
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy("policy", "main.toml", &policy_with_key(&key, &["worker"]));
    let nsqd = Nsqd::start(&pki);
    let gate = gate_config(&nsqd).start(&pki);
    let ca = pki.path("ca.pem");

    let mut publisher = authed(&gate, &ca, &key).await;
    assert!(is_ok(&publisher.publish("orders.roles", b"one").await));
    // The same key, now a reader only: it still stands, but may not publish.
    pki.write_policy("policy", "main.toml", &policy_with_key(&key, &["reader"]));
    let started = Instant::now();
    let mut oks = 1;
    let refusal = loop {
        let reply = publisher.publish("orders.roles", b"more").await;
        if !is_ok(&reply) {
            break reply;
        }
        oks += 1;
        assert!(started.elapsed() < NOTICE, "PUB still OK after {NOTICE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = assert_unauthorized(refusal, "PUB after the role change");
    assert!(text.contains("PUB"), "{text}");
    assert_eq!(nsqd.message_count("orders.roles"), oks);
    let denied = audit_events(&gate, 1, |e| {
        e["action"] == "publish" && e["outcome"] == "deny" && e["identity"] == "ingest"
    });
    assert!(!denied.is_empty(), "no audited denial");
}

#[tokio::test]
async fn a_crl_reload_closes_connections_of_a_newly_revoked_certificate() {
    let pki = Pki::new();
    let issue = |name: &str| pki.issue_spiffe_client(name);
    issue("kept");
    let doomed = issue("doomed");
    std::fs::write(pki.path("clients.crl.pem"), pki.ca.crl(&[]).unwrap()).unwrap();
    pki.write_policy(
        "policy",
        "certs.toml",
        r#"
[roles.any]
allow = [
  { action = "publish", topics = ["**"] },
  { action = "subscribe", topics = ["**"], channels = ["*"] },
]
[identities]
"spiffe://nsqgate.test/kept" = ["any"]
"spiffe://nsqgate.test/doomed" = ["any"]
"#,
    );
    let nsqd = Nsqd::start(&pki);
    let gate = gate_config(&nsqd)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"required\"\ntls_client_crls = [\"clients.crl.pem\"]")
        .start(&pki);
    let connector_for = |name: &str| {
        tls_connector(
            &pki.path("ca.pem"),
            Some((
                &pki.path(&format!("{name}.pem")),
                &pki.path(&format!("{name}.key")),
            )),
        )
    };
    let kept_tls = connector_for("kept");
    let doomed_tls = connector_for("doomed");
    let mut kept = RawClient::tls_first(gate.addr, &kept_tls).await;
    let mut publisher = RawClient::tls_first(gate.addr, &doomed_tls).await;
    let mut consumer = RawClient::tls_first(gate.addr, &doomed_tls).await;
    subscribed(&mut consumer, "crl.topic", "c").await;
    assert!(is_ok(&kept.publish("crl.topic", b"kept").await));
    assert!(is_ok(&publisher.publish("crl.topic", b"doomed").await));

    // The CRL now names the doomed certificate; no policy file changes.
    std::fs::write(
        pki.path("clients.crl.pem"),
        pki.ca.crl(&[&doomed.serial]).unwrap(),
    )
    .unwrap();

    let text = assert_unauthorized(next_non_message(&mut consumer, NOTICE).await, "consumer");
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    assert!(consumer.closed_within(Duration::from_secs(5)).await);
    let text = assert_unauthorized(next_non_message(&mut publisher, NOTICE).await, "publisher");
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    let revokes = audit_events(&gate, 2, |e| {
        e["action"] == "revoke" && e["reason"] == "client certificate revoked"
    });
    assert_eq!(revokes.len(), 2, "{revokes:?}");
    assert!(revokes
        .iter()
        .all(|e| e["identity"] == "spiffe://nsqgate.test/doomed"));

    // The kept certificate is untouched; a new handshake with the doomed one gets nowhere.
    assert!(is_ok(&kept.publish("crl.topic", b"still here").await));
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    if let Ok(mut tls) = doomed_tls.connect(name, tcp).await {
        // TLS 1.3: the server's verdict may arrive after the client thinks it is done.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = tls.write_all(common::wire::MAGIC_V2).await;
        let _ = tls.write_all(b"PUB crl.topic\n\x00\x00\x00\x01x").await;
        let mut reply = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut reply)).await;
        assert!(
            !matches!(read, Ok(Ok(n)) if n > 0),
            "a revoked certificate was served"
        );
    }
    assert_eq!(nsqd.message_count("crl.topic"), 3);
}

/// A publish waiting for rate-limit tokens is judged again when it may go: a key deleted
/// during the wait gets it refused, and nothing reaches nsqd.
#[tokio::test]
async fn a_publish_delayed_by_the_rate_limit_is_refused_if_its_key_was_deleted_meanwhile() {
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy("policy", "main.toml", &policy_with_key(&key, &["worker"]));
    let nsqd = Nsqd::start(&pki);
    // 100 bytes of burst, refilled at 10 bytes/s: the second 100-byte PUB waits about 10 s.
    let gate = gate_config(&nsqd)
        .table("[rate_limits]\non_limit = \"delay\"\nmax_delay_ms = 60000\nidentity = { bytes_per_sec = 10, burst_bytes = 100 }")
        .start(&pki);
    let ca = pki.path("ca.pem");
    let mut publisher = authed(&gate, &ca, &key).await;
    let body = [b'x'; 100];
    assert!(is_ok(&publisher.publish("orders.delayed", &body).await));
    publisher
        .send(&Command::Pub {
            topic: "orders.delayed".into(),
            body: body.to_vec().into(),
        })
        .await;
    // Deleted while that PUB waits for tokens.
    pki.write_policy("policy", "main.toml", ROLES);
    let reply = publisher.read_frame_within(Duration::from_secs(60)).await;
    assert_unauthorized(reply, "the delayed PUB");
    assert_eq!(nsqd.message_count("orders.delayed"), 1);
}

/// One HTTPS request over a fresh connection (`Connection: close`); the status line and body.
async fn https_post(
    pki: &Pki,
    addr: std::net::SocketAddr,
    path: &str,
    key: &str,
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tls_connector(&pki.path("ca.pem"), None)
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP front's /pub waits in the same rate limits; it is judged again after the wait too.
#[tokio::test]
async fn an_http_publish_delayed_by_the_rate_limit_is_refused_if_its_key_was_deleted_meanwhile() {
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy("policy", "main.toml", &policy_with_key(&key, &["worker"]));
    let nsqd = Nsqd::start(&pki);
    let gate = gate_config(&nsqd)
        .table("[rate_limits]\non_limit = \"delay\"\nmax_delay_ms = 60000\nidentity = { bytes_per_sec = 10, burst_bytes = 100 }")
        .table(&format!(
            "[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"",
            nsqd.https
        ))
        .start(&pki);
    let https = gate.http("nsqd");
    let body = [b'x'; 100];
    let first = https_post(&pki, https, "/pub?topic=orders.http", &key, &body).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = https_post(&pki, https, "/pub?topic=orders.http", &key, &body);
    tokio::pin!(second);
    // Let the request reach its wait, then delete the key.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
    assert!(early.is_err(), "the second /pub was not delayed: {early:?}");
    pki.write_policy("policy", "main.toml", ROLES);
    let second = second.await;
    assert!(second.starts_with("HTTP/1.1 403"), "{second}");
    assert_eq!(nsqd.message_count("orders.http"), 1);
    drop(gate);
}
