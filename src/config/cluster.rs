//! `[cluster]`: several replicas sharing one set of limits and revocations through Redis.
//! Absent (or without `redis_url`): each process enforces everything on its own, as before.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use serde::Deserialize;

use super::locate::millis;
use super::{ConfigError, Locator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis_url: Option<String>,
    pub redis_cluster_nodes: Option<Vec<String>>,
    pub redis_sentinels: Option<Vec<String>>,
    pub sentinel_master: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    #[serde(default = "default_expected_replicas")]
    pub expected_replicas: u32,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_connection_lease_ms")]
    pub connection_lease_ms: u64,
}

fn default_connection_lease_ms() -> u64 {
    10_000
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_expected_replicas() -> u32 {
    1
}

pub fn default_key_prefix() -> String {
    "nsqgate:".to_owned()
}

/// What a replica does with a publish that needs a shared budget while Redis cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Enforce quota / `expected_replicas` locally until Redis answers again.
    #[default]
    Local,
    /// Refuse what needs a shared budget.
    Closed,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://host:port/db`, `rediss://host:port/db` (TLS),
    /// `redis+unix:///path/to/redis.sock`.
    pub redis_url: String,
    /// A Redis Cluster's seed nodes (`redis_cluster_nodes`), empty for one Redis. With nodes,
    /// `redis_url` is the first of them: logs name it, and revocations are heard through it
    /// (a cluster's nodes pass every PUBLISH on to each other).
    pub cluster_nodes: Vec<String>,
    /// The sentinels to ask for the master (`redis_sentinels`), None without Sentinel. With
    /// them, `redis_url` is the first sentinel's, for logs.
    pub sentinel: Option<SentinelConfig>,
    /// Certificates for a `rediss://` URL; None verifies Redis against the system's roots.
    pub tls: Option<RedisTls>,
    /// The longest any Redis call may hold a connection or a publish.
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    /// How many replicas share the quotas: in `local` mode each takes this share of them.
    pub expected_replicas: u32,
    /// Prefix of every key and channel nsqgate uses, so several deployments share one Redis.
    pub key_prefix: String,
    /// How long a replica's connection slots outlive it: a replica that stops renewing them
    /// (killed) frees them after this.
    pub connection_lease: Duration,
}

/// Redis Sentinel: the master is whichever server the sentinels name for `master` now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The sentinels' `redis://host:port` URLs (`host:port` in the file is taken as that).
    pub nodes: Vec<String>,
    /// The master's name in the sentinels' configuration (`sentinel monitor NAME ...`).
    pub master: String,
}

/// The files a `rediss://` connection is made with. Paths only: the connection set-up
/// ([`crate::cluster::connect`]) reads them, at start and in `check-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA Redis's certificate must chain to, instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The certificate and key nsqgate shows when Redis asks for one (`tls-auth-clients`).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `None` when the section is absent or names no Redis.
pub(super) fn cluster(
    raw: Option<RawCluster>,
    at: &Locator<'_>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(source) = source(&raw, at)? else {
        return Ok(None);
    };
    let (redis_url, cluster_nodes, sentinel, key) = match source {
        Source::Url(url) => (url, Vec::new(), None, "cluster.redis_url"),
        Source::Nodes(nodes) => (nodes[0].clone(), nodes, None, "cluster.redis_cluster_nodes"),
        Source::Sentinels(sentinel) => {
            let first = sentinel.nodes[0].clone();
            (first, Vec::new(), Some(sentinel), "cluster.redis_sentinels")
        }
    };
    let urls = match &sentinel {
        Some(sentinel) => sentinel.nodes.clone(),
        None => cluster_nodes.iter().chain([&redis_url]).cloned().collect(),
    };
    let mut tls_needed = Vec::new();
    for url in &urls {
        tls_needed.push(uses_tls(url, key, at)?);
    }
    if tls_needed.iter().any(|t| *t != tls_needed[0]) {
        return Err(at.invalid(key, "mixes redis:// and rediss:// nodes".into()));
    }
    if sentinel.is_some() && tls_needed[0] {
        return Err(at.invalid(
            key,
            "TLS to Sentinel is not supported: give redis:// sentinels".into(),
        ));
    }
    let tls = tls(&raw, tls_needed[0], at)?;
    let timeout = millis(at, "cluster.timeout_ms", raw.timeout_ms)?;
    if raw.expected_replicas == 0 {
        return Err(at.invalid("cluster.expected_replicas", "must be at least 1".into()));
    }
    Ok(Some(ClusterConfig {
        redis_url,
        cluster_nodes,
        sentinel,
        tls,
        timeout,
        on_unavailable: raw.on_unavailable,
        expected_replicas: raw.expected_replicas,
        key_prefix: raw.key_prefix,
        connection_lease: connection_lease(raw.connection_lease_ms, at)?,
    }))
}

/// Which Redis the section names: exactly one of `redis_url`, `redis_cluster_nodes` and
/// `redis_sentinels` (with `sentinel_master`), or none (no sharing).
enum Source {
    Url(String),
    /// Never empty.
    Nodes(Vec<String>),
    Sentinels(SentinelConfig),
}

fn source(raw: &RawCluster, at: &Locator<'_>) -> Result<Option<Source>, ConfigError> {
    let given = [
        raw.redis_url.is_some(),
        raw.redis_cluster_nodes.is_some(),
        raw.redis_sentinels.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        let key = if raw.redis_sentinels.is_some() {
            "cluster.redis_sentinels"
        } else {
            "cluster.redis_cluster_nodes"
        };
        return Err(at.invalid(
            key,
            "give one of redis_url (one Redis), redis_cluster_nodes (a Redis Cluster) or \
             redis_sentinels (Redis Sentinel), not both"
                .into(),
        ));
    }
    if raw.sentinel_master.is_some() && raw.redis_sentinels.is_none() {
        return Err(at.invalid("cluster.sentinel_master", "needs redis_sentinels".into()));
    }
    if let Some(url) = &raw.redis_url {
        return Ok(Some(Source::Url(url.clone())));
    }
    if let Some(nodes) = &raw.redis_cluster_nodes {
        if nodes.is_empty() {
            return Err(at.invalid("cluster.redis_cluster_nodes", "names no node".into()));
        }
        return Ok(Some(Source::Nodes(nodes.clone())));
    }
    let Some(sentinels) = &raw.redis_sentinels else {
        return Ok(None);
    };
    if sentinels.is_empty() {
        return Err(at.invalid("cluster.redis_sentinels", "names no sentinel".into()));
    }
    let master = match raw.sentinel_master.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => {
            return Err(at.invalid(
                "cluster.sentinel_master",
                "required with redis_sentinels: the master's name the sentinels monitor".into(),
            ))
        }
    };
    // `host:port`, as sentinels are usually written, is a plain redis:// address.
    let nodes = (sentinels.iter())
        .map(|node| match node.contains("://") {
            true => node.clone(),
            false => format!("redis://{node}"),
        })
        .collect();
    Ok(Some(Source::Sentinels(SentinelConfig { nodes, master })))
}

fn connection_lease(millis: u64, at: &Locator<'_>) -> Result<Duration, ConfigError> {
    if millis < 300 {
        return Err(at.invalid(
            "cluster.connection_lease_ms",
            "must be at least 300 (renewed every third of it)".into(),
        ));
    }
    Ok(Duration::from_millis(millis))
}

/// Whether `url` is a `rediss://` URL; certificate checking cannot be turned off
/// (`#insecure`).
fn uses_tls(url: &str, key: &str, at: &Locator<'_>) -> Result<bool, ConfigError> {
    let info = url
        .into_connection_info()
        .map_err(|e| at.invalid(key, format!("{url:?} is not a Redis URL: {e}")))?;
    match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(at.invalid(
            key,
            "#insecure would not check Redis's certificate: give its CA in tls_ca instead".into(),
        )),
        ConnectionAddr::TcpTls { .. } => Ok(true),
        _ => Ok(false),
    }
}

/// The TLS files, which only mean something with `rediss://` URLs.
fn tls(
    raw: &RawCluster,
    uses_tls: bool,
    at: &Locator<'_>,
) -> Result<Option<RedisTls>, ConfigError> {
    let ca = match &raw.tls_ca {
        Some(path) => Some(at.existing("cluster.tls_ca", path)?),
        None => None,
    };
    let client = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Some((
            at.existing("cluster.tls_cert", cert)?,
            at.existing("cluster.tls_key", key)?,
        )),
        (None, None) => None,
        (Some(_), None) => {
            return Err(at.invalid("cluster.tls_key", "required with tls_cert".into()))
        }
        (None, Some(_)) => {
            return Err(at.invalid("cluster.tls_cert", "required with tls_key".into()))
        }
    };
    if ca.is_none() && client.is_none() {
        return Ok(None);
    }
    if !uses_tls {
        let key = if ca.is_some() {
            "cluster.tls_ca"
        } else {
            "cluster.tls_cert"
        };
        return Err(at.invalid(key, "needs a rediss:// redis_url".into()));
    }
    Ok(Some(RedisTls { ca, client }))
}
