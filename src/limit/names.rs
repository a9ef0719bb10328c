//! Quotas on creating names in nsqd: every topic and channel nsqd creates costs it memory (and a
//! channel stores a copy of every message), so each identity may create only so many new topics
//! and channels per minute, and only so many names in all. Checked before the command reaches
//! nsqd; shared by the TCP listeners and the HTTP front. No I/O here.
//!
//! "New" means new as far as this nsqgate process knows: a bounded set of names it has already
//! let through (as hashes). nsqgate does not ask nsqd (that would cost a round trip on a cache
//! miss and an HTTP address nsqgate may not have), so after a restart the first use of an
//! existing name counts once against its user's quota: conservative, and bounded by it.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use dashmap::{DashMap, DashSet};

/// Names remembered as known; past this, further names are not remembered (each use of one
/// counts as new for an identity that has not created it), so memory stays bounded.
const KNOWN_CAP: usize = 1 << 18;

/// A quota on new names, as `[name_quotas]` and a role's `names` write it. A field left out is
/// not set (a role then leaves it to the default); 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameQuota {
    pub new_topics_per_minute: Option<u32>,
    pub new_channels_per_minute: Option<u32>,
    /// Most distinct topics and channels one identity may create (per nsqgate process).
    pub max_names: Option<u32>,
}

/// The defaults: generous for services that create names as they go, bounding for a client
/// that creates them in a loop (nsqd holds roughly 150 KiB per empty topic).
pub const DEFAULT: NameQuota = NameQuota {
    new_topics_per_minute: Some(100),
    new_channels_per_minute: Some(100),
    max_names: Some(1_000),
};

impl NameQuota {
    /// Field by field, the larger allowance (0 = unlimited wins); an unset field stays unset.
    pub fn most_generous(a: Option<NameQuota>, b: Option<NameQuota>) -> Option<NameQuota> {
        fn wider(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (Some(0), _) | (_, Some(0)) => Some(0),
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        match (a, b) {
            (Some(a), Some(b)) => Some(NameQuota {
                new_topics_per_minute: wider(a.new_topics_per_minute, b.new_topics_per_minute),
                new_channels_per_minute: wider(
                    a.new_channels_per_minute,
                    b.new_channels_per_minute,
                ),
                max_names: wider(a.max_names, b.max_names),
            }),
            (a, b) => a.or(b),
        }
    }

    /// Each field of `self`, or of `defaults` where `self` leaves it unset.
    pub fn over(self, defaults: NameQuota) -> NameQuota {
        NameQuota {
            new_topics_per_minute: self
                .new_topics_per_minute
                .or(defaults.new_topics_per_minute),
            new_channels_per_minute: self
                .new_channels_per_minute
                .or(defaults.new_channels_per_minute),
            max_names: self.max_names.or(defaults.max_names),
        }
    }
}

/// Which quota refused a name; `Display` names it for the client's error and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameRefused {
    #[error("name quota exceeded: new topics per minute ({0})")]
    TopicsPerMinute(u32),
    #[error("name quota exceeded: new channels per minute ({0})")]
    ChannelsPerMinute(u32),
    #[error("name quota exceeded: most names per identity ({0})")]
    MaxNames(u32),
}

/// One identity's creations: a token bucket per kind (capacity = the per-minute quota, refilled
/// evenly over the minute) and the hashes of the names it created.
#[derive(Debug)]
struct Tally {
    topics: Window,
    channels: Window,
    created: HashSet<u64>,
}

#[derive(Debug)]
struct Window {
    /// Tokens left; None until first used (then full).
    tokens: Option<f64>,
    updated: Instant,
}

impl Window {
    fn new() -> Window {
        Window {
            tokens: None,
            updated: Instant::now(),
        }
    }

    fn available(&mut self, per_minute: u32, now: Instant) -> f64 {
        let capacity = f64::from(per_minute);
        let refill = now.duration_since(self.updated).as_secs_f64() * capacity / 60.0;
        let tokens = self.tokens.map_or(capacity, |t| (t + refill).min(capacity));
        self.tokens = Some(tokens);
        self.updated = now;
        tokens
    }
}

/// The shared name quotas of one nsqgate process.
#[derive(Debug)]
pub struct NameQuotas {
    /// `[name_quotas]`, replaced on reload; tallies so far stay.
    defaults: std::sync::Mutex<NameQuota>,
    hasher: RandomState,
    known: DashSet<u64>,
    tallies: DashMap<String, Mutex<Tally>>,
}

// === impl NameQuotas ===

impl NameQuotas {
    pub fn new(defaults: NameQuota) -> NameQuotas {
        NameQuotas {
            defaults: std::sync::Mutex::new(defaults),
            hasher: RandomState::new(),
            known: DashSet::new(),
            tallies: DashMap::new(),
        }
    }

    /// Puts reloaded `[name_quotas]` in force for the next new name.
    pub fn set_defaults(&self, defaults: NameQuota) {
        *self.defaults.lock().unwrap_or_else(|e| e.into_inner()) = defaults;
    }

    fn defaults(&self) -> NameQuota {
        *self.defaults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `identity` for the names a publish (`channel` None) or SUB (`channel` Some)
    /// would create: the topic, and the channel. Names already known are free; a refusal
    /// charges nothing. `role` is what the identity's roles set ([`NameQuota::most_generous`]).
    pub fn admit(
        &self,
        identity: &str,
        role: Option<NameQuota>,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(), NameRefused> {
        let topic_hash = self.hasher.hash_one(("topic", topic));
        let channel_hash = channel.map(|channel| self.hasher.hash_one(("channel", topic, channel)));
        let new_topic = !self.known.contains(&topic_hash);
        let new_channel = channel_hash.filter(|hash| !self.known.contains(hash));
        if !new_topic && new_channel.is_none() {
            return Ok(());
        }
        let quota = role.unwrap_or_default().over(self.defaults());
        let tally = self.tallies.entry(identity.to_owned()).or_insert_with(|| {
            Mutex::new(Tally {
                topics: Window::new(),
                channels: Window::new(),
                created: HashSet::new(),
            })
        });
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        // Names this identity created before cost nothing again.
        let new_topic = (new_topic && !tally.created.contains(&topic_hash)).then_some(topic_hash);
        let new_channel = new_channel.filter(|hash| !tally.created.contains(hash));
        let wanted = usize::from(new_topic.is_some()) + usize::from(new_channel.is_some());
        if wanted == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(max) = quota.max_names.filter(|&max| max > 0) {
            if tally.created.len() + wanted > max as usize {
                return Err(NameRefused::MaxNames(max));
            }
        }
        let checks = [
            (new_topic.is_some(), quota.new_topics_per_minute, true),
            (new_channel.is_some(), quota.new_channels_per_minute, false),
        ];
        for (wanted, per_minute, topics) in checks {
            let Some(per_minute) = per_minute.filter(|&n| wanted && n > 0) else {
                continue;
            };
            let window = if topics {
                &mut tally.topics
            } else {
                &mut tally.channels
            };
            if window.available(per_minute, now) < 1.0 {
                return Err(if topics {
                    NameRefused::TopicsPerMinute(per_minute)
                } else {
                    NameRefused::ChannelsPerMinute(per_minute)
                });
            }
        }
        for (hash, topics) in [(new_topic, true), (new_channel, false)] {
            let Some(hash) = hash else { continue };
            let window = if topics {
                &mut tally.topics
            } else {
                &mut tally.channels
            };
            if let Some(tokens) = window.tokens.as_mut() {
                *tokens -= 1.0;
            }
            if quota.max_names.is_some_and(|max| max > 0) {
                tally.created.insert(hash);
            }
            if self.known.len() < KNOWN_CAP {
                self.known.insert(hash);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
