//! End-to-end message integrity (issue 14 part 3) with real processes: stock nsqd with TLS
//! required, the nsqgate binary, and raw clients speaking the test's own wire codec. What nsqd
//! holds is read from nsqd directly; forged messages are written to nsqd directly, bypassing
//! nsqgate. The envelope is checked with an HMAC written here from RFC 2104 over `sha2`, not
//! with nsqgate's code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod http_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};
use common::prom::Exposition;
use common::wire::{Command, FrameType, Message, MessageId};
use common::{write_secret, Gate, GateConfig, Nsqd, Pki, MAX_MSG_SIZE};

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];
const SIGNED: &str = "signed.orders";

/// HMAC-SHA256 (RFC 2104) over the parts, for a 32-byte key.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let pad = |byte: u8| {
        let mut block = [byte; 64];
        block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
        block
    };
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    parts.iter().for_each(|p| inner.update(p));
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The envelope as the README documents it: "NGS", 1, key id length, key id, tag, body.
fn envelope(key: &[u8; 32], key_id: &str, topic: &str, body: &[u8]) -> Vec<u8> {
    let id = key_id.as_bytes();
    let (id_len, topic_len) = ([1, id.len() as u8], [topic.len() as u8]);
    let tag = hmac(key, &[&id_len, id, &topic_len, topic.as_bytes(), body]);
    [b"NGS".as_slice(), &id_len, id, &tag, body].concat()
}

/// Keys k1 and k2 in files; `rule` is the `[[integrity.topics]]` table's body.
fn gate(pki: &Pki, nsqd: &Nsqd, rule: &str) -> Gate {
    for (name, key) in [("k1", K1), ("k2", K2)] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        write_secret(
            &pki.path(&format!("{name}.key")),
            format!("{encoded}\n").as_bytes(),
        );
    }
    let integrity = format!(
        "[integrity]\nquarantine_topic = \"quarantine\"\n\
         [[integrity.keys]]\nid = \"k1\"\nfile = \"k1.key\"\n\
         [[integrity.keys]]\nid = \"k2\"\nfile = \"k2.key\"\n\
         [[integrity.topics]]\ntopics = [\"signed.*\"]\n{rule}\n"
    );
    GateConfig::anonymous(nsqd.tcp)
        .http_nsqd(nsqd.https)
        .client("require_tls = true")
        .table(&format!("[limits]\nmax_msg_size = {MAX_MSG_SIZE}"))
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .table(&integrity)
        .start(pki)
}

async fn connect(pki: &Pki, addr: SocketAddr) -> RawClient {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    RawClient::upgraded(addr, &connector, serde_json::json!({}))
        .await
        .0
}

async fn subscriber(pki: &Pki, addr: SocketAddr, topic: &str, channel: &str) -> RawClient {
    let mut client = connect(pki, addr).await;
    assert_ok(client.sub(topic, channel).await, "SUB");
    client.send(&Command::Rdy { count: 100 }).await;
    client
}

async fn publish(client: &mut RawClient, command: Command) {
    client.send(&command).await;
    let reply = client.read_frame().await;
    assert_ok(reply, command.name());
}

/// The next `n` messages, each FINed.
async fn take(client: &mut RawClient, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = client.read_frame().await;
        let frame = frame.unwrap_or_else(|| panic!("{} of {n} messages came", got.len()));
        assert_eq!(
            frame.frame_type,
            FrameType::Message,
            "{}",
            frame_text(&frame)
        );
        let message = frame.message().unwrap();
        client.send(&Command::Fin { id: message.id }).await;
        got.push(message);
    }
    got
}

fn bodies(messages: &[Message]) -> Vec<Vec<u8>> {
    messages.iter().map(|m| m.body.to_vec()).collect()
}

fn metrics(gate: &Gate) -> Exposition {
    let (status, body) = common::prom::get(gate.admin(), "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

/// Waits (up to 10 s) until `done` holds for the gate's metrics.
fn wait_metrics(gate: &Gate, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exposition = metrics(gate);
        if done(&exposition) {
            return exposition;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            exposition.samples
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn binary_body(seed: u8) -> Vec<u8> {
    (0..=255u8)
        .map(|b| b.wrapping_add(seed))
        .chain(*b"\n\0end")
        .collect()
}

#[tokio::test]
async fn signed_messages_arrive_byte_for_byte_and_nsqd_holds_them_sealed() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let mut app = subscriber(&pki, gate.addr, SIGNED, "app").await;
    let mut raw = subscriber(&pki, nsqd.tcp, SIGNED, "raw").await;

    let sent: Vec<Vec<u8>> = (0..5).map(binary_body).collect();
    let mut producer = connect(&pki, gate.addr).await;
    let topic = SIGNED.to_owned();
    publish(
        &mut producer,
        Command::Pub {
            topic: topic.clone(),
            body: sent[0].clone().into(),
        },
    )
    .await;
    let messages = sent[1..4].iter().map(|b| b.clone().into()).collect();
    publish(
        &mut producer,
        Command::Mpub {
            topic: topic.clone(),
            messages,
        },
    )
    .await;
    let body = sent[4].clone().into();
    publish(
        &mut producer,
        Command::Dpub {
            topic,
            defer_ms: 0,
            body,
        },
    )
    .await;

    let mut delivered = bodies(&take(&mut app, 5).await);
    delivered.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(delivered, expected, "the consumer gets the bodies as sent");

    let mut held = bodies(&take(&mut raw, 5).await);
    held.sort();
    let mut sealed: Vec<Vec<u8>> = sent
        .iter()
        .map(|b| envelope(&K1, "k1", SIGNED, b))
        .collect();
    sealed.sort();
    assert_eq!(held, sealed, "nsqd holds each body in its k1 envelope");
    let m = metrics(&gate);
    assert_eq!(
        m.sum("nsqgate_integrity_messages_total", &[("outcome", "sealed")]),
        5.0
    );
    assert_eq!(
        m.sum(
            "nsqgate_integrity_messages_total",
            &[("outcome", "verified")]
        ),
        5.0
    );
}

#[tokio::test]
async fn messages_written_to_nsqd_directly_are_withheld_quarantined_audited_and_counted() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let mut app = subscriber(&pki, gate.addr, SIGNED, "app").await;
    let mut quarantine = subscriber(&pki, nsqd.tcp, "quarantine", "q").await;

    let mut tampered = envelope(&K1, "k1", SIGNED, b"pay 10 to alice");
    let last = tampered.len() - 1;
    tampered[last] = b'9';
    let forged = [
        b"unsigned: pay 1000 to mallory".to_vec(),
        tampered,
        envelope(&K1, "k1", "signed.other", b"signed for another topic"),
    ];
    let genuine = envelope(&K1, "k1", SIGNED, b"written directly, signed right");
    let mut direct = connect(&pki, nsqd.tcp).await;
    for body in forged.iter().chain([&genuine]) {
        assert_ok(direct.publish(SIGNED, body).await, "PUB to nsqd");
    }
    let mut through = connect(&pki, gate.addr).await;
    assert_ok(through.publish(SIGNED, b"through nsqgate").await, "PUB");

    let mut delivered = bodies(&take(&mut app, 2).await);
    delivered.sort();
    let expected = [
        b"through nsqgate".to_vec(),
        b"written directly, signed right".to_vec(),
    ];
    assert_eq!(
        delivered, expected,
        "only the two genuine messages reach the consumer"
    );

    let mut copies = bodies(&take(&mut quarantine, 3).await);
    copies.sort();
    let mut originals = forged.to_vec();
    originals.sort();
    assert_eq!(
        copies, originals,
        "the quarantine topic holds each forged message as written"
    );

    let m = wait_metrics(&gate, "three quarantined", |m| {
        m.sum(
            "nsqgate_integrity_quarantine_publishes_total",
            &[("outcome", "ok")],
        ) == 3.0
    });
    let reasons = |reason| m.sum("nsqgate_integrity_quarantined_total", &[("reason", reason)]);
    assert_eq!(
        (reasons("no_envelope"), reasons("bad_signature")),
        (1.0, 2.0)
    );
    for reason in ["no_envelope", "bad_signature"] {
        gate.wait_audit(reason, |e| {
            e["action"] == "integrity"
                && e["outcome"] == "quarantine"
                && e["topic"] == SIGNED
                && e["channel"] == "app"
                && e["reason"].as_str().is_some_and(|r| r.starts_with(reason))
        });
    }
    // The originals were FINed by nsqgate: nothing is left in flight or queued for "app".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let topic = nsqd.topic(SIGNED).unwrap();
        let channel = &topic["channels"][0];
        let (depth, in_flight) = (
            channel["depth"].as_u64(),
            channel["in_flight_count"].as_u64(),
        );
        if (depth, in_flight) == (Some(0), Some(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "still held by nsqd: {channel}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = app.read_frame_within(Duration::from_millis(300)).await;
    assert!(
        late.is_none(),
        "nothing more for the consumer: {:?}",
        late.map(|f| frame_text(&f))
    );
}

#[tokio::test]
async fn after_rotation_old_messages_verify_and_new_ones_are_signed_with_the_new_key() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let old = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let rotated = gate(&pki, &nsqd, "signing_key = \"k2\"\naccept = [\"k1\"]");
    let mut raw = subscriber(&pki, nsqd.tcp, SIGNED, "raw").await;
    let mut app = subscriber(&pki, rotated.addr, SIGNED, "app").await;

    let mut before = connect(&pki, old.addr).await;
    assert_ok(before.publish(SIGNED, b"signed with k1").await, "PUB k1");
    let mut after = connect(&pki, rotated.addr).await;
    assert_ok(after.publish(SIGNED, b"signed with k2").await, "PUB k2");

    let mut delivered = bodies(&take(&mut app, 2).await);
    delivered.sort();
    assert_eq!(
        delivered,
        [b"signed with k1".to_vec(), b"signed with k2".to_vec()]
    );
    let mut held = bodies(&take(&mut raw, 2).await);
    held.sort();
    let mut expected = vec![
        envelope(&K1, "k1", SIGNED, b"signed with k1"),
        envelope(&K2, "k2", SIGNED, b"signed with k2"),
    ];
    expected.sort();
    assert_eq!(
        held, expected,
        "each message carries the key id it was signed with"
    );

    // The gate that knows only k1 for this topic does not accept k2's messages.
    let mut strict = subscriber(&pki, old.addr, SIGNED, "strict").await;
    let mut newer = connect(&pki, rotated.addr).await;
    assert_ok(newer.publish(SIGNED, b"k2 only").await, "PUB k2");
    wait_metrics(&old, "unknown key", |m| {
        m.sum(
            "nsqgate_integrity_quarantined_total",
            &[("reason", "unknown_key")],
        ) == 1.0
    });
    let late = strict.read_frame_within(Duration::from_millis(300)).await;
    assert!(
        late.is_none(),
        "withheld: {:?}",
        late.map(|f| frame_text(&f))
    );
}

#[tokio::test]
async fn an_unsigned_topic_is_untouched_both_ways() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let mut app = subscriber(&pki, gate.addr, "plain", "app").await;
    let mut raw = subscriber(&pki, nsqd.tcp, "plain", "raw").await;
    let mut through = connect(&pki, gate.addr).await;
    assert_ok(
        through
            .publish("plain", b"NGS\x01 looks like an envelope")
            .await,
        "PUB",
    );
    let mut direct = connect(&pki, nsqd.tcp).await;
    assert_ok(
        direct.publish("plain", b"written to nsqd").await,
        "PUB to nsqd",
    );

    let mut held = bodies(&take(&mut raw, 2).await);
    held.sort();
    let mut delivered = bodies(&take(&mut app, 2).await);
    delivered.sort();
    assert_eq!(held, delivered, "nsqd holds what was sent, no envelope");
    assert_eq!(
        delivered,
        [
            b"NGS\x01 looks like an envelope".to_vec(),
            b"written to nsqd".to_vec()
        ]
    );
    let m = metrics(&gate);
    assert_eq!(m.sum("nsqgate_integrity_messages_total", &[]), 0.0);
    assert_eq!(m.sum("nsqgate_integrity_quarantined_total", &[]), 0.0);
}

#[tokio::test]
async fn a_body_that_would_not_fit_once_sealed_is_refused_by_nsqgate_and_an_mpub_whole() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    // 3 magic + 1 version + 1 key id length + 2 key id + 32 tag.
    let room = MAX_MSG_SIZE - 39;
    let mut fits = connect(&pki, gate.addr).await;
    assert_ok(
        fits.publish(SIGNED, &vec![b'a'; room]).await,
        "PUB at the sealed limit",
    );

    let mut client = connect(&pki, gate.addr).await;
    let reply = client
        .publish(SIGNED, &vec![b'b'; room + 1])
        .await
        .expect("a reply");
    // nsqd's own refusal would name its limit, 1048576.
    let expected = format!("E_BAD_MESSAGE PUB message too big {} > {room}", room + 1);
    assert_eq!(frame_text(&reply), expected);
    assert!(
        client.closed_within(Duration::from_secs(10)).await,
        "fatal, as nsqd's"
    );

    let mut client = connect(&pki, gate.addr).await;
    let messages = vec![b"small".to_vec().into(), vec![b'c'; room + 1].into()];
    client
        .send(&Command::Mpub {
            topic: SIGNED.into(),
            messages,
        })
        .await;
    let reply = client.read_frame().await.expect("a reply");
    assert!(
        frame_text(&reply).starts_with("E_BAD_MESSAGE MPUB message too big"),
        "{}",
        frame_text(&reply)
    );
    assert_eq!(
        nsqd.message_count(SIGNED),
        1,
        "only the PUB that fit reached nsqd"
    );
}

#[tokio::test]
async fn publishes_through_the_nsqd_http_front_are_sealed_too() {
    use hyper::Method;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let mut app = subscriber(&pki, gate.addr, SIGNED, "app").await;
    let mut raw = subscriber(&pki, nsqd.tcp, SIGNED, "raw").await;
    let front = gate.http("nsqd");
    let binary: Vec<u8> = [
        &2u32.to_be_bytes()[..],
        &3u32.to_be_bytes(),
        b"x\ny",
        &1u32.to_be_bytes(),
        b"\0",
    ]
    .concat();
    for (path, body) in [
        ("/pub?topic=signed.orders", b"via /pub".to_vec()),
        (
            "/mpub?topic=signed.orders",
            b"line one\n\nline two\n".to_vec(),
        ),
        ("/mpub?topic=signed.orders&binary=true", binary),
    ] {
        let reply = http_support::request(&pki, front, Method::POST, path, None, body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    let sent: [&[u8]; 5] = [b"via /pub", b"line one", b"line two", b"x\ny", b"\0"];
    let mut expected: Vec<Vec<u8>> = sent.iter().map(|b| b.to_vec()).collect();
    expected.sort();
    let mut delivered = bodies(&take(&mut app, 5).await);
    delivered.sort();
    assert_eq!(
        delivered, expected,
        "the consumer gets each message as sent over HTTP"
    );
    let mut held = bodies(&take(&mut raw, 5).await);
    held.sort();
    let mut sealed: Vec<Vec<u8>> = sent
        .iter()
        .map(|b| envelope(&K1, "k1", SIGNED, b))
        .collect();
    sealed.sort();
    assert_eq!(held, sealed, "nsqd holds each in its envelope");
}

#[tokio::test]
async fn a_consumers_fin_or_req_naming_a_quarantined_message_never_comes_back_as_an_error() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = gate(&pki, &nsqd, "signing_key = \"k1\"");
    let mut app = subscriber(&pki, gate.addr, SIGNED, "app").await;
    let mut raw = subscriber(&pki, nsqd.tcp, SIGNED, "raw").await;
    let mut direct = connect(&pki, nsqd.tcp).await;
    assert_ok(direct.publish(SIGNED, b"forged").await, "PUB to nsqd");
    // nsqd gives a message the same id on every channel: the raw channel shows the id the
    // consumer was never given.
    let forged = take(&mut raw, 1).await[0].id;
    wait_metrics(&gate, "the copy", |m| {
        m.sum(
            "nsqgate_integrity_quarantine_publishes_total",
            &[("outcome", "ok")],
        ) == 1.0
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let topic = nsqd.topic(SIGNED).unwrap();
        let app_channel = topic["channels"].as_array().unwrap().iter();
        let held = app_channel
            .filter(|c| c["channel_name"] == "app")
            .map(|c| c["in_flight_count"].as_u64().unwrap())
            .sum::<u64>();
        if held == 0 {
            break; // nsqgate has FINed it
        }
        assert!(Instant::now() < deadline, "still in flight: {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // nsqd refuses a FIN and a REQ of that id (no longer in flight) with its non-fatal
    // E_FIN_FAILED / E_REQ_FAILED; nsqgate keeps both to itself. A FIN of an id nobody
    // holds, sent after them, is refused by nsqd too and relayed: it is the first answer.
    app.send(&Command::Fin { id: forged }).await;
    app.send(&Command::Req {
        id: forged,
        timeout_ms: 0,
    })
    .await;
    let nobodys = MessageId(*b"0123456789abcdef");
    app.send(&Command::Fin { id: nobodys }).await;
    let answer = app.read_frame().await.expect("an answer");
    let text = frame_text(&answer);
    assert!(
        text.starts_with("E_FIN_FAILED") && text.contains("0123456789abcdef"),
        "{text}"
    );
    let late = app.read_frame_within(Duration::from_millis(300)).await;
    assert!(late.is_none(), "{:?}", late.map(|f| frame_text(&f)));
}
