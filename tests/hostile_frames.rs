//! Hostile frames the first slice left out (issue 13): bytes after CLS, the body size fields
//! of every command that has one (zero, negative when read signed, over the limit, larger
//! than what follows), and IDENTIFY nested deeper than nsqgate parses. Each gets nsqd v1.3.0's
//! answer from `nsqd/protocol_v2.go` (or a stated difference), and nothing reaches nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use common::nsqclient::RawClient;
use common::wire::FrameType;
use hostile_support::{
    case, cut, error, mpub_body, setup, with_body, Outcome, Start, ANSWER_LIMIT, CLOSING_TOPIC,
    IDENTIFY_BEFORE_IDENTITY, NSQD_MAX_BODY_SIZE, NSQD_MAX_MSG_SIZE,
};

#[tokio::test]
async fn bytes_after_cls_are_answered_as_nsqd_answers_them() {
    let setup = setup();
    // After CLS nsqd is "closing": RDY is ignored, FIN/REQ/TOUCH still work, CLS, SUB,
    // IDENTIFY and AUTH are refused as out of state, and the client is the one to close.
    let fin_unknown = "E_FIN_FAILED FIN 0123456789abcdef failed ID not in flight";
    setup
        .run(&[
            case(
                "an unknown command",
                Start::Closing,
                *b"FOO\n",
                error("E_INVALID invalid command FOO"),
            ),
            case(
                "NUL bytes as a command",
                Start::Closing,
                *b"\0\0\0\n",
                error("E_INVALID invalid command \0\0\0"),
            ),
            case(
                "CLS again",
                Start::Closing,
                *b"CLS\n",
                error("E_INVALID cannot CLS in current state"),
            ),
            case(
                "SUB again",
                Start::Closing,
                *b"SUB other ch\n",
                error("E_INVALID cannot SUB in current state"),
            ),
            case(
                "IDENTIFY",
                Start::Closing,
                with_body(b"IDENTIFY\n", 2, b"{}"),
                error("E_INVALID cannot IDENTIFY in current state"),
            ),
            case(
                "AUTH",
                Start::Closing,
                with_body(b"AUTH\n", 6, b"secret"),
                error("E_INVALID cannot AUTH in current state"),
            ),
            // RDY after CLS is ignored by nsqd (no answer, not fatal): the next line is still
            // read and answered.
            case(
                "RDY, then an unknown command",
                Start::Closing,
                *b"RDY 10\nFOO\n",
                error("E_INVALID invalid command FOO"),
            ),
            // FIN of a message never sent: nsqd's error is not fatal, and the next command
            // (one nsqd answers: nsqgate's own refusals do not wait for an error nsqd may
            // still send unasked) is answered after it.
            case(
                "FIN of an unknown id, then CLS",
                Start::Closing,
                *b"FIN 0123456789abcdef\nCLS\n",
                Outcome::Errors(vec![
                    fin_unknown.into(),
                    "E_INVALID cannot CLS in current state".into(),
                ]),
            ),
            cut(
                "a PUB cut short, then the end",
                Start::Closing,
                with_body(b"PUB closing\n", 10, b"part"),
                Outcome::Close,
            ),
            cut(
                "half a line, then the end",
                Start::Closing,
                *b"NO",
                Outcome::Close,
            ),
        ])
        .await;
    setup.assert_nothing_published();

    // nsqd takes a PUB in the closing state (PUB checks no state): so does nsqgate.
    let mut client = setup.connect(Start::Closing).await;
    client
        .send_raw(&with_body(b"PUB closing\n", 5, b"after"))
        .await;
    client.assert_ok("PUB after CLS").await;
    assert_eq!(setup.nsqd.message_count(CLOSING_TOPIC), 1);
}

#[tokio::test]
async fn every_body_size_field_is_checked_as_nsqd_checks_it() {
    let setup = setup();
    let too_big_msg = NSQD_MAX_MSG_SIZE as i32 + 1;
    // The most messages an MPUB body can hold (4 for the count, 5 per message at least).
    let most = (NSQD_MAX_BODY_SIZE as i32 - 4) / 5;
    let mpub = |body: &[u8]| with_body(b"MPUB m\n", body.len() as i32, body);
    setup
        .run(&[
            case(
                "DPUB size -1",
                Start::Upgraded,
                with_body(b"DPUB d 0\n", -1, b"x"),
                error("E_BAD_MESSAGE DPUB invalid message body size -1"),
            ),
            cut(
                "DPUB body shorter than its size, then the end",
                Start::Upgraded,
                with_body(b"DPUB d 0\n", 10, b"short"),
                Outcome::Close,
            ),
            cut(
                "PUB size field cut short, then the end",
                Start::Upgraded,
                [b"PUB p\n".as_slice(), &[0, 0]].concat(),
                Outcome::Close,
            ),
            case(
                "MPUB body size -1",
                Start::Upgraded,
                with_body(b"MPUB m\n", -1, b""),
                error("E_BAD_BODY MPUB invalid body size -1"),
            ),
            case(
                "MPUB body size i32::MIN",
                Start::Upgraded,
                with_body(b"MPUB m\n", i32::MIN, b""),
                error(format!("E_BAD_BODY MPUB invalid body size {}", i32::MIN)),
            ),
            case(
                "MPUB message size -1",
                Start::Upgraded,
                mpub(&[1i32.to_be_bytes(), (-1i32).to_be_bytes()].concat()),
                error("E_BAD_MESSAGE MPUB invalid message(0) body size -1"),
            ),
            case(
                "MPUB message over the message limit",
                Start::Upgraded,
                mpub(&[1i32.to_be_bytes(), too_big_msg.to_be_bytes()].concat()),
                error(format!(
                    "E_BAD_MESSAGE MPUB message too big {too_big_msg} > {NSQD_MAX_MSG_SIZE}"
                )),
            ),
            case(
                "MPUB count over what a body can hold",
                Start::Upgraded,
                mpub(&mpub_body(most + 1, &[b"x"])),
                error(format!(
                    "E_BAD_BODY MPUB invalid message count {}",
                    most + 1
                )),
            ),
            case(
                "IDENTIFY size -1",
                Start::Magic,
                with_body(b"IDENTIFY\n", -1, b"{}"),
                error("E_BAD_BODY IDENTIFY invalid body size -1"),
            ),
            case(
                "IDENTIFY size i32::MIN",
                Start::Magic,
                with_body(b"IDENTIFY\n", i32::MIN, b"{}"),
                error(format!(
                    "E_BAD_BODY IDENTIFY invalid body size {}",
                    i32::MIN
                )),
            ),
            cut(
                "IDENTIFY body shorter than its size, then the end",
                Start::Magic,
                with_body(b"IDENTIFY\n", 100, b"{}"),
                Outcome::Close,
            ),
            case(
                "AUTH size 0",
                Start::Upgraded,
                with_body(b"AUTH\n", 0, b""),
                error("E_BAD_BODY AUTH invalid body size 0"),
            ),
            case(
                "AUTH size -1",
                Start::Upgraded,
                with_body(b"AUTH\n", -1, b""),
                error("E_BAD_BODY AUTH invalid body size -1"),
            ),
            case(
                "AUTH over the bound before an identity",
                Start::Upgraded,
                with_body(b"AUTH\n", IDENTIFY_BEFORE_IDENTITY as i32 + 1, b""),
                error(format!(
                    "E_BAD_BODY AUTH body too big {} > {IDENTIFY_BEFORE_IDENTITY}",
                    IDENTIFY_BEFORE_IDENTITY + 1
                )),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

/// IDENTIFY asking for TLS, with an unknown field holding arrays: `depth` levels of JSON in
/// all, the IDENTIFY object included.
fn identify_nested(depth: usize) -> Vec<u8> {
    let arrays = depth - 1;
    let body = format!(
        r#"{{"tls_v1":true,"feature_negotiation":true,"x":{}{}}}"#,
        "[".repeat(arrays),
        "]".repeat(arrays)
    );
    with_body(b"IDENTIFY\n", body.len() as i32, body.as_bytes())
}

/// The answer to an IDENTIFY: `Ok(())` for nsqd's JSON reply, `Err(text)` for an error frame.
async fn identify_answer(client: &mut RawClient, identify: &[u8]) -> Result<(), String> {
    client.send_raw(identify).await;
    match client.read_frame_within(ANSWER_LIMIT).await {
        Some(frame) if frame.frame_type == FrameType::Response => Ok(()),
        Some(frame) => Err(frame.text()),
        None => Err("closed without an answer".into()),
    }
}

/// Go's encoding/json (nsqd) reads up to 10,000 levels of nesting and refuses the 10,001st;
/// nsqgate's parser (serde_json) stops at 128 levels. Deliberate: no client nests IDENTIFY
/// at all (it is a flat object), and 10,000 levels of recursion on a proxy's worker stack buy
/// nothing. Deeper bodies get nsqd's own refusal text, which nsqd gives past 10,000. (10,000
/// levels never reach the parser: they take more than the 16 KiB nsqgate reads of IDENTIFY.)
#[tokio::test]
async fn identify_nested_past_nsqgates_parser_gets_nsqds_decode_refusal() {
    let setup = setup();
    let cannot_decode = || Err("E_BAD_BODY IDENTIFY failed to decode JSON body".to_string());

    // nsqd itself, asked directly (IDENTIFY needs no TLS there): the limit is 10,000.
    for (depth, expected) in [(127, Ok(())), (10_000, Ok(())), (10_001, cannot_decode())] {
        let mut direct = RawClient::plain(setup.nsqd.tcp).await;
        let seen = identify_answer(&mut direct, &identify_nested(depth)).await;
        assert_eq!(seen, expected, "nsqd, {depth} levels");
    }

    // nsqgate before an identity: up to 127 levels, and 10,000 levels do not fit its 16 KiB.
    for (depth, expected) in [(127, Ok(())), (128, cannot_decode())] {
        let mut client = setup.connect(Start::Magic).await;
        let seen = identify_answer(&mut client, &identify_nested(depth)).await;
        assert_eq!(seen, expected, "nsqgate before an identity, {depth} levels");
    }
    // 8,000 levels still fit the 16 KiB nsqgate reads of an IDENTIFY (before an identity,
    // and a certificate's identity comes with the same opening): refused as JSON.
    let fits = identify_nested(8_000);
    assert!(fits.len() < IDENTIFY_BEFORE_IDENTITY);
    let mut client = setup.connect(Start::Magic).await;
    let seen = identify_answer(&mut client, &fits).await;
    assert_eq!(seen, cannot_decode(), "nsqgate, 8,000 levels");
    // 10,000 levels do not fit: refused by size before any parsing.
    let deep = identify_nested(10_000);
    let mut client = setup.connect(Start::Magic).await;
    let seen = identify_answer(&mut client, &deep).await;
    let size = deep.len() - b"IDENTIFY\n".len() - 4;
    let too_big = format!("E_BAD_BODY IDENTIFY body too big {size} > {IDENTIFY_BEFORE_IDENTITY}");
    assert_eq!(seen, Err(too_big), "nsqgate, 10,000 levels");
    setup.assert_nsqd_untouched();
}
