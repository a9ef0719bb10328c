//! Hostile and broken tokens: `alg: none`, algorithm confusion, forged signatures, garbage.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::*;
use crate::auth::AuthError;

#[test]
fn alg_none_is_refused_by_name() {
    let v = hs256_verifier();
    for signature in ["", "c2lnbmF0dXJl"] {
        let token = hand_built(
            &json!({ "alg": "none", "typ": "JWT" }),
            &claims(),
            signature,
        );
        assert_eq!(
            crate::auth::classify(token.as_bytes()),
            crate::auth::SecretKind::Jwt
        );
        match v.verify_at(&token, NOW) {
            Err(AuthError::AlgorithmNotAllowed(alg)) => assert_eq!(alg, "none"),
            other => panic!("expected AlgorithmNotAllowed(none), got {other:?}"),
        }
    }
    let token = hand_built(&json!({ "alg": "None", "kid": "k" }), &claims(), "");
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::AlgorithmNotAllowed(_))
    ));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: HMAC keyed with the (public) RSA PEM bytes.
    let forged_key = EncodingKey::from_secret(RSA_PUBLIC_PEM);
    let v = verifier(vec![key(
        Some("rsa"),
        Algorithm::RS256,
        KeyMaterial::Pem(RSA_PUBLIC_PEM.to_vec()),
    )]);
    for kid in [None, Some("rsa")] {
        let token = sign(Algorithm::HS256, kid, &claims(), &forged_key);
        match v.verify_at(&token, NOW) {
            Err(AuthError::AlgorithmNotAllowed(alg)) => assert_eq!(alg, "HS256"),
            other => panic!("kid {kid:?}: expected AlgorithmNotAllowed, got {other:?}"),
        }
    }
}

#[test]
fn bad_signatures() {
    let v = hs256_verifier();
    let wrong = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(&[9u8; 32]),
    );
    assert!(matches!(
        v.verify_at(&wrong, NOW),
        Err(AuthError::BadSignature)
    ));
    // Payload swapped under a valid signature.
    let good = hs256_token(&claims());
    let evil = hs256_token(&json!({ "sub": "root", "exp": NOW + 3600 }));
    let spliced = format!(
        "{}.{}",
        evil.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().1
    );
    assert!(matches!(
        v.verify_at(&spliced, NOW),
        Err(AuthError::BadSignature)
    ));
    let (head, _) = good.rsplit_once('.').unwrap();
    assert!(matches!(
        v.verify_at(&format!("{head}."), NOW),
        Err(AuthError::BadSignature)
    ));
    // An expired token with a bad signature reports the signature, not the claims.
    let expired = sign(
        Algorithm::HS256,
        None,
        &json!({ "sub": "a", "exp": 1 }),
        &EncodingKey::from_secret(&[9u8; 32]),
    );
    assert!(matches!(
        v.verify_at(&expired, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn garbage_is_malformed() {
    let v = hs256_verifier();
    let good = hs256_token(&claims());
    let (header, rest) = good.split_once('.').unwrap();
    let cases = [
        String::new(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "..".to_owned(),
        "not base64!.e30.sig".to_owned(),
        format!("{header}.{rest}.extra"),
        format!("e30.{rest}"),    // header `{}` has no alg
        format!("bm9wZQ.{rest}"), // header is not JSON
        format!("{good}="),
        format!("{header}.{}.{}", "A".repeat(20_000), "c2ln"),
    ];
    for token in &cases {
        assert!(
            matches!(v.verify_at(token, NOW), Err(AuthError::Malformed)),
            "{token:.60}: {:?}",
            v.verify_at(token, NOW)
        );
    }
}

#[test]
fn signed_claims_that_are_not_a_json_object_are_malformed() {
    let v = hs256_verifier();
    let header = hand_built(&json!({ "alg": "HS256" }), &json!(null), "");
    let header = header.split('.').next().unwrap();
    for claims in ["bm9wZQ", "W10", "Im5vIg"] {
        // "nope", "[]", "\"no\"", each validly signed.
        let input = format!("{header}.{claims}");
        let key = EncodingKey::from_secret(HS_SECRET);
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
        let token = format!("{input}.{sig}");
        assert!(
            matches!(v.verify_at(&token, NOW), Err(AuthError::Malformed)),
            "{claims}"
        );
    }
    // Unsigned garbage claims fail on the signature first.
    let token = format!("{header}.bm9wZQ.c2ln");
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn crit_header_is_refused() {
    let token = hand_built(
        &json!({ "alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1 }),
        &claims(),
        "c2ln",
    );
    assert!(matches!(
        hs256_verifier().verify_at(&token, NOW),
        Err(AuthError::UnsupportedCriticalHeader)
    ));
}

#[test]
fn header_values_are_sanitized_in_errors() {
    let v = hs256_verifier();
    let kid = format!("evil\n\u{1b}[31m{}", "x".repeat(200));
    let token = hand_built(&json!({ "alg": "HS256", "kid": kid }), &claims(), "c2ln");
    let reason = v.verify_at(&token, NOW).unwrap_err().to_string();
    assert!(
        !reason.contains('\n') && !reason.contains('\u{1b}'),
        "{reason}"
    );
    assert!(reason.len() < 100, "{reason}");
    let token = hand_built(&json!({ "alg": "HS256\r\nX" }), &claims(), "c2ln");
    let reason = v.verify_at(&token, NOW).unwrap_err().to_string();
    assert!(!reason.contains('\r') && !reason.contains('\n'), "{reason}");
}

#[test]
fn errors_never_contain_the_token() {
    let v = hs256_verifier();
    let token = hs256_token(&claims());
    for now in [NOW, NOW + 10_000] {
        if let Err(e) = v.verify_at(&token, now) {
            let reason = e.to_string();
            for segment in token.split('.') {
                assert!(!reason.contains(segment), "{reason}");
            }
        }
    }
}
