//! Mutated valid inputs: the changes (flip, cut, insert, remove, resize around a limit), the
//! properties over them, and the check that every decode outcome is reached.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use super::*;

/// Cases for each mutation and size-boundary property.
pub(super) const MUTATION_CASES: u32 = 2048;

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
