//! nsqlookupd's TCP protocol V1, as nsqd speaks it to register itself: the `"  V1"` magic, then
//! newline-terminated commands (`IDENTIFY` followed by a 4-byte big-endian length and a JSON
//! body, `REGISTER topic [channel]`, `UNREGISTER topic [channel]`, `PING`), each answered by one
//! response: a 4-byte big-endian length and the data (`OK`, IDENTIFY's JSON, or an error text
//! such as `E_INVALID ...`). Decoding returns a value, `Ok(None)` for "need more bytes", or an
//! error; every length is checked against its bound before anything is buffered for it
//! (nsqlookupd itself allocates whatever IDENTIFY length it is sent). No I/O here.

use bytes::{BufMut, Bytes, BytesMut};

use crate::nsq::{is_valid_channel_name, is_valid_topic_name};

/// The four bytes that open every connection to nsqlookupd's TCP port.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// The longest command line: `UNREGISTER`, two names of at most 64 bytes, spaces, `\r\n`, with
/// room to spare. nsqlookupd has no bound; nsqd never comes near this one.
pub const MAX_LINE_LEN: usize = 256;

/// Bounds on what a peer may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// IDENTIFY's body (nsqd sends about 150 bytes of JSON).
    pub max_identify_size: u32,
    /// A response's data (nsqlookupd's IDENTIFY answer is about 150 bytes; nsqd reads at most
    /// its `--max-body-size`).
    pub max_response_size: u32,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_identify_size: 4096,
            max_response_size: 64 * 1024,
        }
    }
}

/// One command from nsqd to nsqlookupd, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The raw JSON body; its fields are judged by `rules`.
    Identify {
        body: Bytes,
    },
    Register {
        topic: String,
        channel: Option<String>,
    },
    Unregister {
        topic: String,
        channel: Option<String>,
    },
    Ping,
}

/// Why a byte stream is not protocol V1 as nsqd speaks it. Every variant ends the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad protocol magic (expected \"  V1\")")]
    BadMagic,
    #[error("command line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("command line is not UTF-8")]
    NotText,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("{command} takes a topic and at most one channel")]
    WrongParameters { command: &'static str },
    #[error("invalid topic name {0:?}")]
    BadTopic(String),
    #[error("invalid channel name {0:?}")]
    BadChannel(String),
    #[error("IDENTIFY body of {declared} bytes is over the limit of {limit}")]
    IdentifyTooLarge { declared: i64, limit: u32 },
    #[error("response of {declared} bytes is over the limit of {limit}")]
    ResponseTooLarge { declared: i64, limit: u32 },
}

impl WireError {
    /// The error code nsqlookupd would answer with for the same input.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::BadMagic => "E_BAD_PROTOCOL",
            WireError::BadTopic(_) => "E_BAD_TOPIC",
            WireError::BadChannel(_) => "E_BAD_CHANNEL",
            WireError::IdentifyTooLarge { .. } | WireError::ResponseTooLarge { .. } => "E_BAD_BODY",
            _ => "E_INVALID",
        }
    }

    /// The metric label of a size refusal, None for other errors.
    pub fn size_limit(&self) -> Option<&'static str> {
        match self {
            WireError::LineTooLong => Some("registry_line"),
            WireError::IdentifyTooLarge { .. } => Some("registry_identify"),
            WireError::ResponseTooLarge { .. } => Some("registry_response"),
            _ => None,
        }
    }
}

/// Whether `buf` opens with the V1 magic: `Ok(true)` once four good bytes are there,
/// `Ok(false)` while fewer than four have arrived.
pub fn decode_magic(buf: &[u8]) -> Result<bool, WireError> {
    let seen = buf.len().min(MAGIC_V1.len());
    if buf[..seen] != MAGIC_V1[..seen] {
        return Err(WireError::BadMagic);
    }
    Ok(seen == MAGIC_V1.len())
}

/// The first command in `buf` and the bytes it took, `Ok(None)` until it is whole.
pub fn decode_command(
    buf: &[u8],
    limits: &WireLimits,
) -> Result<Option<(Command, usize)>, WireError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE_LEN {
            Err(WireError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if newline >= MAX_LINE_LEN {
        return Err(WireError::LineTooLong);
    }
    let line = std::str::from_utf8(&buf[..newline]).map_err(|_| WireError::NotText)?;
    // nsqlookupd trims spaces and `\r` around the line, then splits on single spaces.
    let mut words = line.trim().split(' ');
    let name = words.next().unwrap_or_default();
    let params: Vec<&str> = words.collect();
    let after_line = newline + 1;
    let command = match name {
        "PING" => Command::Ping,
        "IDENTIFY" => return decode_identify(&buf[after_line..], after_line, limits),
        "REGISTER" => {
            let (topic, channel) = topic_and_channel("REGISTER", &params)?;
            Command::Register { topic, channel }
        }
        "UNREGISTER" => {
            let (topic, channel) = topic_and_channel("UNREGISTER", &params)?;
            Command::Unregister { topic, channel }
        }
        other => return Err(WireError::UnknownCommand(other.to_owned())),
    };
    Ok(Some((command, after_line)))
}

/// Encodes `command` as nsqd writes it (go-nsq's `Command.WriteTo`).
pub fn encode_command(command: &Command, out: &mut BytesMut) {
    match command {
        Command::Ping => out.put_slice(b"PING\n"),
        Command::Identify { body } => {
            out.put_slice(b"IDENTIFY\n");
            // The decoder bounded the body far below u32::MAX.
            out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
            out.put_slice(body);
        }
        Command::Register { topic, channel } => put_line(out, "REGISTER", topic, channel),
        Command::Unregister { topic, channel } => put_line(out, "UNREGISTER", topic, channel),
    }
}

/// The first response in `buf` and the bytes it took, `Ok(None)` until it is whole.
pub fn decode_response(buf: &[u8], limit: u32) -> Result<Option<(Bytes, usize)>, WireError> {
    let Some(declared) = buf.get(..4) else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([declared[0], declared[1], declared[2], declared[3]]);
    let size = u32::try_from(declared)
        .ok()
        .filter(|size| *size <= limit)
        .ok_or(WireError::ResponseTooLarge {
            declared: i64::from(declared),
            limit,
        })? as usize;
    match buf.get(4..4 + size) {
        Some(data) => Ok(Some((Bytes::copy_from_slice(data), 4 + size))),
        None => Ok(None),
    }
}

/// Encodes one response: its length, then `data`.
pub fn encode_response(data: &[u8], out: &mut BytesMut) {
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.put_slice(data);
}

fn decode_identify(
    rest: &[u8],
    line_len: usize,
    limits: &WireLimits,
) -> Result<Option<(Command, usize)>, WireError> {
    let Some(declared) = rest.get(..4) else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([declared[0], declared[1], declared[2], declared[3]]);
    let size = u32::try_from(declared)
        .ok()
        .filter(|size| *size <= limits.max_identify_size)
        .ok_or(WireError::IdentifyTooLarge {
            declared: i64::from(declared),
            limit: limits.max_identify_size,
        })? as usize;
    match rest.get(4..4 + size) {
        Some(body) => Ok(Some((
            Command::Identify {
                body: Bytes::copy_from_slice(body),
            },
            line_len + 4 + size,
        ))),
        None => Ok(None),
    }
}

/// A topic and an optional channel, each valid by nsqd's name rules. nsqlookupd ignores words
/// past the channel; nsqd never sends them, so they are refused here.
fn topic_and_channel(
    command: &'static str,
    params: &[&str],
) -> Result<(String, Option<String>), WireError> {
    let (topic, channel) = match params {
        [topic] => (*topic, None),
        [topic, channel] => (*topic, Some(*channel)),
        _ => return Err(WireError::WrongParameters { command }),
    };
    if !is_valid_topic_name(topic) {
        return Err(WireError::BadTopic(topic.to_owned()));
    }
    if let Some(channel) = channel.filter(|c| !is_valid_channel_name(c)) {
        return Err(WireError::BadChannel(channel.to_owned()));
    }
    Ok((topic.to_owned(), channel.map(str::to_owned)))
}

fn put_line(out: &mut BytesMut, name: &str, topic: &str, channel: &Option<String>) {
    out.put_slice(name.as_bytes());
    out.put_u8(b' ');
    out.put_slice(topic.as_bytes());
    if let Some(channel) = channel {
        out.put_u8(b' ');
        out.put_slice(channel.as_bytes());
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests;
