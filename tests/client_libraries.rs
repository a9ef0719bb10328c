//! pynsq (PyPI) and nsqjs (npm), installed by scripts/install-clients, publish and consume
//! through nsqgate with TLS, unchanged but for their documented TLS and auth options.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_output, Gate, Nsqd, Pki};

pub fn clients_dir() -> PathBuf {
    std::env::var_os("NSQGATE_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
}

/// Runs one client program; returns (exit ok, its JSON summary line, stderr).
pub fn run_client(
    interpreter: &str,
    script: &str,
    args: &[String],
) -> (bool, serde_json::Value, String) {
    let dir = clients_dir();
    let program = match interpreter {
        "python" => dir.join(".venv/bin/python"),
        _ => PathBuf::from("node"),
    };
    assert!(
        interpreter != "python" || program.is_file(),
        "{} is missing: run scripts/install-clients (scripts/test does)",
        program.display()
    );
    assert!(
        interpreter != "node" || dir.join("node_modules/nsqjs").is_dir(),
        "nsqjs is missing from {}: run scripts/install-clients",
        dir.display()
    );
    let child = Command::new(&program)
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let (ok, stdout, stderr) = wait_output(child, Duration::from_secs(90), &program);
    let stdout = String::from_utf8_lossy(&stdout);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!("{script} printed no JSON summary; stdout: {stdout}\nstderr: {stderr}")
        });
    (ok, summary, stderr)
}

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
            nsqgate::auth::apikey::hash_hex(key.as_bytes())
        ),
    );
    let nsqd = Nsqd::start(&pki);
    let port = common::free_port();
    let config = common::gate_config(port, nsqd.tcp, "", "[auth]\npolicy_dir = \"keyed\"\n");
    let gate = Gate::start_config(&pki, &config, port);
    for (interpreter, script, topic) in [
        ("python", "pynsq_roundtrip.py", "lib-py"),
        ("node", "nsqjs_roundtrip.js", "lib-js"),
    ] {
        let mut args = client_args(&gate, &pki, topic, 20);
        args.push(format!("--secret={key}"));
        let (ok, summary, stderr) = run_client(interpreter, script, &args);
        assert!(ok, "{script} with a secret failed: {summary}\n{stderr}");
        assert_eq!(nsqd.message_count(topic), 20);
        // Without the secret the same client is refused and nothing lands.
        let denied_topic = format!("{topic}-nokey");
        let (ok, summary, _) = run_client(
            interpreter,
            script,
            &client_args(&gate, &pki, &denied_topic, 1),
        );
        assert!(!ok, "{script} without a secret must fail: {summary}");
        assert!(!nsqd.topic_exists(&denied_topic));
    }
}
