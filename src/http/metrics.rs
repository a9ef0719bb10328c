//! Counters of the HTTP fronts, shared by every listener and rendered in the Prometheus text
//! exposition format for the admin-only `/metrics` endpoint. No I/O here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Passed to each front (not a global), so tests and several processes in one stay independent.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, any status.
    pub requests: AtomicU64,
    /// Requests refused with 401 or 403.
    pub refused: AtomicU64,
    /// Producers nsqlookupd listed that are not among the configured nodes (a rogue or
    /// misconfigured nsqd), dropped from /lookup and /nodes.
    pub rogue_producers: AtomicU64,
    /// Request heads refused before parsing (Content-Length/Transfer-Encoding tricks).
    pub smuggling: AtomicU64,
    /// Upstream exchanges that failed (connect, TLS, timeout).
    pub upstream_errors: AtomicU64,
}

// === impl Metrics ===

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// This front's counters plus the process-wide ones: connections and security decisions.
    pub fn render_with(&self, shared: &crate::shared::Shared) -> String {
        let mut out = self.render();
        let c = &shared.counters;
        let counters = [
            (
                "nsqgate_auth_success_total",
                "Successful authentications (AUTH, certificate, HTTP).",
                &c.auth_success,
            ),
            (
                "nsqgate_auth_failure_total",
                "Refused credentials.",
                &c.auth_failure,
            ),
            (
                "nsqgate_denied_total",
                "Commands and requests the policy denied.",
                &c.denied,
            ),
            (
                "nsqgate_rate_limited_total",
                "Publishes refused by a rate limit.",
                &c.rate_limited,
            ),
            (
                "nsqgate_revoked_total",
                "Live connections closed by revocation (key, roles or certificate gone, permission lost) or token expiry.",
                &c.revoked,
            ),
            (
                "nsqgate_name_quota_refused_total",
                "Publishes and SUBs refused by a quota on new topic or channel names.",
                &c.name_quota,
            ),
            (
                "nsqgate_audit_write_failures_total",
                "Audit lines that could not be written (disk full, file gone).",
                &crate::logging::sink::FAILURES,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        c.endings.render(&mut out);
        let conns = &shared.conns;
        let _ = writeln!(
            out,
            "# HELP nsqgate_connections_open Client connections open now."
        );
        let _ = writeln!(out, "# TYPE nsqgate_connections_open gauge");
        let _ = writeln!(out, "nsqgate_connections_open {}", conns.open());
        let _ = writeln!(out, "# HELP nsqgate_connections_refused_total Connections closed at once by a connection cap.");
        let _ = writeln!(out, "# TYPE nsqgate_connections_refused_total counter");
        let _ = writeln!(out, "nsqgate_connections_refused_total {}", conns.refused());
        if let Some(jwt) = shared.jwt() {
            jwt.render_jwks_metrics(&mut out);
        }
        out
    }

    pub fn render(&self) -> String {
        let counters = [
            (
                "nsqgate_http_requests_total",
                "HTTP requests answered by nsqgate's HTTP fronts.",
                &self.requests,
            ),
            (
                "nsqgate_http_refused_total",
                "HTTP requests refused with 401 or 403.",
                &self.refused,
            ),
            (
                "nsqgate_lookupd_rogue_producers_dropped_total",
                "Producers from nsqlookupd not among the configured nodes, dropped from replies.",
                &self.rogue_producers,
            ),
            (
                "nsqgate_http_smuggling_refused_total",
                "Request heads refused for ambiguous framing (Content-Length/Transfer-Encoding).",
                &self.smuggling,
            ),
            (
                "nsqgate_http_upstream_errors_total",
                "Upstream HTTP exchanges that failed.",
                &self.upstream_errors,
            ),
        ];
        let mut out = String::new();
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        out
    }
}
