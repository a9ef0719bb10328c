//! The NSQ TCP listener and its sessions. All network I/O of the TCP path lives below here.

pub mod budget;
pub mod guard;
pub mod identify;
pub mod learn;
pub mod relay;
pub mod session;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::auth::jwt::JwtVerifier;
use crate::config::Config;
use crate::limit::conn::ConnLimits;
use crate::limit::RateLimits;
use crate::policy::Policy;
use crate::tls::{self, TlsError};
use upstream::{Connector, Route, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("JWT keys rejected: {0}")]
    Jwt(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the ready file {}: {source}", path.display())]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What every session of one listener shares: configuration and both legs' TLS set-ups.
#[derive(Clone)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub tls_acceptor: TlsAcceptor,
    /// The client-certificate verifier behind `tls_acceptor` (CRLs re-read on reload).
    pub client_certs: Option<Arc<tls::ClientCerts>>,
    /// Where this listener's clients go: `[upstream]`, a `[[nodes]]` entry, or the pool.
    pub route: Route,
    /// Verifying TLS toward nsqd, shared by every route.
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// The live policy; a reload sends a new version and sessions re-check against it.
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Present when `[auth.jwt]` is configured.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Publish token buckets, shared by every connection (and the HTTP front).
    pub rates: Arc<RateLimits>,
    /// Quotas on new topic and channel names, shared likewise.
    pub names: Arc<crate::limit::names::NameQuotas>,
    /// Open-connection caps, shared by every listener.
    pub conns: Arc<ConnLimits>,
    /// Security decisions counted for `/metrics`.
    pub counters: Arc<crate::audit::Counters>,
    /// nsqd's reply to an IDENTIFY that asks for nothing and the ranges it applies, learned
    /// once: nsqgate answers in nsqd's place a client that has no nsqd connection yet.
    learned: Arc<tokio::sync::OnceCell<learn::Learned>>,
    /// nsqd's HTTP API for `[upstream]` (from `[http.nsqd]`), asked for IDENTIFY ranges.
    nsqd_http: Option<Arc<crate::http::upstream::HttpUpstream>>,
    /// What nsqd records about each connection, unless the client's is forwarded.
    pub own_metadata: Arc<identify::Metadata>,
    /// Bytes held in command buffers by connections that have no identity yet, all listeners.
    pub unauthenticated: Arc<budget::Budget>,
}

// === impl Gateway ===

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Result<Gateway, StartError> {
        let server = tls::server_tls(&config.client)?;
        let upstream_tls = match &config.upstream.tls {
            Some(settings) => Some(tls::upstream_config(settings)?),
            None => None,
        };
        // nsqd's largest frame is a message at its own limit plus the 26-byte header; allow a
        // body-sized frame so an nsqd with a larger --max-msg-size is not cut off mid-stream.
        let max_frame = config
            .limits
            .max_body_size
            .max(config.limits.max_msg_size)
            .saturating_add(64);
        let conns = ConnLimits::new(config.connections.clone());
        let upstream = Connector::new(
            &config.upstream,
            upstream_tls.clone(),
            config.timeouts.upstream_connect,
            max_frame,
            conns.clone(),
        )?;
        let jwt = match &config.auth.jwt {
            Some(settings) => Some(Arc::new(
                JwtVerifier::new(settings).map_err(|e| StartError::Jwt(e.to_string()))?,
            )),
            None => None,
        };
        let nsqd_http = nsqd_http(&config, upstream_tls.clone())?;
        Ok(Gateway {
            rates: Arc::new(RateLimits::new(config.rates.clone())),
            learned: Arc::default(),
            nsqd_http,
            own_metadata: Arc::new(identify::Metadata::own(&own_hostname())),
            unauthenticated: budget::Budget::new(config.max_unauthenticated_memory),
            names: Arc::new(crate::limit::names::NameQuotas::new(config.name_quotas)),
            counters: Arc::default(),
            conns,
            config,
            tls_acceptor: TlsAcceptor::from(server.config),
            client_certs: server.client_certs,
            route: Route::Node(upstream),
            upstream_tls,
            policy,
            jwt,
        })
    }

    pub fn upstream_tls(&self) -> bool {
        self.config.upstream.tls.is_some()
    }

    /// What nsqd does with IDENTIFY: its reply to a probe (over a verified connection that is
    /// closed right after) and the ranges it applies, learned once and remembered.
    pub async fn learned(&self) -> Result<&learn::Learned, UpstreamError> {
        self.learned
            .get_or_try_init(|| async {
                let probe = identify::ClientIdentify::default().upstream(
                    self.upstream_tls(),
                    &self.own_metadata,
                    false,
                );
                let routed = self.route.connect(probe).await?;
                let reply = routed.upstream.identify_reply;
                let told = learn::ask(self.nsqd_http.as_deref()).await;
                let ranges = learn::ranges(&reply, &told, &self.config.upstream.nsqd_options);
                info!(
                    upstream = self.route.address(),
                    ?ranges,
                    "learned nsqd's IDENTIFY ranges"
                );
                Ok(learn::Learned { reply, ranges })
            })
            .await
    }

    /// A connector to one nsqd with the shared upstream settings.
    pub fn connector(
        &self,
        upstream: &crate::config::UpstreamConfig,
    ) -> Result<Connector, StartError> {
        let max_frame = self.route.max_frame_size();
        Ok(Connector::new(
            upstream,
            self.upstream_tls.clone(),
            self.config.timeouts.upstream_connect,
            max_frame,
            self.conns.clone(),
        )?)
    }

    /// The same gateway (policy, identity, limits) sending its clients somewhere else.
    pub fn with_route(&self, route: Route) -> Gateway {
        Gateway {
            route,
            // Another nsqd may be configured differently: learn its defaults afresh; nsqgate
            // knows no HTTP address for it, so its ranges are nsqd_options or the defaults.
            learned: Arc::default(),
            nsqd_http: None,
            ..self.clone()
        }
    }
}

/// nsqd's HTTP API as the `[http.nsqd]` front reaches it, if that front is configured.
fn nsqd_http(
    config: &Config,
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Option<Arc<crate::http::upstream::HttpUpstream>>, StartError> {
    let Some(front) = config.http.as_ref().and_then(|h| h.nsqd.as_ref()) else {
        return Ok(None);
    };
    let tls = match (&config.upstream.tls, upstream_tls) {
        (Some(settings), Some(client)) if front.upstream_tls => {
            let name = rustls::pki_types::ServerName::try_from(settings.server_name.clone())
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            Some((client, name))
        }
        _ => None,
    };
    let timeout = config.timeouts.upstream_connect;
    Ok(Some(Arc::new(crate::http::upstream::HttpUpstream::new(
        front.upstream.clone(),
        tls,
        timeout,
        timeout,
    ))))
}

/// The host nsqgate runs on, as nsqd's /stats should show it.
fn own_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "nsqgate".to_owned())
}

/// A bound NSQ TCP listener.
pub struct Listener {
    gateway: Arc<Gateway>,
    listener: TcpListener,
}

impl Listener {
    pub async fn bind(gateway: Arc<Gateway>, address: SocketAddr) -> Result<Listener, StartError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Bind { address, source })?;
        Ok(Listener { gateway, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown` turns true, then waits for open sessions to end.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut sessions = JoinSet::new();
        info!(address = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(), upstream = self.gateway.route.address(), "listening for NSQ clients");
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => match self.gateway.conns.admit() {
                        Ok(permit) => {
                            sessions.spawn(session::serve(
                                self.gateway.clone(),
                                tcp,
                                peer,
                                permit,
                                shutdown.clone(),
                            ));
                        }
                        // Closed at once: no handshake, no buffer, nothing held.
                        Err(_) => drop(tcp),
                    },
                    Err(e) => {
                        // Out of file descriptors, usually: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        // Sessions stop reading new commands, hand the client every reply nsqd still owes,
        // then close; whatever has not finished by the deadline is cut off.
        info!(
            open = sessions.len(),
            "stopped accepting; draining sessions"
        );
        let drained = tokio::time::timeout(self.gateway.config.timeouts.shutdown, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            info!(
                open = sessions.len(),
                "drain deadline passed; closing the rest"
            );
        }
        sessions.shutdown().await;
    }
}
