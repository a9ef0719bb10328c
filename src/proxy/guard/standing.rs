//! Whether a live connection still stands: judged again whenever the policy version changes (a
//! CRL reload changes it too). A deleted or reassigned API key, an identity's last role gone, a
//! certificate the CRLs now revoke, a subscription no longer allowed or an expired token end it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{action_name, Guard, Revocation, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity::{self, Gone};
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

    /// Completes when this connection loses its standing: a reload took its credential (API
    /// key deleted, certificate revoked, last role gone) or its subscription's permission, or
    /// its token expired while subscribed. Pending forever for a connection with nothing to
    /// lose.
    pub async fn revoked(&mut self) -> Revocation {
        loop {
            if let Some(reason) = self.operator_revoked() {
                return self.revoke(reason, Kind::Identity);
            }
            let expiry = self
                .subscription
                .as_ref()
                .and(self.principal.as_ref())
                .and_then(|p| p.expires_at)
                .map(|exp| {
                    exp.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                });
            tokio::select! {
                changed = self.policy.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if let Err(gone) = self.refresh() {
                        return self.revoke(gone.to_string(), Kind::Identity);
                    }
                    if let Some((topic, channel)) = self.subscription.clone() {
                        if !self.still_allowed(&topic, &channel) {
                            let reason = "policy no longer allows this subscription";
                            return self.revoke(reason.into(), Kind::Policy);
                        }
                    }
                }
                changed = self.revocations.changed() => {
                    // The sender lives as long as the process: an error is never seen.
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => {
                    return self.revoke("token expired".into(), Kind::Identity);
                }
            }
        }
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
