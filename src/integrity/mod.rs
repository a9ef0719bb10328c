//! End-to-end message integrity, sans-io: which topics are signed and with which keys, and the
//! envelope each message body travels in through nsqd. No sockets here; the relay and the HTTP
//! front call [`TopicSeal::seal`] on publishes and [`TopicSeal::open`] on deliveries.
//!
//! - `envelope`: the byte layout, sealing and opening (HMAC-SHA256, constant-time compare).
//! - `keyring`: keys by id; key material never printed.
//! - `publish`: PUB, DPUB and MPUB resealed, with sizes judged after sealing.
//!
//! Facts a caller relies on: a sealed body is [`TopicSeal::overhead`] bytes longer than the
//! original; a topic matched by a rule is signed for every publish and verified for every
//! delivery; the quarantine topic of a rule is never itself a signed topic (config refuses it).

pub mod envelope;
pub mod keyring;
pub mod publish;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

use crate::policy::pattern::Pattern;
pub use envelope::Rejection;
pub use keyring::{Key, KeyError, KeyId, Keyring};

/// The validated `[integrity]` section: rules in order, the first matching a topic applies.
#[derive(Clone, Debug, Default)]
pub struct Integrity {
    rules: Vec<Arc<Rule>>,
}

/// Which topics one rule signs, with which keys, and where failures go.
#[derive(Debug)]
pub struct Rule {
    patterns: Vec<Pattern>,
    /// The key new messages are sealed with.
    signing: Key,
    /// Keys a delivered message may be sealed with (the signing key among them): a retired
    /// key stays here until nothing signed with it is left in nsqd.
    accepted: Vec<Key>,
    quarantine_topic: String,
}

/// One topic's rule, resolved: seals publishes to it and opens deliveries from it.
#[derive(Clone, Debug)]
pub struct TopicSeal {
    topic: String,
    rule: Arc<Rule>,
}

// === impl Integrity ===

impl Integrity {
    pub fn new(rules: Vec<Rule>) -> Integrity {
        Integrity {
            rules: rules.into_iter().map(Arc::new).collect(),
        }
    }

    /// The seal for `topic`, when a rule signs it.
    pub fn for_topic(&self, topic: &str) -> Option<TopicSeal> {
        let rule = self.rules.iter().find(|rule| rule.covers(topic))?;
        Some(TopicSeal {
            topic: topic.to_owned(),
            rule: rule.clone(),
        })
    }

    /// Whether any rule signs `topic`.
    pub fn signs(&self, topic: &str) -> bool {
        self.rules.iter().any(|rule| rule.covers(topic))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

// === impl Rule ===

impl Rule {
    /// A rule over `patterns` (policy syntax; `${identity}` is refused by the loader). The
    /// signing key is accepted whether or not `accepted` names it.
    pub fn new(
        patterns: &[String],
        signing: Key,
        mut accepted: Vec<Key>,
        quarantine_topic: String,
    ) -> Result<Rule, String> {
        let patterns = patterns
            .iter()
            .map(|text| {
                if text.contains("${") {
                    return Err(format!(
                        "pattern {text:?}: no placeholders in integrity rules"
                    ));
                }
                Pattern::parse(text)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("a rule needs at least one topic pattern".to_owned());
        }
        if !accepted.iter().any(|key| key.id() == signing.id()) {
            accepted.push(signing.clone());
        }
        Ok(Rule {
            patterns,
            signing,
            accepted,
            quarantine_topic,
        })
    }

    fn covers(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic, ""))
    }

    pub fn quarantine_topic(&self) -> &str {
        &self.quarantine_topic
    }
}

// === impl TopicSeal ===

impl TopicSeal {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Bytes sealing adds to each message body.
    pub fn overhead(&self) -> usize {
        envelope::overhead(&self.rule.signing)
    }

    /// The body in its envelope, signed with the rule's signing key.
    pub fn seal(&self, body: &[u8]) -> Bytes {
        envelope::seal(&self.rule.signing, &self.topic, body)
    }

    /// The original body, when `sealed` verifies under an accepted key.
    pub fn open(&self, sealed: &Bytes) -> Result<Bytes, Rejection> {
        envelope::open(&self.rule.accepted, &self.topic, sealed)
    }

    /// Where messages that fail to open are copied.
    pub fn quarantine_topic(&self) -> &str {
        &self.rule.quarantine_topic
    }

    /// The id of the key new messages are signed with.
    pub fn signing_key(&self) -> &KeyId {
        self.rule.signing.id()
    }
}
