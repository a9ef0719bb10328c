//! Server frames: layout, heartbeats, error codes, messages and size bounds.

use bytes::Bytes;

use super::*;
use crate::nsq::{
    decode_frame, encode_frame, error_frame, message_frame, response_frame, ErrorCode, Frame,
    FrameType, Message, MessageId,
};

const MAX: u32 = 1024 * 1024;

fn decode_whole(input: &[u8]) -> Frame {
    let mut buf = BytesMut::from(input);
    let frame = decode_frame(&mut buf, MAX).unwrap().expect("a whole frame");
    assert!(buf.is_empty());
    assert_eq!(&frame.raw[..], input);
    frame
}

#[test]
fn response_layout() {
    assert_eq!(
        &response_frame(b"OK")[..],
        b"\x00\x00\x00\x06\x00\x00\x00\x00OK"
    );
    let frame = decode_whole(&response_frame(b"_heartbeat_"));
    assert!(frame.is_heartbeat());
    assert_eq!(frame.error_code(), None);
    assert!(!decode_whole(&response_frame(b"OK")).is_heartbeat());
    // A heartbeat is a response; the same text as an error is not one.
    assert!(!decode_whole(&error_frame(ErrorCode::Invalid, "_heartbeat_")).is_heartbeat());
}

#[test]
fn error_frames_carry_codes() {
    let bytes = error_frame(ErrorCode::FinFailed, "FIN 0123456789abcdef failed");
    assert_eq!(&bytes[8..], b"E_FIN_FAILED FIN 0123456789abcdef failed");
    let frame = decode_whole(&bytes);
    assert_eq!(frame.frame_type, FrameType::Error);
    assert_eq!(frame.error_code(), Some(ErrorCode::FinFailed));
    assert!(!frame.error_code().unwrap().is_fatal());
    assert_eq!(
        frame.error_description(),
        Some(&b"FIN 0123456789abcdef failed"[..])
    );
    let bare = decode_whole(&error_frame(ErrorCode::BadProtocol, ""));
    assert_eq!(&bare.data[..], b"E_BAD_PROTOCOL");
    assert_eq!(bare.error_code(), Some(ErrorCode::BadProtocol));
    assert_eq!(bare.error_description(), Some(&b""[..]));
    let unknown = decode_whole(&error_frame(ErrorCode::Invalid, "x"));
    assert_eq!(unknown.error_code(), Some(ErrorCode::Invalid));
}

#[test]
fn error_code_names() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str().as_bytes()), Some(code));
        assert!(code.as_str().starts_with("E_"));
        let non_fatal = matches!(
            code,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        );
        assert_eq!(code.is_fatal(), !non_fatal);
    }
    assert_eq!(ErrorCode::parse(b"E_INVALID "), None);
    assert_eq!(ErrorCode::parse(b"e_invalid"), None);
    assert_eq!(
        ErrorCode::parse(b"E_AUTH_ERROR"),
        Some(ErrorCode::AuthError)
    );
}

#[test]
fn messages_round_trip() {
    let message = Message {
        timestamp_ns: 1_700_000_000_123_456_789,
        attempts: 3,
        id: MessageId(*ID),
        body: Bytes::from_static(b"hello"),
    };
    let bytes = message_frame(&message);
    assert_eq!(bytes.len(), 4 + 4 + 26 + 5);
    assert_eq!(&bytes[18..34], ID);
    let frame = decode_whole(&bytes);
    assert_eq!(frame.frame_type, FrameType::Message);
    assert_eq!(frame.message().unwrap(), message);
    // An empty body is legal for a frame even if nsqd never sends one.
    let empty = Message {
        body: Bytes::new(),
        ..message
    };
    assert_eq!(
        decode_whole(&message_frame(&empty)).message().unwrap(),
        empty
    );
}

#[test]
fn message_errors() {
    let short = Frame::new(FrameType::Message, Bytes::from_static(&[0; 25]));
    assert_eq!(
        short.message().unwrap_err().to_string(),
        "invalid message buffer size (25)"
    );
    let response = Frame::new(FrameType::Response, Bytes::from_static(&[0; 30]));
    assert!(matches!(
        response.message(),
        Err(ProtocolError::NotAMessage {
            frame_type: FrameType::Response
        })
    ));
}

#[test]
fn size_bounds() {
    // Declared 4 GiB: fails with only the size buffered, nothing reserved.
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let capacity = buf.capacity();
    let err = decode_frame(&mut buf, MAX).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::FrameTooBig {
            size: u32::MAX,
            max: MAX
        }
    ));
    assert_eq!((buf.len(), buf.capacity()), (4, capacity));
    // The bound is inclusive.
    let data = vec![0u8; (MAX - 4) as usize];
    let mut encoded = BytesMut::new();
    encode_frame(FrameType::Response, &data, &mut encoded);
    assert!(decode_frame(&mut encoded, MAX).unwrap().is_some());
    // A size that does not cover the type field.
    for size in 0..4u32 {
        let mut buf = BytesMut::from(&size.to_be_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut buf, MAX),
            Err(ProtocolError::FrameTooSmall { .. })
        ));
    }
}

#[test]
fn unknown_type_fails_before_the_data() {
    let mut buf = BytesMut::from(&b"\x00\x00\x01\x00\x00\x00\x00\x03"[..]);
    let err = decode_frame(&mut buf, MAX).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::UnknownFrameType { frame_type: 3 }
    ));
    assert_eq!(err.code(), ErrorCode::BadProtocol);
    assert_eq!(buf.len(), 8);
}

#[test]
fn partial_frames_are_left_alone() {
    let bytes = response_frame(b"{\"max_rdy_count\":2500}");
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert!(decode_frame(&mut buf, MAX).unwrap().is_none());
        assert_eq!(&buf[..], &bytes[..cut]);
    }
}

#[test]
fn frame_new_matches_the_wire() {
    let frame = Frame::new(FrameType::Error, Bytes::from_static(b"E_INVALID x"));
    assert_eq!(frame.raw, error_frame(ErrorCode::Invalid, "x"));
}
