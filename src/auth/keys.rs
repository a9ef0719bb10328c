//! Turns configured JWT keys (PEM, shared secrets, JWKS) into keys bound to one algorithm each.
//!
//! Everything that can be wrong with a key is found here, at configuration time, so that
//! [`super::jwt::JwtVerifier::verify`] never meets an unusable key. No I/O here: the
//! configuration layer reads the files and hands over bytes.

use std::collections::HashSet;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;

use super::jwt::{JwtConfigError, JwtKey, KeyMaterial};

/// RFC 7518 3.3: RSA keys for RS*/PS* must have at least 2048 bits.
const MIN_RSA_BITS: usize = 2048;

/// A verification key that accepts exactly one algorithm.
#[derive(Clone, Debug)]
pub(crate) struct BoundKey {
    /// Matched against the token header's `kid`; keys without one are chosen by algorithm.
    pub(crate) kid: Option<String>,
    /// The only `alg` this key verifies; binding it is what stops algorithm confusion.
    pub(crate) alg: Algorithm,
    /// The parsed public key or shared secret (its `Debug` is redacted by jsonwebtoken).
    pub(crate) key: DecodingKey,
}

/// Binds the keys given as PEM files or shared secrets.
pub(crate) fn bind_static(keys: &[JwtKey]) -> Result<Vec<BoundKey>, JwtConfigError> {
    let mut bound = Vec::with_capacity(keys.len());
    for (index, configured) in keys.iter().enumerate() {
        let name = describe("keys", index, configured.kid.as_deref());
        let alg = configured.algorithm;
        let key = match (&configured.material, alg.family()) {
            (KeyMaterial::Pem(_), AlgorithmFamily::Hmac) => {
                return Err(JwtConfigError::PemForHmac { key: name, alg })
            }
            (KeyMaterial::Secret(_), family) if family != AlgorithmFamily::Hmac => {
                return Err(JwtConfigError::SecretForAsymmetric { key: name, alg })
            }
            (KeyMaterial::Secret(secret), _) => DecodingKey::from_secret(secret),
            (KeyMaterial::Pem(pem), _) => from_pem(&name, alg, pem)?,
        };
        check_usable(&name, alg, &key)?;
        bound.push(BoundKey {
            kid: configured.kid.clone(),
            alg,
            key,
        });
    }
    check_unique_kids(&bound, &[])?;
    Ok(bound)
}

/// Binds the signature keys of a JWKS document.
///
/// Every key must name its `alg` (a key without one could be tried with any algorithm of its
/// type). Keys marked for encryption, and keys with an algorithm nsqgate does not implement,
/// are skipped as RFC 7517 section 5 asks; a document left with no key is refused.
pub(crate) fn bind_jwks(json: &[u8]) -> Result<Vec<BoundKey>, JwtConfigError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| {
        // Only the position: serde's message may quote a value, and JWKS may hold secrets.
        JwtConfigError::InvalidJwks(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let mut bound = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        if let Some(key) = bind_jwk(index, jwk)? {
            bound.push(key);
        }
    }
    if bound.is_empty() {
        return Err(JwtConfigError::EmptyJwks);
    }
    check_unique_kids(&bound, &[])?;
    Ok(bound)
}

/// Fails when a `kid` appears twice within `a`, or in both `a` and `b`.
pub(crate) fn check_unique_kids(a: &[BoundKey], b: &[BoundKey]) -> Result<(), JwtConfigError> {
    let mut seen = HashSet::new();
    for kid in a.iter().chain(b).filter_map(|k| k.kid.as_deref()) {
        if !seen.insert(kid) {
            return Err(JwtConfigError::DuplicateKid(kid.to_owned()));
        }
    }
    Ok(())
}

fn bind_jwk(index: usize, jwk: &Jwk) -> Result<Option<BoundKey>, JwtConfigError> {
    let kid = jwk.common.key_id.clone();
    let name = describe("jwks keys", index, kid.as_deref());
    let for_signatures = match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => true,
        Some(_) => false,
    };
    let verifies = jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    if !for_signatures || !verifies {
        tracing::debug!(key = %name, "skipping JWKS key not meant for signature verification");
        return Ok(None);
    }
    let Some(key_alg) = jwk.common.key_algorithm else {
        return Err(JwtConfigError::JwkMissingAlg { key: name });
    };
    let Ok(alg) = Algorithm::try_from(key_alg) else {
        tracing::warn!(key = %name, alg = %key_alg, "skipping JWKS key with an unsupported alg");
        return Ok(None);
    };
    let type_matches = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), _) => alg.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::OctetKey(_), _) => alg.family() == AlgorithmFamily::Hmac,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if !type_matches {
        return Err(invalid(&name, "key type or curve does not match its alg"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid(&name, "bad key parameters"))?;
    check_usable(&name, alg, &key)?;
    Ok(Some(BoundKey { kid, alg, key }))
}

/// Parses a PEM public key for an asymmetric algorithm.
fn from_pem(name: &str, alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, JwtConfigError> {
    match pem_label(pem) {
        Some(label) if label.contains("PRIVATE KEY") => {
            return Err(JwtConfigError::PrivateKey {
                key: name.to_owned(),
            })
        }
        Some("PUBLIC KEY") => {}
        Some("RSA PUBLIC KEY") if alg.family() == AlgorithmFamily::Rsa => {}
        _ => return Err(invalid(name, "expected a PEM \"PUBLIC KEY\" block")),
    }
    let parsed = match alg.family() {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => return Err(invalid(name, "HMAC keys are not PEM")),
    };
    parsed.map_err(|_| {
        invalid(
            name,
            "PEM does not hold a public key of the algorithm's type",
        )
    })
}

/// Checks that the key will work for `alg`, so no verification fails for a configuration
/// reason (and none reaches a library code path that could panic on a short key).
fn check_usable(name: &str, alg: Algorithm, key: &DecodingKey) -> Result<(), JwtConfigError> {
    match alg.family() {
        AlgorithmFamily::Hmac => {
            let len = key.try_get_as_bytes().map_or(0, <[u8]>::len);
            let min = hmac_min_len(alg);
            if len < min {
                return Err(JwtConfigError::SecretTooShort {
                    key: name.to_owned(),
                    alg,
                    len,
                    min,
                });
            }
        }
        AlgorithmFamily::Rsa => {
            let bits = rsa_modulus_bits(key).ok_or_else(|| invalid(name, "unreadable RSA key"))?;
            if bits < MIN_RSA_BITS {
                return Err(JwtConfigError::RsaKeyTooSmall {
                    key: name.to_owned(),
                    bits,
                });
            }
        }
        AlgorithmFamily::Ed => {
            // jsonwebtoken slices the first 32 bytes of an Ed25519 key without a length check.
            if key.try_get_as_bytes().map_or(0, <[u8]>::len) != 32 {
                return Err(invalid(name, "Ed25519 public key must be 32 bytes"));
            }
        }
        AlgorithmFamily::Ec => {}
    }
    // Building a verifier parses the key (curve points included); an empty signature then
    // simply fails to verify. An error here means the key itself is unusable.
    match jsonwebtoken::crypto::verify("", b"", key, alg) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(name, "key does not fit its algorithm")),
    }
}

/// RFC 7518 3.2: an HMAC key must be at least as long as the hash output.
fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

fn rsa_modulus_bits(key: &DecodingKey) -> Option<usize> {
    let modulus = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => n.clone(),
        DecodingKeyKind::SecretOrDer(der) => {
            let (_, parsed) = RSAPublicKey::from_der(der).ok()?;
            parsed.modulus.to_vec()
        }
    };
    let significant: Vec<u8> = modulus.into_iter().skip_while(|b| *b == 0).collect();
    let first = significant.first()?;
    Some((significant.len() - 1) * 8 + (8 - first.leading_zeros() as usize))
}

/// The label of the first PEM block (`-----BEGIN <label>-----`).
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = pem.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = &pem[start..];
    let end = rest.windows(5).position(|w| w == b"-----")?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn describe(what: &str, index: usize, kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("{what}[{index}] (kid {kid:?})"),
        None => format!("{what}[{index}]"),
    }
}

fn invalid(name: &str, reason: &'static str) -> JwtConfigError {
    JwtConfigError::InvalidKey {
        key: name.to_owned(),
        reason,
    }
}
