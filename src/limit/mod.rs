//! Flood defences for publishing: token buckets (governor) per identity, per identity and topic,
//! and per topic across all identities, each in messages/s and bytes/s. At the limit a
//! publisher is either delayed (nsqgate stops reading from it: real backpressure) up to a
//! bound, or refused. Idle buckets are evicted so the keyed state cannot grow without bound.

pub mod conn;
pub mod names;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::policy::{RateQuota, RoleRates};

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
#[error("rate limit exceeded ({scope}: {detail})")]
pub struct Limited {
    pub scope: &'static str,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Identity(String),
    IdentityTopic(String, String),
    Topic(String),
}

/// One key's buckets: messages and bytes, each present only when the quota limits it.
struct Bucket {
    quota: RateQuota,
    messages: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    /// Seconds since `RateLimits::epoch` of the last use, for eviction.
    last_used: AtomicU64,
}

/// The shared publish limiter of one nsqgate process.
pub struct RateLimits {
    settings: RateSettings,
    buckets: DashMap<Key, Arc<Bucket>>,
    epoch: Instant,
    clock: DefaultClock,
}

// === impl RateLimits ===

impl RateLimits {
    pub fn new(settings: RateSettings) -> RateLimits {
        RateLimits {
            settings,
            buckets: DashMap::new(),
            epoch: Instant::now(),
            clock: DefaultClock::default(),
        }
    }

    pub fn on_limit(&self) -> OnLimit {
        self.settings.on_limit
    }

    /// Takes `messages` and `bytes` from every bucket that applies, waiting (in delay mode)
    /// or failing (in reject mode, or past `max_delay`) when one is short.
    pub async fn admit(
        &self,
        identity: &str,
        topic: &str,
        rates: RoleRates,
        messages: u32,
        bytes: u64,
    ) -> Result<(), Limited> {
        let scopes = [
            ("identity", rates.identity.or(self.settings.identity)),
            (
                "identity and topic",
                rates.identity_topic.or(self.settings.identity_topic),
            ),
            ("topic", self.settings.topic),
        ];
        let deadline = tokio::time::Instant::now() + self.settings.max_delay;
        for (scope, quota) in scopes {
            let Some(quota) = quota else { continue };
            // Keys are built only for scopes with a quota: unlimited costs nothing.
            let key = match scope {
                "identity" => Key::Identity(identity.to_owned()),
                "topic" => Key::Topic(topic.to_owned()),
                _ => Key::IdentityTopic(identity.to_owned(), topic.to_owned()),
            };
            let bucket = self.bucket(key, quota);
            let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
            for (unit, limiter, amount) in [
                ("messages", &bucket.messages, messages),
                ("bytes", &bucket.bytes, bytes),
            ] {
                let (Some(limiter), Some(amount)) = (limiter, NonZeroU32::new(amount)) else {
                    continue;
                };
                self.take(limiter, amount, deadline)
                    .await
                    .map_err(|detail| Limited {
                        scope,
                        detail: format!("{unit}: {detail}"),
                    })?;
            }
        }
        Ok(())
    }

    async fn take(
        &self,
        limiter: &DefaultDirectRateLimiter,
        amount: NonZeroU32,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        loop {
            match limiter.check_n(amount) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    let wake = tokio::time::Instant::now() + wait;
                    if self.settings.on_limit == OnLimit::Reject || wake > deadline {
                        return Err(format!("{amount} more would exceed the quota"));
                    }
                    tokio::time::sleep_until(wake).await;
                }
                Err(_) => return Err(format!("{amount} at once is more than the burst allows")),
            }
        }
    }

    fn bucket(&self, key: Key, quota: RateQuota) -> Arc<Bucket> {
        let now = self.epoch.elapsed().as_secs();
        if let Some(bucket) = self.buckets.get(&key) {
            // A policy reload may change a role's quota; then the bucket starts over.
            if bucket.quota == quota {
                bucket.last_used.store(now, Ordering::Relaxed);
                return bucket.clone();
            }
        }
        let bucket = Arc::new(Bucket {
            quota,
            messages: limiter(quota.messages_per_sec, quota.burst_messages),
            bytes: limiter(quota.bytes_per_sec, quota.burst_bytes),
            last_used: AtomicU64::new(now),
        });
        self.buckets.insert(key, bucket.clone());
        bucket
    }

    /// Drops buckets unused for `idle_evict`; a full bucket is what a fresh one would be, so
    /// evicting an idle key loses nothing but memory.
    pub fn evict_idle(&self) -> usize {
        let now = self.epoch.elapsed().as_secs();
        let idle = self.settings.idle_evict.as_secs();
        let before = self.buckets.len();
        self.buckets.retain(|_, bucket| {
            now.saturating_sub(bucket.last_used.load(Ordering::Relaxed)) < idle
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
        let every = (self.settings.idle_evict / 2).max(Duration::from_secs(1));
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

fn limiter(per_sec: Option<u32>, burst: Option<u32>) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(per_sec?)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(on_limit: OnLimit) -> RateSettings {
        RateSettings {
            on_limit,
            max_delay: Duration::from_millis(300),
            idle_evict: Duration::from_secs(60),
            identity: Some(RateQuota {
                messages_per_sec: Some(10),
                burst_messages: Some(5),
                ..RateQuota::default()
            }),
            identity_topic: None,
            topic: None,
        }
    }

    #[tokio::test]
    async fn reject_mode_refuses_past_the_burst_and_keys_are_separate() {
        let limits = RateLimits::new(settings(OnLimit::Reject));
        for _ in 0..5 {
            limits
                .admit("a", "t", RoleRates::default(), 1, 10)
                .await
                .unwrap();
        }
        let err = limits
            .admit("a", "t", RoleRates::default(), 1, 10)
            .await
            .unwrap_err();
        assert_eq!(err.scope, "identity");
        // Another identity has its own bucket.
        limits
            .admit("b", "t", RoleRates::default(), 1, 10)
            .await
            .unwrap();
        // More than the burst in one MPUB can never pass.
        assert!(limits
            .admit("c", "t", RoleRates::default(), 6, 10)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn delay_mode_waits_for_tokens_within_the_bound() {
        let limits = RateLimits::new(settings(OnLimit::Delay));
        limits
            .admit("a", "t", RoleRates::default(), 5, 0)
            .await
            .unwrap();
        let started = Instant::now();
        // 10/s: one more token takes ~100 ms, inside the 300 ms bound.
        limits
            .admit("a", "t", RoleRates::default(), 1, 0)
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Five more would need ~500 ms: past the bound, refused.
        assert!(limits
            .admit("a", "t", RoleRates::default(), 5, 0)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn role_quota_overrides_the_default_and_idle_keys_are_evicted() {
        let mut s = settings(OnLimit::Reject);
        s.idle_evict = Duration::from_secs(0);
        let limits = RateLimits::new(s);
        let generous = RoleRates {
            identity: Some(RateQuota {
                messages_per_sec: Some(1000),
                ..RateQuota::default()
            }),
            identity_topic: None,
        };
        for _ in 0..50 {
            limits.admit("a", "t", generous, 1, 0).await.unwrap();
        }
        assert_eq!(limits.len(), 1);
        assert_eq!(limits.evict_idle(), 1);
        assert!(limits.is_empty());
    }
}
