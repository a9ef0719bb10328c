//! `[admin]`: the operators' listener for `/metrics`, `/healthz` and `/readyz`. Absent: no
//! admin listener. Present: on loopback (`127.0.0.1:9150`) unless `listen` says otherwise;
//! plain HTTP, or TLS with `tls_cert`/`tls_key` and, optionally, client certificates from
//! `tls_client_ca`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::locate::millis;
use super::{ConfigError, Locator};

/// Where the admin listener binds when `[admin]` names no address: loopback only, so the
/// metrics and health endpoints are not on the network unless the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9150";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

fn default_probe_interval_ms() -> u64 {
    5_000
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tls: Option<AdminTls>,
    /// How often every configured nsqd is probed with a verified handshake for `/readyz`.
    pub probe_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a client certificate from this CA is required.
    pub client_ca: Option<PathBuf>,
}

pub(super) fn admin(raw: RawAdmin, at: &Locator<'_>) -> Result<AdminConfig, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen
        .parse()
        .map_err(|e| at.invalid("admin.listen", format!("not an IP:port address: {e}")))?;
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(AdminTls {
            cert: at.existing("admin.tls_cert", &cert)?,
            key: at.existing("admin.tls_key", &key)?,
            client_ca: match &raw.tls_client_ca {
                Some(ca) => Some(at.existing("admin.tls_client_ca", ca)?),
                None => None,
            },
        }),
        (None, None) if raw.tls_client_ca.is_some() => {
            return Err(at.invalid(
                "admin.tls_client_ca",
                "client certificates need TLS: set tls_cert and tls_key too".into(),
            ))
        }
        (None, None) => None,
        (Some(_), None) => return Err(at.invalid("admin.tls_key", "required with tls_cert".into())),
        (None, Some(_)) => return Err(at.invalid("admin.tls_cert", "required with tls_key".into())),
    };
    Ok(AdminConfig {
        listen,
        tls,
        probe_interval: millis(at, "admin.probe_interval_ms", raw.probe_interval_ms)?,
    })
}
