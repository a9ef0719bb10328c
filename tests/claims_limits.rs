//! Limits end to end that had no test (README, "Flood and exhaustion defences"): the AUTH and
//! half-sent-command deadlines, `max_delay_ms`, the per-topic bucket over every publisher, the
//! total connection cap, and each size limit set below nsqd's own, so that only nsqgate can be
//! the one refusing (its numbers are in the reply).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod claims_support;
mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{dpub_bytes, mpub_bytes, pub_bytes};
use common::{GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

/// Far below the defaults of everything else, so only these deadlines can end a connection.
const DEADLINE: Duration = Duration::from_secs(8);

/// The next frame's text and whether the connection then closed, within [`DEADLINE`].
async fn refusal_then_close(client: &mut RawClient) -> String {
    let frame = client
        .read_frame_within(DEADLINE)
        .await
        .expect("a refusal before the deadline");
    let text = frame_text(&frame);
    assert!(
        client.closed_within(Duration::from_secs(5)).await,
        "closed after {text}"
    );
    text
}

#[tokio::test]
async fn a_client_that_does_not_auth_in_time_is_told_and_closed() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    // identify_ms and idle stay at their defaults (10 s, 65 s): only auth_ms can fire first.
    let gate = GateConfig::new(nsqd.tcp)
        .policy("open-policy")
        .table("[timeouts]\nauth_ms = 1000")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, reply) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    let started = Instant::now();
    assert_eq!(
        refusal_then_close(&mut client).await,
        "E_AUTH_FIRST AUTH not sent in time"
    );
    eprintln!("AUTH deadline of 1 s fired after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_command_sent_half_is_cut_off_even_while_it_drips() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table("[timeouts]\npartial_frame_ms = 1500")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let ok = client.publish("drip", b"whole").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));

    // A PUB declaring 64 bytes, sent a byte every 200 ms (15 s in all, ten times the
    // deadline): the refusal must come while bytes are still arriving, since progress does
    // not move the deadline.
    let wire = pub_bytes("drip", &[b'x'; 64]);
    let mut refusal = None;
    for byte in &wire[..wire.len() - 1] {
        client.send_raw(std::slice::from_ref(byte)).await;
        refusal = client.read_frame_within(Duration::from_millis(200)).await;
        if refusal.is_some() {
            break;
        }
    }
    let refusal = refusal.expect("refused while the command was still dripping in");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    let text = frame_text(&refusal);
    assert_eq!(text, "E_INVALID command not completed in time");
    assert_eq!(
        nsqd.message_count("drip"),
        1,
        "the half-sent PUB never reached nsqd"
    );
}

/// An anonymous gate allowed one message a second (burst 1) in delay mode, holding a publish
/// at most `max_delay_ms`.
fn delaying_gate(pki: &Pki, nsqd: &Nsqd, max_delay_ms: u64) -> common::Gate {
    GateConfig::anonymous(nsqd.tcp)
        .table(&format!(
            "[rate_limits]\non_limit = \"delay\"\nmax_delay_ms = {max_delay_ms}\n\
             identity = {{ messages_per_sec = 1, burst_messages = 1 }}"
        ))
        .start(pki)
}

#[tokio::test]
async fn a_publish_is_delayed_up_to_max_delay_ms_and_refused_past_it() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // The second PUB needs about a second of refill: within a 10 s allowance it waits and
    // passes; against a 100 ms one it is refused with nsqd's code.
    for (max_delay_ms, topic) in [(10_000, "patient"), (100, "hasty")] {
        let gate = delaying_gate(&pki, &nsqd, max_delay_ms);
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        let first = client.publish(topic, b"1").await.expect("a reply");
        assert!(first.is_ok(), "{topic}: {}", frame_text(&first));
        let second = client.publish(topic, b"2").await.expect("a reply");
        match max_delay_ms {
            10_000 => assert!(second.is_ok(), "{topic}: {}", frame_text(&second)),
            _ => {
                let text = frame_text(&second);
                assert!(
                    text.starts_with("E_PUB_FAILED PUB failed: rate limit exceeded"),
                    "{text}"
                );
                assert!(client.closed_within(Duration::from_secs(5)).await);
            }
        }
    }
    assert_eq!(nsqd.message_count("patient"), 2);
    assert_eq!(nsqd.message_count("hasty"), 1);
}

#[tokio::test]
async fn the_per_topic_bucket_is_shared_by_every_publisher() {
    let pki = Pki::new();
    let (first, second) = (apikey::generate(), apikey::generate());
    let policy = format!(
        "[roles.publisher]\nallow = [{{ action = \"publish\", topics = [\"*\"] }}]\n\n\
         [api_keys.first]\nsha256 = \"{}\"\nroles = [\"publisher\"]\n\n\
         [api_keys.second]\nsha256 = \"{}\"\nroles = [\"publisher\"]\n",
        common::key_sha256(first.as_bytes()),
        common::key_sha256(second.as_bytes()),
    );
    pki.write_policy("policy", "main.toml", &policy);
    let nsqd = Nsqd::start(&pki);
    // Each identity alone may send plenty; the topic as a whole, 3 at once and 1 a second.
    let gate = GateConfig::new(nsqd.tcp)
        .policy("policy")
        .table("[rate_limits]\non_limit = \"reject\"\ntopic = { messages_per_sec = 1, burst_messages = 3 }")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut one = RawClient::authenticated(gate.addr, &connector, &first).await;
    for n in 0..3 {
        let ok = one.publish("shared", b"first").await.expect("a reply");
        assert!(ok.is_ok(), "first identity, PUB {n}: {}", frame_text(&ok));
    }
    // The other identity finds the topic's bucket empty (a refill token or two at most on a
    // slow machine).
    let mut two = RawClient::authenticated(gate.addr, &connector, &second).await;
    let mut oks = 0;
    let refusal = loop {
        let reply = two.publish("shared", b"second").await.expect("a reply");
        if !reply.is_ok() {
            break frame_text(&reply);
        }
        oks += 1;
        assert!(
            oks < 5,
            "the second identity published {oks} to the drained topic"
        );
    };
    assert!(
        refusal.starts_with("E_PUB_FAILED PUB failed: rate limit exceeded"),
        "{refusal}"
    );
    // Another topic has its own bucket.
    let mut two = RawClient::authenticated(gate.addr, &connector, &second).await;
    let ok = two.publish("elsewhere", b"second").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("shared"), 3 + oks);
}

/// A plain connection that sends the magic; true when nsqgate closed it without a byte.
async fn closed_at_once(addr: std::net::SocketAddr) -> bool {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(b"  V2").await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn the_total_connection_cap_refuses_the_next_client_until_one_leaves() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    // The per-IP cap (every test client is 127.0.0.1) well above the total one.
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table("[connections]\nmax_total = 3\nmax_per_ip = 100")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            RawClient::upgraded(gate.addr, &connector, json!({}))
                .await
                .0,
        );
    }
    assert!(
        closed_at_once(gate.addr).await,
        "a fourth connection is refused"
    );
    let ok = held[0].publish("capped", b"x").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));

    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed_at_once(gate.addr).await {
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn size_limits_below_nsqds_are_nsqgates_own_refusals() {
    let pki = Pki::new();
    // nsqd's defaults: 1 MiB per message, 5 MiB per MPUB body, no count limit.
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table("[limits]\nmax_msg_size = 100\nmax_body_size = 300\nmax_mpub_messages = 3")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (big, fits) = ([b'b'; 101], [b'f'; 100]);
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "PUB",
            pub_bytes("sized", &big),
            "E_BAD_MESSAGE PUB message too big 101 > 100",
        ),
        (
            "DPUB",
            dpub_bytes("sized", 10, &big),
            "E_BAD_MESSAGE DPUB message too big 101 > 100",
        ),
        (
            "MPUB message",
            mpub_bytes("sized", &[&fits, &big]),
            "E_BAD_MESSAGE MPUB message too big 101 > 100",
        ),
        (
            "MPUB body",
            mpub_bytes("sized", &[&fits, &fits, &fits]),
            "E_BAD_BODY MPUB body too big 316 > 300",
        ),
        (
            "MPUB count",
            mpub_bytes("sized", &[b"1", b"2", b"3", b"4"]),
            "E_BAD_BODY MPUB invalid message count 4",
        ),
        // Only the size is sent: nsqd would wait for a 2,000-byte body it accepts; nsqgate
        // answers from the declared length.
        (
            "PUB declared, no body",
            pub_bytes("sized", &[b'd'; 2000])[..14].to_vec(),
            "E_BAD_MESSAGE PUB message too big 2000 > 100",
        ),
        ("PUB fits", pub_bytes("sized", &fits), "OK"),
    ];
    for (what, wire, expected) in cases {
        let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
        client.send_raw(&wire).await;
        let reply = client.read_frame().await.expect("a reply");
        assert_eq!(frame_text(&reply), expected, "{what}");
    }
    assert_eq!(
        nsqd.message_count("sized"),
        1,
        "only the PUB that fits reached nsqd"
    );
}
