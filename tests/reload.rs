//! Reload without dropping anyone: certificates and keys replaced on disk (or SIGHUP) are
//! presented by the next handshake while open connections keep working; a broken file changes
//! nothing and the refusal is logged and counted. Real nsqd and the real nsqgate binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nsqclient::{assert_ok, tls_connector, RawClient};
use common::wire::Command;
use common::{Gate, GateConfig, Nsqd, Pki};
use rustls::pki_types::ServerName;

/// How often nsqgate looks at its files in these tests.
const RELOAD: &str = "policy_reload_ms = 100";

fn hosts() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

/// The serial number of the certificate a TLS handshake with `addr` is shown.
async fn presented_serial(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.raw_serial().to_vec()
}

/// Waits (up to 10 s) until a handshake with `addr` is shown the certificate `serial`.
async fn wait_presented(addr: SocketAddr, pki: &Pki, serial: &[u8], gate: &Gate) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented_serial(addr, pki).await != serial {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never presented; log:\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) for a log line holding every one of `parts`.
async fn publish(client: &mut RawClient, topic: &str, body: &[u8]) {
    client
        .send(&Command::Pub {
            topic: topic.into(),
            body: body.to_vec().into(),
        })
        .await;
    assert_ok(client.read_frame().await, "PUB");
}

#[tokio::test]
async fn a_replaced_certificate_is_presented_at_once_and_open_connections_continue() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp)
        .auth(RELOAD)
        .http_nsqd(nsqd.https)
        .start(&pki);
    let first = serial_in_file(&pki);
    assert_eq!(presented_serial(gate.addr, &pki).await, first);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut open, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    publish(&mut open, "rotation", b"before").await;

    let next = pki.ca.issue_server("gate rotated", &hosts()).unwrap();
    assert_ne!(next.serial, first);
    pki.write("gate", &next);
    wait_presented(gate.addr, &pki, &next.serial, &gate).await;
    // The HTTPS fronts use the same set-up.
    assert_eq!(presented_serial(gate.http("nsqd"), &pki).await, next.serial);
    // The connection made with the old certificate goes on; new ones work too.
    publish(&mut open, "rotation", b"during").await;
    let (mut fresh, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    publish(&mut fresh, "rotation", b"after").await;
    assert_eq!(nsqd.message_count("rotation"), 3);
    gate.wait_log(&["what=\"client_tls\"", "reloaded"]);
}

#[tokio::test]
async fn a_broken_certificate_changes_nothing_and_is_counted() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).auth(RELOAD).start(&pki);
    let first = serial_in_file(&pki);

    // Not a certificate at all.
    std::fs::write(
        pki.path("gate.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    let line = gate.wait_log(&["what=\"client_tls\"", "failures=1"]);
    assert!(
        line.contains("gate.pem") && line.contains("cut short"),
        "{line}"
    );
    assert_eq!(presented_serial(gate.addr, &pki).await, first);

    // A good certificate whose key is not the one beside it.
    let other = pki.ca.issue_server("gate other", &hosts()).unwrap();
    std::fs::write(pki.path("gate.pem"), &other.cert).unwrap();
    gate.wait_log(&["what=\"client_tls\"", "failures=2"]);
    assert_eq!(presented_serial(gate.addr, &pki).await, first);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    publish(&mut client, "still", b"served").await;
}

#[tokio::test]
async fn a_key_others_can_write_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = GateConfig::anonymous(nsqd.tcp).auth(RELOAD).start(&pki);
    let first = serial_in_file(&pki);
    let key = pki.path("gate.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o602)).unwrap();
    let next = pki.ca.issue_server("gate writable", &hosts()).unwrap();
    // Written in place: the file keeps the mode that lets others write it.
    std::fs::write(&key, &next.key).unwrap();
    std::fs::write(pki.path("gate.pem"), &next.cert).unwrap();
    let line = gate.wait_log(&["what=\"client_tls\"", "failures=1"]);
    assert!(line.contains("gate.key: mode 0602"), "{line}");
    assert_eq!(presented_serial(gate.addr, &pki).await, first);
}

#[tokio::test]
async fn sighup_reloads_a_certificate_at_once() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    // Files are looked at only once an hour: only the signal can explain a reload.
    let gate = GateConfig::anonymous(nsqd.tcp)
        .auth("policy_reload_ms = 3600000")
        .start(&pki);
    let next = pki.ca.issue_server("gate hup", &hosts()).unwrap();
    pki.write("gate", &next);
    std::process::Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    wait_presented(gate.addr, &pki, &next.serial, &gate).await;
}

#[tokio::test]
async fn nsqgate_reload_signals_the_process_its_pid_file_names() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let pid_file = pki.path("gate.pid");
    let pid_env = pid_file.to_string_lossy().into_owned();
    let mut gate = GateConfig::anonymous(nsqd.tcp)
        .auth("policy_reload_ms = 3600000")
        .start_env(&pki, &[("NSQGATE_PID_FILE", &pid_env)]);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), gate.pid().to_string());
    let next = pki.ca.issue_server("gate reload", &hosts()).unwrap();
    pki.write("gate", &next);
    let reload = std::process::Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert!(said.contains(&format!("pid {}", gate.pid())), "{said}");
    wait_presented(gate.addr, &pki, &next.serial, &gate).await;

    gate.terminate();
    assert!(gate.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!pid_file.exists(), "a clean exit removes the pid file");
    // The file is gone: nothing is signalled, and the command says why.
    let stale = std::process::Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    assert_eq!(stale.status.code(), Some(1));
    let said = String::from_utf8_lossy(&stale.stderr);
    assert!(said.contains("cannot read the pid file"), "{said}");
}

fn hangup(gate: &Gate) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_admin_listeners_certificate_reloads_and_a_broken_one_changes_nothing() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let first = pki.ca.issue_server("admin", &hosts()).unwrap();
    pki.write("admin", &first);
    // Files are looked at only once an hour: only the signal can explain a reload.
    let gate = GateConfig::anonymous(nsqd.tcp)
        .auth("policy_reload_ms = 3600000")
        .table(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"admin.pem\"\ntls_key = \"admin.key\"",
        )
        .start(&pki);
    assert_eq!(presented_serial(gate.admin(), &pki).await, first.serial);

    let next = pki.ca.issue_server("admin rotated", &hosts()).unwrap();
    pki.write("admin", &next);
    hangup(&gate);
    wait_presented(gate.admin(), &pki, &next.serial, &gate).await;
    gate.wait_log(&["what=\"admin_tls\"", "reloaded"]);

    // A certificate that does not go with the key: refused, the one in force stays.
    std::fs::copy(pki.path("nsqd.pem"), pki.path("admin.pem")).unwrap();
    hangup(&gate);
    gate.wait_log(&["what=\"admin_tls\"", "change refused"]);
    assert_eq!(presented_serial(gate.admin(), &pki).await, next.serial);
}

#[tokio::test]
async fn a_replaced_upstream_ca_applies_to_the_next_nsqd_connection() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    std::fs::copy(pki.path("ca.pem"), pki.path("upstream-ca.pem")).unwrap();
    let gate = GateConfig::anonymous(nsqd.tcp)
        .verify_upstream_as("127.0.0.1", "upstream-ca.pem")
        .auth(RELOAD)
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut open, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    publish(&mut open, "upstream", b"before").await;

    // A CA that did not sign nsqd's certificate: nsqd can no longer be verified.
    let other = nsqgate::certs::DevCa::generate("another CA").unwrap();
    std::fs::write(pki.path("upstream-ca.pem"), &other.pem().cert).unwrap();
    gate.wait_log(&["what=\"upstream_tls\"", "reloaded"]);
    let (mut refused, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    refused
        .send(&Command::Pub {
            topic: "upstream".into(),
            body: b"unverified".to_vec().into(),
        })
        .await;
    let reply = refused.read_frame().await;
    assert!(reply.as_ref().is_none_or(|f| !f.is_ok()), "{reply:?}");
    // The connection verified with the old CA goes on.
    publish(&mut open, "upstream", b"during").await;

    std::fs::copy(pki.path("ca.pem"), pki.path("upstream-ca.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        client
            .send(&Command::Pub {
                topic: "upstream".into(),
                body: b"after".to_vec().into(),
            })
            .await;
        if client.read_frame().await.is_some_and(|f| f.is_ok()) {
            break;
        }
        assert!(Instant::now() < deadline, "the restored CA never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nsqd.message_count("upstream"), 3);
}

fn serial_in_file(pki: &Pki) -> Vec<u8> {
    let pem = std::fs::read(pki.path("gate.pem")).unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
    cert.raw_serial().to_vec()
}
