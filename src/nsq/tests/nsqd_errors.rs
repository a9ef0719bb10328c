//! Every stateless error nsqd v1.3.0 sends while reading a command, with its exact text.

use super::*;
use crate::nsq::{decode_magic, ErrorCode};

#[test]
fn unknown_and_empty_commands() {
    assert_eq!(wire_error_text(b"FOO\n"), "E_INVALID invalid command FOO");
    assert_eq!(
        wire_error_text(b"FOO bar baz\n"),
        "E_INVALID invalid command FOO"
    );
    // Names are case-sensitive.
    assert_eq!(wire_error_text(b"pub t\n"), "E_INVALID invalid command pub");
    // An empty line is an empty name; the text keeps its trailing space.
    assert_eq!(wire_error_text(b"\n"), "E_INVALID invalid command ");
    assert_eq!(wire_error_text(b"\r\n"), "E_INVALID invalid command ");
    assert_eq!(wire_error_text(b" NOP\n"), "E_INVALID invalid command ");
    // nsqd echoes the raw bytes, UTF-8 or not.
    assert_eq!(wire_error(b"\xffX\n"), b"E_INVALID invalid command \xffX");
}

#[test]
fn missing_parameters() {
    let cases: &[(&[u8], &str)] = &[
        (b"SUB\n", "E_INVALID SUB insufficient number of parameters"),
        (
            b"SUB t\n",
            "E_INVALID SUB insufficient number of parameters",
        ),
        (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
        (
            b"MPUB\n",
            "E_INVALID MPUB insufficient number of parameters",
        ),
        (
            b"DPUB t\n",
            "E_INVALID DPUB insufficient number of parameters",
        ),
        (b"FIN\n", "E_INVALID FIN insufficient number of params"),
        (
            b"REQ 0123456789abcdef\n",
            "E_INVALID REQ insufficient number of params",
        ),
        (b"TOUCH\n", "E_INVALID TOUCH insufficient number of params"),
        (b"AUTH x\n", "E_INVALID AUTH invalid number of parameters"),
        (b"AUTH \n", "E_INVALID AUTH invalid number of parameters"),
    ];
    for (input, text) in cases {
        assert_eq!(
            wire_error_text(input),
            *text,
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn bad_names() {
    assert_eq!(
        wire_error_text(b"PUB a!b\n"),
        r#"E_BAD_TOPIC PUB topic name "a!b" is not valid"#
    );
    assert_eq!(
        wire_error_text(b"DPUB t\"q 10\n"),
        r#"E_BAD_TOPIC DPUB topic name "t\"q" is not valid"#
    );
    assert_eq!(
        wire_error_text(b"SUB #ephemeral c\n"),
        r##"E_BAD_TOPIC SUB topic name "#ephemeral" is not valid"##
    );
    assert_eq!(
        wire_error_text(b"SUB t c!\n"),
        r#"E_BAD_CHANNEL SUB channel name "c!" is not valid"#
    );
    // Two spaces make an empty parameter.
    assert_eq!(
        wire_error_text(b"SUB t  c\n"),
        r#"E_BAD_CHANNEL SUB channel name "" is not valid"#
    );
    // nsqd v1.3.0 repeats the code inside MPUB's description.
    assert_eq!(
        wire_error_text(b"MPUB bad!\n"),
        r#"E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "bad!" is not valid"#
    );
    // Go's %q: escapes for tabs, invalid UTF-8 and non-printing characters.
    assert_eq!(
        wire_error_text(b"PUB a\tb\xff\x01\x7f\xc3\xa9\xc2\xa0\n"),
        r#"E_BAD_TOPIC PUB topic name "a\tb\xff\x01\x7fé\u00a0" is not valid"#
    );
    let long = format!("PUB {}\n", "a".repeat(65));
    assert_eq!(wire_error(long.as_bytes())[..12], *b"E_BAD_TOPIC ");
    // The brief's example, which cannot arrive on one line (the space splits it).
    let err = ProtocolError::BadTopic {
        command: "PUB",
        name: bytes::Bytes::from_static(b"a b"),
    };
    assert_eq!(err.to_string(), r#"PUB topic name "a b" is not valid"#);
    assert_eq!(err.code(), ErrorCode::BadTopic);
}

#[test]
fn bad_numbers_and_ids() {
    let cases: &[(&[u8], &str)] = &[
        (b"RDY x\n", "E_INVALID RDY could not parse count x"),
        (b"RDY +1\n", "E_INVALID RDY could not parse count +1"),
        (b"RDY -1\n", "E_INVALID RDY could not parse count -1"),
        (b"DPUB t -5\n", "E_INVALID DPUB could not parse timeout -5"),
        (
            b"DPUB t 1.5\n",
            "E_INVALID DPUB could not parse timeout 1.5",
        ),
        (
            b"REQ 0123456789abcdef 1s\n",
            "E_INVALID REQ could not parse timeout 1s",
        ),
        (b"FIN abc\n", "E_INVALID Invalid Message ID"),
        (b"FIN 0123456789abcdef0\n", "E_INVALID Invalid Message ID"),
        (b"REQ short 10\n", "E_INVALID Invalid Message ID"),
        (b"TOUCH 0123456789abcde\n", "E_INVALID Invalid Message ID"),
        // The `\r` is only stripped before `\n`, so this id is 15 bytes.
        (b"FIN 0123456789abcde\r\n", "E_INVALID Invalid Message ID"),
    ];
    for (input, text) in cases {
        assert_eq!(
            wire_error_text(input),
            *text,
            "{:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn publish_sizes() {
    let cases: &[(&[u8], u32, &str)] = &[
        (
            b"PUB t\n",
            0,
            "E_BAD_MESSAGE PUB invalid message body size 0",
        ),
        (
            b"PUB t\n",
            u32::MAX,
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            b"PUB t\n",
            2_000_000,
            "E_BAD_MESSAGE PUB message too big 2000000 > 1048576",
        ),
        (
            b"PUB t\n",
            0x7fff_ffff,
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576",
        ),
        (
            b"DPUB t 10\n",
            0,
            "E_BAD_MESSAGE DPUB invalid message body size 0",
        ),
        (
            b"DPUB t 10\n",
            1_048_577,
            "E_BAD_MESSAGE DPUB message too big 1048577 > 1048576",
        ),
        (b"IDENTIFY\n", 0, "E_BAD_BODY IDENTIFY invalid body size 0"),
        (
            b"IDENTIFY\n",
            0x8000_0000,
            "E_BAD_BODY IDENTIFY invalid body size -2147483648",
        ),
        (
            b"IDENTIFY\n",
            6_291_456,
            "E_BAD_BODY IDENTIFY body too big 6291456 > 5242880",
        ),
        (b"AUTH\n", 0, "E_BAD_BODY AUTH invalid body size 0"),
        (
            b"AUTH\n",
            5_242_881,
            "E_BAD_BODY AUTH body too big 5242881 > 5242880",
        ),
        (b"MPUB t\n", 0, "E_BAD_BODY MPUB invalid body size 0"),
        (
            b"MPUB t\n",
            5_242_881,
            "E_BAD_BODY MPUB body too big 5242881 > 5242880",
        ),
        // A declared body too short for the count cannot be an MPUB.
        (
            b"MPUB t\n",
            3,
            "E_BAD_BODY MPUB failed to read message count",
        ),
    ];
    for (line, size, text) in cases {
        assert_eq!(wire_error_text(&with_size(line, *size)), *text, "{text}");
    }
}

#[test]
fn mpub_bodies() {
    let big = vec![b'x'; 2_000_000];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (mpub_body(0, &[]), "E_BAD_BODY MPUB invalid message count 0"),
        (
            mpub_body(-1, &[b"a"]),
            "E_BAD_BODY MPUB invalid message count -1",
        ),
        // (5 MiB - 4) / 5 = 1048575 messages at most.
        (
            mpub_body(1_048_576, &[b"a"]),
            "E_BAD_BODY MPUB invalid message count 1048576",
        ),
        (
            [mpub_body(2, &[b"a"]), 0u32.to_be_bytes().to_vec()].concat(),
            "E_BAD_MESSAGE MPUB invalid message(1) body size 0",
        ),
        (
            mpub_body(2, &[b"a", &big]),
            "E_BAD_MESSAGE MPUB message too big 2000000 > 1048576",
        ),
        (
            mpub_body(2, &[b"a"]),
            "E_BAD_MESSAGE MPUB failed to read message(1) body size",
        ),
        (
            [mpub_body(2, &[b"a"]), vec![0, 0]].concat(),
            "E_BAD_MESSAGE MPUB failed to read message(1) body size",
        ),
        (
            [
                mpub_body(1, &[]),
                5u32.to_be_bytes().to_vec(),
                b"abc".to_vec(),
            ]
            .concat(),
            "E_BAD_MESSAGE MPUB failed to read message body",
        ),
        (
            [mpub_body(1, &[b"a"]), b"NOP".to_vec()].concat(),
            "E_BAD_BODY MPUB body has 3 bytes after the last message",
        ),
    ];
    for (body, text) in cases {
        assert_eq!(
            wire_error_text(&with_body(b"MPUB t\n", &body)),
            text,
            "{text}"
        );
    }
}

#[test]
fn mpub_count_fails_before_the_body_arrives() {
    let mut input = with_size(b"MPUB t\n", 1000);
    input.extend_from_slice(&0i32.to_be_bytes());
    assert_eq!(
        wire_error_text(&input),
        "E_BAD_BODY MPUB invalid message count 0"
    );
}

#[test]
fn parameters_fail_before_the_body_arrives() {
    // nsqd replies before reading a size, so no size is needed to fail.
    assert_eq!(wire_error_text(b"PUB a!b\n")[..11], *"E_BAD_TOPIC");
    assert_eq!(wire_error_text(b"AUTH x\n")[..9], *"E_INVALID");
}

#[test]
fn over_long_line_closes_silently() {
    let limits = Limits::default();
    let err = decode_err(&vec![b'A'; limits.max_line_len]);
    assert!(matches!(err, ProtocolError::LineTooLong { limit: 16384 }));
    assert!(err.closes_silently());
    // A `\n` just past the limit does not help.
    let mut input = vec![b'A'; limits.max_line_len];
    input.push(b'\n');
    assert!(matches!(
        decode_err(&input),
        ProtocolError::LineTooLong { .. }
    ));
}

#[test]
fn bad_magic_is_a_bare_code() {
    let mut buf = BytesMut::from(&b"  V1PUB"[..]);
    let err = decode_magic(&mut buf).unwrap_err();
    assert_eq!(&buf[..], b"  V1PUB");
    assert_eq!(err.code(), ErrorCode::BadProtocol);
    assert_eq!(
        &err.to_frame()[..],
        b"\x00\x00\x00\x12\x00\x00\x00\x01E_BAD_PROTOCOL"
    );
    assert!(err.to_string().contains("V1"));
}

#[test]
fn every_decode_error_is_fatal() {
    for input in [&b"FOO\n"[..], b"FIN x\n", b"PUB !\n"] {
        assert!(decode_err(input).code().is_fatal());
    }
}
