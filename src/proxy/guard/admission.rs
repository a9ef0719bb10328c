//! A publish drawn from the rate limits: from the buckets this connection holds, under the
//! quotas its roles grant, both worked out once (the quotas again after a policy change).
//! Synchronously first ([`Guard::admit_now`]), which settles every publish the limits do not
//! hold back; only a publish that is short, or whose quota is shared through Redis, goes on
//! asynchronously ([`Guard::admit_rest`]).

use std::time::Instant;

use super::{failed, Guard, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity;
use crate::error::Kind;
use crate::limit::{Drawn, Limited, Publish, SessionBuckets};
use crate::nsq::{Command, DecodedCommand};

/// What [`Guard::admit_now`] settled.
pub enum Admission {
    /// Admitted (None), or refused with this verdict.
    Settled(Option<Verdict>),
    /// Not yet: [`Guard::admit_rest`] goes on from this draw (it may wait).
    Pending(usize),
}

impl Guard {
    /// Draws a publish from the rate limits; waits in delay mode. Some(refusal) when over.
    /// `now` is the caller's clock reading for its batch of commands.
    pub async fn admit(&mut self, decoded: &DecodedCommand, now: Instant) -> Option<Verdict> {
        match self.admit_now(decoded, now) {
            Admission::Settled(verdict) => verdict,
            Admission::Pending(next) => self.admit_rest(decoded, now, next).await,
        }
    }

    /// The part of [`Guard::admit`] that needs no waiting: a publish with the tokens it needs
    /// (and anything that is not a publish) is settled here, without a future.
    pub fn admit_now(&mut self, decoded: &DecodedCommand, now: Instant) -> Admission {
        let (Some(publish), Some(held)) = (self.publish_of(decoded), self.buckets.as_mut()) else {
            return Admission::Settled(None);
        };
        match self.shared.rates.admit_now(held, publish, now) {
            Drawn::All => Admission::Settled(None),
            Drawn::UpTo(next) => Admission::Pending(next),
        }
    }

    /// Admits the PUBs of a run that follow `first` (each to `first`'s topic, read together
    /// with it, and `first` already screened and let through) together with `first`, if the
    /// leases this connection holds cover them all ([`RateLimits::spend_leased_run`]): the rest
    /// are then counted as allowed, as screening each would have done. False changes nothing:
    /// each publish is then screened and drawn on its own.
    ///
    /// [`RateLimits::spend_leased_run`]: crate::limit::RateLimits::spend_leased_run
    pub fn admit_run_leased(&mut self, first: &DecodedCommand, rest: &[DecodedCommand]) -> bool {
        let count = |commands: &[DecodedCommand], of: fn(&Command) -> u64| {
            commands
                .iter()
                .map(|decoded| of(&decoded.command))
                .sum::<u64>()
        };
        let admitted = match (self.publish_of(first), self.buckets.as_mut()) {
            (Some(publish), Some(held)) => {
                let messages = u64::from(publish.messages)
                    + count(rest, |command| u64::from(command.message_count()));
                let run = Publish {
                    messages: u32::try_from(messages).unwrap_or(u32::MAX),
                    bytes: publish.bytes + count(rest, Command::payload_bytes),
                    ..publish
                };
                self.shared.rates.spend_leased_run(held, run)
            }
            // No identity to draw for: nothing to draw, as `admit_now` settles it.
            _ => true,
        };
        if admitted {
            self.shared.metrics.publishes_allowed(rest.len() as u64);
        }
        admitted
    }

    /// The rest of [`Guard::admit`] after [`Guard::admit_now`] stopped at draw `next`.
    pub async fn admit_rest(
        &mut self,
        decoded: &DecodedCommand,
        now: Instant,
        next: usize,
    ) -> Option<Verdict> {
        let publish = self.publish_of(decoded)?;
        let held = self.buckets.as_mut()?;
        let admitted = self.shared.rates.admit_rest(held, publish, now, next).await;
        let limited = admitted.err()?;
        Some(self.limited(decoded, publish.topic, &limited))
    }

    /// What `decoded` asks of the rate limits, with the buckets it draws from made ready in
    /// `self.buckets`; None for a command that is not a publish, or before an identity.
    fn publish_of<'a>(&mut self, decoded: &'a DecodedCommand) -> Option<Publish<'a>> {
        let principal = self.principal.as_ref()?;
        let topic = match &decoded.command {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => topic,
            _ => return None,
        };
        let rates = *self.rates.get_or_insert_with(|| {
            let policy = &self.current;
            // A principal that no longer stands is refused by the re-check after admission.
            identity::current_subject(principal, policy)
                .map(|subject| policy.rates_of(&subject))
                .unwrap_or_default()
        });
        self.buckets
            .get_or_insert_with(|| SessionBuckets::new(&self.shared.rates, &principal.identity));
        Some(Publish {
            topic,
            rates,
            messages: decoded.command.message_count(),
            bytes: decoded.command.payload_bytes(),
        })
    }

    /// Counts, audits and words a publish the rate limits refused.
    fn limited(&self, decoded: &DecodedCommand, topic: &str, limited: &Limited) -> Verdict {
        // An unchecked shared quota is counted under nsqgate_cluster_unavailable_total.
        if let Limited::Exceeded { .. } = limited {
            self.shared.metrics.rate_limited();
        }
        audit::record(&Event {
            remote: Some(self.peer),
            principal: self.principal.as_ref(),
            action: "publish",
            topic: Some(topic),
            outcome: "deny",
            reason: Some(&limited.to_string()),
            ..Event::default()
        });
        failed(Kind::Limit, decoded.command.name(), &limited.to_string())
    }
}
