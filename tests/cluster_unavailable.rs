//! Redis going away under a replica: with `on_unavailable = "local"` publishing goes on at the
//! replica's share of the quota, with `"closed"` it is refused; neither waits on the dead
//! Redis for long, `/readyz` and `/metrics` say so, and when redis-server is back (a restart
//! on the same socket) the shared budgets are leased again without restarting nsqgate.
//! Real redis-server, nsqd and nsqgate binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::redis::Redis;
use common::wire::FrameType;
use common::{Gate, GateConfig, Nsqd, Pki};

/// The data path's bound on any Redis call.
const TIMEOUT_MS: u64 = 200;

fn metrics(admin: SocketAddr) -> Exposition {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

fn metrics_when(admin: SocketAddr, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metrics(admin);
        if ready(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} not seen in /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn readyz(admin: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = get(admin, "/readyz");
    (status, serde_json::from_str(&body).expect("/readyz JSON"))
}

/// Waits (up to 10 s) for `/readyz` to say ready with nothing degraded.
fn wait_fully_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = readyz(admin);
        if now == (200, serde_json::json!({ "ready": true })) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(pki: &Pki, nsqd: &Nsqd, redis: &Redis, mode: &str) -> (Gate, String) {
    let key = pki.write_publisher_policy("down.*", "producer");
    let gate = GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .table("[rate_limits]\nidentity = { messages_per_sec = 1000, burst_messages = 1000 }")
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntimeout_ms = {TIMEOUT_MS}\non_unavailable = \"{mode}\"\nexpected_replicas = 2",
            redis.url()
        ))
        .start(pki);
    (gate, key)
}

fn leases_granted(m: &Exposition) -> f64 {
    m.sum(
        "nsqgate_cluster_leases_total",
        &[("what", "tokens"), ("outcome", "granted")],
    )
}

/// Publishes once; the reply's text and how long it took.
async fn publish(client: &mut RawClient, topic: &str) -> (String, Duration) {
    let started = Instant::now();
    let reply = client.publish(topic, b"m").await.expect("a PUB reply");
    let text = frame_text(&reply);
    let text = if reply.frame_type == FrameType::Response {
        text
    } else {
        format!("error: {text}")
    };
    (text, started.elapsed())
}

#[tokio::test]
async fn local_mode_keeps_publishing_without_redis_and_shares_again_when_it_returns() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, key) = start(&pki, &nsqd, &redis, "local");
    let admin = gate.admin();
    metrics_when(admin, "redis up", |m| {
        m.sum("nsqgate_cluster_redis_up", &[]) == 1.0
    });
    wait_fully_ready(admin);

    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut client = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_eq!(publish(&mut client, "down.local").await.0, "OK");
    let before = metrics(admin);
    assert!(
        leases_granted(&before) >= 1.0,
        "the first publish leased from Redis"
    );

    redis.kill();
    // Publishing goes on; no publish waits much longer than one Redis timeout.
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let (text, took) = publish(&mut client, "down.local").await;
        assert_eq!(text, "OK");
        slowest = slowest.max(took);
    }
    eprintln!("slowest publish while Redis was down: {slowest:?} (timeout {TIMEOUT_MS} ms)");
    assert!(
        slowest < Duration::from_millis(TIMEOUT_MS * 10),
        "a publish waited {slowest:?}"
    );
    let down = metrics_when(admin, "Redis down", |m| {
        m.sum("nsqgate_cluster_redis_up", &[]) == 0.0
            && m.sum("nsqgate_cluster_unavailable_total", &[("mode", "local")]) > 0.0
    });
    assert!(down.sum("nsqgate_cluster_redis_errors_total", &[]) > 0.0);
    let (status, body) = readyz(admin);
    assert_eq!(status, 200, "local mode still serves: {body}");
    let why = body["degraded"]["redis"].as_str().unwrap_or_default();
    assert!(why.contains("1/2 of each shared quota locally"), "{body}");

    redis.restart();
    let up = metrics_when(admin, "redis back", |m| {
        m.sum("nsqgate_cluster_redis_up", &[]) == 1.0
    });
    wait_fully_ready(admin);
    // Shared budgets again: new leases from the restarted Redis.
    for _ in 0..200 {
        assert_eq!(publish(&mut client, "down.local").await.0, "OK");
    }
    assert!(leases_granted(&metrics(admin)) > leases_granted(&up));
    assert_eq!(nsqd.message_count("down.local"), 401);
}

#[tokio::test]
async fn closed_mode_refuses_publishes_without_redis_until_it_returns() {
    let mut redis = Redis::start();
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, key) = start(&pki, &nsqd, &redis, "closed");
    let admin = gate.admin();
    metrics_when(admin, "redis up", |m| {
        m.sum("nsqgate_cluster_redis_up", &[]) == 1.0
    });
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut client = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_eq!(publish(&mut client, "down.closed").await.0, "OK");

    redis.kill();
    // A lease lasts a second at most: then the next publish needs Redis and is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, took) = loop {
        let (text, took) = publish(&mut client, "down.closed").await;
        if text != "OK" {
            break (text, took);
        }
        assert!(Instant::now() < deadline, "still published without Redis");
    };
    // Not "rate limit exceeded": the publisher may well be under its quota.
    assert_eq!(
        text,
        "error: E_PUB_FAILED PUB failed: shared state unavailable (Redis): the identity quota \
         over every replica cannot be checked"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 10),
        "the refusal took {took:?}"
    );
    let (status, body) = readyz(admin);
    assert_eq!(status, 503, "{body}");
    assert!(body["not_ready"]["redis"].as_str().is_some(), "{body}");
    let landed = nsqd.message_count("down.closed");

    redis.restart();
    metrics_when(admin, "redis back", |m| {
        m.sum("nsqgate_cluster_redis_up", &[]) == 1.0
    });
    wait_fully_ready(admin);
    let mut client = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_eq!(publish(&mut client, "down.closed").await.0, "OK");
    assert_eq!(nsqd.message_count("down.closed"), landed + 1);
}
