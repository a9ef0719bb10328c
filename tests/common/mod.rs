//! Test harness: real nsqd (built by scripts/install-nsq) and the real nsqgate binary, each on
//! free loopback ports, with a fresh dev PKI per test. Missing tools fail loudly, never skip.
#![allow(dead_code)]

pub mod nsqclient;
pub mod wire;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nsqgate::certs::{ClientSubject, DevCa, Pem};

pub const MAX_MSG_SIZE: usize = 1024 * 1024;

/// An `[auth]` section for tests of the transport alone: no identity needed, and the policy
/// lets the anonymous caller publish and subscribe anywhere.
pub const ANONYMOUS: &str = "[auth]\nrequire_identity = false\npolicy_dir = \"open-policy\"\n";

const OPEN_POLICY: &str = r#"
[roles.everything]
allow = [
  { action = "publish", topics = ["**", "**#ephemeral"] },
  { action = "subscribe", topics = ["**", "**#ephemeral"], channels = ["**", "**#ephemeral"] },
]

[identities]
anonymous = ["everything"]
"#;

/// The folder with the stock NSQ binaries.
pub fn tools_bin() -> PathBuf {
    let dir = std::env::var_os("NSQGATE_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bin"));
    assert!(
        dir.join("nsqd").is_file(),
        "stock NSQ tools are missing from {}: run scripts/install-nsq (scripts/test does)",
        dir.display()
    );
    dir
}

pub fn tool(name: &str) -> PathBuf {
    let path = tools_bin().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-nsq",
        path.display()
    );
    path
}

/// A loopback port for a child to bind. Picked below the kernel's ephemeral range, so between
/// this check and the child's bind neither another test's `bind(0)` nor the source port of an
/// outgoing connection (tests open thousands) can take it; each test process starts at its own
/// offset and never hands the same port out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000, ephemeral_low.max(20_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

pub fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 20 s");
}

/// Waits for nsqgate's `--ready-file` and checks that it names `addr`.
pub fn wait_for_ready_file(ready: &Path, addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(ready) {
            let bound: serde_json::Value = serde_json::from_str(&text).expect("ready file JSON");
            let nsq = bound["nsq"]
                .as_array()
                .expect("ready file lists NSQ listeners");
            assert!(
                nsq.iter().any(|a| a.as_str() == Some(&addr.to_string())),
                "ready file {text} does not name {addr}"
            );
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nsqgate exited before it was ready on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nsqgate was not ready on {addr} within 30 s");
}

/// A dev PKI written to a temp folder: one CA, server certs for 127.0.0.1/localhost.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = DevCa::generate("test CA").expect("CA");
        let pki = Pki { dir, ca };
        pki.write("ca", &pki.ca.pem());
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        pki.write(
            "nsqd",
            &pki.ca.issue_server("nsqd", &hosts).expect("nsqd cert"),
        );
        pki.write(
            "gate",
            &pki.ca.issue_server("gate", &hosts).expect("gate cert"),
        );
        pki.write_policy("open-policy", "open.toml", OPEN_POLICY);
        pki
    }

    pub fn write(&self, name: &str, pem: &Pem) {
        std::fs::write(self.path(&format!("{name}.pem")), &pem.cert).expect("write cert");
        write_secret(&self.path(&format!("{name}.key")), pem.key.as_bytes());
    }

    /// Writes (or replaces) one policy file in a policy folder below the PKI folder.
    pub fn write_policy(&self, dir: &str, file: &str, text: &str) {
        let dir = self.path(dir);
        std::fs::create_dir_all(&dir).expect("policy dir");
        std::fs::write(dir.join(file), text).expect("write policy");
    }

    pub fn issue_client(&self, name: &str, subject: &ClientSubject) {
        self.write(name, &self.ca.issue_client(subject).expect("client cert"));
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A running stock nsqd with TLS required on TCP (`tcp-https`: plain HTTP stays open so tests
/// can read /stats without TLS).
pub struct Nsqd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// nsqd's HTTPS port (same certificate as the TCP TLS upgrade).
    pub https: SocketAddr,
    pub data: tempfile::TempDir,
}

impl Nsqd {
    pub fn start(pki: &Pki) -> Nsqd {
        Nsqd::start_with(pki, "nsqd", &[])
    }

    /// `cert` names the certificate files in `pki` (e.g. "nsqd" or one from another CA).
    pub fn start_with(pki: &Pki, cert: &str, extra: &[&str]) -> Nsqd {
        let data = tempfile::tempdir().expect("temp dir");
        Nsqd::start_in(pki, cert, extra, data, free_port(), free_port())
    }

    pub fn start_in(
        pki: &Pki,
        cert: &str,
        extra: &[&str],
        data: tempfile::TempDir,
        tcp_port: u16,
        http_port: u16,
    ) -> Nsqd {
        let tcp: SocketAddr = ([127, 0, 0, 1], tcp_port).into();
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let https: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut child = Command::new(tool("nsqd"))
            .arg(format!("--tcp-address={tcp}"))
            .arg(format!("--http-address={http}"))
            .arg(format!("--https-address={https}"))
            .arg(format!("--data-path={}", data.path().display()))
            .arg(format!(
                "--tls-cert={}",
                pki.path(&format!("{cert}.pem")).display()
            ))
            .arg(format!(
                "--tls-key={}",
                pki.path(&format!("{cert}.key")).display()
            ))
            .arg("--tls-required=tcp-https")
            .arg("--log-level=error")
            .args(extra)
            .stdout(Stdio::null())
            // Expected refusals (tests provoke them) would read like failures in CI output.
            .stderr(std::fs::File::create(data.path().join("nsqd.log")).expect("nsqd log"))
            .spawn()
            .expect("start nsqd");
        wait_for_port(http, &mut child, "nsqd");
        wait_for_port(tcp, &mut child, "nsqd");
        wait_for_port(https, &mut child, "nsqd");
        Nsqd {
            child,
            tcp,
            http,
            https,
            data,
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        let body = http_get(self.http, "/stats?format=json");
        serde_json::from_str(&body).expect("nsqd /stats JSON")
    }

    pub fn topic(&self, name: &str) -> Option<serde_json::Value> {
        let stats = self.stats();
        stats["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic_name"] == name)
            .cloned()
    }

    /// Messages nsqd accepted for the topic (0 when it does not exist).
    pub fn message_count(&self, topic: &str) -> u64 {
        self.topic(topic)
            .and_then(|t| t["message_count"].as_u64())
            .unwrap_or(0)
    }

    pub fn topic_exists(&self, name: &str) -> bool {
        self.topic(name).is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops it: nsqd closes its clients and persists its queues.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Terminates nsqd and hands back its data folder and ports, for a restart on the same data.
    pub fn into_parts(mut self) -> (tempfile::TempDir, u16, u16) {
        self.terminate();
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp dir"));
        (data, self.tcp.port(), self.http.port())
    }
}

impl Drop for Nsqd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An nsqgate config: a listener on `port` in front of `nsqd` (verified as 127.0.0.1 against
/// the test CA), `upstream_extra` lines inside `[upstream]`, then `rest`.
pub fn gate_config(port: u16, nsqd: SocketAddr, upstream_extra: &str, rest: &str) -> String {
    format!(
        r#"
[client]
listen = "127.0.0.1:{port}"
tls_cert = "gate.pem"
tls_key = "gate.key"

[upstream]
nsqd_tcp_address = "{nsqd}"
tls_server_name = "127.0.0.1"
tls_ca = "ca.pem"
{upstream_extra}

{rest}
"#
    )
}

/// A running stock nsqlookupd on free ports.
pub struct Lookupd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
}

impl Lookupd {
    pub fn start() -> Lookupd {
        let tcp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut child = Command::new(tool("nsqlookupd"))
            .arg(format!("--tcp-address={tcp}"))
            .arg(format!("--http-address={http}"))
            .arg("--broadcast-address=127.0.0.1")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsqlookupd");
        wait_for_port(http, &mut child, "nsqlookupd");
        wait_for_port(tcp, &mut child, "nsqlookupd");
        Lookupd { child, tcp, http }
    }

    /// How many producers nsqlookupd lists for `topic` (0 when it does not know the topic).
    pub fn producers(&self, topic: &str) -> usize {
        let mut stream = TcpStream::connect(self.http).expect("connect nsqlookupd");
        let _ = write!(
            stream,
            "GET /lookup?topic={topic} HTTP/1.0\r\nHost: l\r\n\r\n"
        );
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
            .and_then(|v| v["producers"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where scripts/install-clients put pynsq and nsqjs.
pub fn clients_dir() -> PathBuf {
    std::env::var_os("NSQGATE_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
}

/// Runs one client program from tests/clients; (exit ok, its JSON summary line, stderr).
pub fn run_client(
    interpreter: &str,
    script: &str,
    args: &[String],
    timeout: Duration,
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
    let (ok, stdout, stderr) = wait_output(child, timeout, &program);
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

/// A running nsqgate binary with a config written for the test.
pub struct Gate {
    child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    log: PathBuf,
}

impl Gate {
    /// nsqgate in front of `nsqd`, verifying it as `server_name` against `ca`.
    pub fn start(pki: &Pki, nsqd: &Nsqd) -> Gate {
        Gate::start_with(pki, nsqd, "127.0.0.1", "ca.pem", ANONYMOUS)
    }

    pub fn start_with(pki: &Pki, nsqd: &Nsqd, server_name: &str, ca: &str, extra: &str) -> Gate {
        let port = free_port();
        let config = format!(
            r#"
[client]
listen = "127.0.0.1:{port}"
require_tls = true
tls_cert = "gate.pem"
tls_key = "gate.key"

[upstream]
nsqd_tcp_address = "{upstream}"
tls_server_name = "{server_name}"
tls_ca = "{ca}"

[limits]
max_msg_size = {MAX_MSG_SIZE}
{extra}
"#,
            upstream = nsqd.tcp,
        );
        Gate::start_config(pki, &config, port)
    }

    pub fn start_config(pki: &Pki, config: &str, port: u16) -> Gate {
        Gate::start_config_env(pki, config, port, &[])
    }

    /// As [`Gate::start_config`], with `env` (e.g. `NSQGATE_<SECTION>__<KEY>` overrides) set.
    pub fn start_config_env(pki: &Pki, config: &str, port: u16, env: &[(&str, &str)]) -> Gate {
        let path = pki.path(&format!("gate-{port}.toml"));
        // A config may carry a secret (upstream.auth_secret): nsqgate refuses it readable by others.
        write_secret(&path, config.as_bytes());
        let log = pki.path(&format!("gate-{port}.log"));
        let ready = pki.path(&format!("gate-{port}.ready"));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
            .args(["run", "--config"])
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .env("NSQGATE_LOG", "nsqgate=debug,info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start nsqgate");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // nsqgate says when every listener is bound; probing with a connection instead would
        // take a slot of a test's low connection cap.
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for_ready_file(&ready, addr, &mut child)
        })) {
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::panic::resume_unwind(e);
        }
        Gate {
            child,
            addr,
            config: path,
            log,
        }
    }

    /// Everything nsqgate logged so far (operational lines and audit JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit events logged so far, parsed.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["target"] == "audit")
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as an orchestrator would.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nsqgate log ---\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.0 GET, enough for nsqd's /stats.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_owned()
}

/// Runs a stock tool to completion with stdin, returning (success, stdout, stderr).
pub fn run_tool(
    program: &Path,
    args: &[String],
    stdin: &[u8],
    timeout: Duration,
) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = wait_output(child, timeout, program);
    let _ = writer.join();
    output
}

pub fn wait_output(mut child: Child, timeout: Duration, program: &Path) -> (bool, Vec<u8>, String) {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => (status.success(), stdout, stderr),
        None => panic!(
            "{} did not finish within {timeout:?}; stderr:\n{stderr}",
            program.display()
        ),
    }
}

/// Writes a private key or secret as nsqgate expects one: readable by its owner only (0600).
pub fn write_secret(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create secret");
    file.write_all(bytes).expect("write secret");
}
