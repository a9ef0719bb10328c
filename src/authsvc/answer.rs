//! What nsqd is told for one secret: the JSON its `internal/auth` reads (`ttl`, `identity`,
//! `identity_url`, `authorizations`), from the principal the secret authenticates as and the
//! policy in force. No I/O here.
//!
//! An unknown, revoked or expired secret is answered 200 with no authorizations: nsqd treats
//! that as "not authorized" (`E_UNAUTHORIZED`), whereas any other status means its auth
//! server failed (`E_AUTH_FAILED`, and a 403 even makes it retry over HTTPS).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::auth::identity;
use crate::auth::{AuthError, Principal};
use crate::metrics::authsvc::Outcome;
use crate::policy::{NsqdAuthorization, Policy};

/// The body nsqd unmarshals into its `auth.State`.
#[derive(Debug, Serialize)]
pub struct Reply {
    /// Seconds nsqd keeps this answer before asking again; always at least 1 (nsqd refuses 0).
    pub ttl: u64,
    pub identity: String,
    pub identity_url: String,
    pub authorizations: Vec<NsqdAuthorization>,
}

/// One answer and what the audit line and the counters say about it.
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    pub outcome: Outcome,
    /// Allow patterns left out because a deny overlaps them (see `policy::nsqd_grants`).
    pub omitted: Vec<String>,
    /// Why the secret was refused, for the audit line.
    pub refusal: Option<String>,
}

/// The answer for a secret that authenticated as `principal` (or failed to), under `policy`,
/// with `ttl` as the longest nsqd may keep it. A token's answer never outlives the token.
pub fn answer(
    authenticated: &Result<Principal, AuthError>,
    policy: &Policy,
    ttl: Duration,
    now: SystemTime,
) -> Answer {
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(e) => return refused(e.to_string(), ttl),
    };
    // Straight after authentication this only fails if the key vanished in between.
    let subject = match identity::current_subject(principal, policy) {
        Ok(subject) => subject,
        Err(gone) => return refused(gone.to_string(), ttl),
    };
    let grants = policy.nsqd_grants(&subject);
    let ttl = match principal.expires_at {
        Some(expires) => ttl.min(expires.duration_since(now).unwrap_or_default()),
        None => ttl,
    };
    let outcome = if grants.authorizations.is_empty() {
        Outcome::NoGrants
    } else {
        Outcome::Granted
    };
    Answer {
        reply: Reply {
            ttl: ttl.as_secs().max(1),
            identity: principal.identity.clone(),
            identity_url: String::new(),
            authorizations: grants.authorizations,
        },
        outcome,
        omitted: grants.omitted,
        refusal: None,
    }
}

fn refused(reason: String, ttl: Duration) -> Answer {
    Answer {
        reply: Reply {
            ttl: ttl.as_secs().max(1),
            identity: String::new(),
            identity_url: String::new(),
            authorizations: Vec::new(),
        },
        outcome: Outcome::Refused,
        omitted: Vec::new(),
        refusal: Some(reason),
    }
}
