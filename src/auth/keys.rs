//! Turns configured JWT keys (PEM, shared secrets, JWKS) into keys bound to one algorithm each.
//!
//! Everything that can be wrong with a key is found here, at configuration time, so that
//! [`super::jwt::JwtVerifier::verify`] never meets an unusable key. No I/O here: the
//! configuration layer reads the files and hands over bytes.

use std::collections::{HashMap, HashSet};

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

/// The usable signature keys of a JWKS document, and how many entries could not be used.
#[derive(Debug)]
pub(crate) struct JwksKeys {
    pub(crate) keys: Vec<BoundKey>,
    /// Entries skipped as unusable (each logged with its reason).
    pub(crate) skipped: u64,
}

/// Binds the signature keys of a JWKS document, skipping (logging and counting) each entry
/// that cannot be used, so one odd entry cannot hold back the rest of the issuer's set:
/// a key type that does not fit its `alg`, an `alg` nsqgate does not implement, bad or weak
/// key parameters, a `kid` that appears twice (every entry with it: which one is meant is
/// unknowable) or that a configured key (`taken`) already has. An entry without `alg` is
/// bound to each of `algorithms` (the issuer's, from `[auth.jwt] algorithms`) that fits its
/// key type, and skipped when none does. Keys marked for encryption are left out as RFC 7517
/// section 5 asks (not counted). Fails only on a document that is not a JWKS, or one with no
/// usable signature key.
pub(crate) fn bind_jwks(
    json: &[u8],
    algorithms: &[Algorithm],
    taken: &[BoundKey],
) -> Result<JwksKeys, JwtConfigError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| {
        // Only the position: serde's message may quote a value, and JWKS may hold secrets.
        JwtConfigError::InvalidJwks(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let mut kids: HashMap<&str, usize> = HashMap::new();
    for kid in set.keys.iter().filter_map(|k| k.common.key_id.as_deref()) {
        *kids.entry(kid).or_default() += 1;
    }
    let mut bound = JwksKeys {
        keys: Vec::with_capacity(set.keys.len()),
        skipped: 0,
    };
    for (index, jwk) in set.keys.iter().enumerate() {
        let name = describe("jwks keys", index, jwk.common.key_id.as_deref());
        let unique = |kid: &str| {
            kids.get(kid) == Some(&1) && taken.iter().all(|k| k.kid.as_deref() != Some(kid))
        };
        let outcome = match jwk.common.key_id.as_deref() {
            Some(kid) if !unique(kid) => Err(JwtConfigError::DuplicateKid(kid.to_owned())),
            _ => bind_jwk(&name, jwk, algorithms),
        };
        match outcome {
            Ok(keys) => bound.keys.extend(keys),
            Err(reason) => {
                bound.skipped += 1;
                tracing::warn!(key = %name, %reason, "JWKS entry skipped; the other entries apply");
            }
        }
    }
    if bound.keys.is_empty() {
        return Err(JwtConfigError::EmptyJwks);
    }
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

/// The entry's keys: one per algorithm it may verify; none for a non-signature key.
fn bind_jwk(
    name: &str,
    jwk: &Jwk,
    algorithms: &[Algorithm],
) -> Result<Vec<BoundKey>, JwtConfigError> {
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
        return Ok(Vec::new());
    }
    let algs: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(key_alg) => match Algorithm::try_from(key_alg) {
            Ok(alg) if fits(jwk, alg) => vec![alg],
            Ok(_) => return Err(invalid(name, "key type or curve does not match its alg")),
            Err(_) => return Err(invalid(name, "its alg is not one nsqgate verifies")),
        },
        None => algorithms
            .iter()
            .copied()
            .filter(|&alg| fits(jwk, alg))
            .collect(),
    };
    if algs.is_empty() {
        return Err(JwtConfigError::JwkMissingAlg {
            key: name.to_owned(),
        });
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid(name, "bad key parameters"))?;
    let kid = jwk.common.key_id.clone();
    let mut keys = Vec::with_capacity(algs.len());
    for alg in algs {
        check_usable(name, alg, &key)?;
        keys.push(BoundKey {
            kid: kid.clone(),
            alg,
            key: key.clone(),
        });
    }
    Ok(keys)
}

/// Whether the JWK's key type (and curve) is the one `alg` needs.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), _) => alg.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::OctetKey(_), _) => alg.family() == AlgorithmFamily::Hmac,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
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
