//! Validated roles and rules, as [`super::load`] builds them and [`super::Policy::check`]
//! walks them. No I/O here.

use super::pattern::Pattern;
use super::{Action, RateQuota};

/// A named set of rules, as defined in exactly one policy file.
#[derive(Clone, Debug)]
pub(crate) struct Role {
    pub(crate) name: String,
    /// In file order: the `allow` list, then the `deny` list.
    pub(crate) rules: Vec<Rule>,
    /// Publish rate per identity holding the role.
    pub(crate) rate: Option<RateQuota>,
    /// Publish rate per identity holding the role, per topic.
    pub(crate) topic_rate: Option<RateQuota>,
    /// Quotas on new names per identity holding the role.
    pub(crate) names: Option<crate::limit::names::NameQuota>,
}

/// Whether a matching rule grants or refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// One entry of a role's `allow` or `deny` list.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    /// Stable name for logs and decisions: `writer.toml roles.writer.allow[0]`.
    pub(crate) id: String,
    pub(crate) effect: Effect,
    pub(crate) action: Action,
    /// Matches when any pattern matches the topic. Never empty.
    pub(crate) topics: Vec<Pattern>,
    /// `None` matches every channel, and also an operation with no channel (a topic-level
    /// admin action, or a subscribe check before the channel is known). `Some` matches only a
    /// channel named by one of its patterns. Always `None` for publish.
    pub(crate) channels: Option<Vec<Pattern>>,
    /// An audit rule (file `mode = "audit"` or rule `audit = true`) only reports what it would
    /// have decided; it never changes the decision.
    pub(crate) audit: bool,
}

// === impl Rule ===

impl Rule {
    /// Whether this rule's topic patterns match `topic`, whatever its action and channels.
    pub(crate) fn matches_topic(&self, identity: &str, topic: &str) -> bool {
        any_matches(&self.topics, topic, identity)
    }

    /// Whether the rule covers every channel, ephemeral ones included: it lists none (admin,
    /// deny), or its channel patterns include `**` and `**#ephemeral`.
    pub(crate) fn every_channel(&self) -> bool {
        self.channels.as_ref().is_none_or(|patterns| {
            let covers = |ephemeral: bool| {
                patterns
                    .iter()
                    .any(|p| p.covers_all() && p.is_ephemeral() == ephemeral)
            };
            covers(false) && covers(true)
        })
    }

    /// Makes every `*` cross `.`, as before segments (see [`super::Policy::with_crossing_stars`]).
    pub(crate) fn cross_segments(&mut self) {
        for pattern in self
            .topics
            .iter_mut()
            .chain(self.channels.iter_mut().flatten())
        {
            *pattern = pattern.legacy();
        }
    }

    /// Whether this rule applies to `action` on `topic` (and `channel`) for `identity`.
    pub(crate) fn matches(
        &self,
        identity: &str,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> bool {
        if action != self.action || !any_matches(&self.topics, topic, identity) {
            return false;
        }
        match (&self.channels, channel) {
            (None, _) => true,
            (Some(patterns), Some(channel)) => any_matches(patterns, channel, identity),
            (Some(_), None) => false,
        }
    }
}

fn any_matches(patterns: &[Pattern], name: &str, identity: &str) -> bool {
    patterns.iter().any(|p| p.matches(name, identity))
}
