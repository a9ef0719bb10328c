//! docs/operations.md and deploy/grafana/nsqgate.json against a real nsqgate: after a short
//! scripted run (a publish, a denial, a failed AUTH, an oversized message, a failed TLS
//! handshake, a SIGHUP), every metric family `/metrics` exposes is explained in
//! docs/operations.md and listed in docs/metrics.md, and every PromQL expression of the
//! dashboard parses (`promtool check rules`) and uses only metrics the exposition has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nsqclient::{assert_error, assert_ok, tls_connector, RawClient};
use common::prom::{get, Exposition};
use common::{prometheus, Gate, Nsqd, Pki};

/// The example sidecar's key (examples/sidecar/README.md): publishes to orders.*.
const KEY: &str = "nsqk_example_sidecar_not_secret_00000000000000000";

fn repo(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The families a dashboard may use: what `/metrics` names in its `# TYPE` lines.
fn families(admin: SocketAddr) -> BTreeSet<String> {
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body).types.into_keys().collect()
}

/// The sidecar example in front of a real nsqd, after one of everything the dashboard shows.
async fn exercised(pki: &Pki, nsqd: &Nsqd) -> Gate {
    pki.write_policy(
        "policies",
        "sidecar.toml",
        &repo("examples/sidecar/policies/sidecar.toml"),
    );
    let config = repo("examples/sidecar/proxy.toml")
        .replace("certs/nsqgate.", "gate.")
        .replace("certs/ca.pem", "ca.pem");
    let nsqd_address = nsqd.tcp.to_string();
    let gate = Gate::start_config_env(
        pki,
        &config,
        &[
            ("NSQGATE_CLIENT__LISTEN", "127.0.0.1:0"),
            ("NSQGATE_UPSTREAM__NSQD_TCP_ADDRESS", &nsqd_address),
            ("NSQGATE_UPSTREAM__TLS_SERVER_NAME", "127.0.0.1"),
            ("NSQGATE_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let mut client = RawClient::authenticated(gate.addr, &connector, KEY).await;
    assert_ok(client.publish("orders.new", b"x").await, "PUB");
    assert_error(
        client.publish("payroll", b"x").await,
        "E_UNAUTHORIZED",
        "denied PUB",
    );

    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let wrong = nsqgate::auth::apikey::generate();
    assert_error(client.auth(&wrong).await, "E_AUTH_FAILED", "wrong key");

    // A PUB declaring 2 MiB, over the default 1 MiB max_msg_size: refused from its length.
    let mut client = RawClient::authenticated(gate.addr, &connector, KEY).await;
    let mut head = b"PUB orders.big\n".to_vec();
    head.extend_from_slice(&(2u32 << 20).to_be_bytes());
    client.send_raw(&head).await;
    assert_error(client.read_frame().await, "E_BAD_MESSAGE", "oversized PUB");

    // A TLS-first client that sends a ClientHello record that is not one.
    let mut tcp = std::net::TcpStream::connect(gate.addr).unwrap();
    tcp.write_all(b"\x16\x03\x01\x00\x04nope").unwrap();
    drop(tcp);

    let status = Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    gate
}

#[tokio::test]
async fn the_operations_doc_explains_every_metric_and_the_dashboard_uses_only_real_ones() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = exercised(&pki, &nsqd).await;

    let dashboard: serde_json::Value = serde_json::from_str(&repo("deploy/grafana/nsqgate.json"))
        .expect("deploy/grafana/nsqgate.json is JSON");
    let exprs: Vec<String> = (dashboard["panels"].as_array().unwrap().iter())
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() > 10, "{exprs:?}");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    // Counters with labels appear once counted: wait for the run above to show in each.
    let deadline = Instant::now() + Duration::from_secs(15);
    let exposed = loop {
        let exposed = families(gate.admin());
        let missing: Vec<&String> = used.iter().filter(|m| !exposed.contains(*m)).collect();
        if missing.is_empty() {
            break exposed;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard uses metrics nsqgate does not export: {missing:?}\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let operations = repo("docs/operations.md");
    let reference = repo("docs/metrics.md");
    for family in &exposed {
        let quoted = format!("`{family}`");
        assert!(
            operations.contains(&quoted),
            "docs/operations.md does not explain {family}"
        );
        assert!(
            reference.contains(&quoted),
            "docs/metrics.md does not list {family}"
        );
    }

    // Every expression parses: promtool checks them as recording rules.
    let mut rules = String::from("groups:\n  - name: nsqgate-dashboard\n    rules:\n");
    for (index, expr) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(expr).unwrap();
        rules.push_str(&format!(
            "      - record: nsqgate:dashboard_{index}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(prometheus::tool("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `nsqgate_*` metric names in a PromQL expression, histogram series (`_bucket`,
/// `_count`, `_sum`) named by their family.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("nsqgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names("histogram_quantile(0.9, rate(nsqgate_a_seconds_bucket[5m])) + nsqgate_b"),
        ["nsqgate_a_seconds", "nsqgate_b"]
    );
}
