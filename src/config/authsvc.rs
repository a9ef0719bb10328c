//! `[auth_service]`: nsqgate answering stock nsqd's `--auth-http-address` from the same policy,
//! API keys and JWTs it enforces itself. Absent: no such listener. Present: on loopback
//! (`127.0.0.1:4181`) unless `listen` says otherwise; plain HTTP, or HTTPS with
//! `tls_cert`/`tls_key`. No client certificates: nsqd v1.3.0 presents none to its auth server
//! (its `buildClientTLSConfig` sets only the root CAs), so the listener's reach is its guard.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::admin::AdminTls;
use super::{ConfigError, Locator};

/// Where the auth service binds when `listen` is not set: loopback only, so secrets are not
/// checked for anyone on the network unless the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4181";

/// Longest `ttl_secs`: nsqd keeps a grant that long before asking again, so a removed key
/// or a narrowed role reaches nsqd within it.
const MAX_TTL_SECS: u64 = 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthService {
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: u64,
}

fn default_ttl_secs() -> u64 {
    60
}

#[derive(Clone, Debug)]
pub struct AuthServiceConfig {
    pub listen: SocketAddr,
    /// HTTPS set-up, as the admin listener's (never with a client CA).
    pub tls: Option<AdminTls>,
    /// How long nsqd may keep an answer (a JWT's is cut to the token's own expiry).
    pub ttl: Duration,
}

pub(super) fn auth_service(
    raw: RawAuthService,
    at: &Locator<'_>,
) -> Result<AuthServiceConfig, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen.parse().map_err(|e| {
        at.invalid(
            "auth_service.listen",
            format!("not an IP:port address: {e}"),
        )
    })?;
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(AdminTls {
            cert: at.existing("auth_service.tls_cert", &cert)?,
            key: at.existing("auth_service.tls_key", &key)?,
            client_ca: None,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(at.invalid("auth_service.tls_key", "required with tls_cert".into()))
        }
        (None, Some(_)) => {
            return Err(at.invalid("auth_service.tls_cert", "required with tls_key".into()))
        }
    };
    if !(1..=MAX_TTL_SECS).contains(&raw.ttl_secs) {
        return Err(at.invalid(
            "auth_service.ttl_secs",
            format!(
                "between 1 and {MAX_TTL_SECS}: nsqd refuses a ttl of 0, and keeps a grant \
                 (even of a revoked key) for the whole ttl"
            ),
        ));
    }
    Ok(AuthServiceConfig {
        listen,
        tls,
        ttl: Duration::from_secs(raw.ttl_secs),
    })
}
