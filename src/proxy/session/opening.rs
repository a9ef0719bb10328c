//! The opening: TLS from the first byte, the magic, IDENTIFY (or another first command) and
//! the in-band TLS upgrade. IDENTIFY is refused with nsqd's own words: nsqd's, relayed, when the
//! client already has its nsqd connection; otherwise nsqd's checks made here against nsqd's
//! ranges.

use serde_json::{Map, Value};
use tracing::debug;

use crate::compress::Compression;
use crate::error::{FatalReply, Kind};
use crate::net::stream::Replay;
use crate::nsq::{self, Command, ErrorCode};
use crate::proxy::identify::{self, ClientIdentify, ClientLeg};
use crate::proxy::upstream::Routed;

use super::client::{accept_tls, ClientStream};
use super::failure::SessionError;
use super::timing::{self, ClientTls, IdentityRules, NsqdOpens};
use super::Session;

/// The first byte of a TLS handshake record: a client that starts with TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the opening settled.
pub(super) struct Opened {
    /// The client leg is final (TLS or not) and its settings are known.
    pub session: Session,
    /// Opened during the opening for a client a certificate named; otherwise None, and the
    /// client waits for it (`pending`).
    pub upstream: Option<Routed>,
}

/// The client's first command after the magic.
enum FirstCommand {
    Identify(ClientIdentify),
    /// Anything else (IDENTIFY is optional in NSQ), back in the buffer for the next phase.
    Other,
}

/// How IDENTIFY was answered.
struct Answered {
    /// The in-band TLS upgrade follows the reply.
    upgrade: bool,
    /// Compression follows the reply (and TLS).
    compression: Option<Compression>,
    /// Opened before the reply, for a client a certificate had named.
    upstream: Option<Routed>,
}

// === impl Session (the opening) ===

impl Session {
    /// The opening, run within the IDENTIFY deadline.
    pub(super) async fn open(self) -> Result<Opened, SessionError> {
        let mut session = self.tls_first().await?;
        let first = session.first_command().await;
        let identify = match session.or_refuse(first).await? {
            FirstCommand::Identify(identify) => identify,
            // Without IDENTIFY there is no upgrade either.
            FirstCommand::Other => {
                let upstream = session.nsqd_if_known(None).await;
                let upstream = session.or_refuse(upstream).await?;
                return Ok(Opened { session, upstream });
            }
        };
        let answered = session.answer_identify(identify).await;
        let Answered {
            upgrade,
            compression,
            mut upstream,
        } = session.or_refuse(answered).await?;
        // nsqd's order: TLS and its OK, then compression and its OK.
        if upgrade {
            session = session.upgrade().await?;
            let opened = session.after_upgrade().await;
            if let Some(routed) = session.or_refuse(opened).await? {
                upstream = Some(routed);
            }
        }
        if let Some(compression) = compression {
            session = session.compress(compression).await?;
        }
        Ok(Opened { session, upstream })
    }

    /// A client whose first byte starts a TLS handshake gets TLS before anything else; a
    /// certificate may name it.
    async fn tls_first(mut self) -> Result<Session, SessionError> {
        if self.buf.is_empty() {
            self.first_bytes().await?;
        }
        if self.buf.first() != Some(&TLS_HANDSHAKE_RECORD) {
            return Ok(self);
        }
        // Bytes already read (the first read, or after a PROXY header) belong to the handshake.
        let read = self.buf.split().freeze();
        let ClientStream::Plain(tcp) = self.client else {
            return Ok(self);
        };
        let (client, principal) = accept_tls(&self.listener.shared, Replay::new(read, tcp)).await?;
        self.client = client;
        self.identified(principal);
        Ok(self)
    }

    /// The client's first bytes, read (not peeked: the magic and IDENTIFY usually come in the
    /// same read) within the handshake deadline.
    async fn first_bytes(&mut self) -> Result<(), SessionError> {
        let deadline = self.config().timeouts.tls_handshake;
        tokio::time::timeout(deadline, self.fill(1, "the first bytes"))
            .await
            .map_err(|_| SessionError::Timeout("the first bytes"))?
    }

    /// The magic, then the first command: IDENTIFY, read as nsqd reads it, or another one put
    /// back for later (refused when TLS is required, as there is no upgrade without IDENTIFY).
    async fn first_command(&mut self) -> Result<FirstCommand, SessionError> {
        self.fill(nsq::MAGIC_V2.len(), "the protocol magic").await?;
        if &self.buf[..4] != nsq::MAGIC_V2 {
            // nsqd answers a bad magic with the bare code and no text (nsqd/tcp.go).
            let refusal = FatalReply::new(Kind::ClientProtocol, ErrorCode::BadProtocol, "");
            return Err(SessionError::Refused(refusal));
        }
        let _ = self.buf.split_to(4);
        let first = self.read_command().await?;
        let Command::Identify { body } = &first.command else {
            self.require_tls(first.command.name())?;
            self.unread(&first);
            return Ok(FirstCommand::Other);
        };
        Ok(FirstCommand::Identify(ClientIdentify::parse(body)?))
    }

    /// The client's nsqd connection, opened now when a certificate named the client.
    async fn nsqd_if_known(
        &mut self,
        identify: Option<&ClientIdentify>,
    ) -> Result<Option<Routed>, SessionError> {
        let rules = IdentityRules::of(self.config());
        let tls = self.client.tls();
        match timing::when_nsqd_opens(rules, identify, tls, self.principal.as_ref()) {
            NsqdOpens::Now => Ok(Some(self.connect_nsqd().await?)),
            _ => Ok(None),
        }
    }

    /// Judges IDENTIFY and answers it with nsqd's reply (nsqd's own when its connection opens
    /// now, else predicted from its defaults), rewritten to describe the client leg.
    async fn answer_identify(
        &mut self,
        identify: ClientIdentify,
    ) -> Result<Answered, SessionError> {
        let rules = IdentityRules::of(self.config());
        let tls = self.client.tls();
        let principal = self.principal.as_ref();
        let opens_now =
            timing::when_nsqd_opens(rules, Some(&identify), tls, principal) == NsqdOpens::Now;
        let auth_required = timing::auth_required(rules, &identify, tls, principal);
        let upgrade = timing::asks_for_upgrade(&identify, tls);
        self.identify = identify;
        // A client with no identity yet gets no nsqd connection: nsqgate judges IDENTIFY with
        // nsqd's checks and ranges, before its own TLS rule as nsqd would.
        let predicted = match opens_now {
            true => None,
            false => Some(self.judge_identify().await?),
        };
        if !upgrade {
            self.require_tls("IDENTIFY without tls_v1")?;
        }
        let (nsqd_reply, upstream) = match predicted {
            Some(predicted) => (predicted, None),
            None => {
                let mut routed = self.connect_nsqd().await?;
                let reply = std::mem::take(&mut routed.upstream.identify_reply);
                (reply, Some(routed))
            }
        };
        let (compression, deflate_level) = self.negotiate_compression(&nsqd_reply).await?;
        let reply = match self.identify.feature_negotiation {
            true => identify::client_reply(
                &nsqd_reply,
                ClientLeg {
                    tls_v1: upgrade,
                    auth_required,
                    compression,
                    deflate_level,
                },
            ),
            false => b"OK".to_vec(),
        };
        self.send(&nsq::response_frame(&reply)).await?;
        self.heartbeat = self.identify.heartbeat_interval();
        Ok(Answered {
            upgrade,
            compression,
            upstream,
        })
    }

    /// nsqd's checks made here, with its ranges; the reply nsqd would give, predicted.
    async fn judge_identify(&mut self) -> Result<Map<String, Value>, SessionError> {
        let learned = self.listener.learned().await;
        let learned = learned.map_err(|e| self.nsqd_unavailable(e))?;
        self.identify.check(&learned.ranges)?;
        self.judged = true;
        Ok(self.identify.expected_reply(&learned.reply))
    }

    /// Compression is the client leg's alone (nsqd is never asked for it), so nsqgate makes
    /// nsqd's check (not both) and choice (what nsqd offers, at nsqd's levels) even when nsqd
    /// judged the rest. A client without an identity yet is charged for the codec first.
    async fn negotiate_compression(
        &mut self,
        nsqd_reply: &Map<String, Value>,
    ) -> Result<(Option<Compression>, i64), SessionError> {
        if !self.identify.feature_negotiation {
            return Ok((None, identify::DEFAULT_DEFLATE_LEVEL));
        }
        let learned = self.listener.learned().await;
        let learned = learned.map_err(|e| self.nsqd_unavailable(e))?;
        self.identify.check_compression(&learned.ranges)?;
        let (compression, level) = self.identify.compression(&learned.ranges, nsqd_reply);
        if let (Some(compression), Some(charge)) = (compression, &mut self.charge) {
            let wanted = self.buf.capacity() + compression.memory_bound();
            charge.hold(wanted).map_err(|over| {
                self.listener
                    .shared
                    .metrics
                    .size_limited("unauthenticated_memory");
                let text = format!("IDENTIFY failed {over} (try again later)");
                SessionError::Refused(FatalReply::new(
                    Kind::Limit,
                    ErrorCode::IdentifyFailed,
                    &text,
                ))
            })?;
        }
        Ok((compression, level))
    }

    /// The in-band upgrade nsqd makes after its IDENTIFY reply: the client's TLS handshake.
    async fn upgrade(mut self) -> Result<Session, SessionError> {
        // A client may have sent its ClientHello right behind IDENTIFY; those bytes are here.
        let read = self.buf.split().freeze();
        let ClientStream::Plain(tcp) = self.client else {
            return Ok(self);
        };
        let (client, principal) = accept_tls(&self.listener.shared, Replay::new(read, tcp)).await?;
        self.client = client;
        self.principal = principal;
        Ok(self)
    }

    /// The compression upgrade nsqd makes after TLS: both directions compressed from here on,
    /// then `OK` through the new layer. Bytes the client sent behind IDENTIFY are its first
    /// compressed input.
    async fn compress(mut self, compression: Compression) -> Result<Session, SessionError> {
        let read = self.buf.split().freeze();
        self.client = self.client.compressed(compression, read);
        debug!(compression = compression.name(), "client leg compressed");
        self.send(&nsq::response_frame(b"OK")).await?;
        Ok(self)
    }

    /// After the upgrade: the nsqd connection for a client its certificate named, then `OK`
    /// inside TLS, as nsqd ends its upgrade.
    async fn after_upgrade(&mut self) -> Result<Option<Routed>, SessionError> {
        let rules = IdentityRules::of(self.config());
        let principal = self.principal.as_ref();
        let opens =
            timing::when_nsqd_opens(rules, Some(&self.identify), ClientTls::Secure, principal);
        let upstream = match opens {
            NsqdOpens::Now => {
                self.charge = None;
                Some(self.connect_nsqd().await?)
            }
            _ => None,
        };
        self.send(&nsq::response_frame(b"OK")).await?;
        Ok(upstream)
    }
}
