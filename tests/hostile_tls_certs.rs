//! Hostile TLS identities (issue 13): client certificates from an unknown CA or expired are
//! refused at the handshake and reach nothing; a server name (SNI) that is not nsqgate's gets
//! nsqgate's one certificate, and the client's own verification refuses the mismatch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::nsqclient::tls_connector;
use common::wire::MAGIC_V2;
use common::{GateConfig, Nsqd, Pki, MAX_MSG_SIZE};
use hostile_support::{setup, with_body, ANSWER_LIMIT};
use nsqgate::certs::{ClientSubject, DevCa};

const CERT_POLICY: &str = r#"
[roles.publisher]
allow = [{ action = "publish", topics = ["**"] }]

[identities]
good-client = ["publisher"]
expired-client = ["publisher"]
foreign-client = ["publisher"]
"#;

/// nsqd and an nsqgate that requires a client certificate from the test CA.
fn mtls_gate(pki: &Pki) -> (Nsqd, common::Gate) {
    pki.write_policy("cert-policy", "certs.toml", CERT_POLICY);
    let nsqd = Nsqd::start(pki);
    let gate = GateConfig::new(nsqd.tcp)
        .client("require_tls = true\ntls_client_ca = \"ca.pem\"\nclient_cert = \"required\"")
        .auth("require_identity = true")
        .policy("cert-policy")
        .table(&format!("[limits]\nmax_msg_size = {MAX_MSG_SIZE}"))
        .start(pki);
    (nsqd, gate)
}

/// A client certificate from the test CA's key whose validity ended in 2021.
fn issue_expired(pki: &Pki, name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    // The CA as an issuer again: same key, same name (what a chain is matched by).
    let ca_key = KeyPair::from_pem(&pki.ca.pem().key).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    pki.write(
        name,
        &nsqgate::certs::Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial: Vec::new(),
        },
    );
}

/// TLS from the first byte with `name`'s certificate, then the magic and a PUB to `topic`:
/// Ok(the first frame's text), or Err(how the connection was refused).
async fn publish_with_cert(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    topic: &str,
) -> Result<String, String> {
    let cert = pki.path(&format!("{name}.pem"));
    let key = pki.path(&format!("{name}.key"));
    let connector = tls_connector(&pki.path("ca.pem"), Some((&cert, &key)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(server, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let publish = with_body(format!("PUB {topic}\n").as_bytes(), 4, b"cert");
    let _ = tls
        .write_all(&[MAGIC_V2.as_slice(), &publish].concat())
        .await;
    // With TLS 1.3 the server judges the certificate after the client's Finished: the
    // refusal arrives as an alert on the first read.
    let first = tokio::time::timeout(ANSWER_LIMIT, async {
        let mut size = [0u8; 4];
        tls.read_exact(&mut size).await?;
        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
        tls.read_exact(&mut frame).await?;
        Ok::<_, std::io::Error>(frame)
    })
    .await;
    match first {
        Err(_) => Err("no answer and no close".into()),
        Ok(Err(e)) => Err(format!("after the handshake: {e}")),
        Ok(Ok(frame)) => {
            Ok(String::from_utf8_lossy(frame.get(4..).unwrap_or_default()).into_owned())
        }
    }
}

#[tokio::test]
async fn client_certificates_from_an_unknown_ca_or_expired_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let (nsqd, gate) = mtls_gate(&pki);
    let subject = |name: &str| ClientSubject {
        common_name: name.into(),
        ..ClientSubject::default()
    };
    pki.issue_client("good-client", &subject("good-client"));
    let foreign = DevCa::generate("another CA").unwrap();
    pki.write(
        "foreign-client",
        &foreign.issue_client(&subject("foreign-client")).unwrap(),
    );
    issue_expired(&pki, "expired-client");

    // The control: the same set-up lets a valid certificate publish.
    let good = publish_with_cert(&pki, gate.addr, "good-client", "good").await;
    assert_eq!(good.as_deref(), Ok("OK"));
    for (name, topic) in [("foreign-client", "foreign"), ("expired-client", "expired")] {
        let seen = publish_with_cert(&pki, gate.addr, name, topic).await;
        assert!(seen.is_err(), "{name}: {seen:?}");
        assert!(!nsqd.topic_exists(topic), "{name}: reached nsqd");
    }
    // Each refusal is logged by name (the client may see the alert before the line is written).
    gate.wait_log(&["client TLS handshake failed", "UnknownIssuer"]);
    gate.wait_log(&["client TLS handshake failed", "certificate expired"]);
}

/// Verifies the server's certificate for a fixed name, whatever name the client sends as SNI:
/// a client that reaches nsqgate by another name but knows which certificate to expect.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// nsqgate has one certificate and does not choose by SNI: a client that names another host
/// gets the same certificate, and its own verification is what refuses the mismatch.
#[tokio::test]
async fn a_server_name_that_is_not_nsqgates_gets_nsqgates_one_certificate() {
    let setup = setup();
    let pki_ca = setup.ca_path();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = common::nsqclient::ca_roots(&pki_ca);
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(VerifyAs {
            inner: verifier,
            name: ServerName::try_from("127.0.0.1").unwrap(),
        }))
        .with_no_client_auth();
    let sni_elsewhere = tokio_rustls::TlsConnector::from(Arc::new(config));
    let elsewhere = ServerName::try_from("not-the-gate.example").unwrap();

    // SNI names another host: the handshake completes with nsqgate's certificate (verified
    // for 127.0.0.1 above), and the connection works.
    let tcp = TcpStream::connect(setup.gate.addr).await.unwrap();
    let mut tls = sni_elsewhere
        .connect(elsewhere.clone(), tcp)
        .await
        .expect("handshake with another SNI");
    let publish = with_body(b"PUB sni\n", 3, b"sni");
    tls.write_all(&[MAGIC_V2.as_slice(), &publish].concat())
        .await
        .unwrap();
    let mut ok = [0u8; 10];
    tls.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok[8..], b"OK");
    assert_eq!(setup.nsqd.message_count("sni"), 1);

    // A client that verifies the name it sent refuses nsqgate's certificate itself.
    let tcp = TcpStream::connect(setup.gate.addr).await.unwrap();
    let Err(error) = setup.connector.connect(elsewhere, tcp).await else {
        panic!("a certificate for another name accepted");
    };
    assert!(error.to_string().contains("not valid for name"), "{error}");
}
