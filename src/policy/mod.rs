//! Authorization policy: roles of allow/deny rules over topics and channels, loaded from
//! `policies/*.toml` and checked by a pure function, deny by default. The only I/O is reading
//! the files in [`Policy::load_dir`].
//!
//! Layout: `action` names what a client asks to do; `pattern` compiles and matches
//! topic/channel patterns; `rule` holds validated roles and rules; `raw` is the serde shape of
//! a file plus locating TOML errors; `load` turns raw files into a [`Policy`]; `error` has
//! [`PolicyError`], which names file, line and key; `rate` holds the publish rates roles
//! grant. Unit tests sit beside each module (`pattern/tests.rs`, `load/tests.rs`; decisions
//! in `tests/`). The file format is described in `policies/README.md`.

mod action;
mod error;
mod load;
mod nsqd_grants;
pub(crate) mod pattern;
mod rate;
mod raw;
mod rule;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use action::{Action, UnknownAction};
pub use error::{PolicyError, PolicyWarning};
pub use nsqd_grants::{NsqdAuthorization, NsqdGrants, PUBLISH_CHANNEL};
pub(crate) use pattern::Pattern;
pub use rate::{Grant, Rate, RateQuota, RoleQuota, RoleRates};
use rule::{Effect, Role, Rule};

/// Who is asking: an authenticated identity and the roles its credential claims.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// From a client certificate, a JWT subject, or an API key's name.
    pub identity: &'a str,
    /// From a JWT roles claim or the API key's entry; names that are not roles are ignored.
    pub claimed_roles: &'a [String],
}

/// The outcome of a check; `Allow` only ever names the enforcing rule that granted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        rule: String,
    },
    /// `rule` is `None` when no rule allowed the request (deny by default).
    Deny {
        rule: Option<String>,
        reason: String,
    },
}

/// A decision plus, when audit-mode rules would have decided differently, that decision.
#[derive(Clone, Debug)]
pub struct Check {
    pub decision: Decision,
    /// What the decision would be if every audit rule were enforcing; `None` when the same.
    pub audit: Option<Decision>,
}

/// What an API key authenticates as, looked up by the key's SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The `[api_keys.NAME]` table name.
    pub identity: String,
    /// Roles the key claims; all are defined roles (checked at load).
    pub roles: Vec<String>,
}

/// A loaded, validated policy. Cheap to share behind an `Arc`; replaced whole on reload.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Every role of every file, sorted by name so rules are visited in a stable order.
    roles: Vec<Role>,
    /// Identity -> indices into `roles`, sorted and deduplicated (merged over all files).
    identities: HashMap<String, Vec<usize>>,
    /// SHA-256 of an API key -> what it authenticates as.
    api_keys: HashMap<[u8; 32], ApiKey>,
    /// The files it was built from, in load order.
    files: Vec<PathBuf>,
    /// Patterns whose meaning changed (a single `*` no longer crosses `.`), in load order.
    warnings: Vec<PolicyWarning>,
    /// Set by the caller on each (re)load, so sessions can cache decisions per version.
    version: u64,
}

// === impl Policy ===

impl Policy {
    /// A policy with no rules: every check is denied.
    pub fn empty() -> Policy {
        Policy::default()
    }

    /// Reads every `*.toml` file in `dir` (not hidden ones, not subfolders) in name order and
    /// merges them. A missing folder, or one without policy files, is an error naming it.
    pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
        let sources = load::read_dir(dir)?;
        if sources.is_empty() {
            return Err(PolicyError::NoFiles {
                dir: dir.to_owned(),
            });
        }
        let policy = Policy::from_sources(&sources)?;
        // Every load says so (start, each reload, explain): a changed meaning is worth a look.
        for warning in &policy.warnings {
            tracing::warn!(%warning, "policy pattern whose meaning changed");
        }
        Ok(policy)
    }

    /// Builds a policy from `(path, text)` pairs, merged in the order given; `path` is used
    /// in errors and rule ids only. No sources gives [`Policy::empty`].
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Policy, PolicyError> {
        load::build(sources)
    }

    /// Decides whether `subject` may do `action` on `topic` (and `channel`): an enforcing deny
    /// that matches wins, then an enforcing allow, else deny. `channel` is ignored for publish.
    pub fn check(
        &self,
        subject: &Subject<'_>,
        action: Action,
        topic: &str,
        channel: Option<&str>,
    ) -> Check {
        let channel = if action == Action::Publish {
            None
        } else {
            channel
        };
        let mut hits = Hits::default();
        for (index, role) in self.roles.iter().enumerate() {
            if !self.has_role(subject, index) {
                continue;
            }
            for rule in &role.rules {
                if rule.matches(subject.identity, action, topic, channel) {
                    hits.record(rule);
                }
            }
        }
        let request = Request {
            action,
            topic,
            channel,
        };
        let decision = request.decide(hits.deny, hits.allow);
        let audit = if hits.audit_deny.is_none() && hits.audit_allow.is_none() {
            None
        } else {
            // Enforcing rules still come first, so the audit view differs only where an
            // audit rule would change the outcome (or explain a default deny).
            let would = request.decide(
                hits.deny.or(hits.audit_deny),
                hits.allow.or(hits.audit_allow),
            );
            (would != decision).then_some(would)
        };
        Check { decision, audit }
    }

    /// Whether `subject` may do `action` on every topic (and, for subscribe, every channel),
    /// ephemeral ones included: an enforcing allow rule of the action whose topic patterns
    /// (and channel patterns, when it lists channels) include `**` and one with
    /// `**#ephemeral`, and no enforcing deny rule of that action among the subject's roles.
    /// Decided from the rules' structure, never by trying names, so `*_*` plus `*0*` is not
    /// "everything". For the operator's views: `/config`, `/debug`, `/metrics`, nsqadmin.
    pub fn allows_everywhere(&self, subject: &Subject<'_>, action: Action) -> bool {
        let (mut durable, mut ephemeral) = (false, false);
        for (index, role) in self.roles.iter().enumerate() {
            if !self.has_role(subject, index) {
                continue;
            }
            for rule in role.rules.iter().filter(|r| !r.audit && r.action == action) {
                if rule.effect == Effect::Deny {
                    return false;
                }
                if rule.every_channel() {
                    durable |= rule
                        .topics
                        .iter()
                        .any(|p| p.covers_all() && !p.is_ephemeral());
                    ephemeral |= rule
                        .topics
                        .iter()
                        .any(|p| p.covers_all() && p.is_ephemeral());
                }
            }
        }
        durable && ephemeral
    }

    /// The same policy with every `*` crossing `.` as it did before segments, for
    /// `policy explain` to show where the change of meaning changes a decision.
    pub fn with_crossing_stars(&self) -> Policy {
        let mut policy = self.clone();
        for rule in policy
            .roles
            .iter_mut()
            .flat_map(|role| role.rules.iter_mut())
        {
            rule.cross_segments();
        }
        policy
    }

    /// Patterns whose meaning changed: each single `*` (it no longer crosses `.`) in a file
    /// without `wildcards = "segment"`. Also logged by [`Policy::load_dir`].
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// What the API key whose SHA-256 is `sha256` authenticates as.
    pub fn api_key(&self, sha256: &[u8; 32]) -> Option<&ApiKey> {
        self.api_keys.get(sha256)
    }

    /// Whether the subject may subscribe to at least one channel of `topic`: an enforcing
    /// allow-subscribe rule matches the topic (whatever its channels) and no enforcing deny
    /// covers every channel of it. For discovery: a consumer allowed only on channel
    /// `billing` must still find the topic before that channel exists.
    pub fn may_subscribe_somewhere(&self, subject: &Subject<'_>, topic: &str) -> bool {
        let mut allowed = false;
        for (index, role) in self.roles.iter().enumerate() {
            if !self.has_role(subject, index) {
                continue;
            }
            for rule in role
                .rules
                .iter()
                .filter(|r| !r.audit && r.action == Action::Subscribe)
            {
                if !rule.matches_topic(subject.identity, topic) {
                    continue;
                }
                match (rule.effect, &rule.channels) {
                    // A deny with no channel list covers every channel.
                    (rule::Effect::Deny, None) => return false,
                    (rule::Effect::Deny, Some(_)) => {}
                    (rule::Effect::Allow, _) => allowed = true,
                }
            }
        }
        allowed
    }

    /// The publish rates the subject's roles grant, unit by unit: the most generous any of
    /// its roles with a quota sets (roles grant capacity, they do not take it away); a unit
    /// no such role sets stays the `[rate_limits]` default (see [`RoleQuota::over`]).
    pub fn rates_of(&self, subject: &Subject<'_>) -> RoleRates {
        let roles: Vec<&Role> = (0..self.roles.len())
            .filter(|&index| self.has_role(subject, index))
            .filter_map(|index| self.roles.get(index))
            .collect();
        RoleRates {
            identity: RoleQuota::of_roles(roles.iter().filter_map(|r| r.rate.as_ref())),
            identity_topic: RoleQuota::of_roles(roles.iter().filter_map(|r| r.topic_rate.as_ref())),
        }
    }

    /// The name quotas the subject's roles set: per field, the most generous; `None` where no
    /// role sets one, so the configured default applies.
    pub fn name_quota_of(&self, subject: &Subject<'_>) -> Option<crate::limit::names::NameQuota> {
        self.roles
            .iter()
            .enumerate()
            .filter(|&(index, _)| self.has_role(subject, index))
            .fold(None, |quota, (_, role)| {
                crate::limit::names::NameQuota::most_generous(quota, role.names)
            })
    }

    /// The subject's roles: those named for its identity plus the defined roles it claims.
    /// Sorted.
    pub fn roles_of(&self, subject: &Subject<'_>) -> Vec<String> {
        self.roles
            .iter()
            .enumerate()
            .filter(|&(index, _)| self.has_role(subject, index))
            .map(|(_, role)| role.name.clone())
            .collect()
    }

    /// Claimed role names that this policy does not define (ignored by checks; worth a log
    /// line). Sorted, deduplicated.
    pub fn unknown_claimed_roles(&self, subject: &Subject<'_>) -> Vec<String> {
        let mut unknown: Vec<String> = subject
            .claimed_roles
            .iter()
            .filter(|claimed| self.role_index(claimed).is_none())
            .cloned()
            .collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }

    /// The same policy, tagged with `version`.
    pub fn with_version(mut self, version: u64) -> Policy {
        self.version = version;
        self
    }

    /// The version set by [`Policy::with_version`]; 0 if never set.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The files this policy was built from, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Names of every defined role, sorted.
    pub fn role_names(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|role| role.name.as_str())
    }

    fn role_index(&self, name: &str) -> Option<usize> {
        self.roles
            .binary_search_by(|role| role.name.as_str().cmp(name))
            .ok()
    }

    /// Whether role `index` belongs to `subject`; no allocation, so `check` stays cheap.
    fn has_role(&self, subject: &Subject<'_>, index: usize) -> bool {
        let by_identity = self
            .identities
            .get(subject.identity)
            .is_some_and(|roles| roles.binary_search(&index).is_ok());
        by_identity
            || self
                .roles
                .get(index)
                .is_some_and(|role| subject.claimed_roles.contains(&role.name))
    }
}

/// The first matching rule of each kind, in role-name then file order.
#[derive(Default)]
struct Hits<'p> {
    deny: Option<&'p Rule>,
    allow: Option<&'p Rule>,
    audit_deny: Option<&'p Rule>,
    audit_allow: Option<&'p Rule>,
}

impl<'p> Hits<'p> {
    fn record(&mut self, rule: &'p Rule) {
        let slot = match (rule.effect, rule.audit) {
            (Effect::Deny, false) => &mut self.deny,
            (Effect::Allow, false) => &mut self.allow,
            (Effect::Deny, true) => &mut self.audit_deny,
            (Effect::Allow, true) => &mut self.audit_allow,
        };
        slot.get_or_insert(rule);
    }
}

/// The request being checked, for wording decisions.
struct Request<'r> {
    action: Action,
    topic: &'r str,
    channel: Option<&'r str>,
}

impl Request<'_> {
    fn decide(&self, deny: Option<&Rule>, allow: Option<&Rule>) -> Decision {
        match (deny, allow) {
            (Some(rule), _) => Decision::Deny {
                rule: Some(rule.id.clone()),
                reason: format!("rule {} denies {self}", rule.id),
            },
            (None, Some(rule)) => Decision::Allow {
                rule: rule.id.clone(),
            },
            (None, None) => Decision::Deny {
                rule: None,
                reason: format!("no rule allows {self}"),
            },
        }
    }
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on topic {}", self.action, self.topic)?;
        match self.channel {
            Some(channel) => write!(f, " channel {channel}"),
            None => Ok(()),
        }
    }
}

// === impl Decision ===

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The rule that decided, if any (a default deny has none).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow { rule } => Some(rule),
            Decision::Deny { rule, .. } => rule.as_deref(),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { rule } => write!(f, "allowed by rule {rule}"),
            Decision::Deny { reason, .. } => write!(f, "denied: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests;
