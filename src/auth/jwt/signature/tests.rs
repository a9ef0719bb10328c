#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::json;

use super::{ring_public_key, verify, SeenGood, Signature, SEEN_GOOD_MOST};
use crate::auth::jwt::{JwtKey, KeyMaterial};
use crate::auth::keys::{self, BoundKey};

const CASES: [(Algorithm, &rcgen::SignatureAlgorithm); 3] = [
    (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
    (Algorithm::ES384, &rcgen::PKCS_ECDSA_P384_SHA384),
    (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
];

/// A new key pair for `alg`: the signing key, and the public key bound from its PEM file
/// and from its JWK (JWKS documents carry keys that way).
fn pair(
    alg: Algorithm,
    rcgen_alg: &'static rcgen::SignatureAlgorithm,
) -> (EncodingKey, [BoundKey; 2]) {
    let generated = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
    let private = generated.serialize_pem();
    let public_pem = generated.public_key_pem().into_bytes();
    let signing = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
    };
    let from_pem = keys::bind_static(&[JwtKey {
        kid: None,
        algorithm: alg,
        material: KeyMaterial::Pem(public_pem.clone()),
    }])
    .unwrap()
    .remove(0);
    let decoding = match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&public_pem).unwrap(),
        _ => DecodingKey::from_ec_pem(&public_pem).unwrap(),
    };
    let mut jwk = Jwk::from_decoding_key(&decoding, Some(alg)).unwrap();
    jwk.common.key_id = Some("k".into());
    let document = json!({ "keys": [jwk] }).to_string();
    let from_jwk = keys::bind_jwks(document.as_bytes(), &[alg], &[])
        .unwrap()
        .keys
        .remove(0);
    (signing, [from_pem, from_jwk])
}

/// (signing input, base64url signature) of a token `signing` signed with jsonwebtoken's own
/// signer, so ring checks what another implementation made.
fn signed(alg: Algorithm, signing: &EncodingKey) -> (String, String) {
    let token =
        jsonwebtoken::encode(&Header::new(alg), &json!({ "sub": "alice" }), signing).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    (input.to_owned(), signature.to_owned())
}

/// [`verify`] with the signature as a token carries it; one that is not base64url is bad.
fn verify_encoded(
    key: &BoundKey,
    signing_input: &[u8],
    encoded: &str,
    seen: &SeenGood,
) -> Result<bool, jsonwebtoken::errors::Error> {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(encoded) else {
        return Ok(false);
    };
    verify(
        key,
        signing_input,
        &Signature {
            encoded,
            bytes: &bytes,
        },
        seen,
    )
}

#[test]
fn ecdsa_and_ed25519_keys_from_pem_and_jwk_are_checked_by_ring() {
    for (alg, rcgen_alg) in CASES {
        let (_, bound) = pair(alg, rcgen_alg);
        for key in &bound {
            assert!(
                ring_public_key(key).is_some(),
                "{alg:?} not on the ring path"
            );
        }
    }
}

#[test]
fn ring_and_jsonwebtoken_agree_on_good_and_bad_signatures() {
    for (alg, rcgen_alg) in CASES {
        let (signing, bound) = pair(alg, rcgen_alg);
        let (other_signing, _) = pair(alg, rcgen_alg);
        let (input, signature) = signed(alg, &signing);
        let (_, foreign) = signed(alg, &other_signing);
        let mut flipped = signature.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases = [
            (input.as_str(), signature.as_str(), true),
            (input.as_str(), foreign.as_str(), false),
            (input.as_str(), flipped.as_str(), false),
            ("eyJhbGciOiJub25lIn0.e30", signature.as_str(), false),
            (input.as_str(), "", false),
            (input.as_str(), "not base64!", false),
        ];
        for key in &bound {
            for (input, signature, good) in cases {
                let ours = verify_encoded(key, input.as_bytes(), signature, &SeenGood::default())
                    .unwrap_or(false);
                let theirs =
                    jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key.key, key.alg)
                        .unwrap_or(false);
                assert_eq!((ours, theirs), (good, good), "{alg:?} {signature}");
            }
        }
    }
}

/// An HS256 secret: the signing key, and the key bound as a verifier binds it.
fn hs256_pair() -> (EncodingKey, BoundKey) {
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    let bound = keys::bind_static(&[JwtKey {
        kid: None,
        algorithm: Algorithm::HS256,
        material: KeyMaterial::Secret(SECRET.to_vec()),
    }])
    .unwrap()
    .remove(0);
    (EncodingKey::from_secret(SECRET), bound)
}

#[test]
fn rsa_and_hmac_stay_with_jsonwebtoken() {
    let (signing, key) = hs256_pair();
    assert!(ring_public_key(&key).is_none());
    let (input, signature) = signed(Algorithm::HS256, &signing);
    let seen = SeenGood::default();
    assert!(verify_encoded(&key, input.as_bytes(), &signature, &seen).unwrap());
    assert!(!verify_encoded(&key, b"other.input", &signature, &seen).unwrap());
}

#[test]
fn a_good_signature_is_remembered_for_its_key_only_and_a_bad_one_never() {
    let (signing, [key, _]) = pair(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, [other_key, _]) = pair(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256);
    let (input, signature) = signed(Algorithm::ES256, &signing);
    let seen = SeenGood::default();

    assert!(!verify_encoded(&other_key, input.as_bytes(), &signature, &seen).unwrap());
    assert!(!verify_encoded(&key, b"eyJhbGciOiJFUzI1NiJ9.e30", &signature, &seen).unwrap());
    assert_eq!(seen.len(), 0, "a bad signature is not remembered");

    assert!(verify_encoded(&key, input.as_bytes(), &signature, &seen).unwrap());
    assert!(verify_encoded(&key, input.as_bytes(), &signature, &seen).unwrap());
    assert_eq!(seen.len(), 1);
    // Remembered for `key`: another key is still checked, and still refuses.
    assert!(!verify_encoded(&other_key, input.as_bytes(), &signature, &seen).unwrap());
    assert_eq!(seen.len(), 1);
}

#[test]
fn a_full_memory_starts_over() {
    let (signing, key) = hs256_pair();
    let seen = SeenGood::default();
    for n in 0..=SEEN_GOOD_MOST {
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &json!({ "n": n }), &signing)
                .unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        assert!(verify_encoded(&key, input.as_bytes(), signature, &seen).unwrap());
    }
    assert_eq!(seen.len(), 1);
}
