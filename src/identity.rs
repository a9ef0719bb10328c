//! One way to turn a presented secret into a [`Principal`], shared by the NSQ AUTH command, the
//! HTTP front and `policy explain`: a JWT goes to the verifier, an API key is hashed and looked
//! up in the live policy; likewise one way to read a verified client certificate. No I/O here.

use crate::auth::jwt::JwtVerifier;
use crate::auth::{self, apikey, AuthError, Method, Principal, SecretKind};
use crate::policy::Policy;

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
        SecretKind::ApiKey => policy
            .api_key(&apikey::hash(secret))
            .map(|entry| Principal {
                identity: entry.identity.clone(),
                method: Method::ApiKey,
                claimed_roles: entry.roles.clone(),
                expires_at: None,
            })
            .ok_or(AuthError::UnknownApiKey),
        SecretKind::Unknown => Err(AuthError::UnrecognizedSecret),
    }
}

/// The identity a verified client certificate gives (rustls has already checked its chain
/// against the client CA and CRLs when this is called).
pub fn from_certificate(
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    order: &[crate::auth::mtls::IdentitySource],
) -> Option<Principal> {
    let leaf = chain?.first()?;
    let identity = crate::auth::mtls::identity_from_cert(leaf, order)?;
    Some(Principal {
        identity,
        method: Method::Certificate,
        claimed_roles: Vec::new(),
        expires_at: None,
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
