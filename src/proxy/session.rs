//! One client connection from accept to close, as a `Session` whose methods are the phases of
//! `LIFECYCLE.md` in order: `Session::accept` (PROXY header, caps per IP), `Session::open`
//! (TLS from the first byte, magic, IDENTIFY and its reply, the in-band upgrade: `opening`),
//! `Session::admit` (the guard, with a certificate's identity audited and capped),
//! `Session::wait_for_nsqd` (no nsqd connection yet: `pending`) and `Session::relay`.
//! `Session::refuse` is the one way the client is told why before its connection closes
//! (inside the relay, a refusal waits for the replies owed before it).
//!
//! A refusal of IDENTIFY is nsqd's own: its words relayed, or, without an nsqd connection yet,
//! nsqd's checks made here with its ranges. Until the client has an identity its buffers are
//! charged to the shared unauthenticated budget.

mod client;
mod failure;
mod opening;
mod pending;
mod timing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn, Instrument};

use crate::auth::Principal;
use crate::cluster::slots::Full;
use crate::config::Config;
use crate::error::{self, Classify, FatalReply, Kind};
use crate::limit::conn::{ConnPermit, Refusal};
use crate::limit::memory::Charge;
use crate::net::proxied;
use crate::net::stream::Io;
use crate::nsq::ErrorCode;
use crate::proxy::guard::{identity_refusal, AdmittedBy, Guard, Verdict, UNRECORDED};
use crate::proxy::identify::{self, ClientIdentify};
use crate::proxy::quarantine::Quarantiner;
use crate::proxy::relay::{self, RelayEnd, RelaySettings};
use crate::proxy::upstream::{Lease, Routed, Upstream, UpstreamError};
use crate::proxy::Listener;

use client::ClientStream;
use failure::SessionError;
use opening::Opened;

/// Added to two heartbeat intervals before an idle client is dropped.
const IDLE_SLACK: Duration = Duration::from_secs(1);

/// One client connection and what is known about it so far, carried from phase to phase.
struct Session {
    listener: Arc<Listener>,
    /// The configuration in force when the client connected: a reload applies to the
    /// connections accepted after it.
    config: Arc<Config>,
    /// The client's address: the TCP peer's, or the one a trusted PROXY header names.
    peer: SocketAddr,
    client: ClientStream,
    /// Bytes read from the client and not handled yet.
    buf: BytesMut,
    /// The identity a verified client certificate gave; handed to the guard at `admit`.
    principal: Option<Principal>,
    /// The client's IDENTIFY (nsqd's defaults until it sends one), relayed to nsqd when the
    /// client's nsqd connection opens.
    identify: ClientIdentify,
    /// The heartbeat interval nsqd uses for this client (None: the client disabled them).
    heartbeat: Option<Duration>,
    /// IDENTIFY was judged here (no nsqd connection then): a later refusal by nsqd means
    /// nsqgate's idea of nsqd's ranges is wrong.
    judged: bool,
    /// The client's share of the unauthenticated budget, until it has an identity.
    charge: Option<Charge>,
    shutdown: watch::Receiver<bool>,
}

/// The connection's task. Not an `async fn`: its arguments would be kept in the task's state
/// next to `run`'s own copies for the connection's whole life.
pub fn serve(
    listener: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let span = tracing::info_span!("conn", %peer);
    let metrics = listener.shared.metrics.clone();
    // A combinator, not an async block: awaiting `run` there would keep a second copy of it.
    run(listener, tcp, peer, permit, shutdown, span.clone()).map(move |ended| {
        // Classified once, here, whichever phase the session reached.
        let ended: &dyn Classify = match &ended {
            Ok(end) => end,
            Err(e) => e,
        };
        span.in_scope(|| error::record(&metrics, ended));
    })
}

/// The phases, in LIFECYCLE order. Every phase before the relay runs boxed and hands over
/// only what the relay needs (`Relaying`): a task is as large as its largest state, and the
/// opening's (TLS accept, IDENTIFY, nsqd's handshake) or the session's own would otherwise be
/// carried by every idle connection for its whole life. Not an `async fn`, whose arguments
/// would be kept likewise.
///
/// The phases run inside the connection's span; the relay does not: entering a span at every
/// poll cost ~1,900 instructions per relayed message (docs/perf-profile.md), so the relay
/// names the span as the parent of the few events it logs.
fn run(
    listener: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
    span: tracing::Span,
) -> impl Future<Output = Result<RelayEnd, SessionError>> {
    let admitted = Box::pin(admitted(listener, tcp, peer, permit, shutdown).instrument(span));
    async move {
        // Its own statement: the phases' box is freed at its end, not when the relay ends.
        let relaying = admitted.await?;
        relaying.run().await
    }
}

/// The phases up to the relay: the session accepted, opened and admitted, its nsqd connection
/// made.
async fn admitted(
    listener: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) -> Result<Relaying, SessionError> {
    debug!("accepted");
    let accept = Session::accept(listener, tcp, peer, &mut permit, shutdown);
    let session = Box::pin(accept).await?;
    let deadline = session.config().timeouts.identify;
    let Opened {
        mut session,
        upstream,
    } = Box::pin(tokio::time::timeout(deadline, session.open()))
        .await
        .map_err(|_| SessionError::Timeout("IDENTIFY"))??;
    let guard = session.admit(permit);
    let mut guard = session.or_refuse(guard).await?;
    // A certificate's identity counts against the cap over every replica, as an AUTH's does.
    let claim = guard.claim_shared_identity_slot(AdmittedBy::Certificate);
    if let Some(Verdict::Refuse(refusal)) = Box::pin(claim).await {
        return Err(session.refuse(SessionError::Refused(refusal)).await);
    }
    let routed = match upstream {
        Some(routed) => routed,
        None => {
            let routed = Box::pin(session.wait_for_nsqd(&mut guard)).await;
            session.or_refuse(routed).await?
        }
    };
    Ok(session.into_relay(routed, guard))
}

/// What the relay needs of a session, and nothing else: it is held for the connection's life.
struct Relaying {
    client: Box<dyn Io>,
    /// Bytes read from the client and not handled yet.
    buf: BytesMut,
    upstream: Upstream,
    /// The pool lease (if any) lives until the relay ends, so the member's count is right.
    lease: Option<Lease>,
    guard: Guard,
    settings: RelaySettings,
}

// === impl Relaying ===

impl Relaying {
    /// The relay, until either side ends the connection. Not an `async fn`: its argument
    /// would be kept twice in the task's state (as the argument and as the body's local).
    fn run(self) -> impl Future<Output = Result<RelayEnd, SessionError>> {
        let Relaying {
            client,
            buf,
            upstream,
            lease,
            mut guard,
            settings,
        } = self;
        async move {
            let relayed = relay::run(client, buf, upstream, &mut guard, &settings).await;
            drop(lease);
            Ok(relayed?)
        }
    }
}

// === impl Session ===

impl Session {
    /// Accept: the PROXY header from a trusted balancer, then the caps that count the
    /// client's address. Over a cap the connection is closed at once, before any handshake.
    async fn accept(
        listener: Arc<Listener>,
        mut tcp: TcpStream,
        mut peer: SocketAddr,
        permit: &mut ConnPermit,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Session, SessionError> {
        tcp.set_nodelay(true)?;
        let config = listener.shared.config();
        let mut buf = BytesMut::new();
        if config.proxy_protocol_from.contains(&peer.ip()) {
            let header = proxied::read_header(&mut tcp, &mut buf, peer);
            peer = tokio::time::timeout(config.timeouts.tls_handshake, header)
                .await
                .map_err(|_| SessionError::Timeout("the PROXY header"))??;
            debug!(client = %peer, "PROXY header");
        }
        permit.bind_ip(peer.ip())?;
        let shared = &listener.shared;
        if let (Some(slots), Some(cap)) = (&shared.slots, config.connections.max_per_ip) {
            let key = format!("conns:ip:{}", peer.ip());
            match slots.claim(&key, cap).await {
                Ok(Some(slot)) => permit.keep(slot),
                Ok(None) => {}
                Err(Full::Cap) => {
                    shared.conns.count_refusal(Refusal::SharedPerIp);
                    return Err(Refusal::SharedPerIp.into());
                }
                Err(Full::Unavailable) => return Err(SessionError::SharedStateUnavailable),
            }
        }
        Ok(Session {
            charge: Some(listener.shared.unauthenticated.charge()),
            peer,
            client: ClientStream::Plain(tcp),
            buf,
            principal: None,
            identify: ClientIdentify::default(),
            heartbeat: Some(identify::DEFAULT_HEARTBEAT),
            judged: false,
            shutdown,
            config,
            listener,
        })
    }

    /// The guard that judges every command from now on. A certificate's identity is
    /// authenticated already: audited (refused if the audit log must and cannot record it)
    /// and counted against its identity's cap.
    fn admit(&mut self, mut permit: ConnPermit) -> Result<Guard, SessionError> {
        if let Some(principal) = &self.principal {
            let method = crate::metrics::method_label(principal.method);
            self.listener.shared.metrics.authentication(method, true);
            let recorded = crate::audit::record(&crate::audit::Event {
                remote: Some(self.peer),
                principal: Some(principal),
                action: "auth",
                outcome: "success",
                ..Default::default()
            });
            if recorded.refuse() {
                let text = format!("AUTH failed: {UNRECORDED}");
                let refusal = FatalReply::new(Kind::Internal, ErrorCode::AuthFailed, &text);
                return Err(SessionError::Refused(refusal));
            }
            // Told in the words a refused nsqd connection uses for a client without AUTH.
            if let Err(refusal) = permit.bind_identity(&principal.identity) {
                let (code, text) = identity_refusal(AdmittedBy::Certificate, &refusal.to_string());
                let refusal = FatalReply::new(Kind::Limit, code, &text);
                return Err(SessionError::Refused(refusal));
            }
        }
        let principal = self.principal.take();
        Ok(Guard::new(
            self.listener.shared.clone(),
            self.peer,
            principal,
            permit,
        ))
    }

    /// The session ends here, before the relay starts: what the relay does not need (the
    /// client's IDENTIFY, the unauthenticated budget's charge: from here on the relay's own
    /// bounds apply) is not kept for the connection's life.
    fn into_relay(self, routed: Routed, guard: Guard) -> Relaying {
        let settings = self.relay_settings();
        let Routed { upstream, lease } = routed;
        Relaying {
            client: self.client.into_io(),
            buf: self.buf,
            upstream,
            lease,
            guard,
            settings,
        }
    }

    /// Tells the client why (when it is the client's to hear) and closes without destroying
    /// that last frame: the one way a client is refused outside the relay.
    async fn refuse(&mut self, e: SessionError) -> SessionError {
        if let Some(refusal) = e.told() {
            Box::pin(self.client.tell(&refusal)).await;
        }
        e
    }

    /// `result`, after telling the client why if it is a refusal.
    async fn or_refuse<T>(&mut self, result: Result<T, SessionError>) -> Result<T, SessionError> {
        match result {
            Ok(value) => Ok(value),
            // Boxed: inline, the refusal's state would sit next to `value` in every caller's.
            Err(e) => Err(Box::pin(self.refuse(e)).await),
        }
    }

    fn relay_settings(&self) -> RelaySettings {
        let config = self.config();
        RelaySettings {
            limits: config.limits,
            idle: self.idle_timeout(),
            max_frame_size: config.limits.max_frame_size(),
            revocation_grace: config.auth.revocation_grace,
            partial_frame_timeout: config.timeouts.partial_frame,
            write_timeout: config.timeouts.write,
            shutdown: self.shutdown.clone(),
            auth_timeout: config.timeouts.auth,
            metrics: self.listener.shared.metrics.clone(),
            integrity: config.integrity.clone(),
            quarantiner: self.quarantiner(),
            // Called inside the phases, which run in the connection's span.
            span: tracing::Span::current(),
        }
    }

    /// Copies withheld deliveries to nsqd with nsqgate's own IDENTIFY; none unless a topic is
    /// signed.
    fn quarantiner(&self) -> Option<Arc<Quarantiner>> {
        if self.config().integrity.is_empty() {
            return None;
        }
        let listener = &self.listener;
        let shared = &listener.shared;
        let identify = ClientIdentify::default().upstream(
            shared.upstream_tls(),
            &listener.own_metadata,
            false,
        );
        let max_frame_size = self.config().limits.max_frame_size();
        let destination = listener.destination.clone();
        let metrics = shared.metrics.clone();
        let quarantiner = Quarantiner::new(destination, identify, max_frame_size, metrics);
        Some(Arc::new(quarantiner))
    }

    /// How long a quiet client is kept: like nsqd, two missed heartbeats; the configured idle
    /// timeout when the client disabled heartbeats.
    fn idle_timeout(&self) -> Duration {
        let idle = self.config().timeouts.idle;
        self.heartbeat.map_or(idle, |hb| 2 * hb + IDLE_SLACK)
    }

    fn config(&self) -> &Config {
        &self.config
    }

    /// Takes `principal` as who the client is; its buffers are no stranger's any more.
    fn identified(&mut self, principal: Option<Principal>) {
        if principal.is_some() {
            self.charge = None;
        }
        self.principal = principal;
    }

    /// Refused unless the client leg is TLS, when TLS is required.
    fn require_tls(&self, doing: &str) -> Result<(), SessionError> {
        if !self.config().client.require_tls || self.client.is_tls() {
            return Ok(());
        }
        let text = format!(
            "TLS is required: cannot {doing}; send IDENTIFY with tls_v1 and feature_negotiation (or connect with TLS)"
        );
        let refusal = FatalReply::new(Kind::Tls, ErrorCode::Invalid, &text);
        Err(SessionError::Refused(refusal))
    }

    /// Opens the client's nsqd connection with its IDENTIFY. nsqd's refusal of the client's
    /// settings reaches the client word for word; when nsqgate had judged them acceptable, the
    /// log says its idea of nsqd's ranges is wrong.
    async fn connect_nsqd(&mut self) -> Result<Routed, SessionError> {
        let listener = &self.listener;
        let shared = &listener.shared;
        let forward = shared.config().upstream.forward_client_metadata;
        let sent = self
            .identify
            .upstream(shared.upstream_tls(), &listener.own_metadata, forward);
        let e = match listener.destination.connect(sent).await {
            Ok(routed) => return Ok(routed),
            Err(e) => e,
        };
        let Some((code, text)) = e.client_refusal() else {
            return Err(self.nsqd_unavailable(e));
        };
        if self.judged {
            warn!(upstream = listener.destination.address(), nsqd_said = %format!("{code} {text}").escape_debug(), "nsqd refused an IDENTIFY that nsqgate accepted: its ranges differ from nsqgate's (set [upstream.nsqd_options])");
        }
        let refusal = FatalReply::from_nsqd(Kind::ClientProtocol, code, text);
        Err(SessionError::Refused(refusal))
    }

    /// The client learns only that nsqd is unavailable; the log says why.
    fn nsqd_unavailable(&self, cause: UpstreamError) -> SessionError {
        SessionError::NsqdUnavailable {
            address: self.listener.destination.address(),
            cause,
            at_auth: false,
        }
    }
}

#[cfg(test)]
mod tests;
