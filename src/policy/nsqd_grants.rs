//! The policy as nsqd's HTTP auth protocol expresses it: for one subject, a list of
//! authorizations (a topic regex, channel regexes, `publish` or `subscribe`). No I/O here.
//!
//! nsqd only knows grants, never refusals, and matches regexes unanchored; so every regex is
//! anchored, and a publish grant carries the channel regex `^$` (nsqd checks a publish as the
//! empty channel). A deny rule cannot carve a hole in a wildcard grant this way, so nsqgate
//! fails closed: an allow pattern (a topic, or a topic and channel pair) that any enforcing
//! deny of the same action could overlap is left out whole, and named in
//! [`NsqdGrants::omitted`]. What nsqd is told is therefore never more than nsqgate allows,
//! and exactly that when no deny overlaps an allow. Audit rules only report, so they grant
//! nothing here; `admin` has no counterpart in nsqd's protocol.

use serde::Serialize;

use super::pattern::Pattern;
use super::rule::{Effect, Rule};
use super::{Action, Policy, Subject};

/// The channel regex of a publish grant: nsqd checks a publish against the empty channel.
pub const PUBLISH_CHANNEL: &str = "^$";

/// Every channel nsqd accepts, for an allow rule that lists none.
const EVERY_CHANNEL: &str = r"^[.0-9A-Za-z_\-]+(#ephemeral)?$";

/// One entry of the `authorizations` list nsqd reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NsqdAuthorization {
    /// Anchored regex over topic names.
    pub topic: String,
    /// Anchored regexes over channel names; `["^$"]` for a publish grant.
    pub channels: Vec<String>,
    /// `publish` or `subscribe`.
    pub permissions: Vec<&'static str>,
}

/// What one subject gets from nsqd, and what had to be left out.
#[derive(Clone, Debug, Default)]
pub struct NsqdGrants {
    pub authorizations: Vec<NsqdAuthorization>,
    /// Allow rules (some of) whose patterns were left out, each with the deny rule that
    /// overlaps them: `roles.x.allow[0] (topic 1) overlaps roles.x.deny[0]`.
    pub omitted: Vec<String>,
}

// === impl Policy ===

impl Policy {
    /// The authorizations nsqd should hold for `subject`: every enforcing allow of its roles
    /// for publish and subscribe, as anchored regexes, less what an enforcing deny overlaps.
    pub fn nsqd_grants(&self, subject: &Subject<'_>) -> NsqdGrants {
        let rules: Vec<&Rule> = self
            .roles
            .iter()
            .enumerate()
            .filter(|&(index, _)| self.has_role(subject, index))
            .flat_map(|(_, role)| role.rules.iter())
            .filter(|rule| !rule.audit)
            .collect();
        let mut grants = NsqdGrants::default();
        for allow in rules.iter().filter(|r| r.effect == Effect::Allow) {
            let permission = match allow.action {
                Action::Publish => "publish",
                Action::Subscribe => "subscribe",
                Action::Admin => continue,
            };
            let denies: Vec<&Rule> = rules
                .iter()
                .copied()
                .filter(|r| r.effect == Effect::Deny && r.action == allow.action)
                .collect();
            for (at, topic) in allow.topics.iter().enumerate() {
                let Some(topic_regex) = topic.go_regex(subject.identity) else {
                    continue;
                };
                let channels = grant_channels(allow, topic, &denies, subject.identity, |deny| {
                    let what = format!("{} (topic {at}) overlaps {}", allow.id, deny.id);
                    if !grants.omitted.contains(&what) {
                        grants.omitted.push(what);
                    }
                });
                if !channels.is_empty() {
                    grants.add(topic_regex, channels, permission);
                }
            }
        }
        grants
    }
}

/// The channel regexes `allow` grants on `topic`, less every channel pattern a deny overlaps
/// (`omit` hears of each such deny). Publish: `^$`, or nothing when a deny overlaps the topic.
fn grant_channels(
    allow: &Rule,
    topic: &Pattern,
    denies: &[&Rule],
    identity: &str,
    mut omit: impl FnMut(&Rule),
) -> Vec<String> {
    let candidates: Vec<Option<&Pattern>> = match (&allow.channels, allow.action) {
        (Some(patterns), Action::Subscribe) => patterns.iter().map(Some).collect(),
        _ => vec![None],
    };
    let mut out = Vec::new();
    for channel in candidates {
        let overlapping = denies.iter().find(|deny| {
            let topics = deny.topics.iter().any(|t| t.overlaps(topic, identity));
            topics
                && match (&deny.channels, channel) {
                    // A deny with no channel list covers every channel; an allow with none
                    // covers every channel any deny lists.
                    (None, _) | (Some(_), None) => true,
                    (Some(denied), Some(channel)) => {
                        denied.iter().any(|d| d.overlaps(channel, identity))
                    }
                }
        });
        if let Some(deny) = overlapping {
            omit(deny);
            continue;
        }
        let regex = match (allow.action, channel) {
            (Action::Publish, _) => Some(PUBLISH_CHANNEL.to_owned()),
            (_, Some(channel)) => channel.go_regex(identity),
            (_, None) => Some(EVERY_CHANNEL.to_owned()),
        };
        out.extend(regex);
    }
    out
}

// === impl NsqdGrants ===

impl NsqdGrants {
    /// Adds channels to the grant of `topic` and `permission`, or a new grant.
    fn add(&mut self, topic: String, channels: Vec<String>, permission: &'static str) {
        let existing = self
            .authorizations
            .iter_mut()
            .find(|a| a.topic == topic && a.permissions == [permission]);
        match existing {
            Some(grant) => {
                for channel in channels {
                    if !grant.channels.contains(&channel) {
                        grant.channels.push(channel);
                    }
                }
            }
            None => self.authorizations.push(NsqdAuthorization {
                topic,
                channels,
                permissions: vec![permission],
            }),
        }
    }
}

#[cfg(test)]
mod tests;
