//! The harness checked on its own: the raw client's wire bytes against bytes written out by
//! hand from the protocol description (`/work/shared/docs/NSQ-PROTOCOL.md` §1).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use bytes::{Bytes, BytesMut};

use common::wire::{decode_frame, Command, MessageId, WireError};

#[test]
fn commands_are_lines_with_big_endian_sized_bodies() {
    let publish = Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"hi"),
    };
    assert_eq!(&publish.to_bytes()[..], b"PUB t\n\x00\x00\x00\x02hi");
    let mpub = Command::Mpub {
        topic: "t".into(),
        messages: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
    };
    assert_eq!(
        &mpub.to_bytes()[..],
        b"MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
    );
    let req = Command::Req {
        id: MessageId(*b"0123456789abcdef"),
        timeout_ms: 5,
    };
    assert_eq!(&req.to_bytes()[..], b"REQ 0123456789abcdef 5\n");
    assert_eq!(&Command::Nop.to_bytes()[..], b"NOP\n");
}

#[test]
fn frames_split_on_their_size_field() {
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x06\x00\x00\x00\x00OK\x00\x00"[..]);
    let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
    assert!(frame.is_ok());
    assert_eq!(&buf[..], b"\x00\x00");
    assert_eq!(decode_frame(&mut buf, 1024), Ok(None));
}

#[test]
fn messages_split_into_their_fields() {
    let mut wire = vec![0, 0, 0, 35, 0, 0, 0, 2];
    wire.extend_from_slice(&7i64.to_be_bytes());
    wire.extend_from_slice(&[0, 1]);
    wire.extend_from_slice(b"0123456789abcdef");
    wire.extend_from_slice(b"body");
    wire.push(0xff);
    let mut buf = BytesMut::from(&wire[..]);
    let message = decode_frame(&mut buf, 1024)
        .unwrap()
        .unwrap()
        .message()
        .unwrap();
    assert_eq!(message.timestamp_ns, 7);
    assert_eq!(message.attempts, 1);
    assert_eq!(message.id, MessageId(*b"0123456789abcdef"));
    assert_eq!(&message.body[..], b"body\xff");
}

#[test]
fn bad_sizes_and_types_are_errors() {
    let mut small = BytesMut::from(&b"\x00\x00\x00\x03"[..]);
    assert_eq!(
        decode_frame(&mut small, 1024),
        Err(WireError::SizeBelowType(3))
    );
    let mut big = BytesMut::from(&b"\x00\x00\x10\x00"[..]);
    assert!(decode_frame(&mut big, 1024).is_err());
    let mut odd = BytesMut::from(&b"\x00\x00\x00\x04\x00\x00\x00\x07"[..]);
    assert_eq!(decode_frame(&mut odd, 1024), Err(WireError::UnknownType(7)));
}
