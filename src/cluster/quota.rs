//! Shared publish quotas: one token bucket per key in Redis, updated by an atomic Lua script
//! on Redis's own clock, from which each replica leases tokens in batches ([`super::lease`]).
//! A replica never overdraws the bucket, so over any interval the replicas together publish
//! at most the quota plus what each held in its lease at the start (one lease per replica).
//! While Redis is unavailable no call is made at all ([`Cluster::is_up`]: the revocation feed
//! re-reads twice a second and notices its return), so a publish never waits on a dead Redis
//! for longer than one `cluster.timeout_ms`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lease::Lease;
use super::Cluster;
use crate::policy::Rate;

/// Refills the bucket at `KEYS[1]` by `ARGV[1]` tokens/s up to the burst `ARGV[2]`, then
/// grants up to `ARGV[3]` tokens if at least `ARGV[4]` are there. Returns {granted, wait ms}:
/// {-1, 0} when `ARGV[4]` exceeds the burst (it can never be granted).
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
if need > burst then return {-1, 0} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
tokens = math.min(tokens, burst)
local granted = 0
local wait = 0
if tokens >= need then
  granted = math.max(need, math.min(want, math.floor(tokens)))
  tokens = tokens - granted
else
  wait = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, wait}
";

/// What a shared quota says to one take.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Granted,
    /// Short now: enough tokens in about this long.
    Wait(Duration),
    /// More at once than the burst allows: never.
    OverBurst,
    /// Redis did not answer: the caller applies `cluster.on_unavailable`.
    Unavailable,
}

/// One shared bucket as this replica holds it: its key in Redis, named once when the local
/// bucket is made, and the lease spent here. Spending takes a std mutex for a few
/// instructions and never waits; only a refill, which asks Redis, queues on the async one.
pub struct LeaseSlot {
    key: Box<str>,
    held: Mutex<Lease>,
    /// One lease request per key at a time: the others wait and spend what it brings.
    refill: tokio::sync::Mutex<()>,
}

/// The shared quotas of one replica; each key's lease lives in its [`LeaseSlot`].
pub struct SharedQuotas {
    cluster: Arc<Cluster>,
    script: redis::Script,
}

// === impl LeaseSlot ===

impl LeaseSlot {
    fn held(&self) -> std::sync::MutexGuard<'_, Lease> {
        // A lease is a few counters, each whole after any panic elsewhere.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nothing held, nothing spent lately and no refill under way: safe to forget.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.refill.try_lock().is_ok() && self.held().is_idle(now)
    }
}

// === impl SharedQuotas ===

impl SharedQuotas {
    pub fn new(cluster: Arc<Cluster>) -> SharedQuotas {
        SharedQuotas {
            cluster,
            script: redis::Script::new(TAKE),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A lease, empty, on the shared bucket `name` (a key below `cluster.key_prefix`).
    pub fn slot(&self, name: &str) -> LeaseSlot {
        LeaseSlot {
            key: self.cluster.key(name).into_boxed_str(),
            held: Mutex::new(Lease::new(Instant::now())),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes `amount` from the shared bucket of `slot`: from this replica's lease when it
    /// holds enough (no I/O, no await), otherwise with a new lease.
    pub async fn take(&self, slot: &LeaseSlot, rate: Rate, amount: u64, now: Instant) -> Take {
        if slot.held().spend(amount, now) {
            return Take::Granted;
        }
        let _refilling = slot.refill.lock().await;
        // Another take may have brought a lease while this one queued.
        if slot.held().spend(amount, Instant::now()) {
            return Take::Granted;
        }
        if !self.cluster.is_up() {
            return Take::Unavailable;
        }
        let replicas = self.cluster.config().expected_replicas;
        let wanted = slot.held().wanted(amount, rate, replicas);
        let key = &*slot.key;
        let script = &self.script;
        let answer = self
            .cluster
            .call("lease", |mut connection| async move {
                script
                    .key(key)
                    .arg(rate.per_sec)
                    .arg(rate.burst)
                    .arg(wanted)
                    .arg(amount)
                    .invoke_async::<(i64, u64)>(&mut connection)
                    .await
            })
            .await;
        let metrics = self.cluster.metrics();
        match answer {
            Ok((granted, _)) if granted < 0 => Take::OverBurst,
            Ok((granted, _)) if granted.unsigned_abs() >= amount && granted > 0 => {
                metrics.lease("tokens", "granted");
                let granted = granted.unsigned_abs();
                slot.held().granted(granted, amount, Instant::now());
                Take::Granted
            }
            Ok((_, wait_ms)) => {
                metrics.lease("tokens", "short");
                Take::Wait(Duration::from_millis(wait_ms.max(1)))
            }
            Err(_) => {
                metrics.lease("tokens", "failed");
                Take::Unavailable
            }
        }
    }
}
