//! The identity's slot in the connection cap shared by every replica (`[cluster]`), taken once
//! a certificate's identity is admitted or an AUTH is accepted; the connection's permit holds
//! it and gives it back on drop (or when an AUTH takes over from the certificate's identity).

use super::{Guard, Verdict};
use crate::cluster::slots::Full;
use crate::error::{Blame, FatalReply, Kind};
use crate::limit::conn::Refusal;
use crate::nsq::ErrorCode;

/// How the identity became known, which decides the words of a refusal: a client that never
/// sent AUTH is not told that its AUTH failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmittedBy {
    /// A verified client certificate, right after IDENTIFY and its TLS upgrade.
    Certificate,
    /// An AUTH the guard accepted.
    Auth,
}

impl Guard {
    /// After a certificate's identity is admitted or an AUTH accepted, a slot in the identity's
    /// cap over every replica (`[cluster]`); Some(refusal) when they are all taken (or Redis
    /// is away in `closed` mode).
    pub async fn claim_shared_identity_slot(&mut self, by: AdmittedBy) -> Option<Verdict> {
        let slots = self.shared.slots.clone()?;
        let cap = self.shared.config().connections.max_per_identity?;
        let identity = &self.principal.as_ref()?.identity;
        let key = format!("conns:identity:{}:{identity}", identity.len());
        let full = match slots.claim(&key, cap).await {
            Ok(Some(slot)) => {
                self.permit.keep_identity(slot);
                return None;
            }
            Ok(None) => return None,
            Err(full) => full,
        };
        let refusal = match full {
            Full::Cap => {
                self.shared.conns.count_refusal(Refusal::SharedPerIdentity);
                let (code, text) = identity_refusal(by, &Refusal::SharedPerIdentity.to_string());
                FatalReply::new(Kind::Limit, code, &text)
            }
            // Refusing what cannot be checked is the operator's choice (`closed`).
            Full::Unavailable => {
                let (code, text) = identity_refusal(by, &full.to_string());
                FatalReply::new(Kind::Limit, code, &text).blaming(Blame::Configuration)
            }
        };
        Some(Verdict::Refuse(refusal))
    }
}

/// The code and text of a refusal of an identity's connection: an AUTH's failure, or, for a
/// certificate's identity, what a refused nsqd connection tells a client that sent no AUTH.
pub fn identity_refusal(by: AdmittedBy, reason: &str) -> (ErrorCode, String) {
    match by {
        AdmittedBy::Auth => (ErrorCode::AuthFailed, format!("AUTH failed: {reason}")),
        AdmittedBy::Certificate => (
            ErrorCode::IdentifyFailed,
            format!("nsqgate refused: {reason}"),
        ),
    }
}
