//! Whether nsqgate is ready for traffic, as `/readyz` tells it: the configuration and policy
//! are loaded (they are before any listener runs), nothing has been reported failed since (a
//! reload that was refused, say), and every configured nsqd passed its last probe, a verified
//! handshake, recently. State only: the probing is `super::probe`, the reporting of failures
//! is whoever notices them. No I/O here.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

/// What is not ready, by name. Shared through `shared::Shared`; changes are rare (a probe per
/// interval, a reload), so a lock is fine here.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Components reported failed: what → why.
    failed: Mutex<BTreeMap<String, String>>,
    /// Components working in a reduced way that still serve (Redis away in `local` mode):
    /// named in `/readyz` without making it fail.
    degraded: Mutex<BTreeMap<String, String>>,
    /// The last probe of each configured nsqd, by address.
    upstreams: Mutex<BTreeMap<String, Probe>>,
}

#[derive(Clone, Debug)]
enum Probe {
    /// Not probed yet.
    Pending,
    Passed(Instant),
    Failed(String),
}

/// `/readyz`'s answer: ready, or what is not and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub not_ready: BTreeMap<String, String>,
    pub degraded: BTreeMap<String, String>,
}

// === impl Readiness ===

impl Readiness {
    /// Marks `what` (`policy`, `certificates`, `jwt`...) failed with `reason` until
    /// [`Readiness::clear`]: `/readyz` answers 503 naming it meanwhile.
    pub fn set_failed(&self, what: &str, reason: impl Into<String>) {
        lock(&self.failed).insert(what.to_owned(), reason.into());
    }

    /// `what` works again.
    pub fn clear(&self, what: &str) {
        lock(&self.failed).remove(what);
        lock(&self.degraded).remove(what);
    }

    /// Names `what` as working in a reduced way (`/readyz` stays 200) until
    /// [`Readiness::clear`].
    pub fn set_degraded(&self, what: &str, reason: impl Into<String>) {
        lock(&self.degraded).insert(what.to_owned(), reason.into());
    }

    /// From now on `/readyz` waits for a passed probe of the nsqd at `address`.
    pub fn expect_upstream(&self, address: &str) {
        lock(&self.upstreams)
            .entry(address.to_owned())
            .or_insert(Probe::Pending);
    }

    /// Records a probe of the nsqd at `address`: Ok when a verified handshake completed.
    /// Returns its new readiness when that changed (a first probe always changes it).
    pub fn probed(&self, address: &str, result: Result<(), String>) -> Option<bool> {
        let mut upstreams = lock(&self.upstreams);
        let before = match upstreams.get(address) {
            Some(Probe::Passed(_)) => Some(true),
            Some(Probe::Failed(_)) => Some(false),
            Some(Probe::Pending) | None => None,
        };
        let passed = result.is_ok();
        let probe = match result {
            Ok(()) => Probe::Passed(Instant::now()),
            Err(reason) => Probe::Failed(reason),
        };
        upstreams.insert(address.to_owned(), probe);
        (before != Some(passed)).then_some(passed)
    }

    /// What is not ready now; a passed probe older than `fresh_for` no longer counts (the
    /// probing itself is stuck).
    pub fn report(&self, fresh_for: Duration) -> Report {
        let mut not_ready: BTreeMap<String, String> = lock(&self.failed).clone();
        for (address, probe) in lock(&self.upstreams).iter() {
            let why = match probe {
                Probe::Passed(at) if at.elapsed() <= fresh_for => continue,
                Probe::Passed(at) => format!(
                    "no verified handshake for {}s (probe overdue)",
                    at.elapsed().as_secs()
                ),
                Probe::Pending => "not probed yet".to_owned(),
                Probe::Failed(reason) => format!("nsqd unavailable: {reason}"),
            };
            not_ready.insert(format!("nsqd {address}"), why);
        }
        let degraded = lock(&self.degraded).clone();
        Report {
            not_ready,
            degraded,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value under these locks is whole after any single insert or remove.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Report ===

impl Report {
    pub fn ready(&self) -> bool {
        self.not_ready.is_empty()
    }

    /// `{"ready": true}`, or `{"ready": false, "not_ready": {"nsqd 10.0.0.1:4150": "why"}}`;
    /// `"degraded": {"redis": "why"}` beside either when something serves in a reduced way.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = if self.ready() {
            json!({ "ready": true })
        } else {
            json!({ "ready": false, "not_ready": self.not_ready })
        };
        if !self.degraded.is_empty() {
            body["degraded"] = json!(self.degraded);
        }
        body
    }
}
