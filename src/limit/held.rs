//! One session's rate-limit buckets, looked up once and then held: the identity's bucket for
//! the whole session, the identity+topic and topic buckets per topic published to (the most
//! recent [`TOPICS`]), and the `[rate_limits]` in force, re-read only when a reload bumped its
//! generation. A publish then costs no key, no hash and no map search, only a comparison of
//! its topic with the last one. A held bucket is never evicted from [`RateLimits`] (its
//! count of holders says it is in use), so a session and a newcomer always share one bucket
//! per key. No I/O here.

use std::sync::Arc;

use super::{Bucket, RateLimits, RateSettings};

/// How many topics' buckets one session holds; a publisher cycling through more looks the
/// older ones up again (one map search each), nothing worse.
pub(super) const TOPICS: usize = 8;

/// What a session holds for its publishes; built once per identity (a new AUTH starts afresh).
pub struct SessionBuckets {
    identity: Box<str>,
    /// The `[rate_limits]` in force when last looked at, and the generation it had.
    pub(super) settings: Arc<RateSettings>,
    pub(super) generation: u64,
    /// The identity's bucket, once a quota needed it.
    pub(super) own: Option<Arc<Bucket>>,
    /// Most recently published first.
    topics: Vec<TopicBuckets>,
}

/// The buckets of one topic a session published to, each once a quota needed it.
pub(super) struct TopicBuckets {
    topic: Box<str>,
    pub(super) pair: Option<Arc<Bucket>>,
    pub(super) everyone: Option<Arc<Bucket>>,
}

/// Which of a publish's buckets.
#[derive(Clone, Copy)]
pub(super) enum Scope {
    Identity,
    IdentityTopic,
    Topic,
}

// === impl SessionBuckets ===

impl SessionBuckets {
    pub fn new(limits: &RateLimits, identity: &str) -> SessionBuckets {
        let (generation, settings) = limits.settings_now();
        SessionBuckets {
            identity: identity.into(),
            settings,
            generation,
            own: None,
            topics: Vec::new(),
        }
    }

    /// Re-reads `[rate_limits]` if a reload replaced it since the last look.
    pub(super) fn refresh_settings(&mut self, limits: &RateLimits) {
        if limits.generation() != self.generation {
            (self.generation, self.settings) = limits.settings_now();
        }
    }

    /// The identity and the place for the scope's bucket (for `topic`, made the most
    /// recently used topic; a new one, the oldest forgotten past [`TOPICS`]).
    pub(super) fn slot(&mut self, scope: Scope, topic: &str) -> (&str, &mut Option<Arc<Bucket>>) {
        let SessionBuckets {
            identity,
            own,
            topics,
            ..
        } = self;
        let slot = match scope {
            Scope::Identity => own,
            Scope::IdentityTopic => &mut most_recent(topics, topic).pair,
            Scope::Topic => &mut most_recent(topics, topic).everyone,
        };
        (identity, slot)
    }

    #[cfg(test)]
    pub(super) fn topics_held(&self) -> usize {
        self.topics.len()
    }
}

// === impl Scope ===

impl Scope {
    /// The scope's name in a refusal.
    pub(super) fn name(self) -> &'static str {
        match self {
            Scope::Identity => "identity",
            Scope::IdentityTopic => "identity and topic",
            Scope::Topic => "topic",
        }
    }
}

/// The entry for `topic`, moved to the front (made if missing).
fn most_recent<'a>(topics: &'a mut Vec<TopicBuckets>, topic: &str) -> &'a mut TopicBuckets {
    match topics.iter().position(|held| *held.topic == *topic) {
        Some(at) => topics[..=at].rotate_right(1),
        None => {
            topics.truncate(TOPICS - 1);
            let fresh = TopicBuckets {
                topic: topic.into(),
                pair: None,
                everyone: None,
            };
            topics.insert(0, fresh);
        }
    }
    &mut topics[0]
}
