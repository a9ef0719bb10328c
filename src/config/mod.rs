//! Configuration: a TOML file plus `NSQGATE_SECTION__KEY` environment overrides, read with
//! figment into [`RawConfig`], then checked into a [`Config`] whose values are ready to use.
//! Every rejection names the file, the line (when the key is in the file) and the key.

pub mod admin;
pub mod authsvc;
pub mod cluster;
pub mod http;
pub mod integrity;
mod jwt;
mod locate;
pub mod perms;
mod raw;
pub mod registry;
mod sections;

pub use locate::Locator;
use locate::{millis, nonzero};
pub use raw::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use crate::auth::jwt::JwtSettings;
use crate::auth::mtls::IdentitySource;
use crate::limit::conn::ConnSettings;
use crate::limit::RateSettings;
use crate::nsq::Limits;

/// The environment prefix for overrides: `NSQGATE_UPSTREAM__TLS_CA=/ca.pem`.
pub const ENV_PREFIX: &str = "NSQGATE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}`{key}`: {reason}", file.display(), line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, for scripts and tests.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

// === validated ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; relative paths in it were resolved against its folder.
    pub source: PathBuf,
    pub client: ClientConfig,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub auth: AuthConfig,
    pub audit_file: Option<PathBuf>,
    /// `[audit] on_failure`: what happens to a decision whose audit line cannot be written.
    pub audit_on_failure: crate::audit::OnFailure,
    /// `[audit] fold_secs`: identical refusals from one source fold into one line per interval.
    pub audit_fold: Option<Duration>,
    pub http: Option<http::HttpConfig>,
    /// Most messages one MPUB may carry.
    pub max_mpub_messages: u32,
    /// Bytes all connections without an identity may hold in their command buffers together.
    pub max_unauthenticated_memory: usize,
    pub connections: ConnSettings,
    /// `[connections] workers`: the threads connections run on (`net::workers`).
    pub workers: std::num::NonZeroUsize,
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// More listeners, each in front of its own nsqd (gateway mode).
    pub nodes: Vec<NodeConfig>,
    /// A producers' listener over `[upstream]` and every node.
    pub producer_pool: Option<PoolConfig>,
    pub rates: RateSettings,
    /// Every file and folder the configuration names, for the start-up permission check.
    pub files: Vec<perms::NamedFile>,
    /// `[name_quotas]` over the built-in defaults (0 = no limit); roles may raise them.
    pub name_quotas: crate::limit::names::NameQuota,
    /// Safe defaults the file switched off: `check-config` prints them, `run` logs them.
    pub warnings: Vec<String>,
    /// `--allow-insecure-permissions` was given: loose file modes are warnings, at start and
    /// on reload (set by the command line, never by the file).
    pub allow_insecure_permissions: bool,
    /// `[admin]`: the operators' listener; None when the section is absent.
    pub admin: Option<admin::AdminConfig>,
    /// `[registry.sidecar]` / `[registry.guard]`: guarded nsqd registration, started beside
    /// the NSQ listeners.
    pub registry: Option<registry::RegistryConfig>,
    /// `[cluster]`: Redis shared by every replica; None runs this process on its own.
    pub cluster: Option<cluster::ClusterConfig>,
    /// `[auth_service]`: nsqd's auth server; None when the section is absent.
    pub auth_service: Option<authsvc::AuthServiceConfig>,
    /// `[integrity]`: topics whose messages are signed end to end (none when absent).
    pub integrity: crate::integrity::Integrity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertMode {
    /// No client certificates are asked for.
    None,
    /// Asked for and verified when sent; a client without one must AUTH.
    Optional,
    /// The TLS handshake fails without a certificate from the client CA.
    Required,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Deny by default: with this on, a client with no identity can do nothing but AUTH.
    pub require_identity: bool,
    pub policy_dir: PathBuf,
    pub policy_reload: Duration,
    pub revocation_grace: Duration,
    pub jwt: Option<JwtSettings>,
    /// Where the JWKS is fetched from and refreshed, when `jwks_url` is set.
    pub jwks_source: Option<JwksSource>,
}

#[derive(Clone, Debug)]
pub struct JwksSource {
    pub url: ::http::Uri,
    pub ca: PathBuf,
    pub refresh: Duration,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub listen: SocketAddr,
    pub require_tls: bool,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub tls_min_version: TlsVersion,
    pub client_cert: ClientCertMode,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_crls: Vec<PathBuf>,
    pub cert_identity_order: Vec<IdentitySource>,
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `host:port`, resolved at connect time so a container name works.
    pub nsqd_tcp_address: String,
    /// None only when the file says `tls = false` explicitly.
    pub tls: Option<UpstreamTls>,
    pub auth_secret: Option<String>,
    /// The client's client_id, hostname and user_agent go to nsqd (inside TLS); otherwise
    /// nsqd sees nsqgate's own.
    pub forward_client_metadata: bool,
    /// IDENTIFY ranges set by the operator, over what nsqd tells and its defaults.
    pub nsqd_options: NsqdOptions,
}

/// The operator's word on nsqd's IDENTIFY ranges (unset: learned from nsqd, else its default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsqdOptions {
    pub max_heartbeat_interval_ms: Option<i64>,
    pub max_output_buffer_size: Option<i64>,
    pub min_output_buffer_timeout_ms: Option<i64>,
    pub max_output_buffer_timeout_ms: Option<i64>,
    pub snappy: Option<bool>,
    pub deflate: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub upstream: UpstreamConfig,
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub listen: SocketAddr,
    pub health_check: Duration,
}

#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// The name nsqd's certificate must carry, parsed once here.
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub ca: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tls_handshake: Duration,
    /// From connect to a complete IDENTIFY (and the TLS upgrade).
    pub identify: Duration,
    /// From the end of IDENTIFY to an identity, when one is required.
    pub auth: Duration,
    pub upstream_connect: Duration,
    pub idle: Duration,
    /// How long a started command may take to arrive whole (slow-drip defence).
    pub partial_frame: Duration,
    /// How long one write to a peer may block (a peer that stops reading).
    pub write: Duration,
    /// How long open connections may drain after SIGTERM.
    pub shutdown: Duration,
}

// === impl Config ===

impl Config {
    /// Reads `file`, applies `NSQGATE_*` overrides from the environment, and validates.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let figment = Figment::new().merge(Toml::string(&text)).merge(
            // Only SECTION__KEY names are overrides; NSQGATE_LOG and NSQGATE_CONFIG are not.
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let located = Locator { file, text: &text };
        let raw: RawConfig = figment
            .extract()
            .map_err(|err| located.figment_error(err))?;
        Config::from_raw(raw, &located)
    }

    /// Files whose mode lets group or others read a secret or change a decision.
    pub fn insecure_files(&self) -> Vec<perms::Insecure> {
        perms::insecure(&self.files)
    }

    fn from_raw(raw: RawConfig, at: &Locator<'_>) -> Result<Config, ConfigError> {
        let mut files = perms::named_files(&raw, at);
        if let Some(registry) = &raw.registry {
            files.extend(registry::named_files(registry, at));
        }
        let client = sections::client(raw.client, at)?;
        let upstream = sections::upstream(raw.upstream, at)?;
        let limits = limits(&raw.limits, at)?;
        let max_unauthenticated_memory = usize::try_from(raw.limits.max_unauthenticated_memory)
            .ok()
            .filter(|bytes| *bytes >= limits.max_auth_size as usize)
            .ok_or_else(|| {
                at.invalid(
                    "limits.max_unauthenticated_memory",
                    "must hold at least one AUTH of limits.max_auth_size bytes".into(),
                )
            })?;
        if limits.max_body_size < limits.max_msg_size {
            return Err(at.invalid(
                "limits.max_body_size",
                "must be at least limits.max_msg_size (an MPUB of one message must fit)".into(),
            ));
        }
        let timeouts = timeouts(&raw.timeouts, at)?;
        let auth = auth(raw.auth, at)?;
        let max_mpub_messages =
            nonzero(at, "limits.max_mpub_messages", raw.limits.max_mpub_messages)?;
        let mut warnings = Vec::new();
        let descriptors = crate::limit::conn::descriptor_limit();
        let connections = sections::connections(&raw.connections, descriptors, at, &mut warnings)?;
        let rates = sections::rates(raw.rate_limits, at, &mut warnings)?;
        let nodes = sections::nodes(raw.nodes, &upstream, at)?;
        let producer_pool = sections::pool(raw.producer_pool, at)?;
        let admin = raw.admin.map(|a| admin::admin(a, at)).transpose()?;
        let registry = raw
            .registry
            .map(|r| registry::registry(r, at))
            .transpose()?;
        let cluster = cluster::cluster(raw.cluster, at)?;
        let auth_service = (raw.auth_service)
            .map(|a| authsvc::auth_service(a, at))
            .transpose()?;
        let integrity = integrity::integrity(raw.integrity, at)?;
        let config = Config {
            cluster,
            allow_insecure_permissions: false,
            admin,
            registry,
            auth_service,
            integrity,
            max_unauthenticated_memory,
            files,
            warnings,
            nodes,
            producer_pool,
            max_mpub_messages,
            connections,
            workers: sections::workers(&raw.connections, at)?,
            proxy_protocol_from: raw.connections.proxy_protocol_from,
            rates,
            name_quotas: raw
                .name_quotas
                .unwrap_or_default()
                .over(crate::limit::names::DEFAULT),
            source: at.file.to_owned(),
            client,
            http: (raw.http)
                .map(|h| http::HttpConfig::from_raw(h, upstream.tls.is_some(), at))
                .transpose()?,
            upstream,
            limits,
            timeouts,
            auth,
            audit_on_failure: raw.audit.on_failure,
            audit_fold: audit_fold(raw.audit.fold_secs, at)?,
            audit_file: raw.audit.file.map(|f| at.resolve(&f)),
        };
        sections::check_node_fronts(&config, at)?;
        Ok(config)
    }
}

fn limits(raw: &RawLimits, at: &Locator<'_>) -> Result<Limits, ConfigError> {
    let limits = Limits {
        max_msg_size: nonzero(at, "limits.max_msg_size", raw.max_msg_size)?,
        max_body_size: nonzero(at, "limits.max_body_size", raw.max_body_size)?,
        max_line_len: usize::try_from(nonzero(
            at,
            "limits.max_line_len",
            u32::try_from(raw.max_line_len).unwrap_or(u32::MAX),
        )?)
        .unwrap_or(usize::MAX),
        max_auth_size: nonzero(at, "limits.max_auth_size", raw.max_auth_size)?,
    };
    Ok(limits)
}

pub(crate) fn timeouts(t: &RawTimeouts, at: &Locator<'_>) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        tls_handshake: millis(at, "timeouts.tls_handshake_ms", t.tls_handshake_ms)?,
        identify: millis(at, "timeouts.identify_ms", t.identify_ms)?,
        auth: millis(at, "timeouts.auth_ms", t.auth_ms)?,
        partial_frame: millis(at, "timeouts.partial_frame_ms", t.partial_frame_ms)?,
        write: millis(at, "timeouts.write_ms", t.write_ms)?,
        shutdown: millis(at, "timeouts.shutdown_ms", t.shutdown_ms)?,
        upstream_connect: millis(at, "timeouts.upstream_connect_ms", t.upstream_connect_ms)?,
        idle: millis(at, "timeouts.idle_ms", t.idle_ms)?,
    })
}

fn auth(raw: RawAuth, at: &Locator<'_>) -> Result<AuthConfig, ConfigError> {
    Ok(AuthConfig {
        require_identity: raw.require_identity,
        policy_dir: at.resolve(&raw.policy_dir),
        policy_reload: millis(at, "auth.policy_reload_ms", raw.policy_reload_ms)?,
        revocation_grace: millis(at, "auth.revocation_grace_ms", raw.revocation_grace_ms)?,
        jwks_source: match &raw.jwt {
            Some(jwt) => jwt::jwks_source(jwt, at)?,
            None => None,
        },
        jwt: match raw.jwt {
            Some(jwt) => Some(jwt::jwt_settings(jwt, at)?),
            None => None,
        },
    })
}

/// `[audit] fold_secs`: 0 writes every refusal; at most an hour.
pub(crate) fn audit_fold(secs: u64, at: &Locator<'_>) -> Result<Option<Duration>, ConfigError> {
    match secs {
        0 => Ok(None),
        1..=3600 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(at.invalid(
            "audit.fold_secs",
            "at most 3600 (an hour); 0 writes every refusal".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
