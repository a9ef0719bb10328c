//! Policy patterns end to end: `*` stays within one `.` segment (an identity's namespace is not
//! another's), and "every topic" (the operator's views) is decided from the rules, not by
//! probing names. Real nsqd behind a real nsqgate; clients write their own bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::FrameType;
use common::{nsqgate, Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// `alice` (an API key) may publish in her own namespace only; `probing` holds admin rules on
/// two patterns that together match any one-character name (`*_*` and `*0*`); `ops` is an
/// admin on every topic.
fn write_policy(pki: &Pki, alice: &str, probing: &str, ops: &str) {
    let policy = format!(
        r#"
[roles.own-namespace]
allow = [{{ action = "publish", topics = ["${{identity}}.*"] }}]

[roles.probing]
allow = [{{ action = "admin", topics = ["*_*", "*0*"] }}]

[roles.ops]
allow = [{{ action = "admin", topics = ["**", "**#ephemeral"] }}]

[api_keys.alice]
sha256 = "{}"
roles = ["own-namespace"]

[api_keys.probing]
sha256 = "{}"
roles = ["probing"]

[api_keys.ops]
sha256 = "{}"
roles = ["ops"]
"#,
        common::key_sha256(alice.as_bytes()),
        common::key_sha256(probing.as_bytes()),
        common::key_sha256(ops.as_bytes()),
    );
    pki.write_policy("rules", "rules.toml", &policy);
}

async fn authed(addr: SocketAddr, connector: &TlsConnector, key: &str) -> RawClient {
    RawClient::authenticated(addr, connector, key).await
}

#[tokio::test]
async fn identity_star_stays_in_its_own_segment() {
    let pki = Pki::new();
    let (alice, probing, ops) = (apikey::generate(), apikey::generate(), apikey::generate());
    write_policy(&pki, &alice, &probing, &ops);
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp).policy("rules").start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut client = authed(gate.addr, &connector, &alice).await;
    let ok = client
        .publish("alice.orders", b"mine")
        .await
        .expect("reply");
    assert_eq!(frame_text(&ok), "OK");

    // alice.bob.orders is in the namespace of identity `alice.bob`, not alice's.
    let refused = client
        .publish("alice.bob.orders", b"not mine")
        .await
        .expect("reply");
    assert_eq!(refused.frame_type, FrameType::Error);
    assert!(
        frame_text(&refused).starts_with("E_UNAUTHORIZED"),
        "{}",
        frame_text(&refused)
    );
    assert_eq!(nsqd.message_count("alice.orders"), 1);
    assert!(
        !nsqd.topic_exists("alice.bob.orders"),
        "a refused publish must not even create the topic"
    );
}

/// One HTTPS GET with a bearer key, bytes written by hand; returns the status code.
async fn get_status(pki: &Pki, addr: SocketAddr, path: &str, key: &str) -> u16 {
    http_status(pki, addr, "GET", path, key, b"").await
}

/// One HTTPS request with a bearer key, bytes written by hand; returns the status code.
async fn http_status(
    pki: &Pki,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &[u8],
) -> u16 {
    let roots = common::nsqclient::ca_roots(&pki.path("ca.pem"));
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
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no HTTP status in {text:?}"))
}

#[tokio::test]
async fn operator_views_need_a_rule_on_every_topic_not_two_probes() {
    let pki = Pki::new();
    let (alice, probing, ops) = (apikey::generate(), apikey::generate(), apikey::generate());
    write_policy(&pki, &alice, &probing, &ops);
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("rules")
        .table(&format!(
            "[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"",
            nsqd.https
        ))
        .start(&pki);
    let https = gate.http("nsqd");

    for path in ["/metrics", "/config/max_heartbeat_interval"] {
        assert_eq!(get_status(&pki, https, path, &ops).await, 200, "ops {path}");
        assert_eq!(
            get_status(&pki, https, path, &probing).await,
            403,
            "`*_*` plus `*0*` is not every topic: {path}"
        );
    }
    // The HTTP front matches names exactly as the TCP listener does.
    let denied = http_status(
        &pki,
        https,
        "POST",
        "/pub?topic=alice.bob.http",
        &alice,
        b"x",
    );
    assert_eq!(denied.await, 403);
    let allowed = http_status(&pki, https, "POST", "/pub?topic=alice.http", &alice, b"x");
    assert_eq!(allowed.await, 200);
    assert_eq!(nsqd.message_count("alice.http"), 1);
    assert!(!nsqd.topic_exists("alice.bob.http"));
    drop(gate);
}

#[test]
fn check_config_and_explain_flag_stars_whose_meaning_changed() {
    let pki = Pki::new();
    let (alice, probing, ops) = (apikey::generate(), apikey::generate(), apikey::generate());
    write_policy(&pki, &alice, &probing, &ops);
    let config = pki.path("gate.toml");
    let nsqd: SocketAddr = ([127, 0, 0, 1], 4150).into();
    GateConfig::new(nsqd).policy("rules").write(&config);
    let config = config.to_str().unwrap();

    let (code, out, err) = nsqgate(&["check-config", "--config", config]);
    assert_eq!(code, 0, "a changed meaning is a warning: {out}{err}");
    let file = pki.path("rules/rules.toml");
    let expected = format!(
        "warning: {}: line 3: roles.own-namespace.allow[0].topics[0]: pattern \
         \"${{identity}}.*\": `*` now matches within one `.`-separated segment",
        file.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("roles.probing.allow[0].topics[1]"), "{err}");

    let (code, out, _) = nsqgate(&[
        "policy",
        "explain",
        "--config",
        config,
        "--api-key",
        &alice,
        "--publish",
        "alice.bob.orders",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "when it crossed `.` this was allowed (rules.toml roles.own-namespace.allow[0])"
        ),
        "{out}"
    );

    // A broken policy fails check-config, naming file, line and key.
    pki.write_policy(
        "rules",
        "rules.toml",
        "[roles.r]\nallow = [{ action = \"publish\", topics = [\"a.***\"] }]\n",
    );
    let (code, _, err) = nsqgate(&["check-config", "--config", config]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2: roles.r.allow[0].topics[0]: pattern \"a.***\""),
        "{err}"
    );
}

// === role quotas: one bucket per key, merged with the defaults ===

const QUOTA_POLICY: &str = r#"
wildcards = "segment"

[roles.five]
allow = [{ action = "publish", topics = ["**"] }]
rate = { messages_per_sec = 1, burst_messages = 5 }

[roles.ten]
allow = [{ action = "publish", topics = ["**"] }]
rate = { messages_per_sec = 1, burst_messages = 10 }

[roles.messages-only]
allow = [{ action = "publish", topics = ["**"] }]
rate = { messages_per_sec = 1000 }
"#;

/// A gate in reject mode whose JWTs are HS256 with a secret written next to the config.
fn quota_gate(pki: &Pki, nsqd: &Nsqd, policy: &str, rate_limits: &str) -> (Gate, Vec<u8>) {
    use std::os::unix::fs::PermissionsExt as _;
    let secret = b"a shared HS256 secret of at least 32 bytes, for tests".to_vec();
    let path = pki.path("jwt.secret");
    std::fs::write(&path, &secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    pki.write_policy("quotas", "quotas.toml", policy);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("quotas")
        .table("[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret_file = \"jwt.secret\"")
        .table(&format!(
            "[rate_limits]\non_limit = \"reject\"\n{rate_limits}"
        ))
        .start(pki);
    (gate, secret)
}

fn token(secret: &[u8], sub: &str, roles: &[&str]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "exp": exp, "roles": roles }),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn alternating_credentials_of_one_identity_share_one_bucket() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, secret) = quota_gate(&pki, &nsqd, QUOTA_POLICY, "");
    let connector = tls_connector(&pki.path("ca.pem"), None);
    // Two tokens of identity `svc` whose roles grant different bursts (5 and 10, 1/s).
    let mut five = authed(gate.addr, &connector, &token(&secret, "svc", &["five"])).await;
    let mut ten = authed(gate.addr, &connector, &token(&secret, "svc", &["ten"])).await;
    let started = std::time::Instant::now();
    let (mut acked, mut refusal) = (0u64, None);
    for round in 0..200 {
        let client = if round % 2 == 0 { &mut five } else { &mut ten };
        let reply = client.publish("quota.shared", b"x").await.expect("a reply");
        if reply.frame_type != FrameType::Response {
            refusal = Some(frame_text(&reply));
            break;
        }
        acked += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refusal = refusal.expect("alternating credentials must not escape the budget");
    assert!(refusal.starts_with("E_PUB_FAILED"), "{refusal}");
    // The larger burst plus what 1/s refills while the loop ran: never one fresh bucket each.
    let bound = 10 + elapsed.ceil() as u64 + 1;
    assert!(acked <= bound, "{acked} OKs > {bound} (in {elapsed:.2} s)");
    assert_eq!(nsqd.message_count("quota.shared"), acked);
}

#[tokio::test]
async fn a_role_that_sets_only_messages_keeps_the_default_byte_quota() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let defaults = "identity = { bytes_per_sec = 100, burst_bytes = 1000 }";
    let (gate, secret) = quota_gate(&pki, &nsqd, QUOTA_POLICY, defaults);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let jwt = token(&secret, "bulk", &["messages-only"]);
    let mut client = authed(gate.addr, &connector, &jwt).await;
    let body = vec![b'b'; 600];
    let started = std::time::Instant::now();
    let (mut acked, mut refusal) = (0u64, None);
    for _ in 0..20 {
        let reply = client.publish("quota.bytes", &body).await.expect("a reply");
        if reply.frame_type != FrameType::Response {
            refusal = Some(frame_text(&reply));
            break;
        }
        acked += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refusal = refusal.expect("the default bytes_per_sec still applies");
    assert!(
        refusal.starts_with("E_PUB_FAILED") && refusal.contains("bytes"),
        "{refusal}"
    );
    let bound = (1000 + (100.0 * elapsed).ceil() as u64) / 600 + 1;
    assert!(acked <= bound, "{acked} OKs > {bound} (in {elapsed:.2} s)");
    assert_eq!(nsqd.message_count("quota.bytes"), acked);
}
