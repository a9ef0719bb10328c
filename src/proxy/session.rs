//! One client connection from accept to close: tell TLS-first from NSQ-first by the first byte,
//! read the magic and IDENTIFY, open the upstream leg (now, for a client with an identity; else
//! later, see `pending`), upgrade the client leg in-band exactly as nsqd does (JSON reply in
//! clear, TLS handshake, `OK` inside TLS), then relay. A refusal of IDENTIFY is nsqd's own: its
//! words relayed, or, without an nsqd connection yet, nsqd's checks made here with its ranges.
//! Until the client has an identity its buffers are charged to the shared unauthenticated budget.

mod failure;
mod opening;
mod pending;
mod timing;

use failure::SessionError;

use opening::opening;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn, Instrument};

use crate::auth::Principal;
use crate::error::{self, Classify, FatalReply, Kind};
use crate::limit::conn::ConnPermit;
use crate::net::proxied;
use crate::net::stream::{Io, Replay};
use crate::nsq::{self, DecodedCommand, ErrorCode};
use crate::proxy::budget::Charge;
use crate::proxy::guard::Guard;
use crate::proxy::identify::{self, ClientIdentify};
use crate::proxy::relay::{self, RelayEnd, RelaySettings};
use crate::proxy::upstream::{Routed, UpstreamError};
use crate::proxy::Listener;

/// Added to two heartbeat intervals before an idle client is dropped.
const IDLE_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// The first byte of a TLS handshake record: a client that starts with TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The client leg before and after its TLS upgrade.
enum ClientStream {
    Plain(TcpStream),
    Secure(Box<dyn Io>),
}

impl ClientStream {
    fn io(&mut self) -> &mut (dyn Io + '_) {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Secure(io) => io.as_mut(),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Secure(_))
    }

    fn tls(&self) -> timing::ClientTls {
        match self {
            ClientStream::Plain(_) => timing::ClientTls::Plain,
            ClientStream::Secure(_) => timing::ClientTls::Secure,
        }
    }

    fn into_io(self) -> Box<dyn Io> {
        match self {
            ClientStream::Plain(tcp) => Box::new(tcp),
            ClientStream::Secure(io) => io,
        }
    }
}

/// A connection that finished its opening: both legs ready to relay.
struct Opened {
    /// The heartbeat interval nsqd uses for this client (None: the client disabled them).
    heartbeat: Option<std::time::Duration>,
    client: ClientStream,
    buf: BytesMut,
    /// None while the client must still AUTH: nsqd sees nothing of it before then.
    upstream: Option<Routed>,
    /// The client's IDENTIFY, relayed to nsqd when its connection is opened.
    identify: ClientIdentify,
    /// The identity a verified client certificate gave, if any.
    principal: Option<Principal>,
    /// IDENTIFY was judged here (no nsqd connection then): a later refusal by nsqd means
    /// nsqgate's idea of nsqd's ranges is wrong.
    judged: bool,
}

pub async fn serve(
    listener: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("conn", %peer);
    async move {
        debug!("accepted");
        let counters = listener.shared.counters.clone();
        // Classified once, here, whichever phase the session reached.
        let ended = run(listener, tcp, peer, permit, shutdown).await;
        let ended: &dyn Classify = match &ended {
            Ok(end) => end,
            Err(e) => e,
        };
        error::record(&counters.endings, ended);
    }
    .instrument(span)
    .await
}

async fn run(
    listener: Arc<Listener>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    mut permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) -> Result<RelayEnd, SessionError> {
    tcp.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    if listener
        .shared
        .config
        .proxy_protocol_from
        .contains(&peer.ip())
    {
        let header = proxied::read_header(&mut tcp, &mut buf, peer);
        peer = tokio::time::timeout(listener.shared.config.timeouts.tls_handshake, header)
            .await
            .map_err(|_| SessionError::Timeout("the PROXY header"))??;
        debug!(client = %peer, "PROXY header");
    }
    // Over a limit: closed at once, before any handshake.
    permit.bind_ip(peer.ip())?;
    let mut charge = Some(listener.shared.unauthenticated.charge());
    let opening = open(&listener, tcp, buf, &mut charge);
    let opened = tokio::time::timeout(listener.shared.config.timeouts.identify, opening)
        .await
        .map_err(|_| SessionError::Timeout("IDENTIFY"))??;
    let settings = RelaySettings {
        limits: listener.shared.config.limits,
        // Like nsqd: a client that neither sends nor answers a heartbeat for two intervals is
        // gone. With heartbeats disabled, the configured idle timeout applies.
        idle: idle_timeout(&listener, opened.heartbeat),
        max_frame_size: listener.shared.config.limits.max_frame_size(),
        revocation_grace: listener.shared.config.auth.revocation_grace,
        partial_frame_timeout: listener.shared.config.timeouts.partial_frame,
        write_timeout: listener.shared.config.timeouts.write,
        shutdown: shutdown.clone(),
        auth_timeout: listener.shared.config.timeouts.auth,
    };
    if let Some(principal) = &opened.principal {
        crate::audit::Counters::bump(&listener.shared.counters.auth_success);
        let recorded = crate::audit::record(&crate::audit::Event {
            remote: Some(peer),
            principal: Some(principal),
            action: "auth",
            outcome: "success",
            ..Default::default()
        });
        if recorded.refuse() {
            let mut client = opened.client;
            let text = format!("AUTH failed: {}", crate::proxy::guard::UNRECORDED);
            let e = SessionError::Refused(FatalReply::new(
                Kind::Internal,
                ErrorCode::AuthFailed,
                &text,
            ));
            tell(client.io(), &e).await;
            return Err(e);
        }
        permit.bind_identity(&principal.identity)?;
    }
    let mut guard = Guard::new(listener.shared.clone(), peer, opened.principal, permit);
    let Opened {
        mut client,
        mut buf,
        upstream,
        identify,
        heartbeat,
        judged,
        ..
    } = opened;
    let routed = match upstream {
        Some(routed) => routed,
        None => {
            let waiting = pending::Waiting {
                listener: &listener,
                identify: &identify,
                heartbeat,
                judged,
                shutdown,
            };
            match waiting
                .run(&mut guard, &mut client, &mut buf, &mut charge)
                .await
            {
                Ok(routed) => routed,
                Err(e) => {
                    tell(client.io(), &e).await;
                    return Err(e);
                }
            }
        }
    };
    // From here on the relay's own bounds apply.
    drop(charge);
    // The pool lease (if any) lives until the relay ends, so the member's count is right.
    let Routed { upstream, lease } = routed;
    let relayed = relay::run(client.into_io(), buf, upstream, &mut guard, &settings).await;
    drop(lease);
    Ok(relayed?)
}

/// Runs the opening; on a refusal the client is told why before the connection closes.
/// `buf` holds bytes already read (after a PROXY header), which belong to the client's stream.
async fn open(
    listener: &Listener,
    tcp: TcpStream,
    mut buf: BytesMut,
    charge: &mut Option<Charge>,
) -> Result<Opened, SessionError> {
    let first = match buf.first() {
        Some(byte) => *byte,
        None => {
            let mut first = [0u8; 1];
            let peek = tcp.peek(&mut first);
            let sniffed = tokio::time::timeout(listener.shared.config.timeouts.tls_handshake, peek)
                .await
                .map_err(|_| SessionError::Timeout("the first bytes"))??;
            if sniffed == 0 {
                return Err(SessionError::Closed("the first bytes"));
            }
            first[0]
        }
    };
    let mut principal = None;
    let client = if first == TLS_HANDSHAKE_RECORD {
        let (io, identity) = accept_tls(listener, Replay::new(buf.split().freeze(), tcp)).await?;
        principal = identity;
        ClientStream::Secure(io)
    } else {
        ClientStream::Plain(tcp)
    };
    if principal.is_some() {
        // A certificate named the client: its buffers are no stranger's.
        *charge = None;
    }
    let mut opened = Opened {
        heartbeat: Some(identify::DEFAULT_HEARTBEAT),
        identify: ClientIdentify::default(),
        client,
        buf,
        upstream: None,
        principal,
        judged: false,
    };
    match opening(listener, &mut opened, charge).await {
        Ok(()) => Ok(opened),
        Err(e) => {
            tell(opened.client.io(), &e).await;
            Err(e)
        }
    }
}

/// Tells the client why, if it is the client's to hear, then closes without destroying that
/// last frame.
async fn tell(io: &mut (dyn Io + '_), e: &SessionError) {
    let Some(refusal) = e.told() else {
        return;
    };
    if let Some(frame) = refusal.frame() {
        let _ = io.write_all(frame).await;
        let _ = io.flush().await;
    }
    let _ = io.shutdown().await;
    relay::drain_before_close(io).await;
}

/// How long a quiet client is kept: two missed heartbeats, as nsqd; the configured idle
/// timeout when the client disabled heartbeats.
fn idle_timeout(
    listener: &Listener,
    heartbeat: Option<std::time::Duration>,
) -> std::time::Duration {
    heartbeat.map_or(listener.shared.config.timeouts.idle, |hb| {
        2 * hb + IDLE_SLACK
    })
}

fn require_tls(
    listener: &Listener,
    client: &ClientStream,
    doing: &str,
) -> Result<(), SessionError> {
    if listener.shared.config.client.require_tls && !client.is_tls() {
        let text = format!(
            "TLS is required: cannot {doing}; send IDENTIFY with tls_v1 and feature_negotiation (or connect with TLS)"
        );
        let refusal = FatalReply::new(Kind::Tls, ErrorCode::Invalid, &text);
        return Err(SessionError::Refused(refusal));
    }
    Ok(())
}

/// Opens the client's nsqd connection. nsqd's refusal of the client's settings reaches the
/// client word for word; when nsqgate had judged them acceptable (`judged`), the log says its
/// idea of nsqd's ranges is wrong.
async fn connect_upstream(
    listener: &Listener,
    identify: &ClientIdentify,
    judged: bool,
) -> Result<Routed, SessionError> {
    let upstream = &listener.shared.config.upstream;
    let sent = identify.upstream(
        listener.shared.upstream_tls(),
        &listener.shared.own_metadata,
        upstream.forward_client_metadata,
    );
    match listener.destination.connect(sent).await {
        Ok(routed) => Ok(routed),
        Err(e) => match e.client_refusal() {
            Some((code, text)) => {
                if judged {
                    warn!(upstream = listener.destination.address(), nsqd_said = %format!("{code} {text}").escape_debug(), "nsqd refused an IDENTIFY that nsqgate accepted: its ranges differ from nsqgate's (set [upstream.nsqd_options])");
                }
                let refusal = FatalReply::from_nsqd(Kind::ClientProtocol, code, text);
                Err(SessionError::Refused(refusal))
            }
            None => Err(upstream_unavailable(listener, e)),
        },
    }
}

/// The client learns only that the upstream is unavailable; the log says why.
fn upstream_unavailable(listener: &Listener, cause: UpstreamError) -> SessionError {
    SessionError::NsqdUnavailable {
        address: listener.destination.address(),
        cause,
        at_auth: false,
    }
}

/// Runs the server handshake; a verified client certificate yields the client's identity.
async fn accept_tls<S>(
    listener: &Listener,
    raw: Replay<S>,
) -> Result<(Box<dyn Io>, Option<Principal>), SessionError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let accept = listener.shared.tls_acceptor.accept(raw);
    let tls = tokio::time::timeout(listener.shared.config.timeouts.tls_handshake, accept)
        .await
        .map_err(|_| SessionError::Timeout("the TLS handshake"))?
        .map_err(SessionError::Tls)?;
    // rustls has already verified the chain against the client CA (and CRLs) by now.
    let principal = crate::auth::identity::from_certificate(
        tls.get_ref().1.peer_certificates(),
        &listener.shared.config.client.cert_identity_order,
    );
    Ok((Box::new(tls), principal))
}

/// The next command; while the client has no identity (`charge`), the buffer's capacity (the
/// codec reserves a declared body before reading it) is charged to the shared budget first.
async fn read_command(
    listener: &Listener,
    io: &mut (dyn Io + '_),
    buf: &mut BytesMut,
    charge: &mut Option<Charge>,
) -> Result<DecodedCommand, SessionError> {
    loop {
        match nsq::decode_command(buf, &listener.shared.config.limits) {
            Ok(Some(decoded)) => return Ok(decoded),
            Ok(None) => {}
            Err(e) => return Err(SessionError::Refused(FatalReply::malformed(&e))),
        }
        if let Some(charge) = charge {
            // tokio's read_buf reserves a little when the buffer is full.
            let wanted = buf.capacity().max(buf.len() + 64);
            charge.hold(wanted).map_err(|over| {
                let text = format!("{over} (try again later)");
                SessionError::Refused(FatalReply::new(Kind::Limit, ErrorCode::BadBody, &text))
            })?;
        }
        if io.read_buf(buf).await? == 0 {
            return Err(SessionError::Closed("IDENTIFY"));
        }
    }
}

async fn fill(
    io: &mut (dyn Io + '_),
    buf: &mut BytesMut,
    want: usize,
    during: &'static str,
) -> Result<(), SessionError> {
    while buf.len() < want {
        if io.read_buf(buf).await? == 0 {
            return Err(SessionError::Closed(during));
        }
    }
    Ok(())
}
