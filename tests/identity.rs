//! Identity and authorization end to end: stock clients (to_nsq, pynsq) and a raw NSQ client
//! authenticate to the real nsqgate binary with JWTs, API keys and client certificates, and are
//! allowed or refused per the policy. Checked by the bytes the clients see, nsqd's /stats and
//! nsqgate's audit lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::BytesMut;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, Frame, FrameType};
use common::{run_tool, tool, Gate, GateConfig, Nsqd, Pki};
use nsqgate::certs::{ClientSubject, DevCa};

const ISSUER: &str = "https://issuer.nsqgate.test";
const AUDIENCE: &str = "nsqgate";
const SPIFFE_ID: &str = "spiffe://nsqgate.test/ns/prod/sa/billing";
const HS_SECRET: &str = "identity-tests-hs256-secret-0123456789abcdef";
/// A 2048-bit RSA public key (the gate's RS256 key; only its public half is needed here).
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../src/auth/testdata/rsa2048_public.pem");

/// The policy every test starts with (the revocation test rewrites it).
const POLICY: &str = r#"
[roles.writer]
allow = [
  { action = "publish", topics = ["orders.*"] },
  { action = "publish", topics = ["trial.*"], audit = true },
  { action = "subscribe", topics = ["orders.*"], channels = ["billing"] },
]
deny = [
  { action = "publish", topics = ["orders.internal"] },
]

[roles.reader]
allow = [
  { action = "subscribe", topics = ["orders.*"], channels = ["billing", "ops"] },
  { action = "publish", topics = ["${identity}.inbox"] },
]

[identities]
alice = ["writer"]
"spiffe://nsqgate.test/ns/prod/sa/billing" = ["writer"]
"#;

// === fixture ===

/// One nsqd, one nsqgate (JWT + API keys, no client certificates) and the key material.
struct Fixture {
    pki: Pki,
    nsqd: Nsqd,
    gate: Gate,
    hs: EncodingKey,
    es: EncodingKey,
    es_public_pem: Vec<u8>,
    api_key: String,
}

impl Fixture {
    fn new() -> Fixture {
        let pki = Pki::new();
        common::write_secret(&pki.path("jwt-hs.secret"), HS_SECRET.as_bytes());
        let pair = rcgen::KeyPair::generate().expect("EC key pair");
        let es = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("ES256 key");
        let es_public_pem = pair.public_key_pem().into_bytes();
        std::fs::write(pki.path("jwt-es.pub.pem"), &es_public_pem).expect("write EC key");
        std::fs::write(pki.path("jwt-rs.pub.pem"), RSA_PUBLIC_PEM).expect("write RSA key");

        let api_key = nsqgate::auth::apikey::generate();
        let policy = format!(
            "{POLICY}\n[api_keys.ingest]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
            hex(&Sha256::digest(api_key.as_bytes()))
        );
        pki.write_policy("policy", "main.toml", &policy);

        let nsqd = Nsqd::start(&pki);
        let gate = start_gate(&pki, &nsqd, "", 0);
        Fixture {
            pki,
            nsqd,
            gate,
            hs: EncodingKey::from_secret(HS_SECRET.as_bytes()),
            es,
            es_public_pem,
            api_key,
        }
    }

    /// Another nsqgate in front of the same nsqd with the same policy and keys.
    fn gate_with(&self, client_extra: &str) -> Gate {
        start_gate(&self.pki, &self.nsqd, client_extra, 0)
    }

    /// `claims` signed with the key named `kid` ("hs" or "es"), that kid in the header.
    fn token(&self, kid: &str, claims: &Value) -> String {
        let (alg, key) = match kid {
            "hs" => (Algorithm::HS256, &self.hs),
            "es" => (Algorithm::ES256, &self.es),
            other => panic!("no signing key {other}"),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).expect("sign JWT")
    }

    fn alice(&self) -> String {
        self.token("es", &claims("alice"))
    }

    fn ca(&self) -> PathBuf {
        self.pki.path("ca.pem")
    }
}

/// nsqgate requiring an identity, with the `policy` folder (re-read every 200 ms) and the
/// fixture's three JWT keys; `client_extra` lines go into `[client]`.
fn start_gate(pki: &Pki, nsqd: &Nsqd, client_extra: &str, leeway_secs: u64) -> Gate {
    GateConfig::new(nsqd.tcp)
        .client("require_tls = true")
        .client(client_extra)
        .auth("require_identity = true")
        .policy("policy")
        .auth("policy_reload_ms = 200\nrevocation_grace_ms = 500")
        .table(&format!(
            r#"[auth.jwt]
keys = [
  {{ kid = "hs", algorithm = "HS256", secret_file = "jwt-hs.secret" }},
  {{ kid = "es", algorithm = "ES256", file = "jwt-es.pub.pem" }},
  {{ kid = "rs", algorithm = "RS256", file = "jwt-rs.pub.pem" }},
]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = {leeway_secs}"#
        ))
        .start(pki)
}

const MTLS_REQUIRED: &str = "tls_client_ca = \"ca.pem\"\nclient_cert = \"required\"";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Valid claims for `sub`, ten minutes from expiry.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600 })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// A token from raw header and claims JSON with the given signature segment.
fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{c}.{signature}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 12-hex-digit SHA-256 prefix nsqgate logs for a secret, computed independently.
fn fingerprint(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))[..12].to_owned()
}

// === raw client helpers ===

/// Magic, IDENTIFY with tls_v1 and the in-band upgrade; returns the client and IDENTIFY reply.
async fn connect(addr: SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> (RawClient, Value) {
    let connector = tls_connector(ca, cert);
    RawClient::upgraded(addr, &connector, json!({ "client_id": "identity-test" })).await
}

/// The in-band upgrade by hand, so that a refused handshake is a result and not a panic:
/// Ok once nsqgate's `OK` arrives inside TLS, Err(why) otherwise.
async fn try_upgrade(addr: SocketAddr, connector: &TlsConnector) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut out = BytesMut::from(&common::wire::MAGIC_V2[..]);
    Command::Identify {
        body: json!({ "tls_v1": true, "feature_negotiation": true })
            .to_string()
            .into(),
    }
    .encode(&mut out);
    tcp.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    tcp.read_exact(&mut size).await.map_err(|e| e.to_string())?;
    let mut reply = vec![0u8; u32::from_be_bytes(size) as usize];
    tcp.read_exact(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // With TLS 1.3 the server judges the client's certificate after the client finished.
    let mut ok = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut ok))
        .await
        .map_err(|_| "no OK within 5 s".to_string())?
        .map_err(|e| format!("after the handshake: {e}"))?;
    if &ok[8..] == b"OK" {
        Ok(())
    } else {
        Err(format!("unexpected frame {ok:?}"))
    }
}

/// A connection that sent AUTH with `secret` and got its JSON reply.
async fn authed(f: &Fixture, gate: &Gate, secret: &str) -> RawClient {
    let (mut client, reply) = connect(gate.addr, &f.ca(), None).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    let frame = auth(&mut client, secret).await;
    assert_eq!(
        frame.as_ref().map(|f| f.frame_type),
        Some(FrameType::Response),
        "AUTH reply: {:?}",
        frame.as_ref().map(frame_text)
    );
    client
}

async fn auth(client: &mut RawClient, secret: &str) -> Option<Frame> {
    client.auth(secret).await
}

async fn sub(client: &mut RawClient, topic: &str, channel: &str) -> Option<Frame> {
    client
        .send(&Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        })
        .await;
    client.read_frame().await
}

#[track_caller]
fn assert_ok(frame: Option<Frame>, what: &str) {
    let frame = frame.unwrap_or_else(|| panic!("{what}: connection closed instead of OK"));
    let text = frame_text(&frame);
    assert!(
        frame.frame_type == FrameType::Response && text == "OK",
        "{what}: expected OK, got {:?} {text}",
        frame.frame_type
    );
}

/// Asserts an error frame starting with `prefix` (e.g. "E_UNAUTHORIZED"); returns its text.
#[track_caller]
fn assert_error(frame: Option<Frame>, prefix: &str, what: &str) -> String {
    let frame = frame.unwrap_or_else(|| panic!("{what}: connection closed instead of {prefix}"));
    let text = frame_text(&frame);
    assert_eq!(frame.frame_type, FrameType::Error, "{what}: {text}");
    assert!(
        text.starts_with(prefix),
        "{what}: expected {prefix}, got {text}"
    );
    text
}

// === nsqd and audit helpers ===

fn channel_exists(nsqd: &Nsqd, topic: &str, channel: &str) -> bool {
    nsqd.topic(topic)
        .and_then(|t| t["channels"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|c| c["channel_name"] == channel)
}

/// The first audit event matching `pred`, waiting up to 5 s for it to be written.
fn wait_audit(gate: &Gate, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(event) = gate.audit_events().into_iter().find(|e| pred(e)) {
            return event;
        }
        if Instant::now() > deadline {
            panic!(
                "no audit event for {what}; events:\n{}",
                gate.audit_events()
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// === stock client helpers ===

/// Runs to_nsq against `addr` with TLS and `extra` producer options; (success, stderr).
fn to_nsq(
    addr: SocketAddr,
    ca: &Path,
    topic: &str,
    extra: &[String],
    lines: usize,
) -> (bool, String) {
    let mut args = vec![
        format!("--topic={topic}"),
        format!("--nsqd-tcp-address={addr}"),
        "--producer-opt=tls_v1,true".to_string(),
        format!("--producer-opt=tls_root_ca_file,{}", ca.display()),
    ];
    args.extend(extra.iter().cloned());
    let stdin: String = (0..lines).map(|i| format!("line {i}\n")).collect();
    let (ok, _, stderr) = run_tool(
        &tool("to_nsq"),
        &args,
        stdin.as_bytes(),
        Duration::from_secs(30),
    );
    (ok, stderr)
}

/// Runs pynsq_roundtrip.py; (exit ok, its JSON summary, stderr).
fn pynsq(args: &[String]) -> (bool, Value, String) {
    common::run_client(
        "python",
        "pynsq_roundtrip.py",
        args,
        Duration::from_secs(60),
    )
}

fn pynsq_publish(f: &Fixture, topic: &str, count: usize, secret: &str) -> (bool, Value, String) {
    pynsq(&[
        format!("--address={}", f.gate.addr),
        format!("--topic={topic}"),
        "--channel=ch".into(),
        format!("--count={count}"),
        format!("--ca={}", f.ca().display()),
        format!("--secret={secret}"),
        "--mode=publish".into(),
        "--timeout=20".into(),
    ])
}

// === 1, 2: stock clients with a JWT ===

#[test]
fn stock_clients_publish_with_a_jwt_only_where_the_policy_allows() {
    let f = Fixture::new();
    let es_token = f.alice();
    let hs_token = f.token("hs", &claims("alice"));

    // to_nsq with the documented options: allowed topic.
    let secret = vec![format!("--producer-opt=auth_secret,{es_token}")];
    let (ok, stderr) = to_nsq(f.gate.addr, &f.ca(), "orders.stock", &secret, 3);
    assert!(ok, "to_nsq on an allowed topic failed: {stderr}");
    assert_eq!(f.nsqd.message_count("orders.stock"), 3);

    // pynsq with --secret: allowed topic.
    let (ok, summary, stderr) = pynsq_publish(&f, "orders.pynsq", 5, &hs_token);
    assert!(ok, "pynsq on an allowed topic failed: {summary}\n{stderr}");
    assert_eq!(summary["published"], 5, "{summary}");
    assert_eq!(f.nsqd.message_count("orders.pynsq"), 5);

    // The same clients and tokens on a topic the policy does not allow.
    let (ok, stderr) = to_nsq(f.gate.addr, &f.ca(), "payments.stock", &secret, 3);
    assert!(!ok, "to_nsq published to a denied topic: {stderr}");
    assert!(stderr.contains("E_UNAUTHORIZED"), "to_nsq stderr: {stderr}");
    assert!(!f.nsqd.topic_exists("payments.stock"));

    let (ok, summary, stderr) = pynsq_publish(&f, "payments.pynsq", 1, &hs_token);
    assert!(
        !ok,
        "pynsq published to a denied topic: {summary}\n{stderr}"
    );
    assert_eq!(summary["published"], 0, "{summary}");
    assert!(
        summary["errors"].to_string().contains("E_UNAUTHORIZED"),
        "pynsq errors: {summary}"
    );
    assert!(!f.nsqd.topic_exists("payments.pynsq"));

    // The denials are audited under alice's identity.
    for topic in ["payments.stock", "payments.pynsq"] {
        wait_audit(&f.gate, &format!("deny of {topic}"), |e| {
            e["action"] == "publish"
                && e["topic"] == topic
                && e["outcome"] == "deny"
                && e["identity"] == "alice"
        });
    }
}

// === 3: SUB per channel ===

#[tokio::test]
async fn subscribe_is_allowed_on_one_channel_and_denied_on_another() {
    let f = Fixture::new();
    let mut producer = authed(&f, &f.gate, &f.api_key).await;
    let bodies = ["first", "second", "third"];
    for body in bodies {
        assert_ok(producer.publish("orders.sub", body.as_bytes()).await, "PUB");
    }
    assert_eq!(f.nsqd.message_count("orders.sub"), 3);

    // alice (writer) may read "billing" only.
    let mut denied = authed(&f, &f.gate, &f.alice()).await;
    let text = assert_error(
        sub(&mut denied, "orders.sub", "ops").await,
        "E_UNAUTHORIZED",
        "SUB ops",
    );
    assert!(text.contains("SUB"), "{text}");
    assert!(denied.closed_within(Duration::from_secs(5)).await);
    assert!(
        !channel_exists(&f.nsqd, "orders.sub", "ops"),
        "a denied SUB created its channel"
    );

    let mut consumer = authed(&f, &f.gate, &f.alice()).await;
    assert_ok(
        sub(&mut consumer, "orders.sub", "billing").await,
        "SUB billing",
    );
    consumer.send(&Command::Rdy { count: 10 }).await;
    let mut received = Vec::new();
    while received.len() < bodies.len() {
        let frame = consumer
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("consumer closed after {} messages", received.len()));
        assert_eq!(
            frame.frame_type,
            FrameType::Message,
            "{}",
            frame_text(&frame)
        );
        let message = frame.message().expect("message frame");
        consumer.send(&Command::Fin { id: message.id }).await;
        received.push(String::from_utf8_lossy(&message.body).into_owned());
    }
    received.sort();
    let mut expected: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
    expected.sort();
    assert_eq!(received, expected);
    assert!(channel_exists(&f.nsqd, "orders.sub", "billing"));

    wait_audit(&f.gate, "denied SUB", |e| {
        e["action"] == "subscribe" && e["channel"] == "ops" && e["outcome"] == "deny"
    });
}

// === 4: client certificates ===

#[tokio::test]
async fn spiffe_client_certificate_publishes_per_its_role_and_a_foreign_ca_is_refused() {
    let f = Fixture::new();
    let gate = f.gate_with(MTLS_REQUIRED);
    // The CN names no role: only the URI SAN (the SPIFFE ID) can make this work.
    f.pki.issue_client(
        "billing-client",
        &ClientSubject {
            common_name: "billing".into(),
            uris: vec![SPIFFE_ID.into()],
            dns_names: vec![],
        },
    );
    let cert = f.pki.path("billing-client.pem");
    let key = f.pki.path("billing-client.key");
    let cert_opts = |cert: &Path, key: &Path| {
        vec![
            format!("--producer-opt=tls_cert,{}", cert.display()),
            format!("--producer-opt=tls_key,{}", key.display()),
        ]
    };

    // With the certificate there is nothing to AUTH.
    let (mut raw, reply) = connect(gate.addr, &f.ca(), Some((&cert, &key))).await;
    assert_eq!(reply["auth_required"], false, "{reply}");
    assert_ok(
        raw.publish("orders.raw-mtls", b"hello").await,
        "PUB with a certificate",
    );
    assert_eq!(f.nsqd.message_count("orders.raw-mtls"), 1);

    // go-nsq (to_nsq) with tls_cert/tls_key and no auth_secret.
    let (ok, stderr) = to_nsq(
        gate.addr,
        &f.ca(),
        "orders.mtls",
        &cert_opts(&cert, &key),
        4,
    );
    assert!(ok, "to_nsq with a client certificate failed: {stderr}");
    assert_eq!(f.nsqd.message_count("orders.mtls"), 4);

    // Its role does not cover this topic.
    let (ok, stderr) = to_nsq(
        gate.addr,
        &f.ca(),
        "payments.mtls",
        &cert_opts(&cert, &key),
        1,
    );
    assert!(!ok, "to_nsq published to a denied topic: {stderr}");
    assert!(stderr.contains("E_UNAUTHORIZED"), "{stderr}");
    assert!(!f.nsqd.topic_exists("payments.mtls"));

    wait_audit(&gate, "certificate authentication", |e| {
        e["action"] == "auth"
            && e["outcome"] == "success"
            && e["method"] == "certificate"
            && e["identity"] == SPIFFE_ID
    });

    // The same subject, signed by another CA: refused in the handshake.
    let rogue = DevCa::generate("rogue CA").expect("rogue CA");
    f.pki.write(
        "rogue-client",
        &rogue
            .issue_client(&ClientSubject {
                common_name: "billing".into(),
                uris: vec![SPIFFE_ID.into()],
                dns_names: vec![],
            })
            .expect("rogue cert"),
    );
    let (rogue_cert, rogue_key) = (
        f.pki.path("rogue-client.pem"),
        f.pki.path("rogue-client.key"),
    );
    // go-nsq sends no certificate whose issuer the server did not list, so also present it
    // with a client that always does: nsqgate must refuse it in the handshake itself.
    let good = tls_connector(&f.ca(), Some((&cert, &key)));
    assert_eq!(try_upgrade(gate.addr, &good).await, Ok(()), "control");
    let foreign = tls_connector(&f.ca(), Some((&rogue_cert, &rogue_key)));
    let refused = try_upgrade(gate.addr, &foreign)
        .await
        .expect_err("a foreign CA's certificate was accepted");
    assert!(refused.contains("alert"), "not a TLS refusal: {refused}");
    let opts = cert_opts(&rogue_cert, &rogue_key);
    let (ok, stderr) = to_nsq(gate.addr, &f.ca(), "orders.rogue", &opts, 2);
    assert!(
        !ok,
        "to_nsq with a foreign CA's certificate succeeded: {stderr}"
    );
    assert!(!f.nsqd.topic_exists("orders.rogue"));

    // And no certificate at all (a JWT does not stand in for it on this listener).
    let secret = vec![format!("--producer-opt=auth_secret,{}", f.alice())];
    let (ok, stderr) = to_nsq(gate.addr, &f.ca(), "orders.nocert", &secret, 1);
    assert!(!ok, "to_nsq without a certificate succeeded: {stderr}");
    assert!(!f.nsqd.topic_exists("orders.nocert"));
}

// === 5: API keys ===

#[tokio::test]
async fn api_key_right_publishes_and_wrong_is_refused_without_leaking_the_key() {
    let f = Fixture::new();
    let mut client = authed(&f, &f.gate, &f.api_key).await;
    assert_ok(
        client.publish("orders.api", b"via key").await,
        "PUB with the key",
    );
    assert_eq!(f.nsqd.message_count("orders.api"), 1);

    let wrong = nsqgate::auth::apikey::generate();
    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    client
        .send(&Command::Auth {
            secret: wrong.as_bytes().to_vec().into(),
        })
        .await;
    // Pipelined behind the refused AUTH: must never reach nsqd.
    client
        .send(&Command::Pub {
            topic: "orders.apifail".into(),
            body: b"nope".to_vec().into(),
        })
        .await;
    assert_error(client.read_frame().await, "E_AUTH_FAILED", "wrong key");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("orders.apifail"));

    let event = wait_audit(&f.gate, "failed API key", |e| {
        e["action"] == "auth"
            && e["outcome"] == "failure"
            && e["fingerprint"] == fingerprint(&wrong)
    });
    assert_eq!(event["method"], "api_key", "{event}");
    assert!(
        event["reason"].as_str().unwrap_or("").contains("API key"),
        "{event}"
    );
    wait_audit(&f.gate, "accepted API key", |e| {
        e["action"] == "auth"
            && e["outcome"] == "success"
            && e["identity"] == "ingest"
            && e["fingerprint"] == fingerprint(&f.api_key)
    });

    let log = f.gate.log();
    for key in [&f.api_key, &wrong] {
        let random = &key[nsqgate::auth::apikey::PREFIX.len()..];
        assert!(
            !log.contains(random),
            "an API key appears in the gate's log"
        );
    }
}

// === 6: refused JWTs ===

#[tokio::test]
async fn bad_jwts_are_refused_audited_and_never_reach_nsqd() {
    let f = Fixture::new();
    let t = now();
    let es_public_as_hmac = EncodingKey::from_secret(&f.es_public_pem);
    let rsa_public_as_hmac = EncodingKey::from_secret(RSA_PUBLIC_PEM);
    let hs256_with = |kid: Option<&str>, key: &EncodingKey| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims("alice"), key).expect("sign")
    };
    // (name, token, None for "accepted" or Some(reason fragment))
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("valid (control)", f.alice(), None),
        (
            "expired",
            f.token("hs", &with(claims("alice"), "exp", json!(t - 60))),
            Some("token expired"),
        ),
        (
            "not yet valid",
            f.token("es", &with(claims("alice"), "nbf", json!(t + 3600))),
            Some("not yet valid"),
        ),
        (
            "wrong aud",
            f.token("es", &with(claims("alice"), "aud", json!("someone-else"))),
            Some("wrong audience"),
        ),
        (
            "wrong iss",
            f.token(
                "hs",
                &with(claims("alice"), "iss", json!("https://evil.test")),
            ),
            Some("wrong issuer"),
        ),
        (
            "alg none",
            hand_built(
                &json!({ "alg": "none", "typ": "JWT" }),
                &claims("alice"),
                "",
            ),
            Some("algorithm not allowed"),
        ),
        (
            "HS256 keyed with the EC public key (kid es)",
            hs256_with(Some("es"), &es_public_as_hmac),
            Some("algorithm not allowed"),
        ),
        (
            "HS256 keyed with the RSA public key (kid rs)",
            hs256_with(Some("rs"), &rsa_public_as_hmac),
            Some("algorithm not allowed"),
        ),
        (
            "HS256 keyed with the EC public key (no kid)",
            hs256_with(None, &es_public_as_hmac),
            Some("bad signature"),
        ),
        (
            "unknown kid",
            {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("nope".into());
                jsonwebtoken::encode(&header, &claims("alice"), &f.hs).expect("sign")
            },
            Some("unknown key id"),
        ),
        ("garbage", "not a token at all".into(), Some("unrecognized")),
        (
            "garbage in JWT shape",
            "abc.def.ghi".into(),
            Some("malformed"),
        ),
    ];

    for (index, (name, token, refusal)) in cases.iter().enumerate() {
        let topic = format!("orders.jwt{index}");
        let (mut client, reply) = connect(f.gate.addr, &f.ca(), None).await;
        assert_eq!(reply["auth_required"], true, "{reply}");
        client
            .send(&Command::Auth {
                secret: token.as_bytes().to_vec().into(),
            })
            .await;
        client
            .send(&Command::Pub {
                topic: topic.clone(),
                body: b"jwt".to_vec().into(),
            })
            .await;
        let Some(reason) = refusal else {
            let frame = client.read_frame().await.expect("AUTH reply");
            assert_eq!(
                frame.frame_type,
                FrameType::Response,
                "{name}: {}",
                frame_text(&frame)
            );
            let reply: Value = serde_json::from_slice(&frame.data).expect("AUTH JSON");
            assert_eq!(reply["identity"], "alice", "{name}: {reply}");
            assert_ok(client.read_frame().await, name);
            assert_eq!(f.nsqd.message_count(&topic), 1, "{name}");
            continue;
        };
        let text = assert_error(client.read_frame().await, "E_AUTH_FAILED", name);
        assert!(
            !text.contains(token.as_str()),
            "{name}: the token is echoed: {text}"
        );
        assert!(
            client.closed_within(Duration::from_secs(5)).await,
            "{name}: not closed"
        );
        let event = wait_audit(&f.gate, name, |e| {
            e["action"] == "auth" && e["fingerprint"] == fingerprint(token)
        });
        assert_eq!(event["outcome"], "failure", "{name}: {event}");
        let logged = event["reason"].as_str().unwrap_or("");
        assert!(
            logged.contains(reason),
            "{name}: audit reason {logged:?} does not name {reason:?}"
        );
    }
    for (index, (name, _, refusal)) in cases.iter().enumerate() {
        if refusal.is_some() {
            assert!(
                !f.nsqd.topic_exists(&format!("orders.jwt{index}")),
                "{name}: a publish behind a refused AUTH reached nsqd"
            );
        }
    }
    let log = f.gate.log();
    for (name, token, _) in &cases {
        if token.len() > 20 {
            assert!(
                !log.contains(token.as_str()),
                "{name}: token text in the log"
            );
        }
    }
}

// === 7: expiry while connected ===

#[tokio::test]
async fn a_token_that_expires_while_connected_stops_publishing() {
    let f = Fixture::new();
    let exp = now() + 3;
    let token = f.token("hs", &with(claims("alice"), "exp", json!(exp)));
    let mut client = authed(&f, &f.gate, &token).await;
    assert_ok(
        client.publish("orders.expiry", b"before").await,
        "PUB before expiry",
    );
    assert_eq!(f.nsqd.message_count("orders.expiry"), 1);

    let expires = UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_millis(300);
    if let Ok(wait) = expires.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let text = assert_error(
        client.publish("orders.expiry", b"after").await,
        "E_AUTH_FAILED",
        "PUB after expiry",
    );
    assert!(text.contains("AUTH token expired"), "{text}");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert_eq!(f.nsqd.message_count("orders.expiry"), 1);
    wait_audit(&f.gate, "expired token", |e| {
        e["action"] == "publish" && e["outcome"] == "deny" && e["reason"] == "token expired"
    });
}

// === 8: policy explain agrees with the proxy ===

enum Who {
    Secret(String),
    Certificate,
}

enum What {
    Publish(&'static str),
    Subscribe(&'static str, &'static str),
}

fn explain(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Process::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["policy", "explain", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run nsqgate policy explain");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the proxy does: Ok(true) for OK, Ok(false) for E_UNAUTHORIZED, Err(text) when AUTH
/// itself is refused.
async fn proxy_decides(f: &Fixture, mtls: &Gate, who: &Who, what: &What) -> Result<bool, String> {
    let mut client = match who {
        Who::Secret(secret) => {
            let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
            let frame = auth(&mut client, secret).await.expect("AUTH reply");
            if frame.frame_type != FrameType::Response {
                return Err(frame_text(&frame));
            }
            client
        }
        Who::Certificate => {
            let (cert, key) = (
                f.pki.path("billing-client.pem"),
                f.pki.path("billing-client.key"),
            );
            connect(mtls.addr, &f.ca(), Some((&cert, &key))).await.0
        }
    };
    let frame = match what {
        What::Publish(topic) => client.publish(topic, b"explained").await,
        What::Subscribe(topic, channel) => sub(&mut client, topic, channel).await,
    }
    .expect("a reply");
    match (frame.frame_type, frame_text(&frame)) {
        (FrameType::Response, text) if text == "OK" => Ok(true),
        (FrameType::Error, text) if text.starts_with("E_UNAUTHORIZED") => Ok(false),
        (_, text) => panic!("unexpected reply {text}"),
    }
}

#[tokio::test]
async fn policy_explain_agrees_with_the_proxy() {
    let f = Fixture::new();
    let mtls = f.gate_with(MTLS_REQUIRED);
    f.pki.issue_client(
        "billing-client",
        &ClientSubject {
            common_name: "billing".into(),
            uris: vec![SPIFFE_ID.into()],
            dns_names: vec![],
        },
    );
    let alice = f.alice();
    let bob = f.token("hs", &with(claims("bob"), "roles", json!(["reader"])));
    let expired = f.token("es", &with(claims("alice"), "exp", json!(now() - 60)));
    let key = f.api_key.clone();
    let s = |v: &String| Who::Secret(v.clone());
    // (who, what, allowed)
    let cases = vec![
        (s(&alice), What::Publish("orders.ex1"), true),
        (s(&alice), What::Publish("payments"), false),
        (s(&alice), What::Publish("orders.internal"), false),
        (s(&alice), What::Publish("trial.ex"), false),
        (s(&key), What::Subscribe("orders.ex2", "billing"), true),
        (s(&key), What::Subscribe("orders.ex2", "ops"), false),
        (s(&bob), What::Subscribe("orders.ex3", "ops"), true),
        (s(&bob), What::Publish("bob.inbox"), true),
        (s(&bob), What::Publish("alice.inbox"), false),
        (Who::Certificate, What::Publish("orders.ex4"), true),
        (
            Who::Certificate,
            What::Subscribe("orders.ex4", "ops"),
            false,
        ),
        (s(&expired), What::Publish("orders.ex5"), false),
    ];
    for (who, what, allowed) in &cases {
        let mut args: Vec<&str> = match who {
            Who::Secret(secret) if secret.starts_with(nsqgate::auth::apikey::PREFIX) => {
                vec!["--api-key", secret]
            }
            Who::Secret(secret) => vec!["--token", secret],
            Who::Certificate => vec!["--identity", SPIFFE_ID],
        };
        let label = match what {
            What::Publish(topic) => {
                args.extend(["--publish", topic]);
                format!("publish {topic}")
            }
            What::Subscribe(topic, channel) => {
                args.extend(["--subscribe", topic, channel]);
                format!("subscribe {topic} {channel}")
            }
        };
        let label = format!("{} {label}", args[0]);
        let (code, stdout, stderr) = explain(&f.gate.config, &args);
        let explained = match code {
            Some(0) => true,
            Some(1) => false,
            other => panic!("{label}: explain exited {other:?}: {stdout}{stderr}"),
        };
        let verdict = if explained { "allow:" } else { "deny:" };
        assert!(stdout.starts_with(verdict), "{label}: {stdout}");
        let proxy = proxy_decides(&f, &mtls, who, what).await;
        match &proxy {
            Ok(did) => assert_eq!(*did, explained, "{label}: proxy {did}, explain: {stdout}"),
            Err(refused) => {
                assert!(
                    !explained,
                    "{label}: AUTH refused ({refused}) but explain: {stdout}"
                );
                assert!(refused.starts_with("E_AUTH_FAILED"), "{label}: {refused}");
                assert!(
                    stdout.contains("authentication failed"),
                    "{label}: {stdout}"
                );
            }
        }
        assert_eq!(explained, *allowed, "{label}: explain says {stdout}");
    }
    let (_, stdout, _) = explain(
        &f.gate.config,
        &["--token", &alice, "--publish", "trial.ex"],
    );
    assert!(stdout.contains("audit-mode rules would allow"), "{stdout}");

    // Usage and configuration errors exit 2.
    let (code, _, _) = explain(&f.gate.config, &["--publish", "orders.x"]);
    assert_eq!(code, Some(2), "no credential");
    let (code, _, _) = explain(&f.gate.config, &["--identity", "alice"]);
    assert_eq!(code, Some(2), "no action");
    let (code, _, _) = explain(
        &f.pki.path("missing.toml"),
        &["--identity", "alice", "--publish", "orders.x"],
    );
    assert_eq!(code, Some(2), "missing config");
}

// === 9: AUTH protocol, revocation, audit mode ===

#[tokio::test]
async fn publish_without_auth_gets_auth_first_and_a_second_auth_is_invalid() {
    let f = Fixture::new();

    let (mut client, reply) = connect(f.gate.addr, &f.ca(), None).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    assert_error(
        client.publish("orders.noauth", b"x").await,
        "E_AUTH_FIRST",
        "PUB without AUTH",
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);

    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    assert_error(
        sub(&mut client, "orders.noauth", "billing").await,
        "E_AUTH_FIRST",
        "SUB without AUTH",
    );
    assert!(!f.nsqd.topic_exists("orders.noauth"));

    let token = f.alice();
    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    let frame = auth(&mut client, &token).await.expect("AUTH reply");
    assert_eq!(
        frame.frame_type,
        FrameType::Response,
        "{}",
        frame_text(&frame)
    );
    let reply: Value = serde_json::from_slice(&frame.data).expect("AUTH JSON");
    assert_eq!(reply["identity"], "alice", "{reply}");
    client
        .send(&Command::Auth {
            secret: token.as_bytes().to_vec().into(),
        })
        .await;
    client
        .send(&Command::Pub {
            topic: "orders.second".into(),
            body: b"x".to_vec().into(),
        })
        .await;
    assert_error(client.read_frame().await, "E_INVALID", "second AUTH");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("orders.second"));
}

#[tokio::test]
async fn a_policy_change_closes_a_consumer_that_lost_its_permission() {
    let f = Fixture::new();
    let mut consumer = authed(&f, &f.gate, &f.alice()).await;
    assert_ok(sub(&mut consumer, "orders.rev", "billing").await, "SUB");
    consumer.send(&Command::Rdy { count: 5 }).await;
    let mut producer = authed(&f, &f.gate, &f.api_key).await;
    assert_ok(producer.publish("orders.rev", b"one").await, "PUB");
    let frame = consumer.read_frame().await.expect("a message");
    let message = frame.message().expect("message frame");
    assert_eq!(&message.body[..], b"one");
    consumer.send(&Command::Fin { id: message.id }).await;

    // Still subscribed a while later: nothing closes a consumer whose permission stands.
    assert!(
        !consumer.closed_within(Duration::from_millis(800)).await,
        "consumer closed without a policy change"
    );

    // alice's role no longer covers channel "billing".
    let policy = format!(
        "{}\n[api_keys.ingest]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
        POLICY.replace("channels = [\"billing\"]", "channels = [\"billing-v2\"]"),
        hex(&Sha256::digest(f.api_key.as_bytes()))
    );
    assert_ne!(policy, POLICY);
    f.pki.write_policy("policy", "main.toml", &policy);

    let started = Instant::now();
    let limit = Duration::from_secs(6);
    loop {
        match consumer
            .read_frame_within(limit.saturating_sub(started.elapsed()))
            .await
        {
            Some(frame) if frame.frame_type == FrameType::Message => continue,
            Some(frame) => {
                let text = frame_text(&frame);
                assert_eq!(text, "E_UNAUTHORIZED permission revoked");
                assert!(consumer.closed_within(Duration::from_secs(3)).await);
                break;
            }
            None => {
                assert!(
                    started.elapsed() < limit,
                    "the consumer was not closed within {limit:?}"
                );
                break;
            }
        }
    }
    let event = wait_audit(&f.gate, "revocation", |e| e["action"] == "revoke");
    assert_eq!(event["identity"], "alice", "{event}");
    assert_eq!(event["topic"], "orders.rev", "{event}");
    assert_eq!(event["channel"], "billing", "{event}");
}

#[tokio::test]
async fn a_publish_allowed_only_by_an_audit_rule_is_denied_and_logged_as_would_allow() {
    let f = Fixture::new();
    let mut client = authed(&f, &f.gate, &f.alice()).await;
    assert_error(
        client.publish("trial.orders", b"x").await,
        "E_UNAUTHORIZED",
        "PUB on an audit-only topic",
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("trial.orders"));
    let event = wait_audit(&f.gate, "would_allow", |e| {
        e["action"] == "publish" && e["topic"] == "trial.orders" && e["outcome"] == "would_allow"
    });
    assert_eq!(event["identity"], "alice", "{event}");
    assert!(
        event["rule"].as_str().unwrap_or("").contains("allow[1]"),
        "{event}"
    );
    wait_audit(&f.gate, "the enforced deny", |e| {
        e["action"] == "publish" && e["topic"] == "trial.orders" && e["outcome"] == "deny"
    });
}

// === found while writing these tests ===

/// The verifier accepts a token until `exp + leeway_secs`, but the session cuts it off at
/// `exp`: a token inside the leeway passes AUTH (and `policy explain`) and then every publish
/// is refused as expired. Fails until the principal's `expires_at` includes the leeway.
#[tokio::test]
async fn a_token_accepted_within_the_leeway_is_not_refused_as_expired_at_the_next_publish() {
    let f = Fixture::new();
    let gate = start_gate(&f.pki, &f.nsqd, "", 30);
    let token = f.token("hs", &with(claims("alice"), "exp", json!(now() - 5)));
    let (code, stdout, stderr) = explain(
        &gate.config,
        &["--token", &token, "--publish", "orders.leeway"],
    );
    assert_eq!(code, Some(0), "explain: {stdout}{stderr}");
    let mut client = authed(&f, &gate, &token).await;
    assert_ok(
        client.publish("orders.leeway", b"within leeway").await,
        "PUB with a token AUTH accepted within the leeway",
    );
    assert_eq!(f.nsqd.message_count("orders.leeway"), 1);
}

#[tokio::test]
async fn a_client_certificate_revoked_by_the_crl_is_refused() {
    let pki = Pki::new();
    let issue = |name: &str| {
        let pem = pki
            .ca
            .issue_client(&ClientSubject {
                common_name: name.into(),
                uris: vec![format!("spiffe://nsqgate.test/{name}")],
                dns_names: Vec::new(),
            })
            .unwrap();
        pki.write(name, &pem);
        pem
    };
    issue("kept");
    let revoked = issue("revoked");
    std::fs::write(
        pki.path("revoked.crl.pem"),
        pki.ca.crl(&[&revoked.serial]).unwrap(),
    )
    .unwrap();
    pki.write_policy(
        "crl-policy",
        "crl.toml",
        r#"
[roles.any]
allow = [{ action = "publish", topics = ["*"] }]
[identities]
"spiffe://nsqgate.test/kept" = ["any"]
"spiffe://nsqgate.test/revoked" = ["any"]
"#,
    );
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"required\"")
        .client("tls_client_crls = [\"revoked.crl.pem\"]")
        .policy("crl-policy")
        .start(&pki);

    let publish_with = |name: &'static str| {
        let connector = tls_connector(
            &pki.path("ca.pem"),
            Some((
                &pki.path(&format!("{name}.pem")),
                &pki.path(&format!("{name}.key")),
            )),
        );
        async move {
            let tcp = TcpStream::connect(gate.addr).await.unwrap();
            let server = ServerName::try_from("127.0.0.1").unwrap();
            // With TLS 1.3 the server's verdict on a client certificate may arrive only after
            // the client thinks the handshake is done; either way nothing may get through.
            let Ok(mut tls) = connector.connect(server, tcp).await else {
                return None;
            };
            let mut out = BytesMut::new();
            out.extend_from_slice(common::wire::MAGIC_V2);
            Command::Pub {
                topic: name.into(),
                body: b"x".to_vec().into(),
            }
            .encode(&mut out);
            let _ = tls.write_all(&out).await;
            let mut reply = vec![0u8; 64];
            match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut reply)).await {
                Ok(Ok(n)) if n > 0 => Some(reply[..n].to_vec()),
                _ => None,
            }
        }
    };
    let kept = publish_with("kept")
        .await
        .expect("the kept certificate is served");
    assert!(
        kept.ends_with(b"OK"),
        "{:?}",
        String::from_utf8_lossy(&kept)
    );
    assert_eq!(nsqd.message_count("kept"), 1);
    assert!(
        publish_with("revoked").await.is_none(),
        "the revoked certificate must not get through"
    );
    assert!(!nsqd.topic_exists("revoked"));
}

/// A tiny HTTPS server for a JWKS document whose answer the test can change.
async fn jwks_server(
    pki: &Pki,
    answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
) -> SocketAddr {
    let certs = nsqgate::tls::load_certs(&pki.path("gate.pem")).unwrap();
    let key = nsqgate::tls::load_key(&pki.path("gate.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let (status, body) = answer.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// An ES256 key: its PKCS#8 PEM for signing and its public JWK.
fn es256_jwk(kid: &str) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    (
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_keys_are_fetched_refreshed_and_kept_when_a_refresh_fails() {
    let pki = Pki::new();
    pki.write_policy(
        "jwks-policy",
        "jwks.toml",
        "[roles.any]\nallow = [{ action = \"publish\", topics = [\"*\"] }]\n[identities]\nalice = [\"any\"]\n",
    );
    let (first_key, first_jwk) = es256_jwk("k1");
    let (second_key, second_jwk) = es256_jwk("k2");
    let answer = std::sync::Arc::new(std::sync::Mutex::new((
        200u16,
        json!({ "keys": [first_jwk] }).to_string(),
    )));
    let server = jwks_server(&pki, answer.clone()).await;
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("jwks-policy")
        .table(&format!(
            "[auth.jwt]\njwks_url = \"https://127.0.0.1:{}/keys.json\"\njwks_ca = \"ca.pem\"\njwks_refresh_secs = 1\nleeway_secs = 0",
            server.port()
        ))
        .start(&pki);
    let token = |kid: &str, key: &EncodingKey| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        jsonwebtoken::encode(&header, &json!({"sub": "alice", "exp": exp}), key).unwrap()
    };
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let try_auth = |secret: String| {
        let connector = connector.clone();
        async move {
            let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
            auth(&mut client, &secret).await.map(|f| f.frame_type)
        }
    };
    // Fetched at start.
    assert_eq!(
        try_auth(token("k1", &first_key)).await,
        Some(FrameType::Response)
    );
    // The issuer rotates: after a refresh the new key works and the old one is gone.
    *answer.lock().unwrap() = (200, json!({ "keys": [second_jwk] }).to_string());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        try_auth(token("k2", &second_key)).await,
        Some(FrameType::Response)
    );
    assert_eq!(
        try_auth(token("k1", &first_key)).await,
        Some(FrameType::Error)
    );
    // The issuer fails (an error, then garbage): the last good set stays in force.
    *answer.lock().unwrap() = (500, "{}".into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    *answer.lock().unwrap() = (200, "not json".into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        try_auth(token("k2", &second_key)).await,
        Some(FrameType::Response)
    );
    assert!(
        gate.log().contains("JWKS refresh failed"),
        "the failure is logged"
    );
}
