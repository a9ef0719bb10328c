//! Server-to-client frames (`[size:u32][type:i32][data]`) and the message layout. No I/O here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{ErrorCode, ProtocolError};
use super::{put_len, MessageId};

/// The payload of nsqd's keep-alive response frame.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// Timestamp (8) + attempts (2) + id (16) in front of every message body.
pub const MESSAGE_HEADER_LEN: usize = 26;

/// What a frame carries, from its type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Type 0: `OK`, `CLOSE_WAIT`, `_heartbeat_` or JSON.
    Response,
    /// Type 1: `E_CODE description`.
    Error,
    /// Type 2: a message for a subscriber.
    Message,
}

/// One decoded server frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    /// The payload after the type field.
    pub data: Bytes,
    /// The whole frame, size prefix included, so it can be forwarded untouched.
    pub raw: Bytes,
}

/// A message frame's payload, split into its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Nanoseconds since the Unix epoch, when nsqd created the message.
    pub timestamp_ns: i64,
    /// Delivery attempts so far, this one included.
    pub attempts: u16,
    pub id: MessageId,
    pub body: Bytes,
}

/// A whole frame still in the read buffer, borrowed: what relaying it needs to know, with no
/// copy and no reference count (see [`peek_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub frame_type: FrameType,
    /// The payload after the type field.
    pub data: &'a [u8],
    /// The whole frame's length, size prefix included: where the next frame starts.
    pub len: usize,
}

/// Reads the frame at the start of `buf` without consuming it. `Ok(None)` means more bytes are
/// needed. The checks are [`decode_frame`]'s, in its order: the size field against
/// `max_frame_size` before anything else, an unknown type as soon as its 4 bytes are there.
pub fn peek_frame(buf: &[u8], max_frame_size: u32) -> Result<Option<FrameView<'_>>, ProtocolError> {
    let Some(size) = peek_u32(buf, 0) else {
        return Ok(None);
    };
    if size < 4 {
        return Err(ProtocolError::FrameTooSmall { size });
    }
    if size > max_frame_size {
        return Err(ProtocolError::FrameTooBig {
            size,
            max: max_frame_size,
        });
    }
    let Some(type_field) = peek_u32(buf, 4) else {
        return Ok(None);
    };
    let frame_type = FrameType::from_wire(type_field as i32)?;
    let len = 4 + size as usize;
    Ok(buf.get(8..len).map(|data| FrameView {
        frame_type,
        data,
        len,
    }))
}

/// Decodes one frame. `Ok(None)` means more bytes are needed; `buf` is then only reserved into.
///
/// `max_frame_size` bounds the size field (type + data), checked before any reserve, so a huge
/// declared size fails at once. An unknown type fails as soon as its 4 bytes arrive.
pub fn decode_frame(
    buf: &mut BytesMut,
    max_frame_size: u32,
) -> Result<Option<Frame>, ProtocolError> {
    let (frame_type, total) = match peek_frame(buf, max_frame_size)? {
        Some(view) => (view.frame_type, view.len),
        None => {
            reserve_rest_of_frame(buf);
            return Ok(None);
        }
    };
    Ok(Some(take_frame(buf, frame_type, total)))
}

/// Splits off the whole frame of `len` bytes that [`peek_frame`] saw at the start of `buf`
/// (its type and length, from the view), sharing `buf`'s memory.
pub fn take_frame(buf: &mut BytesMut, frame_type: FrameType, len: usize) -> Frame {
    let raw = buf.split_to(len).freeze();
    let data = raw.slice(8..);
    Frame {
        frame_type,
        data,
        raw,
    }
}

/// Makes room for the rest of the frame `buf` starts with, once its size and type are there:
/// call it after [`peek_frame`] said `Ok(None)` for `buf`, which checked both against the limit.
pub fn reserve_rest_of_frame(buf: &mut BytesMut) {
    if let Some(size) = peek_u32(buf, 0).filter(|_| buf.len() >= 8) {
        let total = 4 + size as usize;
        buf.reserve(total.saturating_sub(buf.len()));
    }
}

/// Appends one frame: size (4 + data length), type, data.
pub fn encode_frame(frame_type: FrameType, data: &[u8], dst: &mut BytesMut) {
    dst.reserve(8 + data.len());
    put_len(dst, data.len().saturating_add(4));
    dst.put_i32(frame_type.to_wire());
    dst.put_slice(data);
}

/// A framed response, e.g. `response_frame(b"OK")`.
pub fn response_frame(data: &[u8]) -> Bytes {
    let mut dst = BytesMut::new();
    encode_frame(FrameType::Response, data, &mut dst);
    dst.freeze()
}

/// A framed error `CODE description`; an empty description gives the bare code, as nsqd's
/// `E_BAD_PROTOCOL` reply is.
pub fn error_frame(code: ErrorCode, description: &str) -> Bytes {
    let mut payload = Vec::with_capacity(code.as_str().len() + 1 + description.len());
    payload.extend_from_slice(code.as_str().as_bytes());
    if !description.is_empty() {
        payload.push(b' ');
        payload.extend_from_slice(description.as_bytes());
    }
    let mut dst = BytesMut::new();
    encode_frame(FrameType::Error, &payload, &mut dst);
    dst.freeze()
}

/// A framed message, as nsqd sends it to a subscriber.
pub fn message_frame(message: &Message) -> Bytes {
    let mut data = BytesMut::with_capacity(MESSAGE_HEADER_LEN + message.body.len());
    message.encode(&mut data);
    let mut dst = BytesMut::new();
    encode_frame(FrameType::Message, &data, &mut dst);
    dst.freeze()
}

fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    let mut array = [0u8; 4];
    array.copy_from_slice(bytes);
    Some(u32::from_be_bytes(array))
}

// === impl FrameType ===

impl FrameType {
    /// The type field's value.
    pub fn to_wire(self) -> i32 {
        match self {
            FrameType::Response => 0,
            FrameType::Error => 1,
            FrameType::Message => 2,
        }
    }

    /// The type for a type field's value.
    pub fn from_wire(value: i32) -> Result<FrameType, ProtocolError> {
        match value {
            0 => Ok(FrameType::Response),
            1 => Ok(FrameType::Error),
            2 => Ok(FrameType::Message),
            frame_type => Err(ProtocolError::UnknownFrameType { frame_type }),
        }
    }
}

// === impl Frame ===

impl Frame {
    /// A frame of `frame_type` carrying `data`, with `raw` built to match.
    pub fn new(frame_type: FrameType, data: Bytes) -> Frame {
        let mut dst = BytesMut::with_capacity(8 + data.len());
        encode_frame(frame_type, &data, &mut dst);
        Frame {
            frame_type,
            data,
            raw: dst.freeze(),
        }
    }

    /// Whether this is nsqd's `_heartbeat_`, which the client must answer with NOP.
    pub fn is_heartbeat(&self) -> bool {
        self.view().is_heartbeat()
    }

    /// The code of an error frame; `None` for other frames or an unknown code.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.view().error_code()
    }

    /// The same frame, borrowed.
    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            frame_type: self.frame_type,
            data: &self.data,
            len: self.raw.len(),
        }
    }

    /// The text after an error frame's code, empty when there is none.
    pub fn error_description(&self) -> Option<&[u8]> {
        if self.frame_type != FrameType::Error {
            return None;
        }
        let start = self
            .data
            .iter()
            .position(|&b| b == b' ')
            .map_or(self.data.len(), |i| i + 1);
        Some(&self.data[start..])
    }

    /// Splits a message frame into its fields; the body shares the frame's memory.
    pub fn message(&self) -> Result<Message, ProtocolError> {
        if self.frame_type != FrameType::Message {
            return Err(ProtocolError::NotAMessage {
                frame_type: self.frame_type,
            });
        }
        Message::decode(self.data.clone())
    }
}

// === impl FrameView ===

impl FrameView<'_> {
    /// Whether this is nsqd's `_heartbeat_`, which the client must answer with NOP.
    pub fn is_heartbeat(&self) -> bool {
        self.frame_type == FrameType::Response && self.data == HEARTBEAT
    }

    /// The code of an error frame; `None` for other frames or an unknown code.
    pub fn error_code(&self) -> Option<ErrorCode> {
        if self.frame_type != FrameType::Error {
            return None;
        }
        let end = self.data.iter().position(|&b| b == b' ');
        ErrorCode::parse(&self.data[..end.unwrap_or(self.data.len())])
    }
}

// === impl Message ===

impl Message {
    /// Reads a message frame's payload; fails below the 26-byte header, as nsqd does.
    pub fn decode(mut data: Bytes) -> Result<Message, ProtocolError> {
        if data.len() < MESSAGE_HEADER_LEN {
            return Err(ProtocolError::MessageTooShort { len: data.len() });
        }
        let timestamp_ns = data.get_i64();
        let attempts = data.get_u16();
        let mut id = [0u8; 16];
        data.copy_to_slice(&mut id);
        Ok(Message {
            timestamp_ns,
            attempts,
            id: MessageId(id),
            body: data,
        })
    }

    /// Appends the payload of a message frame (header, then body).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(MESSAGE_HEADER_LEN + self.body.len());
        dst.put_i64(self.timestamp_ns);
        dst.put_u16(self.attempts);
        dst.put_slice(&self.id.0);
        dst.put_slice(&self.body);
    }
}
