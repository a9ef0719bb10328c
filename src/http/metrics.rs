//! The HTTP fronts' counters, part of the process's one registry ([`crate::metrics`]), and the
//! admin-only `/metrics` answer: that whole registry in the Prometheus text format, the same
//! the admin listener serves.

pub use crate::metrics::HttpCounters as Metrics;

use crate::shared::Shared;

/// Every metric of the process, for `/metrics`.
pub fn render(shared: &Shared) -> String {
    crate::metrics::scrape::render(shared)
}
