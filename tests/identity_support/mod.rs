//! Shared by the identity tests (`identity_*.rs`): one nsqd and one nsqgate that accept JWTs
//! (HS256, ES256, RS256) and API keys, the policy they start with, and helpers to connect raw
//! and stock clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

use crate::common::nsqclient::{frame_text, tls_connector, RawClient};
use crate::common::wire::{Command, FrameType};
use crate::common::{self, run_tool, tool, Gate, GateConfig, Nsqd, Pki};

pub const ISSUER: &str = "https://issuer.nsqgate.test";
pub const AUDIENCE: &str = "nsqgate";
pub const SPIFFE_ID: &str = "spiffe://nsqgate.test/ns/prod/sa/billing";
pub const HS_SECRET: &str = "identity-tests-hs256-secret-0123456789abcdef";
/// A 2048-bit RSA public key (the gate's RS256 key; only its public half is needed here).
pub const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../src/auth/testdata/rsa2048_public.pem");

/// The policy every test starts with (the revocation test rewrites it).
pub const POLICY: &str = r#"
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
pub struct Fixture {
    pub pki: Pki,
    pub nsqd: Nsqd,
    pub gate: Gate,
    pub hs: EncodingKey,
    pub es: EncodingKey,
    pub es_public_pem: Vec<u8>,
    pub api_key: String,
}

impl Fixture {
    pub fn new() -> Fixture {
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
    pub fn gate_with(&self, client_extra: &str) -> Gate {
        start_gate(&self.pki, &self.nsqd, client_extra, 0)
    }

    /// `claims` signed with the key named `kid` ("hs" or "es"), that kid in the header.
    pub fn token(&self, kid: &str, claims: &Value) -> String {
        let (alg, key) = match kid {
            "hs" => (Algorithm::HS256, &self.hs),
            "es" => (Algorithm::ES256, &self.es),
            other => panic!("no signing key {other}"),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).expect("sign JWT")
    }

    pub fn alice(&self) -> String {
        self.token("es", &claims("alice"))
    }

    pub fn ca(&self) -> PathBuf {
        self.pki.path("ca.pem")
    }
}

/// nsqgate requiring an identity, with the `policy` folder (re-read every 200 ms) and the
/// fixture's three JWT keys; `client_extra` lines go into `[client]`.
pub fn start_gate(pki: &Pki, nsqd: &Nsqd, client_extra: &str, leeway_secs: u64) -> Gate {
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

pub const MTLS_REQUIRED: &str = "tls_client_ca = \"ca.pem\"\nclient_cert = \"required\"";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Valid claims for `sub`, ten minutes from expiry.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600 })
}

pub fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// A token from raw header and claims JSON with the given signature segment.
pub fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{c}.{signature}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 12-hex-digit SHA-256 prefix nsqgate logs for a secret, computed independently.
pub fn fingerprint(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))[..12].to_owned()
}

// === raw client helpers ===

/// Magic, IDENTIFY with tls_v1 and the in-band upgrade; returns the client and IDENTIFY reply.
pub async fn connect(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> (RawClient, Value) {
    let connector = tls_connector(ca, cert);
    RawClient::upgraded(addr, &connector, json!({ "client_id": "identity-test" })).await
}

/// The in-band upgrade by hand, so that a refused handshake is a result and not a panic:
/// Ok once nsqgate's `OK` arrives inside TLS, Err(why) otherwise.
pub async fn try_upgrade(addr: SocketAddr, connector: &TlsConnector) -> Result<(), String> {
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
pub async fn authed(f: &Fixture, gate: &Gate, secret: &str) -> RawClient {
    let (mut client, reply) = connect(gate.addr, &f.ca(), None).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    let frame = client.auth(secret).await;
    assert_eq!(
        frame.as_ref().map(|f| f.frame_type),
        Some(FrameType::Response),
        "AUTH reply: {:?}",
        frame.as_ref().map(frame_text)
    );
    client
}

// === nsqd and audit helpers ===

pub fn channel_exists(nsqd: &Nsqd, topic: &str, channel: &str) -> bool {
    nsqd.topic(topic)
        .and_then(|t| t["channels"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|c| c["channel_name"] == channel)
}

// === stock client helpers ===

/// Runs to_nsq against `addr` with TLS and `extra` producer options; (success, stderr).
pub fn to_nsq(
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
pub fn pynsq(args: &[String]) -> (bool, Value, String) {
    common::run_client(
        "python",
        "pynsq_roundtrip.py",
        args,
        Duration::from_secs(60),
    )
}

pub fn pynsq_publish(
    f: &Fixture,
    topic: &str,
    count: usize,
    secret: &str,
) -> (bool, Value, String) {
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

/// Runs `nsqgate policy explain --config CONFIG ARGS...`; (exit code, stdout, stderr).
pub fn explain(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nsqgate"))
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
