//! Consecutive PUBs to one topic from one read of the client, judged together. The guard
//! screens the first; the rest are the same command on the same topic, under the same state,
//! credential, policy and clock reading, so they share its verdict. The rate limits then draw
//! the whole run's messages and bytes at once from the tokens the connection leased ahead.
//! When the leases do not cover the run (or the first is not let through), each publish is
//! judged on its own, exactly as any other command: a run changes what a publish costs, never
//! what happens to it (docs/perf-profile.md, "Runs of publishes").

use std::sync::Arc;

use tokio::io::AsyncWrite;

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

// === impl Run ===

impl Run {
    /// Whether `decoded` is a command runs are made of: a PUB.
    pub(super) fn takes(decoded: &DecodedCommand) -> bool {
        matches!(decoded.command, Command::Pub { .. })
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

impl<W: AsyncWrite + Unpin> Inbound<'_, W> {
    /// Adds the PUB `decoded` to the run; the run before it goes first when it is to another
    /// topic, and a run that is full goes at once.
    pub(super) async fn gather(
        &mut self,
        decoded: DecodedCommand,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        if !self.run.continued_by(&decoded) {
            if let Some(refusal) = self.forward_run(now).await? {
                return Ok(Some(refusal));
            }
        }
        if self.run.publishes.len() == 1 {
            // Grown once for the whole run rather than step by step.
            self.run.publishes.reserve_exact(LONGEST - 1);
        }
        self.run.publishes.push(decoded);
        if self.run.publishes.len() < LONGEST {
            return Ok(None);
        }
        self.forward_run(now).await
    }

    /// Judges the run gathered so far and forwards what passes: all of it at once when its
    /// first publish is let through and the leases cover the rest; otherwise each publish on
    /// its own, the first with the verdict it already has. The run is empty afterwards.
    pub(super) async fn forward_run(
        &mut self,
        now: &mut std::time::Instant,
    ) -> Result<Option<FatalReply>, RelayError> {
        // Taken, not drained: between reads a connection holds no run's memory.
        let mut publishes = std::mem::take(&mut self.run.publishes).into_iter();
        let Some(first) = publishes.next() else {
            return Ok(None);
        };
        let verdict = self.guard.screen_at(&first, *now);
        let rest = publishes.as_slice();
        if !rest.is_empty()
            && matches!(verdict, Verdict::Forward)
            && self.guard.admit_run_leased(&first, rest)
        {
            self.batch.push(&first);
            for decoded in publishes {
                self.batch.push(&decoded);
            }
            return Ok(None);
        }
        let verdict = self.admitted(&first, verdict, now).await?;
        if let Some(refusal) = self.act(first, verdict, now).await? {
            return Ok(Some(refusal));
        }
        for decoded in publishes {
            if let Some(refusal) = self.forward_one(decoded, now).await? {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }
}
