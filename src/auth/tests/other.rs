//! API keys, secret classification, fingerprints, display strings and certificate identities.

use std::collections::HashSet;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use crate::auth::apikey::{self, PREFIX};
use crate::auth::mtls::{identity_from_cert, IdentitySource};
use crate::auth::{classify, fingerprint, AuthError, Method, SecretKind};

#[test]
fn api_key_shape_and_hash_round_trip() {
    let key = apikey::generate();
    assert!(key.starts_with(PREFIX));
    assert_eq!(key.len(), PREFIX.len() + 43, "{key}");
    let body = &key[PREFIX.len()..];
    assert!(body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(classify(key.as_bytes()), SecretKind::ApiKey);

    let stored = apikey::hash_hex(key.as_bytes());
    assert_eq!(stored.len(), 64);
    assert_eq!(
        apikey::hash(key.as_bytes()),
        apikey::hash(key.clone().as_bytes())
    );
    assert_eq!(apikey::hash_hex(key.as_bytes()), stored);
    assert_ne!(apikey::hash_hex(apikey::generate().as_bytes()), stored);
    assert!(!stored.contains(body));
}

#[test]
fn api_key_hash_is_sha256() {
    assert_eq!(
        apikey::hash_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(apikey::hash(b"abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
}

#[test]
fn api_keys_are_unique() {
    let keys: HashSet<String> = (0..1000).map(|_| apikey::generate()).collect();
    assert_eq!(keys.len(), 1000);
}

#[test]
fn classify_by_shape() {
    let cases: &[(&[u8], SecretKind)] = &[
        (b"nsqk_abc", SecretKind::ApiKey),
        (b"nsqk_", SecretKind::ApiKey),
        (
            b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_",
            SecretKind::Jwt,
        ),
        (b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", SecretKind::Jwt),
        (b"a.b.c", SecretKind::Jwt),
        (b"a.b", SecretKind::Unknown),
        (b"a.b.c.d", SecretKind::Unknown),
        (b".b.c", SecretKind::Unknown),
        (b"a..c", SecretKind::Unknown),
        (b"a.b=.c", SecretKind::Unknown),
        (b"a.b.c ", SecretKind::Unknown),
        (b"NSQK_abc", SecretKind::Unknown),
        (b"hunter2", SecretKind::Unknown),
        (b"", SecretKind::Unknown),
        (b"\xff\xfe.a.b", SecretKind::Unknown),
    ];
    for (secret, kind) in cases {
        assert_eq!(
            classify(secret),
            *kind,
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
}

#[test]
fn fingerprint_is_short_stable_and_not_the_secret() {
    let secrets = [
        apikey::generate(),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl".to_owned(),
        "0123456789ab".to_owned(), // looks like a fingerprint itself
        "nsqk_x".to_owned(),
    ];
    for secret in &secrets {
        let fp = fingerprint(secret.as_bytes());
        assert_eq!(fp.len(), 12);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(fp, fingerprint(secret.as_bytes()));
        assert_ne!(&fp, secret);
        assert!(
            !fp.contains(secret.as_str()) && !secret.contains(&fp),
            "{secret} / {fp}"
        );
    }
    assert_eq!(fingerprint(b"abc"), "ba7816bf8f01");
    assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
}

#[test]
fn display_strings() {
    let shown: Vec<String> = [
        Method::Certificate,
        Method::Jwt,
        Method::ApiKey,
        Method::Named,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(shown, ["certificate", "jwt", "api_key", "identity"]);
    assert_eq!(AuthError::Expired.to_string(), "token expired");
    assert_eq!(
        AuthError::AlgorithmNotAllowed("none".to_owned()).to_string(),
        "algorithm not allowed: none"
    );
    assert_eq!(AuthError::UnknownKid("k".to_owned()).label(), "unknown_kid");
}

// === certificate identities ===

fn cert(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

#[test]
fn identity_from_cert_follows_the_order() {
    use IdentitySource::{Cn, Dns, Uri};
    let spiffe = "spiffe://example.org/ns/prod/sa/writer";
    let full = cert(
        vec![
            dns("writer.example.org"),
            uri(spiffe),
            uri("spiffe://second"),
            dns("b.example"),
        ],
        Some("writer-cn"),
    );
    let id = |order: &[IdentitySource]| identity_from_cert(&full, order);
    assert_eq!(id(&[Uri, Dns, Cn]).as_deref(), Some(spiffe));
    assert_eq!(id(&[Dns, Uri, Cn]).as_deref(), Some("writer.example.org"));
    assert_eq!(id(&[Cn, Uri]).as_deref(), Some("writer-cn"));
    assert_eq!(id(&[]), None);

    let cn_only = cert(Vec::new(), Some("legacy-client"));
    assert_eq!(identity_from_cert(&cn_only, &[Uri, Dns]), None);
    assert_eq!(
        identity_from_cert(&cn_only, &[Uri, Dns, Cn]).as_deref(),
        Some("legacy-client")
    );

    let dns_only = cert(vec![dns("svc.internal")], None);
    assert_eq!(
        identity_from_cert(&dns_only, &[Uri, Dns, Cn]).as_deref(),
        Some("svc.internal")
    );
    assert_eq!(identity_from_cert(&dns_only, &[Uri, Cn]), None);
}

#[test]
fn identity_from_unparseable_cert_is_none() {
    use IdentitySource::{Cn, Dns, Uri};
    assert_eq!(identity_from_cert(b"", &[Uri, Dns, Cn]), None);
    assert_eq!(
        identity_from_cert(b"\x30\x03\x02\x01\x00", &[Uri, Dns, Cn]),
        None
    );
    let good = cert(vec![dns("a.example")], Some("a"));
    assert_eq!(
        identity_from_cert(&good[..good.len() / 2], &[Uri, Dns, Cn]),
        None
    );
}

#[test]
fn identity_source_deserializes_lowercase() {
    let order: Vec<IdentitySource> = serde_json::from_str(r#"["uri", "dns", "cn"]"#).unwrap();
    assert_eq!(
        order,
        [IdentitySource::Uri, IdentitySource::Dns, IdentitySource::Cn]
    );
    assert!(serde_json::from_str::<IdentitySource>(r#""URI""#).is_err());
}
