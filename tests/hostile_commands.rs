//! Hostile commands after a complete TLS opening (issue 13): out of place, not commands,
//! invalid names, lying sizes, MPUB bodies that disagree with themselves, DPUB defers out of
//! range. Each gets nsqd's code and text (or nsqd's silent close), and nothing reaches nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use hostile_support::{
    case, cut, error, mpub_body, setup, with_body, Outcome, Start, NSQD_MAX_BODY_SIZE,
    NSQD_MAX_MSG_SIZE, NSQD_MAX_REQ_TIMEOUT_MS,
};

#[tokio::test]
async fn commands_out_of_place_get_nsqds_state_errors() {
    let setup = setup();
    let second_identify = with_body(b"IDENTIFY\n", 2, b"{}");
    setup
        .run(&[
            // nsqd would renegotiate a second IDENTIFY before SUB; nsqgate refuses it (settings
            // and the TLS upgrade are fixed once), in its own words.
            case(
                "a second IDENTIFY",
                Start::Upgraded,
                second_identify,
                error("E_INVALID cannot IDENTIFY again"),
            ),
            case(
                "CLS before SUB",
                Start::Upgraded,
                *b"CLS\n",
                error("E_INVALID cannot CLS in current state"),
            ),
            case(
                "RDY before SUB",
                Start::Upgraded,
                *b"RDY 1\n",
                error("E_INVALID cannot RDY in current state"),
            ),
            case(
                "FIN before SUB",
                Start::Upgraded,
                *b"FIN 0123456789abcdef\n",
                error("E_INVALID cannot FIN in current state"),
            ),
            case(
                "TOUCH before SUB",
                Start::Upgraded,
                *b"TOUCH 0123456789abcdef\n",
                error("E_INVALID cannot TOUCH in current state"),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn lines_that_are_not_commands_are_refused() {
    let setup = setup();
    let mut long_line = b"PUB ".to_vec();
    long_line.resize(64 * 1024, b'a');
    long_line.push(b'\n');
    setup
        .run(&[
            case(
                "unknown command",
                Start::Upgraded,
                *b"FOO bar\n",
                error("E_INVALID invalid command FOO"),
            ),
            case(
                "lower-case command",
                Start::Upgraded,
                *b"pub t\n",
                error("E_INVALID invalid command pub"),
            ),
            case(
                "empty line",
                Start::Upgraded,
                *b"\n",
                error("E_INVALID invalid command "),
            ),
            case(
                "PUB without a topic",
                Start::Upgraded,
                *b"PUB\n",
                error("E_INVALID PUB insufficient number of parameters"),
            ),
            case(
                "DPUB without a defer",
                Start::Upgraded,
                *b"DPUB t\n",
                error("E_INVALID DPUB insufficient number of parameters"),
            ),
            cut(
                "a line without its newline, then the end",
                Start::Upgraded,
                *b"PUB no-newline",
                Outcome::Close,
            ),
            // nsqd's line reader holds 16 KiB: a longer line ends the connection unanswered.
            case(
                "64 KiB command line",
                Start::Upgraded,
                long_line,
                Outcome::Close,
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn invalid_topic_and_channel_names_get_nsqds_errors() {
    let setup = setup();
    let long = "a".repeat(65);
    let pub_named = |topic: &[u8]| with_body(&[b"PUB ", topic, b"\n"].concat(), 1, b"x");
    let bad_topic = |text: &str| error(format!("E_BAD_TOPIC PUB topic name {text} is not valid"));
    let bad_channel = |text: &str| {
        error(format!(
            "E_BAD_CHANNEL SUB channel name {text} is not valid"
        ))
    };
    setup
        .run(&[
            case(
                "NUL in a topic",
                Start::Upgraded,
                pub_named(b"a\0b"),
                bad_topic(r#""a\x00b""#),
            ),
            case(
                "non-UTF-8 topic",
                Start::Upgraded,
                pub_named(b"a\xffb"),
                bad_topic(r#""a\xffb""#),
            ),
            case(
                "65-character topic",
                Start::Upgraded,
                pub_named(long.as_bytes()),
                bad_topic(&format!("\"{long}\"")),
            ),
            case(
                "empty topic",
                Start::Upgraded,
                pub_named(b""),
                bad_topic(r#""""#),
            ),
            case(
                "slash in a topic",
                Start::Upgraded,
                pub_named(b"a/b"),
                bad_topic(r#""a/b""#),
            ),
            case(
                "bare #ephemeral",
                Start::Upgraded,
                pub_named(b"#ephemeral"),
                bad_topic(r##""#ephemeral""##),
            ),
            case(
                "#ephemeral twice",
                Start::Upgraded,
                pub_named(b"t#ephemeral#ephemeral"),
                bad_topic(r##""t#ephemeral#ephemeral""##),
            ),
            case(
                "misspelt #ephemeral",
                Start::Upgraded,
                pub_named(b"t#eph"),
                bad_topic(r##""t#eph""##),
            ),
            // nsqd's MPUB names the code twice (protocol_v2.go puts it in the text too).
            case(
                "bad topic in MPUB",
                Start::Upgraded,
                with_body(b"MPUB a*b\n", 6, &mpub_body(1, &[b"x"])[..6]),
                error(r#"E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "a*b" is not valid"#),
            ),
            case(
                "bad topic in DPUB",
                Start::Upgraded,
                with_body(b"DPUB a*b 0\n", 1, b"x"),
                error(r#"E_BAD_TOPIC DPUB topic name "a*b" is not valid"#),
            ),
            case(
                "bad topic in SUB",
                Start::Upgraded,
                *b"SUB a*b ch\n",
                error(r#"E_BAD_TOPIC SUB topic name "a*b" is not valid"#),
            ),
            case(
                "NUL in a channel",
                Start::Upgraded,
                *b"SUB t c\0h\n",
                bad_channel(r#""c\x00h""#),
            ),
            case(
                "non-UTF-8 channel",
                Start::Upgraded,
                *b"SUB t c\xfe\n",
                bad_channel(r#""c\xfe""#),
            ),
            case(
                "bare #ephemeral channel",
                Start::Upgraded,
                *b"SUB t #ephemeral\n",
                bad_channel(r##""#ephemeral""##),
            ),
            case(
                "65-character channel",
                Start::Upgraded,
                format!("SUB t {long}\n"),
                bad_channel(&format!("\"{long}\"")),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn body_sizes_that_lie_are_refused_before_anything_is_published() {
    let setup = setup();
    let too_big = NSQD_MAX_MSG_SIZE as i32 + 1;
    setup
        .run(&[
            case(
                "PUB size 0",
                Start::Upgraded,
                with_body(b"PUB t0\n", 0, b""),
                error("E_BAD_MESSAGE PUB invalid message body size 0"),
            ),
            case(
                "PUB size -1",
                Start::Upgraded,
                with_body(b"PUB t1\n", -1, b"x"),
                error("E_BAD_MESSAGE PUB invalid message body size -1"),
            ),
            case(
                "PUB size i32::MIN",
                Start::Upgraded,
                with_body(b"PUB t2\n", i32::MIN, b"x"),
                error(format!(
                    "E_BAD_MESSAGE PUB invalid message body size {}",
                    i32::MIN
                )),
            ),
            case(
                "PUB over the message limit",
                Start::Upgraded,
                with_body(b"PUB t3\n", too_big, b"x"),
                error(format!(
                    "E_BAD_MESSAGE PUB message too big {too_big} > {NSQD_MAX_MSG_SIZE}"
                )),
            ),
            cut(
                "PUB body shorter than its size, then the end",
                Start::Upgraded,
                with_body(b"PUB t4\n", 10, b"short"),
                Outcome::Close,
            ),
            case(
                "DPUB size 0",
                Start::Upgraded,
                with_body(b"DPUB t5 0\n", 0, b""),
                error("E_BAD_MESSAGE DPUB invalid message body size 0"),
            ),
            case(
                "DPUB over the message limit",
                Start::Upgraded,
                with_body(b"DPUB t6 0\n", too_big, b"x"),
                error(format!(
                    "E_BAD_MESSAGE DPUB message too big {too_big} > {NSQD_MAX_MSG_SIZE}"
                )),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn mpub_bodies_that_disagree_with_themselves_publish_nothing() {
    let setup = setup();
    let mpub = |body: &[u8]| with_body(b"MPUB m\n", body.len() as i32, body);
    let over_body = NSQD_MAX_BODY_SIZE as i32 + 1;
    setup
        .run(&[
            case(
                "zero messages",
                Start::Upgraded,
                mpub(&mpub_body(0, &[])),
                error("E_BAD_BODY MPUB invalid message count 0"),
            ),
            case(
                "negative count",
                Start::Upgraded,
                mpub(&mpub_body(-1, &[b"x"])),
                error("E_BAD_BODY MPUB invalid message count -1"),
            ),
            case(
                "body size 0",
                Start::Upgraded,
                with_body(b"MPUB m\n", 0, b""),
                error("E_BAD_BODY MPUB invalid body size 0"),
            ),
            case(
                "body over the limit",
                Start::Upgraded,
                with_body(b"MPUB m\n", over_body, b""),
                error(format!(
                    "E_BAD_BODY MPUB body too big {over_body} > {NSQD_MAX_BODY_SIZE}"
                )),
            ),
            case(
                "a message of size 0",
                Start::Upgraded,
                mpub(&mpub_body(1, &[b""])),
                error("E_BAD_MESSAGE MPUB invalid message(0) body size 0"),
            ),
            cut(
                "count 3, two messages, then the end",
                Start::Upgraded,
                mpub(&mpub_body(3, &[b"a", b"b"])),
                error("E_BAD_MESSAGE MPUB failed to read message(2) body size"),
            ),
            cut(
                "body shorter than its size, then the end",
                Start::Upgraded,
                with_body(b"MPUB m\n", 100, &mpub_body(1, &[b"a"])),
                Outcome::Close,
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn dpub_defers_out_of_range_are_refused_and_zero_is_a_publish() {
    let setup = setup();
    let over = NSQD_MAX_REQ_TIMEOUT_MS + 1;
    let range = |shown: &str| {
        error(format!(
            "E_INVALID DPUB timeout {shown} out of range 0-{NSQD_MAX_REQ_TIMEOUT_MS}"
        ))
    };
    setup
        .run(&[
            case(
                "negative defer",
                Start::Upgraded,
                with_body(b"DPUB d -1\n", 1, b"x"),
                error("E_INVALID DPUB could not parse timeout -1"),
            ),
            case(
                "defer that is not a number",
                Start::Upgraded,
                with_body(b"DPUB d soon\n", 1, b"x"),
                error("E_INVALID DPUB could not parse timeout soon"),
            ),
            case(
                "defer over the maximum",
                Start::Upgraded,
                with_body(format!("DPUB d {over}\n").as_bytes(), 1, b"x"),
                range(&over.to_string()),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();

    // A zero defer is valid for nsqd: the message is published at once.
    let mut client = setup.connect(Start::Upgraded).await;
    client.send_raw(&with_body(b"DPUB zero 0\n", 1, b"x")).await;
    client.assert_ok("DPUB with a zero defer").await;
    assert_eq!(setup.nsqd.message_count("zero"), 1);
}
