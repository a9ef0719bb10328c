//! nsqd's error codes and the decode failures that become error frames. No I/O here.
//!
//! Texts follow nsqd v1.3.0 (`nsqd/protocol_v2.go`) byte for byte, quirks included, so a client
//! behind the proxy sees what it would see talking to nsqd directly.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::frame::{encode_frame, FrameType};
use super::names::go_quote;

/// The `E_*` code that starts an error frame's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Invalid,
    BadBody,
    BadTopic,
    BadChannel,
    BadMessage,
    PubFailed,
    MpubFailed,
    DpubFailed,
    FinFailed,
    ReqFailed,
    TouchFailed,
    SubFailed,
    AuthFirst,
    AuthFailed,
    AuthDisabled,
    Unauthorized,
    IdentifyFailed,
    BadProtocol,
    /// nsqd could not marshal or send its AUTH reply.
    AuthError,
}

// === impl ErrorCode ===

impl ErrorCode {
    /// Every code, for lookups and tests.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Invalid,
        ErrorCode::BadBody,
        ErrorCode::BadTopic,
        ErrorCode::BadChannel,
        ErrorCode::BadMessage,
        ErrorCode::PubFailed,
        ErrorCode::MpubFailed,
        ErrorCode::DpubFailed,
        ErrorCode::FinFailed,
        ErrorCode::ReqFailed,
        ErrorCode::TouchFailed,
        ErrorCode::SubFailed,
        ErrorCode::AuthFirst,
        ErrorCode::AuthFailed,
        ErrorCode::AuthDisabled,
        ErrorCode::Unauthorized,
        ErrorCode::IdentifyFailed,
        ErrorCode::BadProtocol,
        ErrorCode::AuthError,
    ];

    /// The code as it appears on the wire, e.g. `"E_INVALID"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::AuthError => "E_AUTH_ERROR",
        }
    }

    /// Whether nsqd closes the connection after sending this code. Only a FIN, REQ or TOUCH
    /// for a message that is not in flight leaves the connection open.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }

    /// The code named by `s` exactly (no description, no trailing space).
    pub fn parse(s: &[u8]) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str().as_bytes() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to decode peer bytes. `Display` is the description nsqd would put after the code;
/// parameters that are not UTF-8 are shown lossily there, but [`ProtocolError::to_frame`]
/// carries them byte for byte, as nsqd does.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The 4-byte magic was not `"  V2"`. nsqd answers with a bare `E_BAD_PROTOCOL`; here
    /// alone `Display` (for logs) names what arrived while the frame has no description.
    BadMagic { magic: [u8; 4] },
    /// No `\n` within the line limit. nsqd's 16 KiB reader fails and it closes silently.
    LineTooLong { limit: usize },
    /// An unknown (or empty) command name; names are case-sensitive.
    InvalidCommand { name: Bytes },
    /// Fewer parameters than the command needs; extra parameters are ignored, as in nsqd.
    InsufficientParams { command: &'static str },
    /// AUTH takes no parameters on its line.
    AuthParams,
    /// The topic name fails [`super::is_valid_topic_name`].
    BadTopic { command: &'static str, name: Bytes },
    /// The channel name fails [`super::is_valid_channel_name`].
    BadChannel { command: &'static str, name: Bytes },
    /// A count or timeout with a byte other than `0-9`.
    BadNumber {
        command: &'static str,
        what: &'static str,
        value: Bytes,
    },
    /// A FIN, REQ or TOUCH id that is not exactly 16 bytes.
    BadMessageId,
    /// IDENTIFY, AUTH or MPUB declared a body larger than `max_body_size`.
    BodyTooBig {
        command: &'static str,
        size: i32,
        max: u32,
    },
    /// IDENTIFY, AUTH or MPUB declared a body size ≤ 0 (the size is a signed int32).
    InvalidBodySize { command: &'static str, size: i32 },
    /// PUB, DPUB or one MPUB message larger than `max_msg_size`.
    MessageTooBig {
        command: &'static str,
        size: i32,
        max: u32,
    },
    /// PUB or DPUB declared a message size ≤ 0.
    InvalidMessageSize { command: &'static str, size: i32 },
    /// The MPUB body is too short to hold the message count.
    MpubCountUnreadable,
    /// The MPUB count is ≤ 0 or more than `(max_body_size - 4) / 5`.
    MpubInvalidCount { count: i32 },
    /// Message `index`'s size field runs past the declared MPUB body.
    MpubSizeUnreadable { index: i32 },
    /// Message `index` declared a size ≤ 0.
    MpubInvalidMessageSize { index: i32, size: i32 },
    /// A message body runs past the declared MPUB body.
    MpubBodyUnreadable,
    /// Bytes left in the MPUB body after the last message (nsqd would run them as commands).
    MpubTrailingBytes { extra: usize },
    /// The IDENTIFY body is not the JSON nsqd expects (for the IDENTIFY handler's use).
    IdentifyJson,
    /// A server frame's size field is below 4 (it must cover the frame type).
    FrameTooSmall { size: u32 },
    /// A server frame larger than the configured maximum.
    FrameTooBig { size: u32, max: u32 },
    /// A server frame type other than 0, 1 or 2.
    UnknownFrameType { frame_type: i32 },
    /// A frame read as a message that is not a message frame.
    NotAMessage { frame_type: FrameType },
    /// A message frame shorter than the 26-byte message header.
    MessageTooShort { len: usize },
}

// === impl ProtocolError ===

impl ProtocolError {
    /// The size limit this error enforces, when it is one (`line`, `body`, `message`): the
    /// label of its refusal in the metrics.
    pub fn size_limit(&self) -> Option<&'static str> {
        match self {
            ProtocolError::LineTooLong { .. } => Some("line"),
            ProtocolError::BodyTooBig { .. } => Some("body"),
            ProtocolError::MessageTooBig { .. } => Some("message"),
            _ => None,
        }
    }

    /// The code nsqd would send for this failure.
    pub fn code(&self) -> ErrorCode {
        use ProtocolError::*;
        match self {
            BadMagic { .. } | FrameTooSmall { .. } | FrameTooBig { .. } => ErrorCode::BadProtocol,
            UnknownFrameType { .. } | NotAMessage { .. } | MessageTooShort { .. } => {
                ErrorCode::BadProtocol
            }
            LineTooLong { .. } | InvalidCommand { .. } | InsufficientParams { .. } => {
                ErrorCode::Invalid
            }
            AuthParams | BadNumber { .. } | BadMessageId => ErrorCode::Invalid,
            BadTopic { .. } => ErrorCode::BadTopic,
            BadChannel { .. } => ErrorCode::BadChannel,
            BodyTooBig { .. } | InvalidBodySize { .. } | IdentifyJson => ErrorCode::BadBody,
            MpubCountUnreadable | MpubInvalidCount { .. } | MpubTrailingBytes { .. } => {
                ErrorCode::BadBody
            }
            MessageTooBig { .. } | InvalidMessageSize { .. } | MpubBodyUnreadable => {
                ErrorCode::BadMessage
            }
            MpubSizeUnreadable { .. } | MpubInvalidMessageSize { .. } => ErrorCode::BadMessage,
        }
    }

    /// Whether nsqd closes without an error frame here (an over-long line).
    pub fn closes_silently(&self) -> bool {
        matches!(self, ProtocolError::LineTooLong { .. })
    }

    /// The whole framed error (`[size][type=1][E_CODE description]`) to send to the client.
    pub fn to_frame(&self) -> Bytes {
        let mut payload = self.code().as_str().as_bytes().to_vec();
        let description = self.description();
        if !description.is_empty() {
            payload.push(b' ');
            payload.extend_from_slice(&description);
        }
        let mut dst = BytesMut::with_capacity(payload.len() + 8);
        encode_frame(FrameType::Error, &payload, &mut dst);
        dst.freeze()
    }

    /// The description bytes as nsqd sends them (raw parameters are not re-encoded).
    fn description(&self) -> Vec<u8> {
        use ProtocolError::*;
        let text = match self {
            // nsqd writes the bare code; the magic itself only goes to its log.
            BadMagic { .. } => return Vec::new(),
            InvalidCommand { name } => return [b"invalid command ".as_slice(), name].concat(),
            BadNumber {
                command,
                what,
                value,
            } => {
                let head = format!("{command} could not parse {what} ");
                return [head.as_bytes(), value].concat();
            }
            LineTooLong { limit } => format!("command line longer than {limit} bytes"),
            InsufficientParams { command } => {
                // nsqd's wording differs by command: "parameters" for these, "params" otherwise.
                let word = match *command {
                    "SUB" | "PUB" | "MPUB" | "DPUB" => "parameters",
                    _ => "params",
                };
                format!("{command} insufficient number of {word}")
            }
            AuthParams => "AUTH invalid number of parameters".to_owned(),
            // nsqd v1.3.0 repeats the code inside MPUB's description; kept for fidelity.
            BadTopic {
                command: "MPUB",
                name,
            } => {
                format!(
                    "E_BAD_TOPIC MPUB topic name {} is not valid",
                    go_quote(name)
                )
            }
            BadTopic { command, name } => {
                format!("{command} topic name {} is not valid", go_quote(name))
            }
            BadChannel { command, name } => {
                format!("{command} channel name {} is not valid", go_quote(name))
            }
            BadMessageId => "Invalid Message ID".to_owned(),
            BodyTooBig { command, size, max } => format!("{command} body too big {size} > {max}"),
            InvalidBodySize { command, size } => format!("{command} invalid body size {size}"),
            MessageTooBig { command, size, max } => {
                format!("{command} message too big {size} > {max}")
            }
            InvalidMessageSize { command, size } => {
                format!("{command} invalid message body size {size}")
            }
            MpubCountUnreadable => "MPUB failed to read message count".to_owned(),
            MpubInvalidCount { count } => format!("MPUB invalid message count {count}"),
            MpubSizeUnreadable { index } => {
                format!("MPUB failed to read message({index}) body size")
            }
            MpubInvalidMessageSize { index, size } => {
                format!("MPUB invalid message({index}) body size {size}")
            }
            MpubBodyUnreadable => "MPUB failed to read message body".to_owned(),
            MpubTrailingBytes { extra } => {
                format!("MPUB body has {extra} bytes after the last message")
            }
            IdentifyJson => "IDENTIFY failed to decode JSON body".to_owned(),
            FrameTooSmall { size } => format!("frame size {size} is below 4"),
            FrameTooBig { size, max } => format!("frame too big {size} > {max}"),
            UnknownFrameType { frame_type } => format!("unknown frame type {frame_type}"),
            NotAMessage { frame_type } => format!("{frame_type:?} frame is not a message"),
            MessageTooShort { len } => format!("invalid message buffer size ({len})"),
        };
        text.into_bytes()
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ProtocolError::BadMagic { magic } = self {
            // Nothing goes on the wire, but a log line should say what arrived.
            return write!(
                f,
                "bad protocol magic {:?}",
                magic.escape_ascii().to_string()
            );
        }
        f.write_str(&String::from_utf8_lossy(&self.description()))
    }
}
