//! One replica's lease of a shared quota: tokens taken from the bucket in Redis in a batch
//! and spent here, so a publish costs no round trip while the lease lasts. The batch follows
//! this replica's recent rate (what it spends in [`SPAN`], or [`FLOOR_TAKES`] takes when it
//! spends those within half a [`TTL`]), capped so that what one replica holds unspent stays
//! small: at most a tenth of the per-second quota and its share of the burst. Unspent tokens
//! lapse after [`TTL`], which bounds how far a lease can move spending in time. No I/O here.

use std::time::{Duration, Instant};

use crate::policy::Rate;

/// The recent spending a lease is sized for.
pub const SPAN: Duration = Duration::from_millis(100);

/// How long leased tokens may wait to be spent.
pub const TTL: Duration = Duration::from_secs(1);

/// A lease covers at least this many takes of the size asked for, as long as this replica
/// spends them within half a [`TTL`]: at a few hundred publishes a second (a quiet replica, or
/// one under a profiler) a lease sized by [`SPAN`] alone would cost a Redis round trip every
/// few dozen publishes.
pub const FLOOR_TAKES: u64 = 1024;

/// Tokens leased and not yet spent, and the recent spending that sizes the next lease.
#[derive(Debug)]
pub struct Lease {
    tokens: u64,
    lapses: Instant,
    /// Spending counted since `window_start`, for the rate estimate.
    window_start: Instant,
    spent: u64,
    /// Tokens per second over the last full window.
    recent_rate: f64,
}

// === impl Lease ===

impl Lease {
    pub fn new(now: Instant) -> Lease {
        Lease {
            tokens: 0,
            lapses: now,
            window_start: now,
            spent: 0,
            recent_rate: 0.0,
        }
    }

    /// Spends `amount` from what is leased; false (nothing spent) when short or lapsed.
    pub fn spend(&mut self, amount: u64, now: Instant) -> bool {
        if now >= self.lapses {
            self.tokens = 0;
        }
        if self.tokens < amount {
            return false;
        }
        self.tokens -= amount;
        self.count(amount, now);
        true
    }

    /// How many tokens to ask Redis for when `amount` is needed now: the recent rate over
    /// [`SPAN`], or [`FLOOR_TAKES`] × `amount` if more and spent within half a [`TTL`] at the
    /// recent rate (so it does not lapse), within [`Lease::most`], never less than `amount`.
    pub fn wanted(&self, amount: u64, rate: Rate, replicas: u32) -> u64 {
        let recent = (self.recent_rate * SPAN.as_secs_f64()).ceil() as u64;
        let spent_in_time = (self.recent_rate * (TTL / 2).as_secs_f64()).floor() as u64;
        let floor = amount.saturating_mul(FLOOR_TAKES).min(spent_in_time);
        recent
            .max(floor)
            .min(Lease::most(rate, replicas))
            .max(amount)
    }

    /// The largest lease: a tenth of the per-second quota, and no more than this replica's
    /// share of the burst (at least one token).
    pub fn most(rate: Rate, replicas: u32) -> u64 {
        let tenth = u64::from(rate.per_sec) / 10;
        let share = u64::from(rate.burst) / u64::from(replicas.max(1));
        tenth.min(share).max(1)
    }

    /// `granted` tokens arrived from Redis, of which `amount` is spent at once. Tokens still
    /// held from an earlier lease are dropped: one lease per key at a time.
    pub fn granted(&mut self, granted: u64, amount: u64, now: Instant) {
        self.tokens = granted.saturating_sub(amount);
        self.lapses = now + TTL;
        self.count(amount, now);
    }

    /// Nothing held and nothing spent lately: safe to forget.
    pub fn is_idle(&self, now: Instant) -> bool {
        now >= self.lapses && now.duration_since(self.window_start) > TTL * 2
    }

    fn count(&mut self, amount: u64, now: Instant) {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= TTL {
            self.recent_rate = self.spent as f64 / elapsed.as_secs_f64();
            self.window_start = now;
            self.spent = 0;
        }
        self.spent = self.spent.saturating_add(amount);
        // Within the first window, the rate so far (a new publisher is sized at once).
        if self.recent_rate == 0.0 && elapsed >= SPAN {
            self.recent_rate = self.spent as f64 / elapsed.as_secs_f64();
        }
    }
}

#[cfg(test)]
mod tests;
