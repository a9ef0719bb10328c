//! The configurations in `examples/` stay loadable and do what their READMEs say: each one,
//! with a dev PKI from `nsqgate certs dev` beside it (the examples name `certs/...` relative
//! to their folder), passes `nsqgate check-config`; the sidecar runs in front of a real nsqd
//! and lets the README's example key publish where its policy says, and nowhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nsqclient::{assert_error, assert_ok, tls_connector, RawClient};
use common::{nsqgate, prom, Gate, Nsqd, Pki};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A copy of `examples/NAME` in a temp folder (modes as a careful checkout has them), with
/// `certs/` made by `nsqgate certs dev` for every host the example names.
fn copy_with_certs(name: &str, hosts: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example(name), dir.path());
    let certs = dir.path().join("certs");
    let mut args = vec!["certs", "dev", "--out", certs.to_str().unwrap()];
    for host in hosts {
        args.extend(["--host", host]);
    }
    let (code, out, err) = nsqgate(&args);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn check_config(dir: &Path) -> (i32, String) {
    let config = dir.join("proxy.toml");
    let (code, out, err) = nsqgate(&["check-config", "--config", config.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn every_example_passes_check_config() {
    for (name, hosts) in [
        ("sidecar", &["localhost", "127.0.0.1"][..]),
        ("gateway", &["gate.internal", "nsqd-1", "nsqd-2"][..]),
    ] {
        let dir = copy_with_certs(name, hosts);
        let (code, text) = check_config(dir.path());
        assert_eq!(code, 0, "examples/{name}: {text}");
        assert!(text.contains("proxy.toml: ok"), "examples/{name}: {text}");
        // What the check stands on: without the certificates the same config is refused.
        std::fs::remove_file(dir.path().join("certs/nsqgate.key")).unwrap();
        let (code, text) = check_config(dir.path());
        assert_eq!(code, 1, "examples/{name} without its key: {text}");
        assert!(text.contains("nsqgate.key"), "{text}");
    }
}

/// The example API key the README's `to_nsq` line sends.
fn readme_key(name: &str) -> String {
    let readme = std::fs::read_to_string(example(name).join("README.md")).unwrap();
    let at = readme
        .find("auth_secret,")
        .expect("an auth_secret in the README")
        + 12;
    readme[at..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_sidecar_example_runs_in_front_of_a_real_nsqd() {
    let pki = Pki::new();
    // README: nsqd with --tls-required=tcp-https, as the harness starts it.
    let nsqd = Nsqd::start(&pki);
    let policy = std::fs::read_to_string(example("sidecar").join("policies/sidecar.toml")).unwrap();
    pki.write_policy("policies", "sidecar.toml", &policy);
    // The harness's PKI names its files differently; only the paths and addresses change.
    let config = std::fs::read_to_string(example("sidecar").join("proxy.toml"))
        .unwrap()
        .replace("certs/nsqgate.", "gate.")
        .replace("certs/ca.pem", "ca.pem");
    let nsqd_address = nsqd.tcp.to_string();
    let gate = Gate::start_config_env(
        &pki,
        &config,
        &[
            ("NSQGATE_CLIENT__LISTEN", "127.0.0.1:0"),
            ("NSQGATE_UPSTREAM__NSQD_TCP_ADDRESS", &nsqd_address),
            ("NSQGATE_UPSTREAM__TLS_SERVER_NAME", "127.0.0.1"),
            ("NSQGATE_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    );
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let key = readme_key("sidecar");
    let mut client = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_ok(
        client.publish("orders.new", b"hello").await,
        "PUB orders.new",
    );
    assert_eq!(nsqd.message_count("orders.new"), 1);
    let mut client = RawClient::authenticated(gate.addr, &connector, &key).await;
    assert_error(
        client.publish("payroll", b"no").await,
        "E_UNAUTHORIZED",
        "PUB outside orders.*",
    );
    assert!(!nsqd.topic_exists("payroll"));

    // README: /readyz answers ready once nsqd passed its probe.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = prom::get(gate.admin(), "/readyz");
        if status == 200 {
            assert!(body.contains("\"ready\":true"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
