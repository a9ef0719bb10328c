//! Whether a live connection still stands: judged again whenever the policy version changes (a
//! CRL reload changes it too). A deleted or reassigned API key, an identity's last role gone, a
//! certificate the CRLs now revoke, a subscription no longer allowed or an expired token end it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::{action_name, Guard, Revocation, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity::{self, Gone};
use crate::cluster::revocations::Revoked;
use crate::error::{FatalReply, Kind};
use crate::nsq::ErrorCode;
use crate::policy::{Action, Policy};

/// How long a token, once seen valid, is taken as valid without reading the wall clock again
/// (never past its expiry).
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(1);

impl Guard {
    /// The policy in force, taken from the channel only when it changed since the last look.
    pub(super) fn policy_now(&mut self) -> &Arc<Policy> {
        if self.policy.has_changed().unwrap_or(false) {
            self.current = self.policy.borrow_and_update().clone();
        }
        &self.current
    }

    /// Whether the connection still stands, after judging it again if the policy changed
    /// since the last look (a CRL reload changes its version too): the decision cache is
    /// dropped, and the credential must still stand. Once lost, standing is not regained.
    pub(super) fn refresh(&mut self) -> Result<(), Gone> {
        let version = self.policy_now().version();
        if version != self.cached_version {
            let policy = Arc::clone(&self.current);
            self.cached_version = version;
            self.cache.clear();
            self.rates = None;
            if self.standing.is_ok() {
                self.standing = self.stands_under(&policy);
            }
        }
        self.standing
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

    /// The refusal for a command on `topic` at `now` when the principal's token has expired.
    /// While it is valid the wall clock (what its expiry is in) is read at most once per
    /// [`WALL_CLOCK_RECHECK`], not per command: a step of the clock is seen within that time.
    pub(super) fn expired(
        &mut self,
        now: Instant,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Option<Verdict> {
        let principal = self.principal.as_ref()?;
        let expires_at = principal.expires_at?;
        if self.valid_until.is_some_and(|until| now < until) {
            return None;
        }
        match expires_at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                self.valid_until = Some(now + left.min(WALL_CLOCK_RECHECK));
                return None;
            }
            _ => self.valid_until = None,
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
        let policy = Arc::clone(self.policy_now());
        let Some(principal) = &self.principal else {
            return false;
        };
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
