//! The process-wide core every listener shares (NSQ TCP and HTTP alike): configuration, the
//! live policy, the JWT verifier, limits, metrics and readiness, and both legs' TLS set-ups.
//! Built once at start; what differs per listener (where its clients go) lives on the
//! listener. No I/O here beyond reading the TLS files once.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::Readiness;
use crate::app::StartError;
use crate::auth::jwt::{JwtVerifier, LiveJwt};
use crate::auth::{AuthError, Principal};
use crate::cluster::revocations::Revoked;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::limit::conn::ConnLimits;
use crate::limit::memory::Budget;
use crate::limit::names::NameQuotas;
use crate::limit::RateLimits;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::swap::Swap;
use crate::tls;

/// What every listener of one process shares.
pub struct Shared {
    /// The configuration in force ([`Shared::config`]); a reload replaces what may change at
    /// run time (`crate::reload`).
    config: Swap<Config>,
    /// The TLS set-ups in force: the client leg of every listener (the NSQ upgrade and the
    /// HTTPS fronts, with the client CA and CRLs), and verifying TLS toward nsqd (the
    /// `[upstream]` CA), shared by every route and the nsqd HTTP front. Replaced on reload.
    pub tls: tls::LiveTls,
    /// The live policy; a reload sends a new version and connections re-check against it.
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Present when `[auth.jwt]` is configured; replaced on reload ([`Shared::jwt`]).
    pub jwt: Arc<LiveJwt>,
    /// Publish token buckets, shared by every connection (TCP and HTTP).
    pub rates: Arc<RateLimits>,
    /// Quotas on new topic and channel names, shared likewise.
    pub names: Arc<NameQuotas>,
    /// Open-connection caps, shared by every listener.
    pub conns: Arc<ConnLimits>,
    /// Every Prometheus metric of the process (`/metrics` on the admin listener and the
    /// HTTP fronts).
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports: failed components (a refused reload) and nsqd probes.
    pub readiness: Arc<Readiness>,
    /// Bytes held in command buffers by connections that have no identity yet, all listeners.
    pub unauthenticated: Arc<Budget>,
    /// Redis shared with the other replicas, when `[cluster]` names one.
    pub cluster: Option<Arc<Cluster>>,
    /// The connection caps' slots shared with the other replicas, with `[cluster]`.
    pub slots: Option<Arc<crate::cluster::slots::SharedSlots>>,
    /// The operators' revocations in force (`nsqgate revoke`), kept current from Redis by
    /// `cluster::feed`; live connections follow it. Empty for ever without `[cluster]`.
    pub revocations: watch::Sender<Arc<Revoked>>,
}

// === impl Shared ===

impl Shared {
    pub fn new(
        config: Arc<Config>,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Result<Shared, StartError> {
        let tls = tls::LiveTls::load(
            &config.client,
            config.upstream.tls.as_ref(),
            config.admin.as_ref().and_then(|admin| admin.tls.as_ref()),
        )?;
        let jwt = match &config.auth.jwt {
            Some(settings) => Some(Arc::new(JwtVerifier::new(settings)?)),
            None => None,
        };
        let jwt = Arc::new(LiveJwt::new(Arc::new(jwt)));
        let metrics = Metrics::new()?;
        record_certificates(&metrics, &config);
        let readiness = Arc::<Readiness>::default();
        let cluster = match &config.cluster {
            Some(settings) => Some(Cluster::new(
                settings.clone(),
                metrics.clone(),
                readiness.clone(),
            )?),
            None => None,
        };
        let mut rates = RateLimits::new(config.rates.clone());
        if let Some(cluster) = &cluster {
            rates = rates.shared(crate::cluster::quota::SharedQuotas::new(cluster.clone()));
        }
        Ok(Shared {
            slots: cluster.clone().map(crate::cluster::slots::SharedSlots::new),
            cluster,
            revocations: watch::Sender::new(Arc::default()),
            rates: Arc::new(rates),
            names: Arc::new(NameQuotas::new(config.name_quotas)),
            conns: ConnLimits::new(config.connections.clone()),
            metrics,
            readiness,
            unauthenticated: Budget::new(config.max_unauthenticated_memory),
            tls,
            policy,
            jwt,
            config: Swap::new(config),
        })
    }

    /// The configuration in force now. A session takes it once, at accept, and keeps it.
    pub fn config(&self) -> Arc<Config> {
        self.config.load()
    }

    /// Puts a reloaded configuration in force for what reads it from now on.
    pub fn set_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// The JWT verifier in force, when `[auth.jwt]` is configured.
    pub fn jwt(&self) -> Option<Arc<JwtVerifier>> {
        Option::clone(&self.jwt.load())
    }

    /// Refuses `principal` when an operator revoked its credential (`nsqgate revoke`).
    pub fn not_revoked(&self, principal: Principal) -> Result<Principal, AuthError> {
        let revoked = self.revocations.borrow();
        match revoked.matching(&principal, std::time::SystemTime::now()) {
            Some(target) => Err(AuthError::Revoked(target.to_string())),
            None => Ok(principal),
        }
    }

    /// Whether nsqgate speaks TLS to nsqd (`[upstream] tls`).
    pub fn upstream_tls(&self) -> bool {
        self.config.load().upstream.tls.is_some()
    }

    /// The verifying set-up for `[upstream]`'s nsqd: its CA and the name its certificate must
    /// carry. None when TLS toward nsqd is off.
    pub fn tls_to_upstream(&self) -> Option<tls::ToNsqd> {
        let config = self.config.load();
        let settings = config.upstream.tls.as_ref()?;
        self.tls.to_nsqd(settings.server_name.clone())
    }
}

impl Shared {
    /// Sets the certificate expiry metrics from the files the configuration in force names:
    /// at start, and after a reload put new certificates in force.
    pub fn record_certificates(&self) {
        record_certificates(&self.metrics, &self.config());
    }
}

/// Sets the expiry metric of every certificate file the configuration names. A file that
/// cannot be read here failed the TLS set-up already.
fn record_certificates(metrics: &Metrics, config: &Config) {
    for (which, path) in crate::metrics::configured_certificates(config) {
        if let Ok(certs) = tls::load_certs(path) {
            metrics.certificate_loaded(which, &certs);
        }
    }
}
