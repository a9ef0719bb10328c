//! A token accepted once, accepted again without decoding it. A kept-alive HTTPS connection
//! presents the same bearer token on every request; decoding its header and claims and
//! hashing it for the remembered signature cost more than the rest of the request's checks.
//! What a verification answers is a function of the token, the verifier's settings and keys,
//! the JWKS set in force, and the time; so a repeat is answered from memory only while the
//! verifier and the set are the very ones that accepted it, the set is not stale, and the
//! clock stands between that acceptance and the token's expiry. Anything else verifies anew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::JwtVerifier;
use crate::auth::jwks_set::KeySet;
use crate::auth::{AuthError, Principal};

/// Numbers verifiers, so an acceptance names the one that made it (a reload builds another).
static NEXT_VERIFIER: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_verifier_id() -> u64 {
    NEXT_VERIFIER.fetch_add(1, Ordering::Relaxed)
}

/// One token a verifier accepted, and under what.
pub struct Accepted {
    token: Box<str>,
    verifier: u64,
    /// Held, so the set cannot be freed and another put at its address.
    set: Arc<KeySet>,
    /// When it was accepted (seconds since the epoch): a clock set back before it verifies
    /// anew (the token's `nbf` was checked against this time).
    accepted_at: u64,
    /// The token's expiry with the leeway: not acceptable on or after it.
    expires_at: u64,
    principal: Principal,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accepted({})", self.principal.identity)
    }
}

// === impl JwtVerifier ===

impl JwtVerifier {
    /// Verifies `token` now, as [`JwtVerifier::verify`] does, answering from `last` when it
    /// is this verifier's acceptance of the same token and still stands; `last` then holds
    /// this verification's acceptance (or nothing, after a refusal).
    pub fn verify_again(
        &self,
        token: &str,
        last: &mut Option<Accepted>,
    ) -> Result<Principal, AuthError> {
        // A clock before 1970 fails closed, as in `verify`.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(u64::MAX, |d| d.as_secs());
        self.verify_again_at(token, now, last)
    }

    /// As [`JwtVerifier::verify_again`], as if the time were `now_unix`.
    pub fn verify_again_at(
        &self,
        token: &str,
        now_unix: u64,
        last: &mut Option<Accepted>,
    ) -> Result<Principal, AuthError> {
        let set = self.jwks.snapshot();
        if let Some(seen) = last.take() {
            let stands = *seen.token == *token
                && seen.verifier == self.id
                && Arc::ptr_eq(&seen.set, &set)
                && self.jwks.stale_for(&set).is_none()
                && (seen.accepted_at..seen.expires_at).contains(&now_unix);
            if stands {
                let principal = seen.principal.clone();
                *last = Some(seen);
                return Ok(principal);
            }
        }
        let principal = self.verify_at(token, now_unix)?;
        let expires_at = principal
            .expires_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_secs());
        *last = Some(Accepted {
            token: token.into(),
            verifier: self.id,
            set,
            accepted_at: now_unix,
            expires_at,
            principal: principal.clone(),
        });
        Ok(principal)
    }
}

#[cfg(test)]
impl Accepted {
    /// What a repeat would be answered with (tests mark it to see the memory used).
    pub(crate) fn principal_mut(&mut self) -> &mut Principal {
        &mut self.principal
    }
}
