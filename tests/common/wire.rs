//! The NSQ V2 wire format as the tests' raw client speaks it, written from the protocol
//! description (`/work/shared/docs/NSQ-PROTOCOL.md` §1), never from `nsqgate::nsq`: a bug that
//! is symmetric in nsqgate's encoder and decoder would pass a test that used them on both sides.
//! No I/O here; `nsqclient` moves these bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Two spaces and `V2`: the 4 bytes a client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// The payload of nsqd's keep-alive response.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// Timestamp (8) + attempts (2) + id (16) in front of every message body.
const MESSAGE_HEADER_LEN: usize = 26;

/// A 16-byte message id, as nsqd sends it (ASCII hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MessageId(pub [u8; 16]);

/// One client command. Fields hold what goes on the wire, unchecked: tests send bad values on
/// purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Identify {
        body: Bytes,
    },
    Auth {
        secret: Bytes,
    },
    Sub {
        topic: String,
        channel: String,
    },
    Pub {
        topic: String,
        body: Bytes,
    },
    Mpub {
        topic: String,
        messages: Vec<Bytes>,
    },
    Dpub {
        topic: String,
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

/// What a server frame carries, from its type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// 0: `OK`, `CLOSE_WAIT`, `_heartbeat_` or JSON.
    Response,
    /// 1: `E_CODE description`.
    Error,
    /// 2: a message for a subscriber.
    Message,
}

/// One server frame: `[size:i32][type:i32][data]`, size = 4 + data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub data: Bytes,
    /// The whole frame as it arrived, size field included.
    pub raw: Bytes,
}

/// A message frame's data: `[ts:i64][attempts:u16][id:16][body]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: MessageId,
    pub body: Bytes,
}

/// Bytes from the server that are not a frame: the test fails on them.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The size field cannot even hold the type field.
    SizeBelowType(u32),
    /// The size field is over what the reader accepts.
    SizeOverLimit {
        size: u32,
        max: u32,
    },
    UnknownType(i32),
    /// A message frame shorter than the message header.
    ShortMessage(usize),
    NotAMessage(FrameType),
}

/// Splits one frame off the front of `buf`; `Ok(None)` until all of it is there (`buf` then
/// untouched). `max_size` bounds the size field, checked before waiting for the data.
pub fn decode_frame(buf: &mut BytesMut, max_size: u32) -> Result<Option<Frame>, WireError> {
    let Some(size) = be_u32(buf, 0) else {
        return Ok(None);
    };
    if size < 4 {
        return Err(WireError::SizeBelowType(size));
    }
    if size > max_size {
        return Err(WireError::SizeOverLimit {
            size,
            max: max_size,
        });
    }
    let Some(type_field) = be_u32(buf, 4) else {
        return Ok(None);
    };
    let frame_type = match type_field as i32 {
        0 => FrameType::Response,
        1 => FrameType::Error,
        2 => FrameType::Message,
        other => return Err(WireError::UnknownType(other)),
    };
    let total = 4 + size as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Frame {
        frame_type,
        data: raw.slice(8..),
        raw,
    }))
}

/// One frame read from a blocking reader, exactly (no byte of what follows it is taken);
/// `max_size` bounds the size field before the body is read.
pub fn read_frame_from(reader: &mut dyn std::io::Read, max_size: u32) -> Frame {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size).expect("a frame's size");
    let len = u32::from_be_bytes(size);
    assert!(len <= max_size, "a frame of {len} bytes");
    let mut buf = BytesMut::from(&size[..]);
    buf.resize(4 + len as usize, 0);
    reader.read_exact(&mut buf[4..]).expect("a frame's body");
    decode_frame(&mut buf, max_size)
        .expect("a valid frame")
        .expect("a whole frame")
}

/// `PUB topic` with `body`, as bytes (see [`Command::encode`]).
pub fn pub_bytes(topic: &str, body: &[u8]) -> Vec<u8> {
    let body = Bytes::copy_from_slice(body);
    Command::Pub {
        topic: topic.into(),
        body,
    }
    .to_bytes()
    .to_vec()
}

/// `DPUB topic defer_ms` with `body`, as bytes.
pub fn dpub_bytes(topic: &str, defer_ms: u64, body: &[u8]) -> Vec<u8> {
    let body = Bytes::copy_from_slice(body);
    Command::Dpub {
        topic: topic.into(),
        defer_ms,
        body,
    }
    .to_bytes()
    .to_vec()
}

/// `MPUB topic` with `messages`, as bytes.
pub fn mpub_bytes(topic: &str, messages: &[&[u8]]) -> Vec<u8> {
    let messages = messages.iter().map(|m| Bytes::copy_from_slice(m)).collect();
    Command::Mpub {
        topic: topic.into(),
        messages,
    }
    .to_bytes()
    .to_vec()
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

// === impl Command ===

impl Command {
    /// The command's bytes: one line (name, parameters after single spaces, `\n`), then for
    /// IDENTIFY, AUTH, PUB, DPUB a 4-byte big-endian size and the body; MPUB's body is the
    /// message count and each message with its own size.
    pub fn encode(&self, dst: &mut BytesMut) {
        let name = self.name();
        match self {
            Command::Identify { body } => line_and_body(dst, name, &[], body),
            Command::Auth { secret } => line_and_body(dst, name, &[], secret),
            Command::Sub { topic, channel } => line(dst, name, &[topic, channel]),
            Command::Pub { topic, body } => line_and_body(dst, name, &[topic], body),
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => line_and_body(dst, name, &[topic, &defer_ms.to_string()], body),
            Command::Mpub { topic, messages } => {
                let mut body = BytesMut::new();
                put_size(&mut body, messages.len());
                for message in messages {
                    put_size(&mut body, message.len());
                    body.put_slice(message);
                }
                line_and_body(dst, name, &[topic], &body);
            }
            Command::Rdy { count } => line(dst, name, &[&count.to_string()]),
            Command::Fin { id } => line_with_id(dst, name, id, None),
            Command::Req { id, timeout_ms } => line_with_id(dst, name, id, Some(*timeout_ms)),
            Command::Touch { id } => line_with_id(dst, name, id, None),
            Command::Cls => line(dst, name, &[]),
            Command::Nop => line(dst, name, &[]),
        }
    }

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

    /// Whether nsqd answers success with a frame: FIN, REQ and TOUCH answer only when they
    /// fail, RDY and NOP never.
    pub fn expects_reply(&self) -> bool {
        !matches!(
            self,
            Command::Rdy { .. }
                | Command::Fin { .. }
                | Command::Req { .. }
                | Command::Touch { .. }
                | Command::Nop
        )
    }

    /// The command's bytes on their own.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.encode(&mut dst);
        dst.freeze()
    }
}

fn line(dst: &mut BytesMut, name: &str, params: &[&str]) {
    dst.put_slice(name.as_bytes());
    for param in params {
        dst.put_u8(b' ');
        dst.put_slice(param.as_bytes());
    }
    dst.put_u8(b'\n');
}

fn line_with_id(dst: &mut BytesMut, name: &str, id: &MessageId, timeout_ms: Option<u64>) {
    dst.put_slice(name.as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(&id.0);
    if let Some(ms) = timeout_ms {
        dst.put_u8(b' ');
        dst.put_slice(ms.to_string().as_bytes());
    }
    dst.put_u8(b'\n');
}

fn line_and_body(dst: &mut BytesMut, name: &str, params: &[&str], body: &[u8]) {
    line(dst, name, params);
    put_size(dst, body.len());
    dst.put_slice(body);
}

/// A big-endian 4-byte size; a test never builds a body near 4 GiB.
fn put_size(dst: &mut BytesMut, len: usize) {
    dst.put_u32(u32::try_from(len).expect("test bodies are far below 4 GiB"));
}

// === impl Frame ===

impl Frame {
    /// The data as text: `OK`, JSON, or `E_CODE description`.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    pub fn is_heartbeat(&self) -> bool {
        self.frame_type == FrameType::Response && self.data == HEARTBEAT
    }

    pub fn is_ok(&self) -> bool {
        self.frame_type == FrameType::Response && self.data == b"OK"[..]
    }

    /// An error frame's code (the word before the first space).
    pub fn error_code(&self) -> Option<String> {
        if self.frame_type != FrameType::Error {
            return None;
        }
        let code = self.data.split(|&b| b == b' ').next().unwrap_or_default();
        Some(String::from_utf8_lossy(code).into_owned())
    }

    /// A message frame's fields; the body shares the frame's memory.
    pub fn message(&self) -> Result<Message, WireError> {
        if self.frame_type != FrameType::Message {
            return Err(WireError::NotAMessage(self.frame_type));
        }
        let data = &self.data;
        if data.len() < MESSAGE_HEADER_LEN {
            return Err(WireError::ShortMessage(data.len()));
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&data[..8]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&data[10..MESSAGE_HEADER_LEN]);
        Ok(Message {
            timestamp_ns: i64::from_be_bytes(timestamp),
            attempts: u16::from_be_bytes([data[8], data[9]]),
            id: MessageId(id),
            body: data.slice(MESSAGE_HEADER_LEN..),
        })
    }
}
