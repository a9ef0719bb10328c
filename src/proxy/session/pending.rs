//! A client that has no nsqd connection yet: one that must still AUTH, or an anonymous one
//! (`require_identity = false`) that has sent nothing nsqd must see. nsqgate keeps the
//! connection as nsqd would (heartbeats every interval, closed after two missed ones, AUTH
//! answered, NOP swallowed) and opens the nsqd connection only when it is needed: once AUTH
//! succeeds for a client that had to AUTH (before the AUTH reply, so the reply means the
//! connection works), or at the first command nsqd must see. Idle strangers cost nsqd nothing.
//!
//! The command that opens the connection is handed to the relay, which screens it like any
//! other: a denied first command therefore costs one short-lived nsqd connection.

use tokio::time::{Instant, Interval};

use crate::error::{FatalReply, Kind};
use crate::nsq::{self, Command, DecodedCommand, ErrorCode};
use crate::proxy::guard::{AdmittedBy, Guard, Verdict};
use crate::proxy::stopping;
use crate::proxy::upstream::Routed;

use super::failure::SessionError;
use super::Session;

/// What the next wake-up was for.
enum Woken {
    Command(Result<DecodedCommand, SessionError>),
    Heartbeat,
    Deadline,
    Stopping,
}

// === impl Session (waiting for nsqd) ===

impl Session {
    /// Runs until the nsqd connection is open (the command that needed it is back at the
    /// front of the buffer), or the client is refused, goes idle or the process stops.
    pub(super) async fn wait_for_nsqd(
        &mut self,
        guard: &mut Guard,
    ) -> Result<Routed, SessionError> {
        let start = Instant::now();
        let auth_timeout = self.config().timeouts.auth;
        let auth_deadline = guard.awaiting_identity().then_some(start + auth_timeout);
        let idle = self.idle_timeout();
        let mut beats = self
            .heartbeat
            .map(|hb| tokio::time::interval_at(start + hb, hb));
        let mut shutdown = self.shutdown.clone();
        let mut heard = start;
        loop {
            let quiet_until = heard + idle;
            let deadline = auth_deadline.map_or(quiet_until, |auth| auth.min(quiet_until));
            let woken = tokio::select! {
                decoded = self.read_command() => Woken::Command(decoded),
                _ = tick(&mut beats) => Woken::Heartbeat,
                _ = tokio::time::sleep_until(deadline) => Woken::Deadline,
                _ = stopping(&mut shutdown) => Woken::Stopping,
            };
            let decoded = match woken {
                Woken::Command(decoded) => decoded?,
                Woken::Heartbeat => {
                    let frame = nsq::response_frame(nsq::HEARTBEAT);
                    self.send_within_timeout(&frame).await?;
                    continue;
                }
                Woken::Deadline if Some(deadline) == auth_deadline => {
                    let text = "AUTH not sent in time";
                    return Err(refused(Kind::ClientTimeout, ErrorCode::AuthFirst, text));
                }
                // Like nsqd: a client gone quiet is disconnected without a word.
                Woken::Deadline => return Err(SessionError::Timeout("a heartbeat answer")),
                Woken::Stopping => return Err(SessionError::Stopping),
            };
            heard = Instant::now();
            if let Some(routed) = self.handle_waiting(guard, decoded).await? {
                return Ok(routed);
            }
        }
    }

    /// One command while there is no nsqd connection: NOP swallowed, AUTH answered, anything
    /// nsqd must see opens the connection (and goes back in the buffer for the relay, which
    /// screens it like any other).
    async fn handle_waiting(
        &mut self,
        guard: &mut Guard,
        decoded: DecodedCommand,
    ) -> Result<Option<Routed>, SessionError> {
        match &decoded.command {
            Command::Nop => Ok(None),
            Command::Auth { .. } => self.authenticate(guard, &decoded).await,
            Command::Identify { .. } => {
                let text = "cannot IDENTIFY again";
                Err(refused(Kind::ClientProtocol, ErrorCode::Invalid, text))
            }
            other if guard.awaiting_identity() => {
                let text = format!("AUTH required before {}", other.name());
                Err(refused(Kind::Identity, ErrorCode::AuthFirst, &text))
            }
            _ => {
                let routed = self.connect_nsqd().await?;
                self.unread(&decoded);
                Ok(Some(routed))
            }
        }
    }

    /// AUTH, judged by the guard. A client that had to AUTH gets its nsqd connection before
    /// the reply, so the reply means the connection works; an anonymous one is answered here.
    async fn authenticate(
        &mut self,
        guard: &mut Guard,
        decoded: &DecodedCommand,
    ) -> Result<Option<Routed>, SessionError> {
        let had_to = guard.awaiting_identity();
        let frame = match guard.screen(decoded) {
            Verdict::Reply(frame) => frame,
            Verdict::Refuse(refusal) => return Err(SessionError::Refused(refusal)),
            Verdict::Forward | Verdict::Drop => {
                return Err(refused(
                    Kind::Identity,
                    ErrorCode::AuthFailed,
                    "AUTH failed",
                ))
            }
        };
        if let Some(Verdict::Refuse(refusal)) =
            guard.claim_shared_identity_slot(AdmittedBy::Auth).await
        {
            return Err(SessionError::Refused(refusal));
        }
        // Known now: its buffers are no stranger's any more.
        self.charge = None;
        if !had_to {
            self.send_within_timeout(&frame).await?;
            return Ok(None);
        }
        let routed = self.connect_nsqd().await.map_err(after_auth)?;
        self.send_within_timeout(&frame).await?;
        Ok(Some(routed))
    }
}

/// An AUTH that succeeded here but whose nsqd connection failed is an AUTH failure for the
/// client; nsqd's refusal of the client's IDENTIFY stays nsqd's words.
fn after_auth(e: SessionError) -> SessionError {
    match e {
        SessionError::NsqdUnavailable { address, cause, .. } => SessionError::NsqdUnavailable {
            address,
            cause,
            at_auth: true,
        },
        other => other,
    }
}

fn refused(kind: Kind, code: ErrorCode, text: &str) -> SessionError {
    SessionError::Refused(FatalReply::new(kind, code, text))
}

async fn tick(beats: &mut Option<Interval>) {
    match beats {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
