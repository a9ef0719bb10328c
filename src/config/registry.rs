//! `[registry.sidecar]` and `[registry.guard]`: the two roles of guarded nsqd registration
//! (see `crate::registry`). Either may run beside the NSQ listeners, or alone: a file with
//! `[registry]` and no `[client]` configures only these roles (and `[timeouts]`, `[audit]`).
//! No I/O but checking that named files exist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::auth::mtls::IdentitySource;
use crate::policy::Pattern;
use crate::registry::rules::NsqdGrant;
use crate::registry::wire::WireLimits;

use super::perms::{Holds, NamedFile};
use super::raw::{RawAudit, RawConnections, RawTimeouts};
use super::{ConfigError, Locator, Timeouts, ENV_PREFIX};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub sidecar: Option<RawSidecar>,
    pub guard: Option<RawGuard>,
}

/// Beside nsqd: nsqd's `--lookupd-tcp-address` points at `listen`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSidecar {
    pub listen: String,
    /// The guard's `host:port`, resolved at each connect.
    pub guard_address: String,
    /// The name the guard's certificate must carry.
    pub tls_server_name: String,
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

/// In front of nsqlookupd's TCP port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub listen: String,
    pub nsqlookupd_tcp_address: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The CA every nsqd's client certificate must chain to.
    pub tls_client_ca: PathBuf,
    #[serde(default = "default_identity_order")]
    pub cert_identity_order: Vec<IdentitySource>,
    #[serde(default = "default_max_identify_size")]
    pub max_identify_size: u32,
    #[serde(default)]
    pub nsqd: Vec<RawNsqdGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNsqdGrant {
    pub identity: String,
    pub broadcast_addresses: Vec<String>,
    pub tcp_port: u16,
    pub http_port: u16,
    pub topics: Vec<String>,
    /// Unset: any channel of an allowed topic, ephemeral ones included.
    pub channels: Option<Vec<String>>,
}

/// A configuration file that holds only the registration roles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistryFile {
    registry: RawRegistry,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    connections: RawConnections,
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub sidecar: Option<SidecarConfig>,
    pub guard: Option<GuardConfig>,
}

#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// Loopback only: what reaches it is relayed with this sidecar's certificate.
    pub listen: SocketAddr,
    pub guard_address: String,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct GuardConfig {
    pub listen: SocketAddr,
    pub nsqlookupd_tcp_address: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub identity_order: Vec<IdentitySource>,
    pub limits: WireLimits,
    pub grants: Vec<NsqdGrant>,
}

/// The registration roles alone, with the sections they use.
#[derive(Clone, Debug)]
pub struct RegistryOnly {
    pub source: PathBuf,
    pub registry: RegistryConfig,
    pub timeouts: Timeouts,
    pub audit_file: Option<PathBuf>,
    pub audit_on_failure: crate::audit::OnFailure,
    pub audit_fold: Option<Duration>,
    pub files: Vec<NamedFile>,
    pub connections: crate::limit::conn::ConnSettings,
    /// `[connections] workers`, as in [`super::Config`].
    pub workers: std::num::NonZeroUsize,
    /// Safe defaults the file switched off.
    pub warnings: Vec<String>,
}

/// Whether `text` configures only the registration roles: `[registry]` and no `[client]`.
pub fn is_registry_only(text: &str) -> bool {
    let figment = Figment::from(Toml::string(text));
    figment.find_value("registry").is_ok() && figment.find_value("client").is_err()
}

impl RegistryOnly {
    /// Reads `file` (with `NSQGATE_*` overrides, as [`super::Config::load`]) and validates.
    pub fn load(file: &Path) -> Result<RegistryOnly, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let figment = Figment::new().merge(Toml::string(&text)).merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let at = Locator { file, text: &text };
        let raw: RawRegistryFile = figment.extract().map_err(|err| at.figment_error(err))?;
        let mut files = vec![NamedFile {
            path: file.to_owned(),
            key: "--config".into(),
            holds: Holds::Decision,
        }];
        files.extend(named_files(&raw.registry, &at));
        let mut warnings = Vec::new();
        let descriptors = crate::limit::conn::descriptor_limit();
        let connections =
            super::sections::connections(&raw.connections, descriptors, &at, &mut warnings)?;
        Ok(RegistryOnly {
            workers: super::sections::workers(&raw.connections, &at)?,
            connections,
            warnings,
            source: file.to_owned(),
            registry: registry(raw.registry, &at)?,
            timeouts: super::timeouts(&raw.timeouts, &at)?,
            audit_file: raw.audit.file.map(|f| at.resolve(&f)),
            audit_on_failure: raw.audit.on_failure,
            audit_fold: super::audit_fold(raw.audit.fold_secs, &at)?,
            files,
        })
    }
}

pub(super) fn registry(raw: RawRegistry, at: &Locator<'_>) -> Result<RegistryConfig, ConfigError> {
    if raw.sidecar.is_none() && raw.guard.is_none() {
        return Err(at.invalid(
            "registry",
            "name [registry.sidecar], [registry.guard] or both".into(),
        ));
    }
    Ok(RegistryConfig {
        sidecar: raw.sidecar.map(|s| sidecar(s, at)).transpose()?,
        guard: raw.guard.map(|g| guard(g, at)).transpose()?,
    })
}

/// The certificates, keys and CAs the roles load, for the start-up permission check.
pub(super) fn named_files(raw: &RawRegistry, at: &Locator<'_>) -> Vec<NamedFile> {
    let mut named = Vec::new();
    let mut add = |key: &str, path: &Path, holds: Holds| {
        named.push(NamedFile {
            path: at.resolve(path),
            key: key.to_owned(),
            holds,
        });
    };
    if let Some(s) = &raw.sidecar {
        add("registry.sidecar.tls_ca", &s.tls_ca, Holds::Decision);
        add("registry.sidecar.tls_cert", &s.tls_cert, Holds::Decision);
        add("registry.sidecar.tls_key", &s.tls_key, Holds::Secret);
    }
    if let Some(g) = &raw.guard {
        add("registry.guard.tls_cert", &g.tls_cert, Holds::Decision);
        add("registry.guard.tls_key", &g.tls_key, Holds::Secret);
        add(
            "registry.guard.tls_client_ca",
            &g.tls_client_ca,
            Holds::Decision,
        );
    }
    named
}

fn sidecar(raw: RawSidecar, at: &Locator<'_>) -> Result<SidecarConfig, ConfigError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|e| {
        at.invalid(
            "registry.sidecar.listen",
            format!("not an IP:port address: {e}"),
        )
    })?;
    if !listen.ip().is_loopback() {
        return Err(at.invalid(
            "registry.sidecar.listen",
            "must be a loopback address: whatever connects is relayed with this sidecar's \
             certificate"
                .into(),
        ));
    }
    host_port(at, "registry.sidecar.guard_address", &raw.guard_address)?;
    let server_name = rustls_pki_types::ServerName::try_from(raw.tls_server_name)
        .map_err(|e| at.invalid("registry.sidecar.tls_server_name", e.to_string()))?;
    Ok(SidecarConfig {
        listen,
        guard_address: raw.guard_address,
        server_name,
        ca: at.existing("registry.sidecar.tls_ca", &raw.tls_ca)?,
        cert: at.existing("registry.sidecar.tls_cert", &raw.tls_cert)?,
        key: at.existing("registry.sidecar.tls_key", &raw.tls_key)?,
    })
}

fn guard(raw: RawGuard, at: &Locator<'_>) -> Result<GuardConfig, ConfigError> {
    let listen = raw.listen.parse().map_err(|e| {
        at.invalid(
            "registry.guard.listen",
            format!("not an IP:port address: {e}"),
        )
    })?;
    host_port(
        at,
        "registry.guard.nsqlookupd_tcp_address",
        &raw.nsqlookupd_tcp_address,
    )?;
    if raw.cert_identity_order.is_empty() {
        return Err(at.invalid(
            "registry.guard.cert_identity_order",
            "name at least one of \"uri\", \"dns\", \"cn\"".into(),
        ));
    }
    if raw.max_identify_size == 0 || raw.max_identify_size > MAX_IDENTIFY_SIZE {
        return Err(at.invalid(
            "registry.guard.max_identify_size",
            format!("between 1 and {MAX_IDENTIFY_SIZE} bytes (nsqd sends about 150)"),
        ));
    }
    if raw.nsqd.is_empty() {
        return Err(at.invalid(
            "registry.guard.nsqd",
            "list the nsqd identities that may register ([[registry.guard.nsqd]])".into(),
        ));
    }
    let mut grants: Vec<NsqdGrant> = Vec::new();
    for entry in raw.nsqd {
        let grant = nsqd_grant(entry, at)?;
        if grants.iter().any(|g| g.identity == grant.identity) {
            return Err(at.invalid(
                "registry.guard.nsqd.identity",
                format!("{:?} is listed twice", grant.identity),
            ));
        }
        grants.push(grant);
    }
    Ok(GuardConfig {
        listen,
        nsqlookupd_tcp_address: raw.nsqlookupd_tcp_address,
        cert: at.existing("registry.guard.tls_cert", &raw.tls_cert)?,
        key: at.existing("registry.guard.tls_key", &raw.tls_key)?,
        client_ca: at.existing("registry.guard.tls_client_ca", &raw.tls_client_ca)?,
        identity_order: raw.cert_identity_order,
        limits: WireLimits {
            max_identify_size: raw.max_identify_size,
            ..WireLimits::default()
        },
        grants,
    })
}

/// The most `max_identify_size` may be: far above anything nsqd sends.
const MAX_IDENTIFY_SIZE: u32 = 1024 * 1024;

fn nsqd_grant(raw: RawNsqdGrant, at: &Locator<'_>) -> Result<NsqdGrant, ConfigError> {
    let key = |field: &str| format!("registry.guard.nsqd.{field}");
    if raw.identity.is_empty() {
        return Err(at.invalid(&key("identity"), "must not be empty".into()));
    }
    let who = &raw.identity;
    if raw.broadcast_addresses.is_empty() || raw.broadcast_addresses.iter().any(String::is_empty) {
        return Err(at.invalid(
            &key("broadcast_addresses"),
            format!("{who}: list the addresses it may announce (none empty)"),
        ));
    }
    if raw.tcp_port == 0 || raw.http_port == 0 {
        return Err(at.invalid(&key("tcp_port"), format!("{who}: ports must not be 0")));
    }
    let patterns = |field: &str, texts: &[String]| -> Result<Vec<Pattern>, ConfigError> {
        if texts.is_empty() {
            return Err(at.invalid(&key(field), format!("{who}: list at least one pattern")));
        }
        texts
            .iter()
            .map(|t| Pattern::parse(t).map_err(|e| at.invalid(&key(field), format!("{who}: {e}"))))
            .collect()
    };
    let any_channel = ["**".to_owned(), "**#ephemeral".to_owned()];
    Ok(NsqdGrant {
        topics: patterns("topics", &raw.topics)?,
        channels: patterns("channels", raw.channels.as_deref().unwrap_or(&any_channel))?,
        broadcast_addresses: raw.broadcast_addresses,
        tcp_port: raw.tcp_port,
        http_port: raw.http_port,
        identity: raw.identity,
    })
}

fn host_port(at: &Locator<'_>, key: &str, value: &str) -> Result<(), ConfigError> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(at.invalid(key, "expected host:port".into())),
    }
}

fn default_identity_order() -> Vec<IdentitySource> {
    vec![IdentitySource::Uri, IdentitySource::Dns, IdentitySource::Cn]
}

fn default_max_identify_size() -> u32 {
    WireLimits::default().max_identify_size
}
