//! Figures kept where they are counted (the connection caps, the audit sink, the JWKS
//! verifier) copied into the registry right before it is rendered, so every `/metrics`
//! serves one registry.

use std::sync::Mutex;

use prometheus::IntCounter;

use crate::shared::Shared;

/// One scrape copies at a time: two copying a counter at once would add its delta twice.
static SAMPLING: Mutex<()> = Mutex::new(());

/// The whole registry of `shared`, in the Prometheus text format.
pub fn render(shared: &Shared) -> String {
    let metrics = &shared.metrics;
    {
        let _one = SAMPLING.lock().unwrap_or_else(|e| e.into_inner());
        advance(metrics.connections_refused(), shared.conns.refused());
        let audit_failures = crate::audit::write_failures();
        advance(metrics.audit_write_failures(), audit_failures);
        if let Some(jwt) = shared.jwt() {
            let figures = jwt.jwks_figures();
            let jwks = &metrics.jwks;
            advance(&jwks.refresh_failures, figures.refresh_failures);
            advance(&jwks.skipped_entries, figures.skipped_entries);
            jwks.age_seconds.set(saturating_i64(figures.age_secs));
            jwks.keys.set(saturating_i64(figures.keys as u64));
            jwks.stale.set(i64::from(figures.stale));
        }
    }
    metrics.render()
}

/// Brings a counter up to `total`, counted elsewhere (which only ever grows).
fn advance(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
