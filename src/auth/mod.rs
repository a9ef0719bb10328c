//! Who a client is: JWT, API key or client certificate, turned into a [`Principal`]. No I/O
//! here but [`jwks`], which fetches an issuer's key set over verified HTTPS.
//!
//! The NSQ `AUTH` command carries one opaque secret. [`classify`] tells a JWT from an API key by
//! shape alone, [`jwt::JwtVerifier`] checks tokens, [`apikey`] hashes keys for lookup, and
//! [`mtls`] reads an identity out of an already-verified client certificate; [`identity`] is
//! the one way every listener turns a secret or a certificate into a principal. What the principal
//! may do is decided elsewhere (`policy`). Errors are [`AuthError`]s whose `Display` is a short
//! reason for the audit log: it never contains the secret, and header values taken from a token
//! (`alg`, `kid`) are sanitized first. Use [`fingerprint`] to correlate a secret in logs.

use std::fmt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

pub mod apikey;
pub mod identity;
pub mod jwks;
mod jwks_set;
pub use jwks_set::JwksFigures;
pub mod jwt;
mod keys;
pub mod mtls;

#[cfg(test)]
mod tests;

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// A client certificate verified during the TLS handshake.
    Certificate,
    /// A JWT sent in `AUTH`.
    Jwt,
    /// An `nsqk_` API key sent in `AUTH`.
    ApiKey,
    /// A bare identity named by an operator (`policy explain --identity`); nothing was proven.
    Named,
}

/// An authenticated client.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The stable name that policy rules match (JWT identity claim, key owner, certificate SAN).
    pub identity: String,
    /// How the identity was proven; policy and audit may treat methods differently.
    pub method: Method,
    /// Roles the credential itself asserts (a JWT roles claim, an API key's roles); policy
    /// decides whether to honour them.
    pub claimed_roles: Vec<String>,
    /// When the credential stops being valid, so a session can be cut off at that time.
    pub expires_at: Option<SystemTime>,
    /// What was presented, kept so a live connection is judged again when the policy or the
    /// CRLs change: who it is stays, what it may do is looked up anew.
    pub proof: Proof,
    /// A JWT's `jti` claim: `nsqgate revoke --jti` cuts and refuses the token by it.
    pub token_id: Option<String>,
}

/// The part of a credential that must be looked up again after a reload.
#[derive(Clone, Debug, Default)]
pub enum Proof {
    /// Nothing outside the principal: a JWT (its roles and expiry are in the principal), an
    /// anonymous or a named caller.
    #[default]
    SelfContained,
    /// An API key, by its SHA-256: the key's current policy entry says who it is and its roles;
    /// a key no longer in the policy no longer authenticates anyone.
    ApiKey([u8; 32]),
    /// The verified client certificate chain, leaf first, checked again against reloaded CRLs.
    Certificate(std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>),
}

/// Why a credential was refused. `Display` is a short, secret-free reason for the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The secret's kind (JWT, API key) is not enabled in the configuration.
    #[error("no verifier configured for this kind of credential")]
    NoVerifierConfigured,
    /// The secret is neither a JWT nor an API key.
    #[error("unrecognized credential format")]
    UnrecognizedSecret,
    /// The token is not a well-formed JWS compact serialization (segments, base64url, JSON).
    #[error("malformed token")]
    Malformed,
    /// The header `alg` is unsupported, `none`, or not the algorithm bound to the selected key.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// The header `kid` names no configured key.
    #[error("unknown key id: {0}")]
    UnknownKid(String),
    /// The header lists `crit` extensions, none of which nsqgate understands (RFC 7515 4.1.11).
    #[error("unsupported critical header")]
    UnsupportedCriticalHeader,
    /// No candidate key verified the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim that must be present (`exp`, or `iss`/`aud` when configured) is absent.
    #[error("missing required claim: {0}")]
    MissingClaim(&'static str),
    /// A claim is present with the wrong type (e.g. `exp` as a string, roles as a number).
    #[error("malformed claim: {0}")]
    MalformedClaim(String),
    /// The identity claim is absent, not a string, or empty.
    #[error("missing or empty identity claim")]
    MissingIdentityClaim,
    /// An operator revoked this credential or its identity (`nsqgate revoke`).
    #[error("credential revoked: {0}")]
    Revoked(String),
    /// The API key hash matches no configured key.
    #[error("unknown API key")]
    UnknownApiKey,
    /// The client certificate carries none of the configured identity fields.
    #[error("client certificate has no usable identity")]
    NoCertificateIdentity,
    /// The token's key is in a JWKS not refreshed for longer than `jwks_max_stale_secs`.
    #[error("the issuer's key set (JWKS) is stale ({0} s old): its keys are not trusted")]
    KeysStale(u64),
}

// === impl AuthError ===

impl AuthError {
    /// A fixed, low-cardinality label for metrics (the `Display` text may carry a value).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::NoVerifierConfigured => "no_verifier",
            AuthError::UnrecognizedSecret => "unrecognized_secret",
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::UnsupportedCriticalHeader => "unsupported_crit",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::MalformedClaim(_) => "malformed_claim",
            AuthError::MissingIdentityClaim => "missing_identity",
            AuthError::UnknownApiKey => "unknown_api_key",
            AuthError::NoCertificateIdentity => "no_certificate_identity",
            AuthError::KeysStale(_) => "keys_stale",
            AuthError::Revoked(_) => "revoked",
        }
    }
}

// === impl Method ===

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Certificate => "certificate",
            Method::Jwt => "jwt",
            Method::ApiKey => "api_key",
            Method::Named => "identity",
        })
    }
}

/// What a secret sent in `AUTH` looks like; decided by shape only, nothing is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// Three base64url segments joined by `.`; only the signature may be empty (so an
    /// unsigned `alg: none` token still reaches the verifier and is refused by name).
    Jwt,
    /// Starts with [`apikey::PREFIX`].
    ApiKey,
    /// Anything else.
    Unknown,
}

/// A short, log-safe handle for a secret: the first 12 hex characters of its SHA-256.
///
/// 48 bits are enough to correlate audit lines and far too few to recover a 256-bit key.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    let mut out = hex(&digest);
    out.truncate(12);
    out
}

/// Tells a JWT from an API key by shape, so `AUTH` can pick a verifier.
pub fn classify(secret: &[u8]) -> SecretKind {
    if secret.starts_with(apikey::PREFIX.as_bytes()) {
        return SecretKind::ApiKey;
    }
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let mut segments = 0;
    for segment in secret.split(|b| *b == b'.') {
        segments += 1;
        let empty_ok = segments == 3;
        if segments > 3 || (segment.is_empty() && !empty_ok) || !segment.iter().all(base64url) {
            return SecretKind::Unknown;
        }
    }
    if segments == 3 {
        SecretKind::Jwt
    } else {
        SecretKind::Unknown
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Makes a value taken from an untrusted token header safe to log: printable ASCII only,
/// at most 64 characters.
pub(crate) fn sanitize(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if value.chars().count() > 64 {
        out.push_str("...");
    }
    out
}
