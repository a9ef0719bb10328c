//! JWKS refresh end to end: a key the issuer removed stops verifying after the next refresh
//! even when another entry is unusable as written (no `alg`), and a JWKS that cannot be
//! refreshed fails closed past `jwks_max_stale_secs`; a kept-alive HTTPS caller whose token
//! the gate remembers between requests is refused once its key is gone. The identity provider is a tiny HTTPS
//! server in the test; nsqd and nsqgate are the real ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::FrameType;
use common::{Gate, GateConfig, Nsqd, Pki};

/// The identity provider's answer: (status, body), changed by the test as it goes.
type Answer = Arc<Mutex<(u16, String)>>;

/// Serves `answer` over HTTPS (the gate's certificate, so the test CA verifies it). Aborting
/// the handle closes the listener: the issuer becomes unreachable.
async fn jwks_server(pki: &Pki, answer: Answer) -> (SocketAddr, JoinHandle<()>) {
    let certs = nsqgate::tls::load_certs(&pki.path("gate.pem")).unwrap();
    let key = nsqgate::tls::load_key(&pki.path("gate.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
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
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// An ES256 key: its signing key and its public JWK (with `alg` unless told otherwise).
fn es256_jwk(kid: &str, with_alg: bool) -> (EncodingKey, Value) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let mut jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    if with_alg {
        jwk["alg"] = json!("ES256");
    }
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    (key, jwk)
}

fn token(kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(&header, &json!({"sub": "alice", "exp": exp}), key).unwrap()
}

fn document(keys: &[&Value]) -> String {
    json!({ "keys": keys }).to_string()
}

const OPS_KEY: &str = "nsqk_jwks_test_ops_key_000000000000000000000000000000";

/// A gate fetching its JWKS from `jwks` every second, with `extra` in `[auth.jwt]`, and an
/// nsqd HTTPS front (for `/metrics`, read with the `ops` API key).
fn gate(pki: &Pki, nsqd: &Nsqd, jwks: SocketAddr, extra: &str) -> (Gate, SocketAddr) {
    pki.write_policy(
        "jwks-policy",
        "jwks.toml",
        &format!(
            "wildcards = \"segment\"\n[roles.any]\nallow = [{{ action = \"publish\", topics = \
             [\"**\"] }}]\n[roles.ops]\nallow = [{{ action = \"admin\", topics = [\"**\", \
             \"**#ephemeral\"] }}]\n[identities]\nalice = [\"any\"]\n[api_keys.ops]\nsha256 = \
             \"{}\"\nroles = [\"ops\"]\n",
            common::key_sha256(OPS_KEY.as_bytes())
        ),
    );
    let gate = GateConfig::new(nsqd.tcp)
        .policy("jwks-policy")
        .table(&format!(
            "[auth.jwt]\njwks_url = \"https://127.0.0.1:{}/keys.json\"\njwks_ca = \"ca.pem\"\n\
             jwks_refresh_secs = 1\nleeway_secs = 0\n{extra}",
            jwks.port(),
        ))
        .table(&format!(
            "[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"",
            nsqd.https
        ))
        .start(pki);
    let https = gate.http("nsqd");
    (gate, https)
}

/// The AUTH reply's text for `secret` on a fresh connection.
async fn auth_reply(pki: &Pki, addr: SocketAddr, secret: &str) -> String {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(addr, &connector, json!({})).await;
    let frame = client.auth(secret).await.expect("AUTH reply");
    match frame.frame_type {
        FrameType::Response => "OK".to_owned(),
        _ => frame_text(&frame),
    }
}

/// Polls until `secret` is refused at AUTH (generous deadline: the machine may be slow).
async fn until_refused(pki: &Pki, addr: SocketAddr, secret: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = auth_reply(pki, addr, secret).await;
        if reply != "OK" {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "the token is still accepted after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A TLS connection to the HTTPS front at `addr`, verified with the test CA.
async fn https(
    pki: &Pki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = common::nsqclient::ca_roots(&pki.path("ca.pem"));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// GET with the ops key over HTTPS, bytes written by hand; the whole response as text.
async fn get(pki: &Pki, addr: SocketAddr, path: &str) -> String {
    let mut tls = https(pki, addr).await;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {OPS_KEY}\r\n\
         Connection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Publishes with `bearer` on a kept-alive connection; the response's status line and head.
async fn publish_kept_alive<S>(tls: &mut S, bearer: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "POST /pub?topic=kept HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Length: 1\r\n\r\nm"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte)).await;
        match read.expect("a response within 10 s") {
            Ok(1) => head.push(byte[0]),
            _ => return String::from_utf8_lossy(&head).into_owned(),
        }
    }
    let text = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).await.unwrap();
    text
}

/// The value of one metric line in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_verifying_after_the_next_refresh() {
    let pki = Pki::new();
    let (removed_key, removed) = es256_jwk("removed", true);
    let (kept_key, kept) = es256_jwk("kept", true);
    let (_, no_alg) = es256_jwk("no-alg", false);
    let answer: Answer = Arc::new(Mutex::new((200, document(&[&removed, &kept]))));
    let (server, _task) = jwks_server(&pki, answer.clone()).await;
    let nsqd = Nsqd::start(&pki);
    let (gate, _) = gate(&pki, &nsqd, server, "");
    assert_eq!(
        auth_reply(&pki, gate.addr, &token("removed", &removed_key)).await,
        "OK"
    );

    // The issuer drops a key and adds an entry without `alg` (no algorithms configured).
    *answer.lock().unwrap() = (200, document(&[&kept, &no_alg]));
    let refused = until_refused(&pki, gate.addr, &token("removed", &removed_key)).await;
    assert!(refused.starts_with("E_AUTH_FAILED"), "{refused}");
    assert_eq!(
        auth_reply(&pki, gate.addr, &token("kept", &kept_key)).await,
        "OK"
    );
    assert!(
        gate.log().contains("JWKS entry skipped"),
        "the skipped entry is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_https_caller_is_refused_once_its_key_leaves_the_jwks() {
    let pki = Pki::new();
    let (removed_key, removed) = es256_jwk("removed", true);
    let (_, kept) = es256_jwk("kept", true);
    let answer: Answer = Arc::new(Mutex::new((200, document(&[&removed, &kept]))));
    let (server, _task) = jwks_server(&pki, answer.clone()).await;
    let nsqd = Nsqd::start(&pki);
    let (_gate, front) = gate(&pki, &nsqd, server, "");
    // One connection, one token, request after request: the gate remembers the accepted
    // token between them, and must stop believing it when its key is gone.
    let bearer = token("removed", &removed_key);
    let mut tls = https(&pki, front).await;
    let first = publish_kept_alive(&mut tls, &bearer).await;
    assert!(first.starts_with("http/1.1 200"), "{first}");
    *answer.lock().unwrap() = (200, document(&[&kept]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let reply = publish_kept_alive(&mut tls, &bearer).await;
        if !reply.starts_with("http/1.1 200") {
            break reply;
        }
        assert!(Instant::now() < deadline, "still accepted after 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(nsqd.message_count("kept") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_fails_closed_past_max_stale() {
    let pki = Pki::new();
    // No `alg` on the issuer's key: the configured algorithms say how to use it.
    let (key, jwk) = es256_jwk("k", false);
    let answer: Answer = Arc::new(Mutex::new((200, document(&[&jwk]))));
    let (server, task) = jwks_server(&pki, answer).await;
    let nsqd = Nsqd::start(&pki);
    let extra = "algorithms = [\"ES256\"]\njwks_max_stale_secs = 3";
    let (gate, https) = gate(&pki, &nsqd, server, extra);
    assert_eq!(auth_reply(&pki, gate.addr, &token("k", &key)).await, "OK");
    let metrics = get(&pki, https, "/metrics").await;
    assert_eq!(metric(&metrics, "nsqgate_jwks_stale"), 0, "{metrics}");

    // The issuer becomes unreachable; the last good set is trusted for 3 s, then not.
    task.abort();
    let refused = until_refused(&pki, gate.addr, &token("k", &key)).await;
    assert!(refused.starts_with("E_AUTH_FAILED"), "{refused}");
    let metrics = get(&pki, https, "/metrics").await;
    assert_eq!(metric(&metrics, "nsqgate_jwks_stale"), 1, "{metrics}");
    assert!(metric(&metrics, "nsqgate_jwks_refresh_failures_total") >= 1);
    assert!(metric(&metrics, "nsqgate_jwks_age_seconds") >= 3);
    assert!(
        gate.log()
            .contains("JWKS refresh failed and the key set is older than jwks_max_stale_secs"),
        "fail-closed is logged"
    );
    let reasons: Vec<String> = gate
        .audit_events()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("JWKS) is stale")),
        "the refusal's reason is audited: {reasons:?}"
    );
}

#[test]
fn check_config_names_bad_jwks_settings() {
    let pki = Pki::new();
    let nsqd: SocketAddr = ([127, 0, 0, 1], 4151).into();
    let config = pki.path("jwks-check.toml");
    for (jwt, key) in [
        (
            "jwks_refresh_secs = 300\njwks_max_stale_secs = 300",
            "auth.jwt.jwks_max_stale_secs",
        ),
        ("algorithms = [\"none\"]", "auth.jwt.algorithms"),
    ] {
        GateConfig::new(nsqd)
            .policy("open-policy")
            .table(&format!(
                "[auth.jwt]\njwks_url = \"https://127.0.0.1:1/keys.json\"\njwks_ca = \"ca.pem\"\n{jwt}"
            ))
            .write(&config);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nsqgate"))
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("NSQGATE_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{jwt}: {err}");
        assert!(err.contains(key), "{jwt}: {err}");
    }
}
