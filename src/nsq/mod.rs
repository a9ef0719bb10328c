//! NSQ TCP protocol V2, sans-io: bytes in, values out, no sockets and no runtime. The relay
//! calls [`decode_command`] and [`decode_frame`] on its own buffers (no `Framed` adapter).
//!
//! - `command`: client commands (`PUB`, `SUB`, ...), decoded with nsqd's own checks and texts.
//! - `frame`: server frames (response, error, message) and the message layout.
//! - `error`: nsqd's `E_*` codes and [`ProtocolError`], which renders as nsqd's error frame.
//! - `names`: topic and channel name rules.
//! - `identify`: IDENTIFY's body as nsqd reads it, and nsqd's checks of its settings.
//!
//! Facts come from nsqd v1.3.0 (`nsqd/protocol_v2.go`, `internal/protocol/`); see
//! `/work/shared/docs/NSQ-PROTOCOL.md` §1.

mod command;
mod error;
mod frame;
mod identify;
mod messages;
mod names;
mod parse;

#[cfg(test)]
mod tests;

use std::fmt;

use bytes::{BufMut, BytesMut};

pub use command::{decode_command, Command, CommandDecoder, DecodedCommand};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{
    decode_frame, encode_frame, error_frame, message_frame, peek_frame, reserve_rest_of_frame,
    response_frame, take_frame, Frame, FrameType, FrameView, Message, HEARTBEAT,
    MESSAGE_HEADER_LEN,
};
pub use identify::{IdentifyData, IdentifyRanges, IdentifyRefusal};
pub use messages::Messages;
pub use names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name};

/// The 4 bytes a client sends first to speak protocol V2.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// Size bounds applied while decoding, before any memory is reserved for a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest single message (PUB, DPUB, each MPUB message); nsqd's --max-msg-size.
    pub max_msg_size: u32,
    /// Largest IDENTIFY, AUTH or whole MPUB body; nsqd's --max-body-size.
    pub max_body_size: u32,
    /// Longest command line, counting its `\n`; nsqd's read buffer is 16 KiB.
    pub max_line_len: usize,
    /// Largest IDENTIFY or AUTH body: both come before a client has an identity, so they are
    /// held to less than `max_body_size` (nsqgate's own bound; nsqd has none).
    pub max_auth_size: u32,
}

// === impl Limits ===

impl Default for Limits {
    /// nsqd's defaults: 1 MiB messages, 5 MiB bodies, 16 KiB lines; 16 KiB for IDENTIFY and
    /// AUTH (the longest token the JWT verifier accepts).
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_line_len: 16 * 1024,
            max_auth_size: 16 * 1024,
        }
    }
}

impl Limits {
    /// The largest server frame (its size field: type, message header and body) the upstream
    /// side accepts; the one bound for [`decode_frame`] on frames from nsqd. A message frame
    /// at `max_msg_size` needs 30 bytes more; a body-sized frame is allowed so an nsqd started
    /// with a larger --max-msg-size is not cut off mid-stream, and never less than 64 KiB, as
    /// responses (IDENTIFY JSON, errors echoing a line) can exceed a tiny message limit.
    pub fn max_frame_size(&self) -> u32 {
        self.max_body_size
            .max(self.max_msg_size)
            .saturating_add(64)
            .max(64 * 1024)
    }
}

/// A 16-byte message id as it appears on the wire (nsqd sends ASCII hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MessageId(pub [u8; 16]);

// === impl MessageId ===

impl MessageId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

/// Checks and consumes the client's 4-byte magic. `Ok(None)` means fewer than 4 bytes so far;
/// on error `buf` is untouched and the caller should send [`ProtocolError::to_frame`]
/// (a bare `E_BAD_PROTOCOL`, as nsqd does) and close.
pub fn decode_magic(buf: &mut BytesMut) -> Result<Option<()>, ProtocolError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    if head != MAGIC_V2 {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(head);
        return Err(ProtocolError::BadMagic { magic });
    }
    let _ = buf.split_to(4);
    Ok(Some(()))
}

/// Writes a big-endian 4-byte length.
fn put_len(dst: &mut BytesMut, len: usize) {
    // Past u32 is far beyond every limit; the saturated value is one nsqd rejects.
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}
