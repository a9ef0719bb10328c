//! The metric families, in groups, each registered once at start. Names follow Prometheus
//! conventions: `nsqgate_` prefix, base units (`_seconds`, `_bytes`), `_total` on counters.
//! Label values come from closed sets in the code or from the configuration, never from
//! what a client sends.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

type Built<T> = Result<T, prometheus::Error>;

/// Latency buckets in seconds, 0.5 ms to 30 s: loopback publishes take well under a
/// millisecond, a TLS connection to a remote nsqd tens of milliseconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 16.0,
    30.0,
];

/// Connections and their TLS handshakes.
pub(crate) struct Connections {
    pub accepted: IntCounterVec,
    pub open: IntGaugeVec,
    /// Closed at once by a connection cap (copied from the caps at scrape time).
    pub refused: IntCounter,
    pub tls_handshakes: IntCounterVec,
    pub tls_failures: IntCounterVec,
}

/// Who was let in and what they were allowed.
pub(crate) struct Security {
    pub authentications: IntCounterVec,
    pub decisions: IntCounterVec,
    pub rate_limited: IntCounter,
    pub size_limited: IntCounterVec,
    pub name_quota: IntCounter,
    pub revocations: IntCounter,
}

/// What flowed, how sessions ended, and how long nsqd took.
pub(crate) struct Traffic {
    pub sessions_ended: IntCounterVec,
    pub messages: IntCounterVec,
    pub bytes: IntCounterVec,
    pub upstream_connect: Histogram,
    pub publish_round_trip: Histogram,
}

/// The process's own state: build, reloads, certificates, probes, audit log.
pub(crate) struct Operations {
    pub reloads: IntCounterVec,
    pub certificate_expiry: IntGaugeVec,
    pub upstream_ready: IntGaugeVec,
    /// Copied from the audit sink at scrape time.
    pub audit_write_failures: IntCounter,
}

/// Redis shared by the replicas (`[cluster]`).
pub(crate) struct ClusterFamilies {
    pub redis_up: IntGauge,
    pub redis_errors: IntCounterVec,
    pub unavailable: IntCounterVec,
    pub revocations_active: IntGauge,
    pub leases: IntCounterVec,
}

/// The JWKS figures, copied from the verifier at scrape time.
pub(crate) struct JwksGauges {
    pub refresh_failures: IntCounter,
    pub skipped_entries: IntCounter,
    pub age_seconds: IntGauge,
    pub keys: IntGauge,
    pub stale: IntGauge,
}

/// Counters of the HTTP fronts (every front adds to the same ones).
#[derive(Clone)]
pub struct HttpCounters {
    /// Requests answered, any status.
    pub requests: IntCounter,
    /// Requests refused with 401 or 403.
    pub refused: IntCounter,
    /// Request heads refused before parsing (Content-Length/Transfer-Encoding tricks).
    pub smuggling: IntCounter,
    /// Upstream exchanges that failed (connect, TLS, timeout).
    pub upstream_errors: IntCounter,
    /// Connections opened to each upstream (nsqd, nsqlookupd, nsqadmin); the rest of the
    /// requests reused a pooled one.
    pub upstream_connections_opened: IntCounterVec,
    /// Producers nsqlookupd listed that are not configured nsqd (a rogue or misconfigured
    /// nsqd), dropped from /lookup and /nodes.
    pub rogue_producers: IntCounter,
}

impl HttpCounters {
    pub fn add(counter: &IntCounter, n: u64) {
        counter.inc_by(n);
    }
}

/// Guarded registration (`[registry.*]`): commands relayed to nsqlookupd and refusals.
pub(crate) struct Registration {
    pub relayed: IntCounterVec,
    pub refused: IntCounterVec,
}

/// Builds families and registers each one in the registry it wraps.
pub(crate) struct Families(pub Registry);

impl Families {
    pub fn build_info(&self) -> Built<()> {
        let build = self.gauges(
            "nsqgate_build_info",
            "Always 1; the version label names the running build.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Ok(())
    }

    pub fn connections(&self) -> Built<Connections> {
        Ok(Connections {
            accepted: self.counters(
                "nsqgate_connections_accepted_total",
                "Connections accepted, by listener (kind and bound address), before any cap.",
                &["kind", "address"],
            )?,
            open: self.gauges(
                "nsqgate_connections_open",
                "Connections open now, by listener (kind and bound address).",
                &["kind", "address"],
            )?,
            refused: self.counter(
                "nsqgate_connections_refused_total",
                "Connections closed at once by a connection cap.",
            )?,
            tls_handshakes: self.counters(
                "nsqgate_tls_handshakes_total",
                "TLS handshakes by leg (client: toward clients; upstream: toward nsqd) and outcome.",
                &["leg", "outcome"],
            )?,
            tls_failures: self.counters(
                "nsqgate_tls_handshake_failures_total",
                "Failed TLS handshakes by leg and reason.",
                &["leg", "reason"],
            )?,
        })
    }

    pub fn security(&self) -> Built<Security> {
        Ok(Security {
            authentications: self.counters(
                "nsqgate_authentications_total",
                "Authentications (AUTH, client certificate, HTTP credentials) by method and outcome.",
                &["method", "outcome"],
            )?,
            decisions: self.counters(
                "nsqgate_decisions_total",
                "Policy decisions on commands and requests by action and outcome.",
                &["action", "outcome"],
            )?,
            rate_limited: self.counter(
                "nsqgate_rate_limit_refusals_total",
                "Publishes refused by a rate limit.",
            )?,
            size_limited: self.counters(
                "nsqgate_size_limit_refusals_total",
                "Commands refused by a size limit, by limit.",
                &["limit"],
            )?,
            name_quota: self.counter(
                "nsqgate_name_quota_refusals_total",
                "Publishes and SUBs refused by a quota on new topic or channel names.",
            )?,
            revocations: self.counter(
                "nsqgate_revocations_total",
                "Live connections closed by revocation (key, roles or certificate gone, permission lost) or token expiry.",
            )?,
        })
    }

    pub fn integrity(&self) -> Built<super::integrity::IntegrityCounters> {
        let messages = self.counters(
            "nsqgate_integrity_messages_total",
            "Message bodies on signed topics: sealed toward nsqd, verified toward consumers.",
            &["outcome"],
        )?;
        let quarantined = self.counters(
            "nsqgate_integrity_quarantined_total",
            "Deliveries on signed topics withheld from the consumer, by reason.",
            &["reason"],
        )?;
        let publishes = self.counters(
            "nsqgate_integrity_quarantine_publishes_total",
            "Copies of withheld deliveries published to the quarantine topic, by outcome.",
            &["outcome"],
        )?;
        Ok(super::integrity::IntegrityCounters::new(
            &messages,
            quarantined,
            publishes,
        ))
    }

    pub fn traffic(&self) -> Built<Traffic> {
        Ok(Traffic {
            sessions_ended: self.counters(
                "nsqgate_sessions_ended_total",
                "NSQ client connections ended, by kind of ending and blame.",
                &["kind", "blame"],
            )?,
            messages: self.counters(
                "nsqgate_messages_total",
                "Messages by direction: to_nsqd published (an MPUB counts each), to_client delivered.",
                &["direction"],
            )?,
            bytes: self.counters(
                "nsqgate_bytes_total",
                "Bytes of NSQ traffic relayed, by direction.",
                &["direction"],
            )?,
            upstream_connect: self.histogram(
                "nsqgate_upstream_connect_duration_seconds",
                "Time to open a verified connection to nsqd (TCP, IDENTIFY, TLS, AUTH), successful ones.",
            )?,
            publish_round_trip: self.histogram(
                "nsqgate_publish_round_trip_seconds",
                "Time from writing a publish to nsqd to nsqd's reply to it.",
            )?,
        })
    }

    pub fn operations(&self) -> Built<Operations> {
        Ok(Operations {
            reloads: self.counters(
                "nsqgate_reloads_total",
                "Reloads by what was reloaded and outcome (a failed one changes nothing).",
                &["what", "outcome"],
            )?,
            certificate_expiry: self.gauges(
                "nsqgate_certificate_expiry_timestamp_seconds",
                "When each loaded certificate file expires (its earliest notAfter), in Unix seconds.",
                &["certificate"],
            )?,
            upstream_ready: self.gauges(
                "nsqgate_upstream_ready",
                "1 when the last readiness probe of a configured nsqd completed a verified handshake.",
                &["upstream"],
            )?,
            audit_write_failures: self.counter(
                "nsqgate_audit_write_failures_total",
                "Audit lines that could not be written (disk full, file gone).",
            )?,
        })
    }

    pub fn jwks(&self) -> Built<JwksGauges> {
        Ok(JwksGauges {
            refresh_failures: self.counter(
                "nsqgate_jwks_refresh_failures_total",
                "JWKS refreshes that failed (fetch or document).",
            )?,
            skipped_entries: self.counter(
                "nsqgate_jwks_entries_skipped_total",
                "JWKS entries skipped as unusable (each logged with its reason).",
            )?,
            age_seconds: self.gauge(
                "nsqgate_jwks_age_seconds",
                "Seconds since the JWKS in force was fetched (0 without a JWKS).",
            )?,
            keys: self.gauge("nsqgate_jwks_keys", "Usable keys in the JWKS in force.")?,
            stale: self.gauge(
                "nsqgate_jwks_stale",
                "1 when the JWKS is older than jwks_max_stale_secs: its keys verify nothing.",
            )?,
        })
    }

    pub fn cluster(&self) -> Built<ClusterFamilies> {
        Ok(ClusterFamilies {
            redis_up: self.gauge(
                "nsqgate_cluster_redis_up",
                "1 while the last call to the cluster's Redis succeeded (0 without [cluster]).",
            )?,
            redis_errors: self.counters(
                "nsqgate_cluster_redis_errors_total",
                "Calls to the cluster's Redis that failed or passed cluster.timeout_ms, by operation.",
                &["operation"],
            )?,
            unavailable: self.counters(
                "nsqgate_cluster_unavailable_total",
                "Publishes decided without Redis, by cluster.on_unavailable mode (local or closed).",
                &["mode"],
            )?,
            revocations_active: self.gauge(
                "nsqgate_cluster_revocations_active",
                "Revocations from `nsqgate revoke` in force on this replica.",
            )?,
            leases: self.counters(
                "nsqgate_cluster_leases_total",
                "Leases asked of Redis, by what (tokens, connection) and outcome (granted, short, failed).",
                &["what", "outcome"],
            )?,
        })
    }

    pub fn http(&self) -> Built<HttpCounters> {
        Ok(HttpCounters {
            requests: self.counter(
                "nsqgate_http_requests_total",
                "HTTP requests answered by nsqgate's HTTP fronts.",
            )?,
            refused: self.counter(
                "nsqgate_http_refused_total",
                "HTTP requests refused with 401 or 403.",
            )?,
            smuggling: self.counter(
                "nsqgate_http_smuggling_refused_total",
                "Request heads refused for ambiguous framing (Content-Length/Transfer-Encoding).",
            )?,
            upstream_errors: self.counter(
                "nsqgate_http_upstream_errors_total",
                "Upstream HTTP exchanges that failed.",
            )?,
            upstream_connections_opened: self.counters(
                "nsqgate_http_upstream_connections_opened_total",
                "Connections the HTTP fronts opened to their upstream (nsqd, nsqlookupd, nsqadmin); requests beyond these reused a kept-alive one.",
                &["upstream"],
            )?,
            rogue_producers: self.counter(
                "nsqgate_rogue_nsqd_dropped_total",
                "Producers nsqlookupd listed that are not configured nsqd (rogue or misconfigured), dropped from replies.",
            )?,
        })
    }

    fn register<C: Collector + Clone + 'static>(&self, c: C) -> Built<C> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&self, name: &str, help: &str) -> Built<IntCounter> {
        self.register(IntCounter::with_opts(Opts::new(name, help))?)
    }

    pub fn registration(&self) -> Built<Registration> {
        Ok(Registration {
            relayed: self.counters(
                "nsqgate_registry_commands_total",
                "nsqd commands (IDENTIFY, REGISTER, UNREGISTER, PING) relayed to nsqlookupd, by role.",
                &["role", "command"],
            )?,
            refused: self.counters(
                "nsqgate_registry_refusals_total",
                "Registration steps refused by the guard (or connections the sidecar could not relay), by role and reason.",
                &["role", "reason"],
            )?,
        })
    }

    fn gauge(&self, name: &str, help: &str) -> Built<IntGauge> {
        self.register(IntGauge::with_opts(Opts::new(name, help))?)
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> Built<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> Built<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn histogram(&self, name: &str, help: &str) -> Built<Histogram> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(Histogram::with_opts(opts)?)
    }
}
