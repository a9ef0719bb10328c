//! One way to turn a presented secret into a [`Principal`], shared by the NSQ AUTH command, the
//! HTTP front and `policy explain`: a JWT goes to the verifier, an API key is hashed and looked
//! up in the live policy; likewise one way to read a verified client certificate. And one way
//! to judge a principal again under a newer policy ([`current_subject`]), so a deleted key or a
//! changed role takes effect on live connections. No I/O here.

use std::sync::Arc;

use crate::auth::jwt::JwtVerifier;
use crate::auth::{self, apikey, AuthError, Method, Principal, Proof, SecretKind};
use crate::policy::{Policy, Subject};

/// Why a principal that authenticated earlier no longer stands under the current policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Gone {
    #[error("API key no longer in the policy")]
    ApiKeyRemoved,
    #[error("API key now names another identity")]
    ApiKeyReassigned,
    #[error("identity has no role in the policy any more")]
    NoRoles,
    #[error("client certificate revoked")]
    CertificateRevoked,
}

/// Authenticates `secret` (an AUTH body or a bearer token).
pub fn from_secret(
    secret: &[u8],
    jwt: Option<&JwtVerifier>,
    policy: &Policy,
) -> Result<Principal, AuthError> {
    match auth::classify(secret) {
        SecretKind::Jwt => {
            let verifier = jwt.ok_or(AuthError::NoVerifierConfigured)?;
            let token = std::str::from_utf8(secret).map_err(|_| AuthError::Malformed)?;
            verifier.verify(token)
        }
        SecretKind::ApiKey => {
            let sha256 = apikey::hash(secret);
            policy
                .api_key(&sha256)
                .map(|entry| Principal {
                    identity: entry.identity.clone(),
                    method: Method::ApiKey,
                    claimed_roles: entry.roles.clone(),
                    expires_at: None,
                    proof: Proof::ApiKey(sha256),
                    token_id: None,
                })
                .ok_or(AuthError::UnknownApiKey)
        }
        SecretKind::Unknown => Err(AuthError::UnrecognizedSecret),
    }
}

/// The subject `principal` is judged as under `policy`: an API key's roles come from the key's
/// entry in that policy (not from the copy taken at AUTH), a token's from its claims, and the
/// roles bound to an identity from the policy as always. Fails when the credential no longer
/// authenticates anyone (its API key was deleted or now names someone else).
pub fn current_subject<'a>(
    principal: &'a Principal,
    policy: &'a Policy,
) -> Result<Subject<'a>, Gone> {
    let claimed_roles = match &principal.proof {
        Proof::ApiKey(sha256) => {
            let entry = policy.api_key(sha256).ok_or(Gone::ApiKeyRemoved)?;
            if entry.identity != principal.identity {
                return Err(Gone::ApiKeyReassigned);
            }
            &entry.roles
        }
        Proof::SelfContained | Proof::Certificate(_) => &principal.claimed_roles,
    };
    Ok(Subject {
        identity: &principal.identity,
        claimed_roles,
    })
}

/// The identity a verified client certificate gives (rustls has already checked its chain
/// against the client CA and CRLs when this is called).
pub fn from_certificate(
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    order: &[crate::auth::mtls::IdentitySource],
) -> Option<Principal> {
    let chain = chain?;
    let leaf = chain.first()?;
    let identity = crate::auth::mtls::identity_from_cert(leaf, order)?;
    let chain: Arc<[_]> = chain.iter().map(|cert| cert.clone().into_owned()).collect();
    Some(Principal {
        identity,
        method: Method::Certificate,
        claimed_roles: Vec::new(),
        expires_at: None,
        proof: Proof::Certificate(chain),
        token_id: None,
    })
}

/// The method a secret would authenticate with, for audit lines about failures.
pub fn method_name(secret: &[u8]) -> &'static str {
    match auth::classify(secret) {
        SecretKind::Jwt => "jwt",
        SecretKind::ApiKey => "api_key",
        SecretKind::Unknown => "unknown",
    }
}
