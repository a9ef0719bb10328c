//! The JWKS key set in force: its keys, when it was fetched, whether it has gone stale, and
//! the figures `/metrics` shows (refresh failures, skipped entries, age). No I/O here: the
//! fetching is `crate::auth::jwks`, the verification `super::jwt`.
//!
//! A set that cannot be refreshed for longer than `jwks_max_stale_secs` fails closed: the
//! issuer may have removed a key since, so tokens its keys would verify are refused until a
//! refresh succeeds. Keys from configuration files are never stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::keys::BoundKey;

/// One fetched (or loaded) JWKS: swapped whole, so a verification sees one consistent set.
#[derive(Debug)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<BoundKey>,
    /// When this set was fetched; its age decides staleness.
    pub(crate) fetched_at: Instant,
}

/// The JWKS's health, as `/metrics` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksFigures {
    pub refresh_failures: u64,
    pub skipped_entries: u64,
    /// Seconds since the set in force was fetched.
    pub age_secs: u64,
    /// Usable keys in the set in force.
    pub keys: usize,
    /// Older than `jwks_max_stale_secs`: its keys verify nothing.
    pub stale: bool,
}

/// The live set plus its health figures. Cheap to read on every verification.
#[derive(Debug)]
pub(crate) struct JwksState {
    current: RwLock<Arc<KeySet>>,
    /// `None` for a set that is not refreshed (a `jwks_file`): it never goes stale.
    max_stale: Option<Duration>,
    refresh_failures: AtomicU64,
    skipped_entries: AtomicU64,
}

// === impl JwksState ===

impl JwksState {
    pub(crate) fn new(keys: Vec<BoundKey>, skipped: u64, max_stale: Option<Duration>) -> Self {
        JwksState {
            current: RwLock::new(Arc::new(KeySet {
                keys,
                fetched_at: Instant::now(),
            })),
            max_stale,
            refresh_failures: AtomicU64::new(0),
            skipped_entries: AtomicU64::new(skipped),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<KeySet> {
        // The guarded value is a single `Arc`, always whole, so a poisoned lock is still sound.
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current)
    }

    /// Puts a freshly fetched set in force.
    pub(crate) fn replace(&self, keys: Vec<BoundKey>, skipped: u64) {
        self.skipped_entries.fetch_add(skipped, Ordering::Relaxed);
        let fresh = Arc::new(KeySet {
            keys,
            fetched_at: Instant::now(),
        });
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = fresh;
    }

    pub(crate) fn record_refresh_failure(&self) {
        self.refresh_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The set's age when it is past `max_stale` (its keys must not be used), else `None`.
    pub(crate) fn stale_for(&self, set: &KeySet) -> Option<Duration> {
        let age = set.fetched_at.elapsed();
        self.max_stale.filter(|max| age > *max).map(|_| age)
    }

    pub(crate) fn max_stale(&self) -> Option<Duration> {
        self.max_stale
    }

    /// The figures `/metrics` shows: refresh failures, skipped entries, age, keys, staleness.
    pub(crate) fn figures(&self) -> JwksFigures {
        let set = self.snapshot();
        JwksFigures {
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            skipped_entries: self.skipped_entries.load(Ordering::Relaxed),
            age_secs: set.fetched_at.elapsed().as_secs(),
            keys: set.keys.len(),
            stale: self.stale_for(&set).is_some(),
        }
    }
}
