//! Shared publish quotas across replicas: three nsqgate processes in front of one nsqd share
//! an identity's (or a topic's) quota through one real redis-server. A producer offering
//! three times the quota, spread over the three replicas, lands within the quota plus one
//! lease per replica in nsqd (counted from its /stats); one replica alone would have let the
//! whole offer through. Real nsqd, real nsqgate binaries, raw clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::nsqclient::{tls_connector, RawClient};
use common::redis::Redis;
use common::wire::FrameType;
use common::{api_key_entry, Gate, GateConfig, Nsqd, Pki};

/// The quota under test, messages per second (burst the same).
const QUOTA: u64 = 20;
/// Replicas sharing it; the most one replica leases at once is QUOTA / 10 (see README).
const REPLICAS: u64 = 3;
const LEASE_MOST: u64 = QUOTA / 10;
const OFFER_FOR: Duration = Duration::from_secs(10);

fn write_policy(pki: &Pki, keys: &[(&str, &str)]) {
    let mut text =
        String::from("[roles.writer]\nallow = [{ action = \"publish\", topics = [\"load.*\"] }]\n");
    for (name, key) in keys {
        text += &api_key_entry(name, key, &["writer"]);
    }
    pki.write_policy("policy", "main.toml", &text);
}

/// A replica with `rates` as its `[rate_limits]` and the shared Redis.
fn replica(pki: &Pki, nsqd: &Nsqd, redis: &Redis, rates: &str) -> Gate {
    GateConfig::new(nsqd.tcp)
        .auth("require_identity = true")
        .policy("policy")
        .table(&format!(
            "[rate_limits]\non_limit = \"delay\"\nmax_delay_ms = 30000\n{rates}"
        ))
        .table(&format!(
            "[cluster]\nredis_url = \"{}\"\ntimeout_ms = 500\nexpected_replicas = {REPLICAS}",
            redis.url()
        ))
        .start(pki)
}

/// Publishes to `topic` through `gate` every `pace` until `until`; the OKs it got.
async fn produce(
    gate: &Gate,
    pki: &Pki,
    key: &str,
    topic: &str,
    pace: Duration,
    until: Instant,
) -> u64 {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut client = RawClient::authenticated(gate.addr, &connector, key).await;
    let mut oks = 0;
    let mut next = tokio::time::Instant::now();
    while Instant::now() < until {
        let reply = client.publish(topic, b"m").await.expect("a PUB reply");
        assert_eq!(reply.frame_type, FrameType::Response, "{reply:?}");
        oks += 1;
        next += pace;
        tokio::time::sleep_until(next).await;
    }
    oks
}

/// At most the quota over the run (burst + rate × time) plus one lease per replica.
fn assert_within_quota(landed: u64, elapsed: Duration) {
    let bound =
        QUOTA + (QUOTA as f64 * elapsed.as_secs_f64()).ceil() as u64 + REPLICAS * LEASE_MOST;
    let offered = 3 * QUOTA * elapsed.as_secs();
    eprintln!("landed {landed} in {elapsed:?}; bound {bound}; offered about {offered}");
    assert!(
        landed <= bound,
        "{landed} messages landed; the shared quota allows {bound}"
    );
    // The quota is used, not refused wholesale: at least half of it over the run.
    assert!(
        landed >= QUOTA * elapsed.as_secs() / 2,
        "only {landed} landed"
    );
}

#[tokio::test]
async fn an_identity_quota_holds_across_three_replicas() {
    let redis = Redis::start();
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    write_policy(&pki, &[("producer", &key)]);
    let nsqd = Nsqd::start(&pki);
    let rates = format!("identity = {{ messages_per_sec = {QUOTA}, burst_messages = {QUOTA} }}");
    let replicas: Vec<Gate> = (0..REPLICAS)
        .map(|_| replica(&pki, &nsqd, &redis, &rates))
        .collect();

    // Each replica is offered the whole quota: three times it in all.
    let pace = Duration::from_secs(1) / QUOTA as u32;
    let started = Instant::now();
    let until = started + OFFER_FOR;
    let (a, b, c) = tokio::join!(
        produce(&replicas[0], &pki, &key, "load.identity", pace, until),
        produce(&replicas[1], &pki, &key, "load.identity", pace, until),
        produce(&replicas[2], &pki, &key, "load.identity", pace, until),
    );
    let elapsed = started.elapsed();
    let landed = nsqd.message_count("load.identity");
    assert_eq!(landed, a + b + c, "every OK is a message in nsqd");
    assert_within_quota(landed, elapsed);
}

#[tokio::test]
async fn a_topic_quota_holds_across_replicas_and_identities() {
    let redis = Redis::start();
    let pki = Pki::new();
    let first = nsqgate::auth::apikey::generate();
    let second = nsqgate::auth::apikey::generate();
    write_policy(&pki, &[("first", &first), ("second", &second)]);
    let nsqd = Nsqd::start(&pki);
    let rates = format!(
        "identity = {{}}\ntopic = {{ messages_per_sec = {QUOTA}, burst_messages = {QUOTA} }}"
    );
    let replicas: Vec<Gate> = (0..REPLICAS)
        .map(|_| replica(&pki, &nsqd, &redis, &rates))
        .collect();

    let pace = Duration::from_secs(1) / QUOTA as u32;
    let started = Instant::now();
    let until = started + OFFER_FOR;
    let (a, b, c) = tokio::join!(
        produce(&replicas[0], &pki, &first, "load.topic", pace, until),
        produce(&replicas[1], &pki, &second, "load.topic", pace, until),
        produce(&replicas[2], &pki, &first, "load.topic", pace, until),
    );
    let elapsed = started.elapsed();
    let landed = nsqd.message_count("load.topic");
    assert_eq!(landed, a + b + c, "every OK is a message in nsqd");
    assert_within_quota(landed, elapsed);
}
