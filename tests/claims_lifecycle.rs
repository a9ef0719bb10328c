//! How connections end (README, "Shutdown" and "Policy"): on SIGTERM nsqgate stops accepting at
//! once and `shutdown_ms` bounds the wait for replies nsqd owes; a revoked subscriber gets
//! `RDY 0` (sent to nsqd for it), may finish what it holds within the grace, then is told
//! `E_UNAUTHORIZED` and closed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, FrameType};
use common::{GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Waits until every thread of `pid` is stopped (state `T` in /proc), 10 s at most: kill(2)
/// only makes the stop pending.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // `pid (comm) S ...`: the state follows the last ')'.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    };
    while !stopped() {
        assert!(Instant::now() < deadline, "nsqd {pid} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_at_once_and_shutdown_ms_bounds_the_wait() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let mut gate = GateConfig::anonymous(nsqd.tcp)
        .table("[timeouts]\nshutdown_ms = 2000")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut waiting, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let ok = waiting.publish("owed", b"before").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));

    // nsqd stops answering: the next PUB's reply is owed for as long as it stays stopped.
    signal(nsqd.pid(), "STOP");
    wait_stopped(nsqd.pid());
    waiting
        .send(&Command::Pub {
            topic: "owed".into(),
            body: b"never answered".to_vec().into(),
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_at = Instant::now();
    signal(gate.pid(), "TERM");
    gate.wait_log(&["stopped accepting"]);
    let refused = tokio::net::TcpStream::connect(gate.addr).await;
    assert!(refused.is_err(), "a connection after SIGTERM was accepted");

    // The owed reply never comes; the connection is cut off and nsqgate exits by the bound.
    let reply = waiting.read_frame_within(Duration::from_secs(30)).await;
    assert!(
        reply.is_none(),
        "no OK nsqd did not give: {}",
        reply.map(|f| frame_text(&f)).unwrap_or_default()
    );
    let status = gate
        .wait_exit(Duration::from_secs(30))
        .expect("nsqgate exits");
    let took = stopped_at.elapsed();
    eprintln!("exited {took:?} after SIGTERM with shutdown_ms = 2000 and a reply still owed");
    assert!(
        took >= Duration::from_millis(1500),
        "it waited for the owed reply: {took:?}"
    );
    assert!(status.code().is_some(), "{status}");
    signal(nsqd.pid(), "CONT");
}

/// `key` may publish to and subscribe on `orders` (when `allowed`); a second key always may.
fn revocation_policy(key: &str, other: &str, allowed: bool) -> String {
    let mut text = format!(
        "[roles.worker]\nallow = [\n  {{ action = \"publish\", topics = [\"orders\"] }},\n  \
         {{ action = \"subscribe\", topics = [\"orders\"], channels = [\"*\"] }},\n]\n\n\
         [api_keys.feeder]\nsha256 = \"{}\"\nroles = [\"worker\"]\n",
        common::key_sha256(other.as_bytes())
    );
    if allowed {
        text += &format!(
            "\n[api_keys.doomed]\nsha256 = \"{}\"\nroles = [\"worker\"]\n",
            common::key_sha256(key.as_bytes())
        );
    }
    text
}

/// The channel's one client in nsqd's /stats, once `pred` holds for it (30 s at most).
fn channel_client(nsqd: &Nsqd, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = nsqd
            .topic("orders")
            .and_then(|t| t["channels"].as_array().and_then(|c| c.first().cloned()))
            .and_then(|c| c["clients"].as_array().and_then(|c| c.first().cloned()));
        if let Some(client) = client.filter(|c| pred(c)) {
            return client;
        }
        assert!(Instant::now() < deadline, "nsqd's stats: {}", nsqd.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_revoked_subscriber_gets_rdy_0_may_finish_then_is_told() {
    let pki = Pki::new();
    let (key, feeder_key) = (apikey::generate(), apikey::generate());
    pki.write_policy(
        "policy",
        "main.toml",
        &revocation_policy(&key, &feeder_key, true),
    );
    let nsqd = Nsqd::start(&pki);
    // A grace long enough to look at nsqd between RDY 0 and the end of it.
    let gate = GateConfig::new(nsqd.tcp)
        .policy("policy")
        .auth("policy_reload_ms = 100\nrevocation_grace_ms = 5000")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut consumer = RawClient::authenticated(gate.addr, &connector, &key).await;
    let reply = consumer.sub("orders", "work").await.expect("SUB reply");
    assert!(reply.is_ok(), "{}", frame_text(&reply));
    consumer.send(&Command::Rdy { count: 5 }).await;
    channel_client(&nsqd, |c| c["ready_count"] == 5);
    let mut feeder = RawClient::authenticated(gate.addr, &connector, &feeder_key).await;
    let ok = feeder.publish("orders", b"held").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    let held = consumer.read_frame().await.expect("a message");
    assert_eq!(held.frame_type, FrameType::Message, "{}", frame_text(&held));
    let held = held.message().unwrap();

    pki.write_policy(
        "policy",
        "main.toml",
        &revocation_policy(&key, &feeder_key, false),
    );
    // nsqgate tells nsqd to send no more; the message in flight stays the consumer's.
    let seen = channel_client(&nsqd, |c| c["ready_count"] == 0);
    assert_eq!(seen["in_flight_count"], 1, "{seen}");
    let ok = feeder
        .publish("orders", b"not for the revoked")
        .await
        .expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));
    consumer.send(&Command::Fin { id: held.id }).await;
    let finished = channel_client(&nsqd, |c| c["finish_count"] == 1);
    assert_eq!(finished["in_flight_count"], 0, "{finished}");

    let told = consumer
        .read_frame_within(Duration::from_secs(30))
        .await
        .expect("told why");
    assert_eq!(frame_text(&told), "E_UNAUTHORIZED permission revoked");
    assert!(consumer.closed_within(Duration::from_secs(5)).await);
    let channel = &nsqd.topic("orders").unwrap()["channels"][0];
    assert_eq!(
        channel["depth"], 1,
        "the later message waits for someone else: {channel}"
    );
}
