//! The per-connection gatekeeper of the relay phase: answers AUTH itself, checks every publish
//! and SUB against the policy (deny by default), caches decisions per policy version, and
//! notices when a live subscription loses its permission or its token expires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::audit::{self, Counters, Event};
use crate::auth::{self, Method, Principal};
use crate::identity;
use crate::limit::conn::ConnPermit;
use crate::nsq::{self, Command, DecodedCommand, ErrorCode};
use crate::policy::{Action, Decision, Policy, Subject};
use crate::proxy::Gateway;

/// The identity of a caller without credentials when `auth.require_identity` is off.
pub const ANONYMOUS: &str = "anonymous";

/// Why a decision was refused under `[audit] on_failure = "refuse"`.
pub const UNRECORDED: &str = "the audit log cannot record it";
const UNRECORDED_AUTH: &str = "AUTH failed: the audit log cannot record it";

/// What the relay does with one client command.
pub enum Verdict {
    /// Send the command's bytes to nsqd unchanged.
    Forward,
    /// Swallow it (RDY while a revoked consumer drains).
    Drop,
    /// Answer locally with this frame; when `fatal`, close the connection after it.
    Reply { frame: Bytes, fatal: bool },
}

/// Why a live connection must end.
pub struct Revocation {
    pub reason: &'static str,
}

pub struct Guard {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    /// Who the client is, once known (client certificate or AUTH).
    principal: Option<Principal>,
    /// AUTH may be sent once per connection, as with nsqd.
    auth_seen: bool,
    policy: watch::Receiver<Arc<Policy>>,
    /// Decisions already made on this connection under `cached_version` of the policy.
    cache: HashMap<(Action, String, String), bool>,
    cached_version: u64,
    subscription: Option<(String, String)>,
    /// Set once a revocation started: deliveries are stopped and RDY is swallowed.
    draining: bool,
    /// This connection's slots in the connection limits; the identity is bound on AUTH.
    permit: ConnPermit,
}

// === impl Guard ===

impl Guard {
    pub fn new(
        gateway: Arc<Gateway>,
        peer: SocketAddr,
        principal: Option<Principal>,
        permit: ConnPermit,
    ) -> Guard {
        let policy = gateway.policy.clone();
        // Without require_identity a caller with no credential is "anonymous", and the policy
        // decides what that identity may do (by default: nothing).
        let principal = principal.or_else(|| {
            (!gateway.config.auth.require_identity).then(|| Principal {
                identity: ANONYMOUS.to_owned(),
                method: Method::Named,
                claimed_roles: Vec::new(),
                expires_at: None,
            })
        });
        Guard {
            gateway,
            peer,
            principal,
            auth_seen: false,
            policy,
            cache: HashMap::new(),
            cached_version: 0,
            subscription: None,
            draining: false,
            permit,
        }
    }

    /// True while an identity is required and none is known yet.
    pub fn awaiting_identity(&self) -> bool {
        self.principal.is_none()
    }

    /// Draws a publish from the rate limits; waits in delay mode. Some(refusal) when over.
    pub async fn admit(&self, decoded: &DecodedCommand) -> Option<Verdict> {
        let principal = self.principal.as_ref()?;
        let topic = match &decoded.command {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => topic,
            _ => return None,
        };
        let rates = self.policy.borrow().rates_of(&subject(principal));
        let admitted = self
            .gateway
            .rates
            .admit(
                &principal.identity,
                topic,
                rates,
                decoded.command.message_count(),
                decoded.command.payload_bytes(),
            )
            .await;
        let limited = admitted.err()?;
        Counters::bump(&self.gateway.counters.rate_limited);
        audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(principal),
            action: "publish",
            topic: Some(topic),
            outcome: "deny",
            reason: Some(&limited.to_string()),
            ..Event::default()
        });
        // nsqd's own publish-failure codes, so stock producers treat it as a failed publish.
        let code = match decoded.command {
            Command::Mpub { .. } => ErrorCode::MpubFailed,
            Command::Dpub { .. } => ErrorCode::DpubFailed,
            _ => ErrorCode::PubFailed,
        };
        Some(fatal(
            code,
            &format!("{} failed: {limited}", decoded.command.name()),
        ))
    }

    pub fn screen(&mut self, decoded: &DecodedCommand) -> Verdict {
        match &decoded.command {
            // nsqd would accept a second IDENTIFY before SUB and renegotiate; a proxy must not.
            Command::Identify { .. } => fatal(ErrorCode::Invalid, "cannot IDENTIFY again"),
            Command::Auth { secret } => self.authenticate(secret),
            Command::Mpub { messages, .. }
                if messages.len() > self.gateway.config.max_mpub_messages as usize =>
            {
                fatal(
                    ErrorCode::BadBody,
                    &format!("MPUB invalid message count {}", messages.len()),
                )
            }
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => {
                self.authorize(decoded.command.name(), Action::Publish, topic, None)
            }
            Command::Sub { topic, channel } => {
                let verdict = self.authorize("SUB", Action::Subscribe, topic, Some(channel));
                if matches!(verdict, Verdict::Forward) {
                    self.subscription = Some((topic.clone(), channel.clone()));
                }
                verdict
            }
            Command::Rdy { .. } if self.draining => Verdict::Drop,
            _ => Verdict::Forward,
        }
    }

    fn authenticate(&mut self, secret: &[u8]) -> Verdict {
        if self.auth_seen {
            return fatal(ErrorCode::Invalid, "AUTH already set");
        }
        self.auth_seen = true;
        let fingerprint = auth::fingerprint(secret);
        let policy = self.policy.borrow().clone();
        let result = identity::from_secret(secret, self.gateway.jwt.as_deref(), &policy);
        match result {
            Ok(principal) => {
                let subject = subject(&principal);
                let roles = policy.roles_of(&subject);
                let reply = serde_json::json!({
                    "identity": principal.identity,
                    "identity_url": "",
                    "permission_count": roles.len(),
                });
                Counters::bump(&self.gateway.counters.auth_success);
                let recorded = audit::record(&Event {
                    remote: Some(self.peer),
                    principal: Some(&principal),
                    action: "auth",
                    outcome: "success",
                    fingerprint: Some(&fingerprint),
                    reason: Some(&format!("roles: {}", roles.join(","))),
                    ..Event::default()
                });
                if recorded.refuse() {
                    return fatal(ErrorCode::AuthFailed, UNRECORDED_AUTH);
                }
                if let Err(refusal) = self.permit.bind_identity(&principal.identity) {
                    return fatal(ErrorCode::AuthFailed, &format!("AUTH failed: {refusal}"));
                }
                // An explicit credential takes over from a certificate identity.
                self.principal = Some(principal);
                self.cache.clear();
                Verdict::Reply {
                    frame: nsq::response_frame(reply.to_string().as_bytes()),
                    fatal: false,
                }
            }
            Err(e) => {
                let reason = e.to_string();
                let method = identity::method_name(secret);
                Counters::bump(&self.gateway.counters.auth_failure);
                audit::record(&Event {
                    remote: Some(self.peer),
                    action: "auth",
                    outcome: "failure",
                    reason: Some(&reason),
                    fingerprint: Some(&fingerprint),
                    method: Some(method),
                    ..Event::default()
                });
                fatal(ErrorCode::AuthFailed, "AUTH failed")
            }
        }
    }

    fn authorize(
        &mut self,
        command: &str,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Verdict {
        let Some(principal) = &self.principal else {
            return fatal(
                ErrorCode::AuthFirst,
                &format!("AUTH required before {command}"),
            );
        };
        if principal
            .expires_at
            .is_some_and(|exp| exp <= SystemTime::now())
        {
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
            return fatal(ErrorCode::AuthFailed, "AUTH token expired");
        }
        let policy = self.policy.borrow().clone();
        if policy.version() != self.cached_version {
            self.cache.clear();
            self.cached_version = policy.version();
        }
        let key = (action, topic.to_owned(), channel.unwrap_or("").to_owned());
        let allowed = match self.cache.get(&key) {
            Some(allowed) => *allowed,
            None => {
                let check = policy.check(&subject(principal), action, topic, channel);
                let record = |decision: &Decision, would: bool| {
                    audit::record_decision(
                        self.peer, principal, action, topic, channel, decision, would,
                    )
                };
                let recorded = record(&check.decision, false);
                if let Some(would) = &check.audit {
                    record(would, true);
                }
                let allowed = check.decision.is_allow();
                // An allow the audit log could not take is refused (and not cached): the
                // code is nsqd's own for a command that failed.
                if allowed && recorded.refuse() {
                    let code = match command {
                        "MPUB" => ErrorCode::MpubFailed,
                        "DPUB" => ErrorCode::DpubFailed,
                        "SUB" => ErrorCode::SubFailed,
                        _ => ErrorCode::PubFailed,
                    };
                    return fatal(code, &format!("{command} failed: {UNRECORDED}"));
                }
                self.cache.insert(key, allowed);
                allowed
            }
        };
        if allowed {
            Verdict::Forward
        } else {
            Counters::bump(&self.gateway.counters.denied);
            fatal(
                ErrorCode::Unauthorized,
                &format!(
                    "AUTH failed for {command} on {topic:?} {:?}",
                    channel.unwrap_or("")
                ),
            )
        }
    }

    /// Completes when this connection's subscription is no longer allowed: the policy changed
    /// under it, or its token expired. Pending forever for a connection with nothing to lose.
    pub async fn revoked(&mut self) -> Revocation {
        loop {
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
                    if let Some((topic, channel)) = self.subscription.clone() {
                        if !self.still_allowed(&topic, &channel) {
                            return self.revoke("policy no longer allows this subscription");
                        }
                    }
                }
                _ = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => {
                    return self.revoke("token expired");
                }
            }
        }
    }

    fn still_allowed(&mut self, topic: &str, channel: &str) -> bool {
        let Some(principal) = &self.principal else {
            return false;
        };
        let policy = self.policy.borrow_and_update().clone();
        policy
            .check(&subject(principal), Action::Subscribe, topic, Some(channel))
            .decision
            .is_allow()
    }

    fn revoke(&mut self, reason: &'static str) -> Revocation {
        self.draining = true;
        Counters::bump(&self.gateway.counters.revoked);
        let (topic, channel) = self.subscription.clone().unwrap_or_default();
        audit::record(&Event {
            remote: Some(self.peer),
            principal: self.principal.as_ref(),
            action: "revoke",
            topic: Some(&topic),
            channel: Some(&channel),
            outcome: "closed",
            reason: Some(reason),
            ..Event::default()
        });
        Revocation { reason }
    }
}

fn subject(principal: &Principal) -> Subject<'_> {
    Subject {
        identity: &principal.identity,
        claimed_roles: &principal.claimed_roles,
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Admin => "admin",
    }
}

fn fatal(code: ErrorCode, text: &str) -> Verdict {
    Verdict::Reply {
        frame: nsq::error_frame(code, text),
        fatal: true,
    }
}
