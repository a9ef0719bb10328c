//! Topic and channel arguments checked as nsqd checks them
//! (`^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1..=64 bytes), before anything is logged, authorized
//! or forwarded, answered with the JSON code of the daemon behind the front (nsqd says
//! `INVALID_TOPIC` on `/pub`, nsqd's and nsqlookupd's channel endpoints `INVALID_ARG_TOPIC`).
//! No I/O here.

use crate::http::reply::{self, EarlyResponse};
use crate::http::request::Query;
use crate::nsq::{is_valid_channel_name, is_valid_topic_name};

/// The codes one endpoint answers a bad name with.
#[derive(Clone, Copy, Debug)]
pub struct Codes {
    pub topic: &'static str,
    pub channel: &'static str,
}

/// nsqd's `/pub`, `/mpub`, `/topic/*` (and nsqadmin's API).
pub const TOPIC_CODES: Codes = Codes {
    topic: "INVALID_TOPIC",
    channel: "INVALID_CHANNEL",
};

/// nsqd's `/channel/*` and every nsqlookupd endpoint (`GetTopicChannelArgs`).
pub const ARG_CODES: Codes = Codes {
    topic: "INVALID_ARG_TOPIC",
    channel: "INVALID_ARG_CHANNEL",
};

/// The required `topic` parameter (missing: 400 `MISSING_ARG_TOPIC`).
pub fn topic(query: &Query, codes: Codes) -> Result<&str, EarlyResponse> {
    let topic = query
        .get("topic")
        .ok_or_else(|| EarlyResponse::from(reply::bad_request("MISSING_ARG_TOPIC")))?;
    check_topic(topic, codes)
}

/// The required `topic` and `channel` parameters, in nsqd's order of checks.
pub fn topic_channel(query: &Query, codes: Codes) -> Result<(&str, &str), EarlyResponse> {
    let topic = topic(query, codes)?;
    let channel = query
        .get("channel")
        .ok_or_else(|| EarlyResponse::from(reply::bad_request("MISSING_ARG_CHANNEL")))?;
    Ok((topic, check_channel(channel, codes)?))
}

/// An optional name parameter (`/stats?topic=`): absent or empty means "all", anything else
/// must be a valid name.
pub fn optional<'q>(
    query: &'q Query,
    name: &str,
    codes: Codes,
) -> Result<Option<&'q str>, EarlyResponse> {
    match query.get(name) {
        None | Some("") => Ok(None),
        Some(value) if name == "channel" => check_channel(value, codes).map(Some),
        Some(value) => check_topic(value, codes).map(Some),
    }
}

pub fn check_topic(topic: &str, codes: Codes) -> Result<&str, EarlyResponse> {
    if is_valid_topic_name(topic) {
        Ok(topic)
    } else {
        Err(reply::bad_request(codes.topic).into())
    }
}

pub fn check_channel(channel: &str, codes: Codes) -> Result<&str, EarlyResponse> {
    if is_valid_channel_name(channel) {
        Ok(channel)
    } else {
        Err(reply::bad_request(codes.channel).into())
    }
}
