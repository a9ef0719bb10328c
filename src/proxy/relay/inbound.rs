//! Client → nsqd: decode every buffered command, let the guard screen it, draw publishes from
//! the rate limits, and forward in one write per read; the deadlines (idle, slow command,
//! missing AUTH, revocation grace, shutdown) live here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::error::{FatalReply, Kind};
use crate::nsq::{CommandDecoder, ErrorCode};
use crate::proxy::guard::{Guard, Revocation};
use crate::proxy::quarantine::Settle;

use super::batch::Batch;
use super::reading::Reader;
use super::watches::{Change, Watches, Watching};
use super::{RelayEnd, RelayError, RelaySettings, Replies, Signed, Slot};
use run::Run;
use verdict::{Acted, Judged};

mod run;
mod verdict;

/// How the client → nsqd direction ended.
pub(super) enum ClientSide {
    /// The client closed its side; nsqd is told and may still send owed replies.
    Closed,
    /// A refusal is queued behind the owed replies; the other direction sends it and closes.
    RefusalQueued,
    /// No byte from the client within the idle timeout.
    Idle,
    /// Shutdown: no more commands; nsqd is told as if the client had closed.
    Stopping,
}

/// The client → nsqd direction of one connection.
pub(super) struct Inbound<'a, W> {
    decoder: CommandDecoder,
    batch: Batch<'a, W>,
    guard: &'a mut Guard,
    settings: &'a RelaySettings,
    /// Shutdown, policy reloads and operators' revocations.
    watching: Watching,
    /// When a revoked client is cut off (after the grace, for a subscriber), and why.
    revoked: Option<(Instant, Kind)>,
    /// Reads the client's commands (no buffer held while it is quiet).
    reader: Reader,
    /// PUBs to one topic gathered from the read being screened (empty between reads).
    run: Run,
    /// Since when a command has been partly buffered: one byte a minute holds nothing for long.
    partial_since: Option<Instant>,
    /// When a client that must AUTH and has not is refused.
    auth_deadline: Instant,
    /// Seals publishes to signed topics; its withheld deliveries are settled from here. None
    /// when no topic is signed.
    signed: Option<Arc<Signed>>,
    settles: Option<mpsc::Receiver<Settle>>,
}

/// What the wait for the client's next bytes ended with.
enum Woken {
    /// This many bytes read; 0 when the client closed its side.
    Read(usize),
    Stopping,
    Deadline(Expiry),
    /// The connection lost its standing.
    Revoked(Revocation),
    /// A withheld delivery is to be FINed or requeued.
    Settle(Settle),
}

/// How screening one read's commands ended.
enum Ended {
    /// At the end of what was read.
    Read,
    /// At a command nsqd would not parse: the client is told this.
    Malformed(FatalReply),
    /// At a command refused.
    Refused(FatalReply),
}

/// Which deadline passes first.
#[derive(Clone, Copy)]
enum Expiry {
    /// Like nsqd: an idle client is disconnected without a word.
    Idle,
    PartialCommand,
    NoAuth,
    /// A revoked client's grace period is over; the revocation was of this kind.
    GraceOver(Kind),
    /// A subscriber's token expired: its deliveries are revoked.
    TokenExpired,
}

// === impl ClientSide ===

impl ClientSide {
    /// The relay's end, given what the other direction did with the replies still owed.
    pub(super) fn ended(self, owed: Result<RelayEnd, RelayError>) -> Result<RelayEnd, RelayError> {
        let end = owed?;
        Ok(match self {
            ClientSide::Closed => RelayEnd::ClientClosed,
            ClientSide::Stopping => RelayEnd::Shutdown,
            ClientSide::RefusalQueued | ClientSide::Idle => end,
        })
    }
}

// === impl Inbound ===

impl<'a, W: AsyncWrite + Unpin> Inbound<'a, W> {
    pub(super) fn new(
        upstream: W,
        replies: &'a Replies,
        guard: &'a mut Guard,
        settings: &'a RelaySettings,
        (signed, settles): (Option<Arc<Signed>>, Option<mpsc::Receiver<Settle>>),
    ) -> Inbound<'a, W> {
        let watching = Watching::starting(Watches::new(settings.shutdown.clone(), guard));
        Inbound {
            decoder: CommandDecoder::default(),
            batch: Batch::new(upstream, replies, settings),
            guard,
            settings,
            watching,
            revoked: None,
            reader: Reader::default(),
            run: Run::default(),
            partial_since: None,
            auth_deadline: Instant::now() + settings.auth_timeout,
            signed,
            settles,
        }
    }

    /// Not an `async fn`: its arguments would be kept twice in the future's state, which every
    /// idle connection holds.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<'c, R: AsyncRead + Unpin>(
        mut self,
        client: &'c mut R,
        mut buf: BytesMut,
    ) -> impl Future<Output = Result<ClientSide, RelayError>> + use<'a, 'c, W, R> {
        async move {
            // Made once and kept across waits, not remade for every command: the timer is
            // moved when the deadline does (a later one costs one atomic write) instead of
            // registered and removed again per command (docs/perf-profile.md, "A pinned
            // 1-deep producer").
            let mut deadline = std::pin::pin!(tokio::time::sleep_until(self.next_deadline().0));
            loop {
                if let Some(refusal) = self.forward_buffered(&mut buf).await? {
                    return self.refuse(refusal).await;
                }
                match self.wait(client, &mut buf, deadline.as_mut()).await? {
                    Woken::Read(0) => {
                        // Half-close toward nsqd: it answers what it owes, then closes its side.
                        let _ = self.batch.upstream.shutdown().await;
                        return Ok(ClientSide::Closed);
                    }
                    Woken::Read(_) => {}
                    Woken::Stopping => {
                        // Like a client that hung up: nsqd answers what it owes, then closes, and
                        // the other direction hands those answers to the client before closing it.
                        debug!(parent: &self.settings.span, "shutting down: no more commands from this client");
                        let _ = self.batch.upstream.shutdown().await;
                        return Ok(ClientSide::Stopping);
                    }
                    Woken::Deadline(expiry) => match expiry.refusal() {
                        Some(refusal) => return self.refuse(refusal).await,
                        None => return Ok(ClientSide::Idle),
                    },
                    Woken::Revoked(revocation) => self.start_revocation(revocation).await?,
                    Woken::Settle(settle) => {
                        // Settles come from the signed state's own channel: it exists.
                        if let Some(signed) = &self.signed {
                            let command = signed.settle_command(settle);
                            self.batch.write_now(&command).await?;
                        }
                    }
                }
            }
        }
    }

    /// Screens every command already buffered and forwards what passes, so one read becomes
    /// one write to nsqd. A refusal stops it: what came before is sent first, the refusal is
    /// returned to take its turn. Consecutive PUBs to one topic are gathered into a [`Run`]
    /// and judged together.
    async fn forward_buffered(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FatalReply>, RelayError> {
        // One clock reading for the batch, read again only after something waited.
        let mut now = std::time::Instant::now();
        let ended = loop {
            let decoded = match self.decoder.decode(buf, &self.settings.limits) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break Ended::Read,
                Err(e) => {
                    if let Some(limit) = e.size_limit() {
                        self.batch.metrics.size_limited(limit);
                    }
                    break Ended::Malformed(FatalReply::malformed(&e));
                }
            };
            // A signed publish is sealed on its own: only unsigned connections gather runs.
            // A PUB alone in its read (a 1-deep producer's) is judged at once.
            let alone = buf.is_empty() && self.run.is_empty();
            if self.signed.is_none() && Run::takes(&decoded) && !alone {
                if let Some(ready) = self.run.gather(decoded) {
                    if let Some(refusal) = self.forward_run(ready, &mut now).await? {
                        break Ended::Refused(refusal);
                    }
                }
                continue;
            }
            // What was gathered comes before this command.
            if !self.run.is_empty() {
                let gathered = self.forward_gathered(&mut now);
                if let Some(refusal) = gathered.await? {
                    break Ended::Refused(refusal);
                }
            }
            let verdict = match self.judge_now(&decoded, now) {
                Judged::Final(verdict) => verdict,
                waiting => Box::pin(self.judge_waiting(&decoded, waiting, &mut now)).await?,
            };
            match self.act(decoded, verdict) {
                Acted::Done => {}
                acted => {
                    if let Some(refusal) = self.finish(acted, &mut now).await? {
                        break Ended::Refused(refusal);
                    }
                }
            }
        };
        let refusal = match ended {
            // What was gathered came before the end of the read or the malformed command.
            Ended::Read => self.forward_gathered(&mut now).await?,
            Ended::Malformed(malformed) => {
                self.forward_gathered(&mut now).await?.or(Some(malformed))
            }
            Ended::Refused(refusal) => {
                // The PUBs gathered after the refused command go nowhere.
                drop(self.run.take());
                Some(refusal)
            }
        };
        self.batch.flush().await?;
        Ok(refusal)
    }

    /// Waits for the client's next bytes, or for whatever comes first instead.
    async fn wait<R: AsyncRead + Unpin>(
        &mut self,
        client: &mut R,
        buf: &mut BytesMut,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<Woken, RelayError> {
        self.partial_since = match (buf.is_empty(), self.partial_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, since) => since,
        };
        // One timer for every deadline: each is a few hundred bytes of every idle connection.
        let (deadline, expiry) = self.next_deadline();
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            // In a fixed order, the client's bytes last: a client that always has more to send
            // cannot keep shutdown, a deadline or a revocation from being seen.
            let woken = tokio::select! {
                biased;
                change = self.watching.next() => match change {
                    Change::Stopping => Woken::Stopping,
                    Change::Standing if self.revoked.is_some() => continue,
                    Change::Standing => match self.guard.reconsider() {
                        Some(revocation) => Woken::Revoked(revocation),
                        None => continue,
                    },
                },
                Some(settle) = next_settle(&mut self.settles) => Woken::Settle(settle),
                () = timer.as_mut() => match expiry {
                    Expiry::TokenExpired => Woken::Revoked(self.guard.token_expired()),
                    expiry => Woken::Deadline(expiry),
                },
                read = self.reader.read(client, buf) => {
                    Woken::Read(read.map_err(RelayError::Client)?)
                }
            };
            return Ok(woken);
        }
    }

    /// The earliest of the idle, slow-command, missing-AUTH and revocation-grace deadlines and
    /// a subscriber's token expiry.
    fn next_deadline(&self) -> (Instant, Expiry) {
        let now = Instant::now();
        let mut deadline = (now + self.settings.idle, Expiry::Idle);
        if let Some(since) = self.partial_since {
            let at = since + self.settings.partial_frame_timeout;
            if at < deadline.0 {
                deadline = (at, Expiry::PartialCommand);
            }
        }
        if self.guard.awaiting_identity() && self.auth_deadline < deadline.0 {
            deadline = (self.auth_deadline, Expiry::NoAuth);
        }
        match self.revoked {
            Some((grace_over, kind)) if grace_over < deadline.0 => {
                deadline = (grace_over, Expiry::GraceOver(kind));
            }
            Some(_) => {}
            None => {
                if let Some(until) = self.guard.subscribed_until() {
                    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                    if now + left < deadline.0 {
                        deadline = (now + left, Expiry::TokenExpired);
                    }
                }
            }
        }
        deadline
    }

    /// A subscriber's deliveries stop now; it may finish in-flight messages until the grace
    /// period ends, then it is told and disconnected. Anyone else (RDY before SUB would be an
    /// error) is told at once, after the replies nsqd still owes.
    async fn start_revocation(&mut self, revocation: Revocation) -> Result<(), RelayError> {
        debug!(parent: &self.settings.span, reason = %revocation.reason, "revoked");
        let grace = if revocation.subscribed {
            self.batch.write_now(b"RDY 0\n").await?;
            self.settings.revocation_grace
        } else {
            Duration::ZERO
        };
        self.revoked = Some((Instant::now() + grace, revocation.kind));
        Ok(())
    }

    async fn refuse(&mut self, refusal: FatalReply) -> Result<ClientSide, RelayError> {
        self.batch
            .replies
            .push(Slot::Refusal(Box::new(refusal)))
            .await;
        Ok(ClientSide::RefusalQueued)
    }
}

// === impl Expiry ===

impl Expiry {
    /// What the client is told when this deadline passes (nothing, when idle).
    fn refusal(self) -> Option<FatalReply> {
        let (kind, code, text) = match self {
            Expiry::Idle | Expiry::TokenExpired => return None,
            Expiry::PartialCommand => (
                Kind::ClientTimeout,
                ErrorCode::Invalid,
                "command not completed in time",
            ),
            Expiry::NoAuth => (
                Kind::ClientTimeout,
                ErrorCode::AuthFirst,
                "AUTH not sent in time",
            ),
            Expiry::GraceOver(kind) => (kind, ErrorCode::Unauthorized, "permission revoked"),
        };
        Some(FatalReply::new(kind, code, text))
    }
}

/// The next settle outcome; never, on a connection without signed topics.
async fn next_settle(settles: &mut Option<mpsc::Receiver<Settle>>) -> Option<Settle> {
    match settles {
        Some(settles) => settles.recv().await,
        None => std::future::pending().await,
    }
}
