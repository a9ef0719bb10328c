//! The per-connection gatekeeper of the relay phase: answers AUTH itself, checks every publish
//! and SUB against the policy (deny by default), caches decisions per policy version (a small
//! LRU, `decisions`), mirrors nsqd's state rules where nsqgate must answer itself (`state`), and
//! notices when a connection loses its standing: a reload that deletes its API key, takes its
//! identity's last role or revokes its certificate, a subscription no longer allowed, or an
//! expired token. Who the client is stays fixed; what it may do is looked up in the current
//! policy.

mod admission;
mod decisions;
mod names;
mod slots;
mod standing;
mod state;
#[cfg(test)]
mod tests;
mod who;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use crate::audit::{self, Event};
use crate::auth::identity::{self, Gone};
use crate::auth::{self, Method, Principal, Proof};
use crate::error::{FatalReply, Kind};
use crate::limit::conn::ConnPermit;
use crate::limit::SessionBuckets;
use crate::nsq::{self, Command, DecodedCommand, ErrorCode};
use crate::policy::{Action, Decision, Policy, RoleRates};
use crate::shared::Shared;
pub use admission::Admission;
use decisions::Decisions;
pub use slots::{identity_refusal, AdmittedBy};
use state::State;

type CertChain = Arc<[rustls::pki_types::CertificateDer<'static>]>;

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
    /// Answer locally with this frame (an AUTH reply); the connection goes on.
    Reply(Bytes),
    /// Refuse: the client is told why (in its turn), then the connection closes.
    Refuse(FatalReply),
}

/// Why a live connection must end.
pub struct Revocation {
    pub reason: String,
    /// A credential gone ([`Kind::Identity`]) or a permission lost ([`Kind::Policy`]).
    pub kind: Kind,
    /// nsqd delivers messages to this connection: stop them (RDY 0) and let the client finish
    /// what it holds for the grace period. Otherwise it is told at once.
    pub subscribed: bool,
}

pub struct Guard {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Who the client is, once known (client certificate or AUTH).
    principal: Option<Principal>,
    /// The client certificate the connection was opened with, kept after an AUTH too: a
    /// reloaded CRL that revokes it ends the connection.
    cert_chain: Option<CertChain>,
    /// AUTH may be sent once per connection, as with nsqd.
    auth_seen: bool,
    policy: watch::Receiver<Arc<Policy>>,
    /// The policy last seen on `policy`, taken again only after it changed: reading the
    /// channel per message would take its lock and count the `Arc` up and down, both shared
    /// by every connection on every worker.
    current: Arc<Policy>,
    /// Decisions already made on this connection under `cached_version` of the policy.
    cache: Decisions,
    cached_version: u64,
    /// Before this instant the principal's token is known not to have expired.
    valid_until: Option<Instant>,
    /// Whether the principal still stands under `cached_version` (sticky once lost).
    standing: Result<(), Gone>,
    /// Whether the principal had any role under `cached_version`.
    had_roles: bool,
    /// The publish quotas the principal's roles grant, once worked out under `cached_version`.
    rates: Option<RoleRates>,
    /// The rate-limit buckets this connection's publishes draw from, once looked up.
    buckets: Option<SessionBuckets>,
    state: State,
    subscription: Option<(String, String)>,
    /// Set once a revocation started: deliveries are stopped and RDY is swallowed.
    draining: bool,
    /// This connection's slots in the connection limits; the identity is bound on AUTH.
    permit: ConnPermit,
    /// The operators' revocations in force (`nsqgate revoke`), followed while connected.
    revocations: watch::Receiver<Arc<crate::cluster::revocations::Revoked>>,
}

// === impl Guard ===

impl Guard {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        principal: Option<Principal>,
        permit: ConnPermit,
    ) -> Guard {
        let mut policy = shared.policy.clone();
        let current = policy.borrow_and_update().clone();
        let revocations = shared.revocations.subscribe();
        // Without require_identity a caller with no credential is "anonymous", and the policy
        // decides what that identity may do (by default: nothing).
        let principal = principal.or_else(|| {
            (!shared.config().auth.require_identity).then(|| Principal {
                identity: ANONYMOUS.to_owned(),
                method: Method::Named,
                claimed_roles: Vec::new(),
                expires_at: None,
                proof: Proof::SelfContained,
                token_id: None,
            })
        });
        let cert_chain = match principal.as_ref().map(|p| &p.proof) {
            Some(Proof::Certificate(chain)) => Some(chain.clone()),
            _ => None,
        };
        let mut guard = Guard {
            shared,
            peer,
            principal: None,
            cert_chain,
            auth_seen: false,
            policy,
            current,
            cache: Decisions::default(),
            cached_version: 0,
            valid_until: None,
            standing: Ok(()),
            had_roles: false,
            rates: None,
            buckets: None,
            state: State::Init,
            subscription: None,
            draining: false,
            permit,
            revocations,
        };
        if let Some(principal) = principal {
            guard.adopt(principal);
        }
        guard
    }

    /// Takes `principal` as who the client is, judged from now on under the current policy.
    fn adopt(&mut self, principal: Principal) {
        let policy = self.policy_now().clone();
        self.had_roles = identity::current_subject(&principal, &policy)
            .is_ok_and(|subject| !policy.roles_of(&subject).is_empty());
        self.principal = Some(principal);
        self.valid_until = None;
        self.cache.clear();
        self.rates = None;
        // Another identity draws from other buckets.
        self.buckets = None;
        self.cached_version = policy.version();
    }

    /// True while an identity is required and none is known yet.
    pub fn awaiting_identity(&self) -> bool {
        self.principal.is_none()
    }

    pub fn screen(&mut self, decoded: &DecodedCommand) -> Verdict {
        self.screen_at(decoded, Instant::now())
    }

    /// [`Guard::screen`] at `now`, a clock reading the relay takes once per batch of commands.
    pub fn screen_at(&mut self, decoded: &DecodedCommand, now: Instant) -> Verdict {
        let command = &decoded.command;
        if let Some(text) = self.state.refusal(command) {
            return refuse(Kind::ClientProtocol, ErrorCode::Invalid, &text);
        }
        let verdict = match command {
            // nsqd would accept a second IDENTIFY before SUB and renegotiate; a proxy must not.
            Command::Identify { .. } => refuse(
                Kind::ClientProtocol,
                ErrorCode::Invalid,
                "cannot IDENTIFY again",
            ),
            Command::Auth { secret } => self.authenticate(secret),
            Command::Mpub { messages, .. }
                if messages.len() > self.shared.config().max_mpub_messages as usize =>
            {
                self.shared.metrics.size_limited("mpub_messages");
                refuse(
                    Kind::ClientProtocol,
                    ErrorCode::BadBody,
                    &format!("MPUB invalid message count {}", messages.len()),
                )
            }
            Command::Pub { .. } | Command::Mpub { .. } | Command::Dpub { .. } => {
                self.recheck(decoded, now)
            }
            Command::Sub { topic, channel } => {
                let verdict = self.authorize(now, "SUB", Action::Subscribe, topic, Some(channel));
                if matches!(verdict, Verdict::Forward) {
                    self.subscription = Some((topic.to_string(), channel.clone()));
                }
                verdict
            }
            Command::Rdy { .. } if self.draining => Verdict::Drop,
            _ => Verdict::Forward,
        };
        if matches!(verdict, Verdict::Forward) {
            self.state = self.state.after(command);
        }
        verdict
    }

    /// Authorizes a publish against the current policy and credential. Called when it arrives
    /// and again after a rate-limit delay: a token may expire, or a reload revoke it, meanwhile.
    pub fn recheck(&mut self, decoded: &DecodedCommand, now: Instant) -> Verdict {
        match &decoded.command {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => {
                self.authorize(now, decoded.command.name(), Action::Publish, topic, None)
            }
            _ => Verdict::Forward,
        }
    }

    fn authenticate(&mut self, secret: &[u8]) -> Verdict {
        if self.auth_seen {
            return refuse(Kind::ClientProtocol, ErrorCode::Invalid, "AUTH already set");
        }
        self.auth_seen = true;
        let fingerprint = auth::fingerprint(secret);
        let policy = self.policy_now().clone();
        let result = identity::from_secret(secret, self.shared.jwt().as_deref(), &policy)
            .and_then(|principal| self.shared.not_revoked(principal));
        match result {
            Ok(principal) => {
                let roles = identity::current_subject(&principal, &policy)
                    .map(|subject| policy.roles_of(&subject))
                    .unwrap_or_default();
                let reply = serde_json::json!({
                    "identity": principal.identity,
                    "identity_url": "",
                    "permission_count": roles.len(),
                });
                let method = crate::metrics::method_label(principal.method);
                self.shared.metrics.authentication(method, true);
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
                    return refuse(Kind::Internal, ErrorCode::AuthFailed, UNRECORDED_AUTH);
                }
                if let Err(refusal) = self.permit.bind_identity(&principal.identity) {
                    let text = format!("AUTH failed: {refusal}");
                    return refuse(Kind::Limit, ErrorCode::AuthFailed, &text);
                }
                // An explicit credential takes over from a certificate identity.
                self.adopt(principal);
                Verdict::Reply(nsq::response_frame(reply.to_string().as_bytes()))
            }
            Err(e) => {
                let reason = e.to_string();
                let method = identity::method_name(secret);
                self.shared.metrics.authentication(method, false);
                audit::record(&Event {
                    remote: Some(self.peer),
                    action: "auth",
                    outcome: "failure",
                    reason: Some(&reason),
                    fingerprint: Some(&fingerprint),
                    method: Some(method),
                    ..Event::default()
                });
                // The client hears nsqd's words; the log says why (as the audit line does).
                let refusal = FatalReply::new(Kind::Identity, ErrorCode::AuthFailed, "AUTH failed");
                Verdict::Refuse(refusal.because(&reason))
            }
        }
    }

    fn authorize(
        &mut self,
        now: Instant,
        command: &str,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Verdict {
        if self.principal.is_none() {
            let text = format!("AUTH required before {command}");
            return refuse(Kind::Identity, ErrorCode::AuthFirst, &text);
        }
        if let Some(expired) = self.expired(now, action, topic, channel) {
            return expired;
        }
        let denied = |kind| {
            let channel = channel.unwrap_or("");
            let text = format!("AUTH failed for {command} on {topic:?} {channel:?}");
            refuse(kind, ErrorCode::Unauthorized, &text)
        };
        if let Err(gone) = self.refresh() {
            // Refused exactly like a lost permission, and counted as the revocation it is.
            self.revoke(gone.to_string(), Kind::Identity);
            return denied(Kind::Identity);
        }
        match self.allowed(command, action, topic, channel) {
            Ok(true) => {
                self.shared.metrics.decision(action.as_str(), true);
                Verdict::Forward
            }
            Ok(false) => {
                self.shared.metrics.decision(action.as_str(), false);
                denied(Kind::Policy)
            }
            Err(refused) => refused,
        }
    }

    /// Whether the policy allows it, from the cache or decided now. A new allow is charged
    /// to the name quotas first (a name nsqd may not have yet); a refusal there, or by the
    /// audit log, is not cached, so the next try meets it afresh.
    fn allowed(
        &mut self,
        command: &str,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<bool, Verdict> {
        if let Some(allowed) = self.cache.get(action, topic, channel.unwrap_or("")) {
            return Ok(allowed);
        }
        let policy = Arc::clone(&self.current);
        let Some(allowed) = self.decide(&policy, action, topic, channel) else {
            return Err(unrecorded(command));
        };
        if allowed {
            if let Err(refused) = self.charge_names(&policy, topic, channel) {
                return Err(self.name_refusal(command, action, topic, channel, refused));
            }
        }
        let channel = channel.unwrap_or("");
        self.cache.insert(action, topic, channel, allowed);
        Ok(allowed)
    }

    /// One audited policy decision for the principal (which stands under `policy`); `None`
    /// for an allow the audit log could not record while `[audit] on_failure = "refuse"`.
    fn decide(
        &self,
        policy: &Policy,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Option<bool> {
        let Some(principal) = &self.principal else {
            return Some(false);
        };
        let Ok(subject) = identity::current_subject(principal, policy) else {
            return Some(false);
        };
        let check = policy.check(&subject, action, topic, channel);
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
        if allowed && recorded.refuse() {
            return None;
        }
        Some(allowed)
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Admin => "admin",
    }
}

/// An allow the audit log could not take is refused (and not cached).
fn unrecorded(command: &str) -> Verdict {
    failed(Kind::Internal, command, UNRECORDED)
}

/// A refusal of a publish or SUB that nsqgate may not pass on (rate limit, name quota, audit
/// log down), told with the code nsqd uses when that command fails, so stock clients treat it
/// as a failed publish or subscription.
fn failed(kind: Kind, command: &str, reason: &str) -> Verdict {
    let code = match command {
        "MPUB" => ErrorCode::MpubFailed,
        "DPUB" => ErrorCode::DpubFailed,
        "SUB" => ErrorCode::SubFailed,
        _ => ErrorCode::PubFailed,
    };
    refuse(kind, code, &format!("{command} failed: {reason}"))
}

fn refuse(kind: Kind, code: ErrorCode, text: &str) -> Verdict {
    Verdict::Refuse(FatalReply::new(kind, code, text))
}
