//! What `nsqgate revoke` writes and every replica enforces: a credential (an API key by its
//! name, every credential of an identity, or one JWT by its `jti`) revoked until a time.
//! Stored in one Redis sorted set, member `KIND:VALUE`, score the end in Unix milliseconds.
//! No I/O here: encoding, decoding and matching only.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::{Method, Principal};

/// What a revocation applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The API key of `[api_keys.NAME]` (its name is the identity it authenticates as).
    ApiKey(String),
    /// Every connection of an identity, whatever credential it used.
    Identity(String),
    /// One JWT, by its `jti` claim.
    TokenId(String),
}

/// A member of the revocation set that is not `KIND:VALUE` with a known kind.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a revocation: {0:?}")]
pub struct Unrecognized(pub String);

/// The revocations in force on a replica: target → when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    until: HashMap<Target, SystemTime>,
}

// === impl Target ===

impl Target {
    /// The sorted-set member naming this target.
    pub fn member(&self) -> String {
        match self {
            Target::ApiKey(name) => format!("api_key:{name}"),
            Target::Identity(id) => format!("identity:{id}"),
            Target::TokenId(jti) => format!("jti:{jti}"),
        }
    }

    pub fn from_member(member: &str) -> Result<Target, Unrecognized> {
        let unrecognized = || Unrecognized(member.chars().take(80).collect());
        let (kind, value) = member.split_once(':').ok_or_else(unrecognized)?;
        if value.is_empty() {
            return Err(unrecognized());
        }
        let value = value.to_owned();
        match kind {
            "api_key" => Ok(Target::ApiKey(value)),
            "identity" => Ok(Target::Identity(value)),
            "jti" => Ok(Target::TokenId(value)),
            _ => Err(unrecognized()),
        }
    }

    pub fn matches(&self, principal: &Principal) -> bool {
        match self {
            Target::ApiKey(name) => {
                principal.method == Method::ApiKey && principal.identity == *name
            }
            Target::Identity(id) => principal.identity == *id,
            Target::TokenId(jti) => principal.token_id.as_deref() == Some(jti.as_str()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::ApiKey(name) => write!(f, "API key {name:?}"),
            Target::Identity(id) => write!(f, "identity {id:?}"),
            Target::TokenId(jti) => write!(f, "token jti {jti:?}"),
        }
    }
}

// === impl Revoked ===

impl Revoked {
    /// From the sorted set's members and scores (end times in Unix milliseconds); members
    /// that are not revocations are returned apart, to be logged.
    pub fn from_scores(entries: &[(String, f64)]) -> (Revoked, Vec<Unrecognized>) {
        let mut revoked = Revoked::default();
        let mut unrecognized = Vec::new();
        for (member, score) in entries {
            match Target::from_member(member) {
                Ok(target) => {
                    revoked.until.insert(target, from_unix_millis(*score));
                }
                Err(e) => unrecognized.push(e),
            }
        }
        (revoked, unrecognized)
    }

    /// Adds one revocation (heard before the next full read of the set).
    pub fn insert(&mut self, target: Target, until: SystemTime) {
        let end = self.until.entry(target).or_insert(until);
        *end = (*end).max(until);
    }

    /// The revocation in force at `now` that applies to `principal`, if any.
    pub fn matching(&self, principal: &Principal, now: SystemTime) -> Option<&Target> {
        self.until
            .iter()
            .find(|(target, until)| **until > now && target.matches(principal))
            .map(|(target, _)| target)
    }

    /// How many are in force at `now`.
    pub fn active(&self, now: SystemTime) -> usize {
        self.until.values().filter(|until| **until > now).count()
    }
}

/// Milliseconds since the Unix epoch, for scores.
pub fn unix_millis(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

fn from_unix_millis(millis: f64) -> SystemTime {
    let millis = if millis.is_finite() && millis > 0.0 {
        millis.min(u64::MAX as f64) as u64
    } else {
        0
    };
    UNIX_EPOCH + Duration::from_millis(millis)
}

#[cfg(test)]
mod tests;
