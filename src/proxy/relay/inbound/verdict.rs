//! From one client command to what the relay does with it: the guard's verdict, carried
//! through the admission that may wait (an AUTH's shared identity slot, a publish's tokens),
//! then acted on: forwarded into the batch, answered locally after what came before, or
//! refused.

use std::future::Future;

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::Inbound;
use crate::error::FatalReply;
use crate::nsq::{Command, DecodedCommand};
use crate::proxy::guard::{Admission, AdmittedBy, Verdict};
use crate::proxy::relay::{RelayError, Slot};

/// What acting on a verdict leaves to do.
pub(super) enum Acted {
    Done,
    /// Answer the client with this frame, after what came before.
    Reply(Bytes),
    Refused(FatalReply),
}

// === impl Inbound (verdicts) ===

impl<'a, W: AsyncWrite + Unpin> Inbound<'a, W> {
    /// The verdict on one command: the guard's, carried through [`Inbound::admitted`]. The
    /// screening happens here; only the admission is a future (nesting it in another would
    /// keep the verdict twice in the state every idle connection holds).
    pub(super) fn judge<'s>(
        &'s mut self,
        decoded: &'s DecodedCommand,
        now: &'s mut std::time::Instant,
    ) -> impl Future<Output = Result<Verdict, RelayError>> + use<'a, 's, W> {
        let verdict = self.guard.screen_at(decoded, *now);
        self.admitted(decoded, verdict, now)
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

    /// The guard's `verdict` on `decoded`, carried through: an AUTH it answered claims the
    /// identity's shared slot, a publish it lets through is drawn from the rate limits.
    pub(super) async fn admitted(
        &mut self,
        decoded: &DecodedCommand,
        verdict: Verdict,
        now: &mut std::time::Instant,
    ) -> Result<Verdict, RelayError> {
        // The futures of the waits below run boxed: once per AUTH, and only when a publish
        // must wait for tokens, but inline they would make every idle connection's state as
        // large as theirs (2.7 KiB) while it waits for its client.
        if matches!(verdict, Verdict::Reply(_)) && decoded.command.name() == "AUTH" {
            let claim = self.guard.claim_shared_identity_slot(AdmittedBy::Auth);
            if let Some(refused) = Box::pin(claim).await {
                return Ok(refused);
            }
        }
        if !matches!(verdict, Verdict::Forward) || decoded.command.message_count() == 0 {
            return Ok(verdict);
        }
        // Usually there are tokens: settled at once, with no future and no timer.
        let (refused, waited) = match self.guard.admit_now(decoded, *now) {
            Admission::Settled(refused) => (refused, false),
            Admission::Pending(next) => {
                let mut admission = Box::pin(self.guard.admit_rest(decoded, *now, next));
                // Only a publish that must wait flushes what came before it, so batching
                // survives (a shared quota's lease is often ready at once) and nothing
                // earlier is held hostage.
                tokio::select! {
                    biased;
                    refused = &mut admission => (refused, false),
                    _ = std::future::ready(()) => {
                        self.batch.flush().await?;
                        (admission.await, true)
                    }
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
            None => verdict,
        })
    }
}
