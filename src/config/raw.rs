//! The configuration as written: serde types with defaults, before any validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::mtls::IdentitySource;
use crate::limit::OnLimit;
use crate::nsq::Limits;
use crate::policy::RateQuota;

use super::http;

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
    /// Quotas on new topic and channel names per identity; unset keys keep their defaults.
    #[serde(default)]
    pub name_quotas: Option<crate::limit::names::NameQuota>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`); absent: none.
    pub admin: Option<super::admin::RawAdmin>,
    /// Guarded nsqd registration roles; absent: none.
    pub registry: Option<super::registry::RawRegistry>,
    /// Redis shared by several replicas; absent: this process enforces everything alone.
    pub cluster: Option<super::cluster::RawCluster>,
    /// nsqd's HTTP auth server (`--auth-http-address`) from this policy; absent: none.
    pub auth_service: Option<super::authsvc::RawAuthService>,
    /// End-to-end message integrity; absent: no topic is signed.
    pub integrity: Option<super::integrity::RawIntegrity>,
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

/// Caps left out get defaults sized from the descriptor limit; 0 switches one off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnections {
    pub max_total: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub max_per_identity: Option<usize>,
    /// nsqgate's own connections to one nsqd address.
    pub max_per_nsqd: Option<usize>,
    pub new_per_sec_per_ip: Option<u32>,
    pub new_burst_per_ip: Option<u32>,
    /// Load balancers whose PROXY protocol (v1 or v2) header is read and believed.
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// Threads connections run on (one event loop each); the cores available when left out.
    pub workers: Option<usize>,
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
            identity: Some(default_identity_rate()),
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
    /// Past this age without a successful refresh, the fetched JWKS verifies nothing.
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale_secs: u64,
    /// The issuer's algorithms, for JWKS entries without `alg`.
    #[serde(default)]
    pub algorithms: Vec<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Where audit JSON lines go; stderr when unset.
    pub file: Option<PathBuf>,
    /// What happens to a decision whose line cannot be written.
    pub on_failure: crate::audit::OnFailure,
    /// Identical refusals from one source within this many seconds make one line with a
    /// count; 0 writes every refusal.
    pub fold_secs: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            file: None,
            on_failure: crate::audit::OnFailure::Log,
            fold_secs: 10,
        }
    }
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
    /// Pass the client's client_id, hostname and user_agent on to nsqd (inside TLS).
    #[serde(default)]
    pub forward_client_metadata: bool,
    /// For an nsqd started with other IDENTIFY ranges than its defaults.
    #[serde(default)]
    pub nsqd_options: RawNsqdOptions,
}

/// nsqd's flags that bound IDENTIFY settings; unset means learned from nsqd, else its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNsqdOptions {
    pub max_heartbeat_interval_ms: Option<u64>,
    pub max_output_buffer_size: Option<u64>,
    pub min_output_buffer_timeout_ms: Option<u64>,
    pub max_output_buffer_timeout_ms: Option<u64>,
    pub snappy: Option<bool>,
    pub deflate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_msg_size: u32,
    pub max_body_size: u32,
    pub max_line_len: usize,
    pub max_mpub_messages: u32,
    pub max_auth_size: u32,
    pub max_unauthenticated_memory: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let limits = Limits::default();
        RawLimits {
            max_msg_size: limits.max_msg_size,
            max_body_size: limits.max_body_size,
            max_line_len: limits.max_line_len,
            max_mpub_messages: 10_000,
            max_auth_size: limits.max_auth_size,
            // 4,096 connections each holding a whole maximal AUTH (16 KiB) at once.
            max_unauthenticated_memory: 64 * 1024 * 1024,
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

/// Generous enough for any one well-behaved producer, low enough that one identity cannot
/// take a whole nsqd: 50,000 msg/s (burst 100,000) and 100 MiB/s (burst 200 MiB).
pub fn default_identity_rate() -> RateQuota {
    RateQuota {
        messages_per_sec: Some(50_000),
        burst_messages: Some(100_000),
        bytes_per_sec: Some(100 << 20),
        burst_bytes: Some(200 << 20),
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

fn default_jwks_max_stale() -> u64 {
    3_600
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
