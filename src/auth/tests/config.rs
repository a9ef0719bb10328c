//! Key configuration rejected by `JwtVerifier::new`: each key is bound to one usable algorithm.

use jsonwebtoken::Algorithm;

use super::*;
use crate::auth::jwt::{JwtConfigError, JwtSettings};

fn refuse(keys: Vec<JwtKey>) -> JwtConfigError {
    JwtVerifier::new(&settings(keys)).unwrap_err()
}

#[test]
fn hmac_key_given_as_pem() {
    let err = refuse(vec![key(
        None,
        Algorithm::HS256,
        KeyMaterial::Pem(RSA_PUBLIC_PEM.to_vec()),
    )]);
    assert!(matches!(err, JwtConfigError::PemForHmac { .. }), "{err}");
}

#[test]
fn asymmetric_algorithm_given_a_secret() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let err = refuse(vec![key(
            None,
            alg,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )]);
        assert!(
            matches!(err, JwtConfigError::SecretForAsymmetric { .. }),
            "{err}"
        );
    }
}

#[test]
fn short_hmac_secrets() {
    let err = refuse(vec![key(
        Some("k"),
        Algorithm::HS256,
        KeyMaterial::Secret(vec![1; 31]),
    )]);
    assert!(
        matches!(
            err,
            JwtConfigError::SecretTooShort {
                len: 31,
                min: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains('\u{1}'));
    let err = refuse(vec![key(
        None,
        Algorithm::HS512,
        KeyMaterial::Secret(vec![1; 32]),
    )]);
    assert!(
        matches!(err, JwtConfigError::SecretTooShort { min: 64, .. }),
        "{err}"
    );
    let err = refuse(vec![key(
        None,
        Algorithm::HS256,
        KeyMaterial::Secret(Vec::new()),
    )]);
    assert!(
        matches!(err, JwtConfigError::SecretTooShort { len: 0, .. }),
        "{err}"
    );
}

#[test]
fn duplicate_kid() {
    let err = refuse(vec![
        key(
            Some("a"),
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        ),
        key(
            Some("a"),
            Algorithm::RS256,
            KeyMaterial::Pem(RSA_PUBLIC_PEM.to_vec()),
        ),
    ]);
    assert!(
        matches!(err, JwtConfigError::DuplicateKid(ref k) if k == "a"),
        "{err}"
    );
}

#[test]
fn private_key_pem_is_refused() {
    let err = refuse(vec![key(
        None,
        Algorithm::RS256,
        KeyMaterial::Pem(RSA_PRIVATE_PEM.to_vec()),
    )]);
    assert!(matches!(err, JwtConfigError::PrivateKey { .. }), "{err}");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = ec.serialize_pem().into_bytes();
    let err = refuse(vec![key(None, Algorithm::ES256, KeyMaterial::Pem(pem))]);
    assert!(matches!(err, JwtConfigError::PrivateKey { .. }), "{err}");
}

#[test]
fn small_rsa_key_is_refused() {
    let err = refuse(vec![key(
        None,
        Algorithm::RS256,
        KeyMaterial::Pem(RSA_1024_PUBLIC_PEM.to_vec()),
    )]);
    assert!(
        matches!(err, JwtConfigError::RsaKeyTooSmall { bits: 1024, .. }),
        "{err}"
    );
}

#[test]
fn pem_of_the_wrong_type_or_curve() {
    let (_, p384) = rcgen_pair(&rcgen::PKCS_ECDSA_P384_SHA384);
    let (_, p256) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, ed) = rcgen_pair(&rcgen::PKCS_ED25519);
    let cases = [
        (Algorithm::ES256, p384.clone()),
        (Algorithm::ES384, p256.clone()),
        (Algorithm::RS256, p256.clone()),
        (Algorithm::EdDSA, p256),
        (Algorithm::ES256, ed),
        (Algorithm::ES256, RSA_PUBLIC_PEM.to_vec()),
        (Algorithm::RS256, b"not a pem".to_vec()),
        (
            Algorithm::RS256,
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
        ),
    ];
    for (alg, pem) in cases {
        let err = refuse(vec![key(None, alg, KeyMaterial::Pem(pem))]);
        assert!(
            matches!(err, JwtConfigError::InvalidKey { .. }),
            "{alg:?}: {err}"
        );
    }
}

#[test]
fn no_keys_at_all() {
    assert!(matches!(refuse(Vec::new()), JwtConfigError::NoKeys));
}

#[test]
fn debug_output_hides_secrets() {
    let secret = b"super-secret-value-0123456789abcdef".to_vec();
    let s = JwtSettings {
        jwks: Some(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_vec()),
        ..settings(vec![key(
            Some("k"),
            Algorithm::HS256,
            KeyMaterial::Secret(secret),
        )])
    };
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("super-secret") && !shown.contains("c2VjcmV0"),
        "{shown}"
    );
    let v = JwtVerifier::new(&settings(s.keys.clone())).unwrap();
    let shown = format!("{v:?}");
    assert!(
        !shown.contains("super-secret") && !shown.contains("115, 117, 112"),
        "{shown}"
    );
}
