//! What one kept-alive connection has already written to the audit log, so its requests are
//! audited as the TCP path's commands are: one `auth` line per credential and one line per
//! allowed action and topic, under the policy in force. Every request is still authenticated
//! and checked for revocation; only a line identical to one this connection already wrote is
//! left out, and the allow it records stands for the same caller, action and names under the
//! same policy version (a decision is a function of exactly those). Another credential or
//! identity, or a policy reload (API keys, roles, CRLs all change its version), starts
//! afresh; a denial is always written (and ends the connection). Pure data; no I/O.

use std::collections::VecDeque;

use crate::policy::Action;

/// How many allowed decisions one connection remembers, as the TCP path's cache
/// (`proxy::guard::decisions`): a client using more topics than this only writes more lines.
const CAPACITY: usize = 32;

/// The caller a connection's audit lines were written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub identity: String,
    /// The presented secret's fingerprint; None for a certificate or the anonymous identity.
    pub fingerprint: Option<String>,
    /// A JWT's roles claim decides what it may do, so two tokens of one identity differ.
    pub claimed_roles: Vec<String>,
    pub policy_version: u64,
}

type Allowed = (Action, String, Option<String>);

#[derive(Debug, Default)]
pub struct Audited {
    who: Option<Who>,
    /// Allows written for `who`, most recent first.
    allowed: VecDeque<Allowed>,
}

// === impl Audited ===

impl Audited {
    /// Whether `who` is the caller this connection last audited.
    pub fn is_caller(&self, who: &Who) -> bool {
        self.who.as_ref() == Some(who)
    }

    /// Takes `who` as the connection's caller; the allows written for another are forgotten.
    pub fn set_caller(&mut self, who: &Who) {
        if !self.is_caller(who) {
            self.who = Some(who.clone());
            self.allowed.clear();
        }
    }

    /// Whether this allow was already written for `who` on this connection.
    pub fn allowed(&self, who: &Who, action: Action, topic: &str, channel: Option<&str>) -> bool {
        self.is_caller(who)
            && self
                .allowed
                .iter()
                .any(|(a, t, c)| *a == action && t == topic && c.as_deref() == channel)
    }

    /// Notes an allow written for `who` (nothing if the connection's caller changed since).
    pub fn note_allowed(&mut self, who: &Who, action: Action, topic: &str, channel: Option<&str>) {
        if !self.is_caller(who) || self.allowed(who, action, topic, channel) {
            return;
        }
        if self.allowed.len() >= CAPACITY {
            self.allowed.pop_back();
        }
        let entry = (action, topic.to_owned(), channel.map(str::to_owned));
        self.allowed.push_front(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(identity: &str, version: u64) -> Who {
        Who {
            identity: identity.into(),
            fingerprint: Some("0123456789ab".into()),
            claimed_roles: Vec::new(),
            policy_version: version,
        }
    }

    #[test]
    fn an_allow_is_remembered_for_its_caller_and_policy_version_only() {
        let mut audited = Audited::default();
        let alice = who("alice", 1);
        assert!(!audited.is_caller(&alice));
        audited.set_caller(&alice);
        audited.note_allowed(&alice, Action::Publish, "orders", None);
        assert!(audited.allowed(&alice, Action::Publish, "orders", None));
        assert!(!audited.allowed(&alice, Action::Publish, "orders2", None));
        assert!(!audited.allowed(&alice, Action::Subscribe, "orders", Some("c")));
        // Another caller, or the same after a reload: nothing is known for it.
        let bob = who("bob", 1);
        assert!(!audited.allowed(&bob, Action::Publish, "orders", None));
        let reloaded = who("alice", 2);
        audited.set_caller(&reloaded);
        assert!(!audited.allowed(&reloaded, Action::Publish, "orders", None));
        assert!(!audited.allowed(&alice, Action::Publish, "orders", None));
    }

    #[test]
    fn an_allow_noted_after_the_caller_changed_is_dropped() {
        let mut audited = Audited::default();
        let (alice, bob) = (who("alice", 1), who("bob", 1));
        audited.set_caller(&bob);
        audited.note_allowed(&alice, Action::Publish, "orders", None);
        assert!(!audited.allowed(&alice, Action::Publish, "orders", None));
        assert!(!audited.allowed(&bob, Action::Publish, "orders", None));
    }

    #[test]
    fn at_most_capacity_allows_are_kept() {
        let mut audited = Audited::default();
        let alice = who("alice", 1);
        audited.set_caller(&alice);
        for n in 0..CAPACITY + 5 {
            audited.note_allowed(&alice, Action::Publish, &format!("t{n}"), None);
        }
        assert_eq!(audited.allowed.len(), CAPACITY);
        assert!(!audited.allowed(&alice, Action::Publish, "t0", None));
        assert!(audited.allowed(&alice, Action::Publish, &format!("t{}", CAPACITY + 4), None));
    }
}
