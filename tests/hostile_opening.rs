//! Hostile input at the opening of a TCP session (issue 13): bad magic, commands before
//! IDENTIFY, IDENTIFY bodies nsqd cannot read. Each gets nsqd's answer (or nsqgate's own,
//! where the gate's rule is stricter, said so), and nothing reaches nsqd.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use common::nsqclient::RawClient;
use common::wire::MAGIC_V2;
use hostile_support::{
    case, cut, error, mpub_body, outcome, setup, with_body, Outcome, Start,
    IDENTIFY_BEFORE_IDENTITY, NSQD_MAX_BODY_SIZE,
};
use serde_json::json;

#[tokio::test]
async fn a_wrong_or_partial_magic_is_refused_as_nsqd_refuses_it() {
    let setup = setup();
    let bad_protocol = || error("E_BAD_PROTOCOL");
    setup
        .run(&[
            case("V1 magic", Start::Bare, *b"  V1", bad_protocol()),
            case("lower-case magic", Start::Bare, *b"  v2", bad_protocol()),
            case(
                "a command instead",
                Start::Bare,
                *b"PUB t\n",
                bad_protocol(),
            ),
            case("NULs", Start::Bare, [0u8; 4], bad_protocol()),
            // nsqgate also takes TLS from the first byte: 0x16 starts a handshake (nsqd would
            // answer E_BAD_PROTOCOL); a record header cut short ends it, without a frame.
            cut(
                "TLS-looking bytes",
                Start::Bare,
                [0x16, 3, 1, 0],
                Outcome::Close,
            ),
            cut(
                "3 of 4 bytes, then the end",
                Start::Bare,
                *b"  V",
                Outcome::Close,
            ),
            cut("nothing, then the end", Start::Bare, [], Outcome::Close),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn commands_before_identify_are_refused_when_tls_is_required() {
    let setup = setup();
    // nsqgate's own refusal (the TLS requirement is the gate's, not nsqd's): E_INVALID and how
    // to fix it; nsqd behind `--tls-required` says "cannot PUB in current state (TLS required)".
    let tls_required = |doing: &str| {
        error(format!(
            "E_INVALID TLS is required: cannot {doing}; send IDENTIFY with tls_v1 and \
             feature_negotiation (or connect with TLS)"
        ))
    };
    setup
        .run(&[
            case(
                "PUB",
                Start::Magic,
                with_body(b"PUB pre\n", 1, b"x"),
                tls_required("PUB"),
            ),
            case(
                "MPUB",
                Start::Magic,
                with_body(b"MPUB pre\n", 9, &mpub_body(1, &[b"x"])),
                tls_required("MPUB"),
            ),
            case("SUB", Start::Magic, *b"SUB pre ch\n", tls_required("SUB")),
            case("RDY", Start::Magic, *b"RDY 1\n", tls_required("RDY")),
            case(
                "AUTH",
                Start::Magic,
                with_body(b"AUTH\n", 6, b"secret"),
                tls_required("AUTH"),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn identify_bodies_nsqd_cannot_read_are_refused() {
    let setup = setup();
    let identify = |body: &[u8]| with_body(b"IDENTIFY\n", body.len() as i32, body);
    let nest = |deep: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(deep), "]".repeat(deep));
    // Before a client has an identity nsqgate reads at most 16 KiB of IDENTIFY (nsqd 5 MiB),
    // refused in nsqd's words with nsqgate's limit.
    let gate_bound = |size: usize| {
        error(format!(
            "E_BAD_BODY IDENTIFY body too big {size} > {IDENTIFY_BEFORE_IDENTITY}"
        ))
    };
    let nested = nest(10_000);
    let user_agent = format!(r#"{{"user_agent":"{}"}}"#, "u".repeat(1024 * 1024));
    let cannot_decode = || error("E_BAD_BODY IDENTIFY failed to decode JSON body");
    let too_big = NSQD_MAX_BODY_SIZE as i32 + 1;
    setup
        .run(&[
            case(
                "not JSON",
                Start::Magic,
                identify(b"hello"),
                cannot_decode(),
            ),
            case(
                "a JSON array",
                Start::Magic,
                identify(b"[1,2]"),
                cannot_decode(),
            ),
            case(
                "nested 10,001 deep",
                Start::Magic,
                identify(nested.as_bytes()),
                gate_bound(nested.len()),
            ),
            case(
                "1 MiB user agent",
                Start::Magic,
                identify(user_agent.as_bytes()),
                gate_bound(user_agent.len()),
            ),
            case(
                "a string heartbeat",
                Start::Magic,
                identify(br#"{"tls_v1":true,"heartbeat_interval":"30s"}"#),
                cannot_decode(),
            ),
            case(
                "a heartbeat out of range",
                Start::Magic,
                identify(br#"{"tls_v1":true,"heartbeat_interval":999}"#),
                error("E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid"),
            ),
            case(
                "body size 0",
                Start::Magic,
                with_body(b"IDENTIFY\n", 0, b""),
                error("E_BAD_BODY IDENTIFY invalid body size 0"),
            ),
            case(
                "body over nsqd's limit",
                Start::Magic,
                with_body(b"IDENTIFY\n", too_big, b"{}"),
                error(format!(
                    "E_BAD_BODY IDENTIFY body too big {too_big} > {NSQD_MAX_BODY_SIZE}"
                )),
            ),
        ])
        .await;
    setup.assert_nsqd_untouched();
}

#[tokio::test]
async fn identify_with_unknown_fields_is_accepted_as_nsqd_accepts_it() {
    let setup = setup();
    let unknown = json!({"no_such_field": {"x": [1, 2]}, "ZZ": null, "Tls_V2": "yes"});
    let (mut client, reply) = RawClient::upgraded(setup.gate.addr, &setup.connector, unknown).await;
    assert_eq!(reply["version"], "1.3.0", "{reply}");
    client.send_raw(&with_body(b"PUB ident\n", 1, b"x")).await;
    client
        .assert_ok("PUB after an IDENTIFY with unknown fields")
        .await;
    assert_eq!(setup.nsqd.message_count("ident"), 1);
}

#[tokio::test]
async fn a_command_in_the_same_write_as_the_magic_is_answered() {
    let setup = setup();
    // Magic and a bad command in one write: the command is still answered.
    let mut client = setup.connect(Start::Bare).await;
    client
        .send_raw(&[MAGIC_V2.as_slice(), b"FOO\n"].concat())
        .await;
    assert_eq!(
        outcome(&mut client).await,
        Ok(error("E_INVALID invalid command FOO"))
    );
    setup.assert_nsqd_untouched();
}

/// One frame read from a blocking socket, exactly (no byte of what follows it).
fn read_frame_exactly(from: &mut impl std::io::Read) -> common::wire::Frame {
    common::wire::read_frame_from(from, 1024 * 1024)
}

#[test]
fn a_client_hello_sent_before_the_identify_reply_is_the_handshakes_first_bytes() {
    use std::io::Write;
    use std::sync::Arc;

    use common::wire::Command;

    // A client may not send its ClientHello before it read the IDENTIFY reply (nsqd would
    // lose it with the reader it swaps), but a hostile one may, in the same write: nsqgate
    // answers IDENTIFY in clear, then hands every byte behind it to the handshake, whether
    // its opening read took them or they were still in the socket.
    let setup = setup();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(common::nsqclient::ca_roots(&setup.ca_path()))
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let identify = Command::Identify {
        body: json!({"feature_negotiation": true, "tls_v1": true})
            .to_string()
            .into(),
    };
    let mut tcp = std::net::TcpStream::connect(setup.gate.addr).unwrap();
    tcp.set_read_timeout(Some(hostile_support::ANSWER_LIMIT))
        .unwrap();
    tcp.write_all(&[&MAGIC_V2[..], &identify.to_bytes(), &hello].concat())
        .unwrap();

    let reply = read_frame_exactly(&mut tcp);
    let reply: serde_json::Value = serde_json::from_slice(&reply.data).unwrap();
    assert_eq!(reply["tls_v1"], true, "{reply}");
    let mut secure = rustls::Stream::new(&mut tls, &mut tcp);
    let ok = read_frame_exactly(&mut secure);
    assert!(ok.is_ok(), "after the upgrade: {}", ok.text());
    secure
        .write_all(&common::wire::pub_bytes("early_hello", b"m"))
        .unwrap();
    assert!(read_frame_exactly(&mut secure).is_ok(), "the PUB's OK");
    assert_eq!(setup.nsqd.message_count("early_hello"), 1);
}

#[test]
fn commands_in_the_same_write_as_identify_on_a_plain_leg_are_each_answered() {
    use std::io::Write;

    use common::wire::Command;

    // IDENTIFY, AUTH and PUB in one write: the opening's read may take all three, and each
    // phase (the opening, the wait for AUTH, the relay) finds its own bytes in the buffer.
    let pki = common::Pki::new();
    let key = nsqgate::auth::apikey::generate();
    let policy = format!(
        "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"*\"] }}]\n\n\
         [api_keys.writer]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
        common::key_sha256(key.as_bytes()),
    );
    pki.write_policy("policy", "p.toml", &policy);
    let nsqd = common::Nsqd::start(&pki);
    let gate = common::GateConfig::new(nsqd.tcp)
        .client("require_tls = false")
        .policy("policy")
        .start(&pki);
    let identify = Command::Identify {
        body: json!({"feature_negotiation": true}).to_string().into(),
    };
    let auth = Command::Auth {
        secret: key.as_bytes().to_vec().into(),
    };
    let mut tcp = std::net::TcpStream::connect(gate.addr).unwrap();
    tcp.set_read_timeout(Some(hostile_support::ANSWER_LIMIT))
        .unwrap();
    let publish = common::wire::pub_bytes("same_write", b"m");
    tcp.write_all(
        &[
            &MAGIC_V2[..],
            &identify.to_bytes(),
            &auth.to_bytes(),
            &publish,
        ]
        .concat(),
    )
    .unwrap();

    let reply = read_frame_exactly(&mut tcp);
    let reply: serde_json::Value = serde_json::from_slice(&reply.data)
        .unwrap_or_else(|_| panic!("IDENTIFY reply: {}", reply.text()));
    assert_eq!(reply["auth_required"], true, "{reply}");
    let authenticated = read_frame_exactly(&mut tcp);
    assert!(
        authenticated.text().starts_with('{'),
        "AUTH reply: {}",
        authenticated.text()
    );
    let published = read_frame_exactly(&mut tcp);
    assert!(published.is_ok(), "PUB reply: {}", published.text());
    assert_eq!(nsqd.message_count("same_write"), 1);
}
