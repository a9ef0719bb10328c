//! `nsqgate policy explain`: the decision the proxy would make for one caller and one action,
//! reached through the same authentication and policy code the proxy runs. When the decision
//! would have been different while `*` still crossed `.`, it says so, so an operator sees
//! what the change of wildcard meaning did to this request.

pub mod command;

use std::fmt;

use crate::auth::identity;
use crate::auth::jwt::{JwtConfigError, JwtVerifier};
use crate::auth::{AuthError, Method, Principal};
use crate::config::Config;
use crate::policy::{Action, Check, Decision, Policy, Subject};

pub enum Credential<'a> {
    /// An identity taken as given, as a verified certificate would name it.
    Identity(&'a str),
    /// A JWT or an API key, checked as AUTH checks it.
    Secret(&'a [u8]),
}

pub enum Request<'a> {
    Publish(&'a str),
    Subscribe(&'a str, &'a str),
}

/// Why no decision could be explained: the configuration the proxy would start from is
/// itself refused (exit 2, as `run` would not start).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("JWT keys: {0}")]
    JwtKeys(#[from] JwtConfigError),
}

pub enum Explanation {
    /// The credential did not authenticate: the proxy answers AUTH with E_AUTH_FAILED.
    AuthFailed {
        reason: AuthError,
    },
    Decided(Box<Decided>),
}

pub struct Decided {
    pub principal: Principal,
    pub roles: Vec<String>,
    pub action: Action,
    pub topic: String,
    pub channel: Option<String>,
    pub check: Check,
    /// The decision under the old wildcard meaning (every `*` crossing `.`), when different.
    pub crossing_stars: Option<Decision>,
}

impl Explanation {
    pub fn allowed(&self) -> bool {
        matches!(self, Explanation::Decided(decided) if decided.check.decision.is_allow())
    }
}

pub fn explain(
    config: &Config,
    credential: Credential<'_>,
    request: Request<'_>,
) -> Result<Explanation, ExplainError> {
    let policy = Policy::load_dir(&config.auth.policy_dir)?;
    let principal = match credential {
        Credential::Identity(identity) => Principal {
            identity: identity.to_owned(),
            method: Method::Named,
            claimed_roles: Vec::new(),
            expires_at: None,
            proof: Default::default(),
            token_id: None,
        },
        Credential::Secret(secret) => match authenticate(config, &policy, secret)? {
            Ok(principal) => principal,
            Err(reason) => return Ok(Explanation::AuthFailed { reason }),
        },
    };
    let (action, topic, channel) = match request {
        Request::Publish(topic) => (Action::Publish, topic, None),
        Request::Subscribe(topic, channel) => (Action::Subscribe, topic, Some(channel)),
    };
    let subject = Subject {
        identity: &principal.identity,
        claimed_roles: &principal.claimed_roles,
    };
    let check = policy.check(&subject, action, topic, channel);
    let old = policy
        .with_crossing_stars()
        .check(&subject, action, topic, channel)
        .decision;
    let crossing_stars = (old.is_allow() != check.decision.is_allow()).then_some(old);
    let roles = policy.roles_of(&subject);
    Ok(Explanation::Decided(Box::new(Decided {
        principal,
        roles,
        action,
        topic: topic.to_owned(),
        channel: channel.map(str::to_owned),
        check,
        crossing_stars,
    })))
}

fn authenticate(
    config: &Config,
    policy: &Policy,
    secret: &[u8],
) -> Result<Result<Principal, AuthError>, ExplainError> {
    let verifier = match &config.auth.jwt {
        Some(settings) => Some(JwtVerifier::new(settings)?),
        None => None,
    };
    Ok(identity::from_secret(secret, verifier.as_ref(), policy))
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Explanation::AuthFailed { reason } => {
                write!(f, "deny: authentication failed: {reason}")
            }
            Explanation::Decided(decided) => {
                let Decided {
                    principal,
                    roles,
                    action,
                    topic,
                    channel,
                    check,
                    crossing_stars,
                } = decided.as_ref();
                let verdict = if check.decision.is_allow() {
                    "allow"
                } else {
                    "deny"
                };
                write!(f, "{verdict}: {action} on topic {topic:?}")?;
                if let Some(channel) = channel {
                    write!(f, " channel {channel:?}")?;
                }
                write!(
                    f,
                    " by {:?} ({}; roles: {})",
                    principal.identity,
                    principal.method,
                    if roles.is_empty() {
                        "none".to_owned()
                    } else {
                        roles.join(", ")
                    }
                )?;
                match &check.decision {
                    Decision::Allow { rule } => write!(f, "\n  rule: {rule}")?,
                    Decision::Deny { rule, reason } => {
                        write!(f, "\n  reason: {reason}")?;
                        if let Some(rule) = rule {
                            write!(f, "\n  rule: {rule}")?;
                        }
                    }
                }
                write_notes(f, crossing_stars.as_ref(), check.audit.as_ref())
            }
        }
    }
}

/// What would have decided otherwise: the old wildcard meaning, and audit-mode rules.
fn write_notes(
    f: &mut fmt::Formatter<'_>,
    crossing_stars: Option<&Decision>,
    audit: Option<&Decision>,
) -> fmt::Result {
    if let Some(old) = crossing_stars {
        let verdict = if old.is_allow() { "allowed" } else { "denied" };
        write!(
            f,
            "\n  note: `*` now stays within one `.` segment; when it crossed `.` this was \
             {verdict}"
        )?;
        if let Some(rule) = old.rule() {
            write!(f, " ({rule})")?;
        }
    }
    if let Some(would) = audit {
        let verdict = if would.is_allow() { "allow" } else { "deny" };
        write!(f, "\n  audit-mode rules would {verdict}")?;
        if let Some(rule) = would.rule() {
            write!(f, " ({rule})")?;
        }
    }
    Ok(())
}
