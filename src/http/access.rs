//! What a caller may see or do over HTTP, as pure questions to the policy. No I/O, no audit
//! (listing filters ask many questions; only the decisions that gate a request are audited, in
//! `caller`).
//!
//! "Every topic" is decided by the policy from its rules' structure
//! ([`Policy::allows_everywhere`]), never by probing names.

use crate::policy::{Action, Policy, Subject};

/// One caller's view of one policy version.
pub struct Access<'a> {
    pub policy: &'a Policy,
    pub subject: Subject<'a>,
}

// === impl Access ===

impl Access<'_> {
    pub fn may(&self, action: Action, topic: &str, channel: Option<&str>) -> bool {
        self.policy
            .check(&self.subject, action, topic, channel)
            .decision
            .is_allow()
    }

    /// The action on every topic (every channel too, for subscribe): `**` and `**#ephemeral`.
    pub fn global(&self, action: Action) -> bool {
        self.policy.allows_everywhere(&self.subject, action)
    }

    /// Admin on every topic: the operator's view (debug, config, metrics, every producer).
    pub fn global_admin(&self) -> bool {
        self.global(Action::Admin)
    }

    /// Read access to cluster-wide views (nsqadmin pages): admin or subscribe on every topic.
    pub fn global_read(&self) -> bool {
        self.global_admin() || self.global(Action::Subscribe)
    }

    /// A channel is visible to whoever may subscribe to it or administer it.
    pub fn channel_visible(&self, topic: &str, channel: &str) -> bool {
        self.may(Action::Subscribe, topic, Some(channel))
            || self.may(Action::Admin, topic, Some(channel))
    }

    /// A topic is visible to whoever may administer or publish to it, subscribe to some channel
    /// of it (existing or not: a consumer must discover a topic before its channel exists),
    /// or see one of its existing `channels`.
    pub fn topic_visible<'c>(
        &self,
        topic: &str,
        channels: impl IntoIterator<Item = &'c str>,
    ) -> bool {
        self.may(Action::Admin, topic, None)
            || self.may(Action::Publish, topic, None)
            || self.policy.may_subscribe_somewhere(&self.subject, topic)
            || channels
                .into_iter()
                .any(|channel| self.channel_visible(topic, channel))
    }
}
