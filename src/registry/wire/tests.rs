//! The V1 codec against the bytes nsqd v1.3.0 writes and nsqlookupd answers.

use bytes::BytesMut;

use super::*;

const LIMITS: WireLimits = WireLimits {
    max_identify_size: 64,
    max_response_size: 32,
};

fn identify_bytes(body: &[u8]) -> Vec<u8> {
    let mut bytes = b"IDENTIFY\n".to_vec();
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn magic_is_accepted_byte_by_byte_and_anything_else_refused() {
    assert_eq!(decode_magic(b""), Ok(false));
    assert_eq!(decode_magic(b"  "), Ok(false));
    assert_eq!(decode_magic(b"  V1"), Ok(true));
    assert_eq!(decode_magic(b"  V2"), Err(WireError::BadMagic));
    assert_eq!(decode_magic(b"GET "), Err(WireError::BadMagic));
}

#[test]
fn commands_decode_as_nsqd_writes_them_and_encode_back_identically() {
    let mut stream = identify_bytes(br#"{"tcp_port":4150}"#);
    stream.extend_from_slice(
        b"REGISTER orders\nREGISTER orders archive\nUNREGISTER orders archive\nPING\n",
    );
    let mut decoded = Vec::new();
    let mut at = 0;
    while let Some((command, used)) = decode_command(&stream[at..], &LIMITS).ok().flatten() {
        decoded.push(command);
        at += used;
    }
    assert_eq!(at, stream.len());
    assert_eq!(decoded.len(), 5);
    assert_eq!(
        decoded[2],
        Command::Register {
            topic: "orders".into(),
            channel: Some("archive".into())
        }
    );
    let mut encoded = BytesMut::new();
    for command in &decoded {
        encode_command(command, &mut encoded);
    }
    assert_eq!(&encoded[..], &stream[..]);
}

#[test]
fn a_partial_command_needs_more_bytes() {
    let whole = identify_bytes(b"{}");
    for cut in 0..whole.len() {
        assert_eq!(
            decode_command(&whole[..cut], &LIMITS),
            Ok(None),
            "cut at {cut}"
        );
    }
    assert_eq!(decode_command(b"REGISTER orders", &LIMITS), Ok(None));
}

#[test]
fn identify_length_is_bounded_before_the_body_arrives() {
    let mut declared_huge = b"IDENTIFY\n".to_vec();
    declared_huge.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    assert!(matches!(
        decode_command(&declared_huge, &LIMITS),
        Err(WireError::IdentifyTooLarge { .. })
    ));
    let mut negative = b"IDENTIFY\n".to_vec();
    negative.extend_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        decode_command(&negative, &LIMITS),
        Err(WireError::IdentifyTooLarge { declared: -1, .. })
    ));
    assert!(decode_command(&identify_bytes(&[b' '; 64]), &LIMITS)
        .ok()
        .flatten()
        .is_some());
}

#[test]
fn a_line_without_newline_is_bounded() {
    let long = vec![b'A'; MAX_LINE_LEN];
    assert_eq!(decode_command(&long, &LIMITS), Err(WireError::LineTooLong));
    assert_eq!(decode_command(&long[..MAX_LINE_LEN - 1], &LIMITS), Ok(None));
}

#[test]
fn bad_names_parameters_and_commands_are_refused_with_nsqlookupds_codes() {
    let refused = |line: &[u8]| decode_command(line, &LIMITS).err().map(|e| e.code());
    assert_eq!(refused(b"REGISTER bad/topic\n"), Some("E_BAD_TOPIC"));
    assert_eq!(refused(b"REGISTER orders bad channel\n"), Some("E_INVALID"));
    assert_eq!(refused(b"REGISTER orders b@d\n"), Some("E_BAD_CHANNEL"));
    assert_eq!(refused(b"REGISTER\n"), Some("E_INVALID"));
    assert_eq!(refused(b"DELETE orders\n"), Some("E_INVALID"));
    assert_eq!(refused(b"REGISTER \xff\n"), Some("E_INVALID"));
}

#[test]
fn responses_round_trip_and_their_length_is_bounded() {
    let mut out = BytesMut::new();
    encode_response(b"OK", &mut out);
    assert_eq!(&out[..], b"\0\0\0\x02OK");
    assert_eq!(
        decode_response(&out, LIMITS.max_response_size),
        Ok(Some((bytes::Bytes::from_static(b"OK"), 6)))
    );
    assert_eq!(decode_response(&out[..5], 32), Ok(None));
    assert!(matches!(
        decode_response(b"\0\0\x01\0", 32),
        Err(WireError::ResponseTooLarge { declared: 256, .. })
    ));
}
