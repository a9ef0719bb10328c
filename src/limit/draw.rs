//! A publish drawn from its buckets: first synchronously, each scope's units under one lock,
//! which is all a publish under limits that do not bind ever needs; then, from the first draw
//! that is short or shared through Redis, asynchronously, waiting (delay mode) or failing.

use std::time::Instant;

use super::bucket::Short;
use super::held::Scope;
use super::{
    Bucket, HeldBucket, Key, Limited, OnLimit, Publish, RateLimits, RateSettings, SessionBuckets,
    Unit,
};
use crate::cluster::quota::{LeaseSlot, SharedQuotas, Take};
use crate::config::cluster::OnUnavailable;
use crate::policy::{Rate, RateQuota, RoleRates};

/// One unit's take from one bucket.
#[derive(Clone, Copy)]
struct Draw<'a> {
    bucket: &'a Bucket,
    unit: Unit,
    rate: Rate,
    amount: u64,
    deadline: tokio::time::Instant,
}

/// How far [`RateLimits::admit_now`] got without waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawn {
    /// Every draw was taken: the publish is admitted.
    All,
    /// Draws before this one were taken; this one (scope number × 2, + 1 for bytes) is short,
    /// or shared through Redis: [`RateLimits::admit_rest`] goes on from it.
    UpTo(usize),
}

/// A publish's scopes in the order they are drawn from, each with the quota in force (a
/// role's over the `[rate_limits]` default, field by field).
fn scopes(settings: &RateSettings, rates: RoleRates) -> [(Scope, Option<RateQuota>); 3] {
    [
        (Scope::Identity, rates.identity.over(settings.identity)),
        (
            Scope::IdentityTopic,
            rates.identity_topic.over(settings.identity_topic),
        ),
        (Scope::Topic, settings.topic),
    ]
}

/// A publish's scopes in the order they are drawn from, each with its message and byte rates
/// in force, `None` for a scope without a quota: resolved once per session for its roles and
/// settings ([`SessionBuckets::plan_for`]).
pub(super) type Plan = [(Scope, Option<[Option<Rate>; 2]>); 3];

pub(super) fn plan(settings: &RateSettings, rates: RoleRates) -> Plan {
    scopes(settings, rates).map(|(scope, quota)| (scope, quota.map(|q| [q.messages(), q.bytes()])))
}

/// What a publish asks of one scope's buckets at its (messages, bytes) rates: messages first,
/// then bytes.
fn units(
    [messages, bytes]: [Option<Rate>; 2],
    publish: Publish<'_>,
) -> [(Unit, Option<Rate>, u64); 2] {
    [
        (Unit::Messages, messages, u64::from(publish.messages)),
        (Unit::Bytes, bytes, publish.bytes),
    ]
}

/// Why one draw failed, before it is named with its scope and unit.
enum Refused {
    /// Short of the quota (reject mode, past `max_delay`, or more than the burst).
    Over(String),
    /// The shared bucket could not be reached and `on_unavailable = "closed"`.
    Unchecked,
}

// === impl RateLimits (drawing) ===

impl RateLimits {
    /// [`RateLimits::admit`] from the buckets `held` by a session, each looked up on its
    /// first use only. `now` is the caller's clock reading for its batch of commands: the
    /// clock is read again only after a wait.
    pub async fn admit_held(
        &self,
        held: &mut SessionBuckets,
        publish: Publish<'_>,
        now: Instant,
    ) -> Result<(), Limited> {
        match self.admit_now(held, publish, now) {
            Drawn::All => Ok(()),
            Drawn::UpTo(next) => self.admit_rest(held, publish, now, next).await,
        }
    }

    /// The synchronous part of [`RateLimits::admit_held`]: takes the publish's draws from the
    /// local buckets in order, each scope's units under one lock, and stops at the first that
    /// is short (or that must go through the replicas' shared buckets) without touching it.
    /// A publish under limits that do not bind is thus admitted here, with no future at all.
    pub fn admit_now(
        &self,
        held: &mut SessionBuckets,
        publish: Publish<'_>,
        now: Instant,
    ) -> Drawn {
        held.refresh_settings(self);
        if self.shared.is_some() {
            return Drawn::UpTo(0);
        }
        let lease_ahead = held.lease_ahead;
        for (index, (scope, rates)) in held.plan_for(publish.rates).into_iter().enumerate() {
            let Some(rates) = rates else { continue };
            let (identity, slot) = held.slot(scope, publish.topic);
            let bucket = slot.get_or_insert_with(|| {
                HeldBucket::new(self.bucket(Key::of(scope, identity, publish.topic)))
            });
            let draws = units(rates, publish);
            if bucket.spend_leased(&draws) {
                continue;
            }
            if let Err(unit) = bucket.take_units(draws, now, lease_ahead) {
                return Drawn::UpTo(index * 2 + unit as usize);
            }
        }
        Drawn::All
    }

    /// Draws a run of publishes to one topic (`publish` with their messages and bytes summed)
    /// from the leases the session holds, all or nothing: true when every scope with a quota
    /// had a lease covering the run, which is then spent from each; false leaves every lease
    /// and bucket as it was (the run is then drawn publish by publish). Leased tokens were
    /// taken from the buckets already, so the run never exceeds a limit, and a run that would
    /// wait or be refused is never decided here.
    pub fn spend_leased_run(&self, held: &mut SessionBuckets, publish: Publish<'_>) -> bool {
        held.refresh_settings(self);
        if self.shared.is_some() {
            return false;
        }
        let plan = held.plan_for(publish.rates);
        let quotas = || {
            plan.into_iter()
                .filter_map(|(scope, rates)| Some((scope, rates?)))
        };
        let covered = quotas().all(|(scope, rates)| {
            let (_, slot) = held.slot(scope, publish.topic);
            slot.as_ref()
                .is_some_and(|bucket| bucket.lease_covers(&units(rates, publish)))
        });
        if covered {
            for (scope, rates) in quotas() {
                if let (_, Some(bucket)) = held.slot(scope, publish.topic) {
                    bucket.spend_lease(&units(rates, publish));
                }
            }
        }
        covered
    }

    /// The rest of a publish's draws from draw number `next` on (as [`Drawn::UpTo`] counts
    /// them), under the settings [`RateLimits::admit_now`] read: waiting in delay mode,
    /// failing in reject mode or past `max_delay`.
    pub async fn admit_rest(
        &self,
        held: &mut SessionBuckets,
        publish: Publish<'_>,
        mut now: Instant,
        next: usize,
    ) -> Result<(), Limited> {
        let deadline = tokio::time::Instant::from_std(now) + held.settings.max_delay;
        for (index, (scope, rates)) in held.plan_for(publish.rates).into_iter().enumerate() {
            let Some(rates) = rates else { continue };
            // Buckets are looked up only for scopes with a quota: unlimited costs nothing.
            let (identity, slot) = held.slot(scope, publish.topic);
            let held_bucket = slot.get_or_insert_with(|| {
                HeldBucket::new(self.bucket(Key::of(scope, identity, publish.topic)))
            });
            // The draws from here on are exact: what a lease holds goes back first.
            held_bucket.give_back(now);
            let bucket = &held_bucket.bucket;
            for (unit, rate, amount) in units(rates, publish) {
                // Draws before `next` were taken by admit_now.
                if index * 2 + (unit as usize) < next {
                    continue;
                }
                let Some(rate) = rate.filter(|_| amount > 0) else {
                    continue;
                };
                let draw = Draw {
                    bucket,
                    unit,
                    rate,
                    amount,
                    deadline,
                };
                let taken = match (&self.shared, &bucket.shared) {
                    (Some(shared), Some(slots)) => {
                        let slot = &slots[unit as usize];
                        self.take_shared(shared, slot, &draw, &mut now).await
                    }
                    _ => self.take(&draw, &mut now).await,
                };
                taken.map_err(|refused| match refused {
                    Refused::Over(detail) => Limited::Exceeded {
                        scope: scope.name(),
                        detail: format!("{}: {detail}", unit.name()),
                    },
                    Refused::Unchecked => Limited::Unchecked {
                        scope: scope.name(),
                    },
                })?;
            }
        }
        Ok(())
    }

    /// Takes from the local bucket; `now` is read again after each wait.
    async fn take(&self, draw: &Draw<'_>, now: &mut Instant) -> Result<(), Refused> {
        let Draw {
            bucket,
            unit,
            rate,
            amount,
            deadline,
        } = *draw;
        loop {
            match bucket.take(unit, rate, amount, *now) {
                Ok(()) => return Ok(()),
                Err(Short::Wait(wait)) => {
                    let wake = tokio::time::Instant::now() + wait;
                    if self.on_limit() == OnLimit::Reject || wake > deadline {
                        return Err(Refused::Over(format!(
                            "{amount} more would exceed the quota"
                        )));
                    }
                    tokio::time::sleep_until(wake).await;
                    *now = Instant::now();
                }
                Err(Short::OverBurst) => {
                    return Err(Refused::Over(format!(
                        "{amount} at once is more than the burst allows"
                    )))
                }
            }
        }
    }

    /// Takes from the replicas' shared bucket `name`; while Redis is unavailable, from the
    /// local bucket at this replica's share of the quota, or not at all (`closed`).
    async fn take_shared(
        &self,
        shared: &SharedQuotas,
        slot: &LeaseSlot,
        draw: &Draw<'_>,
        now: &mut Instant,
    ) -> Result<(), Refused> {
        let (rate, amount, deadline) = (draw.rate, draw.amount, draw.deadline);
        loop {
            match shared.take(slot, rate, amount, *now).await {
                Take::Granted => return Ok(()),
                Take::OverBurst => {
                    return Err(Refused::Over(format!(
                        "{amount} at once is more than the burst allows"
                    )))
                }
                Take::Wait(wait) => {
                    let wake = tokio::time::Instant::now() + wait;
                    if self.on_limit() == OnLimit::Reject || wake > deadline {
                        return Err(Refused::Over(format!(
                            "{amount} more would exceed the quota"
                        )));
                    }
                    tokio::time::sleep_until(wake).await;
                    *now = Instant::now();
                }
                Take::Unavailable => {
                    let config = shared.cluster().config();
                    let metrics = shared.cluster().metrics();
                    if config.on_unavailable == OnUnavailable::Closed {
                        metrics.cluster_unavailable("closed");
                        return Err(Refused::Unchecked);
                    }
                    metrics.cluster_unavailable("local");
                    // Redis may have taken up to its timeout to fail.
                    *now = Instant::now();
                    let share = Draw {
                        rate: rate.share(config.expected_replicas),
                        ..*draw
                    };
                    return self.take(&share, now).await;
                }
            }
        }
    }
}
