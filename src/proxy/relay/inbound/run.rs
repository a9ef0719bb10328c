//! Consecutive PUBs to one topic from one read of the client, judged together. The guard
//! screens the first; the rest are the same command on the same topic, under the same state,
//! credential, policy and clock reading, so they share its verdict. The rate limits then draw
//! the whole run's messages and bytes at once from the tokens the connection leased ahead.
//! When the leases do not cover the run (or the first is not let through), each publish is
//! judged on its own, exactly as any other command: a run changes what a publish costs, never
//! what happens to it (docs/perf-profile.md, "Runs of publishes").

use std::future::Future;
use std::sync::Arc;

use tokio::io::AsyncWrite;

use super::verdict::Judged;
use super::Inbound;
use crate::error::FatalReply;
use crate::nsq::{Command, DecodedCommand};
use crate::proxy::guard::Verdict;
use crate::proxy::relay::RelayError;

/// At most this many publishes wait in a run, so what one read holds unjudged stays small.
const LONGEST: usize = 32;

/// PUBs to one topic, in the order read, not yet judged.
#[derive(Default)]
pub(super) struct Run {
    publishes: Vec<DecodedCommand>,
}

/// A run to judge publish by publish: its first, with the guard's verdict on it, and the rest.
struct OneByOne {
    first: DecodedCommand,
    verdict: Verdict,
    rest: std::vec::IntoIter<DecodedCommand>,
}

// === impl Run ===

impl Run {
    /// Whether `decoded` is a command runs are made of: a PUB.
    pub(super) fn takes(decoded: &DecodedCommand) -> bool {
        matches!(decoded.command, Command::Pub { .. })
    }

    /// Adds the PUB `decoded` to the run, and hands back a run to judge now: the one before
    /// it, when `decoded` is to another topic (it then starts the next run), or this one once
    /// it is full.
    pub(super) fn gather(&mut self, decoded: DecodedCommand) -> Option<Vec<DecodedCommand>> {
        let ended = if self.continued_by(&decoded) {
            None
        } else {
            Some(self.take())
        };
        if self.publishes.is_empty() {
            // Made once for the whole run rather than grown step by step: a PUB is gathered
            // only when more is buffered after it, so a run of one is the exception.
            self.publishes.reserve_exact(LONGEST);
        }
        self.publishes.push(decoded);
        ended.or_else(|| (self.publishes.len() >= LONGEST).then(|| self.take()))
    }

    /// The run so far, to judge; the run is empty afterwards (and holds no memory).
    pub(super) fn take(&mut self) -> Vec<DecodedCommand> {
        std::mem::take(&mut self.publishes)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.publishes.is_empty()
    }

    /// Whether the PUB `decoded` goes on this run: the run is empty or to the same topic (the
    /// decoder shares one name while a client keeps publishing to one topic).
    fn continued_by(&self, decoded: &DecodedCommand) -> bool {
        match (self.publishes.first(), &decoded.command) {
            (None, _) => true,
            (Some(first), Command::Pub { topic, .. }) => {
                matches!(&first.command, Command::Pub { topic: run, .. } if Arc::ptr_eq(run, topic))
            }
            _ => false,
        }
    }
}

// === impl Inbound (runs) ===

impl<'a, W: AsyncWrite + Unpin> Inbound<'a, W> {
    /// [`Inbound::forward_run`] on the run gathered so far.
    pub(super) fn forward_gathered<'s>(
        &'s mut self,
        now: &'s mut std::time::Instant,
    ) -> impl Future<Output = Result<Option<FatalReply>, RelayError>> + use<'a, 's, W> {
        let gathered = self.run.take();
        self.forward_run(gathered, now)
    }

    /// Judges a run and forwards what passes: all of it at once when its first publish is let
    /// through and the leases cover the rest; otherwise each publish on its own, the first
    /// with the verdict it already has.
    pub(super) async fn forward_run(
        &mut self,
        publishes: Vec<DecodedCommand>,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        // Boxed: the less common way (a run of one, a refusal, leases that fall short), and
        // inline its waits would make the state every idle connection holds as large as
        // theirs. Made in its own scope, so what it takes over is not kept beside it while it
        // runs.
        let one_by_one = match self.forward_at_once(publishes, *now) {
            None => return Ok(None),
            Some(left) => Box::pin(self.forward_each(left, now)),
        };
        one_by_one.await
    }

    /// Forwards the run at once if it may be; otherwise hands it back, judged as far as its
    /// first publish.
    fn forward_at_once(
        &mut self,
        publishes: Vec<DecodedCommand>,
        now: std::time::Instant,
    ) -> Option<OneByOne> {
        let mut publishes = publishes.into_iter();
        let first = publishes.next()?;
        let verdict = self.guard.screen_at(&first, now);
        let rest = publishes.as_slice();
        if !rest.is_empty()
            && matches!(verdict, Verdict::Forward)
            && self.guard.admit_run_leased(&first, rest)
        {
            self.batch.push(&first);
            for decoded in publishes {
                self.batch.push(&decoded);
            }
            return None;
        }
        Some(OneByOne {
            first,
            verdict,
            rest: publishes,
        })
    }

    /// A run's publishes judged one by one, the first with the guard's `verdict` on it.
    async fn forward_each(
        &mut self,
        OneByOne {
            first,
            verdict,
            rest,
        }: OneByOne,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        let judged = self.judge_screened(&first, verdict, *now);
        if let Some(refusal) = self.carry_out(first, judged, now).await? {
            return Ok(Some(refusal));
        }
        for decoded in rest {
            let judged = self.judge_now(&decoded, *now);
            if let Some(refusal) = self.carry_out(decoded, judged, now).await? {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }

    /// Waits for what `judged` still waits for, then acts on the verdict.
    async fn carry_out(
        &mut self,
        decoded: DecodedCommand,
        judged: Judged,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        let verdict = self.judge_waiting(&decoded, judged, now).await?;
        let acted = self.act(decoded, verdict);
        self.finish(acted, now).await
    }
}
