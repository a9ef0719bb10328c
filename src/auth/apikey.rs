//! API keys: `nsqk_` + 256 random bits; generated here, stored and compared only as SHA-256.
//!
//! Why SHA-256 and not argon2id: an API key is 32 bytes from the OS CSPRNG, so guessing a key
//! from its hash means searching 2^256 values; no hash speed makes that feasible, and a slow
//! hash buys nothing. Argon2id exists to protect low-entropy, human-chosen passwords, and it
//! would cost tens of milliseconds of CPU (and memory) on every connection's `AUTH`, which is an
//! easy denial-of-service lever. A plain digest also lets the configuration hold hashes only
//! and look a key up in a map by its hash, with no per-entry salt to try.
//!
//! No I/O here besides reading the OS random number generator.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::{RngCore as _, TryRngCore as _};
use sha2::{Digest, Sha256};

/// Every API key starts with this, so [`super::classify`] can tell it from a JWT and secret
/// scanners can spot a leaked key.
pub const PREFIX: &str = "nsqk_";

/// Number of random bytes in a key (256 bits).
const KEY_BYTES: usize = 32;

/// A new API key: [`PREFIX`] followed by base64url (no padding) of 32 bytes from the OS CSPRNG.
///
/// # Panics
///
/// If the operating system's random number generator fails. Keys are made by an operator
/// command, never while serving a peer, and a key from a weaker source must not exist.
pub fn generate() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    OsRng.unwrap_err().fill_bytes(&mut bytes);
    let mut key = String::with_capacity(PREFIX.len() + 43);
    key.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

/// SHA-256 of the key exactly as the client sends it (prefix included).
pub fn hash(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// [`hash`] as 64 lowercase hex characters, the form stored in configuration.
pub fn hash_hex(key: &[u8]) -> String {
    super::hex(&hash(key))
}
