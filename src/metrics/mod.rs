//! nsqgate's Prometheus metrics: one registry per process, held by `shared::Shared` (not a
//! global, so tests and several processes in one stay independent) and served by the admin
//! listener and the HTTP fronts' `/metrics` alike. Every label value comes from a closed set
//! in the code or from the configuration (a listener's address, a configured nsqd), never
//! from what a client sends. The hot path holds pre-resolved handles: counting a message is
//! one atomic add, no lock. No I/O here.
//!
//! - [`families`]: every family, its name, help and labels.
//! - [`scrape`]: figures kept elsewhere, copied in before rendering.
//! - [`integrity`]: messages sealed, verified and quarantined.
//! - [`tls`], [`certs`]: handshake failure reasons and certificate expiry, as labels and values.

pub mod authsvc;
mod certs;
mod families;
pub mod integrity;
pub mod scrape;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, IntCounter, IntGauge, TextEncoder};

use crate::auth::Method;
use crate::error::Ending;

pub use certs::{configured_certificates, earliest_expiry};
pub use families::HttpCounters;
pub use tls::{handshake_failure, handshake_failure_reason, Leg};

use families::{
    ClusterFamilies, Connections, Families, JwksGauges, Operations, Registration, Security, Traffic,
};

/// Every metric family of one process.
pub struct Metrics {
    registry: prometheus::Registry,
    conns: Connections,
    security: Security,
    traffic: Traffic,
    ops: Operations,
    registration: Registration,
    pub(crate) jwks: JwksGauges,
    cluster: ClusterFamilies,
    /// The HTTP fronts' own counters.
    pub http: HttpCounters,
    /// The auth service's (`[auth_service]`) counters.
    pub auth_service: authsvc::AuthServiceCounters,
    /// End-to-end integrity: sealed, verified and quarantined messages.
    pub integrity: integrity::IntegrityCounters,
    /// Messages published by clients (an MPUB counts each) and delivered to them; bytes
    /// relayed each way. Pre-resolved: the relay adds to them once per read.
    pub messages_published: IntCounter,
    pub messages_delivered: IntCounter,
    pub bytes_to_nsqd: IntCounter,
    pub bytes_to_client: IntCounter,
    /// `nsqgate_decisions_total{action="publish",outcome="allow"}`: counted per publish.
    publishes_allowed: IntCounter,
}

/// One listener's connection counts.
#[derive(Clone)]
pub struct ListenerCounts {
    accepted: IntCounter,
    open: IntGauge,
}

/// Lowers a listener's open count when its connection ends.
pub struct OpenConnection(IntGauge);

// === impl Metrics ===

impl Metrics {
    /// Registers every family. Fails only on a malformed name in [`families`] (a unit test
    /// builds it), never on anything from outside.
    pub fn new() -> Result<Arc<Metrics>, prometheus::Error> {
        let families = Families(prometheus::Registry::new());
        families.build_info()?;
        let traffic = families.traffic()?;
        let security = families.security()?;
        Ok(Arc::new(Metrics {
            conns: families.connections()?,
            publishes_allowed: security.decisions.with_label_values(&["publish", "allow"]),
            security,
            ops: families.operations()?,
            registration: families.registration()?,
            jwks: families.jwks()?,
            cluster: families.cluster()?,
            http: families.http()?,
            auth_service: authsvc::AuthServiceCounters::register(&families.0)?,
            integrity: families.integrity()?,
            messages_published: traffic.messages.with_label_values(&["to_nsqd"]),
            messages_delivered: traffic.messages.with_label_values(&["to_client"]),
            bytes_to_nsqd: traffic.bytes.with_label_values(&["to_nsqd"]),
            bytes_to_client: traffic.bytes.with_label_values(&["to_client"]),
            traffic,
            registry: families.0,
        }))
    }

    /// Every family in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding fails only on a family without samples, which `gather` leaves out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The counts of one listener: `kind` (`nsq`, `https_nsqd`, `http_plain`, `admin`...)
    /// and the address it is bound to.
    pub fn listener(&self, kind: &str, address: &str) -> ListenerCounts {
        let labels = [kind, address];
        ListenerCounts {
            accepted: self.conns.accepted.with_label_values(&labels),
            open: self.conns.open.with_label_values(&labels),
        }
    }

    pub(crate) fn connections_refused(&self) -> &IntCounter {
        &self.conns.refused
    }

    pub(crate) fn audit_write_failures(&self) -> &IntCounter {
        &self.ops.audit_write_failures
    }

    /// A TLS handshake on `leg` ended: `failure` is its reason, None when it succeeded.
    pub fn tls_handshake(&self, leg: Leg, failure: Option<&'static str>) {
        let outcome = if failure.is_some() {
            "failure"
        } else {
            "success"
        };
        let handshakes = &self.conns.tls_handshakes;
        handshakes.with_label_values(&[leg.as_str(), outcome]).inc();
        if let Some(reason) = failure {
            let failures = &self.conns.tls_failures;
            failures.with_label_values(&[leg.as_str(), reason]).inc();
        }
    }

    /// An authentication by `method` (`api_key`, `jwt`, `certificate`, `unknown`).
    pub fn authentication(&self, method: &'static str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        let authentications = &self.security.authentications;
        authentications.with_label_values(&[method, outcome]).inc();
    }

    /// A policy decision on `action` (`publish`, `subscribe`, `admin`, `read`, `request` for
    /// a cross-site refusal): allowed or denied.
    pub fn decision(&self, action: &'static str, allowed: bool) {
        if allowed && action == "publish" {
            // The one decision counted per message: no label lookup.
            self.publishes_allowed.inc();
            return;
        }
        let outcome = if allowed { "allow" } else { "deny" };
        let decisions = &self.security.decisions;
        decisions.with_label_values(&[action, outcome]).inc();
    }

    /// Publishes allowed together, each as [`Metrics::decision`] would count it.
    pub fn publishes_allowed(&self, count: u64) {
        self.publishes_allowed.inc_by(count);
    }

    pub fn rate_limited(&self) {
        self.security.rate_limited.inc();
    }

    /// A refusal by a size limit (`line`, `body`, `message`, `mpub_messages`,
    /// `unauthenticated_memory`; `http_body` for an HTTP body over its limit).
    pub fn size_limited(&self, limit: &'static str) {
        self.security.size_limited.with_label_values(&[limit]).inc();
    }

    pub fn name_quota_refused(&self) {
        self.security.name_quota.inc();
    }

    /// Whether the cluster's Redis answers now.
    pub fn redis_up(&self, up: bool) {
        self.cluster.redis_up.set(i64::from(up));
    }

    /// A Redis call for `operation` failed or timed out.
    pub fn redis_error(&self, operation: &'static str) {
        let errors = &self.cluster.redis_errors;
        errors.with_label_values(&[operation]).inc();
    }

    /// A publish decided without Redis under `mode` (`local`, `closed`).
    pub fn cluster_unavailable(&self, mode: &'static str) {
        let unavailable = &self.cluster.unavailable;
        unavailable.with_label_values(&[mode]).inc();
    }

    pub fn revocations_active(&self, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.cluster.revocations_active.set(count);
    }

    /// A lease of `what` (`tokens`, `connection`) asked of Redis: `granted`, `short`, `failed`.
    pub fn lease(&self, what: &'static str, outcome: &'static str) {
        let leases = &self.cluster.leases;
        leases.with_label_values(&[what, outcome]).inc();
    }

    pub fn revoked(&self) {
        self.security.revocations.inc();
    }

    /// How a session ended, counted under its kind and blame.
    pub fn session_ended(&self, ending: Ending) {
        let labels = [ending.kind.as_str(), ending.blame_str()];
        self.traffic.sessions_ended.with_label_values(&labels).inc();
    }

    /// A verified connection to nsqd opened after `took`.
    pub fn upstream_connected(&self, took: Duration) {
        self.traffic.upstream_connect.observe(took.as_secs_f64());
    }

    /// nsqd answered a publish `took` after it was written.
    pub fn publish_answered(&self, took: Duration) {
        self.traffic.publish_round_trip.observe(took.as_secs_f64());
    }

    /// A connection's own tally of publish round trips, added to the shared histogram with
    /// [`LocalHistogram::flush`]: a handful of atomic adds per read from nsqd instead of
    /// several per publish, on counters every worker shares.
    pub fn publish_round_trips(&self) -> prometheus::local::LocalHistogram {
        self.traffic.publish_round_trip.local()
    }

    /// A reload of `what` (`policy`, `crls`, `certificates`, `jwt`, `config`...) ended; a
    /// failed one changed nothing. For the reload code: call once per attempt.
    /// Counts a reload of `what`; returns how many with this outcome there have been.
    pub fn reloaded(&self, what: &'static str, success: bool) -> u64 {
        let outcome = if success { "success" } else { "failure" };
        let series = self.ops.reloads.with_label_values(&[what, outcome]);
        series.inc();
        series.get()
    }

    /// Sets the expiry of the certificate file `which` names (`client`, `client_ca`,
    /// `upstream_ca`, `upstream_client`, `admin`...): the earliest notAfter among `ders`.
    /// Nothing readable: the series is removed. For the reload code: call after each load.
    pub fn certificate_loaded(&self, which: &'static str, ders: &[impl AsRef<[u8]>]) {
        let expiry = &self.ops.certificate_expiry;
        match earliest_expiry(ders) {
            Some(at) => expiry.with_label_values(&[which]).set(at),
            None => {
                let _ = expiry.remove_label_values(&[which]);
            }
        }
    }

    /// The registry `role` (`guard`, `sidecar`) relayed an nsqd `command` to nsqlookupd.
    pub fn registry_relayed(&self, role: &'static str, command: &'static str) {
        let relayed = &self.registration.relayed;
        relayed.with_label_values(&[role, command]).inc();
    }

    /// The registry `role` refused a step, for `reason` (a closed set).
    pub fn registry_refused(&self, role: &'static str, reason: &'static str) {
        let refused = &self.registration.refused;
        refused.with_label_values(&[role, reason]).inc();
    }

    /// Whether the last readiness probe of the nsqd at `upstream` passed.
    pub fn upstream_probed(&self, upstream: &str, ready: bool) {
        let gauge = self.ops.upstream_ready.with_label_values(&[upstream]);
        gauge.set(i64::from(ready));
    }
}

// === impl ListenerCounts ===

impl ListenerCounts {
    /// Counts an accepted connection, before any cap.
    pub fn accepted(&self) {
        self.accepted.inc();
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The method label of a principal's method.
pub fn method_label(method: Method) -> &'static str {
    match method {
        Method::Certificate => "certificate",
        Method::Jwt => "jwt",
        Method::ApiKey => "api_key",
        Method::Named => "identity",
    }
}

#[cfg(test)]
mod tests;
