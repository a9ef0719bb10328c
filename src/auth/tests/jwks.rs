//! JWKS documents: kid selection, entry validation, and hot replacement.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::json;

use super::*;
use crate::auth::jwt::{JwtConfigError, JwtSettings};
use crate::auth::AuthError;

/// The public JWK of `signing`, as JSON, bound to `alg` and named `kid`.
fn jwk(signing: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(signing, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

/// The same from a public key, for Ed25519 (jsonwebtoken cannot export rcgen's PKCS#8 v2).
fn public_jwk(public_pem: &[u8], alg: Algorithm, kid: &str) -> Value {
    let key = DecodingKey::from_ed_pem(public_pem).unwrap();
    let mut jwk = Jwk::from_decoding_key(&key, Some(alg)).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn jwks(keys: Vec<Value>) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

fn from_jwks(doc: Vec<u8>) -> Result<JwtVerifier, JwtConfigError> {
    JwtVerifier::new(&JwtSettings {
        jwks: Some(doc),
        ..JwtSettings::default()
    })
}

#[test]
fn kid_selects_the_key() {
    let rsa = rsa_signing_key();
    let (ec, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (ed, ed_public) = rcgen_pair(&rcgen::PKCS_ED25519);
    let (other_ec, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let v = from_jwks(jwks(vec![
        jwk(&rsa, Algorithm::RS256, "r1"),
        jwk(&ec, Algorithm::ES256, "e1"),
        public_jwk(&ed_public, Algorithm::EdDSA, "d1"),
    ]))
    .unwrap();
    let ok = |alg, kid, key: &EncodingKey| v.verify_at(&sign(alg, Some(kid), &claims(), key), NOW);
    assert_eq!(ok(Algorithm::RS256, "r1", &rsa).unwrap().identity, "alice");
    assert!(ok(Algorithm::ES256, "e1", &ec).is_ok());
    assert!(ok(Algorithm::EdDSA, "d1", &ed).is_ok());
    // Right algorithm, wrong key behind the kid.
    assert!(matches!(
        ok(Algorithm::ES256, "e1", &other_ec),
        Err(AuthError::BadSignature)
    ));
    // A kid names the RSA key but the header asks for ECDSA.
    assert!(matches!(
        ok(Algorithm::ES256, "r1", &ec),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
    assert!(matches!(
        ok(Algorithm::ES256, "zz", &ec),
        Err(AuthError::UnknownKid(_))
    ));
    // Without a kid, the keys of the header's algorithm are tried.
    assert!(v
        .verify_at(&sign(Algorithm::ES256, None, &claims(), &ec), NOW)
        .is_ok());
}

#[test]
fn entries_must_name_their_alg() {
    let mut entry = jwk(&rsa_signing_key(), Algorithm::RS256, "r1");
    entry.as_object_mut().unwrap().remove("alg");
    let err = from_jwks(jwks(vec![entry])).unwrap_err();
    assert!(matches!(err, JwtConfigError::JwkMissingAlg { .. }), "{err}");
}

#[test]
fn entry_type_must_match_alg() {
    let mut entry = jwk(&rsa_signing_key(), Algorithm::RS256, "r1");
    entry["alg"] = json!("ES256");
    let err = from_jwks(jwks(vec![entry])).unwrap_err();
    assert!(matches!(err, JwtConfigError::InvalidKey { .. }), "{err}");
    let (ec384, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P384_SHA384);
    let mut entry = jwk(&ec384, Algorithm::ES384, "e");
    entry["alg"] = json!("ES256");
    let err = from_jwks(jwks(vec![entry])).unwrap_err();
    assert!(matches!(err, JwtConfigError::InvalidKey { .. }), "{err}");
    let mut entry = jwk(&EncodingKey::from_secret(&[3; 32]), Algorithm::HS256, "h");
    entry["alg"] = json!("HS512");
    let err = from_jwks(jwks(vec![entry])).unwrap_err();
    assert!(
        matches!(err, JwtConfigError::SecretTooShort { .. }),
        "{err}"
    );
}

#[test]
fn encryption_and_unsupported_entries_are_skipped() {
    let rsa = rsa_signing_key();
    let mut enc = jwk(&rsa, Algorithm::RS256, "enc");
    enc["use"] = json!("enc");
    let mut oaep = jwk(&rsa, Algorithm::RS256, "oaep");
    oaep["alg"] = json!("RSA-OAEP");
    let mut es512 = jwk(&rsa, Algorithm::RS256, "es512");
    es512["alg"] = json!("ES512");
    let sig = jwk(&rsa, Algorithm::RS256, "sig");
    let v = from_jwks(jwks(vec![enc.clone(), oaep.clone(), es512.clone(), sig])).unwrap();
    let at = |kid| v.verify_at(&sign(Algorithm::RS256, Some(kid), &claims(), &rsa), NOW);
    assert!(at("sig").is_ok());
    assert!(matches!(at("enc"), Err(AuthError::UnknownKid(_))));
    assert!(matches!(at("oaep"), Err(AuthError::UnknownKid(_))));
    let err = from_jwks(jwks(vec![enc, oaep, es512])).unwrap_err();
    assert!(matches!(err, JwtConfigError::EmptyJwks), "{err}");
}

#[test]
fn bad_documents() {
    let secret_doc = br#"{"keys": [{"kty": "oct", "k": "TOPSECRETTOPSECRET", "alg": 5}]}"#;
    let cases: [&[u8]; 5] = [b"", b"not json", b"[]", br#"{"keys": {}}"#, secret_doc];
    for doc in cases {
        let err = from_jwks(doc.to_vec()).unwrap_err();
        assert!(matches!(err, JwtConfigError::InvalidJwks(_)), "{err}");
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }
    assert!(matches!(
        from_jwks(jwks(Vec::new())),
        Err(JwtConfigError::EmptyJwks)
    ));
    let rsa = rsa_signing_key();
    let doc = jwks(vec![
        jwk(&rsa, Algorithm::RS256, "x"),
        jwk(&rsa, Algorithm::PS256, "x"),
    ]);
    assert!(matches!(
        from_jwks(doc),
        Err(JwtConfigError::DuplicateKid(_))
    ));
}

#[test]
fn kid_shared_by_a_file_key_and_a_jwks_key() {
    let err = JwtVerifier::new(&JwtSettings {
        jwks: Some(jwks(vec![jwk(&rsa_signing_key(), Algorithm::RS256, "k")])),
        ..settings(vec![key(
            Some("k"),
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap_err();
    assert!(matches!(err, JwtConfigError::DuplicateKid(_)), "{err}");
}

#[test]
fn replace_jwks_swaps_and_keeps_the_last_good_set() {
    let (old, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (new, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let v = JwtVerifier::new(&JwtSettings {
        jwks: Some(jwks(vec![jwk(&old, Algorithm::ES256, "old")])),
        ..settings(vec![key(
            Some("file"),
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap();
    let old_token = sign(Algorithm::ES256, Some("old"), &claims(), &old);
    let new_token = sign(Algorithm::ES256, Some("new"), &claims(), &new);
    let file_token = sign(
        Algorithm::HS256,
        Some("file"),
        &claims(),
        &EncodingKey::from_secret(HS_SECRET),
    );
    assert!(v.verify_at(&old_token, NOW).is_ok());

    // Bad documents are refused and the old set stays in force.
    let mut no_alg = jwk(&new, Algorithm::ES256, "new");
    no_alg.as_object_mut().unwrap().remove("alg");
    let bad_docs = [
        b"{ truncated".to_vec(),
        jwks(Vec::new()),
        jwks(vec![no_alg]),
        jwks(vec![jwk(&new, Algorithm::ES256, "file")]), // collides with a file key
    ];
    for doc in bad_docs {
        assert!(v.replace_jwks(&doc).is_err());
        assert!(v.verify_at(&old_token, NOW).is_ok());
        assert!(matches!(
            v.verify_at(&new_token, NOW),
            Err(AuthError::UnknownKid(_))
        ));
    }

    v.replace_jwks(&jwks(vec![jwk(&new, Algorithm::ES256, "new")]))
        .unwrap();
    assert!(v.verify_at(&new_token, NOW).is_ok());
    assert!(matches!(
        v.verify_at(&old_token, NOW),
        Err(AuthError::UnknownKid(_))
    ));
    assert!(
        v.verify_at(&file_token, NOW).is_ok(),
        "file keys survive a swap"
    );
}

#[test]
fn verifier_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JwtVerifier>();
}
