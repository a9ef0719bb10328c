//! Reading a command line and checking a command's body, with nsqd v1.3.0's rules, order and
//! texts. No I/O here; `command` drives these steps over a buffer.

use std::sync::Arc;

use bytes::Bytes;

use super::command::Command;
use super::error::ProtocolError;
use super::names::is_valid_name;
use super::{Limits, MessageId};

/// What the line says: a finished command, or what its body must hold.
pub(super) enum Head {
    Done(Command),
    Body(BodyKind),
}

/// A command whose line was accepted and whose body is still to be checked.
pub(super) enum BodyKind {
    Identify,
    Auth,
    Pub { topic: Arc<str> },
    Dpub { topic: Arc<str>, defer_ms: u64 },
    Mpub { topic: Arc<str> },
}

/// Index of the `\n` ending the first line, if it lies within `max_line_len` bytes. Like
/// nsqd's 16 KiB `ReadSlice`, the limit counts the `\n`.
pub(super) fn find_newline(
    buf: &[u8],
    max_line_len: usize,
) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(max_line_len)];
    match memchr::memchr(b'\n', window) {
        Some(at) => Ok(Some(at)),
        None if !buf.is_empty() && buf.len() >= max_line_len => Err(ProtocolError::LineTooLong {
            limit: max_line_len,
        }),
        None => Ok(None),
    }
}

/// The end of `buf`'s first line (the index after its `\n`) and the PUB it parses to, when that
/// line is exactly `PUB <last_topic>\n`: a producer publishing to one topic sends it again
/// and again, and [`find_newline`] and [`parse_line`] would find the same (the name has no
/// space, `\r` or `\n`, and was checked when first seen); a line too long for
/// `max_line_len` is left to them.
pub(super) fn repeated_pub(
    buf: &[u8],
    max_line_len: usize,
    last_topic: &Option<Arc<str>>,
) -> Option<(usize, BodyKind)> {
    let topic = last_topic.as_ref()?;
    let after = buf.strip_prefix(b"PUB ")?.strip_prefix(topic.as_bytes())?;
    let newline = b"PUB ".len() + topic.len();
    let line_fits = newline < max_line_len;
    (after.first() == Some(&b'\n') && line_fits).then(|| {
        (
            newline + 1,
            BodyKind::Pub {
                topic: topic.clone(),
            },
        )
    })
}

/// A consumer's acknowledgement, `FIN <16-byte id>\n`, at the start of `buf`: its line's
/// length and the FIN, decoded without [`find_newline`] and [`parse_line`], which would find
/// the same when the id has no space, `\r` or `\n`. Anything else is left to them.
pub(super) fn plain_fin(buf: &[u8], max_line_len: usize) -> Option<(usize, Command)> {
    const LINE: usize = b"FIN ".len() + 16 + 1;
    let id = buf
        .get(..LINE)?
        .strip_prefix(b"FIN ")?
        .strip_suffix(b"\n")?;
    let plain = !id.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n'));
    // Its newline, the last byte, must lie within the line-length limit.
    if !plain || LINE > max_line_len {
        return None;
    }
    let id = MessageId(<[u8; 16]>::try_from(id).ok()?);
    Some((LINE, Command::Fin { id }))
}

/// nsqd drops one `\r` before the `\n`.
pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `last_topic` is the topic the connection named last: a line naming it again shares it.
pub(super) fn parse_line(
    line: &[u8],
    last_topic: &mut Option<Arc<str>>,
) -> Result<Head, ProtocolError> {
    let Params {
        words: params,
        count,
    } = Params::split(line);
    let need = |command: &'static str, n: usize| {
        if count < n {
            Err(ProtocolError::InsufficientParams { command })
        } else {
            Ok(())
        }
    };
    let head = match params[0] {
        b"IDENTIFY" => Head::Body(BodyKind::Identify),
        b"AUTH" if count != 1 => return Err(ProtocolError::AuthParams),
        b"AUTH" => Head::Body(BodyKind::Auth),
        b"SUB" => {
            need("SUB", 3)?;
            let topic = topic("SUB", params[1], last_topic)?;
            let channel = channel("SUB", params[2])?;
            Head::Done(Command::Sub { topic, channel })
        }
        b"PUB" => {
            need("PUB", 2)?;
            let topic = topic("PUB", params[1], last_topic)?;
            Head::Body(BodyKind::Pub { topic })
        }
        b"MPUB" => {
            need("MPUB", 2)?;
            let topic = topic("MPUB", params[1], last_topic)?;
            Head::Body(BodyKind::Mpub { topic })
        }
        b"DPUB" => {
            need("DPUB", 3)?;
            let topic = topic("DPUB", params[1], last_topic)?;
            let defer_ms = number("DPUB", "timeout", params[2])?;
            Head::Body(BodyKind::Dpub { topic, defer_ms })
        }
        // A bare RDY means a count of 1.
        b"RDY" if count < 2 => Head::Done(Command::Rdy { count: 1 }),
        b"RDY" => Head::Done(Command::Rdy {
            count: number("RDY", "count", params[1])?,
        }),
        b"FIN" => {
            need("FIN", 2)?;
            Head::Done(Command::Fin {
                id: message_id(params[1])?,
            })
        }
        b"REQ" => {
            need("REQ", 3)?;
            let id = message_id(params[1])?;
            let timeout_ms = number("REQ", "timeout", params[2])?;
            Head::Done(Command::Req { id, timeout_ms })
        }
        b"TOUCH" => {
            need("TOUCH", 2)?;
            Head::Done(Command::Touch {
                id: message_id(params[1])?,
            })
        }
        b"CLS" => Head::Done(Command::Cls),
        b"NOP" => Head::Done(Command::Nop),
        name => {
            return Err(ProtocolError::InvalidCommand {
                name: Bytes::copy_from_slice(name),
            })
        }
    };
    Ok(head)
}

/// A line's first words, split on single spaces as nsqd splits them (two spaces make an empty
/// word). No command reads past its third word, so the rest are only counted: no `Vec` per
/// command on the publish path.
struct Params<'a> {
    /// The name, then the first two parameters; empty where the line has fewer.
    words: [&'a [u8]; 3],
    /// How many words the line has, name included: at least 1 (`split` always yields one).
    count: usize,
}

impl<'a> Params<'a> {
    fn split(line: &'a [u8]) -> Params<'a> {
        let mut params = Params {
            words: [b"", b"", b""],
            count: 0,
        };
        for word in line.split(|&b| b == b' ') {
            if let Some(slot) = params.words.get_mut(params.count) {
                *slot = word;
            }
            params.count += 1;
        }
        params
    }
}

/// The topic `name`, checked; the connection's last topic again when it names that one (no
/// allocation and no second check: it was checked when first seen).
fn topic(
    command: &'static str,
    name: &[u8],
    last_topic: &mut Option<Arc<str>>,
) -> Result<Arc<str>, ProtocolError> {
    if let Some(last) = last_topic.as_ref().filter(|last| last.as_bytes() == name) {
        return Ok(last.clone());
    }
    let topic: Arc<str> = checked_name(name)
        .ok_or_else(|| ProtocolError::BadTopic {
            command,
            name: Bytes::copy_from_slice(name),
        })?
        .into();
    *last_topic = Some(topic.clone());
    Ok(topic)
}

fn channel(command: &'static str, name: &[u8]) -> Result<String, ProtocolError> {
    checked_name(name)
        .map(str::to_owned)
        .ok_or_else(|| ProtocolError::BadChannel {
            command,
            name: Bytes::copy_from_slice(name),
        })
}

fn checked_name(name: &[u8]) -> Option<&str> {
    // A valid name is ASCII, so the UTF-8 conversion cannot fail after the check.
    is_valid_name(name)
        .then(|| std::str::from_utf8(name).ok())
        .flatten()
}

/// nsqd's ByteToBase10: digits only, empty is 0, and overflow wraps modulo 2^64 (kept, so the
/// value seen here is the one nsqd acts on when the raw line is forwarded).
fn number(command: &'static str, what: &'static str, digits: &[u8]) -> Result<u64, ProtocolError> {
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            Ok(n.wrapping_mul(10).wrapping_add(u64::from(d - b'0')))
        } else {
            Err(ProtocolError::BadNumber {
                command,
                what,
                value: Bytes::copy_from_slice(digits),
            })
        }
    })
}

fn message_id(param: &[u8]) -> Result<MessageId, ProtocolError> {
    <[u8; 16]>::try_from(param)
        .map(MessageId)
        .map_err(|_| ProtocolError::BadMessageId)
}

// === bodies ===

impl BodyKind {
    /// Checks a declared size the way nsqd does for this command; returns it as a length.
    pub(super) fn check_size(&self, size: i32, limits: &Limits) -> Result<usize, ProtocolError> {
        match self {
            BodyKind::Identify | BodyKind::Auth | BodyKind::Mpub { .. } => {
                let command = self.name();
                if i64::from(size) > i64::from(limits.max_body_size) {
                    return Err(ProtocolError::BodyTooBig {
                        command,
                        size,
                        max: limits.max_body_size,
                    });
                }
                if size <= 0 {
                    return Err(ProtocolError::InvalidBodySize { command, size });
                }
                // Refused from the declared length, before a byte of the body is held.
                let before_identity = matches!(self, BodyKind::Identify | BodyKind::Auth);
                if before_identity && i64::from(size) > i64::from(limits.max_auth_size) {
                    return Err(ProtocolError::BodyTooBig {
                        command,
                        size,
                        max: limits.max_auth_size,
                    });
                }
            }
            BodyKind::Pub { .. } | BodyKind::Dpub { .. } => {
                let command = self.name();
                if size <= 0 {
                    return Err(ProtocolError::InvalidMessageSize { command, size });
                }
                if i64::from(size) > i64::from(limits.max_msg_size) {
                    return Err(ProtocolError::MessageTooBig {
                        command,
                        size,
                        max: limits.max_msg_size,
                    });
                }
            }
        }
        // Positive here, so the conversion is exact.
        Ok(size.unsigned_abs() as usize)
    }

    fn name(&self) -> &'static str {
        match self {
            BodyKind::Identify => "IDENTIFY",
            BodyKind::Auth => "AUTH",
            BodyKind::Pub { .. } => "PUB",
            BodyKind::Dpub { .. } => "DPUB",
            BodyKind::Mpub { .. } => "MPUB",
        }
    }
}

/// The MPUB count check, on whatever part of a `declared`-byte body has arrived.
pub(super) fn check_mpub_count(
    avail: &[u8],
    declared: usize,
    limits: &Limits,
) -> Result<(), ProtocolError> {
    if declared < 4 {
        return Err(ProtocolError::MpubCountUnreadable);
    }
    match peek_i32(avail, 0) {
        Some(count) => valid_mpub_count(count, limits).map(drop),
        None => Ok(()),
    }
}

fn valid_mpub_count(count: i32, limits: &Limits) -> Result<usize, ProtocolError> {
    // A message takes at least 5 bytes (size + 1), after the 4-byte count.
    let max_messages = (i64::from(limits.max_body_size) - 4) / 5;
    if count <= 0 || i64::from(count) > max_messages {
        return Err(ProtocolError::MpubInvalidCount { count });
    }
    Ok(count.unsigned_abs() as usize)
}

/// Walks a complete MPUB body: `[count]` then `count` times `[size][bytes]`, and returns the
/// count once every size is checked.
///
/// nsqd does not hold the messages to the declared body: it keeps reading the connection, so
/// messages that overrun the body swallow the bytes after it, and a body with bytes left over
/// has those bytes run as the next command lines. A proxy that forwarded such a body would
/// let a client smuggle commands past its checks, so here the messages must fill the body
/// exactly: running past it fails with nsqd's "failed to read" texts (what nsqd says when the
/// bytes run out), and leftover bytes fail with `MpubTrailingBytes`.
pub(super) fn scan_mpub(body: &[u8], limits: &Limits) -> Result<usize, ProtocolError> {
    let count = peek_i32(body, 0).ok_or(ProtocolError::MpubCountUnreadable)?;
    let count = valid_mpub_count(count, limits)?;
    let mut at = 4;
    for index in 0..count {
        // count ≤ (max_body_size - 4) / 5 < i32::MAX, so the index fits.
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let size = peek_i32(body, at).ok_or(ProtocolError::MpubSizeUnreadable { index })?;
        if size <= 0 {
            return Err(ProtocolError::MpubInvalidMessageSize { index, size });
        }
        if i64::from(size) > i64::from(limits.max_msg_size) {
            return Err(ProtocolError::MessageTooBig {
                command: "MPUB",
                size,
                max: limits.max_msg_size,
            });
        }
        let start = at + 4;
        let end = start + size.unsigned_abs() as usize;
        if end > body.len() {
            return Err(ProtocolError::MpubBodyUnreadable);
        }
        at = end;
    }
    if at != body.len() {
        return Err(ProtocolError::MpubTrailingBytes {
            extra: body.len() - at,
        });
    }
    Ok(count)
}

pub(super) fn peek_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    let mut array = [0u8; 4];
    array.copy_from_slice(bytes);
    Some(i32::from_be_bytes(array))
}
