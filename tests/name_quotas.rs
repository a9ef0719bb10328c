//! Quotas on new topic and channel names: a client creating names in a loop is held to its
//! identity's quota (a role raises the configured default), refused with nsqd's own failure code
//! for the command; nsqd's /stats proves nothing more was created. Real nsqd, real nsqgate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use serde_json::json;

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::wire::{Command, Frame, FrameType};
use common::{Gate, Nsqd, Pki};

/// The configured default allows 2 new topics a minute; the role raises it to 5.
const CONFIG: &str = r#"
[auth]
require_identity = false
policy_dir = "quota-policy"

[name_quotas]
new_topics_per_minute = 2
new_channels_per_minute = 3
max_names = 100
"#;

const POLICY: &str = r#"
[roles.everything]
allow = [
  { action = "publish", topics = ["**"] },
  { action = "subscribe", topics = ["**"], channels = ["*", "*#ephemeral"] },
]
names = { new_topics_per_minute = 5 }

[identities]
anonymous = ["everything"]
"#;

fn start() -> (Pki, Nsqd, Gate) {
    let pki = Pki::new();
    pki.write_policy("quota-policy", "quota.toml", POLICY);
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start_with(&pki, &nsqd, "127.0.0.1", "ca.pem", CONFIG);
    (pki, nsqd, gate)
}

async fn client(pki: &Pki, gate: &Gate) -> RawClient {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    RawClient::upgraded(gate.addr, &connector, json!({}))
        .await
        .0
}

fn is_ok(frame: &Option<Frame>) -> bool {
    frame
        .as_ref()
        .is_some_and(|f| f.frame_type == FrameType::Response && &f.data[..] == b"OK")
}

fn text(frame: &Option<Frame>) -> String {
    frame.as_ref().map(frame_text).unwrap_or_default()
}

fn topics_named(nsqd: &Nsqd, prefix: &str) -> usize {
    nsqd.stats()["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["topic_name"].as_str().unwrap().starts_with(prefix))
        .count()
}

#[tokio::test]
async fn a_publisher_creating_topics_in_a_loop_is_held_to_its_quota() {
    let (pki, nsqd, gate) = start();
    let mut publisher = client(&pki, &gate).await;
    let mut created = 0;
    let refusal = loop {
        let reply = publisher.publish(&format!("quota.t{created}"), b"x").await;
        if !is_ok(&reply) {
            break reply;
        }
        created += 1;
        assert!(created <= 50, "never held to a quota");
    };
    assert_eq!(created, 5, "the role's 5 new topics a minute");
    assert_eq!(
        text(&refusal),
        "E_PUB_FAILED PUB failed: name quota exceeded: new topics per minute (5)"
    );
    assert!(publisher.closed_within(Duration::from_secs(5)).await);
    assert_eq!(topics_named(&nsqd, "quota."), 5);

    // Known names cost nothing; MPUB to a new one is refused with MPUB's code.
    let mut again = client(&pki, &gate).await;
    assert!(is_ok(&again.publish("quota.t0", b"again").await));
    again
        .send(&Command::Mpub {
            topic: "quota.mpub".into(),
            messages: vec![b"a".to_vec().into(), b"b".to_vec().into()],
        })
        .await;
    let reply = again.read_frame().await;
    assert!(
        text(&reply).starts_with("E_MPUB_FAILED MPUB failed: name quota exceeded"),
        "{}",
        text(&reply)
    );
    assert_eq!(topics_named(&nsqd, "quota."), 5);
    assert_eq!(nsqd.message_count("quota.t0"), 2);

    let refused = gate
        .audit_events()
        .into_iter()
        .filter(|e| {
            e["outcome"] == "deny"
                && e["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("name quota exceeded")
        })
        .count();
    assert_eq!(refused, 2, "each refusal is audited");
}

#[tokio::test]
async fn subs_creating_channels_in_a_loop_are_held_to_the_quota_ephemeral_ones_too() {
    let (pki, nsqd, gate) = start();
    let mut publisher = client(&pki, &gate).await;
    assert!(is_ok(&publisher.publish("chan.topic", b"x").await));
    // One SUB per connection; all stay open so the ephemeral channels stay in nsqd.
    let mut consumers = Vec::new();
    let mut created = 0;
    let refusal = loop {
        let channel = if created % 2 == 0 {
            format!("c{created}")
        } else {
            format!("c{created}#ephemeral")
        };
        let mut consumer = client(&pki, &gate).await;
        consumer
            .send(&Command::Sub {
                topic: "chan.topic".into(),
                channel,
            })
            .await;
        let reply = consumer.read_frame().await;
        if !is_ok(&reply) {
            break reply;
        }
        consumers.push(consumer);
        created += 1;
        assert!(created <= 50, "never held to a quota");
    };
    assert_eq!(created, 3);
    assert_eq!(
        text(&refusal),
        "E_SUB_FAILED SUB failed: name quota exceeded: new channels per minute (3)"
    );
    let channels = nsqd.topic("chan.topic").unwrap()["channels"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(channels, 3, "nsqd holds only the admitted channels");
}
