//! The policy folder changing under a running nsqgate (README, "Policy"): a broken change is
//! refused, logged and counted, and the last good policy stays in force for live and new
//! connections; SIGHUP re-reads the folder at once, whatever the polling interval.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod claims_support;
mod common;

use std::time::{Duration, Instant};

use common::nsqclient::{frame_text, tls_connector, RawClient};
use common::{Gate, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

/// `key` may publish to `topic`.
fn policy(key: &str, topic: &str) -> String {
    format!(
        "[roles.publisher]\nallow = [{{ action = \"publish\", topics = [\"{topic}\"] }}]\n\n\
         [api_keys.producer]\nsha256 = \"{}\"\nroles = [\"publisher\"]\n",
        common::key_sha256(key.as_bytes())
    )
}

/// A new connection's PUB to `topic`: the reply's text.
async fn publish_text(gate: &Gate, pki: &Pki, key: &str, topic: &str) -> String {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut client = RawClient::authenticated(gate.addr, &connector, key).await;
    let reply = client.publish(topic, b"x").await.expect("a reply");
    frame_text(&reply)
}

/// Polls nsqgate's log until `text` appears `times` times (60 s at most).
fn wait_log(gate: &Gate, text: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while gate.log().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "{text:?} not logged {times} times:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `nsqgate_reloads_total{what="policy",outcome}` on the admin listener.
fn policy_reloads(gate: &Gate, outcome: &str) -> f64 {
    let (status, body) = common::prom::get(gate.admin(), "/metrics");
    assert_eq!(status, 200, "{body}");
    common::prom::Exposition::parse(&body).sum(
        "nsqgate_reloads_total",
        &[("what", "policy"), ("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_broken_policy_change_is_refused_and_the_last_good_policy_stays() {
    let pki = Pki::new();
    let key = apikey::generate();
    pki.write_policy("policy", "main.toml", &policy(&key, "kept"));
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("policy")
        .auth("policy_reload_ms = 100")
        .table("[admin]\nlisten = \"127.0.0.1:0\"")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut live = RawClient::authenticated(gate.addr, &connector, &key).await;
    let ok = live.publish("kept", b"before").await.expect("a reply");
    assert!(ok.is_ok(), "{}", frame_text(&ok));

    // Each broken change would also take the key away if it were applied.
    let broken = [
        (
            "a TOML syntax error",
            "[roles.publisher\nallow = ".to_owned(),
        ),
        (
            "an unknown key",
            "[roles.publisher]\nallow = []\nalow = []\n".to_owned(),
        ),
        (
            "a role nobody defined",
            format!(
                "{}\n[identities]\nbob = [\"missing\"]\n",
                policy(&key, "other")
            ),
        ),
    ];
    for (n, (what, text)) in broken.iter().enumerate() {
        pki.write_policy("policy", "main.toml", text);
        wait_log(&gate, "policy change refused", n + 1);
        let ok = live
            .publish("kept", what.as_bytes())
            .await
            .expect("a reply");
        assert!(
            ok.is_ok(),
            "after {what}, the live connection: {}\n{}",
            frame_text(&ok),
            gate.log()
        );
        assert_eq!(
            publish_text(&gate, &pki, &key, "kept").await,
            "OK",
            "after {what}, a new connection"
        );
    }

    // Each refusal is counted where an operator's scraper looks.
    assert_eq!(policy_reloads(&gate, "failure"), broken.len() as f64);

    // A good change applies.
    pki.write_policy("policy", "main.toml", &policy(&key, "other"));
    wait_log(&gate, "policy reloaded", 1);
    assert_eq!(policy_reloads(&gate, "success"), 1.0);
    assert_eq!(publish_text(&gate, &pki, &key, "other").await, "OK");
    assert!(publish_text(&gate, &pki, &key, "kept")
        .await
        .starts_with("E_UNAUTHORIZED"));
    assert_eq!(nsqd.message_count("kept"), 1 + 2 * broken.len() as u64);
}

#[tokio::test]
async fn sighup_rereads_the_policy_at_once() {
    let pki = Pki::new();
    let key = apikey::generate();
    pki.write_policy("policy", "main.toml", &policy(&key, "before"));
    let nsqd = Nsqd::start(&pki);
    // Polled once an hour: only the signal can make the change apply within the test.
    let gate = GateConfig::new(nsqd.tcp)
        .policy("policy")
        .auth("policy_reload_ms = 3600000")
        .start(&pki);
    assert_eq!(publish_text(&gate, &pki, &key, "before").await, "OK");
    pki.write_policy("policy", "main.toml", &policy(&key, "after"));
    assert!(publish_text(&gate, &pki, &key, "after")
        .await
        .starts_with("E_UNAUTHORIZED"));

    let status = std::process::Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_log(&gate, "policy reloaded", 1);
    assert_eq!(publish_text(&gate, &pki, &key, "after").await, "OK");
    assert_eq!(nsqd.message_count("after"), 1);
}
