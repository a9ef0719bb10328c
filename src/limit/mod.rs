//! Flood defences for publishing: token buckets per identity, per identity and topic, and per
//! topic across all identities, each in messages/s and bytes/s. At the limit a publisher is
//! either delayed (nsqgate stops reading from it: real backpressure) up to a bound, or
//! refused. One bucket per key, whatever credential the identity used: a changed quota
//! (another credential's roles, a policy reload) adjusts rate and burst in place and never
//! refills it. Idle full buckets are evicted so the keyed state cannot grow without bound.
//! Beside them: connection caps ([`conn`]), name quotas ([`names`]) and the memory budget of
//! connections with no identity yet ([`memory`]). With `[cluster]`, every bucket is one
//! bucket shared by all replicas, leased through `crate::cluster::quota` (the only I/O on
//! this path, and none while a lease lasts); the local buckets then serve only while Redis
//! is unavailable, at quota / `expected_replicas` (`on_unavailable = "local"`).

mod bucket;
pub mod conn;
mod draw;
mod held;
pub mod memory;
pub mod names;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::cluster::quota::{LeaseSlot, SharedQuotas};
use crate::policy::{Rate, RateQuota, RoleRates};
use bucket::{Short, TokenBucket};
pub use draw::Drawn;
pub use held::SessionBuckets;
use held::{HeldBucket, Leased, Scope};

/// What happens to a publish over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Hold the publish (and stop reading from the client) until tokens are there, up to
    /// `max_delay`; refuse it after that.
    Delay,
    /// Refuse it at once.
    Reject,
}

#[derive(Clone, Debug)]
pub struct RateSettings {
    pub on_limit: OnLimit,
    pub max_delay: Duration,
    pub idle_evict: Duration,
    /// Defaults where the caller's roles set no quota; `None` = unlimited.
    pub identity: Option<RateQuota>,
    pub identity_topic: Option<RateQuota>,
    /// Per topic over every publisher.
    pub topic: Option<RateQuota>,
}

/// Why a publish was refused, for the client's error text and the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Limited {
    /// Over the quota: the caller's doing (NSQ `E_PUB_FAILED`, HTTP 429).
    #[error("rate limit exceeded ({scope}: {detail})")]
    Exceeded { scope: &'static str, detail: String },
    /// The replicas' shared quota could not be checked and `on_unavailable = "closed"`: not
    /// the caller's doing, and it may well be under its quota (HTTP 503).
    #[error(
        "shared state unavailable (Redis): the {scope} quota over every replica cannot be checked"
    )]
    Unchecked { scope: &'static str },
}

impl Limited {
    /// The quota's scope: `identity`, `identity_topic` or `topic`.
    pub fn scope(&self) -> &'static str {
        match self {
            Limited::Exceeded { scope, .. } | Limited::Unchecked { scope } => scope,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Identity(String),
    IdentityTopic(String, String),
    Topic(String),
}

impl Key {
    fn of(scope: Scope, identity: &str, topic: &str) -> Key {
        match scope {
            Scope::Identity => Key::Identity(identity.to_owned()),
            Scope::IdentityTopic => Key::IdentityTopic(identity.to_owned(), topic.to_owned()),
            Scope::Topic => Key::Topic(topic.to_owned()),
        }
    }
}

/// One key's buckets: messages and bytes. A unit's bucket, once made, stays until the whole
/// key is evicted, even while a quota leaves that unit unlimited, so switching quotas back
/// and forth never hands out a fresh (full) bucket.
struct Bucket {
    units: Mutex<Units>,
    /// Seconds since `RateLimits::epoch` of the last use, for eviction.
    last_used: AtomicU64,
    /// With `[cluster]`: the key's shared buckets (messages, bytes), named in Redis once.
    shared: Option<[LeaseSlot; 2]>,
}

#[derive(Default)]
struct Units {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

#[derive(Clone, Copy)]
enum Unit {
    Messages,
    Bytes,
}

impl Unit {
    /// Its place in a pair of per-unit values (messages, bytes).
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Messages => "messages",
            Unit::Bytes => "bytes",
        }
    }
}

/// What one publish asks of the rate limits.
#[derive(Clone, Copy)]
pub struct Publish<'a> {
    pub topic: &'a str,
    /// What the publisher's roles grant (over the `[rate_limits]` defaults).
    pub rates: RoleRates,
    /// Messages (an MPUB's each) and body bytes.
    pub messages: u32,
    pub bytes: u64,
}

/// The shared publish limiter of one nsqgate process.
pub struct RateLimits {
    /// `[rate_limits]`, replaced on reload; buckets keep their tokens.
    settings: crate::swap::Swap<RateSettings>,
    /// Bumped by each reload of `settings`, so that a session re-reads them only then.
    generation: AtomicU64,
    buckets: DashMap<Key, Arc<Bucket>>,
    epoch: Instant,
    /// The replicas' shared buckets, with `[cluster]`.
    shared: Option<SharedQuotas>,
}

// === impl RateLimits ===

impl RateLimits {
    pub fn new(settings: RateSettings) -> RateLimits {
        RateLimits {
            settings: crate::swap::Swap::new(std::sync::Arc::new(settings)),
            generation: AtomicU64::new(0),
            buckets: DashMap::new(),
            epoch: Instant::now(),
            shared: None,
        }
    }

    /// Draws every quota from buckets shared through Redis with the other replicas.
    pub fn shared(mut self, quotas: SharedQuotas) -> RateLimits {
        self.shared = Some(quotas);
        self
    }

    pub fn on_limit(&self) -> OnLimit {
        self.settings.load().on_limit
    }

    /// Puts reloaded `[rate_limits]` in force for the next publish.
    pub fn set_settings(&self, settings: RateSettings) {
        self.settings.store(std::sync::Arc::new(settings));
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The settings in force and their generation (read first: a reload in between only
    /// makes the next look read them again).
    fn settings_now(&self) -> (u64, Arc<RateSettings>) {
        (self.generation(), self.settings.load())
    }

    /// Takes `messages` and `bytes` from every bucket that applies, waiting (in delay mode)
    /// or failing (in reject mode, or past `max_delay`) when one is short. A role's quota
    /// applies over the `[rate_limits]` default field by field. One publish with buckets of
    /// its own, for the tests: a session holds its buckets ([`RateLimits::admit_held`]), an
    /// HTTP connection keeps them between requests ([`RateLimits::admit_kept`]).
    #[cfg(test)]
    pub async fn admit(
        &self,
        identity: &str,
        topic: &str,
        rates: RoleRates,
        messages: u32,
        bytes: u64,
    ) -> Result<(), Limited> {
        let mut held = SessionBuckets::one_publish(self, identity);
        let publish = Publish {
            topic,
            rates,
            messages,
            bytes,
        };
        self.admit_held(&mut held, publish, Instant::now()).await
    }

    /// Takes a publish from every bucket that applies, as a session does, through the
    /// buckets `kept` holds from the caller's earlier publishes (a kept-alive HTTP
    /// connection's), looked up afresh only for another identity.
    /// Cancelled while it waits, it leaves `kept` empty: the next publish looks them up again.
    pub async fn admit_kept(
        &self,
        kept: &std::sync::Mutex<Option<SessionBuckets>>,
        identity: &str,
        publish: Publish<'_>,
    ) -> Result<(), Limited> {
        let taken = kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut held = match taken {
            Some(held) if held.identity() == identity => held,
            _ => SessionBuckets::one_publish(self, identity),
        };
        let admitted = self.admit_held(&mut held, publish, Instant::now()).await;
        *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
        admitted
    }

    /// The key's one bucket, made on first use; the quota in force is applied per take.
    fn bucket(&self, key: Key) -> Arc<Bucket> {
        let now = self.epoch.elapsed().as_secs();
        let bucket = match self.buckets.entry(key) {
            Entry::Occupied(found) => found.get().clone(),
            Entry::Vacant(vacant) => {
                // Named in Redis here, once per key, not per publish.
                let shared = self.shared.as_ref().map(|shared| {
                    [Unit::Messages, Unit::Bytes]
                        .map(|unit| shared.slot(&shared_name(vacant.key(), unit)))
                });
                let bucket = Arc::new(Bucket {
                    units: Mutex::new(Units::default()),
                    last_used: AtomicU64::new(now),
                    shared,
                });
                vacant.insert(bucket).clone()
            }
        };
        bucket.last_used.store(now, Ordering::Relaxed);
        bucket
    }

    /// Drops buckets unused for `idle_evict` that have refilled: a full bucket is what a
    /// fresh one would be, so evicting it loses nothing but memory (a key still short of
    /// tokens is kept, or eviction would be a refill).
    pub fn evict_idle(&self) -> usize {
        let now = self.epoch.elapsed().as_secs();
        let at = Instant::now();
        let idle = self.settings.load().idle_evict.as_secs();
        let before = self.buckets.len();
        // A bucket a session holds stays: a newcomer must find the same one. Holders only
        // take their Arc from the map under the shard lock `retain` holds, so a count of
        // one cannot grow meanwhile.
        self.buckets.retain(|_, bucket| {
            Arc::strong_count(bucket) > 1
                || now.saturating_sub(bucket.last_used.load(Ordering::Relaxed)) < idle
                || !bucket.is_full(at)
                || !bucket.shared_idle(at)
        });
        before - self.buckets.len()
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Runs eviction forever, every half idle period.
    pub async fn evict_forever(self: Arc<Self>) {
        let every = (self.settings.load().idle_evict / 2).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            let evicted = self.evict_idle();
            if evicted > 0 {
                tracing::debug!(
                    evicted,
                    left = self.len(),
                    "idle rate-limit buckets evicted"
                );
            }
        }
    }
}

/// The shared bucket's name in Redis: scope, unit and the names in it, each name preceded by
/// its length so that no identity or topic can pass for another key.
fn shared_name(key: &Key, unit: Unit) -> String {
    let unit = unit.name();
    match key {
        Key::Identity(id) => format!("rate:{unit}:identity:{}:{id}", id.len()),
        Key::IdentityTopic(id, topic) => {
            format!("rate:{unit}:identity_topic:{}:{id}:{topic}", id.len())
        }
        Key::Topic(topic) => format!("rate:{unit}:topic:{topic}"),
    }
}

// === impl Units ===

impl Units {
    /// Puts back what `lease` did not spend; the lease is empty afterwards.
    fn give_back(&mut self, lease: &mut [Leased; 2], now: Instant) {
        for (unit, slot) in [
            (Unit::Messages, &mut self.messages),
            (Unit::Bytes, &mut self.bytes),
        ] {
            let leased = std::mem::take(&mut lease[unit.index()]);
            if let (Some(tokens), true) = (slot.as_mut(), leased.granted > 0) {
                tokens.settle(leased.granted, leased.tokens, now);
            }
        }
    }

    fn take(&mut self, unit: Unit, rate: Rate, amount: u64, now: Instant) -> Result<(), Short> {
        let slot = match unit {
            Unit::Messages => &mut self.messages,
            Unit::Bytes => &mut self.bytes,
        };
        let tokens = slot.get_or_insert_with(|| TokenBucket::full(rate, now));
        tokens.set_rate(rate, now);
        tokens.take(amount, now)
    }
}

// === impl Bucket ===

impl Bucket {
    /// Takes from the unit's bucket under the quota in force now: a bucket made full on first
    /// use, otherwise adjusted in place (never refilled) when the quota changed.
    fn take(&self, unit: Unit, rate: Rate, amount: u64, now: Instant) -> Result<(), Short> {
        // A panic elsewhere cannot leave the levels half-updated: each is one f64 and a time.
        let mut units = self.units.lock().unwrap_or_else(|e| e.into_inner());
        units.take(unit, rate, amount, now)
    }

    /// Takes every unit that has a rate and a non-zero amount, in order, under one lock;
    /// stops at the first that is short (leaving it untouched) and names it. With a `lease`,
    /// what it did not spend goes back first, so the draws are exact; once every draw was
    /// taken, each unit drawn leases ahead again ([`TokenBucket::lease`]).
    fn take_units(
        &self,
        draws: [(Unit, Option<Rate>, u64); 2],
        now: Instant,
        mut lease: Option<&mut [Leased; 2]>,
    ) -> Result<(), Unit> {
        let mut units = self.units.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lease) = lease.as_deref_mut() {
            units.give_back(lease, now);
        }
        for (unit, rate, amount) in draws {
            let Some(rate) = rate.filter(|_| amount > 0) else {
                continue;
            };
            units.take(unit, rate, amount, now).map_err(|_short| unit)?;
        }
        let Some(lease) = lease else {
            return Ok(());
        };
        for (unit, rate, amount) in draws {
            let Some(rate) = rate.filter(|_| amount > 0) else {
                continue;
            };
            let slot = match unit {
                Unit::Messages => &mut units.messages,
                Unit::Bytes => &mut units.bytes,
            };
            let tokens = slot.as_mut().map_or(0, TokenBucket::lease);
            lease[unit.index()] = Leased {
                tokens,
                granted: tokens,
                rate: Some(rate),
            };
        }
        Ok(())
    }

    /// Puts back what `lease` did not spend (a session ending, or drawing exactly).
    fn give_back(&self, lease: &mut [Leased; 2], now: Instant) {
        if lease.iter().all(|leased| leased.granted == 0) {
            return;
        }
        let mut units = self.units.lock().unwrap_or_else(|e| e.into_inner());
        units.give_back(lease, now);
    }

    fn is_full(&self, now: Instant) -> bool {
        let units = self.units.lock().unwrap_or_else(|e| e.into_inner());
        let messages = units.messages.as_ref().is_none_or(|t| t.is_full(now));
        messages && units.bytes.as_ref().is_none_or(|t| t.is_full(now))
    }

    /// No lease of a shared bucket holds tokens or is being refilled.
    fn shared_idle(&self, now: Instant) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|slots| slots.iter().all(|slot| slot.is_idle(now)))
    }
}

#[cfg(test)]
mod tests;
