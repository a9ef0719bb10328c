//! When a client's nsqd connection opens, decided from what is known at the moment of asking:
//! the configuration, the client's IDENTIFY, the client leg's TLS and the identity so far.
//! nsqd sees a client once nsqgate knows who it is, or, for an anonymous client, once it sends
//! a command nsqd must see: strangers cost nsqd nothing. Pure functions; no I/O here.

use crate::auth::Principal;
use crate::config::{ClientCertMode, Config};
use crate::proxy::identify::ClientIdentify;

/// The settings the decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityRules {
    /// `auth.require_identity`: a client with no identity may do nothing but AUTH.
    pub require_identity: bool,
    /// `client.client_cert`: whether a TLS handshake can name the client.
    pub client_cert: ClientCertMode,
}

/// The client leg's TLS when the decision is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTls {
    Plain,
    /// TLS from the first byte, or after the in-band upgrade.
    Secure,
}

/// When nsqgate opens the client's nsqd connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsqdOpens {
    /// Now: a certificate named the client. At IDENTIFY, nsqd's own reply is relayed.
    Now,
    /// After the in-band TLS upgrade this IDENTIFY asks for: the certificate shown in it may
    /// name the client. Decided again then.
    AfterUpgrade,
    /// When AUTH succeeds, before its reply (which then means the connection works).
    AfterAuth,
    /// At the client's first command nsqd must see (an anonymous client).
    AtFirstCommand,
}

// === impl IdentityRules ===

impl IdentityRules {
    pub fn of(config: &Config) -> IdentityRules {
        IdentityRules {
            require_identity: config.auth.require_identity,
            client_cert: config.client.client_cert,
        }
    }
}

/// The decision. `identify` is None when the client's first command was not IDENTIFY.
pub fn when_nsqd_opens(
    rules: IdentityRules,
    identify: Option<&ClientIdentify>,
    tls: ClientTls,
    principal: Option<&Principal>,
) -> NsqdOpens {
    if principal.is_some() {
        return NsqdOpens::Now;
    }
    let upgrading = identify.is_some_and(|identify| asks_for_upgrade(identify, tls));
    if upgrading && rules.client_cert != ClientCertMode::None {
        return NsqdOpens::AfterUpgrade;
    }
    match rules.require_identity {
        true => NsqdOpens::AfterAuth,
        false => NsqdOpens::AtFirstCommand,
    }
}

/// Whether the IDENTIFY reply tells the client to AUTH: while it has no identity, unless the
/// upgrade it asked for ends in a handshake that requires a certificate. AUTH is accepted
/// either way (nsqjs sends it whenever it has a secret).
pub fn auth_required(
    rules: IdentityRules,
    identify: &ClientIdentify,
    tls: ClientTls,
    principal: Option<&Principal>,
) -> bool {
    let certificate_coming =
        asks_for_upgrade(identify, tls) && rules.client_cert == ClientCertMode::Required;
    rules.require_identity && principal.is_none() && !certificate_coming
}

/// nsqd upgrades a plain connection when IDENTIFY negotiates features and asks for `tls_v1`.
pub fn asks_for_upgrade(identify: &ClientIdentify, tls: ClientTls) -> bool {
    identify.feature_negotiation && identify.tls_v1 && tls == ClientTls::Plain
}

#[cfg(test)]
mod tests;
