//! IDENTIFY on two legs: which of the client's settings are passed on to nsqd, and the truthful
//! reply for the client leg built from nsqd's reply. Pure functions over JSON; no I/O here.

use serde_json::{Map, Value};

/// Settings that concern nsqd's treatment of the connection, relayed as the client sent them.
/// TLS and compression fields are decided per leg and never relayed.
const RELAYED_STRINGS: &[&str] = &["client_id", "hostname", "user_agent"];
const RELAYED_NUMBERS: &[&str] = &[
    "heartbeat_interval",
    "output_buffer_size",
    "output_buffer_timeout",
    "msg_timeout",
    "sample_rate",
];

/// nsqd's heartbeat interval when a client does not choose one (half its 60 s client timeout).
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentifyError {
    #[error("IDENTIFY failed to decode JSON body")]
    NotJson,
    #[error("IDENTIFY field {key} must be {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
}

/// A client's IDENTIFY, read.
#[derive(Clone, Debug, Default)]
pub struct ClientIdentify {
    /// Without it, nsqd answers a bare `OK` and nothing is upgraded.
    pub feature_negotiation: bool,
    pub tls_v1: bool,
    relayed: Map<String, Value>,
}

// === impl ClientIdentify ===

impl ClientIdentify {
    pub fn parse(body: &[u8]) -> Result<ClientIdentify, IdentifyError> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(IdentifyError::NotJson);
        };
        let flag = |key: &'static str| -> Result<bool, IdentifyError> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(IdentifyError::WrongType {
                    key,
                    expected: "a boolean",
                }),
            }
        };
        let feature_negotiation = flag("feature_negotiation")?;
        let tls_v1 = flag("tls_v1")?;
        for key in ["snappy", "deflate"] {
            flag(key)?;
        }
        let mut relayed = Map::new();
        for &key in RELAYED_STRINGS {
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(v @ Value::String(_)) => {
                    relayed.insert(key.to_owned(), v.clone());
                }
                Some(_) => {
                    return Err(IdentifyError::WrongType {
                        key,
                        expected: "a string",
                    })
                }
            }
        }
        for &key in RELAYED_NUMBERS {
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(v @ Value::Number(n)) if n.is_i64() => {
                    relayed.insert(key.to_owned(), v.clone());
                }
                Some(_) => {
                    return Err(IdentifyError::WrongType {
                        key,
                        expected: "an integer",
                    })
                }
            }
        }
        Ok(ClientIdentify {
            feature_negotiation,
            tls_v1,
            relayed,
        })
    }

    /// The heartbeat interval nsqd will use for this client; None when the client disabled
    /// heartbeats (-1). Absent or 0 means nsqd's default of 30 s.
    pub fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        match self
            .relayed
            .get("heartbeat_interval")
            .and_then(Value::as_i64)
        {
            Some(ms) if ms < 0 => None,
            Some(ms) if ms > 0 => Some(std::time::Duration::from_millis(ms.unsigned_abs())),
            _ => Some(DEFAULT_HEARTBEAT),
        }
    }

    /// The IDENTIFY body nsqgate sends to nsqd for this client.
    pub fn upstream_body(&self, upstream_tls: bool) -> Vec<u8> {
        let mut fields = self.relayed.clone();
        fields.insert("feature_negotiation".into(), Value::Bool(true));
        fields.insert("tls_v1".into(), Value::Bool(upstream_tls));
        fields.insert("snappy".into(), Value::Bool(false));
        fields.insert("deflate".into(), Value::Bool(false));
        fields
            .entry("user_agent")
            .or_insert_with(|| Value::String(format!("nsqgate/{}", env!("CARGO_PKG_VERSION"))));
        Value::Object(fields).to_string().into_bytes()
    }
}

impl ClientIdentify {
    /// The reply nsqd will give this client, predicted from `defaults` (nsqd's reply to an
    /// IDENTIFY that asked for nothing): the client's own choices replace nsqd's defaults. Used
    /// while the client has not authenticated and so has no nsqd connection of its own yet.
    pub fn expected_reply(&self, defaults: &Map<String, Value>) -> Map<String, Value> {
        let mut reply = defaults.clone();
        for key in [
            "msg_timeout",
            "output_buffer_size",
            "output_buffer_timeout",
            "sample_rate",
        ] {
            if let Some(value) = self.relayed.get(key).filter(|v| v.as_i64() != Some(0)) {
                reply.insert(key.to_owned(), value.clone());
            }
        }
        reply
    }
}

/// What the client leg agreed to, to be stated in the reply.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLeg {
    /// nsqgate will upgrade this connection to TLS right after the reply.
    pub tls_v1: bool,
    /// The client must AUTH before SUB or publishing.
    pub auth_required: bool,
}

/// nsqd's reply, with the fields that describe a leg replaced by the client leg's truth.
/// Compression is declined: stock clients then carry on uncompressed.
pub fn client_reply(upstream_reply: &Map<String, Value>, leg: ClientLeg) -> Vec<u8> {
    let mut fields = upstream_reply.clone();
    fields.insert("tls_v1".into(), Value::Bool(leg.tls_v1));
    fields.insert("snappy".into(), Value::Bool(false));
    fields.insert("deflate".into(), Value::Bool(false));
    fields.insert("auth_required".into(), Value::Bool(leg.auth_required));
    Value::Object(fields).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_settings_and_decides_tls_per_leg() {
        let body = br#"{"client_id":"c","hostname":"h","heartbeat_interval":5000,"tls_v1":true,
            "feature_negotiation":true,"snappy":true,"deflate_level":3,"long_id":"x"}"#;
        let identify = ClientIdentify::parse(body).unwrap();
        assert!(identify.tls_v1 && identify.feature_negotiation);
        let up: Value = serde_json::from_slice(&identify.upstream_body(true)).unwrap();
        assert_eq!(up["client_id"], "c");
        assert_eq!(up["heartbeat_interval"], 5000);
        assert_eq!(up["tls_v1"], true);
        assert_eq!(up["snappy"], false);
        assert!(up.get("long_id").is_none());
    }

    #[test]
    fn heartbeat_interval_as_nsqd_reads_it() {
        let hb = |body: &[u8]| ClientIdentify::parse(body).unwrap().heartbeat_interval();
        assert_eq!(hb(b"{}"), Some(DEFAULT_HEARTBEAT));
        assert_eq!(hb(br#"{"heartbeat_interval":0}"#), Some(DEFAULT_HEARTBEAT));
        assert_eq!(
            hb(br#"{"heartbeat_interval":5000}"#),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(hb(br#"{"heartbeat_interval":-1}"#), None);
    }

    #[test]
    fn expected_reply_takes_the_clients_choices_over_nsqds_defaults() {
        let defaults: Map<String, Value> =
            serde_json::from_str(r#"{"max_rdy_count":2500,"msg_timeout":60000,"sample_rate":0}"#)
                .unwrap();
        let identify = ClientIdentify::parse(br#"{"msg_timeout":30000,"sample_rate":0}"#).unwrap();
        let reply = identify.expected_reply(&defaults);
        assert_eq!(reply["msg_timeout"], 30000);
        assert_eq!(reply["max_rdy_count"], 2500);
        assert_eq!(reply["sample_rate"], 0);
    }

    #[test]
    fn rejects_wrong_types_like_nsqd() {
        assert_eq!(
            ClientIdentify::parse(b"[1]").unwrap_err(),
            IdentifyError::NotJson
        );
        assert!(matches!(
            ClientIdentify::parse(br#"{"tls_v1":"yes"}"#),
            Err(IdentifyError::WrongType { key: "tls_v1", .. })
        ));
        assert!(matches!(
            ClientIdentify::parse(br#"{"msg_timeout":1.5}"#),
            Err(IdentifyError::WrongType {
                key: "msg_timeout",
                ..
            })
        ));
    }

    #[test]
    fn reply_describes_the_client_leg() {
        let nsqd: Map<String, Value> = serde_json::from_str(
            r#"{"max_rdy_count":2500,"tls_v1":true,"snappy":true,"auth_required":true}"#,
        )
        .unwrap();
        let leg = ClientLeg {
            tls_v1: false,
            auth_required: false,
        };
        let reply: Value = serde_json::from_slice(&client_reply(&nsqd, leg)).unwrap();
        assert_eq!(reply["max_rdy_count"], 2500);
        assert_eq!(reply["tls_v1"], false);
        assert_eq!(reply["snappy"], false);
        assert_eq!(reply["auth_required"], false);
    }
}
