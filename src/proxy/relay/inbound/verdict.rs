//! From one client command to what the relay does with it: the guard's verdict, carried
//! through the admission that may wait (an AUTH's shared identity slot, a publish's tokens),
//! then acted on: forwarded into the batch, answered locally after what came before, or
//! refused.

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::Inbound;
use crate::error::FatalReply;
use crate::nsq::{Command, DecodedCommand};
use crate::proxy::guard::{Admission, AdmittedBy, Verdict};
use crate::proxy::relay::{RelayError, Slot};

/// A verdict as far as it is known without waiting.
pub(super) enum Judged {
    Final(Verdict),
    /// An AUTH the guard answered with this frame: its identity's shared slot is claimed
    /// next (with Redis, that waits for it).
    Authenticated(Bytes),
    /// A publish let through, short of tokens (or drawing from a shared quota) from this
    /// draw on.
    Short(usize),
}

/// What acting on a verdict leaves to do.
pub(super) enum Acted {
    Done,
    /// Answer the client with this frame, after what came before.
    Reply(Bytes),
    Refused(FatalReply),
}

// === impl Inbound (verdicts) ===

impl<'a, W: AsyncWrite + Unpin> Inbound<'a, W> {
    /// The verdict on one command as far as it is known without waiting: the guard's, then
    /// for a publish it lets through the rate limits', which settle at once unless a limit
    /// binds or is shared through Redis.
    pub(super) fn judge_now(
        &mut self,
        decoded: &DecodedCommand,
        now: std::time::Instant,
    ) -> Judged {
        let verdict = self.guard.screen_at(decoded, now);
        self.judge_screened(decoded, verdict, now)
    }

    /// [`Inbound::judge_now`] for a command the guard already screened, saying `verdict`.
    pub(super) fn judge_screened(
        &mut self,
        decoded: &DecodedCommand,
        verdict: Verdict,
        now: std::time::Instant,
    ) -> Judged {
        match verdict {
            Verdict::Reply(frame) if decoded.command.name() == "AUTH" => {
                Judged::Authenticated(frame)
            }
            Verdict::Forward if decoded.command.message_count() > 0 => {
                match self.guard.admit_now(decoded, now) {
                    Admission::Settled(refused) => Judged::Final(refused.unwrap_or(verdict)),
                    Admission::Pending(next) => Judged::Short(next),
                }
            }
            verdict => Judged::Final(verdict),
        }
    }

    /// Does what `verdict` says with `decoded`, as far as that needs no waiting.
    pub(super) fn act(&mut self, decoded: DecodedCommand, verdict: Verdict) -> Acted {
        match verdict {
            Verdict::Drop => Acted::Done,
            Verdict::Forward if self.names_withheld(&decoded.command) => Acted::Done,
            Verdict::Forward => {
                let who = (self.guard.peer(), self.guard.principal());
                let outgoing = match &self.signed {
                    Some(signed) => signed.outgoing(decoded, &self.settings.limits, who),
                    None => Ok(decoded),
                };
                match outgoing {
                    Ok(decoded) => {
                        self.batch.push(&decoded);
                        Acted::Done
                    }
                    Err(refusal) => Acted::Refused(refusal),
                }
            }
            Verdict::Reply(frame) => Acted::Reply(frame),
            Verdict::Refuse(refusal) => Acted::Refused(refusal),
        }
    }

    /// The rest of [`Inbound::act`]: a local reply takes its turn; a refusal is handed back.
    pub(super) async fn finish(
        &mut self,
        acted: Acted,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        match acted {
            Acted::Done => Ok(None),
            Acted::Refused(refusal) => Ok(Some(refusal)),
            Acted::Reply(frame) => {
                // Everything before it goes first, then the local reply takes its turn.
                self.batch.flush().await?;
                self.batch.replies.push(Slot::Reply(frame)).await;
                *now = std::time::Instant::now();
                Ok(None)
            }
        }
    }

    /// Whether `command` names a delivery withheld from the client (never, unsigned).
    fn names_withheld(&self, command: &Command) -> bool {
        let signed = self.signed.as_ref();
        signed.is_some_and(|signed| signed.names_withheld(command))
    }

    /// The rest of a verdict that must wait: an AUTH's claim of its identity's shared slot,
    /// or a publish's tokens from draw `next` on (waiting in delay mode). The caller boxes
    /// this future: it is rare, and inline its waits would make every idle connection's state
    /// as large as theirs (2.7 KiB) while it waits for its client.
    pub(super) async fn judge_waiting(
        &mut self,
        decoded: &DecodedCommand,
        judged: Judged,
        now: &mut std::time::Instant,
    ) -> Result<Verdict, RelayError> {
        let next = match judged {
            Judged::Final(verdict) => return Ok(verdict),
            Judged::Authenticated(frame) => {
                let claim = self.guard.claim_shared_identity_slot(AdmittedBy::Auth);
                return Ok(claim.await.unwrap_or(Verdict::Reply(frame)));
            }
            Judged::Short(next) => next,
        };
        let (refused, waited) = {
            let mut admission = std::pin::pin!(self.guard.admit_rest(decoded, *now, next));
            // Only a publish that must wait flushes what came before it, so batching survives
            // (a shared quota's lease is often ready at once) and nothing earlier is held
            // hostage.
            tokio::select! {
                biased;
                refused = &mut admission => (refused, false),
                _ = std::future::ready(()) => {
                    self.batch.flush().await?;
                    (admission.await, true)
                }
            }
        };
        if waited {
            *now = std::time::Instant::now();
        }
        Ok(match refused {
            Some(refused) => refused,
            // Time passed: the token may have expired, or a reload revoked the right.
            None if waited => self.guard.recheck(decoded, *now),
            None => Verdict::Forward,
        })
    }
}
