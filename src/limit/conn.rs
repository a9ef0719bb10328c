//! Connection-exhaustion defences: caps on open connections in total, per source IP and per
//! identity, and on new connections per second per source IP. A permit is held for the life of
//! a connection and gives its slot back on drop. Refusals are counted and logged at most once
//! per interval, so a flood cannot flood the log too. The caps are on by default, sized from
//! the process's descriptor limit, which is first raised to its hard limit.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often a summary of refused connections may be logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Descriptors kept for what is not a proxied connection: listeners, HTTP fronts and their
/// upstreams, policy and certificate files, the audit file.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The default cap on nsqgate's connections to one nsqd: three quarters of the 1,024
/// descriptors a default `ulimit -n` gives nsqd, leaving it room for its own files.
pub const DEFAULT_MAX_PER_NSQD: usize = 768;

/// None means no cap (the operator wrote 0).
#[derive(Clone, Debug, Default)]
pub struct ConnSettings {
    pub max_total: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub max_per_identity: Option<usize>,
    /// New connections per second from one source IP, with a burst.
    pub new_per_sec_per_ip: Option<(NonZeroU32, NonZeroU32)>,
    /// nsqgate's own connections to one nsqd address.
    pub max_per_nsqd: Option<usize>,
}

/// The caps a configuration gets for the keys it leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapDefaults {
    pub max_total: usize,
    pub max_per_ip: usize,
    pub max_per_identity: usize,
    pub max_per_nsqd: usize,
}

/// Sizes the default caps from the descriptor limit: every proxied connection holds two
/// descriptors (client and nsqd), so the total is what the limit allows after a reserve; one
/// address gets a quarter of it (at most 1,024), one identity an eighth (at most 256), so
/// neither can take everything; one nsqd gets at most [`DEFAULT_MAX_PER_NSQD`].
pub fn cap_defaults(descriptors: u64) -> CapDefaults {
    let total = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    let max_total = usize::try_from(total).unwrap_or(usize::MAX).max(16);
    CapDefaults {
        max_total,
        max_per_ip: (max_total / 4).clamp(1, 1024),
        max_per_identity: (max_total / 8).clamp(1, 256),
        max_per_nsqd: max_total.min(DEFAULT_MAX_PER_NSQD),
    }
}

/// Raises the soft descriptor limit to the hard limit, as Go programs (nsqd too) do at start:
/// the soft limit a shell hands out (often 1,024) starves a proxy's accept loop long before
/// its caps are reached. Returns the soft limit now in force.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(descriptor_limit())
}

/// The soft descriptor limit now in force (u64::MAX when unlimited).
pub fn descriptor_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.unwrap_or(u64::MAX)
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
    #[error("too many connections to this nsqd (connections.max_per_nsqd)")]
    PerNsqd,
    /// The caps counted over every replica (`[cluster]`).
    #[error("too many connections from this address (all replicas)")]
    SharedPerIp,
    #[error("too many connections for this identity (all replicas)")]
    SharedPerIdentity,
}

pub struct ConnLimits {
    settings: ConnSettings,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    per_identity: DashMap<String, usize>,
    /// nsqgate's own connections per nsqd address (every route to one nsqd shares a count).
    per_nsqd: DashMap<String, usize>,
    new_conns: Option<DefaultKeyedRateLimiter<IpAddr>>,
    refused: AtomicU64,
    last_log: Mutex<(Instant, u64)>,
}

/// One connection to an nsqd; dropping it frees the slot.
pub struct NsqdPermit {
    limits: Arc<ConnLimits>,
    address: String,
}

/// A connection's claim on the limits; dropping it frees the slots.
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
    identity: Option<String>,
    /// Slots in the caps shared by every replica (`[cluster]`), given back on drop.
    shared: Vec<crate::cluster::slots::Slot>,
    /// The identity's shared slot: replaced (the old one given back) when an AUTH takes over
    /// from a certificate's identity.
    identity_slot: Option<crate::cluster::slots::Slot>,
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
            per_nsqd: DashMap::new(),
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
            shared: Vec::new(),
            identity_slot: None,
        };
        if self.settings.max_total.is_some_and(|max| total > max) {
            return Err(self.refuse(Refusal::Total));
        }
        Ok(permit)
    }

    /// A slot for one more connection to the nsqd at `address`, before connecting to it.
    pub fn claim_nsqd(self: &Arc<Self>, address: &str) -> Result<NsqdPermit, Refusal> {
        let count = {
            let mut entry = self.per_nsqd.entry(address.to_owned()).or_insert(0);
            *entry += 1;
            *entry
        };
        let permit = NsqdPermit {
            limits: self.clone(),
            address: address.to_owned(),
        };
        if self.settings.max_per_nsqd.is_some_and(|max| count > max) {
            return Err(self.refuse(Refusal::PerNsqd));
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

    /// Counts a refusal made by the caps shared with other replicas.
    pub fn count_refusal(&self, why: Refusal) {
        self.refuse(why);
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

    /// Holds a slot of a cap shared by every replica for the life of the connection.
    pub fn keep(&mut self, slot: crate::cluster::slots::Slot) {
        self.shared.push(slot);
    }

    /// Holds `slot` as the identity's shared slot, giving back the one held before.
    pub fn keep_identity(&mut self, slot: crate::cluster::slots::Slot) {
        self.identity_slot = Some(slot);
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

impl Drop for NsqdPermit {
    fn drop(&mut self) {
        decrement(&self.limits.per_nsqd, &self.address);
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
mod tests;
