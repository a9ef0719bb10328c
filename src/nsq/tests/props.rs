//! Property tests for the decoders' contract: they never panic; `Ok(None)` consumes nothing;
//! an error leaves the buffer as it was and reserves nothing (so a size over its limit is
//! refused from the declared length, before a byte of the body is held); an accepted input
//! round-trips (its exact bytes decode to the same value, and re-encoding gives the same value).
//!
//! Inputs start valid (generated commands and frames) and are then mutated: bytes flipped,
//! inserted or removed, the input cut short, the size field set within and around its limit.
//! Case counts: the mutation and size-boundary properties run [`MUTATION_CASES`] cases each,
//! the others proptest's default of 256; `mutations_reach_every_outcome` samples
//! [`MUTATION_CASES`] mutated commands and checks that accepted, refused and incomplete inputs
//! all occur, so the properties above exercise acceptance and not only refusal.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::nsq::{decode_frame, encode_frame, message_frame, FrameType, Message, MessageId};

/// Cases for each mutation and size-boundary property.
const MUTATION_CASES: u32 = 2048;

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
        (topic(), topic()).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
        (topic(), body()).prop_map(|(topic, body)| Command::Pub { topic, body }),
        (topic(), prop::collection::vec(body(), 1..6))
            .prop_map(|(topic, messages)| Command::Mpub { topic, messages }),
        (topic(), any::<u64>(), body()).prop_map(|(topic, defer_ms, body)| Command::Dpub {
            topic,
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

// === mutations ===

/// One change to a valid input. Positions are taken modulo the input's length.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip {
        at: usize,
        mask: u8,
    },
    /// Cut the input short.
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Remove {
        at: usize,
    },
    /// Rewrite the first size field (the 4 bytes after the first `\n` for commands, the
    /// first 4 bytes for frames) as the limit plus `delta`, or as the input's real size plus
    /// `delta`, or as an extreme.
    Resize(Size),
}

#[derive(Clone, Copy, Debug)]
enum Size {
    AroundLimit(i64),
    AroundActual(i64),
    Extreme(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let size = prop_oneof![
        (-3i64..=3).prop_map(Size::AroundLimit),
        (-3i64..=3).prop_map(Size::AroundActual),
        prop_oneof![
            Just(0u32),
            Just(0x7fff_ffff),
            Just(0x8000_0000),
            Just(u32::MAX)
        ]
        .prop_map(Size::Extreme),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        size.prop_map(Mutation::Resize),
    ]
}

/// Applies `mutations` in order; `size_at` is where the size field starts (if there is one)
/// and `limit` the bound that applies to it.
fn mutate(input: &[u8], mutations: &[Mutation], size_at: Option<usize>, limit: u32) -> Vec<u8> {
    let mut out = input.to_vec();
    for mutation in mutations {
        let len = out.len();
        match *mutation {
            Mutation::Flip { at, mask } if len > 0 => out[at % len] ^= mask,
            Mutation::Truncate { at } => out.truncate(at % (len + 1)),
            Mutation::Insert { at, byte } => out.insert(at % (len + 1), byte),
            Mutation::Remove { at } if len > 0 => {
                out.remove(at % len);
            }
            Mutation::Resize(size) => {
                let Some(at) = size_at.filter(|&at| at + 4 <= len) else {
                    continue;
                };
                let actual = (len - at - 4) as i64;
                let value = match size {
                    Size::AroundLimit(delta) => (i64::from(limit) + delta).clamp(0, 0xffff_ffff),
                    Size::AroundActual(delta) => (actual + delta).clamp(0, 0xffff_ffff),
                    Size::Extreme(value) => i64::from(value),
                };
                let value = u32::try_from(value).unwrap();
                out[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => {}
        }
    }
    out
}

/// Where a command's body size field starts, and the limit the decoder holds it to.
fn size_field(command: &Command, bytes: &[u8], limits: &Limits) -> (Option<usize>, u32) {
    let after_line = bytes.iter().position(|&b| b == b'\n').map(|n| n + 1);
    match command {
        Command::Pub { .. } | Command::Dpub { .. } => (after_line, limits.max_msg_size),
        Command::Mpub { .. } => (after_line, limits.max_body_size),
        Command::Identify { .. } | Command::Auth { .. } => {
            (after_line, limits.max_body_size.min(limits.max_auth_size))
        }
        _ => (None, 0),
    }
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

fn mutated_command() -> impl Strategy<Value = (Vec<u8>, Limits)> {
    (
        command(),
        prop::collection::vec(mutation(), 0..4),
        nearby_limits(),
    )
        .prop_map(|(command, mutations, limits)| {
            let bytes = encoded(&command);
            let (size_at, limit) = size_field(&command, &bytes, &limits);
            (mutate(&bytes, &mutations, size_at, limit), limits)
        })
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

/// Decodes `input` with `max` and checks every promise of `decode_frame`.
fn check_frame_contract(input: &[u8], max: u32) -> Outcome {
    let mut buf = BytesMut::from(input);
    let capacity = buf.capacity();
    match decode_frame(&mut buf, max) {
        Ok(None) => {
            assert_eq!(&buf[..], input);
            Outcome::Incomplete
        }
        Err(_) => {
            assert_eq!(&buf[..], input);
            assert_eq!(buf.capacity(), capacity);
            Outcome::Refused
        }
        Ok(Some(frame)) => {
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

#[test]
fn mutations_reach_every_outcome() {
    let mut runner = TestRunner::deterministic();
    let strategy = mutated_command();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..MUTATION_CASES {
        let (input, limits) = strategy.new_tree(&mut runner).unwrap().current();
        *seen.entry(check_contract(&input, &limits)).or_insert(0u32) += 1;
    }
    eprintln!("outcomes of {MUTATION_CASES} mutated commands: {seen:?}");
    // Each outcome in at least 5% of the cases: the mutations keep many inputs valid.
    for outcome in [Outcome::Accepted, Outcome::Refused, Outcome::Incomplete] {
        let count = seen.get(&outcome).copied().unwrap_or(0);
        assert!(
            count * 20 >= MUTATION_CASES,
            "{outcome:?} in only {count} of {MUTATION_CASES} cases: {seen:?}"
        );
    }
}

proptest! {
    #![proptest_config(Config::with_cases(MUTATION_CASES))]

    #[test]
    fn mutated_commands_keep_the_contract((input, limits) in mutated_command()) {
        check_contract(&input, &limits);
    }

    #[test]
    fn mutated_frames_keep_the_contract(
        frame in frame(),
        mutations in prop::collection::vec(mutation(), 0..4),
        max in 0u32..128,
    ) {
        check_frame_contract(&mutate(&frame, &mutations, Some(0), max), max);
    }

    /// A declared body size is judged from its 4 bytes alone: over the limit (or not
    /// positive) it is refused with nothing reserved; within it, the decoder waits for the
    /// body, and the whole command is then accepted.
    #[test]
    fn body_sizes_around_the_limit(
        kind in 0usize..5,
        limits in nearby_limits(),
        delta in -3i64..=3,
    ) {
        let (line, limit): (&[u8], u32) = match kind {
            0 => (b"PUB t\n", limits.max_msg_size),
            1 => (b"DPUB t 0\n", limits.max_msg_size),
            2 => (b"MPUB t\n", limits.max_body_size),
            3 => (b"IDENTIFY\n", limits.max_body_size.min(limits.max_auth_size)),
            _ => (b"AUTH\n", limits.max_body_size.min(limits.max_auth_size)),
        };
        let size = (i64::from(limit) + delta).max(0);
        let header = with_size(line, u32::try_from(size).unwrap());
        let mut buf = BytesMut::from(&header[..]);
        let capacity = buf.capacity();
        let result = decode_command(&mut buf, &limits);
        if size > i64::from(limit) || size <= 0 || (kind == 2 && size < 4) {
            prop_assert!(result.is_err(), "size {} against {}: {:?}", size, limit, result);
            prop_assert_eq!(buf.capacity(), capacity);
            prop_assert_eq!(&buf[..], &header[..]);
            return Ok(());
        }
        prop_assert!(matches!(result, Ok(None)), "size {} against {}: {:?}", size, limit, result);
        prop_assert_eq!(&buf[..], &header[..]);
        if kind == 2 {
            // A count of one and one message filling the body, if it fits the message limit.
            let message = vec![b'm'; (size as usize).saturating_sub(8)];
            if message.is_empty() || message.len() > limits.max_msg_size as usize {
                return Ok(());
            }
            let body = mpub_body(1, &[&message]);
            prop_assert_eq!(
                check_contract(&[line, &body_with_size(&body)].concat(), &limits),
                Outcome::Accepted
            );
        } else {
            let body = vec![b'b'; size as usize];
            prop_assert_eq!(
                check_contract(&[line, &body_with_size(&body)].concat(), &limits),
                Outcome::Accepted
            );
        }
    }

    /// A frame's size field is judged before its data arrives: over `max` it is refused with
    /// nothing reserved; within it, the decoder waits for the data.
    #[test]
    fn frame_sizes_around_the_limit(max in 4u32..256, delta in -3i64..=3, kind in 0u32..3) {
        let size = (i64::from(max) + delta).max(4);
        let mut header = u32::try_from(size).unwrap().to_be_bytes().to_vec();
        header.extend_from_slice(&kind.to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        let capacity = buf.capacity();
        let result = decode_frame(&mut buf, max);
        if size > i64::from(max) {
            prop_assert!(result.is_err());
            prop_assert_eq!(buf.capacity(), capacity);
        } else if size == 4 {
            prop_assert!(matches!(result, Ok(Some(_))));
        } else {
            prop_assert!(matches!(result, Ok(None)));
            prop_assert_eq!(&buf[..], &header[..]);
        }
    }
}

/// `body` with its 4-byte size in front.
fn body_with_size(body: &[u8]) -> Vec<u8> {
    with_size(b"", u32::try_from(body.len()).unwrap())
        .into_iter()
        .chain(body.iter().copied())
        .collect()
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
