//! Client certificates where they are optional, and on the HTTPS fronts (README, "Identity and
//! policy" and "HTTP"): with `client_cert = "optional"` a certificate names a TCP client with no
//! AUTH, and a client without one must AUTH; on the nsqd HTTPS front a certificate is an
//! identity too; a bearer token that fails is 401 even when the certificate alone would have
//! been accepted; and no secret reaches nsqgate's log or audit lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod claims_support;
mod common;

use serde_json::json;

use claims_support::https;
use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::FrameType;
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

const CERT_ID: &str = "spiffe://nsqgate.test/alice";

/// The certificate's identity may publish to `certs.*`, the API key's to `keys.*`.
fn policy(key: &str) -> String {
    format!(
        r#"
[roles.certified]
allow = [{{ action = "publish", topics = ["certs.*"] }}]

[roles.keyed]
allow = [{{ action = "publish", topics = ["keys.*"] }}]

[identities]
"{CERT_ID}" = ["certified"]

[api_keys.keyed]
sha256 = "{}"
roles = ["keyed"]
"#,
        common::key_sha256(key.as_bytes())
    )
}

struct Setup {
    pki: Pki,
    nsqd: Nsqd,
    gate: Gate,
    key: String,
}

/// An identity required; certificates optional, on TCP and on the nsqd HTTPS front.
fn start() -> Setup {
    let pki = Pki::new();
    pki.issue_spiffe_client("alice");
    let key = apikey::generate();
    pki.write_policy("policy", "main.toml", &policy(&key));
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .client("tls_client_ca = \"ca.pem\"\nclient_cert = \"optional\"")
        .policy("policy")
        .http_nsqd(nsqd.https)
        .start(&pki);
    Setup {
        pki,
        nsqd,
        gate,
        key,
    }
}

#[tokio::test]
async fn an_optional_certificate_names_a_tcp_client_and_without_one_auth_is_needed() {
    let s = start();
    let ca = s.pki.path("ca.pem");
    let with_cert = tls_connector(
        &ca,
        Some((&s.pki.path("alice.pem"), &s.pki.path("alice.key"))),
    );
    let without = tls_connector(&ca, None);

    // The certificate is the identity: no AUTH, its role applies.
    let (mut alice, _) = RawClient::upgraded(s.gate.addr, &with_cert, json!({})).await;
    let ok = alice
        .publish("certs.tcp", b"by certificate")
        .await
        .expect("a reply");
    assert!(
        ok.is_ok(),
        "PUB with a certificate and no AUTH: {}",
        frame_text(&ok)
    );
    let denied = alice
        .publish("keys.tcp", b"not hers")
        .await
        .expect("a reply");
    assert!(
        frame_text(&denied).starts_with("E_UNAUTHORIZED"),
        "{}",
        frame_text(&denied)
    );

    // Without one, the client is told to AUTH first, and its key then decides.
    let (mut anonymous, reply) = RawClient::upgraded(s.gate.addr, &without, json!({})).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    let refused = anonymous
        .publish("certs.tcp", b"nobody")
        .await
        .expect("a reply");
    assert_eq!(refused.frame_type, FrameType::Error);
    assert!(
        frame_text(&refused).starts_with("E_AUTH_FIRST"),
        "{}",
        frame_text(&refused)
    );
    let keyed = RawClient::authenticated(s.gate.addr, &without, &s.key).await;
    let mut keyed = keyed;
    let ok = keyed.publish("keys.tcp", b"by key").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));

    assert_eq!(s.nsqd.message_count("certs.tcp"), 1);
    assert_eq!(s.nsqd.message_count("keys.tcp"), 1);
}

#[tokio::test]
async fn on_the_https_front_a_certificate_is_an_identity_and_a_bad_token_is_401_all_the_same() {
    let s = start();
    let ca = s.pki.path("ca.pem");
    let with_cert = tls_connector(
        &ca,
        Some((&s.pki.path("alice.pem"), &s.pki.path("alice.key"))),
    );
    let without = tls_connector(&ca, None);
    let front = s.gate.http("nsqd");
    let wrong = format!(
        "Bearer {}",
        "nsqk_wrong_secret_never_logged_0000000000000000000"
    );
    let right = format!("Bearer {}", s.key);
    let post = |connector, topic: &'static str, headers: Vec<(&'static str, String)>| {
        let connector = if connector {
            with_cert.clone()
        } else {
            without.clone()
        };
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            https(
                front,
                &connector,
                "POST",
                &format!("/pub?topic={topic}"),
                &headers,
                b"x",
            )
            .await
            .unwrap_or_else(|e| panic!("POST /pub?topic={topic}: {e}"))
        }
    };

    let (status, body) = post(true, "certs.http", vec![]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "OK"),
        "the certificate alone publishes"
    );
    let (status, body) = post(true, "keys.http", vec![]).await;
    assert_eq!(status, 403, "its role does not cover keys.*: {body}");
    let (status, body) = post(false, "certs.http", vec![]).await;
    assert_eq!(status, 401, "no certificate, no token: {body}");
    // A failing token is not overlooked because a certificate came with it.
    let (status, body) = post(true, "certs.http", vec![("authorization", wrong.clone())]).await;
    assert_eq!(status, 401, "a bad token with a good certificate: {body}");
    let (status, body) = post(false, "keys.http", vec![("authorization", right)]).await;
    assert_eq!((status, body.as_str()), (200, "OK"));

    assert_eq!(s.nsqd.message_count("certs.http"), 1);
    assert_eq!(s.nsqd.message_count("keys.http"), 1);
    let log = s.gate.log();
    for secret in [&s.key[..], "nsqk_wrong_secret_never_logged"] {
        assert!(!log.contains(secret), "{secret} in nsqgate's log:\n{log}");
    }
    assert!(
        log.contains(CERT_ID),
        "the certificate's identity is logged:\n{log}"
    );
}
