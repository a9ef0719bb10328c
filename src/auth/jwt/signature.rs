//! The signature check. ECDSA (ES256, ES384) and Ed25519 are checked with ring, the crypto
//! nsqgate's TLS already uses: jsonwebtoken's RustCrypto backend spent 3.2 million
//! instructions on one ES256 check, over half of what a new connection cost nsqgate
//! (`bench/profile callgrind --workload connect-full`, docs/perf-profile.md). RSA and HMAC,
//! and any key ring cannot take as it is, stay with jsonwebtoken. A signature found good is
//! remembered ([`SeenGood`]), so a client reconnecting with the same token costs a hash.

use std::collections::HashSet;
use std::sync::Mutex;

use jsonwebtoken::Algorithm;
use ring::signature::{self as ring_signature, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest, Sha256};

use crate::auth::keys::BoundKey;

/// How many good signatures a verifier remembers; when full it forgets them all (a client
/// that still uses its token pays one more check).
const SEEN_GOOD_MOST: usize = 4096;

/// Signatures already checked and found good, each as a SHA-256 over the algorithm, the key's
/// bytes, the signing input and the signature. A check is a function of exactly those, so a
/// remembered answer stays right; whether that key may still verify the token (its `kid`,
/// algorithm, a stale JWKS) is decided afresh for every token before this is asked. Bad
/// signatures are never remembered.
#[derive(Default)]
pub(super) struct SeenGood {
    digests: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for SeenGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeenGood({} signatures)", self.len())
    }
}

impl SeenGood {
    pub(super) fn len(&self) -> usize {
        self.digests.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The digest naming this check, or None for a key whose bytes jsonwebtoken does not
    /// expose (an RSA key from a JWK's components): such checks are not remembered.
    fn digest(key: &BoundKey, signing_input: &[u8], signature: &str) -> Option<[u8; 32]> {
        let key_bytes = key.key.try_get_as_bytes().ok()?;
        // The variant's number names the algorithm: digests live only in this process.
        let algorithm = [key.alg as u8];
        let mut hash = Sha256::new();
        for part in [
            &algorithm[..],
            key_bytes,
            signing_input,
            signature.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Some(hash.finalize().into())
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        let digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        digests.contains(digest)
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if digests.len() >= SEEN_GOOD_MOST {
            digests.clear();
        }
        digests.insert(digest);
    }
}

/// A token's signature: as the token carries it (base64url) and decoded.
pub(super) struct Signature<'a> {
    pub(super) encoded: &'a str,
    pub(super) bytes: &'a [u8],
}

/// Whether `signature` is `key`'s over `signing_input`. An error means the key itself is
/// unusable (keys are checked when bound, so it should not happen).
pub(super) fn verify(
    key: &BoundKey,
    signing_input: &[u8],
    signature: &Signature<'_>,
    seen: &SeenGood,
) -> Result<bool, jsonwebtoken::errors::Error> {
    let digest = SeenGood::digest(key, signing_input, signature.encoded);
    if digest.as_ref().is_some_and(|d| seen.contains(d)) {
        return Ok(true);
    }
    let good = check(key, signing_input, signature)?;
    if let (true, Some(digest)) = (good, digest) {
        seen.remember(digest);
    }
    Ok(good)
}

/// The public-key (or HMAC) operation itself.
fn check(
    key: &BoundKey,
    signing_input: &[u8],
    signature: &Signature<'_>,
) -> Result<bool, jsonwebtoken::errors::Error> {
    if let Some(public) = ring_public_key(key) {
        return Ok(public.verify(signing_input, signature.bytes).is_ok());
    }
    jsonwebtoken::crypto::verify(signature.encoded, signing_input, &key.key, key.alg)
}

/// The key as ring checks it: an uncompressed SEC1 point of the right curve (ECDSA) or the
/// 32 bytes of an Ed25519 key; None for every other algorithm or encoding (a compressed
/// point, say), which jsonwebtoken then checks.
pub(super) fn ring_public_key(key: &BoundKey) -> Option<UnparsedPublicKey<&[u8]>> {
    let public = key.key.try_get_as_bytes().ok()?;
    let (algorithm, length): (&'static dyn VerificationAlgorithm, usize) = match key.alg {
        Algorithm::ES256 => (&ring_signature::ECDSA_P256_SHA256_FIXED, 65),
        Algorithm::ES384 => (&ring_signature::ECDSA_P384_SHA384_FIXED, 97),
        Algorithm::EdDSA => (&ring_signature::ED25519, 32),
        _ => return None,
    };
    let uncompressed = key.alg == Algorithm::EdDSA || public.first() == Some(&4);
    (public.len() == length && uncompressed).then(|| UnparsedPublicKey::new(algorithm, public))
}

#[cfg(test)]
mod tests;
