//! The upstream leg: connect to nsqd, send nsqgate's IDENTIFY, upgrade to TLS and verify nsqd's
//! certificate (CA and server name), and AUTH with nsqgate's own secret when nsqd asks for it.
//! Before nsqd's certificate is verified only nsqgate's own metadata and the client's connection
//! settings cross; the client's metadata, when forwarded at all, follows inside TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::UpstreamConfig;
use crate::limit::conn::{ConnLimits, NsqdPermit, Refusal};
use crate::metrics::{handshake_failure_reason, Leg, Metrics};
use crate::net::stream::{Io, Replay};
use crate::net::tls_stream;
use crate::nsq::{self, Command, Frame, FrameType, ProtocolError};
use crate::proxy::identify::UpstreamIdentify;
use crate::shared::Shared;
use crate::tls::ToNsqd;

mod pool;

pub use pool::{Lease, Pool};

/// Frames from nsqd during the handshake are small JSON; anything larger is not nsqd.
const HANDSHAKE_FRAME_LIMIT: u32 = 64 * 1024;

/// Legs a connector opens at once; the rest wait their turn (within `upstream_connect_ms`).
/// nsqd gives each TLS upgrade 5 s: a burst of thousands of new publishers must not have them
/// all handshake together and time out together (nsqd then refuses every one of them).
const HANDSHAKES_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to nsqd at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("nsqd at {0} did not answer in time")]
    Timeout(String),
    #[error("nsqd refused {command}: {code} {text}")]
    Refused {
        command: &'static str,
        code: String,
        text: String,
    },
    #[error("nsqd did not offer TLS (is it started with --tls-cert and --tls-key?)")]
    TlsNotOffered,
    /// "corrupt message" from rustls: nsqd answered in plaintext, i.e. it gave up the upgrade
    /// (nsqd allows a TLS handshake 5 s) and sent an error frame instead.
    #[error("TLS with nsqd failed (certificate not trusted, wrong name, or nsqd gave up the upgrade?): {0}")]
    Tls(std::io::Error),
    #[error("nsqd requires AUTH but upstream.auth_secret is not set")]
    AuthRequired,
    #[error("nsqd sent something that is not NSQ: {0}")]
    Protocol(#[from] NotNsq),
    #[error("the producer pool has no members")]
    EmptyPool,
    #[error("connection to nsqd failed: {0}")]
    Io(#[from] std::io::Error),
    /// Refused before connecting: nsqgate holds as many connections to it as allowed.
    #[error("not connecting to nsqd at {address}: {refusal}")]
    Limited { address: String, refusal: Refusal },
}

/// What nsqd sent during the handshake that no nsqd would send.
#[derive(Debug, thiserror::Error)]
pub enum NotNsq {
    #[error("IDENTIFY reply is not a JSON object")]
    IdentifyReply,
    #[error("expected OK, got {0:?}")]
    NotOk(String),
    #[error("a message frame in reply to {0}")]
    MessageFrame(&'static str),
    #[error("{0}")]
    Frame(ProtocolError),
    #[error("nsqd closed the connection during {0}")]
    Closed(&'static str),
}

// === impl UpstreamError ===

impl UpstreamError {
    /// nsqd's refusal of the client's own IDENTIFY settings (`E_BAD_BODY IDENTIFY heartbeat
    /// interval (100) is invalid`): the client's fault, to be relayed word for word.
    pub fn client_refusal(&self) -> Option<(&str, &str)> {
        match self {
            UpstreamError::Refused {
                command: "IDENTIFY",
                code,
                text,
            } => Some((code, text)),
            _ => None,
        }
    }
}

/// Opens legs to one nsqd; built once per destination from the configuration.
#[derive(Clone)]
pub struct Connector {
    address: String,
    tls: Option<ToNsqd>,
    auth_secret: Option<Arc<str>>,
    connect_timeout: Duration,
    /// Where connections to each nsqd are counted (and capped), shared by every route.
    limits: Arc<ConnLimits>,
    /// Connect latency and upstream TLS handshakes are counted here.
    metrics: Arc<Metrics>,
    /// Turns to open a leg ([`HANDSHAKES_IN_FLIGHT`]), shared by the clones of a connector.
    turns: Arc<Semaphore>,
}

/// A ready upstream leg: identified, upgraded, authenticated.
pub struct Upstream {
    pub io: Box<dyn Io>,
    /// Bytes nsqd sent after the handshake replies, already read.
    pub buf: BytesMut,
    /// nsqd's IDENTIFY reply, the base of the client's reply.
    pub identify_reply: Map<String, Value>,
}

// === impl Connector ===

impl Connector {
    /// A connector to the nsqd `config` names, with the shared TLS set-up (verifying the
    /// server name `config` gives), connect deadline and per-nsqd connection cap.
    pub fn for_nsqd(shared: &Shared, config: &UpstreamConfig) -> Connector {
        let tls = (config.tls.as_ref()).and_then(|t| shared.tls.to_nsqd(t.server_name.clone()));
        Connector {
            address: config.nsqd_tcp_address.clone(),
            tls,
            auth_secret: config.auth_secret.as_deref().map(Arc::from),
            connect_timeout: shared.config().timeouts.upstream_connect,
            limits: shared.conns.clone(),
            metrics: shared.metrics.clone(),
            turns: Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT)),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens a leg for one client, with nsqgate's IDENTIFY for it; the
    /// permit holds the leg's place in the per-nsqd cap for as long as it is kept.
    pub async fn connect(
        &self,
        identify: UpstreamIdentify,
    ) -> Result<(Upstream, NsqdPermit), UpstreamError> {
        let permit =
            self.limits
                .claim_nsqd(&self.address)
                .map_err(|refusal| UpstreamError::Limited {
                    address: self.address.clone(),
                    refusal,
                })?;
        let deadline = self.connect_timeout;
        let started = Instant::now();
        let turn_then_handshake = async {
            // The semaphore is never closed, so this waits for a turn and holds it.
            let _turn = self.turns.acquire().await;
            self.handshake(identify).await
        };
        let upstream = tokio::time::timeout(deadline, turn_then_handshake)
            .await
            .map_err(|_| UpstreamError::Timeout(self.address.clone()))??;
        self.metrics.upstream_connected(started.elapsed());
        Ok((upstream, permit))
    }

    async fn handshake(&self, identify: UpstreamIdentify) -> Result<Upstream, UpstreamError> {
        let identify_body = identify.first;
        let tcp =
            TcpStream::connect(&self.address)
                .await
                .map_err(|source| UpstreamError::Connect {
                    address: self.address.clone(),
                    source,
                })?;
        tcp.set_nodelay(true)?;
        let mut io: Box<dyn Io> = Box::new(tcp);
        let mut out = BytesMut::with_capacity(identify_body.len() + 32);
        out.put_slice(nsq::MAGIC_V2);
        Command::Identify {
            body: identify_body.into(),
        }
        .encode(&mut out);
        io.write_all(&out).await?;

        let mut buf = BytesMut::with_capacity(4096);
        let reply = read_reply(&mut io, &mut buf, "IDENTIFY").await?;
        let identify_reply: Map<String, Value> =
            serde_json::from_slice(&reply.data).map_err(|_| NotNsq::IdentifyReply)?;

        if let Some(to_nsqd) = &self.tls {
            if identify_reply.get("tls_v1") != Some(&Value::Bool(true)) {
                return Err(UpstreamError::TlsNotOffered);
            }
            // nsqd starts its handshake right after the JSON reply; bytes it sent after that
            // reply belong to TLS, so they are replayed into the TLS client.
            let raw = Replay::new(buf.split().freeze(), io);
            // The CA in force now: a reload applies to the next connection.
            let tls = tls_stream::connect(to_nsqd.config(), to_nsqd.server_name(), raw).await;
            let failure = tls.as_ref().err().map(handshake_failure_reason);
            self.metrics.tls_handshake(Leg::Upstream, failure);
            let tls = tls.map_err(UpstreamError::Tls)?;
            io = Box::new(tls);
            expect_ok(read_reply(&mut io, &mut buf, "TLS upgrade").await?)?;
            if let Some(metadata) = identify.after_tls {
                let command = Command::Identify {
                    body: metadata.into(),
                };
                let during = "IDENTIFY (client metadata)";
                expect_ok(send_command(&mut io, &mut buf, command, during).await?)?;
            }
        }

        if identify_reply.get("auth_required") == Some(&Value::Bool(true)) {
            let secret = self
                .auth_secret
                .as_ref()
                .ok_or(UpstreamError::AuthRequired)?;
            let command = Command::Auth {
                secret: bytes::Bytes::copy_from_slice(secret.as_bytes()),
            };
            send_command(&mut io, &mut buf, command, "AUTH").await?;
        }

        // The handshake buffer is usually drained by now; an idle connection need not keep it.
        if buf.is_empty() {
            buf = BytesMut::new();
        }
        Ok(Upstream {
            io,
            buf,
            identify_reply,
        })
    }
}

/// Sends one handshake command and reads nsqd's reply to it.
async fn send_command(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    command: Command,
    during: &'static str,
) -> Result<Frame, UpstreamError> {
    let mut out = BytesMut::new();
    command.encode(&mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    read_reply(io, buf, during).await
}

fn expect_ok(frame: Frame) -> Result<(), UpstreamError> {
    if &frame.data[..] == b"OK" {
        Ok(())
    } else {
        let got = String::from_utf8_lossy(&frame.data).into_owned();
        Err(NotNsq::NotOk(got).into())
    }
}

/// Reads the reply to a handshake command, skipping heartbeats; an error frame is a refusal.
async fn read_reply(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    command: &'static str,
) -> Result<Frame, UpstreamError> {
    loop {
        match nsq::decode_frame(buf, HANDSHAKE_FRAME_LIMIT) {
            Ok(Some(frame)) if frame.is_heartbeat() => continue,
            Ok(Some(frame)) => {
                return match frame.frame_type {
                    FrameType::Response => Ok(frame),
                    FrameType::Error => {
                        let text = String::from_utf8_lossy(&frame.data).into_owned();
                        let (code, text) = text.split_once(' ').unwrap_or((&text, ""));
                        Err(UpstreamError::Refused {
                            command,
                            code: code.to_owned(),
                            text: text.to_owned(),
                        })
                    }
                    FrameType::Message => Err(NotNsq::MessageFrame(command).into()),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(NotNsq::Frame(e).into()),
        }
        if io.read_buf(buf).await? == 0 {
            return Err(NotNsq::Closed(command).into());
        }
    }
}

/// Where a listener's clients are sent: one nsqd, or (for producers at the edge) the least
/// busy healthy member of a pool.
#[derive(Clone)]
pub enum Destination {
    Node(Connector),
    Pool(Arc<Pool>),
}

/// A ready upstream leg and its claims on connection counts.
pub struct Routed {
    pub upstream: Upstream,
    /// Held for the life of the connection; dropping it lowers the counts (the nsqd's, and
    /// for a pool the member's).
    pub lease: Option<Lease>,
}

impl Destination {
    pub async fn connect(&self, identify: UpstreamIdentify) -> Result<Routed, UpstreamError> {
        match self {
            Destination::Node(connector) => {
                let (upstream, permit) = connector.connect(identify).await?;
                let lease = Lease::single(permit);
                Ok(Routed {
                    upstream,
                    lease: Some(lease),
                })
            }
            Destination::Pool(pool) => pool.connect(identify).await,
        }
    }

    pub fn address(&self) -> String {
        match self {
            Destination::Node(connector) => connector.address().to_owned(),
            Destination::Pool(pool) => pool.describe(),
        }
    }
}
