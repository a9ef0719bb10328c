//! Successful decodes: what each command yields, line endings, pipelining, partial input.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::nsq::{decode_magic, CommandDecoder, DecodedCommand, MessageId, ProtocolError};

#[test]
fn commands_without_body() {
    let id = MessageId(*ID);
    let cases: Vec<(Vec<u8>, Command)> = vec![
        (b"NOP\n".to_vec(), Command::Nop),
        (b"CLS\n".to_vec(), Command::Cls),
        // nsqd does not look at CLS or NOP parameters.
        (b"CLS x\n".to_vec(), Command::Cls),
        (b"RDY\n".to_vec(), Command::Rdy { count: 1 }),
        (b"RDY 2500\n".to_vec(), Command::Rdy { count: 2500 }),
        // Empty digits parse as 0; only the first parameter is read.
        (b"RDY \n".to_vec(), Command::Rdy { count: 0 }),
        (b"RDY 1 \n".to_vec(), Command::Rdy { count: 1 }),
        // Digits overflow modulo 2^64, as nsqd's parser does.
        (
            b"RDY 18446744073709551621\n".to_vec(),
            Command::Rdy { count: 5 },
        ),
        (
            b"SUB t c#ephemeral extra\n".to_vec(),
            Command::Sub {
                topic: "t".into(),
                channel: "c#ephemeral".into(),
            },
        ),
        ([b"FIN ", &ID[..], b"\n"].concat(), Command::Fin { id }),
        ([b"TOUCH ", &ID[..], b"\n"].concat(), Command::Touch { id }),
        (
            [b"REQ ", &ID[..], b" 0\n"].concat(),
            Command::Req { id, timeout_ms: 0 },
        ),
        (
            [b"REQ ", &ID[..], b" \n"].concat(),
            Command::Req { id, timeout_ms: 0 },
        ),
    ];
    for (input, command) in cases {
        assert_eq!(command_of(&input), command, "{}", input.escape_ascii());
    }
}

#[test]
fn commands_with_body() {
    let json = br#"{"feature_negotiation":true}"#;
    assert_eq!(
        command_of(&with_body(b"IDENTIFY\n", json)),
        Command::Identify {
            body: Bytes::from_static(json)
        }
    );
    // IDENTIFY ignores its line parameters.
    assert!(matches!(
        command_of(&with_body(b"IDENTIFY x\n", json)),
        Command::Identify { .. }
    ));
    assert_eq!(
        command_of(&with_body(b"AUTH\n", b"s3cret")),
        Command::Auth {
            secret: Bytes::from_static(b"s3cret")
        }
    );
    assert_eq!(
        command_of(&with_body(b"PUB t extra\n", b"hi")),
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hi")
        }
    );
    assert_eq!(
        command_of(&with_body(b"DPUB t 3600000\n", b"later")),
        Command::Dpub {
            topic: "t".into(),
            defer_ms: 3_600_000,
            body: Bytes::from_static(b"later")
        }
    );
}

#[test]
fn mpub_messages_share_the_frame() {
    let input = with_body(b"MPUB t\n", &mpub_body(3, &[b"a", b"bc", b"\n\n\n"]));
    let decoded = decode_one(&input);
    let Command::Mpub { topic, messages } = &decoded.command else {
        panic!("not MPUB: {:?}", decoded.command);
    };
    assert_eq!(&**topic, "t");
    let bodies: Vec<Bytes> = messages.iter().collect();
    assert_eq!(bodies, [&b"a"[..], b"bc", b"\n\n\n"]);
    assert_eq!((messages.len(), messages.payload_bytes()), (3, 6));
    // Each body points into the raw frame: no copies.
    let raw = decoded.raw.as_ptr_range();
    for m in messages {
        assert!(raw.contains(&m.as_ptr()));
    }
    assert_eq!(decoded.command.message_count(), 3);
    assert_eq!(decoded.command.payload_bytes(), 6);
}

#[test]
fn message_size_limits_are_inclusive() {
    let limits = Limits::default();
    let body = vec![b'x'; limits.max_msg_size as usize];
    assert!(matches!(
        command_of(&with_body(b"PUB t\n", &body)),
        Command::Pub { .. }
    ));
    let one = vec![b'x'; 1];
    assert!(matches!(
        command_of(&with_body(b"PUB t\n", &one)),
        Command::Pub { .. }
    ));
}

#[test]
fn crlf_is_accepted() {
    assert_eq!(command_of(b"NOP\r\n"), Command::Nop);
    assert_eq!(
        command_of(b"SUB t c\r\n"),
        Command::Sub {
            topic: "t".into(),
            channel: "c".into()
        }
    );
    let fin = [b"FIN ", &ID[..], b"\r\n"].concat();
    assert_eq!(command_of(&fin), Command::Fin { id: MessageId(*ID) });
    let decoded = decode_one(&with_body(b"PUB t\r\n", b"x"));
    assert_eq!(decoded.command.payload_bytes(), 1);
}

#[test]
fn longest_line_fits() {
    let limits = Limits::default();
    let mut line = b"RDY ".to_vec();
    line.resize(limits.max_line_len - 2, b'0');
    line.extend_from_slice(b"7\n");
    assert_eq!(line.len(), limits.max_line_len);
    assert_eq!(command_of(&line), Command::Rdy { count: 7 });
}

#[test]
fn pipelined_commands_decode_one_at_a_time() {
    let mut input = b"NOP\n".to_vec();
    input.extend(with_body(b"PUB t\n", b"x"));
    input.extend(b"RDY 3\nPUB t\n");
    let mut buf = BytesMut::from(&input[..]);
    let limits = Limits::default();
    let mut next = || {
        decode_command(&mut buf, &limits)
            .unwrap()
            .map(|d| d.command)
    };
    assert_eq!(next(), Some(Command::Nop));
    assert!(matches!(next(), Some(Command::Pub { .. })));
    assert_eq!(next(), Some(Command::Rdy { count: 3 }));
    assert_eq!(next(), None);
    assert_eq!(&buf[..], b"PUB t\n");
}

#[test]
fn partial_input_is_left_alone() {
    let input = with_body(b"MPUB t\n", &mpub_body(2, &[b"ab", b"c"]));
    for cut in 0..input.len() {
        let mut buf = BytesMut::from(&input[..cut]);
        assert!(decode_command(&mut buf, &Limits::default())
            .unwrap()
            .is_none());
        assert_eq!(&buf[..], &input[..cut]);
    }
}

#[test]
fn waiting_for_a_body_reserves_it() {
    let mut buf = BytesMut::from(&with_size(b"PUB t\n", 1000)[..]);
    assert!(decode_command(&mut buf, &Limits::default())
        .unwrap()
        .is_none());
    assert!(buf.capacity() >= 6 + 4 + 1000);
}

#[test]
fn huge_declared_body_fails_with_only_the_header() {
    // 4 GiB - 1 reads as -1 in nsqd's int32, and 2 GiB - 1 is over every limit.
    for size in [u32::MAX, 0x7fff_ffff, 0x8000_0000] {
        for line in [
            &b"PUB t\n"[..],
            b"MPUB t\n",
            b"IDENTIFY\n",
            b"AUTH\n",
            b"DPUB t 1\n",
        ] {
            let input = with_size(line, size);
            decode_err(&input);
        }
    }
}

#[test]
fn magic_is_consumed_once_complete() {
    let mut buf = BytesMut::from(&b"  V"[..]);
    assert!(decode_magic(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"2NOP\n");
    assert_eq!(decode_magic(&mut buf).unwrap(), Some(()));
    assert_eq!(&buf[..], b"NOP\n");
}

#[test]
fn reply_expectations() {
    let id = MessageId(*ID);
    let body = Bytes::from_static(b"x");
    let replies = [
        (Command::Identify { body: body.clone() }, true),
        (
            Command::Auth {
                secret: body.clone(),
            },
            true,
        ),
        (
            Command::Sub {
                topic: "t".into(),
                channel: "c".into(),
            },
            true,
        ),
        (
            Command::Pub {
                topic: "t".into(),
                body: body.clone(),
            },
            true,
        ),
        (
            Command::Mpub {
                topic: "t".into(),
                messages: vec![body.clone()].into(),
            },
            true,
        ),
        (
            Command::Dpub {
                topic: "t".into(),
                defer_ms: 1,
                body,
            },
            true,
        ),
        (Command::Cls, true),
        (Command::Rdy { count: 1 }, false),
        (Command::Fin { id }, false),
        (Command::Req { id, timeout_ms: 1 }, false),
        (Command::Touch { id }, false),
        (Command::Nop, false),
    ];
    for (command, expected) in replies {
        assert_eq!(command.expects_reply(), expected, "{}", command.name());
        let publishes = matches!(command.name(), "PUB" | "DPUB" | "MPUB");
        assert_eq!(command.message_count() > 0, publishes);
        assert_eq!(command.payload_bytes() > 0, publishes);
    }
}

#[test]
fn a_connections_decoder_shares_the_topic_it_named_last() {
    let topic_of = |decoded: DecodedCommand| match decoded.command {
        Command::Pub { topic, .. } | Command::Mpub { topic, .. } | Command::Dpub { topic, .. } => {
            topic
        }
        other => panic!("not a publish: {other:?}"),
    };
    let mut buf = BytesMut::new();
    for line in [&b"PUB t\n"[..], b"DPUB t 5\n", b"PUB u\n"] {
        buf.extend_from_slice(&with_body(line, b"m"));
    }
    buf.extend_from_slice(&with_body(b"MPUB u\n", &mpub_body(1, &[b"m"])));
    buf.extend_from_slice(&with_body(b"PUB t\n", b"m"));
    let limits = Limits::default();
    let mut decoder = CommandDecoder::default();
    let mut next = || topic_of(decoder.decode(&mut buf, &limits).unwrap().unwrap());
    let (first, again, other, other_again, back) = (next(), next(), next(), next(), next());
    // The same name again is the same allocation, not a copy.
    assert!(Arc::ptr_eq(&first, &again));
    assert!(Arc::ptr_eq(&other, &other_again));
    assert_eq!((&*first, &*other, &*back), ("t", "u", "t"));
    // Only the last name is kept: going back to `t` copies it once more.
    assert!(!Arc::ptr_eq(&first, &back));
}

#[test]
fn a_known_topic_does_not_excuse_an_invalid_one() {
    let mut decoder = CommandDecoder::default();
    let limits = Limits::default();
    let mut buf = BytesMut::from(&with_body(b"PUB t\n", b"m")[..]);
    assert!(decoder.decode(&mut buf, &limits).unwrap().is_some());
    for bad in [&b"PUB t!\n"[..], b"PUB  t\n", b"PUB tt\x00\n"] {
        let mut buf = BytesMut::from(&with_body(bad, b"m")[..]);
        assert!(decoder.decode(&mut buf, &limits).is_err(), "{bad:?}");
    }
}

/// What decoding `input` once gives, told apart by everything it can be: the command and
/// its bytes, an error, or a wait for more (with what is left buffered).
fn outcome(decoder: &mut CommandDecoder, input: &[u8], limits: &Limits) -> String {
    let mut buf = BytesMut::from(input);
    let decoded = decoder.decode(&mut buf, limits);
    told(decoded, &buf)
}

/// A decode's result and what it left in `rest`, as [`outcome`] tells them apart.
fn told(decoded: Result<Option<DecodedCommand>, ProtocolError>, rest: &BytesMut) -> String {
    match decoded {
        Ok(Some(decoded)) => format!("{:?} {:?} rest {:?}", decoded.command, decoded.raw, rest),
        Ok(None) => format!("more, {:?} kept", rest),
        Err(e) => format!("error {e:?}"),
    }
}

#[test]
fn a_repeated_publish_line_decodes_as_a_fresh_decoder_would() {
    let limits = Limits::default();
    let mut inputs = vec![
        with_body(b"PUB t\n", b"m"),
        with_body(b"PUB t\r\n", b"m"),
        with_body(b"PUB t x\n", b"m"),
        with_body(b"PUB tt\n", b"m"),
        with_body(b"PUB u\n", b"m"),
        with_body(b"PUB t!\n", b"m"),
        with_body(b"PUB t\n", b""),
        [with_body(b"PUB t\n", b"m"), b"NOP\n".to_vec()].concat(),
        b"PUB t".to_vec(),
        b"PUB t\n\x00\x00".to_vec(),
        b"PUB t\n\x00\x00\x00\x05mm".to_vec(),
        b"PUB t\n\xff\xff\xff\xff".to_vec(),
    ];
    let over = limits.max_msg_size as usize + 1;
    inputs.push(with_body(b"PUB t\n", &vec![b'm'; over]));
    for input in inputs {
        // A decoder that decoded `PUB t` just before, and one that never saw it.
        let mut warm = CommandDecoder::default();
        outcome(&mut warm, &with_body(b"PUB t\n", b"m"), &limits);
        let fresh = outcome(&mut CommandDecoder::default(), &input, &limits);
        assert_eq!(outcome(&mut warm, &input, &limits), fresh, "{input:?}");
    }
}

#[test]
fn a_repeated_publish_line_is_held_to_the_line_length_limit() {
    let mut warm = CommandDecoder::default();
    outcome(&mut warm, &with_body(b"PUB t\n", b"m"), &Limits::default());
    // `PUB t\n`: its newline is the sixth byte, inside a window of 6, not of 5.
    for max_line_len in [5, 6] {
        let limits = Limits {
            max_line_len,
            ..Limits::default()
        };
        let input = with_body(b"PUB t\n", b"m");
        let fresh = outcome(&mut CommandDecoder::default(), &input, &limits);
        assert_eq!(outcome(&mut warm, &input, &limits), fresh, "{max_line_len}");
    }
    let short = Limits {
        max_line_len: 5,
        ..Limits::default()
    };
    let refused = outcome(&mut warm, &with_body(b"PUB t\n", b"m"), &short);
    assert!(refused.starts_with("error LineTooLong"), "{refused}");
}

#[test]
fn a_plain_fin_line_decodes_as_the_full_parse_would() {
    let limits = Limits::default();
    let inputs: [&[u8]; 12] = [
        b"FIN 0123456789abcdef\n",
        b"FIN 0123456789abcdef\nNOP\n",
        b"FIN \x00\x01\x02\x03\x04\x05\x06\x07\x08\t\x0b\x0c\x0e\x0f\x10\xff\n",
        b"FIN 0123456 89abcdef\n",
        b"FIN 0123456789abcde\r\n",
        b"FIN 0123456789abc\rdef\n",
        b"FIN 0123456789abcdef\r\n",
        b"FIN 0123456789abcdef x\n",
        b"FIN 0123456789abcde\n",
        b"FIN 0123456789abcdef",
        b"FIN  0123456789abcde\n",
        b"FIN 01234\n6789abcdef\n",
    ];
    for input in inputs {
        let fresh = outcome(&mut CommandDecoder::default(), input, &limits);
        // The full parse of the same line: what nsqd's rules give.
        let mut rest = BytesMut::from(input);
        let full = crate::nsq::parse::find_newline(input, limits.max_line_len).and_then(|end| {
            let Some(newline) = end else {
                return Ok(None);
            };
            let line = crate::nsq::parse::strip_cr(&input[..newline]);
            match crate::nsq::parse::parse_line(line, &mut None)? {
                crate::nsq::parse::Head::Done(command) => {
                    let raw = rest.split_to(newline + 1).freeze();
                    Ok(Some(DecodedCommand { command, raw }))
                }
                _ => unreachable!("FIN has no body"),
            }
        });
        assert_eq!(fresh, told(full, &rest), "{input:?}");
    }
    // The first three are taken without the full parse.
    for input in &inputs[..3] {
        assert!(
            crate::nsq::parse::plain_fin(input, limits.max_line_len).is_some(),
            "{input:?}"
        );
    }
    assert!(
        crate::nsq::parse::plain_fin(inputs[0], 20).is_none(),
        "over the line limit"
    );
}
