//! Who is calling and whether one request may go on: identity from a bearer token,
//! `X-NSQ-Auth` or the client certificate, then one policy decision, both audited exactly like
//! the TCP path. Returns the refusal to send when the answer is no.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ::http::HeaderMap;

use crate::audit::{self, Event};
use crate::auth::identity;
use crate::auth::{Method, Principal};
use crate::http::access::Access;
use crate::http::reply::{self, EarlyResponse};
use crate::http::request::{self, Credential};
use crate::limit::conn::ConnPermit;
use crate::limit::SessionBuckets;
use crate::metrics::Metrics;
use crate::policy::{Action, Decision, Policy, Subject};
use crate::shared::Shared;

mod audited;
mod caps;
mod remembered;

pub use audited::{Audited, Who};
pub use remembered::Remembered;

/// The identity of a caller without credentials when `auth.require_identity` is off (the same
/// name the TCP path uses, so one policy entry covers both).
const ANONYMOUS: &str = "anonymous";

/// What one accepted connection knows about its client.
pub struct Conn {
    pub peer: SocketAddr,
    /// From a client certificate verified in the TLS handshake.
    pub cert: Option<Principal>,
    /// The connection's claim on the `[connections]` caps; the identity is bound to it once
    /// known, so HTTP requests count against `max_per_identity` as NSQ connections do.
    pub permit: Mutex<ConnPermit>,
    /// The audit lines this connection's requests already wrote (kept-alive connections).
    pub audited: Arc<Mutex<Audited>>,
    /// The bearer credential its last request presented, and what it proved.
    pub remembered: Mutex<Remembered>,
    /// The rate-limit buckets its publishes drew from, held for the next one.
    pub buckets: Arc<Mutex<Option<SessionBuckets>>>,
}

/// An authenticated caller of one request, with the policy version it is judged by.
pub struct Caller {
    pub principal: Principal,
    pub policy: Arc<Policy>,
    pub peer: SocketAddr,
    /// Where denials are counted for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Who the connection's audit lines are written for, and what they already say.
    who: Who,
    audited: Arc<Mutex<Audited>>,
    /// The connection's rate-limit buckets ([`Conn::buckets`]).
    pub buckets: Arc<Mutex<Option<SessionBuckets>>>,
}

// === impl Caller ===

impl Caller {
    /// Authenticates the request: an explicit credential wins over the certificate. A bad
    /// credential is a 401 even when a certificate or anonymity would have been enough.
    pub async fn authenticate(
        shared: &Shared,
        conn: &Conn,
        headers: &HeaderMap,
    ) -> Result<Caller, EarlyResponse> {
        let policy = shared.policy.borrow().clone();
        let credential = request::credential(headers);
        let anonymous = matches!(credential, Credential::None) && conn.cert.is_none();
        let mut fingerprint = None;
        let principal = match credential {
            Credential::Secret(secret) => {
                let (principal, print) = from_secret(shared, conn, &policy, secret)?;
                fingerprint = Some(print);
                principal
            }
            Credential::Unusable => {
                shared.metrics.authentication("unknown", false);
                audit::record(&Event {
                    remote: Some(conn.peer),
                    action: "auth",
                    outcome: "failure",
                    reason: Some("unusable Authorization header (expected Bearer)"),
                    ..Event::default()
                });
                return Err(reply::unauthenticated().into());
            }
            Credential::None => match (&conn.cert, shared.config().auth.require_identity) {
                (Some(principal), _) => not_revoked(shared, conn, principal)?,
                (None, false) => Principal {
                    identity: ANONYMOUS.to_owned(),
                    method: Method::Named,
                    claimed_roles: Vec::new(),
                    expires_at: None,
                    proof: Default::default(),
                    token_id: None,
                },
                (None, true) => return Err(reply::unauthenticated().into()),
            },
        };
        let who = Who {
            identity: principal.identity.clone(),
            fingerprint,
            claimed_roles: principal.claimed_roles.clone(),
            policy_version: policy.version(),
        };
        audit_caller(conn, &principal, &who)?;
        // Anonymous callers have no identity to count (as on the NSQ listener).
        if !anonymous {
            caps::bind_identity(conn, &principal)?;
            caps::claim_shared_slot(shared, conn, &principal).await?;
        }
        Ok(Caller {
            principal,
            policy,
            peer: conn.peer,
            metrics: shared.metrics.clone(),
            who,
            audited: conn.audited.clone(),
            buckets: conn.buckets.clone(),
        })
    }

    pub fn access(&self) -> Access<'_> {
        Access {
            policy: &self.policy,
            subject: self.subject(),
        }
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            identity: &self.principal.identity,
            claimed_roles: &self.principal.claimed_roles,
        }
    }

    /// One audited decision that gates the request; the refusal names action and topic.
    pub fn authorize(
        &self,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(), EarlyResponse> {
        // Allowed already on this connection for the same caller under the same policy
        // version: a decision is a function of exactly those (and the names), so it stands,
        // and its line (and any audit-mode line beside it) would repeat one already written.
        if lock(&self.audited).allowed(&self.who, action, topic, channel) {
            self.metrics.decision(action.as_str(), true);
            return Ok(());
        }
        let check = self.policy.check(&self.subject(), action, topic, channel);
        let allowed = check.decision.is_allow();
        let recorded = self.record(action, topic, channel, &check.decision, false);
        if let Some(would) = &check.audit {
            self.record(action, topic, channel, would, true);
        }
        if allowed && recorded == audit::Recorded::Written {
            lock(&self.audited).note_allowed(&self.who, action, topic, channel);
        }
        self.metrics.decision(action.as_str(), allowed);
        if allowed && recorded.refuse() {
            Err(unrecorded().into())
        } else if allowed {
            Ok(())
        } else {
            Err(reply::forbidden(action.as_str(), topic, channel).into())
        }
    }

    /// The request's decision taken again under the live policy, for a request that waited
    /// (a rate-limit delay): its token may have expired, or a reload taken its key or right.
    pub fn recheck(
        &self,
        shared: &Shared,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(), EarlyResponse> {
        let policy = shared.policy.borrow().clone();
        let expired = self
            .principal
            .expires_at
            .is_some_and(|exp| exp <= std::time::SystemTime::now());
        // The policy that allowed the request still in force: the same decision.
        let judged_again = || {
            identity::current_subject(&self.principal, &policy).is_ok_and(|subject| {
                policy
                    .check(&subject, action, topic, channel)
                    .decision
                    .is_allow()
            })
        };
        let allowed = !expired && (Arc::ptr_eq(&policy, &self.policy) || judged_again());
        if allowed {
            return Ok(());
        }
        self.metrics.decision(action.as_str(), false);
        audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(&self.principal),
            action: action.as_str(),
            topic: Some(topic),
            channel,
            outcome: "deny",
            reason: Some("no longer allowed after the rate-limit wait"),
            ..Event::default()
        });
        Err(reply::forbidden(action.as_str(), topic, channel).into())
    }

    /// Charges the caller for the names the request may create in nsqd, from the same quotas
    /// as the TCP path; 429 naming the quota when over.
    pub fn charge_names(
        &self,
        shared: &Shared,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(), EarlyResponse> {
        let quota = self.policy.name_quota_of(&self.subject());
        let Err(refused) = shared
            .names
            .admit(&self.principal.identity, quota, topic, channel)
        else {
            return Ok(());
        };
        shared.metrics.name_quota_refused();
        audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(&self.principal),
            action: if channel.is_some() {
                "admin"
            } else {
                "publish"
            },
            topic: Some(topic),
            channel,
            outcome: "deny",
            reason: Some(&refused.to_string()),
            ..Event::default()
        });
        let body =
            serde_json::json!({"message": "NAME_QUOTA_EXCEEDED", "detail": refused.to_string()});
        Err(reply::json(::http::StatusCode::TOO_MANY_REQUESTS, &body).into())
    }

    /// An operator-only request (debug, config, metrics): needs an admin rule on topic `*`.
    pub fn authorize_global_admin(&self, what: &str) -> Result<(), EarlyResponse> {
        let allowed = self.access().global_admin();
        self.authorize_global("admin", allowed, what)
    }

    /// Audits and enforces a cluster-wide decision already made (`allowed`) for `what`.
    pub fn authorize_global(
        &self,
        action: &'static str,
        allowed: bool,
        what: &str,
    ) -> Result<(), EarlyResponse> {
        let recorded = audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(&self.principal),
            action,
            topic: Some("*"),
            outcome: if allowed { "allow" } else { "deny" },
            reason: Some(what),
            ..Event::default()
        });
        self.metrics.decision(action, allowed);
        if allowed && recorded.refuse() {
            Err(unrecorded().into())
        } else if allowed {
            Ok(())
        } else {
            Err(reply::forbidden(action, "*", None).into())
        }
    }

    fn record(
        &self,
        action: Action,
        topic: &str,
        channel: Option<&str>,
        decision: &Decision,
        would: bool,
    ) -> audit::Recorded {
        audit::record_decision(
            self.peer,
            &self.principal,
            action,
            topic,
            channel,
            decision,
            would,
        )
    }
}

/// A bearer secret turned into a principal, with the secret's fingerprint, counted either
/// way; a failure is audited here, a success by [`audit_caller`] (once per credential on a
/// kept-alive connection).
fn from_secret(
    shared: &Shared,
    conn: &Conn,
    policy: &Policy,
    secret: &[u8],
) -> Result<(Principal, String), EarlyResponse> {
    let mut remembered = conn
        .remembered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let authenticated = remembered
        .authenticate(secret, shared.jwt().as_deref(), policy)
        .and_then(|principal| shared.not_revoked(principal));
    let fingerprint = remembered.fingerprint();
    match authenticated {
        Ok(principal) => {
            let method = crate::metrics::method_label(principal.method);
            shared.metrics.authentication(method, true);
            Ok((principal, fingerprint.to_owned()))
        }
        Err(e) => {
            shared
                .metrics
                .authentication(identity::method_name(secret), false);
            audit::record(&Event {
                remote: Some(conn.peer),
                action: "auth",
                outcome: "failure",
                reason: Some(&e.to_string()),
                fingerprint: Some(fingerprint),
                method: Some(identity::method_name(secret)),
                ..Event::default()
            });
            Err(reply::unauthenticated().into())
        }
    }
}

/// Writes the `auth` line of a caller with an explicit credential, unless this connection
/// already wrote it for the same caller under the same policy, and makes `who` the
/// connection's caller. A certificate or the anonymous identity has no such line.
fn audit_caller(conn: &Conn, principal: &Principal, who: &Who) -> Result<(), EarlyResponse> {
    let Some(fingerprint) = &who.fingerprint else {
        lock(&conn.audited).set_caller(who);
        return Ok(());
    };
    if lock(&conn.audited).is_caller(who) {
        return Ok(());
    }
    let recorded = audit::record(&Event {
        remote: Some(conn.peer),
        principal: Some(principal),
        action: "auth",
        outcome: "success",
        fingerprint: Some(fingerprint),
        reason: Some("http"),
        ..Event::default()
    });
    if recorded.refuse() {
        return Err(unrecorded().into());
    }
    if recorded == audit::Recorded::Written {
        lock(&conn.audited).set_caller(who);
    }
    Ok(())
}

/// The connection's audit memory; a poisoned lock only means a request panicked while
/// holding it, and what it holds is still whole.
fn lock(audited: &Mutex<Audited>) -> MutexGuard<'_, Audited> {
    audited
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A certificate's identity, unless an operator revoked it (`nsqgate revoke --identity`):
/// checked at every request, as a bearer credential is, so a revocation reaches a
/// connection that was open before it.
fn not_revoked(
    shared: &Shared,
    conn: &Conn,
    principal: &Principal,
) -> Result<Principal, EarlyResponse> {
    shared.not_revoked(principal.clone()).map_err(|e| {
        let method = crate::metrics::method_label(principal.method);
        shared.metrics.authentication(method, false);
        audit::record(&Event {
            remote: Some(conn.peer),
            principal: Some(principal),
            action: "auth",
            outcome: "failure",
            reason: Some(&e.to_string()),
            ..Event::default()
        });
        reply::unauthenticated().into()
    })
}

/// The answer to a request whose decision the audit log could not record
/// (`[audit] on_failure = "refuse"`).
fn unrecorded() -> hyper::Response<super::Body> {
    reply::error(hyper::StatusCode::SERVICE_UNAVAILABLE, "AUDIT_UNAVAILABLE")
}
