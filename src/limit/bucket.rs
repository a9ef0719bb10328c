//! A token bucket whose rate and burst can change in place. No I/O, no clock of its own: every
//! call is given `now`, so tests need no sleeping.
//!
//! Why not governor: its limiters are immutable, so a changed quota meant a fresh (full)
//! limiter, and alternating two credentials of one identity with different quotas refilled
//! the bucket at every switch. Here a quota change keeps the tokens already spent: the level
//! is only capped at the new burst, never raised.

use std::time::{Duration, Instant};

use crate::policy::Rate;

/// A lease is this fraction of the burst: the identity bucket of a publisher with a burst of
/// 10,000 messages is locked once per 156 of them, not per message.
pub(super) const LEASE_FRACTION: f64 = 64.0;

/// At most this fraction of the burst is out in leases at once (eight leases): idle sessions
/// holding tokens can never take more than an eighth of the burst from the others.
const LEASED_OUT_FRACTION: f64 = 8.0;

/// Tokens for one unit (messages or bytes) of one key.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: Rate,
    /// Tokens available at `at` (fractional: refill is continuous).
    level: f64,
    at: Instant,
    /// Tokens granted in leases not yet settled (spent or given back).
    leased_out: u64,
}

/// Why a take did not succeed.
#[derive(Debug, PartialEq)]
pub(super) enum Short {
    /// Enough tokens will be there after this wait.
    Wait(Duration),
    /// More than the burst at once: no wait will ever be enough.
    OverBurst,
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket, as a key that has not published yet deserves.
    pub(super) fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            level: f64::from(rate.burst),
            at: now,
            leased_out: 0,
        }
    }

    /// Takes `amount` tokens at `now`, or says how long until they are there.
    pub(super) fn take(&mut self, amount: u64, now: Instant) -> Result<(), Short> {
        self.refill(now);
        let amount = amount as f64;
        if amount > f64::from(self.rate.burst) {
            return Err(Short::OverBurst);
        }
        if amount <= self.level {
            self.level -= amount;
            return Ok(());
        }
        let missing = amount - self.level;
        Err(Short::Wait(Duration::from_secs_f64(
            missing / f64::from(self.rate.per_sec),
        )))
    }

    /// Applies a changed quota without refilling: tokens accrued so far at the old rate are
    /// kept (capped at the new burst), and refill continues at the new rate from `now`.
    pub(super) fn set_rate(&mut self, rate: Rate, now: Instant) {
        if rate == self.rate {
            return;
        }
        self.refill(now);
        self.rate = rate;
        self.level = self.level.min(f64::from(rate.burst));
    }

    /// Takes a session's lease ahead of its next publishes, after a successful take: a
    /// 1/[`LEASE_FRACTION`] of the burst, only while the bucket stays at least half full and
    /// less than 1/[`LEASED_OUT_FRACTION`] of the burst is out in leases, so leases never take
    /// what a publish short of tokens could have had. 0 when none.
    pub(super) fn lease(&mut self) -> u64 {
        let burst = f64::from(self.rate.burst);
        let chunk = (burst / LEASE_FRACTION).floor();
        let out = self.leased_out as f64;
        if chunk < 1.0
            || self.level - chunk < burst / 2.0
            || out + chunk > burst / LEASED_OUT_FRACTION
        {
            return 0;
        }
        self.level -= chunk;
        self.leased_out += chunk as u64;
        chunk as u64
    }

    /// Settles a lease of `granted` tokens: the `unspent` part comes back (never above the
    /// burst).
    pub(super) fn settle(&mut self, granted: u64, unspent: u64, now: Instant) {
        self.leased_out = self.leased_out.saturating_sub(granted);
        self.refill(now);
        self.level = (self.level + unspent as f64).min(f64::from(self.rate.burst));
    }

    /// Whether the bucket is full at `now`: forgetting it then loses nothing.
    pub(super) fn is_full(&self, now: Instant) -> bool {
        self.level_at(now) >= f64::from(self.rate.burst)
    }

    fn refill(&mut self, now: Instant) {
        self.level = self.level_at(now);
        self.at = self.at.max(now);
    }

    fn level_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.level + elapsed * f64::from(self.rate.per_sec)).min(f64::from(self.rate.burst))
    }
}

#[cfg(test)]
mod tests;
