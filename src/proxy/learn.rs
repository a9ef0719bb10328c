//! What one nsqd accepts in IDENTIFY, learned once, so that nsqgate can answer a client in
//! nsqd's place (before the client has an nsqd connection) with nsqd's own words.
//!
//! Sources, strongest first: `[upstream.nsqd_options]` (the operator's word, for an nsqd started
//! with other flags); nsqd's HTTP API (`GET /config/<option>`), asked only when nsqgate knows
//! that address (`[http.nsqd] upstream`, for `[upstream]`'s nsqd); nsqd's IDENTIFY reply to a
//! probe (its defaults and `max_msg_timeout`); nsqd v1.3.0's defaults. Nothing here is cached
//! across nsqd restarts: a later refusal by nsqd is relayed and logged as a mismatch.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::NsqdOptions;
use crate::http::upstream::HttpUpstream;
use crate::nsq::IdentifyRanges;

/// An answer from `/config/<option>` is one JSON number or boolean.
const CONFIG_ANSWER_LIMIT: usize = 256;

/// What nsqgate knows about one nsqd's IDENTIFY handling.
#[derive(Clone, Debug)]
pub struct Learned {
    /// nsqd's reply to an IDENTIFY that asked for nothing: the base of predicted replies.
    pub reply: Map<String, Value>,
    /// The ranges nsqd applies to a client's settings.
    pub ranges: IdentifyRanges,
}

/// What nsqd's HTTP API said, option by option (None: not asked, or no usable answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Told {
    /// Durations come as nanoseconds (Go's `time.Duration`).
    pub max_heartbeat_interval_ns: Option<i64>,
    pub max_output_buffer_size: Option<i64>,
    pub min_output_buffer_timeout_ns: Option<i64>,
    pub max_output_buffer_timeout_ns: Option<i64>,
    pub snappy: Option<bool>,
    pub deflate: Option<bool>,
}

/// The ranges from every source, strongest first. Durations are cut to whole milliseconds
/// as nsqd compares them (`int(d / time.Millisecond)`).
pub fn ranges(reply: &Map<String, Value>, told: &Told, options: &NsqdOptions) -> IdentifyRanges {
    let defaults = IdentifyRanges::default();
    let ms = |ns: Option<i64>| ns.map(|ns| ns / 1_000_000);
    IdentifyRanges {
        max_heartbeat_interval_ms: options
            .max_heartbeat_interval_ms
            .or(ms(told.max_heartbeat_interval_ns))
            .unwrap_or(defaults.max_heartbeat_interval_ms),
        max_output_buffer_size: options
            .max_output_buffer_size
            .or(told.max_output_buffer_size)
            .unwrap_or(defaults.max_output_buffer_size),
        min_output_buffer_timeout_ms: options
            .min_output_buffer_timeout_ms
            .or(ms(told.min_output_buffer_timeout_ns))
            .unwrap_or(defaults.min_output_buffer_timeout_ms),
        max_output_buffer_timeout_ms: options
            .max_output_buffer_timeout_ms
            .or(ms(told.max_output_buffer_timeout_ns))
            .unwrap_or(defaults.max_output_buffer_timeout_ms),
        max_msg_timeout_ms: reply
            .get("max_msg_timeout")
            .and_then(Value::as_i64)
            .unwrap_or(defaults.max_msg_timeout_ms),
        snappy: options.snappy.or(told.snappy).unwrap_or(defaults.snappy),
        deflate: options.deflate.or(told.deflate).unwrap_or(defaults.deflate),
    }
}

/// Asks nsqd's HTTP API for each option; an option it does not answer stays unknown.
pub async fn ask(http: Option<&HttpUpstream>) -> Told {
    let Some(http) = http else {
        info!("no HTTP address for nsqd ([http.nsqd] upstream): IDENTIFY ranges are nsqd's defaults unless [upstream.nsqd_options] says otherwise");
        return Told::default();
    };
    let number = |v: Value| v.as_i64();
    let flag = |v: Value| v.as_bool();
    Told {
        max_heartbeat_interval_ns: option(http, "max_heartbeat_interval")
            .await
            .and_then(number),
        max_output_buffer_size: option(http, "max_output_buffer_size")
            .await
            .and_then(number),
        min_output_buffer_timeout_ns: option(http, "min_output_buffer_timeout")
            .await
            .and_then(number),
        max_output_buffer_timeout_ns: option(http, "max_output_buffer_timeout")
            .await
            .and_then(number),
        snappy: option(http, "snappy").await.and_then(flag),
        deflate: option(http, "deflate").await.and_then(flag),
    }
}

/// One `GET /config/<name>`; None (logged) when nsqd does not answer it usefully.
async fn option(http: &HttpUpstream, name: &str) -> Option<Value> {
    let path = format!("/config/{name}");
    let answer = async {
        let response = http
            .send(
                ::http::Method::GET,
                &path,
                ::http::HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), CONFIG_ANSWER_LIMIT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
    };
    match answer.await {
        Ok(value) => Some(value),
        Err(error) => {
            warn!(upstream = http.address(), option = name, %error, "nsqd did not tell an IDENTIFY range; using the configured or default value");
            None
        }
    }
}

#[cfg(test)]
mod tests;
