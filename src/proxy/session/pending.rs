//! A client that has no nsqd connection yet: one that must still AUTH, or an anonymous one
//! (`require_identity = false`) that has sent nothing nsqd must see. nsqgate keeps the
//! connection as nsqd would (heartbeats every interval, closed after two missed ones, AUTH
//! answered, NOP swallowed) and opens the nsqd connection only when it is needed: once AUTH
//! succeeds for a client that had to AUTH (before the AUTH reply, so the reply means the
//! connection works), or at the first command nsqd must see. Idle strangers cost nsqd nothing.
//!
//! The command that opens the connection is handed to the relay, which screens it like any
//! other: a denied first command therefore costs one short-lived nsqd connection.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::error::{FatalReply, Kind};
use crate::nsq::{self, Command, ErrorCode};
use crate::proxy::budget::Charge;
use crate::proxy::guard::{Guard, Verdict};
use crate::proxy::identify::ClientIdentify;
use crate::proxy::upstream::Routed;
use crate::proxy::Listener;

use super::{connect_upstream, idle_timeout, read_command, ClientStream, SessionError};

/// What waiting needs to know about the connection.
pub(super) struct Waiting<'a> {
    pub listener: &'a Listener,
    /// Relayed to nsqd when its connection opens.
    pub identify: &'a ClientIdentify,
    /// The client's heartbeat interval (None: disabled).
    pub heartbeat: Option<std::time::Duration>,
    /// IDENTIFY was judged by nsqgate; a refusal by nsqd now is a mismatch worth a log line.
    pub judged: bool,
    pub shutdown: watch::Receiver<bool>,
}

/// What the next wake-up was for.
enum Woken {
    Command(Result<nsq::DecodedCommand, SessionError>),
    Heartbeat,
    Deadline,
    Stopping,
}

impl Waiting<'_> {
    /// Runs until the nsqd connection is open (the command that needed it is back at the
    /// front of `buf`), or the client is refused, goes idle or the process stops.
    pub async fn run(
        mut self,
        guard: &mut Guard,
        client: &mut ClientStream,
        buf: &mut BytesMut,
        charge: &mut Option<Charge>,
    ) -> Result<Routed, SessionError> {
        let config = &self.listener.shared.config;
        let start = tokio::time::Instant::now();
        let auth_deadline = guard
            .awaiting_identity()
            .then_some(start + config.timeouts.auth);
        let idle = idle_timeout(self.listener, self.heartbeat);
        let mut beats = self
            .heartbeat
            .map(|hb| tokio::time::interval_at(start + hb, hb));
        let mut heard = start;
        loop {
            let quiet_until = heard + idle;
            let deadline = auth_deadline.map_or(quiet_until, |auth| auth.min(quiet_until));
            let woken = tokio::select! {
                decoded = read_command(self.listener, client.io(), buf, charge) => Woken::Command(decoded),
                _ = tick(&mut beats) => Woken::Heartbeat,
                _ = tokio::time::sleep_until(deadline) => Woken::Deadline,
                _ = stopping(&mut self.shutdown) => Woken::Stopping,
            };
            let decoded = match woken {
                Woken::Command(decoded) => decoded?,
                Woken::Heartbeat => {
                    let frame = nsq::response_frame(nsq::HEARTBEAT);
                    self.write(client, &frame).await?;
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
            heard = tokio::time::Instant::now();
            match &decoded.command {
                Command::Nop => continue,
                Command::Auth { .. } => {
                    let had_to = guard.awaiting_identity();
                    let frame = match guard.screen(&decoded) {
                        Verdict::Reply(frame) => frame,
                        Verdict::Refuse(refusal) => return Err(SessionError::Refused(refusal)),
                        Verdict::Forward | Verdict::Drop => {
                            let text = "AUTH failed";
                            return Err(refused(Kind::Identity, ErrorCode::AuthFailed, text));
                        }
                    };
                    // Known now: its buffers are no stranger's any more.
                    *charge = None;
                    if !had_to {
                        // Anonymous before: answered here, nsqd still not needed.
                        self.write(client, &frame).await?;
                        continue;
                    }
                    let routed = connect_upstream(self.listener, self.identify, self.judged)
                        .await
                        .map_err(after_auth)?;
                    self.write(client, &frame).await?;
                    return Ok(routed);
                }
                Command::Identify { .. } => {
                    let text = "cannot IDENTIFY again";
                    return Err(refused(Kind::ClientProtocol, ErrorCode::Invalid, text));
                }
                other if guard.awaiting_identity() => {
                    let text = format!("AUTH required before {}", other.name());
                    return Err(refused(Kind::Identity, ErrorCode::AuthFirst, &text));
                }
                _ => {
                    let routed =
                        connect_upstream(self.listener, self.identify, self.judged).await?;
                    // The relay handles the command (screening included) as its first.
                    let mut replayed = BytesMut::from(&decoded.raw[..]);
                    replayed.extend_from_slice(buf);
                    *buf = replayed;
                    return Ok(routed);
                }
            }
        }
    }

    async fn write(&self, client: &mut ClientStream, frame: &[u8]) -> Result<(), SessionError> {
        let io = client.io();
        let write = async {
            io.write_all(frame).await?;
            io.flush().await
        };
        tokio::time::timeout(self.listener.shared.config.timeouts.write, write)
            .await
            .map_err(|_| SessionError::Timeout("a write to the client"))??;
        Ok(())
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

async fn tick(beats: &mut Option<tokio::time::Interval>) {
    match beats {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Completes once shutdown is asked for; never, if nobody can ask any more.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
