//! The identity's slot in the connection cap shared by every replica (`[cluster]`), taken once
//! a certificate's identity is admitted or an AUTH is accepted; the connection's permit holds
//! it and gives it back on drop (or when an AUTH takes over from the certificate's identity).

use super::{refuse, Guard, Verdict};
use crate::cluster::slots::Full;
use crate::error::Kind;
use crate::nsq::ErrorCode;

impl Guard {
    /// After a certificate's identity is admitted or an AUTH accepted, a slot in the identity's cap over every replica (`[cluster]`);
    /// Some(refusal) when they are all taken (or Redis is away in `closed` mode).
    pub async fn claim_shared_identity_slot(&mut self) -> Option<Verdict> {
        let slots = self.shared.slots.clone()?;
        let cap = self.shared.config().connections.max_per_identity?;
        let identity = &self.principal.as_ref()?.identity;
        let key = format!("conns:identity:{}:{identity}", identity.len());
        let text = match slots.claim(&key, cap).await {
            Ok(Some(slot)) => {
                self.permit.keep_identity(slot);
                return None;
            }
            Ok(None) => return None,
            Err(Full::Cap) => "AUTH failed: too many connections for this identity (all replicas)",
            Err(Full::Unavailable) => "AUTH failed: the connection caps cannot be checked",
        };
        self.shared.conns.count_refusal();
        Some(refuse(Kind::Limit, ErrorCode::AuthFailed, text))
    }
}
