//! Unit and property tests for the NSQ wire format; pure, no sockets.

// Tests may panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod decode;
mod frames;
mod identify;
mod nsqd_errors;
mod props;
mod streams;

use bytes::{BufMut, BytesMut};

use super::{decode_command, Command, DecodedCommand, Limits, ProtocolError};

/// A 16-byte id as nsqd prints them (ASCII hex).
const ID: &[u8; 16] = b"0123456789abcdef";

/// `line` followed by a 4-byte size and `body`.
fn with_body(line: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `line` followed by a declared size and no body.
fn with_size(line: &[u8], size: u32) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(&size.to_be_bytes());
    out
}

/// An MPUB body: count, then size-prefixed messages.
fn mpub_body(count: i32, messages: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i32(count);
    for m in messages {
        out.put_u32(m.len() as u32);
        out.put_slice(m);
    }
    out.to_vec()
}

/// Decodes `input` with default limits, expecting one whole command that uses every byte.
fn decode_one(input: &[u8]) -> DecodedCommand {
    let mut buf = BytesMut::from(input);
    let decoded = decode_command(&mut buf, &Limits::default())
        .unwrap()
        .expect("a whole command");
    assert!(buf.is_empty(), "left over: {:?}", buf);
    assert_eq!(&decoded.raw[..], input);
    decoded
}

fn command_of(input: &[u8]) -> Command {
    decode_one(input).command
}

/// Decodes `input` expecting an error; checks the buffer was left alone.
fn decode_err(input: &[u8]) -> ProtocolError {
    decode_err_with(input, &Limits::default())
}

fn decode_err_with(input: &[u8], limits: &Limits) -> ProtocolError {
    let mut buf = BytesMut::from(input);
    let capacity = buf.capacity();
    let err = decode_command(&mut buf, limits).expect_err("a decode error");
    assert_eq!(&buf[..], input, "buffer changed on error");
    assert_eq!(buf.capacity(), capacity, "reserved on error");
    err
}

/// The error frame's payload (after size and type) for `input`, as nsqd would send it.
fn wire_error(input: &[u8]) -> Vec<u8> {
    let frame = decode_err(input).to_frame();
    assert_eq!(&frame[4..8], &1i32.to_be_bytes(), "not an error frame");
    let size = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(size + 4, frame.len());
    frame[8..].to_vec()
}

fn wire_error_text(input: &[u8]) -> String {
    String::from_utf8(wire_error(input)).unwrap()
}
