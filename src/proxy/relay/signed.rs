//! The relay's part in end-to-end integrity, shared by both directions of one connection:
//! publishes to a signed topic are sealed on their way to nsqd; deliveries on a subscribed
//! signed topic are opened on their way to the client, or withheld and handed to the
//! quarantine task, whose outcome the client → nsqd direction writes as FIN or REQ.
//!
//! In-flight accounting: a withheld delivery occupies one of the client's RDY slots at nsqd
//! until nsqgate FINs (or requeues) it; the client never saw it, so it sends nothing for it.
//! A client's FIN, REQ or TOUCH naming a withheld id is not forwarded (the id was never
//! delivered to it), and nsqd's E_FIN_FAILED/E_REQ_FAILED for nsqgate's own settle of such an
//! id is not relayed either.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tracing::warn;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::FatalReply;
use crate::integrity::{publish, Integrity, TopicSeal};
use crate::metrics::Metrics;
use crate::nsq::{self, Command, DecodedCommand, ErrorCode, Frame, FrameType, Limits, MessageId};
use crate::proxy::quarantine::{Quarantiner, Settle, Suspect};

/// How many ids nsqgate settled itself are remembered, to recognise nsqd's late error on one.
const SETTLED_REMEMBERED: usize = 256;

/// One connection's integrity state.
pub(crate) struct Signed {
    integrity: Integrity,
    /// The subscription's seal, once a SUB to a signed topic was forwarded (SUB comes once).
    subscribed: OnceLock<Subscription>,
    /// Ids withheld from the client and not yet settled with nsqd.
    held: Mutex<HashSet<MessageId>>,
    /// Ids nsqgate settled, newest last, bounded.
    settled: Mutex<VecDeque<MessageId>>,
    quarantiner: Option<Arc<Quarantiner>>,
    /// The copying task's queue, started at the first suspect.
    suspects: OnceLock<mpsc::Sender<Suspect>>,
    /// Where withheld deliveries are settled from.
    settle: mpsc::Sender<Settle>,
    metrics: Arc<Metrics>,
}

struct Subscription {
    seal: TopicSeal,
    channel: String,
    principal: Option<Principal>,
    peer: SocketAddr,
}

/// What becomes of one frame from nsqd.
pub(crate) enum Delivery {
    /// Relay these bytes (the frame as it came, or a message with its envelope stripped).
    Relay(bytes::Bytes),
    /// Relay nothing: withheld, or nsqd's error on nsqgate's own settle.
    Withhold,
}

// === impl Signed ===

impl Signed {
    /// The state for one connection, and the receiver of settle outcomes for its inbound side;
    /// None when no topic is signed: the relay then has nothing to seal, open or withhold,
    /// and an idle connection keeps no integrity state at all (0.4 KiB, a subscription's
    /// principal among it).
    pub(crate) fn new(
        integrity: Integrity,
        quarantiner: Option<Arc<Quarantiner>>,
        metrics: Arc<Metrics>,
    ) -> Option<(Arc<Signed>, mpsc::Receiver<Settle>)> {
        if integrity.is_empty() {
            return None;
        }
        let (settle, outcomes) = mpsc::channel(64);
        let signed = Signed {
            integrity,
            subscribed: OnceLock::new(),
            held: Mutex::default(),
            settled: Mutex::default(),
            quarantiner,
            suspects: OnceLock::new(),
            settle,
            metrics,
        };
        Some((Arc::new(signed), outcomes))
    }

    /// A forwarded command, sealed when it publishes to a signed topic; noted when it
    /// subscribes to one. Err: nsqd's own refusal for a body that would not fit once sealed.
    pub(crate) fn outgoing(
        &self,
        decoded: DecodedCommand,
        limits: &Limits,
        who: (SocketAddr, Option<&Principal>),
    ) -> Result<DecodedCommand, FatalReply> {
        match &decoded.command {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => {
                let Some(seal) = self.integrity.for_topic(topic) else {
                    return Ok(decoded);
                };
                let sealed = publish::seal_publish(&decoded, &seal, limits).map_err(|e| {
                    if let Some(limit) = e.size_limit() {
                        self.metrics.size_limited(limit);
                    }
                    FatalReply::malformed(&e)
                })?;
                let count = u64::from(decoded.command.message_count());
                self.metrics.integrity.sealed.inc_by(count);
                Ok(sealed)
            }
            Command::Sub { topic, channel } => {
                if let Some(seal) = self.integrity.for_topic(topic) {
                    let _ = self.subscribed.set(Subscription {
                        seal,
                        channel: channel.clone(),
                        principal: who.1.cloned(),
                        peer: who.0,
                    });
                }
                Ok(decoded)
            }
            _ => Ok(decoded),
        }
    }

    /// Whether a client command names a delivery the client never received (withheld).
    pub(crate) fn names_withheld(&self, command: &Command) -> bool {
        let id = match command {
            Command::Fin { id } | Command::Req { id, .. } | Command::Touch { id } => id,
            _ => return false,
        };
        lock(&self.held).contains(id)
    }

    /// The command that settles a withheld delivery with nsqd.
    pub(crate) fn settle_command(&self, settle: Settle) -> BytesMut {
        let (id, command) = match settle {
            Settle::Fin(id) => (id, Command::Fin { id }),
            Settle::Requeue(id) => {
                let timeout_ms = crate::proxy::quarantine::REQUEUE_MS;
                (id, Command::Req { id, timeout_ms })
            }
        };
        lock(&self.held).remove(&id);
        let mut settled = lock(&self.settled);
        if settled.len() == SETTLED_REMEMBERED {
            settled.pop_front();
        }
        settled.push_back(id);
        let mut out = BytesMut::new();
        command.encode(&mut out);
        out
    }

    /// What the client gets for one unasked frame from nsqd (a message or a non-fatal error).
    pub(crate) fn incoming(&self, frame: &Frame) -> Delivery {
        match frame.frame_type {
            FrameType::Message => match self.subscribed.get() {
                Some(subscription) => self.open(subscription, frame),
                None => Delivery::Relay(frame.raw.clone()),
            },
            FrameType::Error if self.answers_own_settle(frame) => Delivery::Withhold,
            _ => Delivery::Relay(frame.raw.clone()),
        }
    }

    fn open(&self, subscription: &Subscription, frame: &Frame) -> Delivery {
        // A frame nsqd sent as a message is at least its header, or decode_frame's caller
        // sees the same error the client would.
        let Ok(mut message) = frame.message() else {
            return Delivery::Relay(frame.raw.clone());
        };
        match subscription.seal.open(&message.body) {
            Ok(body) => {
                self.metrics.integrity.verified.inc();
                message.body = body;
                Delivery::Relay(nsq::message_frame(&message))
            }
            Err(rejection) => {
                self.withhold(subscription, message, rejection);
                Delivery::Withhold
            }
        }
    }

    fn withhold(
        &self,
        subscription: &Subscription,
        message: nsq::Message,
        rejection: crate::integrity::Rejection,
    ) {
        let seal = &subscription.seal;
        self.metrics.integrity.quarantined(rejection.label());
        let reason = format!(
            "{}: message {} withheld, copied to {}",
            rejection.label(),
            message.id,
            seal.quarantine_topic()
        );
        audit::record(&Event {
            remote: Some(subscription.peer),
            principal: subscription.principal.as_ref(),
            action: "integrity",
            topic: Some(seal.topic()),
            channel: Some(&subscription.channel),
            outcome: "quarantine",
            reason: Some(&reason),
            ..Event::default()
        });
        lock(&self.held).insert(message.id);
        let suspect = Suspect {
            id: message.id,
            body: message.body,
            topic: seal.quarantine_topic().to_owned(),
        };
        let queued = match self.suspects() {
            Some(queue) => queue.try_send(suspect).is_ok(),
            None => false,
        };
        if !queued {
            warn!(peer = %subscription.peer, id = %message.id, "quarantine queue full or unavailable; requeueing the original");
            self.metrics.integrity.quarantine_published(false);
            let _ = self.settle.try_send(Settle::Requeue(message.id));
        }
    }

    fn suspects(&self) -> Option<&mpsc::Sender<Suspect>> {
        if let Some(queue) = self.suspects.get() {
            return Some(queue);
        }
        let quarantiner = self.quarantiner.clone()?;
        let settle = self.settle.clone();
        Some(self.suspects.get_or_init(|| quarantiner.start(settle)))
    }

    /// nsqd's non-fatal E_FIN_FAILED/E_REQ_FAILED naming an id nsqgate settled itself.
    fn answers_own_settle(&self, frame: &Frame) -> bool {
        if !matches!(
            frame.error_code(),
            Some(ErrorCode::FinFailed | ErrorCode::ReqFailed)
        ) {
            return false;
        }
        let text = &frame.data;
        lock(&self.settled)
            .iter()
            .any(|id| text.windows(16).any(|w| w == id.as_bytes()))
    }
}

/// A lock whose holder cannot leave the data half-changed (inserts and removes only).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
