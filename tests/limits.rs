//! Flood and exhaustion defences end to end: rate limits (delay and reject), size limits,
//! connection caps, PROXY protocol, timeouts, and thousands of idle connections, checked
//! against what nsqd holds and what nsqgate's process uses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};
use common::wire::{Command, FrameType};
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Two API-key identities: `slow` holds a role limited to 200 msg/s (burst 200) and 100 KiB/s
/// for the `bulk` topic; `fast` holds a generous role.
struct Keys {
    slow: String,
    fast: String,
}

fn limited_policy(pki: &Pki) -> Keys {
    let keys = Keys {
        slow: apikey::generate(),
        fast: apikey::generate(),
    };
    let policy = format!(
        r#"
[roles.slow]
allow = [{{ action = "publish", topics = ["*"] }}]
rate = {{ messages_per_sec = 200, burst_messages = 200 }}
topic_rate = {{ bytes_per_sec = 102400, burst_bytes = 102400 }}

[roles.fast]
allow = [{{ action = "publish", topics = ["*"] }}]
rate = {{ messages_per_sec = 100000 }}

[api_keys.slow-producer]
sha256 = "{}"
roles = ["slow"]

[api_keys.fast-producer]
sha256 = "{}"
roles = ["fast"]
"#,
        common::key_sha256(keys.slow.as_bytes()),
        common::key_sha256(keys.fast.as_bytes()),
    );
    pki.write_policy("limited", "limited.toml", &policy);
    keys
}

/// A gate with the `limited` policy and `extra` tables.
fn keyed_gate(pki: &Pki, nsqd: &Nsqd, extra: &str) -> Gate {
    GateConfig::new(nsqd.tcp)
        .policy("limited")
        .table(extra)
        .start(pki)
}

/// A gate where anyone may do anything (no identity needed): for tests of transport limits.
fn open_gate(pki: &Pki, nsqd: &Nsqd, extra: &str) -> Gate {
    GateConfig::anonymous(nsqd.tcp).table(extra).start(pki)
}

async fn authed(addr: SocketAddr, connector: &TlsConnector, key: &str) -> RawClient {
    RawClient::authenticated(addr, connector, key).await
}

/// Publishes `body` as fast as the connection allows (32 in flight) for `run`, then waits for
/// every owed reply. Returns (acked, the first error frame text if any, time of the last OK).
async fn flood(
    client: &mut RawClient,
    topic: &str,
    body: &[u8],
    run: Duration,
) -> (u64, Option<String>, Duration) {
    let started = Instant::now();
    let mut in_flight = 0u64;
    let mut acked = 0u64;
    let mut last_ok = Duration::ZERO;
    while started.elapsed() < run || in_flight > 0 {
        while in_flight < 32 && started.elapsed() < run {
            client
                .send(&Command::Pub {
                    topic: topic.into(),
                    body: body.to_vec().into(),
                })
                .await;
            in_flight += 1;
        }
        match client.read_frame_within(Duration::from_secs(15)).await {
            Some(frame) if frame.frame_type == FrameType::Response => {
                acked += 1;
                in_flight -= 1;
                last_ok = started.elapsed();
            }
            Some(frame) => return (acked, Some(frame_text(&frame)), last_ok),
            None => return (acked, None, last_ok),
        }
    }
    (acked, None, last_ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_mode_holds_a_producer_to_its_rate_and_leaves_others_alone() {
    let pki = Pki::new();
    let keys = limited_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let gate = keyed_gate(&pki, &nsqd, "");
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut slow = authed(gate.addr, &connector, &keys.slow).await;
    let mut fast = authed(gate.addr, &connector, &keys.fast).await;
    let run = Duration::from_secs(5);
    let ((slow_acked, slow_err, slow_last), (fast_acked, fast_err, fast_last)) = tokio::join!(
        flood(&mut slow, "slow-topic", b"x", run),
        flood(&mut fast, "fast-topic", b"x", run),
    );
    assert_eq!(slow_err, None, "delay mode slows, it does not fail");
    assert_eq!(fast_err, None);
    // Upper bound only (stable on a busy machine): rate x time + burst.
    // +1: the bucket refills continuously, so one token may land exactly at the end.
    let bound = (200.0 * slow_last.as_secs_f64()).ceil() as u64 + 200 + 1;
    let in_nsqd = nsqd.message_count("slow-topic");
    eprintln!(
        "slow: {slow_acked} acked in {slow_last:?} (bound {bound}); fast: {fast_acked} acked in {fast_last:?}"
    );
    assert_eq!(in_nsqd, slow_acked, "every OK is in nsqd, nothing else");
    assert!(in_nsqd <= bound, "{in_nsqd} > {bound}");
    assert!(
        slow_acked >= 400,
        "the slow producer still makes progress: {slow_acked}"
    );
    // The other identity is not held to the first one's budget.
    assert_eq!(nsqd.message_count("fast-topic"), fast_acked);
    assert!(
        fast_acked > bound,
        "fast producer got {fast_acked}, not more than the slow bound"
    );
}

#[tokio::test]
async fn bytes_per_second_limit_with_large_messages() {
    let pki = Pki::new();
    let keys = limited_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let gate = keyed_gate(&pki, &nsqd, "");
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut client = authed(gate.addr, &connector, &keys.slow).await;
    let body = vec![b'b'; 10 * 1024];
    let (acked, err, last) = flood(&mut client, "bulk", &body, Duration::from_secs(3)).await;
    assert_eq!(err, None);
    let bound =
        ((102_400.0 * last.as_secs_f64()).ceil() as u64 + 102_400).div_ceil(body.len() as u64);
    eprintln!("bytes: {acked} x 10 KiB acked in {last:?} (bound {bound})");
    assert_eq!(nsqd.message_count("bulk"), acked);
    assert!(acked <= bound, "{acked} > {bound}");
    assert!(acked >= 15, "{acked}");
}

#[tokio::test]
async fn reject_mode_fails_the_publish_with_nsqds_code() {
    let pki = Pki::new();
    let keys = limited_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let extra = "[rate_limits]\non_limit = \"reject\"\n";
    let gate = keyed_gate(&pki, &nsqd, extra);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut client = authed(gate.addr, &connector, &keys.slow).await;
    let (acked, err, _) = flood(&mut client, "rejected", b"x", Duration::from_secs(2)).await;
    let err = err.expect("an error frame once over the limit");
    assert!(
        err.starts_with("E_PUB_FAILED PUB failed: rate limit exceeded"),
        "{err}"
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(
        (200..=260).contains(&acked),
        "{acked}: about the burst, then refused"
    );
    assert_eq!(nsqd.message_count("rejected"), acked);
    let denied = gate.audit_events().into_iter().any(|e| {
        e["outcome"] == "deny" && e["reason"].as_str().unwrap_or("").contains("rate limit")
    });
    assert!(denied, "the refusal is audited");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_frame_declaring_a_gibibyte_costs_nothing() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    // Warm up the process (first connection, TLS state) before the baseline.
    let (mut warm, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(warm.publish("warm", b"x").await, "PUB");
    let before = rss_kib(gate.pid());

    for (line, code) in [
        ("PUB huge\n", "E_BAD_MESSAGE"),
        ("MPUB huge\n", "E_BAD_BODY"),
    ] {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        let mut frame = line.as_bytes().to_vec();
        frame.extend_from_slice(&(1u32 << 30).to_be_bytes());
        frame.extend_from_slice(&[0u8; 4096]); // the start of a body that never ends
        client.send_raw(&frame).await;
        let reply = client
            .read_frame_within(Duration::from_secs(5))
            .await
            .expect("refusal");
        assert!(
            frame_text(&reply).starts_with(code),
            "{}",
            frame_text(&reply)
        );
        assert!(client.closed_within(Duration::from_secs(5)).await);
    }
    let after = rss_kib(gate.pid());
    eprintln!("RSS before {before} KiB, after two 1 GiB declarations {after} KiB");
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(!nsqd.topic_exists("huge"));
}

#[tokio::test]
async fn per_ip_cap_refuses_the_next_connection_until_one_closes() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = open_gate(&pki, &nsqd, "[connections]\nmax_per_ip = 3\n");
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({}))
                .await
                .0,
        );
    }
    let mut refused = TcpStream::connect(gate.addr).await.unwrap();
    let _ = refused.write_all(b"  V2").await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the 4th connection is closed at once"
    );

    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut again, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(again.publish("cap", b"x").await, "PUB");
}

#[tokio::test]
async fn proxy_protocol_from_a_trusted_balancer_gives_the_real_address() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let extra = "[connections]\nmax_per_ip = 1\nproxy_protocol_from = [\"127.0.0.1\"]\n";
    let gate = open_gate(&pki, &nsqd, extra);
    let (addr, port) = (gate.addr, gate.addr.port());

    let connect_as = |client: &'static str| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let header = format!("PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n  V2");
        tcp.write_all(header.as_bytes()).await.unwrap();
        let identify = Command::Identify {
            body: br#"{"feature_negotiation":true}"#.to_vec().into(),
        };
        let mut out = bytes::BytesMut::new();
        identify.encode(&mut out);
        tcp.write_all(&out).await.unwrap();
        tcp
    };
    // Two clients behind the same balancer: distinct real addresses, so both pass a
    // one-per-IP cap (TLS is required, so each gets E_INVALID, which proves it was served).
    for client in ["192.0.2.10", "192.0.2.11"] {
        let mut tcp = connect_as(client).await;
        let mut reply = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&reply[..n]).contains("E_INVALID"),
            "served"
        );
    }
    let log = gate.log();
    assert!(log.contains("192.0.2.10"), "the log names the real client");
    let _ = gate;
}

#[tokio::test]
async fn silent_and_idle_clients_are_dropped() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let extra = "[timeouts]\ntls_handshake_ms = 500\nidentify_ms = 800\nidle_ms = 1000\n";
    let gate = open_gate(&pki, &nsqd, extra);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let started = Instant::now();
    let mut silent = TcpStream::connect(gate.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent client dropped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Heartbeats every second: a client that answers none of them is gone after two.
    let (mut idle, _) = RawClient::upgraded(
        gate.addr,
        &connector,
        serde_json::json!({"heartbeat_interval": 1000}),
    )
    .await;
    let started = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(8)).await,
        "idle client dropped"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );

    // Heartbeats disabled: the configured idle timeout (1 s here) applies.
    let (mut quiet, _) = RawClient::upgraded(
        gate.addr,
        &connector,
        serde_json::json!({"heartbeat_interval": -1}),
    )
    .await;
    let started = Instant::now();
    assert!(
        quiet.closed_within(Duration::from_secs(5)).await,
        "quiet client dropped"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections() {
    const CONNECTIONS: usize = 5_000;
    let pki = Pki::new();
    let nsqd = Nsqd::start_with(&pki, "nsqd", &["--max-rdy-count=2500"]);
    // Past the default caps (one address, one nsqd) on purpose: this measures the cost.
    let caps = "[connections]\nmax_total = 6000\nmax_per_ip = 6000\nmax_per_nsqd = 6000\n";
    let gate = open_gate(&pki, &nsqd, caps);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut first, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(first.publish("idle", b"x").await, "PUB");
    let before = rss_kib(gate.pid());

    let started = Instant::now();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    while clients.len() < CONNECTIONS {
        while pending.len() < 32 && next < CONNECTIONS {
            let connector = connector.clone();
            let addr = gate.addr;
            pending.spawn(async move {
                let mut client = RawClient::upgraded(addr, &connector, serde_json::json!({}))
                    .await
                    .0;
                // An idle subscriber: SUB is what makes nsqgate open its nsqd connection.
                assert_ok(client.sub("idle", "idle").await, "SUB");
                client
            });
            next += 1;
        }
        clients.push(pending.join_next().await.unwrap().unwrap());
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(gate.pid());
    let per_conn = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    eprintln!(
        "{CONNECTIONS} idle TLS connections (each with its own TLS upstream) opened in {opened:?}; nsqgate RSS {before} -> {after} KiB = {per_conn:.1} KiB per connection"
    );
    // Every one of them is live: nsqd holds an upstream connection for each.
    let nsqd_fds = std::fs::read_dir(format!("/proc/{}/fd", nsqd.pid()))
        .unwrap()
        .count();
    assert!(nsqd_fds >= CONNECTIONS, "nsqd holds {nsqd_fds} descriptors");
    let gate_fds = std::fs::read_dir(format!("/proc/{}/fd", gate.pid()))
        .unwrap()
        .count();
    assert!(
        gate_fds >= 2 * CONNECTIONS,
        "nsqgate holds {gate_fds} descriptors"
    );
    // And a new client still gets through.
    let (mut late, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    assert_ok(late.publish("idle", b"y").await, "PUB");
    drop(clients);
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_by_the_write_timeout() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let extra = "[timeouts]\nwrite_ms = 1000\n";
    let gate = open_gate(&pki, &nsqd, extra);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    // 32 MiB waiting in the topic: far more than the socket buffers between here and nsqgate.
    let (mut producer, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let body = vec![b'z'; 512 * 1024];
    for _ in 0..64 {
        assert_ok(producer.publish("flood", &body).await, "PUB");
    }
    let (mut consumer, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    consumer
        .send(&Command::Sub {
            topic: "flood".into(),
            channel: "stuck".into(),
        })
        .await;
    consumer.send(&Command::Rdy { count: 64 }).await;
    // The consumer now reads nothing. nsqgate's writes to it block, and after write_ms the
    // connection is given up: nsqd sees its client leave.
    let channel_clients = || {
        nsqd.topic("flood").and_then(|t| {
            t["channels"]
                .as_array()?
                .iter()
                .find(|c| c["channel_name"] == "stuck")
                .and_then(|c| c["clients"].as_array().map(Vec::len))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_connected = false;
    loop {
        match channel_clients() {
            Some(1) => seen_connected = true,
            Some(0) if seen_connected => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the stuck consumer was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reason is logged once the connection's linger ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gate.log().contains("peer stopped reading") {
        assert!(Instant::now() < deadline, "the reason is logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(consumer);
}

#[tokio::test]
async fn clients_that_have_not_authenticated_hold_no_nsqd_connection() {
    let pki = Pki::new();
    let keys = limited_policy(&pki);
    let nsqd = Nsqd::start(&pki);
    let gate = keyed_gate(&pki, &nsqd, "");
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let nsqd_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", nsqd.pid()))
            .unwrap()
            .count()
    };

    // The first unauthenticated client makes nsqgate learn nsqd's IDENTIFY defaults once.
    let mut waiting = vec![
        RawClient::upgraded(gate.addr, &connector, serde_json::json!({}))
            .await
            .0,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = nsqd_fds();
    for _ in 0..20 {
        let (client, reply) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        assert_eq!(reply["auth_required"], true);
        assert!(
            reply["max_rdy_count"].as_u64().is_some(),
            "nsqd's values: {reply}"
        );
        waiting.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = nsqd_fds();
    assert!(
        after <= before,
        "nsqd descriptors {before} -> {after}: unauthenticated clients reached nsqd"
    );

    // Once one authenticates, it gets its nsqd connection and works as usual.
    let mut client = waiting.pop().unwrap();
    let reply = client.auth(&keys.fast).await.unwrap();
    assert_eq!(
        reply.frame_type,
        FrameType::Response,
        "{}",
        frame_text(&reply)
    );
    assert_eq!(
        &client.publish("authed", b"x").await.unwrap().data[..],
        b"OK"
    );
    assert_eq!(nsqd.message_count("authed"), 1);
    assert!(
        nsqd_fds() > after,
        "the authenticated client has its nsqd connection"
    );
}
