//! pynsq (PyPI) and nsqjs (npm), installed by scripts/install-clients, publish and consume
//! through nsqgate with TLS, unchanged but for their documented TLS and auth options.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

/// How long one client program may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

use std::time::Duration;

use common::{run_client, Gate, GateConfig, Nsqd, Pki};

pub fn client_args(gate: &Gate, pki: &Pki, topic: &str, count: usize) -> Vec<String> {
    vec![
        format!("--address={}", gate.addr),
        format!("--topic={topic}"),
        "--channel=ch".into(),
        format!("--count={count}"),
        format!("--ca={}", pki.path("ca.pem").display()),
    ]
}

#[test]
fn pynsq_publishes_and_consumes_through_nsqgate_with_tls() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let (ok, summary, stderr) = run_client(
        "python",
        "pynsq_roundtrip.py",
        &client_args(&gate, &pki, "pynsq", 50),
        CLIENT_TIMEOUT,
    );
    assert!(ok, "pynsq round trip failed: {summary}\n{stderr}");
    assert_eq!(summary["received"], 50, "{summary}");
    assert_eq!(nsqd.message_count("pynsq"), 50);
}

#[test]
fn nsqjs_publishes_and_consumes_through_nsqgate_with_tls() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = Gate::start(&pki, &nsqd);
    let (ok, summary, stderr) = run_client(
        "node",
        "nsqjs_roundtrip.js",
        &client_args(&gate, &pki, "nsqjs", 50),
        CLIENT_TIMEOUT,
    );
    assert!(ok, "nsqjs round trip failed: {summary}\n{stderr}");
    assert_eq!(summary["received"], 50, "{summary}");
    assert_eq!(nsqd.message_count("nsqjs"), 50);
}

/// pynsq and nsqjs with only their documented `auth_secret` / `authSecret` option, against a
/// gate that requires an identity: an API key lets them publish and consume their topic.
#[test]
fn client_libraries_authenticate_with_their_auth_secret_option() {
    let pki = Pki::new();
    let key = nsqgate::auth::apikey::generate();
    pki.write_policy(
        "keyed",
        "keyed.toml",
        &format!(
            r#"
[roles.lib]
allow = [
  {{ action = "publish", topics = ["lib-*"] }},
  {{ action = "subscribe", topics = ["lib-*"], channels = ["ch"] }},
]
[api_keys.library-client]
sha256 = "{}"
roles = ["lib"]
"#,
            common::key_sha256(key.as_bytes())
        ),
    );
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::new(nsqd.tcp).policy("keyed").start(&pki);
    for (interpreter, script, topic) in [
        ("python", "pynsq_roundtrip.py", "lib-py"),
        ("node", "nsqjs_roundtrip.js", "lib-js"),
    ] {
        let mut args = client_args(&gate, &pki, topic, 20);
        args.push(format!("--secret={key}"));
        let (ok, summary, stderr) = run_client(interpreter, script, &args, CLIENT_TIMEOUT);
        assert!(ok, "{script} with a secret failed: {summary}\n{stderr}");
        assert_eq!(nsqd.message_count(topic), 20);
        // Without the secret the same client is refused and nothing lands.
        let denied_topic = format!("{topic}-nokey");
        let (ok, summary, _) = run_client(
            interpreter,
            script,
            &client_args(&gate, &pki, &denied_topic, 1),
            CLIENT_TIMEOUT,
        );
        assert!(!ok, "{script} without a secret must fail: {summary}");
        assert!(!nsqd.topic_exists(&denied_topic));
    }
}
