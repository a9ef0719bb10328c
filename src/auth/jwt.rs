//! JWT verification: one algorithm per key, then `exp`/`nbf`/`iss`/`aud`, then a [`Principal`].
//!
//! The token header is parsed here rather than by jsonwebtoken so that `alg: none` (which
//! jsonwebtoken cannot represent) is refused by name, and the claims are checked here against
//! a caller-supplied clock so tests need no sleeping. jsonwebtoken only checks signatures.
//! No I/O here: key files and the JWKS document arrive as bytes.

use std::fmt;
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::keys::{self, BoundKey};
use super::{sanitize, AuthError, Method, Principal};

/// Longer tokens are refused before any decoding (real tokens are a few kilobytes at most).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the verifier trusts and checks; built by the configuration layer.
#[derive(Clone)]
pub struct JwtSettings {
    /// Keys from PEM files or shared secrets, each bound to one algorithm.
    pub keys: Vec<JwtKey>,
    /// A JWKS document (JSON bytes); every entry must carry `alg`.
    pub jwks: Option<Vec<u8>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud` (a string or an array), when set. When unset, `aud` is ignored.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim naming the principal (default `sub`); must be a non-empty string.
    pub identity_claim: String,
    /// The claim listing roles (default `roles`): an array of strings or a space-separated
    /// string (OAuth `scope` style). Absent means no roles.
    pub roles_claim: String,
}

/// One configured key and the single algorithm it may verify.
#[derive(Clone, Debug)]
pub struct JwtKey {
    /// Selected when a token's header names this `kid`.
    pub kid: Option<String>,
    /// The only algorithm this key accepts.
    pub algorithm: Algorithm,
    /// The key itself.
    pub material: KeyMaterial,
}

/// Key bytes as read from configuration. `Debug` never shows a shared secret.
#[derive(Clone)]
pub enum KeyMaterial {
    /// A PEM `PUBLIC KEY` (or `RSA PUBLIC KEY`) for RS*, PS*, ES* or EdDSA.
    Pem(Vec<u8>),
    /// A shared secret for HS* (at least as long as the hash output).
    Secret(Vec<u8>),
}

/// Why a key or JWKS document was refused. Names the key by position and `kid`; never shows
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// Neither keys nor a JWKS document were given.
    #[error("no JWT keys configured")]
    NoKeys,
    /// An HS* key was given as a PEM file.
    #[error("{key}: {alg:?} needs a shared secret, not a PEM key")]
    PemForHmac { key: String, alg: Algorithm },
    /// An asymmetric algorithm was given a shared secret.
    #[error("{key}: {alg:?} needs a PEM public key, not a shared secret")]
    SecretForAsymmetric { key: String, alg: Algorithm },
    /// An HMAC secret shorter than the hash output (RFC 7518 3.2).
    #[error("{key}: {alg:?} secret is {len} bytes, needs at least {min}")]
    SecretTooShort {
        key: String,
        alg: Algorithm,
        len: usize,
        min: usize,
    },
    /// A private key was given where a public key belongs.
    #[error("{key}: is a private key; give nsqgate only the public key")]
    PrivateKey { key: String },
    /// An RSA key under 2048 bits (RFC 7518 3.3).
    #[error("{key}: RSA key has {bits} bits, needs at least 2048")]
    RsaKeyTooSmall { key: String, bits: usize },
    /// The key does not parse or does not fit its algorithm.
    #[error("{key}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The JWKS document is not a JSON `{"keys": [...]}` object.
    #[error("invalid JWKS document: {0}")]
    InvalidJwks(String),
    /// A JWKS entry without `alg`.
    #[error("{key}: JWKS entries must name their alg")]
    JwkMissingAlg { key: String },
    /// The JWKS document has no usable signature key.
    #[error("JWKS document has no usable signature key")]
    EmptyJwks,
    /// Two keys share a `kid`, so selection by `kid` would be ambiguous.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
}

/// Verifies JWTs against the configured keys. Cheap to share (`Arc<JwtVerifier>`).
#[derive(Debug)]
pub struct JwtVerifier {
    /// Keys from configuration files; fixed for the verifier's life.
    static_keys: Vec<BoundKey>,
    /// Keys from the JWKS document, swapped whole by [`JwtVerifier::replace_jwks`] so that a
    /// verification sees one consistent set and the lock is held only to clone the `Arc`.
    jwks_keys: RwLock<Arc<Vec<BoundKey>>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    identity_claim: String,
    roles_claim: String,
}

// === impl JwtSettings ===

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            keys: Vec::new(),
            jwks: None,
            issuer: None,
            audience: None,
            leeway_secs: 60,
            identity_claim: "sub".to_owned(),
            roles_claim: "roles".to_owned(),
        }
    }
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("keys", &self.keys)
            .field(
                "jwks",
                &self.jwks.as_ref().map(|j| format!("<{} bytes>", j.len())),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("identity_claim", &self.identity_claim)
            .field("roles_claim", &self.roles_claim)
            .finish()
    }
}

// === impl KeyMaterial ===

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Pem(pem) => write!(f, "Pem(<{} bytes>)", pem.len()),
            KeyMaterial::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

// === impl JwtVerifier ===

impl JwtVerifier {
    /// Binds and checks every key; fails on the first unusable one.
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, JwtConfigError> {
        let static_keys = keys::bind_static(&settings.keys)?;
        let jwks_keys = match &settings.jwks {
            Some(json) => keys::bind_jwks(json)?,
            None => Vec::new(),
        };
        if static_keys.is_empty() && jwks_keys.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        keys::check_unique_kids(&static_keys, &jwks_keys)?;
        Ok(JwtVerifier {
            static_keys,
            jwks_keys: RwLock::new(Arc::new(jwks_keys)),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            identity_claim: settings.identity_claim.clone(),
            roles_claim: settings.roles_claim.clone(),
        })
    }

    /// Verifies `token` at the current time.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // A clock before 1970 fails closed: every token counts as expired.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(u64::MAX, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// Verifies `token` as if the time were `now_unix` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let parts = Parts::split(token)?;
        let header: Header = decode_json(parts.header)?;
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedCriticalHeader);
        }
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| AuthError::AlgorithmNotAllowed(sanitize(&header.alg)))?;
        if URL_SAFE_NO_PAD.decode(parts.signature).is_err() {
            return Err(AuthError::Malformed);
        }
        self.check_signature(&parts, alg, header.kid.as_deref())?;
        let claims: Map<String, Value> = decode_json(parts.payload)?;
        self.principal(&claims, now_unix)
    }

    /// Swaps in a new JWKS document. On any error the current set stays in force, so a
    /// background refresh can keep serving the last good keys.
    pub fn replace_jwks(&self, jwks_json: &[u8]) -> Result<(), JwtConfigError> {
        let fresh = keys::bind_jwks(jwks_json)?;
        keys::check_unique_kids(&self.static_keys, &fresh)?;
        // The guarded value is a single `Arc`, always whole, so a poisoned lock is still sound.
        let mut current = self.jwks_keys.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(fresh);
        Ok(())
    }

    fn jwks_snapshot(&self) -> Arc<Vec<BoundKey>> {
        let current = self.jwks_keys.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current)
    }

    /// Picks the candidate keys (by `kid`, else by algorithm) and checks the signature.
    fn check_signature(
        &self,
        parts: &Parts<'_>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<(), AuthError> {
        let jwks = self.jwks_snapshot();
        let mut all = self.static_keys.iter().chain(jwks.iter());
        let candidates: Vec<&BoundKey> = match kid {
            Some(kid) => {
                let key = all
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| AuthError::UnknownKid(sanitize(kid)))?;
                vec![key]
            }
            None => all.filter(|k| k.alg == alg).collect(),
        };
        // The header's alg must be the key's own: never let a token choose how a key is used.
        if candidates.is_empty() || candidates.iter().any(|k| k.alg != alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        for key in candidates {
            match jsonwebtoken::crypto::verify(
                parts.signature,
                parts.signing_input.as_bytes(),
                &key.key,
                key.alg,
            ) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // Keys are checked at load time, so this should not happen; fail this key only.
                Err(e) => tracing::warn!(kid = ?key.kid, error = %e, "JWT key unusable"),
            }
        }
        Err(AuthError::BadSignature)
    }

    /// Checks the registered claims and builds the principal; runs after the signature check.
    fn principal(&self, claims: &Map<String, Value>, now: u64) -> Result<Principal, AuthError> {
        let exp = numeric_date(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
        // RFC 7519 4.1.4: not acceptable "on or after" exp.
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
                Some(_) => return Err(AuthError::MalformedClaim("iss".to_owned())),
            }
        }
        if let Some(audience) = &self.audience {
            let matches = |v: &Value| v.as_str() == Some(audience.as_str());
            match claims.get("aud") {
                None => return Err(AuthError::MissingClaim("aud")),
                Some(aud @ Value::String(_)) if matches(aud) => {}
                Some(Value::Array(auds)) if auds.iter().any(matches) => {}
                Some(Value::String(_) | Value::Array(_)) => return Err(AuthError::WrongAudience),
                Some(_) => return Err(AuthError::MalformedClaim("aud".to_owned())),
            }
        }
        let identity = match claims.get(&self.identity_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(AuthError::MissingIdentityClaim),
        };
        // The session cuts the token off where the verifier itself stops accepting it.
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(exp.saturating_add(self.leeway_secs)))
            .ok_or_else(|| AuthError::MalformedClaim("exp".to_owned()))?;
        Ok(Principal {
            identity,
            method: Method::Jwt,
            claimed_roles: self.roles(claims)?,
            expires_at: Some(expires_at),
            proof: Default::default(),
        })
    }

    fn roles(&self, claims: &Map<String, Value>) -> Result<Vec<String>, AuthError> {
        let malformed = || AuthError::MalformedClaim(sanitize(&self.roles_claim));
        match claims.get(&self.roles_claim) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(malformed))
                .collect(),
            Some(_) => Err(malformed()),
        }
    }
}

/// The header fields nsqgate reads; `alg` is a string so `none` and unknown names parse.
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// The three segments of a JWS compact serialization.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
}

impl<'a> Parts<'a> {
    fn split(token: &'a str) -> Result<Parts<'a>, AuthError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(AuthError::Malformed)?;
        if payload.contains('.') || header.is_empty() || payload.is_empty() {
            return Err(AuthError::Malformed);
        }
        Ok(Parts {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// A NumericDate claim (RFC 7519 2): non-negative seconds, fractions rounded down.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    let malformed = || AuthError::MalformedClaim(name.to_owned());
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(malformed()),
        },
        Some(_) => Err(malformed()),
    }
}
