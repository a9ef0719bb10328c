//! The TCP path end to end: stock clients → nsqgate → stock nsqd with TLS required, checked by
//! what the clients receive and what nsqd's /stats holds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};
use common::wire::{Command, FrameType};
use common::{run_tool, tool, Gate, GateConfig, Nsqd, Pki, MAX_MSG_SIZE};

/// to_nsq splits stdin on this byte; nsq_tail ends each body with '\n'. Bodies avoid both.
const DELIMITER: u8 = 0x1e;

fn tls_opts(flag: &str, pki: &Pki) -> Vec<String> {
    vec![
        format!("--{flag}=tls_v1,true"),
        format!("--{flag}=tls_root_ca_file,{}", pki.path("ca.pem").display()),
    ]
}

/// 10,000 bodies of mixed sizes: text, binary (every byte value but the two separators),
/// one exactly at the message size limit.
fn mixed_bodies() -> Vec<Vec<u8>> {
    let binary: Vec<u8> = (0..=255u8)
        .filter(|b| *b != b'\n' && *b != DELIMITER)
        .collect();
    (0..9_999usize)
        .map(|i| match i % 10 {
            0 => {
                let mut body = binary.clone();
                body.extend_from_slice(i.to_string().as_bytes());
                body
            }
            1 => format!("{i:06}-").into_bytes().repeat(1 + i % 700),
            _ => format!("message {i}").into_bytes(),
        })
        .chain(std::iter::once({
            let mut body = b"limit-".to_vec();
            body.resize(MAX_MSG_SIZE, b'x');
            body
        }))
        .collect()
}

fn publish_with_to_nsq(
    addr: std::net::SocketAddr,
    topic: &str,
    pki: &Pki,
    bodies: &[Vec<u8>],
) -> Duration {
    let mut stdin = Vec::new();
    for body in bodies {
        stdin.extend_from_slice(body);
        stdin.push(DELIMITER);
    }
    let mut args = vec![
        format!("--topic={topic}"),
        format!("--nsqd-tcp-address={addr}"),
        "--delimiter=\u{1e}".to_string(),
    ];
    args.extend(tls_opts("producer-opt", pki));
    let started = Instant::now();
    let (ok, _, stderr) = run_tool(&tool("to_nsq"), &args, &stdin, Duration::from_secs(300));
    assert!(ok, "to_nsq failed: {stderr}");
    started.elapsed()
}

#[test]
fn stock_tools_round_trip_10k_mixed_messages_through_nsqgate() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let bodies = mixed_bodies();
    assert_eq!(bodies.len(), 10_000);

    let through = publish_with_to_nsq(gate.addr, "roundtrip", &pki, &bodies);
    assert_eq!(nsqd.message_count("roundtrip"), bodies.len() as u64);

    // Same tool, same machine, same run, direct to nsqd with TLS: the reference figure.
    let direct = publish_with_to_nsq(nsqd.tcp, "direct", &pki, &bodies);
    eprintln!(
        "to_nsq 10,000 messages: through nsqgate {:.0} msg/s ({through:?}), direct TLS {:.0} msg/s ({direct:?})",
        bodies.len() as f64 / through.as_secs_f64(),
        bodies.len() as f64 / direct.as_secs_f64()
    );

    let mut args = vec![
        "--topic=roundtrip".to_string(),
        "--channel=tail".to_string(),
        format!("--nsqd-tcp-address={}", gate.addr),
        format!("-n={}", bodies.len()),
    ];
    args.extend(tls_opts("consumer-opt", &pki));
    let (ok, stdout, stderr) = run_tool(&tool("nsq_tail"), &args, b"", Duration::from_secs(120));
    assert!(ok, "nsq_tail failed: {stderr}");
    let mut received: HashMap<&[u8], usize> = HashMap::new();
    for line in stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        *received.entry(line).or_default() += 1;
    }
    let mut expected: HashMap<&[u8], usize> = HashMap::new();
    for body in &bodies {
        *expected.entry(body.as_slice()).or_default() += 1;
    }
    assert_eq!(received.len(), expected.len(), "distinct bodies differ");
    assert!(
        received == expected,
        "received bodies differ from the published ones"
    );
    assert_eq!(nsqd.message_count("roundtrip"), bodies.len() as u64);
}

#[tokio::test]
async fn client_without_tls_is_refused_and_nothing_reaches_nsqd() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);

    // IDENTIFY that does not ask for TLS.
    let mut client = RawClient::plain(gate.addr).await;
    client
        .send(&Command::Identify {
            body: br#"{"feature_negotiation":true}"#.to_vec().into(),
        })
        .await;
    let frame = client.read_frame().await.expect("an error frame");
    assert_eq!(frame.frame_type, FrameType::Error);
    assert!(
        frame_text(&frame).starts_with("E_INVALID TLS is required"),
        "{}",
        frame_text(&frame)
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);

    // A publish with no IDENTIFY at all.
    let mut client = RawClient::plain(gate.addr).await;
    let frame = client
        .publish("plain", b"hello")
        .await
        .expect("an error frame");
    assert!(
        frame_text(&frame).starts_with("E_INVALID"),
        "{}",
        frame_text(&frame)
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);

    assert!(!nsqd.topic_exists("plain"));
    let clients: usize = nsqd.stats()["topics"].as_array().map_or(0, |t| t.len());
    assert_eq!(clients, 0, "nsqd should hold nothing");
}

#[tokio::test]
async fn tls_from_the_first_byte_works() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut client = RawClient::tls_first(gate.addr, &connector).await;
    client
        .send(&Command::Identify {
            body: br#"{"feature_negotiation":true,"tls_v1":true}"#.to_vec().into(),
        })
        .await;
    let reply = client.read_frame().await.expect("IDENTIFY reply");
    let json: serde_json::Value = serde_json::from_slice(&reply.data).expect("JSON");
    // Already encrypted: no second, in-band upgrade.
    assert_eq!(json["tls_v1"], false);
    let ok = client
        .publish("first-byte", b"\x00\x01binary\xff")
        .await
        .expect("reply");
    assert_eq!(&ok.data[..], b"OK");
    assert_eq!(nsqd.message_count("first-byte"), 1);
}

#[tokio::test]
async fn in_band_upgrade_relays_identify_settings_and_messages_byte_for_byte() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut producer, reply) = RawClient::upgraded(
        gate.addr,
        &connector,
        serde_json::json!({"client_id": "prod-1", "msg_timeout": 30000}),
    )
    .await;
    // Compression is tests/compression.rs's: not asked for here, so not given.
    assert_eq!(reply["snappy"], false, "{reply}");
    assert_eq!(
        reply["msg_timeout"], 30000,
        "nsqd saw the client's msg_timeout: {reply}"
    );
    assert!(reply["max_rdy_count"].as_u64().is_some(), "{reply}");

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    // Pipelined publishes: each OK is nsqd's, in order.
    producer
        .send(&Command::Mpub {
            topic: "bytes".into(),
            messages: vec![all_bytes.clone().into(), b"second".to_vec().into()],
        })
        .await;
    producer
        .send(&Command::Dpub {
            topic: "bytes".into(),
            defer_ms: 0,
            body: b"third".to_vec().into(),
        })
        .await;
    for _ in 0..2 {
        let ok = producer.read_frame().await.expect("OK");
        assert_eq!(&ok.data[..], b"OK");
    }

    let (mut consumer, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(consumer.sub("bytes", "c").await, "SUB");
    consumer.send(&Command::Rdy { count: 10 }).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let frame = consumer.read_frame().await.expect("message");
        let message = frame.message().expect("message frame");
        consumer.send(&Command::Fin { id: message.id }).await;
        bodies.push(message.body.to_vec());
    }
    bodies.sort();
    let mut expected = vec![all_bytes, b"second".to_vec(), b"third".to_vec()];
    expected.sort();
    assert_eq!(bodies, expected);
    consumer.send(&Command::Cls).await;
    assert_eq!(
        &consumer.read_frame().await.expect("CLOSE_WAIT").data[..],
        b"CLOSE_WAIT"
    );
}

#[tokio::test]
async fn upstream_with_an_untrusted_or_misnamed_certificate_is_refused() {
    let pki = Pki::new();
    // Another CA's certificate, for the names nsqgate expects.
    let rogue_ca = nsqgate::certs::DevCa::generate("rogue CA").expect("CA");
    let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    pki.write(
        "rogue",
        &rogue_ca.issue_server("nsqd", &hosts).expect("cert"),
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let rogue = Nsqd::start_with(&pki, "rogue", &[]);
    let honest = Nsqd::start(&pki);
    let cases = [
        (Gate::start(&pki, &rogue), &rogue, "another CA"),
        (
            Gate::start_with(
                &pki,
                &honest,
                "nsqd.example.org",
                "ca.pem",
                common::ANONYMOUS,
            ),
            &honest,
            "another name",
        ),
    ];
    for (gate, nsqd, case) in &cases {
        let mut client = RawClient::plain(gate.addr).await;
        client
            .send(&Command::Identify {
                body: br#"{"feature_negotiation":true,"tls_v1":true}"#.to_vec().into(),
            })
            .await;
        let frame = client.read_frame().await.expect("an error frame");
        assert_eq!(frame.frame_type, FrameType::Error, "{case}");
        assert!(
            frame_text(&frame).starts_with("E_IDENTIFY_FAILED"),
            "{case}: {}",
            frame_text(&frame)
        );
        assert!(client.closed_within(Duration::from_secs(5)).await, "{case}");
        let stats = nsqd.stats();
        assert_eq!(
            stats["topics"].as_array().map_or(0, |t| t.len()),
            0,
            "{case}"
        );
    }
    // The same client through a correctly configured gate works, so the refusals were the
    // certificate checks and nothing else.
    let gate = Gate::start(&pki, &honest);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(client.publish("honest", b"x").await, "PUB");
}

#[tokio::test]
async fn oversized_frame_is_refused_before_its_body_is_read() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    // Declares 2 GiB - 1 and sends no body: the error must come without waiting for it.
    let mut frame = b"PUB big\n".to_vec();
    frame.extend_from_slice(&(i32::MAX as u32).to_be_bytes());
    client.send_raw(&frame).await;
    let reply = client
        .read_frame_within(Duration::from_secs(5))
        .await
        .expect("an error frame, at once");
    assert_eq!(reply.frame_type, FrameType::Error);
    assert!(
        frame_text(&reply).starts_with("E_BAD_MESSAGE"),
        "{}",
        frame_text(&reply)
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!nsqd.topic_exists("big"));
}

#[tokio::test]
async fn killing_nsqd_mid_publish_loses_no_acknowledged_message() {
    let pki = Pki::new();
    // nsqd is stopped with SIGTERM, which persists its queues; a SIGKILL would also lose what
    // nsqd itself had acknowledged but not yet synced, which no proxy can help.
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut producer, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;

    // Publish in pipelined batches while another thread kills nsqd underneath.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let killer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            while acked.load(std::sync::atomic::Ordering::SeqCst) < 300 {
                std::thread::sleep(Duration::from_millis(1));
            }
            nsqd.into_data()
        })
    };
    let mut sent = 0u64;
    let mut acked_bodies = std::collections::BTreeSet::new();
    'publishing: while sent < 100_000 {
        let batch = sent..sent + 8;
        for n in batch.clone() {
            producer
                .send(&Command::Pub {
                    topic: "durable".into(),
                    body: format!("m{n}").into_bytes().into(),
                })
                .await;
        }
        sent += 8;
        for n in batch {
            match producer.read_frame_within(Duration::from_secs(5)).await {
                Some(frame) => {
                    assert_eq!(&frame.data[..], b"OK", "{}", frame_text(&frame));
                    acked_bodies.insert(format!("m{n}"));
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                None => break 'publishing,
            }
        }
    }
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 100_000, "the producer must see the connection end");
    let data = killer.join().expect("killer thread");
    let restarted = Nsqd::start_in(&pki, "nsqd", &[], data);
    let depth = restarted
        .topic("durable")
        .and_then(|t| t["depth"].as_u64())
        .expect("topic survives");
    assert!(acked <= depth, "acked {acked} but nsqd holds {depth}");
    assert!(depth <= sent, "nsqd holds {depth} of {sent} sent");
    // Which ones: every acknowledged body, read back from nsqd itself.
    let (mut consumer, _) =
        RawClient::upgraded(restarted.tcp, &connector, serde_json::json!({})).await;
    assert_ok(consumer.sub("durable", "check").await, "SUB");
    consumer.send(&Command::Rdy { count: 1000 }).await;
    let mut held = std::collections::BTreeSet::new();
    while !acked_bodies.is_subset(&held) {
        let Some(frame) = consumer.read_frame_within(Duration::from_secs(10)).await else {
            break;
        };
        let message = frame.message().expect("a message");
        consumer.send(&Command::Fin { id: message.id }).await;
        held.insert(String::from_utf8_lossy(&message.body).into_owned());
    }
    let lost: Vec<_> = acked_bodies.difference(&held).collect();
    assert!(lost.is_empty(), "acknowledged but not in nsqd: {lost:?}");
    eprintln!("sent {sent}, acked {acked}, nsqd holds {depth}, every acknowledged body read back");
}

#[tokio::test]
async fn heartbeats_pass_through_and_nop_keeps_the_connection() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, reply) = RawClient::upgraded(
        gate.addr,
        &connector,
        serde_json::json!({"heartbeat_interval": 1000}),
    )
    .await;
    assert!(reply["max_rdy_count"].is_number(), "{reply}");
    // read_frame answers each heartbeat with NOP itself; count them on the raw stream instead.
    let mut heartbeats = 0;
    let started = std::time::Instant::now();
    while heartbeats < 3 {
        let frame = client
            .read_raw_frame_within(Duration::from_secs(5))
            .await
            .expect("a heartbeat from nsqd, through nsqgate");
        assert!(frame.is_heartbeat(), "{}", frame_text(&frame));
        heartbeats += 1;
        client.send(&Command::Nop).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Still alive after three heartbeat rounds.
    assert_ok(client.publish("alive", b"x").await, "PUB");
}

#[tokio::test]
async fn upstream_client_certificate_for_an_nsqd_that_requires_one() {
    let pki = Pki::new();
    pki.issue_client(
        "gate-client",
        &nsqgate::certs::ClientSubject {
            common_name: "nsqgate".into(),
            ..Default::default()
        },
    );
    let ca = pki.path("ca.pem").display().to_string();
    let nsqd = Nsqd::start_with(
        &pki,
        "nsqd",
        &[
            "--tls-client-auth-policy=require-verify",
            &format!("--tls-root-ca-file={ca}"),
        ],
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // Without a client certificate nsqd refuses the upstream handshake.
    let without = Gate::start(&pki, &nsqd);
    assert_identify_fails(without.addr).await;

    // With upstream.tls_cert/tls_key it works.
    let with = GateConfig::anonymous(nsqd.tcp)
        .upstream("tls_cert = \"gate-client.pem\"\ntls_key = \"gate-client.key\"")
        .start(&pki);
    let (mut client, _) = RawClient::upgraded(with.addr, &connector, serde_json::json!({})).await;
    assert_ok(client.publish("mutual", b"x").await, "PUB");
    assert_eq!(nsqd.message_count("mutual"), 1);
}

/// A stand-in for an nsqd auth server (nsqd's `--auth-http-address`): grants everything to the
/// one secret it knows and records every secret it is asked about.
fn auth_server(
    secret: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let presented = request_line
                .split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix("secret="))
                .unwrap_or("")
                .to_owned();
            record.lock().unwrap().push(presented.clone());
            let (status, body) = if presented == secret {
                (
                    "200 OK",
                    r#"{"ttl":3600,"identity":"nsqgate","identity_url":"","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe","publish"]}]}"#,
                )
            } else {
                ("403 Forbidden", r#"{"message":"NOT_AUTHORIZED"}"#)
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn nsqgate_authenticates_to_an_nsqd_that_requires_auth() {
    let pki = Pki::new();
    let (auth, seen) = auth_server("gate-secret");
    let nsqd = Nsqd::start_with(&pki, "nsqd", &[&format!("--auth-http-address={auth}")]);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // No upstream secret configured: nsqgate refuses rather than run unauthenticated.
    let without = Gate::start(&pki, &nsqd);
    assert_identify_fails(without.addr).await;

    // The config holds a secret: GateConfig writes it 0600, as nsqgate demands.
    let with = GateConfig::anonymous(nsqd.tcp)
        .upstream("auth_secret = \"gate-secret\"")
        .start(&pki);
    let (mut client, reply) =
        RawClient::upgraded(with.addr, &connector, serde_json::json!({})).await;
    // The client leg needs no AUTH of its own here (require_identity is off in this config).
    assert_eq!(reply["auth_required"], false);
    let ok = client.publish("authed", b"x").await.expect("OK");
    assert_eq!(&ok.data[..], b"OK", "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("authed"), 1);
    assert!(seen.lock().unwrap().iter().any(|s| s == "gate-secret"));
}

#[tokio::test]
async fn garbage_gets_errors_or_closes_and_never_takes_nsqgate_down() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    // A small deterministic generator: the same garbage on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..60 {
        let mut bytes: Vec<u8> = (0..(next() % 4096) as usize)
            .map(|_| next() as u8)
            .collect();
        let mut client = if round % 3 == 0 {
            // Raw garbage, no magic.
            RawClient::plain_without_magic(gate.addr).await
        } else if round % 3 == 1 {
            // The magic, then garbage.
            RawClient::plain(gate.addr).await
        } else {
            // A valid TLS session, then garbage where commands belong.
            let (client, _) =
                RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
            // Start with something command-like half the time.
            if round % 2 == 0 {
                let mut line = b"PUB x\n".to_vec();
                line.append(&mut bytes);
                bytes = line;
            }
            client
        };
        client.send_raw(&bytes).await;
        // Read what comes back (an error frame, a close, or nothing yet for a frame that is
        // still incomplete, which the partial-frame deadline ends later).
        while let Some(frame) = client
            .read_raw_frame_within(Duration::from_millis(500))
            .await
        {
            if frame.frame_type == FrameType::Error {
                break;
            }
        }
    }
    // nsqgate is still serving.
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(client.publish("after-garbage", b"x").await, "PUB");
}

/// A client asking for TLS gets E_IDENTIFY_FAILED: nsqgate could not open its upstream leg.
async fn assert_identify_fails(addr: std::net::SocketAddr) {
    let mut client = RawClient::plain(addr).await;
    client
        .send(&Command::Identify {
            body: br#"{"feature_negotiation":true,"tls_v1":true}"#.to_vec().into(),
        })
        .await;
    let frame = client.read_frame().await.expect("an error frame");
    assert!(
        frame_text(&frame).starts_with("E_IDENTIFY_FAILED"),
        "{}",
        frame_text(&frame)
    );
}

/// The client's ticket store, counting the tickets the server sends and the ones offered back.
#[derive(Debug)]
struct CountedTickets {
    inner: Arc<dyn ClientSessionStore>,
    received: AtomicUsize,
}

impl ClientSessionStore for CountedTickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// TLS 1.3 from the first byte, then IDENTIFY and its reply (the tickets come before it).
async fn identified_over_tls(addr: SocketAddr, connector: &TlsConnector) -> HandshakeKind {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let mut out = b"  V2".to_vec();
    out.extend_from_slice(
        &Command::Identify {
            body: b"{}".to_vec().into(),
        }
        .to_bytes(),
    );
    tls.write_all(&out).await.expect("IDENTIFY");
    let mut reply = [0u8; 64];
    assert!(tls.read(&mut reply).await.expect("IDENTIFY reply") > 0);
    kind
}

/// One resumption ticket per connection, as nsqd (Go) sends, and a client resumes with it.
#[tokio::test]
async fn a_tls13_client_gets_one_ticket_per_connection_and_resumes_with_it() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let tickets = Arc::new(CountedTickets {
        inner: Arc::new(ClientSessionMemoryCache::new(16)),
        received: AtomicUsize::new(0),
    });
    let roots = common::nsqclient::ca_roots(&pki.path("ca.pem"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::store(tickets.clone());
    let connector = TlsConnector::from(Arc::new(config));

    let first = identified_over_tls(gate.addr, &connector).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(tickets.received.load(Ordering::Relaxed), 1);
    let second = identified_over_tls(gate.addr, &connector).await;
    assert_eq!(second, HandshakeKind::Resumed);
    assert_eq!(tickets.received.load(Ordering::Relaxed), 2);
}
