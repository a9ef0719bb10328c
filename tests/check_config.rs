//! `nsqgate check-config` loads and checks everything a start would (policy, certificate and
//! key pairs, CAs, CRLs, JWT keys), and with `--probe` reaches each nsqd with a verified
//! handshake; misspelt keys get the nearest valid name, keys in `[[arrays]]` their line; a
//! lookupd node pointing at no HTTP front fails; a key file others can write is refused by
//! `run` and `check-config`, naming it. The real binary, and real nsqd for the probes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{nsqgate, write_secret, GateConfig, Nsqd, Pki};

/// check-config on `toml` written beside the test PKI; exit code and stderr.
fn check(pki: &Pki, toml: &str, extra: &[&str]) -> (i32, String) {
    let path = pki.path("check.toml");
    write_secret(&path, toml.as_bytes());
    let mut args = vec!["check-config", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, out, err) = nsqgate(&args);
    (code, format!("{out}{err}"))
}

/// A config whose nsqd is never contacted (check-config without --probe binds nothing).
fn config() -> GateConfig {
    GateConfig::anonymous("127.0.0.1:1".parse().unwrap())
}

#[test]
fn everything_the_config_names_is_loaded() {
    let pki = Pki::new();
    let (code, text) = check(&pki, &config().toml(), &[]);
    assert_eq!(code, 0, "{text}");

    // A missing policy folder.
    let missing = GateConfig::new("127.0.0.1:1".parse().unwrap())
        .auth("require_identity = false")
        .policy("no-such-folder");
    let (code, text) = check(&pki, &missing.toml(), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no-such-folder"), "{text}");

    // A policy file that is not TOML.
    pki.write_policy("broken-policy", "p.toml", "[roles.r\n");
    let broken = GateConfig::new("127.0.0.1:1".parse().unwrap())
        .auth("require_identity = false")
        .policy("broken-policy");
    let (code, text) = check(&pki, &broken.toml(), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("p.toml"), "{text}");

    // A certificate that does not go with its key (nsqd's certificate, nsqgate's key).
    let mismatched = config()
        .toml()
        .replace("tls_cert = \"gate.pem\"", "tls_cert = \"nsqd.pem\"");
    let (code, text) = check(&pki, &mismatched, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("key"), "{text}");

    // nsqgate's client certificate toward nsqd, with the wrong key.
    let upstream = config().upstream("tls_cert = \"gate.pem\"\ntls_key = \"nsqd.key\"");
    let (code, text) = check(&pki, &upstream.toml(), &[]);
    assert_eq!(code, 1, "{text}");

    // The admin listener's certificate, with the wrong key.
    let admin = config().table(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"gate.pem\"\ntls_key = \"nsqd.key\"",
    );
    let (code, text) = check(&pki, &admin.toml(), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("key"), "{text}");

    // A CRL that is not one.
    std::fs::write(pki.path("bad.crl.pem"), "-----BEGIN X509 CRL-----\nnope\n").unwrap();
    let crl = config().client("tls_client_ca = \"ca.pem\"\ntls_client_crls = [\"bad.crl.pem\"]");
    let (code, text) = check(&pki, &crl.toml(), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("bad.crl.pem"), "{text}");
}

#[test]
fn misspelt_keys_get_the_nearest_name_and_array_keys_their_line() {
    let pki = Pki::new();
    let typo = config()
        .toml()
        .replace("tls_key = \"gate.key\"", "tls_kye = \"gate.key\"");
    let (code, text) = check(&pki, &typo, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`client.tls_kye`: unknown key; did you mean `tls_key`?"),
        "{text}"
    );

    let node = |listen: &str, extra: &str| {
        format!("[[nodes]]\nlisten = \"{listen}\"\nnsqd_tcp_address = \"127.0.0.1:2\"\n{extra}")
    };
    let toml = config()
        .table(&node("127.0.0.1:0", ""))
        .table(&node("127.0.0.1:0", "tls_server_nam = \"x\""))
        .toml();
    let line = toml
        .lines()
        .position(|l| l.starts_with("tls_server_nam ="))
        .unwrap()
        + 1;
    let (code, text) = check(&pki, &toml, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("line {line}: ")), "{text}");
    assert!(text.contains("did you mean `tls_server_name`?"), "{text}");

    let toml = config()
        .table(&node("127.0.0.1:0", ""))
        .table(&node("not an address", ""))
        .toml();
    let line = toml
        .lines()
        .position(|l| l.contains("not an address"))
        .unwrap()
        + 1;
    let (code, text) = check(&pki, &toml, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("line {line}: `nodes[1].listen`")),
        "{text}"
    );
}

#[test]
fn a_lookupd_node_pointing_at_no_front_fails() {
    let pki = Pki::new();
    let gateway = |second_http_port: u16| {
        config()
            .table("[http.nsqd]\nlisten = \"127.0.0.1:14152\"\nupstream = \"127.0.0.1:3\"")
            .table("[[nodes]]\nlisten = \"127.0.0.1:14160\"\nnsqd_tcp_address = \"127.0.0.1:2\"")
            .table("[http.lookupd]\nlisten = \"127.0.0.1:14161\"\nupstream = \"127.0.0.1:4\"")
            .table(&format!(
                "[[http.lookupd.nodes]]\nbroadcast_address = \"10.0.0.2\"\ntcp_port = 4150\nhttp_port = 4151\ngate_address = \"gate\"\ngate_tcp_port = 14160\ngate_http_port = {second_http_port}"
            ))
            .toml()
    };
    let (code, text) = check(&pki, &gateway(14152), &[]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = check(&pki, &gateway(14153), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("`http.lookupd.nodes[0].gate_http_port`"),
        "{text}"
    );
    assert!(text.contains("port 14153 is no HTTP front"), "{text}");
}

#[test]
fn probe_reaches_each_nsqd_with_a_verified_handshake() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let good = GateConfig::anonymous(nsqd.tcp).http_nsqd(nsqd.https).toml();
    let (code, text) = check(&pki, &good, &["--probe"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "probe nsqd HTTPS {} (TLS verified): ok",
            nsqd.https
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("probe nsqd {}", nsqd.tcp)) && text.contains(": ok"),
        "{text}"
    );
    // Without --probe nothing is contacted, so a wrong name passes; with it, it fails.
    let wrong = GateConfig::anonymous(nsqd.tcp)
        .verify_upstream_as("wrong.example", "ca.pem")
        .http_nsqd(nsqd.https)
        .toml();
    assert_eq!(check(&pki, &wrong, &[]).0, 0);
    let (code, text) = check(&pki, &wrong, &["--probe"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("probe nsqd {}", nsqd.tcp)) && text.contains("failed"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "probe nsqd HTTPS {} (TLS verified): failed",
            nsqd.https
        )),
        "{text}"
    );
}

#[test]
fn a_key_file_others_can_write_is_refused_by_name() {
    let pki = Pki::new();
    let path = pki.path("check.toml");
    write_secret(&path, config().toml().as_bytes());
    let key = pki.path("gate.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o602)).unwrap();
    let named = format!(
        "{}: mode 0602 lets group or others write this secret",
        key.display()
    );
    let (code, _, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&named), "{err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("run started with a key file others can write");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&named), "{err}");
}
