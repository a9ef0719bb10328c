//! Operational safety end to end: file modes of keys, secrets and decisions (the CLI), log
//! lines that a client cannot forge, connection caps on by default, and an audit log that
//! cannot be silenced or flooded. Real nsqd and the real nsqgate binary throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn nsqgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(args)
        .env_remove("NSQGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// === file modes ===

#[test]
fn certs_dev_writes_private_keys_for_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    // A key left from an earlier run with a wide mode is replaced, not reused.
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("ca.key"), "old").unwrap();
    chmod(&certs.join("ca.key"), 0o644);
    let (code, _, err) = nsqgate(&["certs", "dev", "--out", certs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for name in ["ca", "nsqgate", "nsqd", "client"] {
        let key = certs.join(format!("{name}.key"));
        assert_eq!(mode(&key), 0o600, "{} is not private", key.display());
        assert!(std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY"));
        assert_eq!(mode(&certs.join(format!("{name}.pem"))) & 0o600, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&certs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A configuration naming every kind of file nsqgate loads: TLS keys and certificates of the
/// listener and the upstream client, a client CA and CRL, a JWT HMAC secret, policy files.
fn full_config(dir: &Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let (code, _, err) = nsqgate(&["certs", "dev", "--out", certs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ca = nsqgate::certs::DevCa::generate("crl CA").unwrap();
    std::fs::write(dir.join("revoked.crl.pem"), ca.crl(&[]).unwrap()).unwrap();
    common::write_secret(
        &dir.join("hs.secret"),
        b"an-hs256-secret-of-at-least-32-bytes!!",
    );
    std::fs::create_dir(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/p.toml"), "[roles.r]\n").unwrap();
    let config = r#"
[client]
listen = "127.0.0.1:0"
tls_cert = "certs/nsqgate.pem"
tls_key = "certs/nsqgate.key"
tls_client_ca = "certs/ca.pem"
tls_client_crls = ["revoked.crl.pem"]

[upstream]
nsqd_tcp_address = "127.0.0.1:1"
tls_server_name = "localhost"
tls_ca = "certs/ca.pem"
tls_cert = "certs/client.pem"
tls_key = "certs/client.key"

[auth.jwt]
keys = [{ kid = "hs", algorithm = "HS256", secret_file = "hs.secret" }]
"#;
    let file = dir.join("proxy.toml");
    std::fs::write(&file, config).unwrap();
    chmod(&file, 0o644);
    file
}

#[test]
fn start_up_refuses_secrets_others_can_read_and_decisions_they_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = full_config(dir.path());
    let config_arg = config.to_str().unwrap();
    let (code, out, err) = nsqgate(&["check-config", "--config", config_arg]);
    assert_eq!(code, 0, "the private set-up checks out: {out}{err}");

    // (file, a mode that must be refused, the key that names it)
    let cases = [
        ("certs/nsqgate.key", 0o640, "client.tls_key"),
        ("certs/client.key", 0o604, "upstream.tls_key"),
        ("certs/nsqgate.key", 0o620, "client.tls_key"),
        ("hs.secret", 0o644, "auth.jwt.keys"),
        ("certs/ca.pem", 0o664, "client.tls_client_ca"),
        ("revoked.crl.pem", 0o646, "client.tls_client_crls"),
        ("policies/p.toml", 0o666, "auth.policy_dir"),
        ("policies", 0o777, "auth.policy_dir"),
        ("proxy.toml", 0o664, "--config"),
    ];
    for (file, bad, key) in cases {
        let path = dir.path().join(file);
        let good = mode(&path);
        chmod(&path, bad);
        let (code, _, err) = nsqgate(&["check-config", "--config", config_arg]);
        assert_eq!(code, 1, "{file} at {bad:o} was accepted: {err}");
        let named = format!("{}: mode {:04o}", path.display(), bad);
        assert!(err.contains(&named), "{file}: {err}");
        assert!(err.contains(&format!("(`{key}`)")), "{file}: {err}");
        // The operator may accept it knowingly; the file is still named.
        let (code, _, err) = nsqgate(&[
            "check-config",
            "--config",
            config_arg,
            "--allow-insecure-permissions",
        ]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(err.contains("warning: ") && err.contains(&named), "{err}");
        chmod(&path, good);
    }

    // `run` refuses before it listens on anything.
    chmod(&dir.path().join("certs/nsqgate.key"), 0o644);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["run", "--config", config_arg])
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
            panic!("run started with a world-readable private key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("nsqgate.key: mode 0644"), "{err}");
}

// === log injection ===

/// Control bytes (C0, DEL, C1 CSI) and a bidi override, as a client would smuggle them.
const HOSTILE: &str = "x\x1b[31m\r\nINFO forged line\0\x7f\u{9b}2J\u{202e}";
const HOSTILE_ESCAPED: &str = "x\\x1b[31m\\r\\nINFO forged line\\0\\x7f\\u{9b}2J\\u{202e}";
/// The same for an NSQ command line, which ends at LF and splits at spaces.
const LINE_HOSTILE: &str = "x\x1b[31m\rforged\0\x7f\u{9b}2J\u{202e}";
const LINE_ESCAPED: &str = "x\\x1b[31m\\rforged\\0\\x7f\\u{9b}2J\\u{202e}";
const HS_SECRET: &[u8] = b"ops-security-hs256-secret-0123456789abcdef";

/// Bytes in a log that a terminal or a line-oriented reader would act on: every control
/// character but the line ends, and the bidi override.
fn control_bytes(log: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(log);
    text.lines()
        .flat_map(|line| line.chars())
        .filter(|c| c.is_control() || *c == '\u{202e}')
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect()
}

fn hs256(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let key = jsonwebtoken::EncodingKey::from_secret(HS_SECRET);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// One request over TLS, written byte for byte; returns the response head.
async fn https_raw(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    request: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn client_bytes_cannot_forge_or_colour_log_lines() {
    use common::nsqclient::{frame_text, tls_connector, RawClient};
    use nsqgate::nsq::Command;

    let pki = common::Pki::new();
    common::write_secret(&pki.path("hs.secret"), HS_SECRET);
    pki.write_policy(
        "policy",
        "p.toml",
        "[roles.writer]\nallow = [{ action = \"publish\", topics = [\"ok\"] }]\n",
    );
    let nsqd = common::Nsqd::start(&pki);
    let port = common::free_port();
    let https = common::free_port();
    let rest = format!(
        r#"
[auth]
policy_dir = "policy"

[auth.jwt]
keys = [{{ kid = "hs", algorithm = "HS256", secret_file = "hs.secret" }}]

[audit]
file = "audit.log"

[http.nsqd]
listen = "127.0.0.1:{https}"
upstream = "{}"
"#,
        nsqd.https
    );
    let config = common::gate_config(port, nsqd.tcp, "", &rest);
    let gate = common::Gate::start_config(&pki, &config, port);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = hs256(&serde_json::json!({ "sub": HOSTILE, "roles": ["writer"], "exp": exp }));

    // An AUTH whose identity claim carries the bytes, then an unknown command made of them.
    let identify = serde_json::json!({ "user_agent": HOSTILE, "client_id": HOSTILE });
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, identify).await;
    client
        .send(&Command::Auth {
            secret: token.clone().into_bytes().into(),
        })
        .await;
    let reply = client.read_frame().await.expect("AUTH reply");
    assert!(
        frame_text(&reply).contains("identity"),
        "{}",
        frame_text(&reply)
    );
    assert_eq!(&client.publish("ok", b"x").await.unwrap().data[..], b"OK");
    client
        .send_raw(format!("FOO{LINE_HOSTILE}BAR\n").as_bytes())
        .await;
    let refused = client.read_frame().await.expect("refusal");
    assert!(
        frame_text(&refused).starts_with("E_INVALID"),
        "{}",
        frame_text(&refused)
    );
    // A topic name made of them (refused as nsqd refuses it).
    let (mut other, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    other
        .send_raw(format!("PUB {LINE_HOSTILE}\n\0\0\0\x01x").as_bytes())
        .await;
    let _ = other.read_frame().await;

    // Over HTTP: the topic in the query (percent-encoded), the path, and the User-Agent.
    let https_addr: std::net::SocketAddr = ([127, 0, 0, 1], https).into();
    let encoded = "x%1b%5b31m%0d%0aINFO%20forged%7f%c2%9b%e2%80%ae";
    let mut request = format!(
        "POST /pub?topic={encoded} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 1\r\nConnection: close\r\nUser-Agent: ua"
    )
    .into_bytes();
    request.extend_from_slice("\u{9b}2J\r\n\r\nx".as_bytes());
    let status = https_raw(https_addr, &connector, &request).await;
    assert!(status.starts_with("HTTP/1.1 4"), "{status}");
    let request = format!(
        "GET /stats{encoded}?format=json HTTP/1.1\r\nHost: gate\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    https_raw(https_addr, &connector, request.as_bytes()).await;

    // The identity's escaped form is readable in the audit file once the lines are there.
    let audit_path = pki.path("audit.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (audit, events) = loop {
        let audit = std::fs::read(&audit_path).unwrap_or_default();
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&audit)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let authed = events
            .iter()
            .any(|e| e["action"] == "auth" && e["outcome"] == "success");
        if authed && gate.log().contains("invalid command FOO") {
            break (audit, events);
        }
        assert!(
            Instant::now() < deadline,
            "audit: {events:?}\nlog: {}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read(pki.path(&format!("gate-{port}.log"))).unwrap();
    assert_eq!(control_bytes(&audit), Vec::<String>::new(), "audit file");
    assert_eq!(control_bytes(&log), Vec::<String>::new(), "operational log");
    assert!(
        events.iter().any(|e| e["identity"] == HOSTILE_ESCAPED),
        "the identity is still there to read: {events:?}"
    );
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains(&format!("invalid command FOO{LINE_ESCAPED}BAR")),
        "{log}"
    );
    drop(client);
}
