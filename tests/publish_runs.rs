//! PUBs sent together (one write, which nsqgate reads at once and judges as a run) get exactly
//! what each would get on its own: the policy stops the first one it denies, the rate limits
//! refuse the first one past the burst, and the decision counter counts every one. Checked
//! against the frames the client gets and the messages nsqd holds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::wire::{Command, FrameType};
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

/// `writer` publishes to `runs.*`; `limited` too, with a burst of 6400 messages refilled at
/// 1/s (a burst large enough that a session leases tokens ahead, 100 at a time).
struct Keys {
    writer: String,
    limited: String,
}

fn start(pki: &Pki, nsqd: &Nsqd) -> (Gate, Keys) {
    let keys = Keys {
        writer: apikey::generate(),
        limited: apikey::generate(),
    };
    let policy = format!(
        r#"
[roles.writer]
allow = [{{ action = "publish", topics = ["runs.*"] }}]

[roles.limited]
allow = [{{ action = "publish", topics = ["runs.*"] }}]
rate = {{ messages_per_sec = 1, burst_messages = 6400 }}

{}
{}"#,
        common::api_key_entry("writer", &keys.writer, &["writer"]),
        common::api_key_entry("limited", &keys.limited, &["limited"]),
    );
    pki.write_policy("runs-policy", "policy.toml", &policy);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("runs-policy")
        .table("[rate_limits]\non_limit = \"reject\"")
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .start(pki);
    (gate, keys)
}

/// The bytes of a PUB of `body` to each topic of `topics`, in order, for one write.
fn publishes<'a>(topics: impl IntoIterator<Item = &'a str>, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for topic in topics {
        let publish = Command::Pub {
            topic: topic.into(),
            body: body.to_vec().into(),
        };
        publish.encode(&mut out);
    }
    out.to_vec()
}

/// Reads replies until the first that is not OK: how many OKs came, and that frame's text
/// (None if the connection closed without one).
async fn oks_then_refusal(client: &mut RawClient) -> (usize, Option<String>) {
    let mut oks = 0;
    loop {
        match client.read_frame_within(Duration::from_secs(15)).await {
            Some(frame) if frame.frame_type == FrameType::Response => oks += 1,
            Some(frame) => return (oks, Some(frame_text(&frame))),
            None => return (oks, None),
        }
    }
}

fn publishes_allowed(admin: SocketAddr) -> f64 {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    let labels = [("action", "publish"), ("outcome", "allow")];
    Exposition::parse(&body).sum("nsqgate_decisions_total", &labels)
}

#[tokio::test]
async fn publishes_sent_together_stop_at_the_first_the_policy_denies() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, keys) = start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    // One publish on its own first, so the session holds tokens leased ahead (the default
    // `[rate_limits]`) and what follows is drawn as runs. Then five allowed, three denied, two
    // allowed again: the five are published, then the client is refused, and nothing after
    // the first denied one reaches nsqd.
    let mut client = RawClient::authenticated(gate.addr, &connector, &keys.writer).await;
    common::nsqclient::assert_ok(client.publish("runs.a", b"m").await, "the first PUB");
    let topics = ["runs.a"; 5].into_iter().chain(["forbidden"; 3]);
    let bytes = publishes(topics.chain(["runs.b"; 2]), b"m");
    client.send_raw(&bytes).await;
    let (oks, refusal) = oks_then_refusal(&mut client).await;
    assert_eq!(oks, 5);
    let refusal = refusal.expect("a refusal");
    assert!(refusal.starts_with("E_UNAUTHORIZED"), "{refusal}");
    assert!(client.closed_within(Duration::from_secs(5)).await);

    // A denied one first: nothing at all is published.
    let mut client = RawClient::authenticated(gate.addr, &connector, &keys.writer).await;
    common::nsqclient::assert_ok(client.publish("runs.a", b"m").await, "the first PUB");
    let bytes = publishes(["forbidden"; 3].into_iter().chain(["runs.c"; 4]), b"m");
    client.send_raw(&bytes).await;
    let (oks, refusal) = oks_then_refusal(&mut client).await;
    assert_eq!(oks, 0);
    assert!(refusal.expect("a refusal").starts_with("E_UNAUTHORIZED"));

    assert_eq!(nsqd.message_count("runs.a"), 1 + 5 + 1);
    assert_eq!(nsqd.message_count("forbidden"), 0);
    assert_eq!(nsqd.message_count("runs.b"), 0);
    assert_eq!(nsqd.message_count("runs.c"), 0);
}

#[tokio::test]
async fn publishes_sent_together_past_the_burst_are_refused_where_it_ends() {
    const SENT: usize = 6500;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, keys) = start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut client = RawClient::authenticated(gate.addr, &connector, &keys.limited).await;
    // The first publish on its own: the session now holds a lease of tokens taken ahead.
    let first = client.publish("runs.limited", b"m").await;
    common::nsqclient::assert_ok(first, "the first PUB");
    // The rest in writes of 100, replies read only after: runs drawn from the lease.
    let sending = async {
        for _ in 0..(SENT - 1) / 100 {
            client
                .send_raw(&publishes(["runs.limited"; 100], b"m"))
                .await;
        }
        client
            .send_raw(&publishes(["runs.limited"; 99], b"m"))
            .await;
        oks_then_refusal(&mut client).await
    };
    let (oks, refusal) = sending.await;
    let refusal = refusal.expect("a refusal past the burst");
    assert!(
        refusal.starts_with("E_PUB_FAILED PUB failed: rate limit exceeded"),
        "{refusal}"
    );
    // The burst, and what refilled at 1/s while the test ran: never the whole lot.
    let published = oks + 1;
    assert!((6400..6420).contains(&published), "{published} published");
    assert_eq!(nsqd.message_count("runs.limited"), published as u64);
}

#[tokio::test]
async fn every_publish_sent_together_is_counted_as_allowed() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let (gate, keys) = start(&pki, &nsqd);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let before = publishes_allowed(gate.admin());

    let mut client = RawClient::authenticated(gate.addr, &connector, &keys.writer).await;
    client
        .send_raw(&publishes(["runs.counted"; 40], b"m"))
        .await;
    for _ in 0..40 {
        let reply = client.read_frame_within(Duration::from_secs(15)).await;
        common::nsqclient::assert_ok(reply, "PUB");
    }
    assert_eq!(publishes_allowed(gate.admin()) - before, 40.0);
    assert_eq!(nsqd.message_count("runs.counted"), 40);
}
