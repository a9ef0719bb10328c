//! End-to-end integrity counts: messages sealed and verified, and each one quarantined, by
//! reason. Label values are closed sets from `crate::integrity`. No I/O here.

use prometheus::{IntCounter, IntCounterVec};

/// The integrity families, with the hot-path series resolved once.
pub struct IntegrityCounters {
    /// Bodies sealed on their way to nsqd (an MPUB counts each).
    pub sealed: IntCounter,
    /// Deliveries whose envelope verified and was stripped.
    pub verified: IntCounter,
    pub(super) quarantined: IntCounterVec,
    pub(super) quarantine_publishes: IntCounterVec,
}

// === impl IntegrityCounters ===

impl IntegrityCounters {
    pub(super) fn new(
        messages: &IntCounterVec,
        quarantined: IntCounterVec,
        publishes: IntCounterVec,
    ) -> Self {
        IntegrityCounters {
            sealed: messages.with_label_values(&["sealed"]),
            verified: messages.with_label_values(&["verified"]),
            quarantined,
            quarantine_publishes: publishes,
        }
    }

    /// A delivery withheld from the consumer: `reason` is a `Rejection` label.
    pub fn quarantined(&self, reason: &'static str) {
        self.quarantined.with_label_values(&[reason]).inc();
    }

    /// A copy published to the quarantine topic (`ok`), or not (`failed`: requeued instead).
    pub fn quarantine_published(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.quarantine_publishes
            .with_label_values(&[outcome])
            .inc();
    }
}
