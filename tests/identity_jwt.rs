//! Identity by JWT, end to end against the real nsqgate binary and nsqd: stock clients
//! (to_nsq, pynsq) and a raw client publish with a token only where the policy allows; bad
//! tokens are refused, audited and never reach nsqd; a token that expires while connected stops
//! publishing; keys fetched from a JWKS URL are refreshed and kept when a refresh fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod identity_support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::nsqclient::{assert_error, assert_ok, frame_text, tls_connector, RawClient};
use common::wire::{Command, FrameType};
use common::{GateConfig, Nsqd, Pki};
use identity_support::{
    authed, claims, connect, explain, fingerprint, hand_built, now, pynsq_publish, start_gate,
    to_nsq, with, Fixture, RSA_PUBLIC_PEM,
};

// === stock clients with a JWT ===

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
        f.gate.wait_audit(&format!("deny of {topic}"), |e| {
            e["action"] == "publish"
                && e["topic"] == topic
                && e["outcome"] == "deny"
                && e["identity"] == "alice"
        });
    }
}

// === refused JWTs ===

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
        let event = f.gate.wait_audit(name, |e| {
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

// === a token that expires while connected ===

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
    f.gate.wait_audit("expired token", |e| {
        e["action"] == "publish" && e["outcome"] == "deny" && e["reason"] == "token expired"
    });
}

/// A subscriber sends nothing the guard could refuse: its token's expiry is a deadline of its
/// own, which revokes the subscription (RDY 0, the grace, then the client is told).
#[tokio::test]
async fn a_subscriber_whose_token_expires_is_revoked_without_sending_a_command() {
    let f = Fixture::new();
    let exp = now() + 3;
    let token = f.token("hs", &with(claims("alice"), "exp", json!(exp)));
    let mut client = authed(&f, &f.gate, &token).await;
    let reply = client
        .sub("orders.expiry", "billing")
        .await
        .expect("SUB reply");
    assert!(reply.is_ok(), "SUB: {}", frame_text(&reply));
    client.send(&Command::Rdy { count: 5 }).await;

    let told = client
        .read_frame_within(Duration::from_secs(20))
        .await
        .expect("told why, after the expiry and the grace");
    assert_eq!(frame_text(&told), "E_UNAUTHORIZED permission revoked");
    assert!(
        SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(exp),
        "told before the token expired"
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    f.gate
        .wait_audit("the expired subscriber's revocation", |e| {
            e["action"] == "revoke" && e["reason"] == "token expired" && e["identity"] == "alice"
        });
}

// === a token inside the leeway (found while writing these tests) ===

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

// === keys fetched from a JWKS URL ===

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
            client.auth(&secret).await.map(|f| f.frame_type)
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
