//! Client commands: decoding a line (+ body) into a [`Command`] and encoding one back. No I/O.
//!
//! The checks are nsqd v1.3.0's stateless ones, in its order, with its texts: parameters are
//! judged as soon as the line is complete (before the body arrives, as nsqd replies before
//! reading it), then the declared body size, then the body. State rules (SUB only once, FIN only
//! when subscribed...) and nsqd's configured ranges (RDY ≤ --max-rdy-count, DPUB ≤
//! --max-req-timeout) are not known here and stay with nsqd.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::messages::Messages;
use super::parse::{
    check_mpub_count, find_newline, parse_line, peek_i32, plain_fin, repeated_pub, scan_mpub,
    strip_cr, BodyKind, Head,
};
use super::{put_len, Limits, MessageId};

/// One client command, values parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The raw JSON body; its fields are the IDENTIFY handler's business.
    Identify {
        body: Bytes,
    },
    Auth {
        secret: Bytes,
    },
    Sub {
        topic: Arc<str>,
        channel: String,
    },
    /// A connection that keeps publishing to one topic shares one copy of its name
    /// ([`CommandDecoder`]).
    Pub {
        topic: Arc<str>,
        body: Bytes,
    },
    /// Each message's body, in order, sharing the decoded frame's memory.
    Mpub {
        topic: Arc<str>,
        messages: Messages,
    },
    Dpub {
        topic: Arc<str>,
        defer_ms: u64,
        body: Bytes,
    },
    Rdy {
        count: u64,
    },
    Fin {
        id: MessageId,
    },
    Req {
        id: MessageId,
        timeout_ms: u64,
    },
    Touch {
        id: MessageId,
    },
    Cls,
    Nop,
}

/// A decoded command with the exact bytes it came from.
#[derive(Clone, Debug)]
pub struct DecodedCommand {
    pub command: Command,
    /// Everything consumed for this command (line, `\r` if any, size, body), to forward as is.
    pub raw: Bytes,
}

/// Decodes one connection's commands, remembering the last topic named: a producer that
/// keeps publishing to one topic gets that topic's name shared, not copied, per command.
#[derive(Debug, Default)]
pub struct CommandDecoder {
    last_topic: Option<Arc<str>>,
}

/// Decodes one client command on its own (see [`CommandDecoder::decode`]).
pub fn decode_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<DecodedCommand>, ProtocolError> {
    CommandDecoder::default().decode(buf, limits)
}

// === impl CommandDecoder ===

impl CommandDecoder {
    /// Decodes one client command. `Ok(None)` means more bytes are needed and `buf` is
    /// untouched (it may have been reserved into). On `Err`, `buf` is untouched too; the caller
    /// should send [`ProtocolError::to_frame`] and close, as every decode error is fatal in nsqd.
    ///
    /// Sizes are checked before anything is reserved, so a 4 GiB declared body fails with only
    /// its header buffered (nsqd reads the size as a signed int32: `0xFFFFFFFF` is `-1`).
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<DecodedCommand>, ProtocolError> {
        decode_with(buf, limits, &mut self.last_topic)
    }
}

fn decode_with(
    buf: &mut BytesMut,
    limits: &Limits,
    last_topic: &mut Option<Arc<str>>,
) -> Result<Option<DecodedCommand>, ProtocolError> {
    // What most lines of a busy connection are: a consumer's FIN, a producer's next PUB.
    if let Some((len, command)) = plain_fin(buf, limits.max_line_len) {
        let raw = buf.split_to(len).freeze();
        return Ok(Some(DecodedCommand { command, raw }));
    }
    let (size_at, kind) = match repeated_pub(buf, limits.max_line_len, last_topic) {
        Some(known) => known,
        None => {
            let Some(newline) = find_newline(buf, limits.max_line_len)? else {
                return Ok(None);
            };
            let size_at = newline + 1;
            match parse_line(strip_cr(&buf[..newline]), last_topic)? {
                Head::Done(command) => {
                    let raw = buf.split_to(size_at).freeze();
                    return Ok(Some(DecodedCommand { command, raw }));
                }
                Head::Body(kind) => (size_at, kind),
            }
        }
    };
    let Some(size) = peek_i32(buf, size_at) else {
        return Ok(None);
    };
    let len = kind.check_size(size, limits)?;
    let body_at = size_at + 4;
    let total = body_at + len;
    if buf.len() < total {
        if matches!(kind, BodyKind::Mpub { .. }) {
            // nsqd reads the count straight after the size, so a bad one fails early.
            check_mpub_count(&buf[body_at..], len, limits)?;
        }
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    // Validate MPUB before consuming, so an error leaves `buf` as it was.
    let count = match kind {
        BodyKind::Mpub { .. } => scan_mpub(&buf[body_at..total], limits)?,
        _ => 0,
    };
    let raw = buf.split_to(total).freeze();
    let body = raw.slice(body_at..);
    let command = match kind {
        BodyKind::Identify => Command::Identify { body },
        BodyKind::Auth => Command::Auth { secret: body },
        BodyKind::Pub { topic } => Command::Pub { topic, body },
        BodyKind::Dpub { topic, defer_ms } => Command::Dpub {
            topic,
            defer_ms,
            body,
        },
        BodyKind::Mpub { topic } => Command::Mpub {
            topic,
            messages: Messages::checked(count, body.slice(4..)),
        },
    };
    Ok(Some(DecodedCommand { command, raw }))
}

// === impl Command ===

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify { .. } => "IDENTIFY",
            Command::Auth { .. } => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy { .. } => "RDY",
            Command::Fin { .. } => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch { .. } => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
        }
    }

    /// Appends the command's wire bytes (`\n` line endings). Ids containing a space or `\n`,
    /// or bodies over 2 GiB, cannot be expressed and produce bytes nsqd rejects.
    pub fn encode(&self, dst: &mut BytesMut) {
        let name = self.name().as_bytes();
        match self {
            Command::Identify { body } | Command::Auth { secret: body } => {
                put_line(dst, &[name]);
                put_body(dst, body);
            }
            Command::Sub { topic, channel } => {
                put_line(dst, &[name, topic.as_bytes(), channel.as_bytes()]);
            }
            Command::Pub { topic, body } => {
                put_line(dst, &[name, topic.as_bytes()]);
                put_body(dst, body);
            }
            Command::Mpub { topic, messages } => {
                put_line(dst, &[name, topic.as_bytes()]);
                let len = 4 + messages.sized().len();
                dst.reserve(4 + len);
                put_len(dst, len);
                put_len(dst, messages.len());
                dst.put_slice(messages.sized());
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let defer = defer_ms.to_string();
                put_line(dst, &[name, topic.as_bytes(), defer.as_bytes()]);
                put_body(dst, body);
            }
            Command::Rdy { count } => put_line(dst, &[name, count.to_string().as_bytes()]),
            Command::Fin { id } | Command::Touch { id } => put_line(dst, &[name, &id.0]),
            Command::Req { id, timeout_ms } => {
                put_line(dst, &[name, &id.0, timeout_ms.to_string().as_bytes()]);
            }
            Command::Cls | Command::Nop => put_line(dst, &[name]),
        }
    }

    /// Whether nsqd answers success with a frame. FIN, REQ and TOUCH answer only on failure;
    /// RDY and NOP never answer.
    pub fn expects_reply(&self) -> bool {
        matches!(
            self,
            Command::Identify { .. }
                | Command::Auth { .. }
                | Command::Sub { .. }
                | Command::Pub { .. }
                | Command::Mpub { .. }
                | Command::Dpub { .. }
                | Command::Cls
        )
    }

    /// Messages published by this command.
    pub fn message_count(&self) -> u32 {
        match self {
            Command::Pub { .. } | Command::Dpub { .. } => 1,
            Command::Mpub { messages, .. } => u32::try_from(messages.len()).unwrap_or(u32::MAX),
            _ => 0,
        }
    }

    /// Message body bytes published by this command (no size fields).
    pub fn payload_bytes(&self) -> u64 {
        match self {
            Command::Pub { body, .. } | Command::Dpub { body, .. } => body.len() as u64,
            Command::Mpub { messages, .. } => messages.payload_bytes(),
            _ => 0,
        }
    }
}

// === encoding ===

fn put_line(dst: &mut BytesMut, words: &[&[u8]]) {
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            dst.put_u8(b' ');
        }
        dst.put_slice(word);
    }
    dst.put_u8(b'\n');
}

fn put_body(dst: &mut BytesMut, body: &[u8]) {
    dst.reserve(4 + body.len());
    put_len(dst, body.len());
    dst.put_slice(body);
}
