//! Whether a live connection still stands: judged again whenever the policy version changes (a
//! CRL reload changes it too). A deleted or reassigned API key, an identity's last role gone, a
//! certificate the CRLs now revoke, a subscription no longer allowed or an expired token end it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::{action_name, Guard, Revocation, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity::{self, Gone};
use crate::cluster::revocations::Revoked;
use crate::error::{FatalReply, Kind};
use crate::nsq::ErrorCode;
use crate::policy::{Action, Policy};

impl Guard {
    /// The current policy, after judging the connection again if it changed since the last
    /// look (a CRL reload changes its version too): the decision cache is dropped, and the
    /// credential must still stand. Once lost, standing is not regained.
    pub(super) fn refresh(&mut self) -> Result<Arc<Policy>, Gone> {
        let policy = self.policy.borrow().clone();
        if policy.version() != self.cached_version {
            self.cached_version = policy.version();
            self.cache.clear();
            self.rates = None;
            if self.standing.is_ok() {
                self.standing = self.stands_under(&policy);
            }
        }
        self.standing.map(|()| policy)
    }

    fn stands_under(&mut self, policy: &Policy) -> Result<(), Gone> {
        if let (Some(chain), Some(certs)) = (&self.cert_chain, self.shared.tls.client_certs()) {
            certs
                .still_valid(chain)
                .map_err(|_| Gone::CertificateRevoked)?;
        }
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        let subject = identity::current_subject(principal, policy)?;
        let has_roles = !policy.roles_of(&subject).is_empty();
        let had_roles = std::mem::replace(&mut self.had_roles, has_roles);
        if had_roles && !has_roles {
            return Err(Gone::NoRoles);
        }
        Ok(())
    }

    /// The refusal for a command on `topic` when the principal's token has expired.
    pub(super) fn expired(
        &self,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Option<Verdict> {
        let principal = self.principal.as_ref()?;
        if principal
            .expires_at
            .is_none_or(|exp| exp > SystemTime::now())
        {
            return None;
        }
        audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(principal),
            action: action_name(action),
            topic: Some(topic),
            channel,
            outcome: "deny",
            reason: Some("token expired"),
            ..Event::default()
        });
        let refusal = FatalReply::new(Kind::Identity, ErrorCode::AuthFailed, "AUTH token expired");
        Some(Verdict::Refuse(refusal))
    }

    /// What a relay watches for this connection: the policy (a reload, a CRL) and the
    /// operators' revocations. After either changed, it calls [`Guard::reconsider`].
    pub fn watches(&self) -> (watch::Receiver<Arc<Policy>>, watch::Receiver<Arc<Revoked>>) {
        (self.policy.clone(), self.revocations.clone())
    }

    /// Judges this connection again, after the policy or the revocations changed: Some once
    /// it lost its standing (an operator revoked it; a reload took its credential, API key
    /// deleted, certificate revoked, last role gone; or its subscription's permission).
    pub fn reconsider(&mut self) -> Option<Revocation> {
        if let Some(reason) = self.operator_revoked() {
            return Some(self.revoke(reason, Kind::Identity));
        }
        if let Err(gone) = self.refresh() {
            return Some(self.revoke(gone.to_string(), Kind::Identity));
        }
        let (topic, channel) = self.subscription.clone()?;
        if !self.still_allowed(&topic, &channel) {
            let reason = "policy no longer allows this subscription";
            return Some(self.revoke(reason.into(), Kind::Policy));
        }
        None
    }

    /// When this connection's token expires while it is subscribed (its deliveries are then
    /// revoked: [`Guard::token_expired`]); None for anyone else.
    pub fn subscribed_until(&self) -> Option<SystemTime> {
        self.subscription.as_ref()?;
        self.principal.as_ref()?.expires_at
    }

    /// The subscriber's token expired.
    pub fn token_expired(&mut self) -> Revocation {
        self.revoke("token expired".into(), Kind::Identity)
    }

    /// Why an operator's revocation (`nsqgate revoke`) ends this connection, if one does.
    fn operator_revoked(&mut self) -> Option<String> {
        let principal = self.principal.as_ref()?;
        let revoked = self.revocations.borrow_and_update();
        let target = revoked.matching(principal, SystemTime::now())?;
        Some(format!("{target} revoked by an operator"))
    }

    fn still_allowed(&mut self, topic: &str, channel: &str) -> bool {
        let Some(principal) = &self.principal else {
            return false;
        };
        let policy = self.policy.borrow_and_update().clone();
        identity::current_subject(principal, &policy).is_ok_and(|subject| {
            policy
                .check(&subject, Action::Subscribe, topic, Some(channel))
                .decision
                .is_allow()
        })
    }

    /// Starts the end of this connection: counted and audited once, however it is noticed.
    pub(super) fn revoke(&mut self, reason: String, kind: Kind) -> Revocation {
        let subscribed = self.subscription.is_some();
        if !self.draining {
            self.draining = true;
            self.shared.metrics.revoked();
            let (topic, channel) = self.subscription.clone().unwrap_or_default();
            audit::record(&Event {
                remote: Some(self.peer),
                principal: self.principal.as_ref(),
                action: "revoke",
                topic: Some(&topic),
                channel: Some(&channel),
                outcome: "closed",
                reason: Some(&reason),
                ..Event::default()
            });
        }
        Revocation {
            reason,
            kind,
            subscribed,
        }
    }
}
