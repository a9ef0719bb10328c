//! `[cluster]`: several replicas sharing one set of limits and revocations through Redis.
//! Absent (or without `redis_url`): each process enforces everything on its own, as before.

use std::time::Duration;

use serde::Deserialize;

use super::locate::millis;
use super::{ConfigError, Locator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis_url: Option<String>,
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
    /// Where Redis is: `redis://host:port/db`, `redis+unix:///path/to/redis.sock`.
    pub redis_url: String,
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

/// `None` when the section is absent or names no Redis.
pub(super) fn cluster(
    raw: Option<RawCluster>,
    at: &Locator<'_>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(redis_url) = raw.redis_url else {
        return Ok(None);
    };
    if let Err(e) = redis::Client::open(redis_url.as_str()) {
        return Err(at.invalid("cluster.redis_url", format!("not a Redis URL: {e}")));
    }
    let timeout = millis(at, "cluster.timeout_ms", raw.timeout_ms)?;
    if raw.expected_replicas == 0 {
        return Err(at.invalid("cluster.expected_replicas", "must be at least 1".into()));
    }
    Ok(Some(ClusterConfig {
        redis_url,
        timeout,
        on_unavailable: raw.on_unavailable,
        expected_replicas: raw.expected_replicas,
        key_prefix: raw.key_prefix,
        connection_lease: connection_lease(raw.connection_lease_ms, at)?,
    }))
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
