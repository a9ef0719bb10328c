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

fn with_algorithms(doc: Vec<u8>, algorithms: &[Algorithm]) -> Result<JwtVerifier, JwtConfigError> {
    JwtVerifier::new(&JwtSettings {
        jwks: Some(doc),
        algorithms: algorithms.to_vec(),
        ..JwtSettings::default()
    })
}

#[test]
fn entries_without_alg_use_the_configured_algorithms_that_fit() {
    let rsa = rsa_signing_key();
    let (ec, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut no_alg = jwk(&rsa, Algorithm::RS256, "r");
    no_alg.as_object_mut().unwrap().remove("alg");
    let good = jwk(&ec, Algorithm::ES256, "e");
    let token = |alg| sign(alg, Some("r"), &claims(), &rsa);
    // None configured: the entry is skipped, the rest applies.
    let v = with_algorithms(jwks(vec![no_alg.clone(), good.clone()]), &[]).unwrap();
    assert!(matches!(
        v.verify_at(&token(Algorithm::RS256), NOW),
        Err(AuthError::UnknownKid(_))
    ));
    let err = with_algorithms(jwks(vec![no_alg.clone()]), &[]).unwrap_err();
    assert!(matches!(err, JwtConfigError::EmptyJwks), "{err}");
    // Only the configured algorithms that fit the key type.
    let v = with_algorithms(
        jwks(vec![no_alg.clone()]),
        &[Algorithm::ES256, Algorithm::RS256],
    )
    .unwrap();
    assert!(v.verify_at(&token(Algorithm::RS256), NOW).is_ok());
    assert!(matches!(
        v.verify_at(&token(Algorithm::PS256), NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
    let v = with_algorithms(jwks(vec![no_alg]), &[Algorithm::RS256, Algorithm::PS256]).unwrap();
    assert!(v.verify_at(&token(Algorithm::RS256), NOW).is_ok());
    assert!(v.verify_at(&token(Algorithm::PS256), NOW).is_ok());
    // An EC key is never tried as RSA, whatever is configured.
    let mut ec_no_alg = good;
    ec_no_alg.as_object_mut().unwrap().remove("alg");
    let err = with_algorithms(jwks(vec![ec_no_alg]), &[Algorithm::RS256]).unwrap_err();
    assert!(matches!(err, JwtConfigError::EmptyJwks), "{err}");
}

#[test]
fn entries_whose_type_does_not_fit_their_alg_are_skipped() {
    let good = jwk(&rsa_signing_key(), Algorithm::RS256, "good");
    let mut rsa_as_ec = jwk(&rsa_signing_key(), Algorithm::RS256, "r");
    rsa_as_ec["alg"] = json!("ES256");
    let (ec384, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P384_SHA384);
    let mut wrong_curve = jwk(&ec384, Algorithm::ES384, "e");
    wrong_curve["alg"] = json!("ES256");
    let mut short_hmac = jwk(&EncodingKey::from_secret(&[3; 32]), Algorithm::HS256, "h");
    short_hmac["alg"] = json!("HS512");
    for bad in [rsa_as_ec, wrong_curve, short_hmac] {
        let v = from_jwks(jwks(vec![bad.clone(), good.clone()])).unwrap();
        let kid = bad["kid"].as_str().unwrap();
        let (ec, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            v.verify_at(&sign(Algorithm::ES256, Some(kid), &claims(), &ec), NOW),
            Err(AuthError::UnknownKid(_))
        ));
        let err = from_jwks(jwks(vec![bad])).unwrap_err();
        assert!(matches!(err, JwtConfigError::EmptyJwks), "{err}");
    }
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
    // Every entry of a duplicated kid is skipped: which one is meant cannot be known.
    let rsa = rsa_signing_key();
    let doc = jwks(vec![
        jwk(&rsa, Algorithm::RS256, "x"),
        jwk(&rsa, Algorithm::PS256, "x"),
        jwk(&rsa, Algorithm::RS256, "y"),
    ]);
    let v = from_jwks(doc).unwrap();
    let at = |kid| v.verify_at(&sign(Algorithm::RS256, Some(kid), &claims(), &rsa), NOW);
    assert!(at("y").is_ok());
    assert!(matches!(at("x"), Err(AuthError::UnknownKid(_))));
}

#[test]
fn a_jwks_entry_cannot_take_the_kid_of_a_file_key() {
    let rsa = rsa_signing_key();
    let v = JwtVerifier::new(&JwtSettings {
        jwks: Some(jwks(vec![
            jwk(&rsa, Algorithm::RS256, "k"),
            jwk(&rsa, Algorithm::RS256, "other"),
        ])),
        ..settings(vec![key(
            Some("k"),
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap();
    let file_token = sign(
        Algorithm::HS256,
        Some("k"),
        &claims(),
        &EncodingKey::from_secret(HS_SECRET),
    );
    assert!(v.verify_at(&file_token, NOW).is_ok());
    assert!(matches!(
        v.verify_at(&sign(Algorithm::RS256, Some("k"), &claims(), &rsa), NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn a_refresh_drops_a_removed_key_despite_an_entry_without_alg() {
    let (kept, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (removed, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let v = from_jwks(jwks(vec![
        jwk(&kept, Algorithm::ES256, "kept"),
        jwk(&removed, Algorithm::ES256, "removed"),
    ]))
    .unwrap();
    let token = |kid, key| sign(Algorithm::ES256, Some(kid), &claims(), key);
    assert!(v.verify_at(&token("removed", &removed), NOW).is_ok());
    let mut no_alg = jwk(&rsa_signing_key(), Algorithm::RS256, "odd");
    no_alg.as_object_mut().unwrap().remove("alg");
    let skipped = v
        .replace_jwks(&jwks(vec![jwk(&kept, Algorithm::ES256, "kept"), no_alg]))
        .unwrap();
    assert_eq!(skipped, 1);
    assert!(v.verify_at(&token("kept", &kept), NOW).is_ok());
    assert!(matches!(
        v.verify_at(&token("removed", &removed), NOW),
        Err(AuthError::UnknownKid(_))
    ));
    let figures = v.jwks_figures();
    assert_eq!(figures.skipped_entries, 1, "{figures:?}");
    assert_eq!(figures.keys, 1, "{figures:?}");
}

#[test]
fn a_stale_jwks_fails_closed_and_file_keys_do_not() {
    let (ec, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let stale = |max_stale| {
        JwtVerifier::new(&JwtSettings {
            jwks: Some(jwks(vec![jwk(&ec, Algorithm::ES256, "e")])),
            jwks_max_stale: Some(max_stale),
            ..settings(vec![key(
                Some("file"),
                Algorithm::HS256,
                KeyMaterial::Secret(HS_SECRET.to_vec()),
            )])
        })
        .unwrap()
    };
    let jwks_token = sign(Algorithm::ES256, Some("e"), &claims(), &ec);
    let unnamed = sign(Algorithm::ES256, None, &claims(), &ec);
    let file_token = sign(
        Algorithm::HS256,
        Some("file"),
        &claims(),
        &EncodingKey::from_secret(HS_SECRET),
    );
    let fresh = stale(std::time::Duration::from_secs(3600));
    assert!(fresh.verify_at(&jwks_token, NOW).is_ok());
    assert_eq!(fresh.jwks_refresh_failed(), None);
    let old = stale(std::time::Duration::ZERO);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(matches!(
        old.verify_at(&jwks_token, NOW),
        Err(AuthError::KeysStale(_))
    ));
    assert!(matches!(
        old.verify_at(&unnamed, NOW),
        Err(AuthError::KeysStale(_))
    ));
    assert!(old.verify_at(&file_token, NOW).is_ok());
    assert!(old.jwks_refresh_failed().is_some());
    let figures = old.jwks_figures();
    assert!(figures.stale, "{figures:?}");
    assert_eq!(figures.refresh_failures, 1, "{figures:?}");
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

#[test]
fn a_token_is_answered_from_memory_only_while_its_acceptance_stands() {
    let (kept, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (removed, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
    let doc = || {
        jwks(vec![
            jwk(&kept, Algorithm::ES256, "kept"),
            jwk(&removed, Algorithm::ES256, "removed"),
        ])
    };
    let v = from_jwks(doc()).unwrap();
    let token = sign(Algorithm::ES256, Some("removed"), &claims(), &removed);
    let other = sign(Algorithm::ES256, Some("kept"), &claims(), &kept);
    let mut last = None;
    // Marks the memory, so an answer from it is told from a verification.
    let mark = |last: &mut Option<crate::auth::jwt::Accepted>| {
        last.as_mut().unwrap().principal_mut().identity = "from memory".to_owned();
    };
    let who = |r: Result<crate::auth::Principal, AuthError>| r.unwrap().identity;

    assert_eq!(who(v.verify_again_at(&token, NOW, &mut last)), "alice");
    mark(&mut last);
    assert_eq!(
        who(v.verify_again_at(&token, NOW + 1, &mut last)),
        "from memory"
    );
    // Another token, a clock set back: each verified anew.
    assert_eq!(who(v.verify_again_at(&other, NOW, &mut last)), "alice");
    mark(&mut last);
    assert_eq!(who(v.verify_again_at(&other, NOW - 1, &mut last)), "alice");
    // A reload (the same key set, an audience now required): judged by the new settings.
    mark(&mut last);
    let audience = Some("elsewhere".to_owned());
    let reloaded = JwtVerifier::keeping_jwks(
        &JwtSettings {
            audience,
            ..JwtSettings::default()
        },
        &v,
    )
    .unwrap();
    let judged = reloaded.verify_again_at(&other, NOW, &mut last);
    assert!(
        matches!(judged, Err(AuthError::MissingClaim("aud"))),
        "{judged:?}"
    );
    // Expired since (exp + the 60 s leeway): refused, and nothing is remembered.
    assert_eq!(who(v.verify_again_at(&other, NOW, &mut last)), "alice");
    mark(&mut last);
    let expired = v.verify_again_at(&other, NOW + 3600 + 60, &mut last);
    assert!(matches!(expired, Err(AuthError::Expired)), "{expired:?}");
    assert!(last.is_none());
    // A refresh that removed the token's key: refused though it was remembered.
    assert_eq!(who(v.verify_again_at(&token, NOW, &mut last)), "alice");
    mark(&mut last);
    v.replace_jwks(&jwks(vec![jwk(&kept, Algorithm::ES256, "kept")]))
        .unwrap();
    let gone = v.verify_again_at(&token, NOW, &mut last);
    assert!(matches!(gone, Err(AuthError::UnknownKid(_))), "{gone:?}");

    // A set gone stale since: refused though remembered.
    let max_stale = std::time::Duration::from_millis(300);
    let soon_stale = JwtVerifier::new(&JwtSettings {
        jwks: Some(doc()),
        jwks_max_stale: Some(max_stale),
        ..JwtSettings::default()
    })
    .unwrap();
    let mut last = None;
    assert_eq!(
        who(soon_stale.verify_again_at(&token, NOW, &mut last)),
        "alice"
    );
    mark(&mut last);
    std::thread::sleep(max_stale + std::time::Duration::from_millis(50));
    let stale = soon_stale.verify_again_at(&token, NOW, &mut last);
    assert!(matches!(stale, Err(AuthError::KeysStale(_))), "{stale:?}");
}
