//! What can end a relaying connection without a byte from its client: shutdown, a policy
//! reload (a CRL's too) and an operator's revocation. One future watches all three, kept for
//! the connection's life and made again only after it fired. Made per command, as it was, it
//! joined three process-wide wait lists under their locks and left them again for every
//! message (docs/perf-profile.md, "Where P0's instructions go").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::revocations::Revoked;
use crate::policy::Policy;
use crate::proxy::guard::Guard;

use super::woken::WhenWoken;

/// The connection's receivers of the process-wide changes.
pub(super) struct Watches {
    shutdown: watch::Receiver<bool>,
    policy: watch::Receiver<Arc<Policy>>,
    revocations: watch::Receiver<Arc<Revoked>>,
}

/// The wait for the next change; completes with the receivers, to wait again.
type Changed = Pin<Box<dyn Future<Output = Watches> + Send>>;

/// The wait, polled only when one of its receivers woke it.
pub(super) struct Watching(WhenWoken<Changed>);

/// What changed.
pub(super) enum Change {
    /// Shutdown was asked for.
    Stopping,
    /// The policy or the revocations: the connection's standing is to be judged again.
    Standing,
}

// === impl Watches ===

impl Watches {
    pub(super) fn new(shutdown: watch::Receiver<bool>, guard: &Guard) -> Watches {
        let (policy, revocations) = guard.watches();
        Watches {
            shutdown,
            policy,
            revocations,
        }
    }

    /// Completes when any of them changed. A receiver whose sender is gone (never, while the
    /// process runs) is left out rather than seen as a change.
    async fn changed(mut self) -> Watches {
        tokio::select! {
            biased;
            Ok(()) = self.shutdown.changed() => {}
            Ok(()) = self.policy.changed() => {}
            Ok(()) = self.revocations.changed() => {}
            else => std::future::pending().await,
        }
        self
    }
}

// === impl Watching ===

impl Watching {
    /// Its first change comes at once: the connection is judged when its relay starts (a
    /// change may have come between its admission and now), then after every change.
    pub(super) fn starting(watches: Watches) -> Watching {
        Watching(WhenWoken::new(Box::pin(std::future::ready(watches))))
    }

    /// The next change: shutdown, or something the guard must judge. Cancel-safe: the wait
    /// itself lives on in `self`.
    pub(super) async fn next(&mut self) -> Change {
        let watches = (&mut self.0).await;
        let stopping = *watches.shutdown.borrow();
        self.0.set(Box::pin(watches.changed()));
        if stopping {
            Change::Stopping
        } else {
            Change::Standing
        }
    }
}
