//! Connection caps across replicas: per identity (and per source address), one count in
//! Redis over every replica. Each replica's share is a lease: a hash of open connections by
//! replica beside a sorted set of when each replica's lease ends. A replica renews its leases
//! every third of `cluster.connection_lease_ms` with its own counts; one that dies (SIGKILL)
//! stops renewing, and the next claim after its lease ended drops its count, so its slots come
//! back within the lease time. All Redis work for one key is serialized on a replica, so the
//! count it writes is never older than one it wrote before.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::Cluster;

/// Drops lapsed replicas, then takes one slot for `ARGV[1]` if the open total is under
/// `ARGV[2]`: 1 taken, 0 full. `KEYS[1]`: counts by replica; `KEYS[2]`: lease ends.
const CLAIM: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lease = tonumber(ARGV[3])
for _, replica in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[1], replica)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local open = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do open = open + tonumber(count) end
if open >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return 1
";

/// Sets replica `ARGV[1]`'s count to `ARGV[2]` (removing it at 0) and renews its lease.
const RENEW: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lease = tonumber(ARGV[3])
if tonumber(ARGV[2]) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
return 1
";

/// What a client refused for [`Full::Unavailable`] is told (and the log says): not that it
/// has too many connections, which it may not have.
pub const UNAVAILABLE: &str =
    "shared state unavailable (Redis): the connection caps over every replica cannot be checked";

/// Why a shared slot was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// Every slot over the replicas is taken.
    #[error("every slot over the replicas is taken")]
    Cap,
    /// Redis did not answer and `on_unavailable = "closed"`.
    #[error("{UNAVAILABLE}")]
    Unavailable,
}

/// This replica's slots in the shared caps: its open count per key.
pub struct SharedSlots {
    cluster: Arc<Cluster>,
    /// Names this replica in Redis; new at each start, so a restarted replica never inherits
    /// the count of the one before it.
    replica: String,
    claim: redis::Script,
    renew: redis::Script,
    counts: DashMap<String, Arc<tokio::sync::Mutex<u64>>>,
}

/// One connection's slot; dropping it gives the slot back (in a task: Redis is async).
pub struct Slot {
    slots: Arc<SharedSlots>,
    key: String,
}

// === impl SharedSlots ===

impl SharedSlots {
    pub fn new(cluster: Arc<Cluster>) -> Arc<SharedSlots> {
        Arc::new(SharedSlots {
            cluster,
            replica: format!("{:016x}", rand::random::<u64>()),
            claim: redis::Script::new(CLAIM),
            renew: redis::Script::new(RENEW),
            counts: DashMap::new(),
        })
    }

    /// Takes one of `cap` slots of `key` (e.g. `conns:identity:alice`) over every replica.
    /// While Redis is unavailable: `local` mode takes it (the local caps still hold), `closed`
    /// refuses it.
    pub async fn claim(self: &Arc<Self>, key: &str, cap: usize) -> Result<Option<Slot>, Full> {
        let count = self.count(key);
        let mut count = count.lock().await;
        let claimed = if self.cluster.is_up() {
            let (full_key, leases) = self.keys(key);
            let lease_ms = self.lease().as_millis() as u64;
            let (script, replica) = (&self.claim, &self.replica);
            self.cluster
                .call("connection", |mut connection| async move {
                    script
                        .key(&full_key)
                        .key(&leases)
                        .arg(replica)
                        .arg(cap)
                        .arg(lease_ms)
                        .invoke_async::<i64>(&mut connection)
                        .await
                })
                .await
                .ok()
        } else {
            None
        };
        let metrics = self.cluster.metrics();
        match claimed {
            Some(1) => {
                metrics.lease("connection", "granted");
                *count += 1;
                Ok(Some(Slot {
                    slots: self.clone(),
                    key: key.to_owned(),
                }))
            }
            Some(_) => {
                metrics.lease("connection", "short");
                Err(Full::Cap)
            }
            None => self.unavailable(),
        }
    }

    fn unavailable(&self) -> Result<Option<Slot>, Full> {
        let metrics = self.cluster.metrics();
        metrics.lease("connection", "failed");
        match self.cluster.config().on_unavailable {
            crate::config::cluster::OnUnavailable::Local => {
                metrics.cluster_unavailable("local");
                Ok(None)
            }
            crate::config::cluster::OnUnavailable::Closed => {
                metrics.cluster_unavailable("closed");
                Err(Full::Unavailable)
            }
        }
    }

    /// Renews every lease this replica holds, forever (every third of the lease time).
    pub async fn renew_forever(self: Arc<Self>) {
        let every = self.lease() / 3;
        loop {
            tokio::time::sleep(every).await;
            let keys: Vec<String> = self.counts.iter().map(|e| e.key().clone()).collect();
            for key in keys {
                self.write(&key).await;
            }
            // Keys with no connection here that no claim is using (it holds a clone).
            self.counts.retain(|_, count| {
                Arc::strong_count(count) > 1 || count.try_lock().map_or(true, |n| *n > 0)
            });
        }
    }

    fn lease(&self) -> Duration {
        self.cluster.config().connection_lease
    }

    fn count(&self, key: &str) -> Arc<tokio::sync::Mutex<u64>> {
        self.counts
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(0)))
            .clone()
    }

    /// Writes this replica's count of `key` and renews its lease (removes it at 0).
    /// The count's and the leases' names. Both scripts touch both, so in a Redis Cluster they
    /// must live in one hash slot: the braces make the whole count name the hash tag (a name
    /// holding a `}` of its own still gives both the same tag, as they share that prefix).
    fn keys(&self, key: &str) -> (String, String) {
        let count = format!("{{{}}}", self.cluster.key(key));
        let leases = format!("{count}:leases");
        (count, leases)
    }

    async fn write(&self, key: &str) {
        let count = self.count(key);
        let count = count.lock().await;
        if !self.cluster.is_up() {
            return;
        }
        let (full_key, leases) = self.keys(key);
        let lease_ms = self.lease().as_millis() as u64;
        let (script, replica, open) = (&self.renew, &self.replica, *count);
        let _ = self
            .cluster
            .call("connection", |mut connection| async move {
                script
                    .key(&full_key)
                    .key(&leases)
                    .arg(replica)
                    .arg(open)
                    .arg(lease_ms)
                    .invoke_async::<i64>(&mut connection)
                    .await
            })
            .await;
    }

    async fn release(&self, key: String) {
        {
            let count = self.count(&key);
            let mut count = count.lock().await;
            *count = count.saturating_sub(1);
        }
        self.write(&key).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = self.slots.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { slots.release(key).await });
        }
    }
}
