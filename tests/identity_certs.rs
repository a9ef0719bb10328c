//! Identity by client certificate, end to end: a SPIFFE certificate publishes per its role, a
//! foreign CA is refused at the handshake, and a certificate the CRL revokes is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod identity_support;

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::nsqclient::{assert_ok, tls_connector};
use common::wire::Command;
use common::{GateConfig, Nsqd, Pki};
use identity_support::{connect, to_nsq, try_upgrade, Fixture, MTLS_REQUIRED, SPIFFE_ID};
use nsqgate::certs::{ClientSubject, DevCa};

// === client certificates ===

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

    gate.wait_audit("certificate authentication", |e| {
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

// === client certificates revoked by a CRL ===

#[tokio::test]
async fn a_client_certificate_revoked_by_the_crl_is_refused() {
    let pki = Pki::new();
    let issue = |name: &str| pki.issue_spiffe_client(name);
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
