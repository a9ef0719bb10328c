//! The operational log as an operator reads it: `--log-format json` writes nothing but JSON
//! lines, a refused AUTH says why (as the audit line does), and nsqd being down says "nsqd
//! unavailable" to the client and to the log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};
use common::wire::Command;
use common::{refusing_port, GateConfig, Nsqd, Pki};
use nsqgate::auth::apikey;

/// A policy with one publishing API key; returns the key.
fn writer_policy(pki: &Pki) -> String {
    let key = apikey::generate();
    let policy = format!(
        "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"*\"] }}]\n\n\
         [api_keys.writer]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
        common::key_sha256(key.as_bytes())
    );
    pki.write_policy("logs-policy", "policy.toml", &policy);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_line_is_a_json_object() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let key = writer_policy(&pki);
    let gate = GateConfig::new(nsqd.tcp)
        .policy("logs-policy")
        .start_env(&pki, &[("NSQGATE_LOG_FORMAT", "json")]);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut writer = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_ok(writer.publish("orders", b"x").await, "PUB");
    drop(writer);
    let (mut stranger, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let refused = stranger.auth("nsqk_notakey").await.expect("AUTH reply");
    assert_eq!(frame_text(&refused), "E_AUTH_FAILED AUTH failed");
    let mut garbage = RawClient::plain(gate.addr).await;
    garbage.send_raw(b"NOT A COMMAND\n").await;
    let _ = garbage.read_frame().await;
    gate.wait_log(&["AUTH failed: "]);
    gate.wait_log(&[r#""kind":"closed""#]);

    let log = gate.log();
    let mut lines = 0;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nwhole log:\n{log}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines >= 10, "only {lines} lines:\n{log}");
    // A line about one connection names it.
    let ended: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["message"] == "connection ended")
        .collect();
    assert!(!ended.is_empty(), "{log}");
    assert!(ended
        .iter()
        .all(|v| v["span"].as_str().unwrap_or("").starts_with("conn{peer=")));
    // The writer went away without a TLS close_notify, as clients do: the normal course,
    // logged at debug.
    let closed: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "closed")
        .collect();
    assert!(!closed.is_empty(), "no ordinary disconnect logged:\n{log}");
    assert!(closed.iter().all(|v| v["level"] == "DEBUG"), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_auth_logs_the_reason_the_audit_line_gives() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    writer_policy(&pki);
    let gate = GateConfig::new(nsqd.tcp).policy("logs-policy").start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    client.auth("nsqk_notakey").await.expect("AUTH reply");
    let audit = gate.wait_audit("the failed AUTH", |e| e["outcome"] == "failure");
    let reason = audit["reason"].as_str().unwrap().to_owned();
    assert_eq!(reason, "unknown API key");
    assert_eq!(audit["level"], "WARN", "a failure is not INFO: {audit}");
    gate.wait_log(&[&format!("E_AUTH_FAILED AUTH failed: {reason}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_down_is_nsqd_unavailable_to_the_client_and_the_log() {
    let pki = Pki::new();
    let (_held, nowhere) = refusing_port();
    let gate = GateConfig::anonymous(nowhere).start(&pki);
    let mut client = RawClient::plain(gate.addr).await;
    client
        .send(&Command::Identify {
            body: br#"{"feature_negotiation":true,"tls_v1":true}"#.to_vec().into(),
        })
        .await;
    let frame = client.read_frame().await.expect("an error frame");
    assert_eq!(frame_text(&frame), "E_IDENTIFY_FAILED nsqd unavailable");
    let line = gate.wait_log(&["nsqd unavailable: cannot connect to nsqd at"]);
    assert_eq!(
        line.matches("nsqd at").count(),
        1,
        "the address once: {line}"
    );
}

/// A client that ends its connection cleanly (close_notify, then FIN) ends it as "closed",
/// at debug. nsqd then closes its TLS connection without a close_notify of its own, which is
/// how nsqd always closes: not nsqd going away (it was logged as a warning, kind
/// "upstream_unavailable", once per connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_cleanly_ends_as_closed_not_as_nsqd_unavailable() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let key = writer_policy(&pki);
    let gate = GateConfig::new(nsqd.tcp).policy("logs-policy").start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut writer = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_ok(writer.publish("orders", b"x").await, "PUB");
    writer.finish_sending().await;
    assert!(writer.closed_within(Duration::from_secs(5)).await);
    // The connection's one ending line, at whatever level (a clean close says "closed").
    let line = gate.wait_log(&["nsqgate::error", "kind="]);
    let log = gate.log();
    assert!(line.contains(r#"kind="closed""#), "{line}\n{log}");
    assert!(line.contains("DEBUG"), "{line}\n{log}");
    assert!(!log.contains("upstream_unavailable"), "{log}");
}
