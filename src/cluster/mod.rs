//! Several replicas, one set of limits: the process's client of the Redis named by
//! `[cluster] redis_url`, shared by everything that keeps state across replicas
//! ([`feed`]: revocations). Every call is bounded by `cluster.timeout_ms`; its outcome keeps
//! `nsqgate_cluster_redis_up`, the error counts and `/readyz` current, so an operator sees
//! whether this replica enforces shared or local limits. Absent `[cluster]`, none of this
//! exists and each process enforces everything alone.

pub mod command;
pub mod connect;
pub mod feed;
pub mod lease;
pub mod quota;
pub mod revocations;
pub mod sentinel;
pub mod slots;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::Readiness;
use crate::config::cluster::{ClusterConfig, OnUnavailable};
use crate::metrics::Metrics;

/// The name `/readyz` reports Redis under.
const READINESS: &str = "redis";

/// Why a call to Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
}

/// This replica's link to the shared state.
pub struct Cluster {
    config: ClusterConfig,
    servers: connect::Servers,
    /// Reconnects by itself after an error; cheap to clone per call.
    connection: connect::Link,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// Whether the last call succeeded, so changes are logged once.
    up: AtomicBool,
    /// Whether any call has finished yet: the first failure replaces "not reached yet" with
    /// its reason (a refused certificate, say), even though the state stays down.
    reached: AtomicBool,
}

// === impl Cluster ===

impl Cluster {
    /// Sets up the client; connects on first use, so a start does not wait for Redis.
    pub fn new(
        config: ClusterConfig,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let servers = connect::servers(&config)?;
        let connection = servers.lazy(config.timeout)?;
        let cluster = Cluster {
            config,
            servers,
            connection,
            metrics,
            readiness,
            up: AtomicBool::new(false),
            reached: AtomicBool::new(false),
        };
        // Unknown until the first call answers: shown as down, so it is never wrongly "up".
        cluster.show(false, "not reached yet");
        Ok(Arc::new(cluster))
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The client revocation announcements are subscribed through.
    pub async fn subscriber(&self) -> redis::RedisResult<redis::Client> {
        self.servers.subscriber().await
    }

    /// The full name of one of nsqgate's keys or channels.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.key_prefix)
    }

    /// Whether the last call to Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs one exchange with Redis, bounded by `cluster.timeout_ms`; `operation` names it in
    /// the error count. Success or failure updates the replica's Redis state.
    pub async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        exchange: F,
    ) -> Result<T, ClusterError>
    where
        F: FnOnce(connect::Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.config.timeout;
        let outcome = match tokio::time::timeout(timeout, exchange(self.connection.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ClusterError::Redis(e)),
            Err(_) => Err(ClusterError::Timeout(timeout)),
        };
        match &outcome {
            Ok(_) => self.mark(true, ""),
            Err(e) => {
                self.metrics.redis_error(operation);
                self.mark(false, &e.to_string());
            }
        }
        outcome
    }

    /// Records whether Redis answers, logging and showing in `/readyz` only the changes.
    pub fn mark(&self, up: bool, reason: &str) {
        let first = !self.reached.swap(true, Ordering::Relaxed);
        if self.up.swap(up, Ordering::Relaxed) == up && !first {
            return;
        }
        self.show(up, reason);
    }

    /// Logs the state and shows it in the metrics and `/readyz`.
    fn show(&self, up: bool, reason: &str) {
        self.metrics.redis_up(up);
        if up {
            self.readiness.clear(READINESS);
            tracing::info!(url = %self.redacted_url(), "Redis reachable: shared limits in force");
            return;
        }
        let mode = self.config.on_unavailable;
        let why = match mode {
            OnUnavailable::Local => format!(
                "unavailable ({reason}): enforcing 1/{} of each shared quota locally",
                self.config.expected_replicas
            ),
            OnUnavailable::Closed => {
                format!("unavailable ({reason}): publishes that need a shared budget are refused")
            }
        };
        tracing::warn!(url = %self.redacted_url(), "Redis {why}");
        match mode {
            OnUnavailable::Local => self.readiness.set_degraded(READINESS, why),
            OnUnavailable::Closed => self.readiness.set_failed(READINESS, why),
        }
    }

    /// The URL without a password, for logs.
    fn redacted_url(&self) -> String {
        redact(&self.config.redis_url)
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
