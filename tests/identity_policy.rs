//! Authorization end to end: SUB decided per channel, `nsqgate policy explain` agreeing with
//! the running proxy, the AUTH protocol (AUTH first, once), a policy change closing a consumer
//! that lost its permission, and audit-mode rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod identity_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::nsqclient::{assert_error, assert_ok, frame_text};
use common::wire::{Command, FrameType};
use common::Gate;
use identity_support::{
    authed, channel_exists, claims, connect, explain, hex, now, with, Fixture, MTLS_REQUIRED,
    POLICY, SPIFFE_ID,
};
use nsqgate::certs::ClientSubject;

// === SUB per channel ===

#[tokio::test]
async fn subscribe_is_allowed_on_one_channel_and_denied_on_another() {
    let f = Fixture::new();
    let mut producer = authed(&f, &f.gate, &f.api_key).await;
    let bodies = ["first", "second", "third"];
    for body in bodies {
        assert_ok(producer.publish("orders.sub", body.as_bytes()).await, "PUB");
    }
    assert_eq!(f.nsqd.message_count("orders.sub"), 3);

    // alice (writer) may read "billing" only.
    let mut denied = authed(&f, &f.gate, &f.alice()).await;
    let text = assert_error(
        denied.sub("orders.sub", "ops").await,
        "E_UNAUTHORIZED",
        "SUB ops",
    );
    assert!(text.contains("SUB"), "{text}");
    assert!(denied.closed_within(Duration::from_secs(5)).await);
    assert!(
        !channel_exists(&f.nsqd, "orders.sub", "ops"),
        "a denied SUB created its channel"
    );

    let mut consumer = authed(&f, &f.gate, &f.alice()).await;
    assert_ok(consumer.sub("orders.sub", "billing").await, "SUB billing");
    consumer.send(&Command::Rdy { count: 10 }).await;
    let mut received = Vec::new();
    while received.len() < bodies.len() {
        let frame = consumer
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("consumer closed after {} messages", received.len()));
        assert_eq!(
            frame.frame_type,
            FrameType::Message,
            "{}",
            frame_text(&frame)
        );
        let message = frame.message().expect("message frame");
        consumer.send(&Command::Fin { id: message.id }).await;
        received.push(String::from_utf8_lossy(&message.body).into_owned());
    }
    received.sort();
    let mut expected: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
    expected.sort();
    assert_eq!(received, expected);
    assert!(channel_exists(&f.nsqd, "orders.sub", "billing"));

    f.gate.wait_audit("denied SUB", |e| {
        e["action"] == "subscribe" && e["channel"] == "ops" && e["outcome"] == "deny"
    });
}

// === policy explain agrees with the proxy ===

enum Who {
    Secret(String),
    Certificate,
}

enum What {
    Publish(&'static str),
    Subscribe(&'static str, &'static str),
}

/// What the proxy does: Ok(true) for OK, Ok(false) for E_UNAUTHORIZED, Err(text) when AUTH
/// itself is refused.
async fn proxy_decides(f: &Fixture, mtls: &Gate, who: &Who, what: &What) -> Result<bool, String> {
    let mut client = match who {
        Who::Secret(secret) => {
            let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
            let frame = client.auth(secret).await.expect("AUTH reply");
            if frame.frame_type != FrameType::Response {
                return Err(frame_text(&frame));
            }
            client
        }
        Who::Certificate => {
            let (cert, key) = (
                f.pki.path("billing-client.pem"),
                f.pki.path("billing-client.key"),
            );
            connect(mtls.addr, &f.ca(), Some((&cert, &key))).await.0
        }
    };
    let frame = match what {
        What::Publish(topic) => client.publish(topic, b"explained").await,
        What::Subscribe(topic, channel) => client.sub(topic, channel).await,
    }
    .expect("a reply");
    match (frame.frame_type, frame_text(&frame)) {
        (FrameType::Response, text) if text == "OK" => Ok(true),
        (FrameType::Error, text) if text.starts_with("E_UNAUTHORIZED") => Ok(false),
        (_, text) => panic!("unexpected reply {text}"),
    }
}

#[tokio::test]
async fn policy_explain_agrees_with_the_proxy() {
    let f = Fixture::new();
    let mtls = f.gate_with(MTLS_REQUIRED);
    f.pki.issue_client(
        "billing-client",
        &ClientSubject {
            common_name: "billing".into(),
            uris: vec![SPIFFE_ID.into()],
            dns_names: vec![],
        },
    );
    let alice = f.alice();
    let bob = f.token("hs", &with(claims("bob"), "roles", json!(["reader"])));
    let expired = f.token("es", &with(claims("alice"), "exp", json!(now() - 60)));
    let key = f.api_key.clone();
    let s = |v: &String| Who::Secret(v.clone());
    // (who, what, allowed)
    let cases = vec![
        (s(&alice), What::Publish("orders.ex1"), true),
        (s(&alice), What::Publish("payments"), false),
        (s(&alice), What::Publish("orders.internal"), false),
        (s(&alice), What::Publish("trial.ex"), false),
        (s(&key), What::Subscribe("orders.ex2", "billing"), true),
        (s(&key), What::Subscribe("orders.ex2", "ops"), false),
        (s(&bob), What::Subscribe("orders.ex3", "ops"), true),
        (s(&bob), What::Publish("bob.inbox"), true),
        (s(&bob), What::Publish("alice.inbox"), false),
        (Who::Certificate, What::Publish("orders.ex4"), true),
        (
            Who::Certificate,
            What::Subscribe("orders.ex4", "ops"),
            false,
        ),
        (s(&expired), What::Publish("orders.ex5"), false),
    ];
    for (who, what, allowed) in &cases {
        let mut args: Vec<&str> = match who {
            Who::Secret(secret) if secret.starts_with(nsqgate::auth::apikey::PREFIX) => {
                vec!["--api-key", secret]
            }
            Who::Secret(secret) => vec!["--token", secret],
            Who::Certificate => vec!["--identity", SPIFFE_ID],
        };
        let label = match what {
            What::Publish(topic) => {
                args.extend(["--publish", topic]);
                format!("publish {topic}")
            }
            What::Subscribe(topic, channel) => {
                args.extend(["--subscribe", topic, channel]);
                format!("subscribe {topic} {channel}")
            }
        };
        let label = format!("{} {label}", args[0]);
        let (code, stdout, stderr) = explain(&f.gate.config, &args);
        let explained = match code {
            Some(0) => true,
            Some(1) => false,
            other => panic!("{label}: explain exited {other:?}: {stdout}{stderr}"),
        };
        let verdict = if explained { "allow:" } else { "deny:" };
        assert!(stdout.starts_with(verdict), "{label}: {stdout}");
        let proxy = proxy_decides(&f, &mtls, who, what).await;
        match &proxy {
            Ok(did) => assert_eq!(*did, explained, "{label}: proxy {did}, explain: {stdout}"),
            Err(refused) => {
                assert!(
                    !explained,
                    "{label}: AUTH refused ({refused}) but explain: {stdout}"
                );
                assert!(refused.starts_with("E_AUTH_FAILED"), "{label}: {refused}");
                assert!(
                    stdout.contains("authentication failed"),
                    "{label}: {stdout}"
                );
            }
        }
        assert_eq!(explained, *allowed, "{label}: explain says {stdout}");
    }
    let (_, stdout, _) = explain(
        &f.gate.config,
        &["--token", &alice, "--publish", "trial.ex"],
    );
    assert!(stdout.contains("audit-mode rules would allow"), "{stdout}");

    // Usage and configuration errors exit 2.
    let (code, _, _) = explain(&f.gate.config, &["--publish", "orders.x"]);
    assert_eq!(code, Some(2), "no credential");
    let (code, _, _) = explain(&f.gate.config, &["--identity", "alice"]);
    assert_eq!(code, Some(2), "no action");
    let (code, _, _) = explain(
        &f.pki.path("missing.toml"),
        &["--identity", "alice", "--publish", "orders.x"],
    );
    assert_eq!(code, Some(2), "missing config");
}

// === AUTH protocol, revocation, audit mode ===

#[tokio::test]
async fn publish_without_auth_gets_auth_first_and_a_second_auth_is_invalid() {
    let f = Fixture::new();

    let (mut client, reply) = connect(f.gate.addr, &f.ca(), None).await;
    assert_eq!(reply["auth_required"], true, "{reply}");
    assert_error(
        client.publish("orders.noauth", b"x").await,
        "E_AUTH_FIRST",
        "PUB without AUTH",
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);

    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    assert_error(
        client.sub("orders.noauth", "billing").await,
        "E_AUTH_FIRST",
        "SUB without AUTH",
    );
    assert!(!f.nsqd.topic_exists("orders.noauth"));

    let token = f.alice();
    let (mut client, _) = connect(f.gate.addr, &f.ca(), None).await;
    let frame = client.auth(&token).await.expect("AUTH reply");
    assert_eq!(
        frame.frame_type,
        FrameType::Response,
        "{}",
        frame_text(&frame)
    );
    let reply: Value = serde_json::from_slice(&frame.data).expect("AUTH JSON");
    assert_eq!(reply["identity"], "alice", "{reply}");
    client
        .send(&Command::Auth {
            secret: token.as_bytes().to_vec().into(),
        })
        .await;
    client
        .send(&Command::Pub {
            topic: "orders.second".into(),
            body: b"x".to_vec().into(),
        })
        .await;
    assert_error(client.read_frame().await, "E_INVALID", "second AUTH");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("orders.second"));
}

#[tokio::test]
async fn a_policy_change_closes_a_consumer_that_lost_its_permission() {
    let f = Fixture::new();
    let mut consumer = authed(&f, &f.gate, &f.alice()).await;
    assert_ok(consumer.sub("orders.rev", "billing").await, "SUB");
    consumer.send(&Command::Rdy { count: 5 }).await;
    let mut producer = authed(&f, &f.gate, &f.api_key).await;
    assert_ok(producer.publish("orders.rev", b"one").await, "PUB");
    let frame = consumer.read_frame().await.expect("a message");
    let message = frame.message().expect("message frame");
    assert_eq!(&message.body[..], b"one");
    consumer.send(&Command::Fin { id: message.id }).await;

    // Still subscribed a while later: nothing closes a consumer whose permission stands.
    assert!(
        !consumer.closed_within(Duration::from_millis(800)).await,
        "consumer closed without a policy change"
    );

    // alice's role no longer covers channel "billing".
    let policy = format!(
        "{}\n[api_keys.ingest]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
        POLICY.replace("channels = [\"billing\"]", "channels = [\"billing-v2\"]"),
        hex(&Sha256::digest(f.api_key.as_bytes()))
    );
    assert_ne!(policy, POLICY);
    f.pki.write_policy("policy", "main.toml", &policy);

    let started = Instant::now();
    let limit = Duration::from_secs(6);
    loop {
        match consumer
            .read_frame_within(limit.saturating_sub(started.elapsed()))
            .await
        {
            Some(frame) if frame.frame_type == FrameType::Message => continue,
            Some(frame) => {
                let text = frame_text(&frame);
                assert_eq!(text, "E_UNAUTHORIZED permission revoked");
                assert!(consumer.closed_within(Duration::from_secs(3)).await);
                break;
            }
            None => {
                assert!(
                    started.elapsed() < limit,
                    "the consumer was not closed within {limit:?}"
                );
                break;
            }
        }
    }
    let event = f.gate.wait_audit("revocation", |e| e["action"] == "revoke");
    assert_eq!(event["identity"], "alice", "{event}");
    assert_eq!(event["topic"], "orders.rev", "{event}");
    assert_eq!(event["channel"], "billing", "{event}");
}

#[tokio::test]
async fn a_publish_allowed_only_by_an_audit_rule_is_denied_and_logged_as_would_allow() {
    let f = Fixture::new();
    let mut client = authed(&f, &f.gate, &f.alice()).await;
    assert_error(
        client.publish("trial.orders", b"x").await,
        "E_UNAUTHORIZED",
        "PUB on an audit-only topic",
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(!f.nsqd.topic_exists("trial.orders"));
    let event = f.gate.wait_audit("would_allow", |e| {
        e["action"] == "publish" && e["topic"] == "trial.orders" && e["outcome"] == "would_allow"
    });
    assert_eq!(event["identity"], "alice", "{event}");
    assert!(
        event["rule"].as_str().unwrap_or("").contains("allow[1]"),
        "{event}"
    );
    f.gate.wait_audit("the enforced deny", |e| {
        e["action"] == "publish" && e["topic"] == "trial.orders" && e["outcome"] == "deny"
    });
}
