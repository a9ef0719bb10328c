//! Idle upstream connections kept for reuse (HTTP/1.1 keep-alive), one pool per connection
//! worker thread: a pooled connection's driver task runs on the runtime that opened it, so a
//! request on worker A never wakes worker B. hyper-util's client does the pooling: a
//! connection goes back to its pool only once its response was read to the end and did not
//! say `Connection: close`; a request is sent again on another connection only when hyper
//! hands it back unwritten (the pooled connection was found closed), never once any of it was
//! written. A pool is bound to the upstream trust it was made under: after a reload put a
//! new CA set-up in force, the next request on that thread starts a new pool and the old
//! one's idle connections close.

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::connector::{Connector, Trust};
use crate::config::http::HttpConfig;
use crate::tls::ToNsqd;

/// How many idle connections to keep and for how long (`[http] upstream_max_idle`,
/// `upstream_idle_timeout_ms`).
#[derive(Clone, Copy, Debug)]
pub struct PoolBounds {
    /// Per upstream and per worker; 0 turns reuse off.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl PoolBounds {
    pub fn of(config: &HttpConfig) -> PoolBounds {
        PoolBounds {
            max_idle: config.upstream_max_idle,
            idle_timeout: config.upstream_idle_timeout,
        }
    }
}

pub type PooledClient = Client<Connector, Full<Bytes>>;

/// The pools of one upstream, by worker thread.
pub struct Pools {
    /// What each new connection is opened with; its trust is replaced per pool.
    connector: Connector,
    /// The live upstream TLS set-up (None for plain HTTP), read at every request.
    tls: Option<ToNsqd>,
    bounds: PoolBounds,
    by_thread: DashMap<ThreadId, ThreadPool>,
}

/// One thread's pool and the trust its connections were verified with.
struct ThreadPool {
    trust: Option<Arc<rustls::ClientConfig>>,
    client: PooledClient,
}

// === impl Pools ===

impl Pools {
    pub fn new(connector: Connector, tls: Option<ToNsqd>, bounds: PoolBounds) -> Pools {
        Pools {
            connector,
            tls,
            bounds,
            by_thread: DashMap::new(),
        }
    }

    /// The calling thread's pool, made anew when the upstream trust in force is not the one
    /// its connections were verified with (dropping the old pool closes its idle ones).
    pub fn client(&self) -> PooledClient {
        let trust = self.tls.as_ref().map(ToNsqd::config);
        let thread = std::thread::current().id();
        if let Some(pool) = self.by_thread.get(&thread) {
            if same_trust(&pool.trust, &trust) {
                return pool.client.clone();
            }
        }
        let client = self.build(trust.clone());
        self.by_thread.insert(
            thread,
            ThreadPool {
                trust,
                client: client.clone(),
            },
        );
        client
    }

    fn build(&self, trust: Option<Arc<rustls::ClientConfig>>) -> PooledClient {
        let mut connector = self.connector.clone();
        connector.trust = match (trust, &self.tls) {
            (Some(config), Some(tls)) => Some(Trust {
                config,
                name: tls.server_name(),
            }),
            _ => None,
        };
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.bounds.idle_timeout)
            .pool_max_idle_per_host(self.bounds.max_idle)
            .build(connector)
    }
}

fn same_trust(
    a: &Option<Arc<rustls::ClientConfig>>,
    b: &Option<Arc<rustls::ClientConfig>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
