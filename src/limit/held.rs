//! One session's rate-limit buckets, looked up once and then held: the identity's bucket for
//! the whole session, the identity+topic and topic buckets per topic published to (the most
//! recent [`TOPICS`]), and the `[rate_limits]` in force, re-read only when a reload bumped its
//! generation. A publish then costs no key, no hash and no map search, only a comparison of
//! its topic with the last one. A held bucket is never evicted from [`RateLimits`] (its
//! count of holders says it is in use), so a session and a newcomer always share one bucket
//! per key.
//!
//! A session also leases tokens ahead from a bucket that is well filled (a 64th of its burst,
//! while the bucket stays half full and at most an eighth of the burst is out in leases:
//! `bucket::TokenBucket::lease`) and spends them without the bucket's lock: the buckets of
//! one identity are shared by all its connections on every worker, and locking one per
//! publish made its cache line travel between cores for every message. Leased tokens were
//! taken from the bucket, so no limit is ever exceeded; what a lease did not spend goes back
//! when the session draws exactly (short of its lease, at another rate after a reload, or
//! waiting) and when it ends. No I/O here.

use std::sync::Arc;
use std::time::Instant;

use super::draw::{self, Plan};
use super::{Bucket, RateLimits, RateSettings, Unit};
use crate::policy::{Rate, RoleRates};

/// How many topics' buckets one session holds; a publisher cycling through more looks the
/// older ones up again (one map search each), nothing worse.
pub(super) const TOPICS: usize = 8;

/// What a session holds for its publishes; built once per identity (a new AUTH starts afresh).
pub struct SessionBuckets {
    identity: Box<str>,
    /// The `[rate_limits]` in force when last looked at, and the generation it had.
    pub(super) settings: Arc<RateSettings>,
    pub(super) generation: u64,
    /// The identity's bucket, once a quota needed it.
    pub(super) own: Option<HeldBucket>,
    /// Most recently published first.
    topics: Vec<TopicBuckets>,
    /// Whether draws lease ahead (a session's many publishes; not a single HTTP publish).
    pub(super) lease_ahead: bool,
    /// The last publish's rates per scope, for the settings `generation` and role rates
    /// they were worked out under.
    plan: Option<(u64, RoleRates, Plan)>,
}

/// The buckets of one topic a session published to, each once a quota needed it.
pub(super) struct TopicBuckets {
    topic: Box<str>,
    pub(super) pair: Option<HeldBucket>,
    pub(super) everyone: Option<HeldBucket>,
}

/// A bucket a session holds, with the tokens it leased ahead from it.
pub(super) struct HeldBucket {
    pub(super) bucket: Arc<Bucket>,
    /// Per unit (messages, bytes).
    lease: [Leased; 2],
}

/// Tokens taken ahead from one unit's bucket and not spent yet, and the rate in force when
/// they were taken (a publish under another rate draws exactly).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Leased {
    /// Not spent yet.
    pub(super) tokens: u64,
    /// As granted, settled with the bucket when the lease ends.
    pub(super) granted: u64,
    pub(super) rate: Option<Rate>,
}

/// Which of a publish's buckets.
#[derive(Clone, Copy)]
pub(super) enum Scope {
    Identity,
    IdentityTopic,
    Topic,
}

// === impl SessionBuckets ===

impl SessionBuckets {
    pub fn new(limits: &RateLimits, identity: &str) -> SessionBuckets {
        let (generation, settings) = limits.settings_now();
        SessionBuckets {
            identity: identity.into(),
            settings,
            generation,
            own: None,
            topics: Vec::new(),
            lease_ahead: true,
            plan: None,
        }
    }

    /// The identity whose buckets these are.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// For HTTP publishes, each a request of its own: no lease, it would only go back at
    /// once.
    pub fn one_publish(limits: &RateLimits, identity: &str) -> SessionBuckets {
        SessionBuckets {
            lease_ahead: false,
            ..SessionBuckets::new(limits, identity)
        }
    }

    /// Re-reads `[rate_limits]` if a reload replaced it since the last look.
    pub(super) fn refresh_settings(&mut self, limits: &RateLimits) {
        if limits.generation() != self.generation {
            (self.generation, self.settings) = limits.settings_now();
        }
    }

    /// The rates a publish under `rates` draws at, worked out again only when the settings
    /// or the roles' rates changed since the last publish.
    pub(super) fn plan_for(&mut self, rates: RoleRates) -> Plan {
        match self.plan {
            Some((generation, for_rates, plan))
                if generation == self.generation && for_rates == rates =>
            {
                plan
            }
            _ => {
                let plan = draw::plan(&self.settings, rates);
                self.plan = Some((self.generation, rates, plan));
                plan
            }
        }
    }

    /// The identity and the place for the scope's bucket (for `topic`, made the most
    /// recently used topic; a new one, the oldest forgotten past [`TOPICS`]).
    pub(super) fn slot(&mut self, scope: Scope, topic: &str) -> (&str, &mut Option<HeldBucket>) {
        let SessionBuckets {
            identity,
            own,
            topics,
            ..
        } = self;
        let slot = match scope {
            Scope::Identity => own,
            Scope::IdentityTopic => &mut most_recent(topics, topic).pair,
            Scope::Topic => &mut most_recent(topics, topic).everyone,
        };
        (identity, slot)
    }

    #[cfg(test)]
    pub(super) fn topics_held(&self) -> usize {
        self.topics.len()
    }
}

// === impl HeldBucket ===

impl HeldBucket {
    pub(super) fn new(bucket: Arc<Bucket>) -> HeldBucket {
        HeldBucket {
            bucket,
            lease: [Leased::default(); 2],
        }
    }

    /// Spends `draws` from the lease if it covers every one of them, drawn at the same rate.
    pub(super) fn spend_leased(&mut self, draws: &[(Unit, Option<Rate>, u64); 2]) -> bool {
        let covered = self.lease_covers(draws);
        if covered {
            self.spend_lease(draws);
        }
        covered
    }

    /// Whether the lease holds every one of `draws`, leased at the rate it is drawn at.
    pub(super) fn lease_covers(&self, draws: &[(Unit, Option<Rate>, u64); 2]) -> bool {
        asked(draws).all(|(unit, rate, amount)| {
            let leased = &self.lease[unit.index()];
            leased.rate == Some(rate) && leased.tokens >= amount
        })
    }

    /// Spends `draws` from the lease, which covers them ([`HeldBucket::lease_covers`]).
    pub(super) fn spend_lease(&mut self, draws: &[(Unit, Option<Rate>, u64); 2]) {
        for (unit, _, amount) in asked(draws) {
            let leased = &mut self.lease[unit.index()];
            leased.tokens = leased.tokens.saturating_sub(amount);
        }
    }

    /// Takes `draws` from the bucket, exactly, leasing ahead after if `lease_ahead`.
    pub(super) fn take_units(
        &mut self,
        draws: [(Unit, Option<Rate>, u64); 2],
        now: Instant,
        lease_ahead: bool,
    ) -> Result<(), Unit> {
        let lease = lease_ahead.then_some(&mut self.lease);
        self.bucket.take_units(draws, now, lease)
    }

    /// Puts back what the lease did not spend.
    pub(super) fn give_back(&mut self, now: Instant) {
        self.bucket.give_back(&mut self.lease, now);
    }
}

impl Drop for HeldBucket {
    fn drop(&mut self) {
        self.give_back(Instant::now());
    }
}

// === impl Scope ===

impl Scope {
    /// The scope's name in a refusal.
    pub(super) fn name(self) -> &'static str {
        match self {
            Scope::Identity => "identity",
            Scope::IdentityTopic => "identity and topic",
            Scope::Topic => "topic",
        }
    }
}

/// The draws that ask for something: a unit with a rate and an amount.
fn asked(draws: &[(Unit, Option<Rate>, u64); 2]) -> impl Iterator<Item = (Unit, Rate, u64)> + '_ {
    draws
        .iter()
        .filter_map(|&(unit, rate, amount)| Some((unit, rate.filter(|_| amount > 0)?, amount)))
}

/// The entry for `topic`, moved to the front (made if missing).
fn most_recent<'a>(topics: &'a mut Vec<TopicBuckets>, topic: &str) -> &'a mut TopicBuckets {
    match topics.iter().position(|held| *held.topic == *topic) {
        Some(at) => topics[..=at].rotate_right(1),
        None => {
            topics.truncate(TOPICS - 1);
            let fresh = TopicBuckets {
                topic: topic.into(),
                pair: None,
                everyone: None,
            };
            topics.insert(0, fresh);
        }
    }
    &mut topics[0]
}
