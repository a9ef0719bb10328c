//! Connection-exhaustion defences: caps on open connections in total, per source IP and per
//! identity, and on new connections per second per source IP. A permit is held for the life of
//! a connection and gives its slot back on drop. Refusals are counted and logged at most once
//! per interval, so a flood cannot flood the log too.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often a summary of refused connections may be logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
pub struct ConnSettings {
    pub max_total: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub max_per_identity: Option<usize>,
    /// New connections per second from one source IP, with a burst.
    pub new_per_sec_per_ip: Option<(NonZeroU32, NonZeroU32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections in total")]
    Total,
    #[error("too many connections from this address")]
    PerIp,
    #[error("too many new connections per second from this address")]
    Rate,
    #[error("too many connections for this identity")]
    PerIdentity,
}

pub struct ConnLimits {
    settings: ConnSettings,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    per_identity: DashMap<String, usize>,
    new_conns: Option<DefaultKeyedRateLimiter<IpAddr>>,
    refused: AtomicU64,
    last_log: Mutex<(Instant, u64)>,
}

/// A connection's claim on the limits; dropping it frees the slots.
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
    identity: Option<String>,
}

// === impl ConnLimits ===

impl ConnLimits {
    pub fn new(settings: ConnSettings) -> Arc<ConnLimits> {
        let new_conns = settings
            .new_per_sec_per_ip
            .map(|(rate, burst)| RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)));
        Arc::new(ConnLimits {
            settings,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            per_identity: DashMap::new(),
            new_conns,
            refused: AtomicU64::new(0),
            last_log: Mutex::new((Instant::now(), 0)),
        })
    }

    /// First check, at accept: the total cap.
    pub fn admit(self: &Arc<Self>) -> Result<ConnPermit, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = ConnPermit {
            limits: self.clone(),
            ip: None,
            identity: None,
        };
        if self.settings.max_total.is_some_and(|max| total > max) {
            return Err(self.refuse(Refusal::Total));
        }
        Ok(permit)
    }

    /// Open connections now, for logs and tests.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a refusal and logs a summary at most once per interval.
    fn refuse(&self, why: Refusal) -> Refusal {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut last) = self.last_log.lock() {
            if last.0.elapsed() >= REFUSAL_LOG_INTERVAL || last.1 == 0 {
                tracing::warn!(
                    reason = %why,
                    refused_since_last_report = refused - last.1,
                    refused_total = refused,
                    open = self.open(),
                    "connections refused"
                );
                *last = (Instant::now(), refused);
            }
        }
        why
    }

    /// Drops per-IP rate state of addresses not seen recently.
    pub fn evict_idle(&self) {
        if let Some(limiter) = &self.new_conns {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

// === impl ConnPermit ===

impl ConnPermit {
    /// Second check, once the real client address is known (after a PROXY header).
    pub fn bind_ip(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let limits = &self.limits;
        if let Some(limiter) = &limits.new_conns {
            if limiter.check_key(&ip).is_err() {
                return Err(limits.refuse(Refusal::Rate));
            }
        }
        let count = {
            let mut entry = limits.per_ip.entry(ip).or_insert(0);
            *entry += 1;
            *entry
        };
        self.ip = Some(ip);
        if limits.settings.max_per_ip.is_some_and(|max| count > max) {
            return Err(limits.refuse(Refusal::PerIp));
        }
        Ok(())
    }

    /// Third check, once the client's identity is known.
    pub fn bind_identity(&mut self, identity: &str) -> Result<(), Refusal> {
        if self.identity.as_deref() == Some(identity) {
            return Ok(());
        }
        self.release_identity();
        let limits = &self.limits;
        let count = {
            let mut entry = limits.per_identity.entry(identity.to_owned()).or_insert(0);
            *entry += 1;
            *entry
        };
        self.identity = Some(identity.to_owned());
        if limits
            .settings
            .max_per_identity
            .is_some_and(|max| count > max)
        {
            return Err(limits.refuse(Refusal::PerIdentity));
        }
        Ok(())
    }

    fn release_identity(&mut self) {
        if let Some(identity) = self.identity.take() {
            decrement(&self.limits.per_identity, &identity);
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            decrement(&self.limits.per_ip, &ip);
        }
        self.release_identity();
    }
}

/// Lowers a count and removes the key at zero, so the maps only hold live keys.
fn decrement<K: std::hash::Hash + Eq + Clone>(map: &DashMap<K, usize>, key: &K) {
    map.remove_if_mut(key, |_, count| {
        *count = count.saturating_sub(1);
        *count == 0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_frees_slots_on_drop() {
        let limits = ConnLimits::new(ConnSettings {
            max_per_ip: Some(2),
            ..ConnSettings::default()
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        let mut a = limits.admit().unwrap();
        a.bind_ip(ip).unwrap();
        let mut b = limits.admit().unwrap();
        b.bind_ip(ip).unwrap();
        let mut c = limits.admit().unwrap();
        assert_eq!(c.bind_ip(ip), Err(Refusal::PerIp));
        drop(c);
        drop(a);
        let mut d = limits.admit().unwrap();
        d.bind_ip(ip).unwrap();
        assert_eq!(limits.open(), 2);
        drop((b, d));
        assert!(limits.per_ip.is_empty());
        assert_eq!(limits.refused(), 1);
    }

    #[test]
    fn total_and_identity_caps() {
        let limits = ConnLimits::new(ConnSettings {
            max_total: Some(1),
            max_per_identity: Some(1),
            ..ConnSettings::default()
        });
        let mut a = limits.admit().unwrap();
        assert!(matches!(limits.admit(), Err(Refusal::Total)));
        a.bind_identity("alice").unwrap();
        drop(a);
        let mut b = limits.admit().unwrap();
        b.bind_identity("alice").unwrap();
        assert!(limits.per_identity.contains_key("alice"));
        drop(b);
        assert!(limits.per_identity.is_empty());
    }

    #[test]
    fn new_connection_rate_per_ip() {
        let limits = ConnLimits::new(ConnSettings {
            new_per_sec_per_ip: Some((NonZeroU32::MIN, NonZeroU32::MIN.saturating_add(1))),
            ..ConnSettings::default()
        });
        let ip: IpAddr = [10, 0, 0, 2].into();
        let mut permits = Vec::new();
        for _ in 0..2 {
            let mut p = limits.admit().unwrap();
            p.bind_ip(ip).unwrap();
            permits.push(p);
        }
        let mut p = limits.admit().unwrap();
        assert_eq!(p.bind_ip(ip), Err(Refusal::Rate));
    }
}
