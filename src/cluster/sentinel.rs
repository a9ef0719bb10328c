//! A Redis master found through Redis Sentinel (`cluster.redis_sentinels`), followed across
//! failovers. The redis crate's connection manager reconnects to the address it started with,
//! which after a failover is a replica (or nothing), so this link asks the sentinels again
//! whenever the connection fails in a way a failover explains: it dropped, it timed out, or
//! the server said `-READONLY` (a demoted master) or `-MASTERDOWN`; and every half second (in
//! the background, while calls are made) it asks a sentinel which server is master, and leaves
//! the old one as soon as the answer changes: after a failover the old master goes on taking
//! writes for some seconds, until the sentinels demote it, and those writes are lost then.
//! Until the new master is found every call fails, and `cluster.on_unavailable` applies as for
//! any Redis outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

/// How often the sentinels are asked whether the master moved.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The master named `cluster.sentinel_master`, as the sentinels last said, and a connection
/// to it.
pub struct Master {
    /// Asked one resolution at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The master's name in the sentinels' configuration.
    name: String,
    /// The connection to the master last found; None until first use and after a failure
    /// that may be a failover.
    current: Mutex<Option<Current>>,
    generations: AtomicU64,
    /// A connection to one sentinel, for the checks; when the last check started, and whether
    /// one is running.
    sentinel: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    checked: Mutex<Instant>,
    checking: AtomicBool,
    connection: AsyncConnectionConfig,
    /// A resolution that takes longer (a sentinel that never answers) is given up.
    resolve_limit: Duration,
}

#[derive(Clone)]
struct Current {
    /// Tells this connection from a later one.
    generation: u64,
    connection: MultiplexedConnection,
    /// Where it goes, as the sentinels name a master.
    address: (String, u16),
}

/// A [`Master`] as the rest of the cluster code talks to it; cheap to clone per call.
#[derive(Clone)]
pub struct MasterLink(Arc<Master>);

/// Cleared on completion: a call dropped before its answer (the caller's timeout) leaves the
/// connection suspect, so the next call finds the master again.
struct InFlight {
    master: Arc<Master>,
    generation: u64,
    done: bool,
}

// === impl Master ===

impl Master {
    /// The sentinels at `sentinels` (Redis URLs) for the master `name`; nothing is contacted
    /// until first use. `timeout` bounds connecting to the master and each answer from it.
    pub fn new(sentinels: &[String], name: &str, timeout: Duration) -> RedisResult<Arc<Master>> {
        let client = SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            name,
            None,
            SentinelServerType::Master,
        )?;
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Arc::new(Master {
            sentinels: tokio::sync::Mutex::new(client),
            name: name.to_owned(),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            sentinel: tokio::sync::Mutex::new(None),
            checked: Mutex::new(Instant::now()),
            checking: AtomicBool::new(false),
            connection,
            resolve_limit: (timeout * 10).max(Duration::from_secs(1)),
        }))
    }

    /// A client for the master the sentinels name now (checked to say it is a master).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        let resolve = async { self.sentinels.lock().await.async_get_client().await };
        match tokio::time::timeout(self.resolve_limit, resolve).await {
            Ok(found) => found,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "the sentinels did not name a master in time",
            ))),
        }
    }

    pub fn link(self: &Arc<Self>) -> MasterLink {
        MasterLink(self.clone())
    }

    /// The connection in use, or a new one to the master the sentinels name now.
    async fn connection(self: &Arc<Self>) -> RedisResult<Current> {
        if let Some(current) = self.current() {
            self.check_soon();
            return Ok(current);
        }
        // In a task of its own: a caller that gives up (`cluster.timeout_ms`) does not abandon
        // a resolution half done, and the next call finds its connection.
        let master = self.clone();
        match tokio::spawn(async move { master.resolve().await }).await {
            Ok(resolved) => resolved,
            Err(e) => Err(RedisError::from((
                ErrorKind::Client,
                "finding the master failed",
                e.to_string(),
            ))),
        }
    }

    async fn resolve(&self) -> RedisResult<Current> {
        let client = self.client().await?;
        // Another call may have connected meanwhile: one connection is enough.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let connection = client
            .get_multiplexed_async_connection_with_config(&self.connection)
            .await?;
        let address = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            // Sentinels name masters by host and port only.
            _ => (String::new(), 0),
        };
        tracing::info!(master = %format!("{}:{}", address.0, address.1), "Redis master found through Sentinel");
        let current = Current {
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            connection,
            address,
        };
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(current.clone());
        }
        Ok(current)
    }

    fn current(&self) -> Option<Current> {
        self.current.lock().ok()?.clone()
    }

    /// Drops connection `generation` (not a newer one another call made meanwhile).
    fn forget(&self, generation: u64) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|c| c.generation == generation) {
                *current = None;
            }
        }
    }

    /// Starts a check in the background when the last one is [`CHECK_EVERY`] old.
    fn check_soon(self: &Arc<Self>) {
        let due = self.checked.lock().is_ok_and(|mut at| {
            let due = at.elapsed() >= CHECK_EVERY;
            if due {
                *at = Instant::now();
            }
            due
        });
        if !due || self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let master = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(master.resolve_limit, master.check()).await;
            master.checking.store(false, Ordering::Release);
        });
    }

    /// Leaves the connection in use when the sentinels name another master now.
    async fn check(&self) {
        let Some(current) = self.current() else {
            return;
        };
        match self.named_master().await {
            Ok(Some(named)) if named != current.address => {
                tracing::warn!(
                    old = %format!("{}:{}", current.address.0, current.address.1),
                    new = %format!("{}:{}", named.0, named.1),
                    "the sentinels name another Redis master: reconnecting"
                );
                self.forget(current.generation);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "asking a sentinel for the master failed");
                *self.sentinel.lock().await = None;
            }
        }
    }

    /// The master's address as a sentinel names it now (None: it names none).
    async fn named_master(&self) -> RedisResult<Option<(String, u16)>> {
        let mut link = self.sentinel.lock().await;
        let connection = match link.as_mut() {
            Some(connection) => connection,
            None => {
                let client = self
                    .sentinels
                    .lock()
                    .await
                    .async_get_sentinel_client()
                    .await?;
                let connection = client
                    .get_multiplexed_async_connection_with_config(&self.connection)
                    .await?;
                link.insert(connection)
            }
        };
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.name)
            .query_async(connection)
            .await
    }
}

/// Whether `error` may mean the master moved: the connection failed, or the server is no
/// longer (or not yet) a master that accepts writes.
fn may_be_failover(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Io
            | ErrorKind::Server(ServerErrorKind::ReadOnly)
            | ErrorKind::Server(ServerErrorKind::MasterDown)
    ) || error.is_connection_dropped()
        || error.is_unrecoverable_error()
}

// === impl MasterLink ===

impl MasterLink {
    /// The connection to send on, and the record of the exchange about to start.
    async fn begin(&self) -> RedisResult<(MultiplexedConnection, InFlight)> {
        let current = self.0.connection().await?;
        let in_flight = InFlight {
            master: self.0.clone(),
            generation: current.generation,
            done: false,
        };
        Ok((current.connection, in_flight))
    }
}

impl ConnectionLike for MasterLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut connection, mut in_flight) = self.begin().await?;
            let answer = connection.req_packed_command(cmd).await;
            in_flight.settle(&answer);
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut connection, mut in_flight) = self.begin().await?;
            let answer = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            in_flight.settle(&answer);
            answer
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

// === impl InFlight ===

impl InFlight {
    /// An answer, or an error a failover does not explain, keeps the connection.
    fn settle<T>(&mut self, answer: &RedisResult<T>) {
        self.done = !matches!(answer, Err(e) if may_be_failover(e));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.master.forget(self.generation);
        }
    }
}
