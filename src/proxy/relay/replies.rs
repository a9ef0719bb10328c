//! The FIFO of replies owed to the client, shared by the relay's two directions: the client →
//! nsqd side queues a slot before the commands it announces are written, the nsqd → client
//! side pairs each reply from nsqd with the oldest slot and sends nsqgate's own replies in
//! their turn.
//!
//! Both directions run in the connection's one task, so the lock is never contended. It
//! replaced a tokio channel of 256, which allocated its first block of 32 slots (1.3 KiB) and
//! its shared state for every connection however quiet; here nothing is allocated until a
//! slot is queued, and a queue that drained while its connection went quiet gives back any
//! storage beyond the first few slots (freeing those too made two allocations per message of a
//! 1-deep producer).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Slot;

/// How many reply slots may be outstanding before the client side stops reading; a client that
/// pipelines more than this waits for nsqd, which is the backpressure we want.
pub(super) const REPLY_SLOTS: usize = 256;

/// How many slots' storage a drained queue keeps (at most 160 bytes): what its first push
/// allocates.
const SLOTS_KEPT: usize = 4;

/// What one reply from nsqd answered.
pub(super) enum Answered {
    /// A publish, in a batch handed to nsqd at `sent`.
    Publish {
        sent: Instant,
    },
    Other,
}

/// The replies owed to the client, oldest first, at most `REPLY_SLOTS` of them.
#[derive(Default)]
pub(super) struct Replies {
    slots: Mutex<VecDeque<Slot>>,
    /// Wakes the nsqd → client side when one of nsqgate's own replies is queued. A slot for
    /// nsqd's replies wakes nobody: the reply it announces will, when it comes.
    local_queued: Notify,
    /// Wakes the client → nsqd side once a full queue has room again.
    room: Notify,
}

// === impl Replies ===

impl Replies {
    /// Queues `slot` behind every reply owed before it, once there is room.
    pub(super) async fn push(&self, slot: Slot) {
        loop {
            {
                let mut slots = self.lock();
                if slots.len() < REPLY_SLOTS {
                    let local = !matches!(slot, Slot::Upstream(_));
                    slots.push_back(slot);
                    drop(slots);
                    if local {
                        self.local_queued.notify_one();
                    }
                    return;
                }
            }
            // Only this side pushes: the room the other side makes cannot be taken meanwhile,
            // and a wake-up given before this wait begins is kept for it.
            self.room.notified().await;
        }
    }

    /// Completes once one of nsqgate's own replies may have been queued since the last call.
    pub(super) async fn local_queued(&self) {
        self.local_queued.notified().await;
    }

    /// Takes the oldest slot if it is one of nsqgate's own replies.
    pub(super) fn pop_local(&self) -> Option<Slot> {
        let mut slots = self.lock();
        match slots.front() {
            Some(Slot::Reply(_) | Slot::Refusal(_)) => self.pop_front(&mut slots),
            _ => None,
        }
    }

    /// Counts one reply from nsqd against the oldest slot, which is the one it answers; None
    /// when that slot is not nsqd's (nsqd owes nothing, or nsqgate's own reply is due first).
    /// The slot goes once all its replies came.
    pub(super) fn answer(&self) -> Option<Answered> {
        let mut slots = self.lock();
        let Some(Slot::Upstream(owed)) = slots.front_mut() else {
            return None;
        };
        owed.replies -= 1;
        // Replies come in command order; the batch's publishes are timed as one.
        let answered = match owed.publishes {
            0 => Answered::Other,
            _ => {
                owed.publishes -= 1;
                Answered::Publish { sent: owed.sent }
            }
        };
        if owed.replies == 0 {
            self.pop_front(&mut slots);
        }
        Some(answered)
    }

    /// Gives the storage beyond `SLOTS_KEPT` back when nothing is owed: called before the
    /// nsqd → client side waits, which on a quiet connection may last hours.
    pub(super) fn release_if_empty(&self) {
        let mut slots = self.lock();
        if slots.is_empty() && slots.capacity() > SLOTS_KEPT {
            *slots = VecDeque::new();
        }
    }

    /// Slots the queue has storage for.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    fn pop_front(&self, slots: &mut VecDeque<Slot>) -> Option<Slot> {
        let was_full = slots.len() >= REPLY_SLOTS;
        let slot = slots.pop_front();
        if was_full {
            self.room.notify_one();
        }
        slot
    }

    /// A holder cannot leave the queue half-changed (pushes and pops only).
    fn lock(&self) -> MutexGuard<'_, VecDeque<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
