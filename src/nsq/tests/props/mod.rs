//! Property tests for the decoders' contract: they never panic; `Ok(None)` consumes nothing;
//! an error leaves the buffer as it was and reserves nothing (so a size over its limit is
//! refused from the declared length, before a byte of the body is held); an accepted input
//! round-trips (its exact bytes decode to the same value, and re-encoding gives the same value).
//!
//! Inputs start valid (generated commands and frames) and are then mutated: bytes flipped,
//! inserted or removed, the input cut short, the size field set within and around its limit.
//! Case counts: the mutation and size-boundary properties run [`mutations::MUTATION_CASES`] cases each,
//! the others proptest's default of 256; `mutations_reach_every_outcome` samples
//! [`mutations::MUTATION_CASES`] mutated commands and checks that accepted, refused and incomplete inputs
//! all occur, so the properties above exercise acceptance and not only refusal.

mod mutations;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::nsq::{
    decode_frame, encode_frame, message_frame, peek_frame, FrameType, Message, MessageId,
};

fn topic() -> impl Strategy<Value = String> {
    ("[.a-zA-Z0-9_-]{1,54}", any::<bool>()).prop_map(|(stem, ephemeral)| {
        if ephemeral {
            stem + "#ephemeral"
        } else {
            stem
        }
    })
}

fn id() -> impl Strategy<Value = MessageId> {
    // Separators cannot appear inside a parameter.
    let byte = any::<u8>().prop_filter("separator", |b| !matches!(b, b' ' | b'\n' | b'\r'));
    prop::array::uniform16(byte).prop_map(MessageId)
}

fn body() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..48).prop_map(Bytes::from)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        body().prop_map(|body| Command::Identify { body }),
        body().prop_map(|secret| Command::Auth { secret }),
        (topic(), topic()).prop_map(|(topic, channel)| Command::Sub {
            topic: topic.into(),
            channel
        }),
        (topic(), body()).prop_map(|(topic, body)| Command::Pub {
            topic: topic.into(),
            body
        }),
        (topic(), prop::collection::vec(body(), 1..6)).prop_map(|(topic, messages)| {
            Command::Mpub {
                topic: topic.into(),
                messages: messages.into(),
            }
        }),
        (topic(), any::<u64>(), body()).prop_map(|(topic, defer_ms, body)| Command::Dpub {
            topic: topic.into(),
            defer_ms,
            body
        }),
        any::<u64>().prop_map(|count| Command::Rdy { count }),
        id().prop_map(|id| Command::Fin { id }),
        (id(), any::<u64>()).prop_map(|(id, timeout_ms)| Command::Req { id, timeout_ms }),
        id().prop_map(|id| Command::Touch { id }),
        Just(Command::Cls),
        Just(Command::Nop),
    ]
}

fn encoded(command: &Command) -> Vec<u8> {
    let mut dst = BytesMut::new();
    command.encode(&mut dst);
    dst.to_vec()
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0u32..64, 0u32..256, 1usize..64).prop_map(|(max_msg_size, max_body_size, max_line_len)| {
        Limits {
            max_msg_size,
            max_body_size,
            max_line_len,
            max_auth_size: max_body_size,
        }
    })
}

/// Limits around the generated commands' sizes (bodies up to 47 bytes, MPUB up to ~260,
/// lines up to ~100), so a valid command is often accepted and often just over a limit.
fn nearby_limits() -> impl Strategy<Value = Limits> {
    (1u32..64, 8u32..320, 24usize..128, 8u32..64).prop_map(
        |(max_msg_size, max_body_size, max_line_len, max_auth_size)| Limits {
            max_msg_size,
            max_body_size,
            max_line_len,
            max_auth_size,
        },
    )
}

/// Input that often gets past the command line, to reach the size and body checks.
fn noisy_input() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(&b""[..]),
        Just(&b"PUB t\n"[..]),
        Just(&b"DPUB t 5\n"[..]),
        Just(&b"MPUB t\n"[..]),
        Just(&b"IDENTIFY\n"[..]),
        Just(&b"AUTH\n"[..]),
        Just(&b"RDY "[..]),
        Just(&b"FIN "[..]),
    ];
    (head, prop::collection::vec(any::<u8>(), 0..128))
        .prop_map(|(head, tail)| [head, &tail[..]].concat())
}

/// What decoding a mutated command did.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Outcome {
    Accepted,
    Refused,
    Incomplete,
}

/// Decodes `input` with `limits` and checks every promise of `decode_command`.
fn check_contract(input: &[u8], limits: &Limits) -> Outcome {
    let mut buf = BytesMut::from(input);
    let capacity = buf.capacity();
    match decode_command(&mut buf, limits) {
        Ok(None) => {
            assert_eq!(&buf[..], input, "need-more consumed bytes");
            Outcome::Incomplete
        }
        Err(err) => {
            assert_eq!(&buf[..], input, "an error consumed bytes");
            assert_eq!(buf.capacity(), capacity, "an error reserved memory");
            let mut frame_buf = BytesMut::from(&err.to_frame()[..]);
            let frame = decode_frame(&mut frame_buf, u32::MAX).unwrap().unwrap();
            assert_eq!(frame.error_code(), Some(err.code()));
            Outcome::Refused
        }
        Ok(Some(decoded)) => {
            let used = decoded.raw.len();
            assert_eq!(&decoded.raw[..], &input[..used]);
            assert_eq!(&buf[..], &input[used..]);
            // Its exact bytes decode alone to the same command...
            let mut alone = BytesMut::from(&decoded.raw[..]);
            let again = decode_command(&mut alone, limits).unwrap().unwrap();
            assert_eq!(again.command, decoded.command);
            assert!(alone.is_empty());
            // ...and so does its re-encoding (`\r\n` and `RDY` without a count normalised;
            // the line may grow by a `\r`-free count, so give it room).
            let roomy = Limits {
                max_line_len: limits.max_line_len + 32,
                ..*limits
            };
            let reencoded = encoded(&decoded.command);
            let mut buf = BytesMut::from(&reencoded[..]);
            let again = decode_command(&mut buf, &roomy).unwrap().unwrap();
            assert_eq!(again.command, decoded.command);
            Outcome::Accepted
        }
    }
}

/// A frame as nsqd sends one: a response, an error, or a message.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let message = (any::<i64>(), any::<u16>(), id(), body()).prop_map(
        |(timestamp_ns, attempts, id, body)| {
            message_frame(&Message {
                timestamp_ns,
                attempts,
                id,
                body,
            })
            .to_vec()
        },
    );
    let other = (
        prop_oneof![Just(FrameType::Response), Just(FrameType::Error)],
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, data)| {
            let mut dst = BytesMut::new();
            encode_frame(kind, &data, &mut dst);
            dst.to_vec()
        });
    prop_oneof![message, other]
}

/// Decodes `input` with `max` and checks every promise of `decode_frame`, and that
/// `peek_frame` (the relay's borrowed reading) sees exactly what it decodes.
fn check_frame_contract(input: &[u8], max: u32) -> Outcome {
    let mut buf = BytesMut::from(input);
    let capacity = buf.capacity();
    let peeked = peek_frame(input, max);
    match decode_frame(&mut buf, max) {
        Ok(None) => {
            assert_eq!(&buf[..], input);
            assert!(matches!(peeked, Ok(None)), "peek_frame: {peeked:?}");
            Outcome::Incomplete
        }
        Err(e) => {
            assert_eq!(&buf[..], input);
            assert_eq!(buf.capacity(), capacity);
            assert_eq!(format!("{:?}", peeked.err()), format!("{:?}", Some(e)));
            Outcome::Refused
        }
        Ok(Some(frame)) => {
            assert_eq!(peeked.ok().flatten(), Some(frame.view()));
            let used = frame.raw.len();
            assert!(used as u64 <= u64::from(max) + 4);
            assert_eq!(&frame.raw[..], &input[..used]);
            assert_eq!(&buf[..], &input[used..]);
            let mut again = BytesMut::new();
            encode_frame(frame.frame_type, &frame.data, &mut again);
            assert_eq!(&again[..], &frame.raw[..]);
            if let Ok(message) = frame.message() {
                assert_eq!(&message_frame(&message)[..], &frame.raw[..]);
            }
            let _ = frame.error_code();
            Outcome::Accepted
        }
    }
}

proptest! {
    #[test]
    fn commands_round_trip(command in command()) {
        let bytes = encoded(&command);
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode_command(&mut buf, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(&decoded.command, &command);
        prop_assert_eq!(&decoded.raw[..], &bytes[..]);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.command.name().as_bytes(), bytes.split(|&b| b == b' ' || b == b'\n').next().unwrap());
    }

    #[test]
    fn crlf_lines_decode_the_same(command in command()) {
        let bytes = encoded(&command);
        let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
        let crlf = [&bytes[..newline], b"\r", &bytes[newline..]].concat();
        let mut buf = BytesMut::from(&crlf[..]);
        let decoded = decode_command(&mut buf, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(decoded.command, command);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn prefixes_need_more(command in command()) {
        let bytes = encoded(&command);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert!(decode_command(&mut buf, &Limits::default()).unwrap().is_none());
            prop_assert_eq!(&buf[..], &bytes[..cut]);
        }
    }

    #[test]
    fn streams_decode_in_any_chunks(
        commands in prop::collection::vec(command(), 1..8),
        chunk in 1usize..40,
    ) {
        let stream: Vec<u8> = commands.iter().flat_map(encoded).collect();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(decoded) = decode_command(&mut buf, &Limits::default()).unwrap() {
                out.push(decoded.command);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, commands);
    }

    #[test]
    fn arbitrary_commands_never_panic(input in noisy_input(), limits in small_limits()) {
        check_contract(&input, &limits);
    }

    #[test]
    fn arbitrary_commands_with_default_limits(input in noisy_input()) {
        check_contract(&input, &Limits::default());
    }

    #[test]
    fn declared_sizes_past_the_limit_fail_unbuffered(
        size in (1u32 << 20) + 1..=u32::MAX,
        line in prop_oneof![Just(&b"PUB t\n"[..]), Just(&b"DPUB t 0\n"[..])],
    ) {
        let input = with_size(line, size);
        let mut buf = BytesMut::from(&input[..]);
        let capacity = buf.capacity();
        prop_assert!(decode_command(&mut buf, &Limits::default()).is_err());
        prop_assert_eq!(buf.capacity(), capacity);
        prop_assert_eq!(&buf[..], &input[..]);
    }

    #[test]
    fn frames_round_trip(
        kind in prop_oneof![Just(FrameType::Response), Just(FrameType::Error), Just(FrameType::Message)],
        data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = BytesMut::new();
        encode_frame(kind, &data, &mut bytes);
        let wire = bytes.clone().freeze();
        let frame = decode_frame(&mut bytes, 1024).unwrap().unwrap();
        prop_assert!(bytes.is_empty());
        prop_assert_eq!(frame.frame_type, kind);
        prop_assert_eq!(&frame.data[..], &data[..]);
        prop_assert_eq!(frame.raw, wire);
    }

    #[test]
    fn messages_round_trip(
        timestamp_ns in any::<i64>(),
        attempts in any::<u16>(),
        id in prop::array::uniform16(any::<u8>()),
        body in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let message = Message { timestamp_ns, attempts, id: MessageId(id), body: Bytes::from(body) };
        let mut buf = BytesMut::from(&message_frame(&message)[..]);
        let frame = decode_frame(&mut buf, 1024).unwrap().unwrap();
        prop_assert_eq!(frame.message().unwrap(), message);
    }

    #[test]
    fn arbitrary_frames_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..64),
        max in 0u32..80,
    ) {
        check_frame_contract(&input, max);
    }
}
