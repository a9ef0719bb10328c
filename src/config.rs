//! Configuration: a TOML file plus `NSQGATE_SECTION__KEY` environment overrides, read with
//! figment into [`RawConfig`], then checked into a [`Config`] whose values are ready to use.
//! Every rejection names the file, the line (when the key is in the file) and the key.

pub mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::auth::jwt::{JwtKey, JwtSettings, KeyMaterial};
use crate::auth::mtls::IdentitySource;
use crate::limit::conn::ConnSettings;
use crate::limit::{OnLimit, RateSettings};
use crate::nsq::Limits;
use crate::policy::RateQuota;

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

// === raw, as written ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub client: RawClient,
    pub upstream: RawUpstream,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub http: Option<http::RawHttp>,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    pub producer_pool: Option<RawPool>,
    #[serde(default)]
    pub connections: RawConnections,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
}

/// Gateway mode: one more NSQ listener, in front of one more known nsqd. TLS toward it, the
/// client certificate and AUTH secret are those of `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub listen: String,
    pub nsqd_tcp_address: String,
    /// Defaults to `upstream.tls_server_name`.
    pub tls_server_name: Option<String>,
}

/// Edge gateway for producers: a listener that spreads new connections over every known nsqd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub listen: String,
    #[serde(default = "default_health_check_ms")]
    pub health_check_ms: u64,
}

fn default_health_check_ms() -> u64 {
    2_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnections {
    pub max_total: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub max_per_identity: Option<usize>,
    pub new_per_sec_per_ip: Option<u32>,
    pub new_burst_per_ip: Option<u32>,
    /// Load balancers whose PROXY protocol (v1 or v2) header is read and believed.
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimits {
    pub on_limit: OnLimit,
    pub max_delay_ms: u64,
    pub idle_evict_secs: u64,
    pub identity: Option<RateQuota>,
    pub identity_topic: Option<RateQuota>,
    pub topic: Option<RateQuota>,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        RawRateLimits {
            on_limit: OnLimit::Delay,
            max_delay_ms: 5_000,
            idle_evict_secs: 600,
            identity: None,
            identity_topic: None,
            topic: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub listen: String,
    #[serde(default = "default_true")]
    pub require_tls: bool,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    #[serde(default = "default_min_version")]
    pub tls_min_version: String,
    /// Enables client certificates: the CA they must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// "optional" (default when tls_client_ca is set) or "required".
    pub client_cert: Option<String>,
    #[serde(default)]
    pub tls_client_crls: Vec<PathBuf>,
    #[serde(default = "default_identity_order")]
    pub cert_identity_order: Vec<IdentitySource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub require_identity: bool,
    pub policy_dir: PathBuf,
    pub policy_reload_ms: u64,
    pub revocation_grace_ms: u64,
    pub jwt: Option<RawJwt>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            require_identity: true,
            policy_dir: PathBuf::from("policies"),
            policy_reload_ms: 2_000,
            revocation_grace_ms: 2_000,
            jwt: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    #[serde(default)]
    pub keys: Vec<RawJwtKey>,
    pub jwks_file: Option<PathBuf>,
    /// An https URL serving the issuer's JWKS, re-fetched in the background.
    pub jwks_url: Option<String>,
    /// The CA that the JWKS URL's certificate must chain to.
    pub jwks_ca: Option<PathBuf>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    pub algorithm: String,
    /// A PEM public key, for RS*, PS*, ES* and EdDSA.
    pub file: Option<PathBuf>,
    /// A file holding the shared secret, for HS*.
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Where audit JSON lines go; stderr when unset.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub nsqd_tcp_address: String,
    #[serde(default = "default_true")]
    pub tls: bool,
    pub tls_server_name: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub auth_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_msg_size: u32,
    pub max_body_size: u32,
    pub max_line_len: usize,
    pub max_mpub_messages: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        let limits = Limits::default();
        RawLimits {
            max_msg_size: limits.max_msg_size,
            max_body_size: limits.max_body_size,
            max_line_len: limits.max_line_len,
            max_mpub_messages: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub tls_handshake_ms: u64,
    pub identify_ms: u64,
    pub auth_ms: u64,
    pub upstream_connect_ms: u64,
    pub idle_ms: u64,
    pub partial_frame_ms: u64,
    pub write_ms: u64,
    pub shutdown_ms: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            tls_handshake_ms: 10_000,
            identify_ms: 10_000,
            auth_ms: 10_000,
            upstream_connect_ms: 5_000,
            partial_frame_ms: 30_000,
            write_ms: 30_000,
            shutdown_ms: 10_000,
            // nsqd heartbeats every 30 s and expects an answer within 60 s; allow a little more.
            idle_ms: 65_000,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_min_version() -> String {
    "1.2".to_owned()
}

fn default_identity_order() -> Vec<IdentitySource> {
    vec![IdentitySource::Uri, IdentitySource::Dns, IdentitySource::Cn]
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_leeway() -> u64 {
    30
}

fn default_identity_claim() -> String {
    "sub".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
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
    pub http: Option<http::HttpConfig>,
    /// Most messages one MPUB may carry.
    pub max_mpub_messages: u32,
    pub connections: ConnSettings,
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// More listeners, each in front of its own nsqd (gateway mode).
    pub nodes: Vec<NodeConfig>,
    /// A producers' listener over `[upstream]` and every node.
    pub producer_pool: Option<PoolConfig>,
    pub rates: RateSettings,
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
    pub server_name: String,
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

    fn from_raw(raw: RawConfig, at: &Locator<'_>) -> Result<Config, ConfigError> {
        let base = at.file.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let existing = |key: &str, p: &Path| -> Result<PathBuf, ConfigError> {
            let full = resolve(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(at.invalid(key, format!("file {} does not exist", full.display())))
            }
        };

        let listen = raw
            .client
            .listen
            .parse()
            .map_err(|e| at.invalid("client.listen", format!("not an IP:port address: {e}")))?;
        let tls_min_version = match raw.client.tls_min_version.as_str() {
            "1.2" | "tls1.2" => TlsVersion::V1_2,
            "1.3" | "tls1.3" => TlsVersion::V1_3,
            other => {
                return Err(at.invalid(
                    "client.tls_min_version",
                    format!("{other:?} is not supported; use \"1.2\" or \"1.3\""),
                ))
            }
        };
        let client_cert = match (raw.client.client_cert.as_deref(), &raw.client.tls_client_ca) {
            (None | Some("none"), None) => ClientCertMode::None,
            (None | Some("optional"), Some(_)) => ClientCertMode::Optional,
            (Some("required"), Some(_)) => ClientCertMode::Required,
            (Some("optional" | "required"), None) => {
                return Err(at.invalid(
                    "client.tls_client_ca",
                    "required when client_cert is optional or required".into(),
                ))
            }
            (Some("none"), Some(_)) => {
                return Err(at.invalid(
                    "client.client_cert",
                    "\"none\" contradicts tls_client_ca; remove one".into(),
                ))
            }
            (Some(other), _) => {
                return Err(at.invalid(
                    "client.client_cert",
                    format!("{other:?}: use \"none\", \"optional\" or \"required\""),
                ))
            }
        };
        let tls_client_ca = match &raw.client.tls_client_ca {
            Some(ca) => Some(existing("client.tls_client_ca", ca)?),
            None => None,
        };
        let tls_client_crls = raw
            .client
            .tls_client_crls
            .iter()
            .map(|crl| existing("client.tls_client_crls", crl))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.client.cert_identity_order.is_empty() {
            return Err(at.invalid(
                "client.cert_identity_order",
                "name at least one of \"uri\", \"dns\", \"cn\"".into(),
            ));
        }
        let client = ClientConfig {
            listen,
            require_tls: raw.client.require_tls,
            tls_cert: existing("client.tls_cert", &raw.client.tls_cert)?,
            tls_key: existing("client.tls_key", &raw.client.tls_key)?,
            tls_min_version,
            client_cert,
            tls_client_ca,
            tls_client_crls,
            cert_identity_order: raw.client.cert_identity_order,
        };

        let up = raw.upstream;
        if !up.nsqd_tcp_address.contains(':') {
            return Err(at.invalid("upstream.nsqd_tcp_address", "expected host:port".into()));
        }
        let tls = if up.tls {
            let ca = up.tls_ca.as_deref().ok_or_else(|| {
                at.invalid(
                    "upstream.tls_ca",
                    "required while upstream.tls is on: the CA that signed nsqd's certificate"
                        .into(),
                )
            })?;
            let server_name = up.tls_server_name.clone().ok_or_else(|| {
                at.invalid(
                    "upstream.tls_server_name",
                    "required while upstream.tls is on: the name nsqd's certificate must carry"
                        .into(),
                )
            })?;
            rustls_pki_types::ServerName::try_from(server_name.clone())
                .map_err(|e| at.invalid("upstream.tls_server_name", e.to_string()))?;
            let client_cert = match (&up.tls_cert, &up.tls_key) {
                (Some(cert), Some(key)) => Some((
                    existing("upstream.tls_cert", cert)?,
                    existing("upstream.tls_key", key)?,
                )),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(at.invalid(
                        "upstream.tls_key",
                        "tls_cert is set, so tls_key is required".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(at.invalid(
                        "upstream.tls_cert",
                        "tls_key is set, so tls_cert is required".into(),
                    ))
                }
            };
            Some(UpstreamTls {
                server_name,
                ca: existing("upstream.tls_ca", ca)?,
                client_cert,
            })
        } else {
            None
        };
        let upstream = UpstreamConfig {
            nsqd_tcp_address: up.nsqd_tcp_address,
            tls,
            auth_secret: up.auth_secret.filter(|s| !s.is_empty()),
        };

        let limits = Limits {
            max_msg_size: nonzero(at, "limits.max_msg_size", raw.limits.max_msg_size)?,
            max_body_size: nonzero(at, "limits.max_body_size", raw.limits.max_body_size)?,
            max_line_len: usize::try_from(nonzero(
                at,
                "limits.max_line_len",
                u32::try_from(raw.limits.max_line_len).unwrap_or(u32::MAX),
            )?)
            .unwrap_or(usize::MAX),
        };
        if limits.max_body_size < limits.max_msg_size {
            return Err(at.invalid(
                "limits.max_body_size",
                "must be at least limits.max_msg_size (an MPUB of one message must fit)".into(),
            ));
        }
        let t = raw.timeouts;
        let timeouts = Timeouts {
            tls_handshake: millis(at, "timeouts.tls_handshake_ms", t.tls_handshake_ms)?,
            identify: millis(at, "timeouts.identify_ms", t.identify_ms)?,
            auth: millis(at, "timeouts.auth_ms", t.auth_ms)?,
            partial_frame: millis(at, "timeouts.partial_frame_ms", t.partial_frame_ms)?,
            write: millis(at, "timeouts.write_ms", t.write_ms)?,
            shutdown: millis(at, "timeouts.shutdown_ms", t.shutdown_ms)?,
            upstream_connect: millis(at, "timeouts.upstream_connect_ms", t.upstream_connect_ms)?,
            idle: millis(at, "timeouts.idle_ms", t.idle_ms)?,
        };
        let auth = AuthConfig {
            require_identity: raw.auth.require_identity,
            policy_dir: resolve(&raw.auth.policy_dir),
            policy_reload: millis(at, "auth.policy_reload_ms", raw.auth.policy_reload_ms)?,
            revocation_grace: millis(at, "auth.revocation_grace_ms", raw.auth.revocation_grace_ms)?,
            jwks_source: match &raw.auth.jwt {
                Some(jwt) => jwks_source(jwt, at, &existing)?,
                None => None,
            },
            jwt: match raw.auth.jwt {
                Some(jwt) => Some(jwt_settings(jwt, at, &existing)?),
                None => None,
            },
        };
        let max_mpub_messages =
            nonzero(at, "limits.max_mpub_messages", raw.limits.max_mpub_messages)?;
        let c = raw.connections;
        let positive = |key: &str, v: Option<usize>| -> Result<Option<usize>, ConfigError> {
            match v {
                Some(0) => Err(at.invalid(
                    key,
                    "must be greater than 0 (leave it out for no limit)".into(),
                )),
                v => Ok(v),
            }
        };
        let new_per_sec_per_ip = match (c.new_per_sec_per_ip, c.new_burst_per_ip) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(at.invalid(
                    "connections.new_burst_per_ip",
                    "needs connections.new_per_sec_per_ip".into(),
                ))
            }
            (Some(rate), burst) => {
                let rate = std::num::NonZeroU32::new(rate).ok_or_else(|| {
                    at.invalid(
                        "connections.new_per_sec_per_ip",
                        "must be greater than 0".into(),
                    )
                })?;
                let burst = match burst {
                    Some(b) => std::num::NonZeroU32::new(b).ok_or_else(|| {
                        at.invalid(
                            "connections.new_burst_per_ip",
                            "must be greater than 0".into(),
                        )
                    })?,
                    None => rate,
                };
                Some((rate, burst))
            }
        };
        let connections = ConnSettings {
            max_total: positive("connections.max_total", c.max_total)?,
            max_per_ip: positive("connections.max_per_ip", c.max_per_ip)?,
            max_per_identity: positive("connections.max_per_identity", c.max_per_identity)?,
            new_per_sec_per_ip,
        };
        let r = raw.rate_limits;
        for (key, quota) in [
            ("rate_limits.identity", &r.identity),
            ("rate_limits.identity_topic", &r.identity_topic),
            ("rate_limits.topic", &r.topic),
        ] {
            if let Some(quota) = quota {
                quota.validate().map_err(|reason| at.invalid(key, reason))?;
            }
        }
        let rates = RateSettings {
            on_limit: r.on_limit,
            max_delay: Duration::from_millis(r.max_delay_ms),
            idle_evict: Duration::from_secs(r.idle_evict_secs.max(1)),
            identity: r.identity,
            identity_topic: r.identity_topic,
            topic: r.topic,
        };
        let mut nodes = Vec::new();
        for (index, node) in raw.nodes.into_iter().enumerate() {
            let key = |field: &str| format!("nodes[{index}].{field}");
            let listen = node
                .listen
                .parse()
                .map_err(|e| at.invalid(&key("listen"), format!("not an IP:port address: {e}")))?;
            if !node.nsqd_tcp_address.contains(':') {
                return Err(at.invalid(&key("nsqd_tcp_address"), "expected host:port".into()));
            }
            let mut upstream = upstream.clone();
            upstream.nsqd_tcp_address = node.nsqd_tcp_address;
            if let (Some(tls), Some(name)) = (upstream.tls.as_mut(), node.tls_server_name) {
                rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| at.invalid(&key("tls_server_name"), e.to_string()))?;
                tls.server_name = name;
            }
            nodes.push(NodeConfig { listen, upstream });
        }
        let producer_pool = match raw.producer_pool {
            Some(pool) => Some(PoolConfig {
                listen: pool.listen.parse().map_err(|e| {
                    at.invalid(
                        "producer_pool.listen",
                        format!("not an IP:port address: {e}"),
                    )
                })?,
                health_check: millis(at, "producer_pool.health_check_ms", pool.health_check_ms)?,
            }),
            None => None,
        };
        Ok(Config {
            nodes,
            producer_pool,
            max_mpub_messages,
            connections,
            proxy_protocol_from: c.proxy_protocol_from,
            rates,
            source: at.file.to_owned(),
            client,
            http: (raw.http)
                .map(|h| http::HttpConfig::from_raw(h, upstream.tls.is_some(), at))
                .transpose()?,
            upstream,
            limits,
            timeouts,
            auth,
            audit_file: raw.audit.file.map(|f| resolve(&f)),
        })
    }
}

fn jwt_settings(
    raw: RawJwt,
    at: &Locator<'_>,
    existing: &dyn Fn(&str, &Path) -> Result<PathBuf, ConfigError>,
) -> Result<JwtSettings, ConfigError> {
    let read = |key: &str, path: &Path| -> Result<Vec<u8>, ConfigError> {
        let path = existing(key, path)?;
        std::fs::read(&path).map_err(|e| at.invalid(key, format!("{}: {e}", path.display())))
    };
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

fn jwks_source(
    raw: &RawJwt,
    at: &Locator<'_>,
    existing: &dyn Fn(&str, &Path) -> Result<PathBuf, ConfigError>,
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
        ca: existing("auth.jwt.jwks_ca", ca)?,
        refresh: Duration::from_secs(raw.jwks_refresh_secs.max(1)),
    }))
}

fn nonzero(at: &Locator<'_>, key: &str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        Err(at.invalid(key, "must be greater than 0".into()))
    } else {
        Ok(value)
    }
}

fn millis(at: &Locator<'_>, key: &str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 {
        Err(at.invalid(key, "must be greater than 0".into()))
    } else {
        Ok(Duration::from_millis(value))
    }
}

/// Finds where a dotted key stands in the config file, so errors can name the line.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn invalid(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: key_line(self.text, key),
            key: key.to_owned(),
            reason,
        }
    }

    fn figment_error(&self, err: figment::Error) -> ConfigError {
        let mut key = err.path.join(".");
        let reason = match &err.kind {
            figment::error::Kind::UnknownField(field, _) => {
                append_segment(&mut key, field);
                "unknown key (a typo?)".to_owned()
            }
            figment::error::Kind::MissingField(field) => {
                append_segment(&mut key, field);
                "required key is missing".to_owned()
            }
            kind => kind.to_string(),
        };
        let from_env = err
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let reason = if from_env {
            format!("{reason} (set by an {ENV_PREFIX}* environment variable)")
        } else {
            reason
        };
        self.invalid(&key, reason)
    }
}

/// figment names the field in the path for some errors and not for others.
fn append_segment(key: &mut String, field: &str) {
    if key.rsplit('.').next() == Some(field) {
        return;
    }
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(field);
}

/// 1-based line of `section.key` (or of `[section]` for a one-part key) in a TOML text.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = match dotted.rsplit_once('.') {
        Some((table, key)) => (table, key),
        None => ("", dotted),
    };
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().to_owned();
            if table.is_empty() && current == key {
                return Some(index + 1);
            }
            continue;
        }
        if current == table {
            if let Some((name, _)) = line.split_once('=') {
                if name.trim().trim_matches('"') == key {
                    return Some(index + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
