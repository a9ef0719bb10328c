//! The per-connection cache of policy decisions: a small, fixed-size LRU, so a client that
//! publishes to 100,000 distinct topics costs a connection no more than a few kilobytes. A miss
//! only means one more policy check. Pure data structure; no I/O.

use std::collections::VecDeque;

use crate::policy::Action;

/// How many decisions one connection remembers. Real clients use a handful of topics; a linear
/// scan over this many short keys costs less than one hash of a long topic name would save.
pub(super) const CAPACITY: usize = 32;

type Key = (Action, String, String);

/// Most recently used first.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    entries: VecDeque<(Key, bool)>,
}

impl Decisions {
    /// The cached decision for `action` on `topic`/`channel`, marked most recently used.
    pub(super) fn get(&mut self, action: Action, topic: &str, channel: &str) -> Option<bool> {
        let matches = |((a, t, c), _): &(Key, bool)| *a == action && t == topic && c == channel;
        // Already the most recent (a publisher's one topic): found first, nothing to move.
        if let Some(front) = self.entries.front().filter(|entry| matches(entry)) {
            return Some(front.1);
        }
        let at = self.entries.iter().skip(1).position(matches)? + 1;
        let entry = self.entries.remove(at)?;
        let allowed = entry.1;
        self.entries.push_front(entry);
        Some(allowed)
    }

    /// Remembers a decision, forgetting the least recently used one when full.
    pub(super) fn insert(&mut self, action: Action, topic: &str, channel: &str, allowed: bool) {
        if self.entries.len() >= CAPACITY {
            self.entries.pop_back();
        }
        self.entries
            .push_front(((action, topic.to_owned(), channel.to_owned()), allowed));
    }

    pub(super) fn clear(&mut self) {
        // A fresh deque: the old one's capacity is given back.
        self.entries = VecDeque::new();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests;
