//! Streams as the relay reads them: several commands or frames back to back in one buffer,
//! each decoded in turn by the sans-io functions, and the one bound on frames from nsqd.

use bytes::{Bytes, BytesMut};

use crate::nsq::{
    decode_command, decode_frame, encode_frame, response_frame, Command, Frame, FrameType, Limits,
    ProtocolError, MESSAGE_HEADER_LEN,
};

#[test]
fn commands_decode_back_to_back_and_raw_bytes_forward_unchanged() {
    let limits = Limits::default();
    let mut wire = BytesMut::new();
    let publish = Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"hello"),
    };
    publish.encode(&mut wire);
    Command::Nop.encode(&mut wire);
    let first = decode_command(&mut wire, &limits).unwrap().unwrap();
    assert_eq!(first.command, publish);
    let second = decode_command(&mut wire, &limits).unwrap().unwrap();
    assert_eq!(second.command, Command::Nop);
    assert!(decode_command(&mut wire, &limits).unwrap().is_none());

    let mut forwarded = BytesMut::new();
    publish.encode(&mut forwarded);
    assert_eq!(forwarded.freeze(), first.raw);
}

#[test]
fn a_message_over_the_limit_is_refused_by_its_declared_size() {
    let limits = Limits {
        max_msg_size: 4,
        ..Limits::default()
    };
    let mut wire = BytesMut::from(&b"PUB t\n\x00\x00\x00\x05"[..]);
    let err = decode_command(&mut wire, &limits).unwrap_err();
    assert_eq!(err.to_string(), "PUB message too big 5 > 4");
}

#[test]
fn frames_decode_back_to_back() {
    let bound = Limits::default().max_frame_size();
    let mut wire = BytesMut::new();
    let frame = Frame::new(FrameType::Response, Bytes::from_static(b"OK"));
    encode_frame(frame.frame_type, &frame.data, &mut wire);
    wire.extend_from_slice(&response_frame(b"_heartbeat_"));
    encode_frame(frame.frame_type, &frame.data, &mut wire);
    assert_eq!(
        decode_frame(&mut wire, bound).unwrap().unwrap().raw,
        frame.raw
    );
    assert!(decode_frame(&mut wire, bound)
        .unwrap()
        .unwrap()
        .is_heartbeat());
    assert_eq!(
        decode_frame(&mut wire, bound).unwrap().unwrap().data,
        frame.data
    );
    assert!(decode_frame(&mut wire, bound).unwrap().is_none());
}

#[test]
fn a_frame_over_the_bound_is_refused_by_its_size_field() {
    let mut wire = BytesMut::from(&b"\x00\x00\x00\x11"[..]);
    assert!(matches!(
        decode_frame(&mut wire, 16),
        Err(ProtocolError::FrameTooBig { size: 17, max: 16 })
    ));
}

#[test]
fn the_frame_bound_admits_every_frame_nsqd_may_send() {
    let limits = Limits::default();
    let message_frame = limits.max_msg_size + 4 + MESSAGE_HEADER_LEN as u32;
    assert!(limits.max_frame_size() >= message_frame);
    // An nsqd started with a larger --max-msg-size is not cut off below the body limit.
    assert!(limits.max_frame_size() > limits.max_body_size);
    // Responses (IDENTIFY JSON, errors echoing a line) exceed a tiny message limit.
    let tiny = Limits {
        max_msg_size: 10,
        max_body_size: 10,
        ..Limits::default()
    };
    assert_eq!(tiny.max_frame_size(), 64 * 1024);
}
