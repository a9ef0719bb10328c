//! JWT verification: one algorithm per key, then `exp`/`nbf`/`iss`/`aud`, then a [`Principal`].
//!
//! The token header is parsed here rather than by jsonwebtoken so that `alg: none` (which
//! jsonwebtoken cannot represent) is refused by name, and the claims are checked here against
//! a caller-supplied clock so tests need no sleeping. Signatures are checked in [`signature`].
//! No I/O here: key files and the JWKS document arrive as bytes.

use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

mod again;
mod compact;
mod signature;

pub use again::Accepted;

use compact::{decode_json, numeric_date, Header, Parts};

use super::jwks_set::{JwksFigures, JwksState};
use super::keys::{self, BoundKey};
use super::{sanitize, AuthError, Method, Principal};

/// Longer tokens are refused before any decoding (real tokens are a few kilobytes at most).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the verifier trusts and checks; built by the configuration layer.
#[derive(Clone)]
pub struct JwtSettings {
    /// Keys from PEM files or shared secrets, each bound to one algorithm.
    pub keys: Vec<JwtKey>,
    /// A JWKS document (JSON bytes); unusable entries are skipped (logged, counted).
    pub jwks: Option<Vec<u8>>,
    /// The issuer's algorithms, for JWKS entries without `alg`: such an entry is bound to
    /// each of these that fits its key type. Empty: entries without `alg` are skipped.
    pub algorithms: Vec<Algorithm>,
    /// For a JWKS that is refreshed (`jwks_url`): past this age without a successful refresh
    /// its keys verify nothing (fail closed). `None`: never stale (a `jwks_file`).
    pub jwks_max_stale: Option<Duration>,
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
    /// A JWKS entry without `alg`, and no configured algorithm fits its key type.
    #[error("{key}: has no alg, and no algorithm in [auth.jwt] algorithms fits its key type")]
    JwkMissingAlg { key: String },
    /// The JWKS document has no usable signature key.
    #[error("JWKS document has no usable signature key")]
    EmptyJwks,
    /// Two keys share a `kid`, so selection by `kid` would be ambiguous.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
}

/// The verifier in force, replaced whole when the configuration is reloaded (None: no
/// `[auth.jwt]`).
pub type LiveJwt = crate::swap::Swap<Option<Arc<JwtVerifier>>>;

/// Verifies JWTs against the configured keys. Cheap to share (`Arc<JwtVerifier>`).
#[derive(Debug)]
pub struct JwtVerifier {
    /// Keys from configuration files; fixed for the verifier's life.
    static_keys: Vec<BoundKey>,
    /// Keys from the JWKS document, swapped whole by [`JwtVerifier::replace_jwks`] so that a
    /// verification sees one consistent set; with its age and health figures. A verifier
    /// rebuilt on reload shares the fetched set ([`JwtVerifier::keeping_jwks`]).
    jwks: Arc<JwksState>,
    /// For JWKS entries without `alg` (see [`JwtSettings::algorithms`]).
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    identity_claim: String,
    roles_claim: String,
    /// Signatures this verifier already found good (see [`signature::SeenGood`]).
    seen_good: signature::SeenGood,
    /// Names this verifier among all built in this process (see [`Accepted`]).
    id: u64,
}

// === impl JwtSettings ===

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            keys: Vec::new(),
            jwks: None,
            algorithms: Vec::new(),
            jwks_max_stale: None,
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
            .field("algorithms", &self.algorithms)
            .field("jwks_max_stale", &self.jwks_max_stale)
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
    /// Binds and checks every configured key (failing on the first unusable one) and the
    /// JWKS document (skipping, logging and counting unusable entries).
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, JwtConfigError> {
        let static_keys = keys::bind_static(&settings.keys)?;
        let jwks = match &settings.jwks {
            Some(json) => keys::bind_jwks(json, &settings.algorithms, &static_keys)?,
            None => keys::JwksKeys {
                keys: Vec::new(),
                skipped: 0,
            },
        };
        if static_keys.is_empty() && jwks.keys.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        let state = JwksState::new(jwks.keys, jwks.skipped, settings.jwks_max_stale);
        Ok(JwtVerifier::assemble(
            settings,
            static_keys,
            Arc::new(state),
        ))
    }

    /// As [`JwtVerifier::new`], for a reload: settings without a JWKS document of their own
    /// (one fetched from `jwks_url` by its own task) keep `previous`'s set.
    pub fn keeping_jwks(
        settings: &JwtSettings,
        previous: &JwtVerifier,
    ) -> Result<JwtVerifier, JwtConfigError> {
        if settings.jwks.is_some() {
            return JwtVerifier::new(settings);
        }
        let static_keys = keys::bind_static(&settings.keys)?;
        if static_keys.is_empty() && previous.jwks.snapshot().keys.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        let jwks = previous.jwks.clone();
        Ok(JwtVerifier::assemble(settings, static_keys, jwks))
    }

    fn assemble(
        settings: &JwtSettings,
        static_keys: Vec<BoundKey>,
        jwks: Arc<JwksState>,
    ) -> JwtVerifier {
        JwtVerifier {
            static_keys,
            jwks,
            algorithms: settings.algorithms.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            identity_claim: settings.identity_claim.clone(),
            roles_claim: settings.roles_claim.clone(),
            seen_good: signature::SeenGood::default(),
            id: again::next_verifier_id(),
        }
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
        let Ok(signature_bytes) = URL_SAFE_NO_PAD.decode(parts.signature) else {
            return Err(AuthError::Malformed);
        };
        let signature = signature::Signature {
            encoded: parts.signature,
            bytes: &signature_bytes,
        };
        // An empty `kid` names no key: some issuers write one; treat it as absent.
        let kid = header.kid.as_deref().filter(|kid| !kid.is_empty());
        self.check_signature(&parts, &signature, alg, kid)?;
        let claims: Map<String, Value> = decode_json(parts.payload)?;
        self.principal(&claims, now_unix)
    }

    /// Swaps in a new JWKS document: its usable entries replace the whole JWKS set (a key
    /// the issuer removed is gone), unusable ones are skipped and counted. When the document
    /// is unusable as a whole (not a JWKS, no usable key) the current set stays in force,
    /// until it is older than `jwks_max_stale`. Returns how many entries were skipped.
    pub fn replace_jwks(&self, jwks_json: &[u8]) -> Result<u64, JwtConfigError> {
        match keys::bind_jwks(jwks_json, &self.algorithms, &self.static_keys) {
            Ok(fresh) => {
                self.jwks.replace(fresh.keys, fresh.skipped);
                Ok(fresh.skipped)
            }
            Err(e) => Err(e),
        }
    }

    /// Counts a refresh that failed (fetch or document) and says, when it is so, how long the
    /// JWKS in force has been past `jwks_max_stale` (then its keys verify nothing).
    pub fn jwks_refresh_failed(&self) -> Option<Duration> {
        self.jwks.record_refresh_failure();
        self.jwks.stale_for(&self.jwks.snapshot())
    }

    /// `jwks_max_stale`, for log lines.
    pub fn jwks_max_stale(&self) -> Option<Duration> {
        self.jwks.max_stale()
    }

    /// The JWKS's health figures, for `/metrics`.
    pub fn jwks_figures(&self) -> JwksFigures {
        self.jwks.figures()
    }

    /// Picks the candidate keys (by `kid`, else by algorithm) and checks the signature.
    fn check_signature(
        &self,
        parts: &Parts<'_>,
        signature: &signature::Signature<'_>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<(), AuthError> {
        let set = self.jwks.snapshot();
        let stale = self.jwks.stale_for(&set);
        let all = || self.static_keys.iter().chain(set.keys.iter());
        let candidates: Vec<&BoundKey> = match kid {
            Some(kid) => {
                let named: Vec<&BoundKey> =
                    all().filter(|k| k.kid.as_deref() == Some(kid)).collect();
                if named.is_empty() {
                    return Err(AuthError::UnknownKid(sanitize(kid)));
                }
                // The header's alg must be the key's own: never let a token choose how a key
                // is used (an entry without `alg` may be bound to several).
                named.into_iter().filter(|k| k.alg == alg).collect()
            }
            None => all().filter(|k| k.alg == alg).collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        // Fail closed on a stale set: the issuer may have removed any of its keys since.
        let from_set = |k: &&BoundKey| set.keys.iter().any(|s| std::ptr::eq(s, *k));
        let candidates: Vec<&BoundKey> = match stale {
            Some(age) => {
                let fresh: Vec<&BoundKey> = candidates
                    .iter()
                    .copied()
                    .filter(|k| !from_set(k))
                    .collect();
                if fresh.is_empty() {
                    return Err(AuthError::KeysStale(age.as_secs()));
                }
                fresh
            }
            None => candidates,
        };
        for key in candidates {
            let input = parts.signing_input.as_bytes();
            match signature::verify(key, input, signature, &self.seen_good) {
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
            token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
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
