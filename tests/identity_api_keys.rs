//! Identity by API key, end to end: the right key publishes, a wrong one is refused without
//! the key ever appearing in a log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod identity_support;

use std::time::Duration;

use common::nsqclient::{assert_error, assert_ok};
use common::wire::Command;
use identity_support::{authed, connect, fingerprint, Fixture};

// === API keys ===

#[tokio::test]
async fn api_key_right_publishes_and_wrong_is_refused_without_leaking_the_key() {
    let f = Fixture::new();
    let mut client = authed(&f, &f.gate, &f.api_key).await;
    assert_ok(
        client.publish("orders.api", b"via key").await,
        "PUB with the key",
    );
    assert_eq!(f.nsqd.message_count("orders.api"), 1);

    let wrong = nsqgate::auth::apikey::generate();
    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    client
        .send(&Command::Auth {
            secret: wrong.as_bytes().to_vec().into(),
        })
        .await;
    // Pipelined behind the refused AUTH: must never reach nsqd.
    client
        .send(&Command::Pub {
            topic: "orders.apifail".into(),
            body: b"nope".to_vec().into(),
        })
        .await;
    assert_error(client.read_frame().await, "E_AUTH_FAILED", "wrong key");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("orders.apifail"));

    let event = f.gate.wait_audit("failed API key", |e| {
        e["action"] == "auth"
            && e["outcome"] == "failure"
            && e["fingerprint"] == fingerprint(&wrong)
    });
    assert_eq!(event["method"], "api_key", "{event}");
    assert!(
        event["reason"].as_str().unwrap_or("").contains("API key"),
        "{event}"
    );
    f.gate.wait_audit("accepted API key", |e| {
        e["action"] == "auth"
            && e["outcome"] == "success"
            && e["identity"] == "ingest"
            && e["fingerprint"] == fingerprint(&f.api_key)
    });

    let log = f.gate.log();
    for key in [&f.api_key, &wrong] {
        let random = &key[nsqgate::auth::apikey::PREFIX.len()..];
        assert!(
            !log.contains(random),
            "an API key appears in the gate's log"
        );
    }
}
