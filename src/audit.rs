//! The audit trail: one structured event per decision that matters (authentication, every
//! deny, the first allow per topic per connection, revocations), on its own tracing target so
//! it can go to its own file as JSON lines. Secrets never appear here, only fingerprints.

use std::net::SocketAddr;

use crate::auth::Principal;
use crate::policy::{Action, Decision};

/// The tracing target audit events use; `main` routes it to the audit sink.
pub const TARGET: &str = "audit";

/// Counts of the security decisions the audit log records, for `/metrics`. Shared by every
/// listener of one process through the gateway (not a global, so tests stay independent).
#[derive(Debug, Default)]
pub struct Counters {
    pub auth_success: std::sync::atomic::AtomicU64,
    pub auth_failure: std::sync::atomic::AtomicU64,
    /// Commands and requests the policy denied.
    pub denied: std::sync::atomic::AtomicU64,
    /// Publishes refused by a rate limit.
    pub rate_limited: std::sync::atomic::AtomicU64,
    /// Live connections closed by a reload (key, roles, certificate) or token expiry.
    pub revoked: std::sync::atomic::AtomicU64,
    /// Publishes and SUBs refused by a quota on new topic or channel names.
    pub name_quota: std::sync::atomic::AtomicU64,
}

impl Counters {
    pub fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One audit record. Absent fields are logged as empty strings so every line has every key.
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub remote: Option<SocketAddr>,
    pub principal: Option<&'a Principal>,
    /// `auth`, `publish`, `subscribe`, `admin`, `revoke`, ...
    pub action: &'a str,
    pub topic: Option<&'a str>,
    pub channel: Option<&'a str>,
    /// The policy rule that decided, when one did.
    pub rule: Option<&'a str>,
    /// `allow`, `deny`, `would_allow`, `would_deny`, `success`, `failure`, `closed`.
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    /// SHA-256 prefix of a presented secret, to correlate failures without revealing it.
    pub fingerprint: Option<&'a str>,
    /// The authentication method when there is no principal yet (a failed AUTH).
    pub method: Option<&'a str>,
}

pub fn record(event: &Event<'_>) {
    let remote = event.remote.map(|r| r.to_string()).unwrap_or_default();
    let identity = event.principal.map(|p| p.identity.as_str()).unwrap_or("");
    let method = event
        .principal
        .map(|p| p.method.to_string())
        .or(event.method.map(str::to_owned))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        remote = %remote,
        identity = %identity,
        method = %method,
        action = %event.action,
        topic = %event.topic.unwrap_or(""),
        channel = %event.channel.unwrap_or(""),
        rule = %event.rule.unwrap_or(""),
        outcome = %event.outcome,
        reason = %event.reason.unwrap_or(""),
        fingerprint = %event.fingerprint.unwrap_or(""),
        "audit"
    );
}

/// Records a policy decision: `would` marks what audit-mode rules would have decided.
pub fn record_decision(
    remote: SocketAddr,
    principal: &Principal,
    action: Action,
    topic: &str,
    channel: Option<&str>,
    decision: &Decision,
    would: bool,
) {
    let outcome = match (decision.is_allow(), would) {
        (true, false) => "allow",
        (false, false) => "deny",
        (true, true) => "would_allow",
        (false, true) => "would_deny",
    };
    let reason = match decision {
        Decision::Deny { reason, .. } => Some(reason.as_str()),
        Decision::Allow { .. } => None,
    };
    record(&Event {
        remote: Some(remote),
        principal: Some(principal),
        action: action.as_str(),
        topic: Some(topic),
        channel,
        rule: decision.rule(),
        outcome,
        reason,
        ..Event::default()
    });
}
