//! IDENTIFY on two legs: which of the client's settings are passed on to nsqd (and which
//! metadata crosses before nsqd's certificate is verified), and the truthful reply for the
//! client leg built from nsqd's reply. Pure functions over JSON; no I/O here.

use serde_json::{Map, Value};

use crate::compress::Compression;
use crate::nsq::{IdentifyData, IdentifyRanges, IdentifyRefusal};

/// nsqd's DEFLATE level when a client names none, and its default --max-deflate-level.
pub const DEFAULT_DEFLATE_LEVEL: i64 = 6;

/// nsqd's heartbeat interval when a client does not choose one (half its 60 s client timeout).
pub const DEFAULT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// What nsqd records about a connection (its /stats `client_id`, `hostname`, `user_agent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
}

impl Metadata {
    /// nsqgate's own: its name, the host it runs on, its version.
    pub fn own(hostname: &str) -> Metadata {
        Metadata {
            client_id: "nsqgate".to_owned(),
            hostname: hostname.to_owned(),
            user_agent: format!("nsqgate/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// nsqgate's IDENTIFY for one client's nsqd connection.
#[derive(Clone, Debug)]
pub struct UpstreamIdentify {
    /// Sent in clear, before nsqd's certificate is verified: connection settings and
    /// nsqgate's own metadata only (unless metadata may cross in clear: no upstream TLS).
    pub first: Vec<u8>,
    /// The client's metadata, sent as a second IDENTIFY inside the verified TLS session
    /// (`upstream.forward_client_metadata`); nsqd v1.3.0 accepts it before SUB and answers OK.
    pub after_tls: Option<Vec<u8>>,
}

/// A client's IDENTIFY, read as nsqd reads it.
#[derive(Clone, Debug, Default)]
pub struct ClientIdentify {
    /// Without it, nsqd answers a bare `OK` and nothing is upgraded.
    pub feature_negotiation: bool,
    pub tls_v1: bool,
    data: IdentifyData,
}

// === impl ClientIdentify ===

impl ClientIdentify {
    /// Go's reading of the body; a refusal is nsqd's own code and text.
    pub fn parse(body: &[u8]) -> Result<ClientIdentify, IdentifyRefusal> {
        let data = IdentifyData::parse(body)?;
        Ok(ClientIdentify {
            feature_negotiation: data.feature_negotiation,
            tls_v1: data.tls_v1,
            data,
        })
    }

    /// nsqd's checks, for when nsqgate answers in nsqd's place (no nsqd connection yet).
    pub fn check(&self, ranges: &IdentifyRanges) -> Result<(), IdentifyRefusal> {
        self.data.check(ranges)?;
        self.check_compression(ranges)
    }

    /// The one check nsqd cannot make for nsqgate: compression is never asked of nsqd.
    pub fn check_compression(&self, ranges: &IdentifyRanges) -> Result<(), IdentifyRefusal> {
        self.data.check_compression(ranges)
    }

    /// The client leg's compression, chosen as nsqd chooses it (`protocolV2.IDENTIFY`): what
    /// the client asked for and nsqd offers (`ranges`), only with feature negotiation, and the
    /// DEFLATE level the reply states: the client's, or 6, capped at nsqd's
    /// `max_deflate_level` (from its reply). Asking for both is refused before this.
    pub fn compression(
        &self,
        ranges: &IdentifyRanges,
        nsqd_reply: &Map<String, Value>,
    ) -> (Option<Compression>, i64) {
        let d = &self.data;
        let deflate = ranges.deflate && d.deflate;
        let max = nsqd_reply
            .get("max_deflate_level")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_DEFLATE_LEVEL);
        let asked = match deflate && d.deflate_level > 0 {
            true => d.deflate_level,
            false => DEFAULT_DEFLATE_LEVEL,
        };
        let level = asked.min(max);
        let chosen = match (self.feature_negotiation, ranges.snappy && d.snappy, deflate) {
            (false, _, _) => None,
            (true, true, _) => Some(Compression::Snappy),
            (true, false, true) => {
                // nsqd refuses a --max-deflate-level outside 1..=9 at start.
                let level = u32::try_from(level.clamp(1, 9)).unwrap_or(6);
                Some(Compression::Deflate { level })
            }
            (true, false, false) => None,
        };
        (chosen, level)
    }

    /// The heartbeat interval nsqd will use for this client; None when the client disabled
    /// heartbeats (-1). Absent or 0 means nsqd's default of 30 s.
    pub fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        match self.data.heartbeat_interval {
            ms if ms < 0 => None,
            ms if ms > 0 => Some(std::time::Duration::from_millis(ms.unsigned_abs())),
            _ => Some(DEFAULT_HEARTBEAT),
        }
    }

    /// The client's own metadata, as it sent it.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            client_id: self.data.client_id.clone(),
            hostname: self.data.hostname.clone(),
            user_agent: self.data.user_agent.clone(),
        }
    }

    /// The settings nsqd applies to the connection, relayed when the client chose them (0
    /// means nsqd's default, as if absent).
    fn settings(&self) -> Map<String, Value> {
        let d = &self.data;
        let mut fields = Map::new();
        for (key, value) in [
            ("heartbeat_interval", d.heartbeat_interval),
            ("output_buffer_size", d.output_buffer_size),
            ("output_buffer_timeout", d.output_buffer_timeout),
            ("msg_timeout", d.msg_timeout),
            ("sample_rate", i64::from(d.sample_rate)),
        ] {
            if value != 0 {
                fields.insert(key.to_owned(), value.into());
            }
        }
        fields
    }

    /// nsqgate's IDENTIFY for this client: the first in clear with `own` metadata when nsqd's
    /// certificate is still to be verified; the client's metadata when `forward` says so
    /// (inside TLS when there is TLS).
    pub fn upstream(&self, upstream_tls: bool, own: &Metadata, forward: bool) -> UpstreamIdentify {
        let settings = self.settings();
        let client = self.metadata();
        let in_clear = if forward && !upstream_tls {
            &client
        } else {
            own
        };
        let mut first = settings.clone();
        put_metadata(&mut first, in_clear);
        first.insert("feature_negotiation".into(), Value::Bool(true));
        first.insert("tls_v1".into(), Value::Bool(upstream_tls));
        first.insert("snappy".into(), Value::Bool(false));
        first.insert("deflate".into(), Value::Bool(false));
        // The second IDENTIFY repeats what nsqd would otherwise reset (sample_rate) and leaves
        // out output_buffer_size: nsqd v1.3.0 would rebuild its writer on the raw socket.
        let after_tls = (forward && upstream_tls).then(|| {
            let mut second = Map::new();
            put_metadata(&mut second, &client);
            if self.data.sample_rate != 0 {
                second.insert("sample_rate".into(), self.data.sample_rate.into());
            }
            Value::Object(second).to_string().into_bytes()
        });
        UpstreamIdentify {
            first: Value::Object(first).to_string().into_bytes(),
            after_tls,
        }
    }
}

fn put_metadata(fields: &mut Map<String, Value>, metadata: &Metadata) {
    fields.insert("client_id".into(), metadata.client_id.clone().into());
    fields.insert("hostname".into(), metadata.hostname.clone().into());
    fields.insert("user_agent".into(), metadata.user_agent.clone().into());
}

impl ClientIdentify {
    /// The reply nsqd will give this client, predicted from `defaults` (nsqd's reply to an
    /// IDENTIFY that asked for nothing): the client's own choices replace nsqd's defaults. Used
    /// while the client has not authenticated and so has no nsqd connection of its own yet.
    pub fn expected_reply(&self, defaults: &Map<String, Value>) -> Map<String, Value> {
        let mut reply = defaults.clone();
        let d = &self.data;
        // nsqd reports what it set: an output buffer of -1 is a 1-byte buffer with no timeout;
        // the sample rate is always the client's (0 when absent).
        let size = match d.output_buffer_size {
            -1 => Some(1),
            0 => None,
            n => Some(n),
        };
        let timeout = match (d.output_buffer_size, d.output_buffer_timeout) {
            (-1, _) | (_, -1) => Some(0),
            (_, 0) => None,
            (_, n) => Some(n),
        };
        let msg_timeout = (d.msg_timeout != 0).then_some(d.msg_timeout);
        for (key, value) in [
            ("msg_timeout", msg_timeout),
            ("output_buffer_size", size),
            ("output_buffer_timeout", timeout),
            ("sample_rate", Some(i64::from(d.sample_rate))),
        ] {
            if let Some(value) = value {
                reply.insert(key.to_owned(), value.into());
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
    /// nsqgate compresses this leg after the reply (and TLS); nsqd's leg stays uncompressed.
    pub compression: Option<Compression>,
    /// The DEFLATE level nsqd would state (stated whether or not DEFLATE was chosen).
    pub deflate_level: i64,
}

/// nsqd's reply, with the fields that describe a leg replaced by the client leg's truth.
pub fn client_reply(upstream_reply: &Map<String, Value>, leg: ClientLeg) -> Vec<u8> {
    let mut fields = upstream_reply.clone();
    let snappy = leg.compression == Some(Compression::Snappy);
    let deflate = matches!(leg.compression, Some(Compression::Deflate { .. }));
    fields.insert("tls_v1".into(), Value::Bool(leg.tls_v1));
    fields.insert("snappy".into(), Value::Bool(snappy));
    fields.insert("deflate".into(), Value::Bool(deflate));
    fields.insert("deflate_level".into(), leg.deflate_level.into());
    fields.insert("auth_required".into(), Value::Bool(leg.auth_required));
    Value::Object(fields).to_string().into_bytes()
}

#[cfg(test)]
mod tests;
