//! README claims that had no test: MPUB and DPUB under the policy and the rate limits, the
//! PROXY protocol's trust boundary and the per-IP cap it feeds, and `NSQGATE_<SECTION>__<KEY>`
//! overrides (`tests/config_example.rs` holds the example-file claim). Real nsqd behind the
//! real nsqgate binary; the publishing clients write their own command bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{dpub_bytes, mpub_bytes, pub_bytes, Frame, FrameType};
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Two API keys holding one role that may publish to `allowed` only, at most
/// `messages_per_sec` (burst 4) per identity when `limited`.
fn publisher_policy(pki: &Pki, limited: bool) -> (String, String) {
    let (first, second) = (apikey::generate(), apikey::generate());
    let rate = if limited {
        "rate = { messages_per_sec = 1, burst_messages = 4 }"
    } else {
        ""
    };
    let policy = format!(
        r#"
[roles.publisher]
allow = [{{ action = "publish", topics = ["allowed"] }}]
{rate}

[api_keys.first]
sha256 = "{}"
roles = ["publisher"]

[api_keys.second]
sha256 = "{}"
roles = ["publisher"]
"#,
        common::key_sha256(first.as_bytes()),
        common::key_sha256(second.as_bytes()),
    );
    pki.write_policy("claims", "claims.toml", &policy);
    (first, second)
}

fn keyed_gate(pki: &Pki, nsqd: &Nsqd, extra: &str) -> Gate {
    GateConfig::new(nsqd.tcp)
        .policy("claims")
        .table(extra)
        .start(pki)
}

async fn authed(addr: SocketAddr, connector: &TlsConnector, key: &str) -> RawClient {
    RawClient::authenticated(addr, connector, key).await
}

async fn exchange(client: &mut RawClient, wire: &[u8]) -> Frame {
    client.send_raw(wire).await;
    client.read_frame().await.expect("a reply")
}

fn is_ok(frame: &Frame) -> bool {
    frame.frame_type == FrameType::Response && &frame.data[..] == b"OK"
}

#[tokio::test]
async fn mpub_and_dpub_to_a_denied_topic_are_refused_and_never_reach_nsqd() {
    let pki = Pki::new();
    let (key, _) = publisher_policy(&pki, false);
    let nsqd = Nsqd::start(&pki);
    let gate = keyed_gate(&pki, &nsqd, "");
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // The same connection and commands reach nsqd where the policy allows them.
    let mut client = authed(gate.addr, &connector, &key).await;
    let ok = exchange(&mut client, &mpub_bytes("allowed", &[b"a", b"b", b"c"])).await;
    assert!(is_ok(&ok), "{}", frame_text(&ok));
    let ok = exchange(&mut client, &dpub_bytes("allowed", 1000, b"d")).await;
    assert!(is_ok(&ok), "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("allowed"), 4);

    let denied: [(&str, Vec<u8>); 2] = [
        ("MPUB", mpub_bytes("denied", &[b"x", b"y"])),
        ("DPUB", dpub_bytes("denied", 1000, b"z")),
    ];
    for (name, wire) in denied {
        let mut client = authed(gate.addr, &connector, &key).await;
        let refusal = exchange(&mut client, &wire).await;
        let text = frame_text(&refusal);
        assert_eq!(refusal.frame_type, FrameType::Error, "{name}: {text}");
        assert!(
            text.starts_with(&format!(
                "E_UNAUTHORIZED AUTH failed for {name} on \"denied\""
            )),
            "{name}: {text}"
        );
        assert!(
            client.closed_within(Duration::from_secs(10)).await,
            "{name}: the refusal is fatal, as nsqd's"
        );
    }
    assert!(
        !nsqd.topic_exists("denied"),
        "nsqd never saw the topic: {}",
        nsqd.stats()
    );
    assert_eq!(nsqd.message_count("allowed"), 4);
}

/// Sends `wire` until nsqgate refuses it (at most `tries` times); (OKs before, the refusal).
async fn until_refused(client: &mut RawClient, wire: &[u8], tries: u64) -> (u64, String) {
    for acked in 0..tries {
        let frame = exchange(client, wire).await;
        if !is_ok(&frame) {
            return (acked, frame_text(&frame));
        }
    }
    panic!("{tries} publishes at 1 msg/s (burst 4) and none refused");
}

#[tokio::test]
async fn rate_limited_mpub_and_dpub_fail_with_nsqds_codes() {
    let pki = Pki::new();
    let (mpub_key, dpub_key) = publisher_policy(&pki, true);
    let nsqd = Nsqd::start(&pki);
    let gate = keyed_gate(&pki, &nsqd, "[rate_limits]\non_limit = \"reject\"\n");
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // MPUB of 4 takes the whole burst; the next one needs 4 s of refill, so it is refused.
    let mut client = authed(gate.addr, &connector, &mpub_key).await;
    let batch: [&[u8]; 4] = [b"1", b"2", b"3", b"4"];
    let (mpubs, refusal) = until_refused(&mut client, &mpub_bytes("allowed", &batch), 5).await;
    assert!(
        refusal.starts_with("E_MPUB_FAILED MPUB failed: rate limit exceeded"),
        "{refusal}"
    );
    assert!(client.closed_within(Duration::from_secs(10)).await);
    assert!(mpubs >= 1, "the first MPUB fits the burst");
    assert_eq!(nsqd.message_count("allowed"), 4 * mpubs);

    // Another identity, its own bucket: DPUBs until the burst is gone.
    let mut client = authed(gate.addr, &connector, &dpub_key).await;
    let (dpubs, refusal) = until_refused(&mut client, &dpub_bytes("allowed", 1000, b"d"), 20).await;
    assert!(
        refusal.starts_with("E_DPUB_FAILED DPUB failed: rate limit exceeded"),
        "{refusal}"
    );
    assert!(client.closed_within(Duration::from_secs(10)).await);
    assert!(dpubs >= 4, "{dpubs}: the burst, then refused");
    assert_eq!(nsqd.message_count("allowed"), 4 * mpubs + dpubs);
}

/// A PROXY v1 header naming `client` as the source of a connection to `port`.
fn proxy_header(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n").into_bytes()
}

/// Plain TCP: `bytes` sent, then whatever nsqgate answers until it closes (None: still open
/// after 10 s).
async fn answer_until_close(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    match read {
        Ok(_) => Some(answer),
        Err(_) => None,
    }
}

/// Polls nsqgate's log until it holds `text` (60 s at most).
async fn wait_log(gate: &Gate, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !gate.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_gate(pki: &Pki, nsqd: &Nsqd, connections: &str) -> Gate {
    GateConfig::anonymous(nsqd.tcp)
        .table(&format!("[connections]\n{connections}"))
        .start(pki)
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_source_is_not_believed() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    // Only 192.0.2.1 is a trusted balancer; the test connects from 127.0.0.1. A cap of two:
    // the harness's own readiness probe may still hold a slot at the first connection.
    let gate = open_gate(
        &pki,
        &nsqd,
        "max_per_ip = 2\nproxy_protocol_from = [\"192.0.2.1\"]",
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut forged = proxy_header("198.51.100.7", gate.addr.port());
    forged.extend_from_slice(b"  V2");

    // Not read as a header: its bytes are where the magic should be, so the connection is
    // refused as nsqd refuses a bad magic.
    let answer = answer_until_close(gate.addr, &forged)
        .await
        .expect("closed after the refusal");
    let mut buf = bytes::BytesMut::from(&answer[..]);
    let frame = common::wire::decode_frame(&mut buf, 1 << 20)
        .unwrap()
        .expect("an error frame");
    assert_eq!(frame_text(&frame), "E_BAD_PROTOCOL");

    // That connection's slot is free once its session has ended (after a linger).
    wait_log(&gate, "error=E_BAD_PROTOCOL").await;

    // The per-IP cap counts the real peer: with two connections from 127.0.0.1 open, a header
    // naming another address does not get a third slot.
    let (mut held, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let (_also_held, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let answer = answer_until_close(gate.addr, &forged)
        .await
        .expect("closed at once");
    assert!(answer.is_empty(), "refused before any reply: {answer:?}");
    let ok = held.publish("untrusted", b"x").await.expect("a reply");
    assert!(is_ok(&ok), "{}", frame_text(&ok));

    assert!(
        !gate.log().contains("198.51.100.7"),
        "the forged address appears nowhere: {}",
        gate.log()
    );
}

#[tokio::test]
async fn the_per_ip_cap_counts_the_address_a_trusted_header_names() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = open_gate(
        &pki,
        &nsqd,
        "max_per_ip = 1\nproxy_protocol_from = [\"127.0.0.1\"]",
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let port = gate.addr.port();
    let json = serde_json::json!({});

    let (mut first, _) = RawClient::upgraded_after(
        gate.addr,
        &proxy_header("192.0.2.10", port),
        &connector,
        json.clone(),
    )
    .await;
    let ok = first.publish("behind-lb", b"1").await.expect("a reply");
    assert!(is_ok(&ok), "{}", frame_text(&ok));

    // The same real client again: over its cap of one, closed before any reply.
    let mut again = proxy_header("192.0.2.10", port);
    again.extend_from_slice(b"  V2");
    let answer = answer_until_close(gate.addr, &again)
        .await
        .expect("closed at once");
    assert!(answer.is_empty(), "refused before any reply: {answer:?}");

    // Another real client behind the same balancer (same peer address) has its own slot.
    let (mut second, _) = RawClient::upgraded_after(
        gate.addr,
        &proxy_header("192.0.2.11", port),
        &connector,
        json,
    )
    .await;
    let ok = second.publish("behind-lb", b"2").await.expect("a reply");
    assert!(is_ok(&ok), "{}", frame_text(&ok));
    let ok = first.publish("behind-lb", b"3").await.expect("a reply");
    assert!(is_ok(&ok), "{}", frame_text(&ok));
    assert_eq!(nsqd.message_count("behind-lb"), 3);
}

#[tokio::test]
async fn an_environment_override_replaces_the_files_value() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki); // nsqd's own limit: 1 MiB
                                  // The file says 1 MiB; the environment says 1 KiB.
    let gate = GateConfig::anonymous(nsqd.tcp)
        .table("[limits]\nmax_msg_size = 1048576")
        .start_env(&pki, &[("NSQGATE_LIMITS__MAX_MSG_SIZE", "1024")]);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let ok = exchange(&mut client, &pub_bytes("sized", &[b'a'; 1024])).await;
    assert!(is_ok(&ok), "{}", frame_text(&ok));
    // Far below nsqd's limit, so only nsqgate can refuse it, with nsqd's code and text.
    let refusal = exchange(&mut client, &pub_bytes("sized", &[b'b'; 2000])).await;
    assert_eq!(
        frame_text(&refusal),
        "E_BAD_MESSAGE PUB message too big 2000 > 1024"
    );
    assert!(client.closed_within(Duration::from_secs(10)).await);
    assert_eq!(nsqd.message_count("sized"), 1);
}

#[test]
fn a_bad_environment_override_is_a_config_error_naming_the_key() {
    let pki = Pki::new();
    let path = pki.path("env.toml");
    GateConfig::new("127.0.0.1:4150".parse().unwrap()).write(&path);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("NSQGATE_LIMITS__MAX_MSG_SIZE", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("limits.max_msg_size") && stderr.contains("environment"),
        "names the key and where its value came from: {stderr}"
    );
}
