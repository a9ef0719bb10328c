//! The upstream leg: connect to nsqd, send nsqgate's IDENTIFY, upgrade to TLS and verify nsqd's
//! certificate (CA and server name), and AUTH with nsqgate's own secret when nsqd asks for it.
//! Before nsqd's certificate is verified only nsqgate's own metadata and the client's connection
//! settings cross; the client's metadata, when forwarded at all, follows inside TLS.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamConfig;
use crate::limit::conn::{ConnLimits, NsqdPermit, Refusal};
use crate::net::stream::{Io, Replay};
use crate::nsq::{self, Command, Frame, FrameType};
use crate::proxy::identify::UpstreamIdentify;

/// Frames from nsqd during the handshake are small JSON; anything larger is not nsqd.
const HANDSHAKE_FRAME_LIMIT: u32 = 64 * 1024;

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
    #[error("TLS with nsqd failed (certificate not trusted, or wrong name?): {0}")]
    Tls(std::io::Error),
    #[error("nsqd requires AUTH but upstream.auth_secret is not set")]
    AuthRequired,
    #[error("nsqd sent something that is not NSQ: {0}")]
    Protocol(String),
    #[error("connection to nsqd failed: {0}")]
    Io(#[from] std::io::Error),
    /// Refused before connecting: nsqgate holds as many connections to it as allowed.
    #[error("not connecting to nsqd at {address}: {refusal}")]
    Limited { address: String, refusal: Refusal },
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

/// Built once per listener from the configuration.
#[derive(Clone)]
pub struct Connector {
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    auth_secret: Option<Arc<str>>,
    connect_timeout: Duration,
    max_frame_size: u32,
    /// Where connections to each nsqd are counted (and capped), shared by every route.
    limits: Arc<ConnLimits>,
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
    pub fn new(
        config: &UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        max_frame_size: u32,
        limits: Arc<ConnLimits>,
    ) -> Result<Connector, UpstreamError> {
        let tls = match (tls, &config.tls) {
            (Some(client_config), Some(settings)) => {
                let name = ServerName::try_from(settings.server_name.clone())
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                Some((TlsConnector::from(client_config), name))
            }
            _ => None,
        };
        Ok(Connector {
            address: config.nsqd_tcp_address.clone(),
            tls,
            auth_secret: config.auth_secret.as_deref().map(Arc::from),
            connect_timeout,
            max_frame_size,
            limits,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
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
        let upstream = tokio::time::timeout(deadline, self.handshake(identify))
            .await
            .map_err(|_| UpstreamError::Timeout(self.address.clone()))??;
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
        let identify_reply: Map<String, Value> = serde_json::from_slice(&reply.data)
            .map_err(|_| UpstreamError::Protocol("IDENTIFY reply is not a JSON object".into()))?;

        if let Some((connector, name)) = &self.tls {
            if identify_reply.get("tls_v1") != Some(&Value::Bool(true)) {
                return Err(UpstreamError::TlsNotOffered);
            }
            // nsqd starts its handshake right after the JSON reply; bytes it sent after that
            // reply belong to TLS, so they are replayed into the TLS client.
            let raw = Replay::new(buf.split().freeze(), io);
            let tls = connector
                .connect(name.clone(), raw)
                .await
                .map_err(UpstreamError::Tls)?;
            io = Box::new(tls);
            expect_ok(read_reply(&mut io, &mut buf, "TLS upgrade").await?)?;
            if let Some(metadata) = identify.after_tls {
                let mut out = BytesMut::new();
                Command::Identify {
                    body: metadata.into(),
                }
                .encode(&mut out);
                io.write_all(&out).await?;
                io.flush().await?;
                expect_ok(read_reply(&mut io, &mut buf, "IDENTIFY (client metadata)").await?)?;
            }
        }

        if identify_reply.get("auth_required") == Some(&Value::Bool(true)) {
            let secret = self
                .auth_secret
                .as_ref()
                .ok_or(UpstreamError::AuthRequired)?;
            let mut out = BytesMut::new();
            Command::Auth {
                secret: bytes::Bytes::copy_from_slice(secret.as_bytes()),
            }
            .encode(&mut out);
            io.write_all(&out).await?;
            io.flush().await?;
            read_reply(&mut io, &mut buf, "AUTH").await?;
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

fn expect_ok(frame: Frame) -> Result<(), UpstreamError> {
    if &frame.data[..] == b"OK" {
        Ok(())
    } else {
        Err(UpstreamError::Protocol(format!(
            "expected OK, got {:?}",
            String::from_utf8_lossy(&frame.data)
        )))
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
                    FrameType::Message => Err(UpstreamError::Protocol(format!(
                        "a message frame in reply to {command}"
                    ))),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
        }
        if io.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Protocol(format!(
                "nsqd closed the connection during {command}"
            )));
        }
    }
}

/// Where a listener's clients are sent: one nsqd, or (for producers at the edge) the least
/// busy healthy member of a pool.
#[derive(Clone)]
pub enum Route {
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

impl Route {
    pub async fn connect(&self, identify: UpstreamIdentify) -> Result<Routed, UpstreamError> {
        match self {
            Route::Node(connector) => {
                let (upstream, permit) = connector.connect(identify).await?;
                let lease = Lease {
                    member: None,
                    _nsqd: permit,
                };
                Ok(Routed {
                    upstream,
                    lease: Some(lease),
                })
            }
            Route::Pool(pool) => pool.connect(identify).await,
        }
    }

    pub fn address(&self) -> String {
        match self {
            Route::Node(connector) => connector.address().to_owned(),
            Route::Pool(pool) => pool.describe(),
        }
    }

    pub fn max_frame_size(&self) -> u32 {
        match self {
            Route::Node(connector) => connector.max_frame_size(),
            Route::Pool(pool) => pool
                .members
                .iter()
                .map(|m| m.connector.max_frame_size())
                .max()
                .unwrap_or(HANDSHAKE_FRAME_LIMIT),
        }
    }
}

/// Known nsqd for producers: new connections go to the healthy member with the fewest open
/// connections; a member that fails to connect or fails its health check is skipped until it
/// passes again.
pub struct Pool {
    members: Vec<Member>,
}

struct Member {
    connector: Connector,
    active: std::sync::atomic::AtomicUsize,
    healthy: std::sync::atomic::AtomicBool,
}

pub struct Lease {
    /// A pool member's count (its index), for pooled connections.
    member: Option<(Arc<Pool>, usize)>,
    /// The connection's place in the per-nsqd cap, freed on drop.
    _nsqd: NsqdPermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(member) = self.member.as_ref().and_then(|(p, i)| p.members.get(*i)) {
            member
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Lowers a member's count unless handed over to a [`Lease`].
struct Claim<'a> {
    member: &'a Member,
    held: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.held {
            self.member
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl Pool {
    pub fn new(connectors: Vec<Connector>) -> Arc<Pool> {
        Arc::new(Pool {
            members: connectors
                .into_iter()
                .map(|connector| Member {
                    connector,
                    active: std::sync::atomic::AtomicUsize::new(0),
                    healthy: std::sync::atomic::AtomicBool::new(true),
                })
                .collect(),
        })
    }

    fn describe(&self) -> String {
        let addresses: Vec<&str> = self.members.iter().map(|m| m.connector.address()).collect();
        format!("pool[{}]", addresses.join(","))
    }

    /// Healthy members first, fewest connections first; unhealthy ones only as a last resort.
    fn order(&self) -> Vec<usize> {
        use std::sync::atomic::Ordering;
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by_key(|&i| {
            let m = &self.members[i];
            (
                !m.healthy.load(Ordering::Acquire),
                m.active.load(Ordering::Acquire),
            )
        });
        order
    }

    async fn connect(
        self: &Arc<Self>,
        identify: UpstreamIdentify,
    ) -> Result<Routed, UpstreamError> {
        use std::sync::atomic::Ordering;
        let mut last = UpstreamError::Protocol("the producer pool is empty".into());
        for index in self.order() {
            let member = &self.members[index];
            member.active.fetch_add(1, Ordering::AcqRel);
            let mut claim = Claim { member, held: true };
            match member.connector.connect(identify.clone()).await {
                Ok((upstream, permit)) => {
                    member.healthy.store(true, Ordering::Release);
                    claim.held = false;
                    let lease = Lease {
                        member: Some((self.clone(), index)),
                        _nsqd: permit,
                    };
                    return Ok(Routed {
                        upstream,
                        lease: Some(lease),
                    });
                }
                // The client's settings, refused: another member would refuse them too.
                Err(e) if e.client_refusal().is_some() => return Err(e),
                // At its cap, a member is busy, not broken: try the next one.
                Err(e @ UpstreamError::Limited { .. }) => last = e,
                Err(e) => {
                    tracing::warn!(nsqd = member.connector.address(), error = %e, "pool member failed; trying the next");
                    member.healthy.store(false, Ordering::Release);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Probes every member with a TCP connect each period.
    pub async fn check_health_forever(self: Arc<Self>, every: Duration) {
        use std::sync::atomic::Ordering;
        loop {
            for member in &self.members {
                // Connect and say the magic, so nsqd sees a client that simply left.
                let probe = async {
                    let mut tcp = TcpStream::connect(member.connector.address()).await?;
                    tcp.write_all(nsq::MAGIC_V2).await?;
                    tcp.shutdown().await
                };
                let up = matches!(tokio::time::timeout(every, probe).await, Ok(Ok(())));
                if member.healthy.swap(up, Ordering::AcqRel) != up {
                    tracing::info!(
                        nsqd = member.connector.address(),
                        healthy = up,
                        "pool member health changed"
                    );
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}
