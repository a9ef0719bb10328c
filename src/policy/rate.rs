//! Publish quotas as a policy file writes them ([`RateQuota`]) and as a subject's roles grant
//! them ([`RoleRates`]), merged field by field over the `[rate_limits]` defaults. No I/O here;
//! the buckets themselves live in `crate::limit`.

/// A token-bucket quota for publishing: messages and payload bytes per second, each with a
/// burst. An unset burst is one second's worth. In `[rate_limits]` an unset rate is
/// unlimited; on a role it is the `[rate_limits]` default (see [`RoleQuota::over`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    pub messages_per_sec: Option<u32>,
    pub burst_messages: Option<u32>,
    pub bytes_per_sec: Option<u32>,
    pub burst_bytes: Option<u32>,
}

/// One unit's rate and burst (both > 0 once validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// What a subject's roles grant for one unit (messages or bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grant {
    /// No role with a quota sets this unit: the `[rate_limits]` default applies.
    #[default]
    Default,
    /// Every role with a quota sets it: the most generous of them.
    Set(Rate),
    /// Some roles set it and some leave it to the default: the more generous of the two.
    AtLeast(Rate),
}

/// What a subject's roles grant in one scope, unit by unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleQuota {
    pub messages: Grant,
    pub bytes: Grant,
}

/// The quotas a subject's roles set, per scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleRates {
    /// Over all the identity's publishing (the role's `rate`).
    pub identity: RoleQuota,
    /// Per topic the identity publishes to (the role's `topic_rate`).
    pub identity_topic: RoleQuota,
}

// === impl RateQuota ===

impl RateQuota {
    pub fn validate(&self) -> Result<(), String> {
        let pairs = [
            ("messages_per_sec", self.messages_per_sec),
            ("burst_messages", self.burst_messages),
            ("bytes_per_sec", self.bytes_per_sec),
            ("burst_bytes", self.burst_bytes),
        ];
        for (name, value) in pairs {
            if value == Some(0) {
                return Err(format!(
                    "{name} must be greater than 0 (leave it out for no limit)"
                ));
            }
        }
        if self.burst_messages.is_some() && self.messages_per_sec.is_none() {
            return Err("burst_messages needs messages_per_sec".into());
        }
        if self.burst_bytes.is_some() && self.bytes_per_sec.is_none() {
            return Err("burst_bytes needs bytes_per_sec".into());
        }
        Ok(())
    }

    /// The message rate, if limited.
    pub fn messages(&self) -> Option<Rate> {
        Rate::of(self.messages_per_sec, self.burst_messages)
    }

    /// The byte rate, if limited.
    pub fn bytes(&self) -> Option<Rate> {
        Rate::of(self.bytes_per_sec, self.burst_bytes)
    }

    fn from_rates(messages: Option<Rate>, bytes: Option<Rate>) -> Option<RateQuota> {
        if messages.is_none() && bytes.is_none() {
            return None;
        }
        Some(RateQuota {
            messages_per_sec: messages.map(|r| r.per_sec),
            burst_messages: messages.map(|r| r.burst),
            bytes_per_sec: bytes.map(|r| r.per_sec),
            burst_bytes: bytes.map(|r| r.burst),
        })
    }
}

// === impl Rate ===

impl Rate {
    fn of(per_sec: Option<u32>, burst: Option<u32>) -> Option<Rate> {
        let per_sec = per_sec.filter(|&r| r > 0)?;
        let burst = burst.filter(|&b| b > 0).unwrap_or(per_sec);
        Some(Rate { per_sec, burst })
    }

    /// One of `replicas` equal shares (at least 1 per second and 1 of burst).
    pub fn share(self, replicas: u32) -> Rate {
        let replicas = replicas.max(1);
        Rate {
            per_sec: (self.per_sec / replicas).max(1),
            burst: (self.burst / replicas).max(1),
        }
    }

    /// Field by field, the larger allowance.
    fn wider(self, other: Rate) -> Rate {
        Rate {
            per_sec: self.per_sec.max(other.per_sec),
            burst: self.burst.max(other.burst),
        }
    }
}

// === impl Grant ===

impl Grant {
    /// Folds in one more role that has a quota table, setting this unit (`Some`) or not.
    fn with_role(acc: Option<Grant>, unit: Option<Rate>) -> Grant {
        match (acc, unit) {
            (None, None) => Grant::Default,
            (None, Some(rate)) => Grant::Set(rate),
            (Some(Grant::Default), None) => Grant::Default,
            (Some(Grant::Default), Some(rate)) => Grant::AtLeast(rate),
            (Some(Grant::Set(a)), None) => Grant::AtLeast(a),
            (Some(Grant::Set(a)), Some(b)) => Grant::Set(a.wider(b)),
            (Some(Grant::AtLeast(a)), None) => Grant::AtLeast(a),
            (Some(Grant::AtLeast(a)), Some(b)) => Grant::AtLeast(a.wider(b)),
        }
    }

    /// The unit's rate given the `[rate_limits]` default for it (`None` = unlimited).
    fn over(self, default: Option<Rate>) -> Option<Rate> {
        match self {
            Grant::Default => default,
            Grant::Set(rate) => Some(rate),
            // The default is unlimited, so the more generous of the two is too.
            Grant::AtLeast(rate) => default.map(|d| d.wider(rate)),
        }
    }
}

// === impl RoleQuota ===

impl RoleQuota {
    /// Folds the quota tables of a subject's roles (roles without one do not count: they
    /// neither grant nor take away). Per unit, the most generous role wins; a unit a role
    /// leaves out is the default for that role.
    pub(super) fn of_roles<'q>(tables: impl IntoIterator<Item = &'q RateQuota>) -> RoleQuota {
        let mut messages = None;
        let mut bytes = None;
        for table in tables {
            messages = Some(Grant::with_role(messages, table.messages()));
            bytes = Some(Grant::with_role(bytes, table.bytes()));
        }
        RoleQuota {
            messages: messages.unwrap_or_default(),
            bytes: bytes.unwrap_or_default(),
        }
    }

    /// The quota in force: the roles' grant over the `[rate_limits]` default, field by field
    /// (a role that sets only `messages_per_sec` keeps the default `bytes_per_sec`).
    /// `None` when neither unit is limited.
    pub fn over(self, default: Option<RateQuota>) -> Option<RateQuota> {
        let messages = self.messages.over(default.and_then(|d| d.messages()));
        let bytes = self.bytes.over(default.and_then(|d| d.bytes()));
        RateQuota::from_rates(messages, bytes)
    }
}

#[cfg(test)]
mod tests;
