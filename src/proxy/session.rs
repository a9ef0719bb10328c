//! One client connection from accept to close: tell TLS-first from NSQ-first by the first byte,
//! read the magic and IDENTIFY, open the upstream leg, upgrade the client leg in-band exactly as
//! nsqd does (JSON reply in clear, TLS handshake, `OK` inside TLS), then relay.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::auth::Principal;
use crate::config::ClientCertMode;
use crate::limit::conn::{ConnPermit, Refusal};
use crate::nsq::{self, Command, DecodedCommand, ErrorCode};
use crate::proxy::guard::{Guard, Verdict};
use crate::proxy::identify::{self, ClientIdentify, ClientLeg, IdentifyError};
use crate::proxy::proxied::{self, ProxyHeaderError};
use crate::proxy::relay::{self, RelaySettings};
use crate::proxy::stream::{Io, Replay};
use crate::proxy::upstream::{Routed, UpstreamError};
use crate::proxy::Gateway;

/// Added to two heartbeat intervals before an idle client is dropped.
const IDLE_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// The first byte of a TLS handshake record: a client that starts with TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// Told to the client as an NSQ error frame, then the connection closes.
    #[error("{code} {text}")]
    Refuse { code: ErrorCode, text: String },
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("client TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client did not finish {0} in time")]
    Timeout(&'static str),
    #[error("client closed the connection during {0}")]
    Closed(&'static str),
    #[error("refused {0} before AUTH")]
    Refused(&'static str),
    #[error("connection limit: {0}")]
    Limited(#[from] Refusal),
    #[error("{0}")]
    ProxyHeader(#[from] ProxyHeaderError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

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
}

pub async fn serve(
    gateway: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("conn", %peer);
    async move {
        debug!("accepted");
        match run(gateway, tcp, peer, permit, shutdown).await {
            Ok(()) => debug!("closed"),
            Err(e) => info!(error = %e, "connection ended"),
        }
    }
    .instrument(span)
    .await
}

async fn run(
    gateway: Arc<Gateway>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    mut permit: ConnPermit,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SessionError> {
    tcp.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    if gateway.config.proxy_protocol_from.contains(&peer.ip()) {
        let header = proxied::read_header(&mut tcp, &mut buf, peer);
        peer = tokio::time::timeout(gateway.config.timeouts.tls_handshake, header)
            .await
            .map_err(|_| SessionError::Timeout("the PROXY header"))??;
        debug!(client = %peer, "PROXY header");
    }
    // Over a limit: closed at once, before any handshake.
    permit.bind_ip(peer.ip())?;
    let opened = tokio::time::timeout(gateway.config.timeouts.identify, open(&gateway, tcp, buf))
        .await
        .map_err(|_| SessionError::Timeout("IDENTIFY"))??;
    let settings = RelaySettings {
        limits: gateway.config.limits,
        // Like nsqd: a client that neither sends nor answers a heartbeat for two intervals is
        // gone. With heartbeats disabled, the configured idle timeout applies.
        idle: opened
            .heartbeat
            .map_or(gateway.config.timeouts.idle, |hb| 2 * hb + IDLE_SLACK),
        max_frame_size: gateway.route.max_frame_size(),
        revocation_grace: gateway.config.auth.revocation_grace,
        partial_frame_timeout: gateway.config.timeouts.partial_frame,
        write_timeout: gateway.config.timeouts.write,
        shutdown,
        auth_timeout: gateway.config.timeouts.auth,
    };
    if let Some(principal) = &opened.principal {
        crate::audit::Counters::bump(&gateway.counters.auth_success);
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
            refuse(client.io(), &nsq::error_frame(ErrorCode::AuthFailed, &text)).await;
            return Err(SessionError::Refused(
                "a certificate identity (audit log failing)",
            ));
        }
        permit.bind_identity(&principal.identity)?;
    }
    let mut guard = Guard::new(gateway.clone(), peer, opened.principal, permit);
    let Opened {
        mut client,
        mut buf,
        upstream,
        identify,
        ..
    } = opened;
    let routed = match upstream {
        Some(routed) => routed,
        None => {
            let authenticated =
                authenticate_first(&gateway, &mut guard, &mut client, &mut buf, &identify).await;
            match authenticated {
                Ok(routed) => routed,
                Err(SessionError::Refuse { code, text }) => {
                    refuse(client.io(), &nsq::error_frame(code, &text)).await;
                    return Err(SessionError::Refuse { code, text });
                }
                Err(e) => return Err(e),
            }
        }
    };
    // The pool lease (if any) lives until the relay ends, so the member's count is right.
    let Routed { upstream, lease } = routed;
    let relayed = relay::run(client.into_io(), buf, upstream, &mut guard, &settings).await;
    drop(lease);
    relayed?;
    Ok(())
}

/// Runs the opening; on a refusal the client is told why before the connection closes.
/// `buf` holds bytes already read (after a PROXY header), which belong to the client's stream.
async fn open(
    gateway: &Gateway,
    tcp: TcpStream,
    mut buf: BytesMut,
) -> Result<Opened, SessionError> {
    let first = match buf.first() {
        Some(byte) => *byte,
        None => {
            let mut first = [0u8; 1];
            let peek = tcp.peek(&mut first);
            let sniffed = tokio::time::timeout(gateway.config.timeouts.tls_handshake, peek)
                .await
                .map_err(|_| SessionError::Timeout("the first bytes"))??;
            if sniffed == 0 {
                return Err(SessionError::Closed("the first bytes"));
            }
            first[0]
        }
    };
    let mut principal = None;
    let mut client = if first == TLS_HANDSHAKE_RECORD {
        let (io, identity) = accept_tls(gateway, Replay::new(buf.split().freeze(), tcp)).await?;
        principal = identity;
        ClientStream::Secure(io)
    } else {
        ClientStream::Plain(tcp)
    };
    match opening(gateway, &mut client, &mut buf, &mut principal).await {
        Ok((upstream, heartbeat, identify)) => Ok(Opened {
            heartbeat,
            identify,
            client,
            buf,
            upstream,
            principal,
        }),
        Err(SessionError::Refuse { code, text }) => {
            refuse(client.io(), &nsq::error_frame(code, &text)).await;
            Err(SessionError::Refuse { code, text })
        }
        Err(e) => Err(e),
    }
}

/// Tells the client why, then closes without destroying that last frame.
async fn refuse(io: &mut (dyn Io + '_), frame: &[u8]) {
    let _ = io.write_all(frame).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    relay::drain_before_close(io).await;
}

/// The client must AUTH before anything else, and nsqgate opens its nsqd connection only
/// once AUTH has succeeded (and before answering it, so an AUTH reply means the connection
/// works). NOP is allowed meanwhile; anything else is refused as nsqd refuses it.
async fn authenticate_first(
    gateway: &Gateway,
    guard: &mut Guard,
    client: &mut ClientStream,
    buf: &mut BytesMut,
    identify: &ClientIdentify,
) -> Result<Routed, SessionError> {
    let deadline = tokio::time::Instant::now() + gateway.config.timeouts.auth;
    loop {
        let next = read_command(gateway, client.io(), buf);
        let decoded = match tokio::time::timeout_at(deadline, next).await {
            Ok(decoded) => decoded?,
            Err(_) => {
                return Err(SessionError::Refuse {
                    code: ErrorCode::AuthFirst,
                    text: "AUTH not sent in time".into(),
                })
            }
        };
        let refusal = match &decoded.command {
            Command::Nop => continue,
            Command::Auth { .. } => match guard.screen(&decoded) {
                Verdict::Reply {
                    frame,
                    fatal: false,
                } => {
                    let routed = connect_upstream(gateway, identify).await.map_err(|e| {
                        let why = match e {
                            SessionError::Refuse { text, .. } => text,
                            other => other.to_string(),
                        };
                        SessionError::Refuse {
                            code: ErrorCode::AuthFailed,
                            text: format!("AUTH failed: {why}"),
                        }
                    })?;
                    let io = client.io();
                    io.write_all(&frame).await?;
                    io.flush().await?;
                    return Ok(routed);
                }
                Verdict::Reply { frame, .. } => frame,
                Verdict::Forward | Verdict::Drop => {
                    nsq::error_frame(ErrorCode::AuthFailed, "AUTH failed")
                }
            },
            Command::Identify { .. } => {
                nsq::error_frame(ErrorCode::Invalid, "cannot IDENTIFY again")
            }
            other => nsq::error_frame(
                ErrorCode::AuthFirst,
                &format!("AUTH required before {}", other.name()),
            ),
        };
        refuse(client.io(), &refusal).await;
        return Err(SessionError::Refused(decoded.command.name()));
    }
}

async fn opening(
    gateway: &Gateway,
    client: &mut ClientStream,
    buf: &mut BytesMut,
    principal: &mut Option<Principal>,
) -> Result<(Option<Routed>, Option<std::time::Duration>, ClientIdentify), SessionError> {
    fill(client.io(), buf, nsq::MAGIC_V2.len(), "the protocol magic").await?;
    if &buf[..4] != nsq::MAGIC_V2 {
        return Err(SessionError::Refuse {
            code: ErrorCode::BadProtocol,
            text: "client sent bad protocol identifier".into(),
        });
    }
    let _ = buf.split_to(4);

    let first = read_command(gateway, client.io(), buf).await?;
    let Command::Identify { body } = &first.command else {
        // IDENTIFY is optional in NSQ; without it there is no TLS upgrade either.
        require_tls(gateway, client, first.command.name())?;
        let identify = ClientIdentify::default();
        // Without an identity yet, the command (AUTH, hopefully) goes to authenticate_first.
        let upstream = if gateway.config.auth.require_identity && principal.is_none() {
            None
        } else {
            Some(connect_upstream(gateway, &identify).await?)
        };
        // The command is handled as the first one of the next phase.
        let mut replayed = BytesMut::from(&first.raw[..]);
        replayed.extend_from_slice(buf);
        *buf = replayed;
        return Ok((upstream, Some(identify::DEFAULT_HEARTBEAT), identify));
    };

    let identify = ClientIdentify::parse(body)?;
    let upgrade = identify.feature_negotiation && identify.tls_v1 && !client.is_tls();
    if !upgrade {
        require_tls(gateway, client, "IDENTIFY without tls_v1")?;
    }
    // An in-band upgrade shows its certificate only after this reply, so a listener that
    // requires client certificates counts on the certificate; otherwise AUTH is asked for.
    // AUTH is accepted either way (nsqjs sends it whenever it has a secret).
    let auth_required = gateway.config.auth.require_identity
        && principal.is_none()
        && !(upgrade && gateway.config.client.client_cert == ClientCertMode::Required);
    // A client whose certificate is still to come is not known yet either.
    let certificate_pending =
        upgrade && principal.is_none() && gateway.config.client.client_cert != ClientCertMode::None;
    // A client that must still prove who it is gets no nsqd connection yet: its reply is
    // predicted from nsqd's defaults; the connection opens once a certificate names it (below)
    // or its AUTH succeeds (authenticate_first).
    let (mut upstream, nsqd_reply) = if auth_required || certificate_pending {
        let defaults = gateway
            .identify_defaults()
            .await
            .map_err(|e| upstream_unavailable(gateway, e))?;
        (None, identify.expected_reply(defaults))
    } else {
        let routed = connect_upstream(gateway, &identify).await?;
        let reply = routed.upstream.identify_reply.clone();
        (Some(routed), reply)
    };

    let reply = if identify.feature_negotiation {
        let leg = ClientLeg {
            tls_v1: upgrade,
            auth_required,
        };
        identify::client_reply(&nsqd_reply, leg)
    } else {
        b"OK".to_vec()
    };
    let io = client.io();
    io.write_all(&nsq::response_frame(&reply)).await?;
    io.flush().await?;

    if upgrade {
        let ClientStream::Plain(tcp) =
            std::mem::replace(client, ClientStream::Secure(Box::new(tokio::io::empty())))
        else {
            return Err(SessionError::Closed("TLS upgrade"));
        };
        // A client may have sent its ClientHello right behind IDENTIFY; those bytes are in buf.
        let raw = Replay::new(buf.split().freeze(), tcp);
        let (io, identity) = accept_tls(gateway, raw).await?;
        *principal = identity;
        *client = ClientStream::Secure(io);
        if upstream.is_none() && (principal.is_some() || !gateway.config.auth.require_identity) {
            upstream = Some(connect_upstream(gateway, &identify).await?);
        }
        let io = client.io();
        io.write_all(&nsq::response_frame(b"OK")).await?;
        io.flush().await?;
    }
    let heartbeat = identify.heartbeat_interval();
    Ok((upstream, heartbeat, identify))
}

fn require_tls(gateway: &Gateway, client: &ClientStream, doing: &str) -> Result<(), SessionError> {
    if gateway.config.client.require_tls && !client.is_tls() {
        return Err(SessionError::Refuse {
            code: ErrorCode::Invalid,
            text: format!(
                "TLS is required: cannot {doing}; send IDENTIFY with tls_v1 and feature_negotiation (or connect with TLS)"
            ),
        });
    }
    Ok(())
}

async fn connect_upstream(
    gateway: &Gateway,
    identify: &ClientIdentify,
) -> Result<Routed, SessionError> {
    let body = identify.upstream_body(gateway.upstream_tls());
    gateway
        .route
        .connect(body)
        .await
        .map_err(|e| upstream_unavailable(gateway, e))
}

/// The client learns only that the upstream is unavailable; the log says why.
fn upstream_unavailable(gateway: &Gateway, e: UpstreamError) -> SessionError {
    let text = match e {
        // Already counted and logged (at most once per interval) by the connection limits.
        UpstreamError::Limited { refusal, .. } => format!("nsqgate refused: {refusal}"),
        e => {
            warn!(upstream = gateway.route.address(), error = %e, "upstream refused");
            "nsqgate could not open a verified connection to nsqd".into()
        }
    };
    SessionError::Refuse {
        code: ErrorCode::IdentifyFailed,
        text,
    }
}

/// Runs the server handshake; a verified client certificate yields the client's identity.
async fn accept_tls<S>(
    gateway: &Gateway,
    raw: Replay<S>,
) -> Result<(Box<dyn Io>, Option<Principal>), SessionError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let accept = gateway.tls_acceptor.accept(raw);
    let tls = tokio::time::timeout(gateway.config.timeouts.tls_handshake, accept)
        .await
        .map_err(|_| SessionError::Timeout("the TLS handshake"))?
        .map_err(SessionError::Tls)?;
    // rustls has already verified the chain against the client CA (and CRLs) by now.
    let principal = crate::identity::from_certificate(
        tls.get_ref().1.peer_certificates(),
        &gateway.config.client.cert_identity_order,
    );
    Ok((Box::new(tls), principal))
}

async fn read_command(
    gateway: &Gateway,
    io: &mut (dyn Io + '_),
    buf: &mut BytesMut,
) -> Result<DecodedCommand, SessionError> {
    loop {
        match nsq::decode_command(buf, &gateway.config.limits) {
            Ok(Some(decoded)) => return Ok(decoded),
            Ok(None) => {}
            Err(e) => {
                return Err(SessionError::Refuse {
                    code: e.code(),
                    text: e.to_string(),
                })
            }
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

impl From<IdentifyError> for SessionError {
    fn from(e: IdentifyError) -> SessionError {
        SessionError::Refuse {
            code: ErrorCode::BadBody,
            text: e.to_string(),
        }
    }
}
