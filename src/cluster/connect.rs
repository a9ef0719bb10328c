//! Connection set-up: the Redis (one server, a Redis Cluster's nodes, or the master Redis
//! Sentinel names) a `[cluster]` section names, with its TLS files read and checked. Used at
//! start, by `check-config` and by `nsqgate revoke --config`, so the three fail on the same
//! bad file with the same words. Certificate checking is never off: a Redis whose certificate
//! does not chain to `tls_ca` (or the system's roots) is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::sentinel::{Master, MasterLink};
use crate::config::cluster::{ClusterConfig, RedisTls};

/// Why the client for Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster.{key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster.{key}: {} holds no {what}", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("cluster.{key}: {}: {reason}", path.display())]
    Unusable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cluster.redis_url: {0}")]
    Url(redis::RedisError),
    #[error("cluster.redis_cluster_nodes: {0}")]
    Nodes(redis::RedisError),
    #[error("cluster.redis_sentinels: {0}")]
    Sentinels(redis::RedisError),
}

/// Where the shared state lives: one Redis, a Redis Cluster (whose client follows the slots
/// to the node that owns each key), or the master a set of Redis Sentinels names.
#[derive(Clone)]
pub enum Servers {
    Single(redis::Client),
    Cluster {
        nodes: Box<ClusterClient>,
        /// The first seed node, for the revocation subscription: a cluster's nodes pass
        /// every PUBLISH on to each other, so one node hears them all.
        subscriber: redis::Client,
    },
    Sentinel(Arc<Master>),
}

/// A connection to [`Servers`], reconnecting by itself; cheap to clone per call.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    /// One connection with no reconnecting, for a command run once.
    Once(MultiplexedConnection),
    Cluster(ClusterConnection),
    Sentinel(MasterLink),
}

/// The clients for `config`'s Redis: plain, or TLS with the configured CA and certificate.
pub fn servers(config: &ClusterConfig) -> Result<Servers, ConnectError> {
    if let Some(sentinel) = &config.sentinel {
        let master = Master::new(&sentinel.nodes, &sentinel.master, config.timeout)
            .map_err(ConnectError::Sentinels)?;
        return Ok(Servers::Sentinel(master));
    }
    let certificates = match &config.tls {
        Some(tls) => Some(certificates(tls)?),
        None => None,
    };
    let url = config.redis_url.as_str();
    let subscriber = match &certificates {
        Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
        None => redis::Client::open(url),
    }
    .map_err(ConnectError::Url)?;
    if config.cluster_nodes.is_empty() {
        return Ok(Servers::Single(subscriber));
    }
    let mut nodes = ClusterClient::builder(config.cluster_nodes.iter().map(String::as_str))
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .retries(1);
    if let Some(certificates) = certificates {
        nodes = nodes.certs(certificates);
    }
    let nodes = nodes.build().map_err(ConnectError::Nodes)?;
    Ok(Servers::Cluster {
        nodes: Box::new(nodes),
        subscriber,
    })
}

// === impl Servers ===

impl Servers {
    /// The client revocation announcements are subscribed through (with Sentinel, the
    /// master's now).
    pub async fn subscriber(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Servers::Single(client)
            | Servers::Cluster {
                subscriber: client, ..
            } => Ok(client.clone()),
            Servers::Sentinel(master) => master.client().await,
        }
    }

    /// A link that connects on first use, so a start does not wait for Redis; each
    /// connection attempt and answer is bounded by `timeout`.
    pub fn lazy(&self, timeout: Duration) -> redis::RedisResult<Link> {
        match self {
            Servers::Single(client) => {
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let connection = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
                Ok(Link::Single(connection))
            }
            Servers::Cluster { nodes, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Link::Cluster(
                    nodes.get_pending_async_connection_with_config(config),
                ))
            }
            Servers::Sentinel(master) => Ok(Link::Sentinel(master.link())),
        }
    }

    /// A link connected now (for `nsqgate revoke`).
    pub async fn connect(&self) -> redis::RedisResult<Link> {
        match self {
            Servers::Single(client) => {
                Ok(Link::Once(client.get_multiplexed_async_connection().await?))
            }
            Servers::Cluster { nodes, .. } => {
                Ok(Link::Cluster(nodes.get_async_connection().await?))
            }
            Servers::Sentinel(master) => {
                let client = master.client().await?;
                Ok(Link::Once(client.get_multiplexed_async_connection().await?))
            }
        }
    }
}

// === impl Link ===

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Once(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
            Link::Sentinel(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Once(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(connection) => connection.get_db(),
            Link::Once(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
            Link::Sentinel(connection) => connection.get_db(),
        }
    }
}

/// Reads and checks the PEM files, so a wrong one is named here rather than at a handshake.
fn certificates(tls: &RedisTls) -> Result<redis::TlsCertificates, ConnectError> {
    let root_cert = match &tls.ca {
        Some(path) => {
            let pem = read("tls_ca", path)?;
            check_certificates("tls_ca", path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match &tls.client {
        Some((cert_path, key_path)) => {
            let client_cert = read("tls_cert", cert_path)?;
            check_certificates("tls_cert", cert_path, &client_cert)?;
            let client_key = read("tls_key", key_path)?;
            check_key(key_path, &client_key)?;
            Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        None => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn check_certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<(), ConnectError> {
    let unusable = |reason: String| ConnectError::Unusable {
        key,
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| unusable(format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(ConnectError::Empty {
            key,
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(())
}

/// The key must be one the TLS provider nsqgate uses (ring) can sign with.
fn check_key(path: &Path, pem: &[u8]) -> Result<(), ConnectError> {
    let unusable = |reason: String| ConnectError::Unusable {
        key: "tls_key",
        path: path.to_owned(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| unusable(format!("no PEM private key: {e}")))?;
    rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| unusable(format!("not a usable private key: {e}")))?;
    Ok(())
}
