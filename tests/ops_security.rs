//! Operational safety end to end: file modes of keys, secrets and decisions (the CLI), log
//! lines that a client cannot forge, connection caps on by default, and an audit log that
//! cannot be silenced or flooded. Real nsqd and the real nsqgate binary throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nsqgate;

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

/// One request over TLS, written byte for byte; returns the status line.
async fn https_raw(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    request: &[u8],
) -> String {
    let response = https_response(addr, connector, request).await;
    response.lines().next().unwrap_or("").to_owned()
}

/// One request over TLS, written byte for byte; returns the whole response.
async fn https_response(
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
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn client_bytes_cannot_forge_or_colour_log_lines() {
    use common::nsqclient::{assert_ok, frame_text, tls_connector, RawClient};

    let pki = common::Pki::new();
    common::write_secret(&pki.path("hs.secret"), HS_SECRET);
    pki.write_policy(
        "policy",
        "p.toml",
        "[roles.writer]\nallow = [{ action = \"publish\", topics = [\"ok\"] }]\n",
    );
    let nsqd = common::Nsqd::start(&pki);
    let rest = format!(
        r#"
[auth.jwt]
keys = [{{ kid = "hs", algorithm = "HS256", secret_file = "hs.secret" }}]

[audit]
file = "audit.log"

[http.nsqd]
listen = "127.0.0.1:0"
upstream = "{}"
"#,
        nsqd.https
    );
    let gate = common::GateConfig::new(nsqd.tcp)
        .policy("policy")
        .table(&rest)
        .start(&pki);
    let https = gate.http("nsqd").port();
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
    let reply = client.auth(&token).await.expect("AUTH reply");
    assert!(
        frame_text(&reply).contains("identity"),
        "{}",
        frame_text(&reply)
    );
    assert_ok(client.publish("ok", b"x").await, "PUB");
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
    let log = gate.log_bytes();
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

// === safe defaults: connection caps ===

/// The soft and hard "Max open files" of a process, from /proc.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut values = line.split_whitespace().skip(3).map(|v| v.parse().unwrap());
    (values.next().unwrap(), values.next().unwrap())
}

/// Connects, upgrades and AUTHs with `key`; Err(the refusal) when nsqgate refuses.
async fn authed(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    key: &str,
) -> Result<common::nsqclient::RawClient, String> {
    use common::nsqclient::{frame_text, RawClient};
    use common::wire::{Command, FrameType};
    let (mut client, _) = RawClient::upgraded(addr, connector, serde_json::json!({})).await;
    client
        .send(&Command::Auth {
            secret: key.as_bytes().to_vec().into(),
        })
        .await;
    match client.read_frame_within(Duration::from_secs(30)).await {
        Some(frame) if frame.frame_type == FrameType::Response => Ok(client),
        Some(frame) => Err(frame_text(&frame)),
        None => Err("closed without a reply".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_caps_keep_one_identity_from_exhausting_nsqd() {
    use nsqgate::auth::apikey;
    let pki = common::Pki::new();
    let (hog, other) = (apikey::generate(), apikey::generate());
    let policy = format!(
        "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"*\"] }}]\n\n\
         [api_keys.hog]\nsha256 = \"{}\"\nroles = [\"writer\"]\n\n\
         [api_keys.other]\nsha256 = \"{}\"\nroles = [\"writer\"]\n",
        common::key_sha256(hog.as_bytes()),
        common::key_sha256(other.as_bytes()),
    );
    pki.write_policy("policy", "p.toml", &policy);
    let nsqd = common::Nsqd::start(&pki);
    // An nsqd with few descriptors, as in the review (1,024 there; fewer here, same story).
    let status = Command::new("prlimit")
        .args([format!("--pid={}", nsqd.pid()), "--nofile=400:400".into()])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit on nsqd");
    // No [connections] and no [rate_limits]: the shipped defaults.
    let gate = common::GateConfig::new(nsqd.tcp)
        .policy("policy")
        .start(&pki);
    let addr = gate.addr;
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), None);

    let mut held = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    let refusal = loop {
        while pending.len() < 16 && held.len() + pending.len() < 600 {
            let (connector, key) = (connector.clone(), hog.clone());
            pending.spawn(async move { authed(addr, &connector, &key).await });
        }
        match pending.join_next().await {
            Some(Ok(Ok(client))) => held.push(client),
            Some(Ok(Err(refusal))) => break refusal,
            Some(Err(e)) => panic!("{e}"),
            None => panic!("600 connections of one identity and no refusal"),
        }
    };
    // The ones still in flight: each is either held or refused.
    while let Some(joined) = pending.join_next().await {
        if let Ok(client) = joined.unwrap() {
            held.push(client);
        }
    }
    eprintln!(
        "one identity held {} connections; then: {refusal}",
        held.len()
    );
    assert_eq!(
        refusal, "E_AUTH_FAILED AUTH failed: too many connections for this identity",
        "refused by nsqgate's default cap, not by an exhausted nsqd"
    );
    // The cap nsqgate says it sized from its (raised) descriptor limit.
    let log = gate.log();
    let cap: usize = log
        .split("max_per_identity=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no caps line in the log: {log}"));
    assert_eq!(held.len(), cap, "the default per-identity cap");
    let (soft, hard) = nofile(gate.pid());
    assert_eq!(
        soft, hard,
        "nsqgate raised its descriptor limit to the hard limit"
    );

    // nsqd still serves everyone else.
    let mut client = authed(gate.addr, &connector, &other).await.unwrap();
    let reply = client.publish("other-topic", b"x").await.unwrap();
    assert_eq!(&reply.data[..], b"OK");
    assert_eq!(nsqd.message_count("other-topic"), 1);
    drop(held);
}

/// nsqgate run through `prlimit` with a low soft descriptor limit, as a shell would start it.
struct LimitedGate {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for LimitedGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_starve_the_accept_loop() {
    use common::nsqclient::{tls_connector, RawClient};
    let pki = common::Pki::new();
    let nsqd = common::Nsqd::start(&pki);
    // Silent connections are kept for two minutes: far longer than this test waits.
    let config_path = pki.path("gate.toml");
    common::GateConfig::anonymous(nsqd.tcp)
        .table("[timeouts]\ntls_handshake_ms = 120000\nidentify_ms = 120000")
        .write(&config_path);
    let log = pki.path("gate.log");
    let ready = pki.path("gate.ready");
    let mut child = Command::new("prlimit")
        .arg("--nofile=1024:20000")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nsqgate"))
        .args(["run", "--config"])
        .arg(&config_path)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = common::wait_ready(&ready, &mut child).nsq[0];
    let gate = LimitedGate { child, log };

    // 1,100 connections that never say a word, from another loopback address.
    let mut silent = Vec::new();
    for _ in 0..1_100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 2], 0).into()).unwrap();
        silent.push(socket.connect(addr).await.unwrap());
    }
    // Let the accept loop take them all (or fail trying).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let connector = tls_connector(&pki.path("ca.pem"), None);
    let served = tokio::time::timeout(Duration::from_secs(30), async {
        let (mut client, _) = RawClient::upgraded(addr, &connector, serde_json::json!({})).await;
        client.publish("served", b"x").await
    })
    .await;
    let reply = served.expect("a legitimate client is served while 1,100 connections sit idle");
    assert_eq!(&reply.unwrap().data[..], b"OK");
    assert_eq!(nsqd.message_count("served"), 1);
    let limits = nofile(gate.child.id());
    assert_eq!(limits, (20_000, 20_000), "raised to the hard limit");
    drop(silent);
}

#[tokio::test]
async fn connections_to_one_nsqd_are_capped_with_a_clear_error() {
    use common::nsqclient::{frame_text, tls_connector, RawClient};
    let pki = common::Pki::new();
    let nsqd = common::Nsqd::start(&pki);
    let gate = common::GateConfig::anonymous(nsqd.tcp)
        .table("[connections]\nmax_per_nsqd = 3")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);

    let mut open = Vec::new();
    for _ in 0..3 {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        assert_eq!(
            &client.publish("capped", b"x").await.unwrap().data[..],
            b"OK"
        );
        open.push(client);
    }
    // An anonymous client gets its nsqd connection at its first command nsqd must see.
    let (mut fourth, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let refusal = frame_text(&fourth.publish("capped", b"x").await.expect("a refusal"));
    assert_eq!(
        refusal,
        "E_IDENTIFY_FAILED nsqgate refused: too many connections to this nsqd \
         (connections.max_per_nsqd)"
    );
    assert_eq!(nsqd.message_count("capped"), 3);

    // A slot frees when a connection closes.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        let reply = client.publish("capped", b"x").await.expect("a reply");
        if !frame_text(&reply).starts_with("E_") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn check_config_warns_when_a_safe_default_is_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = full_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    let off = "\n[connections]\nmax_per_identity = 0\nmax_per_nsqd = 0\n\n\
               [rate_limits]\nidentity = {}\n";
    std::fs::write(&config, format!("{text}{off}")).unwrap();
    let (code, _, err) = nsqgate(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for key in [
        "connections.max_per_identity",
        "connections.max_per_nsqd",
        "rate_limits.identity",
    ] {
        assert!(
            err.contains(&format!("warning: {}: `{key}`", config.display())),
            "{key}: {err}"
        );
    }
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = nsqgate(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("warning"),
        "the defaults need no warning: {err}"
    );
}

// === an audit log that cannot be silenced or flooded ===

/// A policy with a publishing key and an admin key (for /metrics); returns (writer, admin).
fn keyed_policy(pki: &common::Pki) -> (String, String) {
    use nsqgate::auth::apikey;
    let (writer, admin) = (apikey::generate(), apikey::generate());
    let policy = format!(
        "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"*\"] }}]\n\n\
         [roles.operator]\nallow = [{{ action = \"admin\", topics = [\"**\", \"**#ephemeral\"] }}]\n\n\
         [api_keys.writer]\nsha256 = \"{}\"\nroles = [\"writer\"]\n\n\
         [api_keys.operator]\nsha256 = \"{}\"\nroles = [\"operator\"]\n",
        common::key_sha256(writer.as_bytes()),
        common::key_sha256(admin.as_bytes()),
    );
    pki.write_policy("policy", "p.toml", &policy);
    (writer, admin)
}

/// A gate with the keyed policy, an HTTPS nsqd front (`gate.http("nsqd")`), and `audit` as its
/// [audit] section.
fn audited_gate(pki: &common::Pki, nsqd: &common::Nsqd, audit: &str) -> common::Gate {
    common::GateConfig::new(nsqd.tcp)
        .policy("policy")
        .table(&format!("[audit]\n{audit}"))
        .table(&format!(
            "[http.nsqd]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"",
            nsqd.https
        ))
        .start(pki)
}

/// Polls `check` on the gate's stderr log until it holds (20 s at most).
async fn wait_log(gate: &common::Gate, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check(&gate.log()) {
        assert!(Instant::now() < deadline, "{what}; log:\n{}", gate.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_audit_disk_is_reported_counted_and_can_refuse_decisions() {
    let pki = common::Pki::new();
    let (writer, admin) = keyed_policy(&pki);
    let nsqd = common::Nsqd::start(&pki);
    std::os::unix::fs::symlink("/dev/full", pki.path("full-audit.log")).unwrap();
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), None);

    // on_failure = "log" (the default): the decision stands, and the failure is not silent.
    let gate = audited_gate(&pki, &nsqd, "file = \"full-audit.log\"");
    let mut client = authed(gate.addr, &connector, &writer).await.unwrap();
    common::nsqclient::assert_ok(client.publish("kept", b"x").await, "PUB");
    wait_log(&gate, "stderr says the audit log is failing", |log| {
        log.contains("audit log write failed") && log.contains("No space left on device")
    })
    .await;
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {admin}\r\n\
         Connection: close\r\n\r\n"
    );
    let metrics = https_response(gate.http("nsqd"), &connector, request.as_bytes()).await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nsqgate_audit_write_failures_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no audit failure counter: {metrics}"));
    assert!(
        failures >= 2,
        "{failures}: the AUTH and the publish at least"
    );
    drop((client, gate));

    // on_failure = "refuse": a decision that cannot be recorded does not happen.
    let audit = "file = \"full-audit.log\"\non_failure = \"refuse\"";
    let gate = audited_gate(&pki, &nsqd, audit);
    let refusal = authed(gate.addr, &connector, &writer).await.err();
    assert_eq!(
        refusal.as_deref(),
        Some("E_AUTH_FAILED AUTH failed: the audit log cannot record it")
    );
    wait_log(&gate, "stderr says decisions are refused", |log| {
        log.contains("audit log write failed") && log.contains("refusing_decisions=true")
    })
    .await;
    assert_eq!(nsqd.message_count("kept"), 1);
}

#[tokio::test]
async fn a_thousand_identical_failed_auths_make_a_handful_of_counted_lines() {
    use common::nsqclient::{frame_text, RawClient};
    let pki = common::Pki::new();
    keyed_policy(&pki);
    let nsqd = common::Nsqd::start(&pki);
    // Plain TCP keeps a thousand connections quick. The fold interval is the default (10 s).
    let gate = common::GateConfig::new(nsqd.tcp)
        .client("require_tls = false")
        .policy("policy")
        .table("[audit]\nfile = \"audit.log\"")
        .start(&pki);
    let addr = gate.addr;
    const ATTEMPTS: u64 = 1_000;
    let mut pending = tokio::task::JoinSet::new();
    for attempt in 0..ATTEMPTS {
        if pending.len() >= 16 {
            pending.join_next().await.unwrap().unwrap();
        }
        pending.spawn(async move {
            let mut client = RawClient::plain(addr).await;
            let reply = client
                .auth("nsqk_not_a_key_anyone_has")
                .await
                .expect("AUTH reply");
            assert_eq!(
                frame_text(&reply),
                "E_AUTH_FAILED AUTH failed",
                "#{attempt}"
            );
        });
    }
    while let Some(joined) = pending.join_next().await {
        joined.unwrap();
    }

    // Every failure is accounted for: each line is one, except a summary line (repeats = N),
    // which stands for N more like the line before it.
    let audit_path = pki.path("audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        let failures: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["action"] == "auth" && e["outcome"] == "failure")
            .collect();
        let total: u64 = failures
            .iter()
            .map(|e| match e["repeats"].as_u64().unwrap_or(0) {
                0 => 1,
                n => n,
            })
            .sum();
        if total >= ATTEMPTS {
            assert_eq!(total, ATTEMPTS, "{failures:?}");
            break failures;
        }
        assert!(
            Instant::now() < deadline,
            "{total} of {ATTEMPTS}: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{ATTEMPTS} failed AUTHs -> {} audit lines", lines.len());
    assert!(lines.len() <= 50, "{} lines", lines.len());
    assert!(lines.iter().any(|e| e["repeats"].as_u64() > Some(0)));
}

#[tokio::test]
async fn the_audit_file_is_reopened_on_sighup_after_a_rename() {
    let pki = common::Pki::new();
    let (writer, _) = keyed_policy(&pki);
    let nsqd = common::Nsqd::start(&pki);
    let gate = audited_gate(&pki, &nsqd, "file = \"audit.log\"");
    let connector = common::nsqclient::tls_connector(&pki.path("ca.pem"), None);
    let (current, rotated) = (pki.path("audit.log"), pki.path("audit.log.1"));
    let auth_lines = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"action\":\"auth\""))
            .count()
    };

    let first = authed(gate.addr, &connector, &writer).await.unwrap();
    assert_eq!(auth_lines(&current), 1);
    // logrotate: rename, then SIGHUP.
    std::fs::rename(&current, &rotated).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Authenticate until a line lands in a new file at the old path.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut later = Vec::new();
    while auth_lines(&current) == 0 {
        assert!(
            Instant::now() < deadline,
            "no new audit file after SIGHUP; {} lines went to the renamed one",
            auth_lines(&rotated)
        );
        later.push(authed(gate.addr, &connector, &writer).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = authed(gate.addr, &connector, &writer).await.unwrap();
    assert_eq!(auth_lines(&current), 2, "new lines go to the new file");
    assert_eq!(
        auth_lines(&rotated),
        later.len(),
        "the renamed file has the first line and those written before the reopen"
    );
    assert!(gate.log().contains("audit file reopened"), "{}", gate.log());
    drop((first, second));
}
