//! tokio-util `Decoder`/`Encoder` adapters over the sans-io functions; the only file here that
//! knows about tokio, and it holds no logic of its own.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::command::{decode_command, Command, DecodedCommand};
use super::error::ProtocolError;
use super::frame::{decode_frame, encode_frame, Frame};
use super::Limits;

/// Client-side stream of commands (after the magic): decodes [`DecodedCommand`]s, encodes a
/// [`Command`] or forwards a decoded command's raw bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandCodec {
    /// Bounds checked before buffering a body.
    pub limits: Limits,
}

impl CommandCodec {
    pub fn new(limits: Limits) -> Self {
        CommandCodec { limits }
    }
}

impl Decoder for CommandCodec {
    type Item = DecodedCommand;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<DecodedCommand>, ProtocolError> {
        decode_command(src, &self.limits)
    }
}

impl Encoder<&Command> for CommandCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: &Command, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<Command> for CommandCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        item.encode(dst);
        Ok(())
    }
}

/// Raw bytes, such as [`DecodedCommand::raw`], written unchanged.
impl Encoder<Bytes> for CommandCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Server-side stream of frames: decodes [`Frame`]s up to `max_frame_size`, encodes a
/// [`Frame`] or writes pre-framed bytes (from `response_frame`, `error_frame`, `Frame::raw`).
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// Bound on a frame's size field, checked before buffering the frame.
    pub max_frame_size: u32,
}

impl FrameCodec {
    pub fn new(max_frame_size: u32) -> Self {
        FrameCodec { max_frame_size }
    }
}

impl Default for FrameCodec {
    /// Sized for nsqd's default message limit.
    fn default() -> Self {
        FrameCodec::new(Limits::default().max_frame_size())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        decode_frame(src, self.max_frame_size)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        // Built from type and data, so a hand-made Frame with a stale `raw` still encodes right.
        encode_frame(item.frame_type, &item.data, dst);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        encode_frame(item.frame_type, &item.data, dst);
        Ok(())
    }
}

/// Pre-framed bytes written unchanged.
impl Encoder<Bytes> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // A failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::nsq::{response_frame, FrameType};

    #[test]
    fn command_codec_round_trips_and_forwards_raw() {
        let mut codec = CommandCodec::default();
        let mut wire = BytesMut::new();
        let command = Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hello"),
        };
        codec.encode(&command, &mut wire).unwrap();
        codec.encode(Command::Nop, &mut wire).unwrap();
        let first = codec.decode(&mut wire).unwrap().unwrap();
        assert_eq!(first.command, command);
        assert_eq!(
            codec.decode(&mut wire).unwrap().unwrap().command,
            Command::Nop
        );
        assert!(codec.decode(&mut wire).unwrap().is_none());

        let mut forwarded = BytesMut::new();
        codec.encode(first.raw.clone(), &mut forwarded).unwrap();
        assert_eq!(forwarded.freeze(), first.raw);
    }

    #[test]
    fn command_codec_reports_limits() {
        let mut codec = CommandCodec::new(Limits {
            max_msg_size: 4,
            ..Limits::default()
        });
        let mut wire = BytesMut::from(&b"PUB t\n\x00\x00\x00\x05"[..]);
        let err = codec.decode(&mut wire).unwrap_err();
        assert_eq!(err.to_string(), "PUB message too big 5 > 4");
    }

    #[test]
    fn frame_codec_round_trips() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        let frame = Frame::new(FrameType::Response, Bytes::from_static(b"OK"));
        codec.encode(&frame, &mut wire).unwrap();
        codec
            .encode(response_frame(b"_heartbeat_"), &mut wire)
            .unwrap();
        codec.encode(frame.clone(), &mut wire).unwrap();
        assert_eq!(codec.decode(&mut wire).unwrap().unwrap().raw, frame.raw);
        assert!(codec.decode(&mut wire).unwrap().unwrap().is_heartbeat());
        assert_eq!(codec.decode(&mut wire).unwrap().unwrap().data, frame.data);
        assert!(codec.decode(&mut wire).unwrap().is_none());
    }

    #[test]
    fn frame_codec_bounds_frames() {
        let mut codec = FrameCodec::new(16);
        let mut wire = BytesMut::from(&b"\x00\x00\x00\x11"[..]);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(ProtocolError::FrameTooBig { size: 17, max: 16 })
        ));
    }

    #[test]
    fn eof_mid_frame_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::from(&b"\x00\x00"[..]);
        assert!(matches!(
            codec.decode_eof(&mut wire),
            Err(ProtocolError::Io(_))
        ));
    }
}
