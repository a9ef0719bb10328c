//! Token verification that succeeds or fails on claims: algorithms, time, iss/aud, identity, roles.

use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::*;
use crate::auth::jwt::JwtSettings;
use crate::auth::{AuthError, Method};

#[test]
fn hs256_good() {
    let principal = hs256_verifier()
        .verify_at(&hs256_token(&claims()), NOW)
        .unwrap();
    assert_eq!(principal.identity, "alice");
    assert_eq!(principal.method, Method::Jwt);
    assert_eq!(principal.claimed_roles, ["reader", "writer"]);
    assert_eq!(
        principal.expires_at,
        Some(UNIX_EPOCH + Duration::from_secs(NOW + 3600 + 60))
    );
}

#[test]
fn ecdsa_and_eddsa_good() {
    let cases = [
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (Algorithm::ES384, &rcgen::PKCS_ECDSA_P384_SHA384),
        (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    ];
    for (alg, rcgen_alg) in cases {
        let (signing, public_pem) = rcgen_pair(rcgen_alg);
        let v = verifier(vec![key(None, alg, KeyMaterial::Pem(public_pem))]);
        let token = sign(alg, None, &claims(), &signing);
        let principal = v.verify_at(&token, NOW).unwrap();
        assert_eq!(principal.identity, "alice", "{alg:?}");
    }
}

#[test]
fn rsa_pkcs1_and_pss_good() {
    for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
        let v = verifier(vec![key(
            None,
            alg,
            KeyMaterial::Pem(RSA_PUBLIC_PEM.to_vec()),
        )]);
        let token = sign(alg, None, &claims(), &rsa_signing_key());
        assert_eq!(
            v.verify_at(&token, NOW).unwrap().identity,
            "alice",
            "{alg:?}"
        );
        // The same key bound to another RSA algorithm refuses the token.
        let other = if alg == Algorithm::PS256 {
            Algorithm::RS256
        } else {
            Algorithm::PS256
        };
        let v = verifier(vec![key(
            None,
            other,
            KeyMaterial::Pem(RSA_PUBLIC_PEM.to_vec()),
        )]);
        assert!(matches!(
            v.verify_at(&token, NOW),
            Err(AuthError::AlgorithmNotAllowed(_))
        ));
    }
}

#[test]
fn verify_uses_the_real_clock() {
    let now = jsonwebtoken::get_current_timestamp();
    let token = hs256_token(&json!({ "sub": "alice", "exp": now + 600 }));
    assert!(hs256_verifier().verify(&token).is_ok());
    let token = hs256_token(&json!({ "sub": "alice", "exp": now - 600 }));
    assert!(matches!(
        hs256_verifier().verify(&token),
        Err(AuthError::Expired)
    ));
}

#[test]
fn expiry_and_leeway() {
    let v = hs256_verifier(); // default leeway: 60 s
    let at = |exp: u64| v.verify_at(&hs256_token(&json!({ "sub": "a", "exp": exp })), NOW);
    assert!(matches!(at(NOW - 3600), Err(AuthError::Expired)));
    assert!(at(NOW - 30).is_ok(), "inside the leeway");
    assert!(
        matches!(at(NOW - 60), Err(AuthError::Expired)),
        "exp + leeway == now"
    );

    let strict = JwtVerifier::new(&JwtSettings {
        leeway_secs: 0,
        ..settings(vec![key(
            None,
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap();
    let token = |exp: u64| hs256_token(&json!({ "sub": "a", "exp": exp }));
    assert!(matches!(
        strict.verify_at(&token(NOW - 30), NOW),
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        strict.verify_at(&token(NOW), NOW),
        Err(AuthError::Expired)
    ));
    assert!(strict.verify_at(&token(NOW + 1), NOW).is_ok());
}

#[test]
fn not_before_and_leeway() {
    let v = hs256_verifier();
    let at = |nbf: Value| {
        v.verify_at(
            &hs256_token(&json!({ "sub": "a", "exp": NOW + 3600, "nbf": nbf })),
            NOW,
        )
    };
    assert!(matches!(at(json!(NOW + 120)), Err(AuthError::NotYetValid)));
    assert!(at(json!(NOW + 30)).is_ok(), "inside the leeway");
    assert!(at(json!(NOW - 10)).is_ok());
    assert!(
        at(json!(NOW as f64 - 0.5)).is_ok(),
        "fractional NumericDate"
    );
    assert!(matches!(at(json!("soon")), Err(AuthError::MalformedClaim(c)) if c == "nbf"));
}

#[test]
fn exp_is_required_and_numeric() {
    let v = hs256_verifier();
    let token = hs256_token(&json!({ "sub": "a" }));
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::MissingClaim("exp"))
    ));
    for exp in [json!("tomorrow"), json!(-5), json!(null)] {
        let token = hs256_token(&json!({ "sub": "a", "exp": exp }));
        assert!(matches!(
            v.verify_at(&token, NOW),
            Err(AuthError::MalformedClaim(_))
        ));
    }
}

fn with_iss_aud(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
    JwtVerifier::new(&JwtSettings {
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
        ..settings(vec![key(
            None,
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap()
}

#[test]
fn audience() {
    let v = with_iss_aud(None, Some("nsqgate"));
    let at = |aud: Option<Value>| {
        let mut c = claims();
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        v.verify_at(&hs256_token(&c), NOW)
    };
    assert!(at(Some(json!("nsqgate"))).is_ok());
    assert!(at(Some(json!(["other", "nsqgate"]))).is_ok());
    assert!(matches!(
        at(Some(json!("other"))),
        Err(AuthError::WrongAudience)
    ));
    assert!(matches!(
        at(Some(json!(["a", "b"]))),
        Err(AuthError::WrongAudience)
    ));
    assert!(matches!(at(Some(json!([]))), Err(AuthError::WrongAudience)));
    assert!(matches!(at(None), Err(AuthError::MissingClaim("aud"))));
    assert!(matches!(
        at(Some(json!(7))),
        Err(AuthError::MalformedClaim(_))
    ));
    // Unconfigured: aud is not checked.
    let mut c = claims();
    c["aud"] = json!("anyone");
    assert!(hs256_verifier().verify_at(&hs256_token(&c), NOW).is_ok());
}

#[test]
fn issuer() {
    let v = with_iss_aud(Some("https://idp.example"), None);
    let at = |iss: Option<Value>| {
        let mut c = claims();
        if let Some(iss) = iss {
            c["iss"] = iss;
        }
        v.verify_at(&hs256_token(&c), NOW)
    };
    assert!(at(Some(json!("https://idp.example"))).is_ok());
    assert!(matches!(
        at(Some(json!("https://evil.example"))),
        Err(AuthError::WrongIssuer)
    ));
    assert!(matches!(at(None), Err(AuthError::MissingClaim("iss"))));
    assert!(matches!(
        at(Some(json!(["https://idp.example"]))),
        Err(AuthError::MalformedClaim(_))
    ));
}

#[test]
fn identity_and_roles_claims() {
    let v = JwtVerifier::new(&JwtSettings {
        identity_claim: "email".to_owned(),
        roles_claim: "scope".to_owned(),
        ..settings(vec![key(
            None,
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        )])
    })
    .unwrap();
    let at = |c: Value| v.verify_at(&hs256_token(&c), NOW);
    let p = at(json!({ "email": "bob@example", "exp": NOW + 60, "scope": "pub  sub" })).unwrap();
    assert_eq!(p.identity, "bob@example");
    assert_eq!(p.claimed_roles, ["pub", "sub"]);
    let p = at(json!({ "email": "bob@example", "exp": NOW + 60 })).unwrap();
    assert!(p.claimed_roles.is_empty());
    assert!(matches!(
        at(json!({ "email": "b", "exp": NOW + 60, "scope": ["a", 1] })),
        Err(AuthError::MalformedClaim(c)) if c == "scope"
    ));
    assert!(matches!(
        at(json!({ "email": "b", "exp": NOW + 60, "scope": {} })),
        Err(AuthError::MalformedClaim(_))
    ));
    for identity in [json!(null), json!(""), json!(42), json!(["bob"])] {
        let c = json!({ "sub": "alice", "email": identity, "exp": NOW + 60 });
        assert!(matches!(at(c), Err(AuthError::MissingIdentityClaim)));
    }
    assert!(matches!(
        at(json!({ "sub": "alice", "exp": NOW + 60 })),
        Err(AuthError::MissingIdentityClaim)
    ));
}

#[test]
fn key_selection() {
    let other_secret = [7u8; 32];
    let v = verifier(vec![
        key(
            None,
            Algorithm::HS256,
            KeyMaterial::Secret(other_secret.to_vec()),
        ),
        key(
            None,
            Algorithm::HS256,
            KeyMaterial::Secret(HS_SECRET.to_vec()),
        ),
        key(
            Some("k1"),
            Algorithm::HS384,
            KeyMaterial::Secret([1u8; 48].to_vec()),
        ),
    ]);
    // No kid: every key of the header's algorithm is tried.
    assert!(v.verify_at(&hs256_token(&claims()), NOW).is_ok());
    // A kid selects exactly that key; its algorithm must match.
    let token = sign(
        Algorithm::HS384,
        Some("k1"),
        &claims(),
        &EncodingKey::from_secret(&[1u8; 48]),
    );
    assert!(v.verify_at(&token, NOW).is_ok());
    let token = sign(
        Algorithm::HS256,
        Some("k1"),
        &claims(),
        &EncodingKey::from_secret(HS_SECRET),
    );
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
    let token = sign(
        Algorithm::HS256,
        Some("nope"),
        &claims(),
        &EncodingKey::from_secret(HS_SECRET),
    );
    assert!(matches!(v.verify_at(&token, NOW), Err(AuthError::UnknownKid(k)) if k == "nope"));
    // No key at all for the algorithm.
    let token = sign(
        Algorithm::HS512,
        None,
        &claims(),
        &EncodingKey::from_secret(&[2u8; 64]),
    );
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}
