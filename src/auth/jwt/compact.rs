//! The JWS compact serialization as nsqgate reads it: the three segments, the header fields it
//! uses, base64url JSON, and NumericDate claims. Pure parsing; the checks are `super`'s.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::auth::AuthError;

/// The header fields nsqgate reads; `alg` is a string so `none` and unknown names parse.
#[derive(serde::Deserialize)]
pub(super) struct Header {
    pub(super) alg: String,
    #[serde(default)]
    pub(super) kid: Option<String>,
    #[serde(default)]
    pub(super) crit: Option<Value>,
}

/// The three segments of a JWS compact serialization.
pub(super) struct Parts<'a> {
    pub(super) header: &'a str,
    pub(super) payload: &'a str,
    pub(super) signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub(super) signing_input: &'a str,
}

impl<'a> Parts<'a> {
    pub(super) fn split(token: &'a str) -> Result<Parts<'a>, AuthError> {
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

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// A NumericDate claim (RFC 7519 2): non-negative seconds, fractions rounded down.
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, AuthError> {
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
