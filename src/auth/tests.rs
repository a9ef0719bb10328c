//! Unit tests for `auth`: shared fixtures here, cases in `tests/` by topic. No I/O besides
//! the checked-in RSA test keys (see `testdata/README.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::jwt::{JwtKey, JwtSettings, JwtVerifier, KeyMaterial};

mod config;
mod hostile;
mod jwks;
mod jwt;
mod other;

/// The fixed "current time" of the tests (2023-11-14).
const NOW: u64 = 1_700_000_000;

/// A 2048-bit RSA key made with OpenSSL (rcgen cannot generate RSA keys).
const RSA_PRIVATE_PEM: &[u8] = include_bytes!("testdata/rsa2048_private.pem");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("testdata/rsa2048_public.pem");
const RSA_1024_PUBLIC_PEM: &[u8] = include_bytes!("testdata/rsa1024_public.pem");

/// A 32-byte HS256 secret.
const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Valid claims for `alice`, one hour from expiry at [`NOW`].
fn claims() -> Value {
    json!({ "sub": "alice", "exp": NOW + 3600, "iat": NOW, "roles": ["reader", "writer"] })
}

/// Signs `claims` with `key`, optionally naming a `kid`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token from raw header and claims JSON with the given signature segment.
fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{c}.{signature}")
}

fn key(kid: Option<&str>, algorithm: Algorithm, material: KeyMaterial) -> JwtKey {
    JwtKey {
        kid: kid.map(str::to_owned),
        algorithm,
        material,
    }
}

fn settings(keys: Vec<JwtKey>) -> JwtSettings {
    JwtSettings {
        keys,
        ..JwtSettings::default()
    }
}

fn verifier(keys: Vec<JwtKey>) -> JwtVerifier {
    JwtVerifier::new(&settings(keys)).unwrap()
}

fn hs256_verifier() -> JwtVerifier {
    verifier(vec![key(
        None,
        Algorithm::HS256,
        KeyMaterial::Secret(HS_SECRET.to_vec()),
    )])
}

fn hs256_token(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(HS_SECRET),
    )
}

/// A fresh key pair: (private key for signing, public key PEM for the verifier).
fn rcgen_pair(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, Vec<u8>) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let private = pair.serialize_pem();
    let signing = if std::ptr::eq(alg, &rcgen::PKCS_ED25519) {
        EncodingKey::from_ed_pem(private.as_bytes()).unwrap()
    } else {
        EncodingKey::from_ec_pem(private.as_bytes()).unwrap()
    };
    (signing, pair.public_key_pem().into_bytes())
}

fn rsa_signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM).unwrap()
}
