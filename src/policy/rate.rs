//! Publish quotas as a policy file writes them ([`RateQuota`]) and as a subject's roles grant
//! them ([`RoleRates`]). No I/O here; the buckets themselves live in `crate::limit`.

/// A token-bucket quota for publishing: messages and payload bytes per second, each with a
/// burst. An unset rate is unlimited; an unset burst is one second's worth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    pub messages_per_sec: Option<u32>,
    pub burst_messages: Option<u32>,
    pub bytes_per_sec: Option<u32>,
    pub burst_bytes: Option<u32>,
}

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

    /// Field by field, the larger allowance; an unlimited field stays unlimited.
    pub(super) fn most_generous(
        current: Option<RateQuota>,
        other: Option<RateQuota>,
    ) -> Option<RateQuota> {
        fn wider(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            }
        }
        match (current, other) {
            (Some(a), Some(b)) => Some(RateQuota {
                messages_per_sec: wider(a.messages_per_sec, b.messages_per_sec),
                burst_messages: wider(
                    a.burst_messages.or(a.messages_per_sec),
                    b.burst_messages.or(b.messages_per_sec),
                ),
                bytes_per_sec: wider(a.bytes_per_sec, b.bytes_per_sec),
                burst_bytes: wider(
                    a.burst_bytes.or(a.bytes_per_sec),
                    b.burst_bytes.or(b.bytes_per_sec),
                ),
            }),
            (a, b) => a.or(b),
        }
    }
}

/// The quotas a subject's roles set; `None` means the global default applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleRates {
    pub identity: Option<RateQuota>,
    pub identity_topic: Option<RateQuota>,
}
