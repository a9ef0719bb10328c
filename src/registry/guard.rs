//! The registration guard, in front of nsqlookupd's TCP port: accepts only mutual-TLS
//! connections whose client certificate names a configured nsqd identity, relays that nsqd's
//! commands to nsqlookupd when [`super::rules`] allow them, and answers the rest itself, each
//! refusal audited and counted. nsqlookupd only ever sees commands re-encoded from what was
//! checked, so no length or spelling it would read differently reaches it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::rules::{NsqdGrant, Refusal};
use super::stream::{Framed, RelayError};
use super::wire::{self, Command};
use super::Roles;
use crate::auth::{Method, Principal};
use crate::config::registry::GuardConfig;
use crate::tls::{self, TlsError};

const ROLE: &str = "guard";

/// What every guard connection shares.
pub struct Guard {
    config: GuardConfig,
    acceptor: TlsAcceptor,
    roles: Arc<Roles>,
}

impl Guard {
    /// The guard's TLS set-up: its certificate, and client certificates required from
    /// `tls_client_ca` (a connection without one fails the handshake).
    pub fn new(config: GuardConfig, roles: Arc<Roles>) -> Result<Guard, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let roots = Arc::new(tls::root_store(&config.client_ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Ca {
                path: config.client_ca.clone(),
                reason: e.to_string(),
            })?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(tls::load_certs(&config.cert)?, tls::load_key(&config.key)?)?;
        Ok(Guard {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            config,
            roles,
        })
    }

    /// One nsqd connection, from the handshake to its close.
    pub async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        // Each answer is one small write, often behind the handshake's last flight or a TLS
        // 1.3 ticket still unacknowledged: with Nagle on it would wait for the sidecar's
        // delayed ACK (40 ms; bench/roles saw half of all fresh registrations take that).
        let _ = tcp.set_nodelay(true);
        let timeouts = self.roles.timeouts;
        let handshake =
            tokio::time::timeout(timeouts.tls_handshake, self.acceptor.accept(tcp)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return self.refused(peer, None, &format!("TLS handshake: {e}"), "tls"),
            Err(_) => return self.refused(peer, None, "TLS handshake timed out", "tls"),
        };
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| {
                crate::auth::mtls::identity_from_cert(leaf, &self.config.identity_order)
            });
        let mut nsqd = Framed::new(tls);
        let grant = identity
            .as_deref()
            .and_then(|id| self.config.grants.iter().find(|g| g.identity == id));
        let Some(grant) = grant else {
            let refusal = Refusal::UnknownIdentity;
            let who = identity.map(principal);
            self.refused(peer, who.as_ref(), &refusal.to_string(), refusal.reason());
            nsqd.answer_and_close(refusal.response().as_bytes(), timeouts.write)
                .await;
            return;
        };
        let who = principal(grant.identity.clone());
        match self.relay(&mut nsqd, grant, &who, peer).await {
            Ok(()) => debug!(%peer, identity = %grant.identity, "registry guard: nsqd closed"),
            Err(Stop::Refused(refusal)) => {
                self.refused(peer, Some(&who), &refusal.to_string(), refusal.reason());
                nsqd.answer_and_close(refusal.response().as_bytes(), timeouts.write)
                    .await;
            }
            Err(Stop::Relay(e)) => {
                info!(%peer, identity = %grant.identity, error = %e, "registry guard: connection ended");
            }
        }
    }

    /// The command loop: the magic, then each command judged and relayed in turn.
    async fn relay(
        &self,
        nsqd: &mut Framed<tokio_rustls::server::TlsStream<TcpStream>>,
        grant: &NsqdGrant,
        who: &Principal,
        peer: SocketAddr,
    ) -> Result<(), Stop> {
        let timeouts = self.roles.timeouts;
        let limits = self.config.limits;
        match nsqd.read_magic(timeouts.identify).await {
            Err(RelayError::Wire(e)) => return Err(Stop::Refused(e.into())),
            other => other?,
        }
        let mut lookupd = self.connect_nsqlookupd().await?;
        let mut identified = false;
        loop {
            let command = match nsqd.read_command(&limits, timeouts.idle).await {
                Ok(Some(command)) => command,
                Ok(None) => return Ok(()),
                Err(RelayError::Wire(e)) => {
                    if let Some(limit) = e.size_limit() {
                        self.roles.metrics.size_limited(limit);
                    }
                    return Err(Stop::Refused(e.into()));
                }
                Err(e) => return Err(e.into()),
            };
            let forward = match self.judge(command, grant, &mut identified, who, peer) {
                Ok(forward) => forward,
                Err(refusal) if refusal.is_fatal() => return Err(Stop::Refused(refusal)),
                Err(refusal) => {
                    self.refused_registration(peer, who, &refusal);
                    let mut out = BytesMut::new();
                    wire::encode_response(refusal.response().as_bytes(), &mut out);
                    nsqd.write(&out, timeouts.write).await?;
                    continue;
                }
            };
            let mut out = BytesMut::new();
            wire::encode_command(&forward, &mut out);
            lookupd.write(&out, timeouts.write).await?;
            let answer = lookupd
                .read_response(limits.max_response_size, timeouts.upstream_connect)
                .await?;
            self.roles
                .metrics
                .registry_relayed(ROLE, super::command_label(&forward));
            out.clear();
            wire::encode_response(&answer, &mut out);
            nsqd.write(&out, timeouts.write).await?;
        }
    }

    /// The command to relay, re-encoded from what was checked, or why not.
    fn judge(
        &self,
        command: Command,
        grant: &NsqdGrant,
        identified: &mut bool,
        who: &Principal,
        peer: SocketAddr,
    ) -> Result<Command, Refusal> {
        match command {
            Command::Ping => Ok(Command::Ping),
            Command::Identify { .. } if *identified => Err(Refusal::IdentifyAgain),
            Command::Identify { body } => {
                let (announced, body) = grant.check_identify(&body)?;
                *identified = true;
                let address = format!(
                    "{}:{}/{}",
                    announced.broadcast_address, announced.tcp_port, announced.http_port
                );
                let allowed = Decided {
                    action: "registry_identify",
                    outcome: "allow",
                    reason: Some(&address),
                    ..Decided::default()
                };
                self.audit(peer, Some(who), &allowed);
                Ok(Command::Identify { body })
            }
            Command::Register { .. } | Command::Unregister { .. } if !*identified => {
                Err(Refusal::NotIdentified {
                    command: super::command_label(&command),
                })
            }
            Command::Register { topic, channel } => {
                grant.check_registration(&topic, channel.as_deref())?;
                debug!(identity = %grant.identity, %topic, ?channel, "registry guard: REGISTER relayed");
                Ok(Command::Register { topic, channel })
            }
            Command::Unregister { topic, channel } => {
                grant.check_registration(&topic, channel.as_deref())?;
                Ok(Command::Unregister { topic, channel })
            }
        }
    }

    async fn connect_nsqlookupd(&self) -> Result<Framed<TcpStream>, Stop> {
        let timeouts = self.roles.timeouts;
        let address = &self.config.nsqlookupd_tcp_address;
        let tcp = tokio::time::timeout(timeouts.upstream_connect, TcpStream::connect(address))
            .await
            .map_err(|_| RelayError::Timeout("connection to nsqlookupd"))?
            .map_err(RelayError::Io)?;
        let _ = tcp.set_nodelay(true);
        let mut lookupd = Framed::new(tcp);
        lookupd.write(wire::MAGIC_V1, timeouts.write).await?;
        Ok(lookupd)
    }

    fn refused(&self, peer: SocketAddr, who: Option<&Principal>, why: &str, reason: &'static str) {
        self.roles.metrics.registry_refused(ROLE, reason);
        warn!(%peer, identity = who.map(|p| p.identity.as_str()).unwrap_or(""), reason, "registry guard refused: {why}");
        let denied = Decided {
            reason: Some(why),
            ..Decided::default()
        };
        self.audit(peer, who, &denied);
    }

    /// A refused REGISTER or UNREGISTER: its topic and channel are in the audit line's own
    /// fields.
    fn refused_registration(&self, peer: SocketAddr, who: &Principal, refusal: &Refusal) {
        let reason = refusal.reason();
        self.roles.metrics.registry_refused(ROLE, reason);
        warn!(%peer, identity = %who.identity, reason, "registry guard refused: {refusal}");
        let (topic, channel) = match refusal {
            Refusal::Topic(topic) => (Some(topic.as_str()), None),
            Refusal::Channel { topic, channel } => (Some(topic.as_str()), Some(channel.as_str())),
            _ => (None, None),
        };
        let why = refusal.to_string();
        let denied = Decided {
            topic,
            channel,
            reason: Some(&why),
            ..Decided::default()
        };
        self.audit(peer, Some(who), &denied);
    }

    fn audit(&self, peer: SocketAddr, who: Option<&Principal>, decided: &Decided<'_>) {
        crate::audit::record(&crate::audit::Event {
            remote: Some(peer),
            principal: who,
            action: decided.action,
            topic: decided.topic,
            channel: decided.channel,
            outcome: decided.outcome,
            reason: decided.reason,
            method: Some("certificate"),
            ..Default::default()
        });
    }
}

/// One audit line's decision: `registry` refusals unless said otherwise.
struct Decided<'a> {
    action: &'a str,
    outcome: &'a str,
    topic: Option<&'a str>,
    channel: Option<&'a str>,
    reason: Option<&'a str>,
}

impl Default for Decided<'_> {
    fn default() -> Self {
        Decided {
            action: "registry",
            outcome: "deny",
            topic: None,
            channel: None,
            reason: None,
        }
    }
}

/// Why a guard connection ended early.
enum Stop {
    Refused(Refusal),
    Relay(RelayError),
}

impl From<RelayError> for Stop {
    fn from(e: RelayError) -> Stop {
        Stop::Relay(e)
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refused(r)
    }
}

fn principal(identity: String) -> Principal {
    Principal {
        identity,
        method: Method::Certificate,
        claimed_roles: Vec::new(),
        expires_at: None,
        proof: crate::auth::Proof::SelfContained,
        token_id: None,
    }
}
