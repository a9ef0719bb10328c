//! The `[auth.jwt]` section: keys read from their files, and the JWKS URL to fetch.

use std::path::Path;
use std::time::Duration;

use crate::auth::jwt::{JwtKey, JwtSettings, KeyMaterial};

use super::locate::Locator;
use super::raw::RawJwt;
use super::{ConfigError, JwksSource};

pub(super) fn jwt_settings(raw: RawJwt, at: &Locator<'_>) -> Result<JwtSettings, ConfigError> {
    let read = |key: &str, path: &Path| -> Result<Vec<u8>, ConfigError> {
        let path = at.existing(key, path)?;
        std::fs::read(&path).map_err(|e| at.invalid(key, format!("{}: {e}", path.display())))
    };
    let (algorithms, jwks_max_stale) = jwks_policy(&raw, at)?;
    let mut keys = Vec::new();
    for (index, key) in raw.keys.into_iter().enumerate() {
        let name = format!("auth.jwt.keys[{index}]");
        let algorithm: jsonwebtoken::Algorithm = key.algorithm.parse().map_err(|_| {
            at.invalid(
                "auth.jwt.keys",
                format!("{name}: unknown algorithm {:?}", key.algorithm),
            )
        })?;
        let material = match (&key.file, &key.secret_file) {
            (Some(file), None) => KeyMaterial::Pem(read("auth.jwt.keys", file)?),
            (None, Some(secret)) => {
                let mut bytes = read("auth.jwt.keys", secret)?;
                // A trailing newline from an editor is not part of the secret.
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                KeyMaterial::Secret(bytes)
            }
            _ => {
                return Err(at.invalid(
                    "auth.jwt.keys",
                    format!(
                        "{name}: set exactly one of file (PEM public key) or secret_file (HS*)"
                    ),
                ))
            }
        };
        keys.push(JwtKey {
            kid: key.kid,
            algorithm,
            material,
        });
    }
    let jwks = match &raw.jwks_file {
        Some(file) => Some(read("auth.jwt.jwks_file", file)?),
        None => None,
    };
    let fetched = raw.jwks_url.is_some();
    if keys.is_empty() && jwks.is_none() && !fetched {
        return Err(at.invalid(
            "auth.jwt",
            "configure at least one key, a jwks_file or a jwks_url".into(),
        ));
    }
    let settings = JwtSettings {
        keys,
        jwks,
        algorithms,
        jwks_max_stale,
        issuer: raw.issuer,
        audience: raw.audience,
        leeway_secs: raw.leeway_secs,
        identity_claim: raw.identity_claim,
        roles_claim: raw.roles_claim,
    };
    // Build once here so bad keys are config errors, not start-up surprises (keys that come
    // from jwks_url are checked when they are fetched).
    if !(fetched && settings.keys.is_empty() && settings.jwks.is_none()) {
        crate::auth::jwt::JwtVerifier::new(&settings)
            .map_err(|e| at.invalid("auth.jwt", e.to_string()))?;
    }
    Ok(settings)
}

/// `algorithms` (for JWKS entries without `alg`) and, for a fetched JWKS, the age past which
/// it fails closed: longer than one refresh interval, or a healthy set would go stale.
fn jwks_policy(
    raw: &RawJwt,
    at: &Locator<'_>,
) -> Result<(Vec<jsonwebtoken::Algorithm>, Option<Duration>), ConfigError> {
    let mut algorithms = Vec::new();
    for name in &raw.algorithms {
        let alg = name.parse().map_err(|_| {
            at.invalid(
                "auth.jwt.algorithms",
                format!("unknown algorithm {name:?} (e.g. \"RS256\", \"ES256\", \"EdDSA\")"),
            )
        })?;
        algorithms.push(alg);
    }
    if raw.jwks_url.is_none() {
        return Ok((algorithms, None));
    }
    let refresh = raw.jwks_refresh_secs.max(1);
    if raw.jwks_max_stale_secs <= refresh {
        return Err(at.invalid(
            "auth.jwt.jwks_max_stale_secs",
            format!(
                "must be greater than jwks_refresh_secs ({refresh}), or a healthy key set \
                 would go stale between two refreshes"
            ),
        ));
    }
    Ok((
        algorithms,
        Some(Duration::from_secs(raw.jwks_max_stale_secs)),
    ))
}

pub(super) fn jwks_source(
    raw: &RawJwt,
    at: &Locator<'_>,
) -> Result<Option<JwksSource>, ConfigError> {
    let Some(url) = &raw.jwks_url else {
        return Ok(None);
    };
    let url: ::http::Uri = url
        .parse()
        .map_err(|e| at.invalid("auth.jwt.jwks_url", format!("not a URL: {e}")))?;
    if url.scheme_str() != Some("https") || url.host().is_none() {
        return Err(at.invalid(
            "auth.jwt.jwks_url",
            "must be an https:// URL: keys fetched in clear could be replaced on the way".into(),
        ));
    }
    let ca = raw.jwks_ca.as_deref().ok_or_else(|| {
        at.invalid(
            "auth.jwt.jwks_ca",
            "required with jwks_url: the CA its certificate must chain to".into(),
        )
    })?;
    Ok(Some(JwksSource {
        url,
        ca: at.existing("auth.jwt.jwks_ca", ca)?,
        refresh: Duration::from_secs(raw.jwks_refresh_secs.max(1)),
    }))
}
