//! IDENTIFY's body as nsqd v1.3.0 reads and judges it, so a client refused by nsqgate hears
//! exactly what nsqd would have said. No I/O and no knowledge of the proxy here.
//!
//! Reading follows Go's `encoding/json` into nsqd's `identifyDataV2`: keys match field names
//! case-insensitively, in document order (the last one wins), `null` leaves a field alone,
//! unknown keys are ignored, and any value of the wrong type (a float or an out-of-range number
//! for an integer) fails the whole body. Judging follows `clientV2.Identify`: heartbeat, output
//! buffer timeout, output buffer size, sample rate, msg timeout, in that order, against the
//! ranges the nsqd in question applies ([`IdentifyRanges`]), then compression.
//!
//! Known divergences from Go, both on bodies no client sends: `-0` is refused (Go reads 0) and
//! a lone UTF-16 surrogate escape is refused (Go substitutes U+FFFD).

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::error::ErrorCode;

/// The fields nsqd reads from IDENTIFY; absent and `null` leave the zero value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyData {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub heartbeat_interval: i64,
    pub output_buffer_size: i64,
    pub output_buffer_timeout: i64,
    pub feature_negotiation: bool,
    pub tls_v1: bool,
    pub deflate: bool,
    pub deflate_level: i64,
    pub snappy: bool,
    pub sample_rate: i32,
    pub msg_timeout: i64,
}

/// What one nsqd accepts in IDENTIFY: its `--max-heartbeat-interval`,
/// `--max-output-buffer-size`, `--min/max-output-buffer-timeout`, `--max-msg-timeout`,
/// `--snappy` and `--deflate`. [`Default`] is nsqd v1.3.0's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentifyRanges {
    pub max_heartbeat_interval_ms: i64,
    pub max_output_buffer_size: i64,
    pub min_output_buffer_timeout_ms: i64,
    pub max_output_buffer_timeout_ms: i64,
    pub max_msg_timeout_ms: i64,
    pub snappy: bool,
    pub deflate: bool,
}

impl Default for IdentifyRanges {
    fn default() -> Self {
        IdentifyRanges {
            max_heartbeat_interval_ms: 60_000,
            max_output_buffer_size: 64 * 1024,
            min_output_buffer_timeout_ms: 25,
            max_output_buffer_timeout_ms: 30_000,
            max_msg_timeout_ms: 15 * 60 * 1000,
            snappy: true,
            deflate: true,
        }
    }
}

/// nsqd's refusal of an IDENTIFY: its code and its text, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifyRefusal {
    /// Not JSON, or a value of the wrong type.
    Json,
    /// A setting outside the range nsqd applies; `what` is nsqd's name for it.
    Invalid { what: &'static str, value: i64 },
    /// Both compressions asked for, on an nsqd that offers both.
    BothCompressions,
}

// === impl IdentifyRefusal ===

impl IdentifyRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            IdentifyRefusal::Json | IdentifyRefusal::Invalid { .. } => ErrorCode::BadBody,
            IdentifyRefusal::BothCompressions => ErrorCode::IdentifyFailed,
        }
    }
}

impl fmt::Display for IdentifyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifyRefusal::Json => f.write_str("IDENTIFY failed to decode JSON body"),
            IdentifyRefusal::Invalid { what, value } => {
                write!(f, "IDENTIFY {what} ({value}) is invalid")
            }
            IdentifyRefusal::BothCompressions => {
                f.write_str("cannot enable both deflate and snappy compression")
            }
        }
    }
}

// === impl IdentifyData ===

impl IdentifyData {
    /// Reads a body as nsqd's `json.Unmarshal` does.
    pub fn parse(body: &[u8]) -> Result<IdentifyData, IdentifyRefusal> {
        // Go keeps invalid UTF-8 inside strings (as U+FFFD); elsewhere it is a syntax error
        // either way.
        let text = String::from_utf8_lossy(body);
        let top: Top = serde_json::from_str(&text).map_err(|_| IdentifyRefusal::Json)?;
        let mut data = IdentifyData::default();
        let fields = match top {
            Top::Null => return Ok(data),
            Top::Other => return Err(IdentifyRefusal::Json),
            Top::Object(fields) => fields,
        };
        // Go reports a type error only after reading everything; the outcome is the same.
        let mut ok = true;
        for (key, value) in fields {
            if value.is_null() {
                continue;
            }
            ok &= data.set(&fold(&key), value);
        }
        if ok {
            Ok(data)
        } else {
            Err(IdentifyRefusal::Json)
        }
    }

    /// Sets the field `key` names; false when the value does not fit its type.
    fn set(&mut self, key: &str, value: Value) -> bool {
        fn string(to: &mut String, value: Value) -> bool {
            match value {
                Value::String(s) => {
                    *to = s;
                    true
                }
                _ => false,
            }
        }
        fn flag(to: &mut bool, value: &Value) -> bool {
            value.as_bool().map(|b| *to = b).is_some()
        }
        fn int(to: &mut i64, value: &Value) -> bool {
            value.as_i64().map(|n| *to = n).is_some()
        }
        match key {
            "client_id" => string(&mut self.client_id, value),
            "hostname" => string(&mut self.hostname, value),
            "user_agent" => string(&mut self.user_agent, value),
            "heartbeat_interval" => int(&mut self.heartbeat_interval, &value),
            "output_buffer_size" => int(&mut self.output_buffer_size, &value),
            "output_buffer_timeout" => int(&mut self.output_buffer_timeout, &value),
            "feature_negotiation" => flag(&mut self.feature_negotiation, &value),
            "tls_v1" => flag(&mut self.tls_v1, &value),
            "deflate" => flag(&mut self.deflate, &value),
            "deflate_level" => int(&mut self.deflate_level, &value),
            "snappy" => flag(&mut self.snappy, &value),
            "sample_rate" => match value.as_i64().map(i32::try_from) {
                Some(Ok(n)) => {
                    self.sample_rate = n;
                    true
                }
                _ => false,
            },
            "msg_timeout" => int(&mut self.msg_timeout, &value),
            _ => true,
        }
    }

    /// nsqd's checks of the settings, in its order (`clientV2.Identify`).
    pub fn check(&self, ranges: &IdentifyRanges) -> Result<(), IdentifyRefusal> {
        let invalid = |what, value| Err(IdentifyRefusal::Invalid { what, value });
        let hb = self.heartbeat_interval;
        if !(hb == -1 || hb == 0 || (1000..=ranges.max_heartbeat_interval_ms).contains(&hb)) {
            return invalid("heartbeat interval", hb);
        }
        let timeout = self.output_buffer_timeout;
        let timeouts = ranges.min_output_buffer_timeout_ms..=ranges.max_output_buffer_timeout_ms;
        if !(timeout == -1 || timeout == 0 || timeouts.contains(&timeout)) {
            return invalid("output buffer timeout", timeout);
        }
        let size = self.output_buffer_size;
        if !(size == -1 || size == 0 || (64..=ranges.max_output_buffer_size).contains(&size)) {
            return invalid("output buffer size", size);
        }
        if !(0..=99).contains(&self.sample_rate) {
            return invalid("sample rate", i64::from(self.sample_rate));
        }
        let msg = self.msg_timeout;
        if !(msg == 0 || (1000..=ranges.max_msg_timeout_ms).contains(&msg)) {
            return invalid("msg timeout", msg);
        }
        Ok(())
    }

    /// nsqd's check after the settings, made only when features are negotiated.
    pub fn check_compression(&self, ranges: &IdentifyRanges) -> Result<(), IdentifyRefusal> {
        let deflate = ranges.deflate && self.deflate;
        let snappy = ranges.snappy && self.snappy;
        if self.feature_negotiation && deflate && snappy {
            return Err(IdentifyRefusal::BothCompressions);
        }
        Ok(())
    }
}

/// Go's case folding for field names (`bytes.EqualFold`): ASCII case, plus the two non-ASCII
/// letters that fold to ASCII ones (long s, Kelvin sign).
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The top-level JSON value, keeping an object's keys in order and with duplicates.
enum Top {
    Null,
    Object(Vec<(String, Value)>),
    Other,
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Top, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::Null)
    }

    fn visit_none<E>(self) -> Result<Top, E> {
        Ok(Top::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.push((key, value));
        }
        Ok(Top::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other)
    }
}
