//! The bearer credential a kept-alive connection presented last, and what it proved: the same
//! credential on the next request is not hashed again for its fingerprint, and a JWT the
//! verifier accepted is not decoded again while that acceptance stands (`jwt::Accepted`:
//! the same verifier and JWKS set, the set fresh, the token unexpired). Revocation, the
//! token's expiry and the policy decision still run for every request (`Caller`).

use crate::auth::identity;
use crate::auth::jwt::{Accepted, JwtVerifier};
use crate::auth::{self, AuthError, Principal, SecretKind};
use crate::policy::Policy;

/// One connection's last credential.
pub struct Remembered {
    secret: Vec<u8>,
    /// What the secret looks like (`auth::classify`: a pass over every byte).
    kind: SecretKind,
    fingerprint: String,
    accepted: Option<Accepted>,
}

// === impl Remembered ===

impl Default for Remembered {
    fn default() -> Self {
        Remembered {
            secret: Vec::new(),
            kind: auth::classify(b""),
            fingerprint: String::new(),
            accepted: None,
        }
    }
}

impl Remembered {
    /// Authenticates `secret` as `identity::from_secret` does, remembering it.
    pub fn authenticate(
        &mut self,
        secret: &[u8],
        jwt: Option<&JwtVerifier>,
        policy: &Policy,
    ) -> Result<Principal, AuthError> {
        if self.secret != secret {
            self.secret = secret.to_vec();
            self.kind = auth::classify(secret);
            self.fingerprint = auth::fingerprint(secret);
            self.accepted = None;
        }
        match (self.kind, jwt, std::str::from_utf8(secret)) {
            (SecretKind::Jwt, Some(verifier), Ok(token)) => {
                verifier.verify_again(token, &mut self.accepted)
            }
            // Everything else as it always is (API keys, and every refusal's reason).
            _ => identity::from_secret(secret, jwt, policy),
        }
    }

    /// The fingerprint of the secret last authenticated (audit lines).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
