//! `nsqgate revoke` across replicas: three nsqgate processes share one real redis-server;
//! revoking an API key cuts its subscriber on one replica and its publisher on another, every
//! replica refuses a new AUTH with it, and a replica started afterwards refuses it too. Real
//! nsqd, real nsqgate binaries, raw clients; nsqd's /stats and the audit lines show it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::redis::Redis;
use common::wire::{Command, Frame, FrameType};
use common::{api_key_entry, nsqgate, Gate, GateConfig, Nsqd, Pki};

/// A generous deadline for a loaded machine; the latency itself is printed.
const NOTICE: Duration = Duration::from_secs(10);

fn policy(keys: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "[roles.worker]\nallow = [\n  { action = \"publish\", topics = [\"orders.*\"] },\n  \
         { action = \"subscribe\", topics = [\"orders.*\"], channels = [\"*\"] },\n]\n",
    );
    for (name, key) in keys {
        text += &api_key_entry(name, key, &["worker"]);
    }
    text
}

fn replica(pki: &Pki, nsqd: &Nsqd, redis: &Redis) -> Gate {
    GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .auth("revocation_grace_ms = 100")
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntimeout_ms = 500",
            redis.url()
        ))
        .start(pki)
}

async fn authed(gate: &Gate, ca: &Path, key: &str) -> RawClient {
    RawClient::authenticated(gate.addr, &tls_connector(ca, None), key).await
}

fn is_ok(frame: &Option<Frame>) -> bool {
    frame
        .as_ref()
        .is_some_and(|f| f.frame_type == FrameType::Response && &f.data[..] == b"OK")
}

/// Reads past messages (finishing them) until a non-message frame or the end; that frame.
async fn next_non_message(client: &mut RawClient, limit: Duration) -> Option<Frame> {
    let started = Instant::now();
    loop {
        let frame = client
            .read_frame_within(limit.saturating_sub(started.elapsed()))
            .await?;
        if frame.frame_type != FrameType::Message {
            return Some(frame);
        }
        let message = frame.message().expect("a message frame");
        client.send(&Command::Fin { id: message.id }).await;
    }
}

fn wait_audit(gate: &Gate, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events: Vec<Value> = gate.audit_events().into_iter().filter(&pred).collect();
        if !events.is_empty() || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn auth_reply(gate: &Gate, ca: &Path, key: &str) -> String {
    let connector = tls_connector(ca, None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, json!({})).await;
    let reply = client.auth(key).await.expect("AUTH reply");
    frame_text(&reply)
}

#[tokio::test]
async fn revoking_an_api_key_cuts_it_on_every_replica_and_refuses_it_afterwards() {
    let redis = Redis::start();
    let pki = Pki::new();
    let ingest = nsqgate::auth::apikey::generate();
    let other = nsqgate::auth::apikey::generate();
    pki.write_policy(
        "policy",
        "main.toml",
        &policy(&[("ingest", &ingest), ("other", &other)]),
    );
    let nsqd = Nsqd::start(&pki);
    let replicas: Vec<Gate> = (0..3).map(|_| replica(&pki, &nsqd, &redis)).collect();
    let ca = pki.path("ca.pem");

    // A subscriber on replica 2 and a publisher on replica 3 with the key; another key's
    // publisher on replica 1.
    let mut consumer = authed(&replicas[1], &ca, &ingest).await;
    let reply = consumer.sub("orders.cut", "billing").await;
    assert_eq!(frame_text(&reply.expect("SUB reply")), "OK");
    consumer.send(&Command::Rdy { count: 10 }).await;
    let mut publisher = authed(&replicas[2], &ca, &ingest).await;
    let mut bystander = authed(&replicas[0], &ca, &other).await;
    assert!(is_ok(&publisher.publish("orders.cut", b"before").await));
    assert!(is_ok(&bystander.publish("orders.cut", b"before").await));

    let (code, out, err) = nsqgate(&[
        "revoke",
        "--redis-url",
        &redis.url(),
        "--api-key-name",
        "ingest",
        "--for",
        "1h",
    ]);
    let revoked_at = Instant::now();
    assert_eq!(code, 0, "revoke: {out}{err}");
    assert!(out.contains("revoked API key \"ingest\""), "{out}");

    // Both are told without sending anything: the subscriber after its grace.
    let frame = next_non_message(&mut consumer, NOTICE).await;
    let consumer_cut = revoked_at.elapsed();
    let text = frame_text(&frame.expect("the subscriber is told"));
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    let frame = next_non_message(&mut publisher, NOTICE).await;
    let publisher_cut = revoked_at.elapsed();
    let text = frame_text(&frame.expect("the publisher is told"));
    assert_eq!(text, "E_UNAUTHORIZED permission revoked");
    eprintln!("cut after: subscriber {consumer_cut:?} (100 ms grace), publisher {publisher_cut:?}");
    assert!(consumer.closed_within(Duration::from_secs(5)).await);
    assert!(publisher.closed_within(Duration::from_secs(5)).await);

    // The other key is untouched; nsqd holds exactly the three publishes that were OK.
    assert!(is_ok(&bystander.publish("orders.cut", b"after").await));
    assert_eq!(nsqd.message_count("orders.cut"), 3);

    // Audited on the replicas that cut, with the operator's reason.
    for (index, gate) in [(1, &replicas[1]), (2, &replicas[2])] {
        let cut = wait_audit(gate, |e| {
            e["action"] == "revoke" && e["identity"] == "ingest"
        });
        assert_eq!(cut.len(), 1, "replica {}: {cut:?}", index + 1);
        let reason = cut[0]["reason"].as_str().unwrap_or_default();
        assert_eq!(reason, "API key \"ingest\" revoked by an operator");
    }

    // Every replica refuses a new AUTH with the key, and so does one started afterwards.
    let late = replica(&pki, &nsqd, &redis);
    for gate in replicas.iter().chain([&late]) {
        let deadline = Instant::now() + NOTICE;
        loop {
            let text = auth_reply(gate, &ca, &ingest).await;
            if text == "E_AUTH_FAILED AUTH failed" {
                break;
            }
            assert!(Instant::now() < deadline, "AUTH still accepted: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let refused = wait_audit(gate, |e| {
            e["action"] == "auth" && e["reason"] == "credential revoked: API key \"ingest\""
        });
        assert!(!refused.is_empty(), "no audited refusal");
    }
    assert!(auth_reply(&late, &ca, &other).await.starts_with("{"));
}

#[tokio::test]
async fn revoke_without_a_reachable_redis_fails_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis+unix://{}", dir.path().join("none.sock").display());
    let (code, out, err) = nsqgate(&["revoke", "--redis-url", &url, "--identity", "x"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("error: redis+unix://"), "{err}");
    let (code, _, err) = nsqgate(&["revoke", "--redis-url", &url, "--jti", "t", "--for", "0s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least one second"), "{err}");
}
