//! What one nsqd identity may tell nsqlookupd: the address and ports it announces in IDENTIFY,
//! and the topics and channels it registers. Pure functions; no I/O here.
//!
//! IDENTIFY's body is parsed here and re-encoded from the checked fields only, so nsqlookupd
//! reads exactly what was checked: Go's JSON decoder matches keys case-insensitively and lets
//! the last duplicate win, where serde refuses duplicates and ignores other spellings; forwarding
//! the original bytes would let one body say one address to the guard and another to nsqlookupd.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::policy::Pattern;

/// One nsqd identity (from its client certificate) and what it may announce.
#[derive(Clone, Debug)]
pub struct NsqdGrant {
    pub identity: String,
    /// Addresses it may give as `broadcast_address` (compared without regard to ASCII case).
    pub broadcast_addresses: Vec<String>,
    pub tcp_port: u16,
    pub http_port: u16,
    /// Topics it may register, patterns as in the policy (`${identity}` is this identity).
    pub(crate) topics: Vec<Pattern>,
    /// Channels it may register under an allowed topic.
    pub(crate) channels: Vec<Pattern>,
}

/// IDENTIFY's body as nsqd v1.3.0 writes it (nsqd/lookup.go), with nsqlookupd's required
/// fields present and non-empty.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Announcement {
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Why a registration step is refused. Each is audited and counted under [`Refusal::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no client certificate, or none naming a configured nsqd identity")]
    UnknownIdentity,
    #[error("IDENTIFY body refused: {0}")]
    BadIdentify(String),
    #[error("broadcast_address {announced:?} is not one this identity may announce")]
    WrongAddress { announced: String },
    #[error("{port} {announced} is not this identity's ({allowed})")]
    WrongPort {
        port: &'static str,
        announced: u16,
        allowed: u16,
    },
    #[error("{command} before IDENTIFY")]
    NotIdentified { command: &'static str },
    #[error("a second IDENTIFY")]
    IdentifyAgain,
    #[error("topic {0:?} is not one this identity may register")]
    Topic(String),
    #[error("channel {channel:?} of topic {topic:?} is not one this identity may register")]
    Channel { topic: String, channel: String },
    #[error("{0}")]
    Protocol(#[from] super::wire::WireError),
}

impl Refusal {
    /// The metric label and audit reason: a closed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownIdentity => "unknown_identity",
            Refusal::BadIdentify(_) => "bad_identify",
            Refusal::WrongAddress { .. } => "wrong_address",
            Refusal::WrongPort { .. } => "wrong_port",
            Refusal::NotIdentified { .. } | Refusal::IdentifyAgain => "out_of_order",
            Refusal::Topic(_) => "topic",
            Refusal::Channel { .. } => "channel",
            Refusal::Protocol(_) => "protocol",
        }
    }

    /// Whether the connection ends with this refusal. An IDENTIFY that is not this nsqd's, or
    /// bytes that are not the protocol, end it (nsqlookupd closes on the same); a refused
    /// REGISTER is answered and the connection goes on, so the registrations it may make stay.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Refusal::Topic(_) | Refusal::Channel { .. })
    }

    /// The response data nsqd receives: nsqlookupd's style, `E_CODE text`.
    pub fn response(&self) -> String {
        let code = match self {
            Refusal::Protocol(e) => e.code(),
            Refusal::BadIdentify(_) => "E_BAD_BODY",
            Refusal::NotIdentified { .. } | Refusal::IdentifyAgain => "E_INVALID",
            _ => "E_UNAUTHORIZED",
        };
        format!("{code} {self}")
    }
}

// === impl NsqdGrant ===

impl NsqdGrant {
    /// The announcement in `body` if this identity may make it, and the body nsqlookupd gets.
    pub fn check_identify(&self, body: &[u8]) -> Result<(Announcement, Bytes), Refusal> {
        let announced: Announcement =
            serde_json::from_slice(body).map_err(|e| Refusal::BadIdentify(e.to_string()))?;
        if announced.broadcast_address.is_empty() || announced.version.is_empty() {
            return Err(Refusal::BadIdentify(
                "broadcast_address and version must not be empty".into(),
            ));
        }
        let address_allowed = self
            .broadcast_addresses
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&announced.broadcast_address));
        if !address_allowed {
            return Err(Refusal::WrongAddress {
                announced: announced.broadcast_address,
            });
        }
        for (port, announced, allowed) in [
            ("tcp_port", announced.tcp_port, self.tcp_port),
            ("http_port", announced.http_port, self.http_port),
        ] {
            if announced != allowed {
                return Err(Refusal::WrongPort {
                    port,
                    announced,
                    allowed,
                });
            }
        }
        let canonical =
            serde_json::to_vec(&announced).map_err(|e| Refusal::BadIdentify(e.to_string()))?;
        Ok((announced, Bytes::from(canonical)))
    }

    /// Whether this identity may register (or unregister) `topic` and `channel`.
    pub fn check_registration(&self, topic: &str, channel: Option<&str>) -> Result<(), Refusal> {
        if !self.topics.iter().any(|p| p.matches(topic, &self.identity)) {
            return Err(Refusal::Topic(topic.to_owned()));
        }
        match channel {
            Some(channel)
                if !self
                    .channels
                    .iter()
                    .any(|p| p.matches(channel, &self.identity)) =>
            {
                Err(Refusal::Channel {
                    topic: topic.to_owned(),
                    channel: channel.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
