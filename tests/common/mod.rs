//! Test harness: real nsqd, nsqlookupd and nsqadmin (built by scripts/install-nsq) and the real
//! nsqgate binary, with a fresh dev PKI per test. Every process binds port 0 and the harness
//! reads what it bound (the NSQ tools' "listening on" log lines, nsqgate's `--ready-file`), so
//! no port is ever picked here and handed to a child. Missing tools fail loudly, never skip.
//!
//! - `wire`: the NSQ bytes, written from the protocol description (not nsqgate's codec).
//! - `nsqclient`: a raw NSQ client over TCP/TLS that speaks `wire`.
//! - `gate_config`: [`GateConfig`], an nsqgate config built by section.
#![allow(dead_code)]

pub mod gate_config;
pub mod nsqclient;
pub mod wire;

pub use gate_config::GateConfig;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// How long a child may take to start listening (a loaded 2-core machine is slow).
const START_LIMIT: Duration = Duration::from_secs(30);

/// Waits until the log at `log` says `child` listens for each of `protocols`, in the NSQ
/// tools' words (`TCP: listening on 127.0.0.1:4150`); their addresses, in that order.
pub fn wait_listening(
    log: &Path,
    child: &mut Child,
    what: &str,
    protocols: &[&str],
) -> Vec<SocketAddr> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found: Vec<Option<SocketAddr>> = protocols
            .iter()
            .map(|protocol| listening_address(&text, protocol))
            .collect();
        if let Some(addresses) = found.iter().copied().collect::<Option<Vec<_>>>() {
            return addresses;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening ({status}); its log:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not say it listens for {protocols:?} within {START_LIMIT:?}; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in `<PROTOCOL>: listening on <ADDR>`, as nsqd, nsqlookupd and nsqadmin log it.
fn listening_address(log: &str, protocol: &str) -> Option<SocketAddr> {
    let marker = format!("{protocol}: listening on ");
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(&marker)?;
        rest.trim().parse().ok()
    })
}

/// A port that refuses connections for as long as the returned socket lives: bound, never
/// listening. For an upstream that must be down.
pub fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a loopback port");
    let addr = socket.local_addr().expect("bound address");
    (socket, addr)
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
        Nsqd::start_in(pki, cert, extra, data)
    }

    /// nsqd on the data folder `data` (a restart passes the one [`Nsqd::into_data`] gave).
    pub fn start_in(pki: &Pki, cert: &str, extra: &[&str], data: tempfile::TempDir) -> Nsqd {
        let log = data.path().join("nsqd.log");
        let mut child = Command::new(tool("nsqd"))
            .arg("--tcp-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .arg("--https-address=127.0.0.1:0")
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
            // Info: the level of its "listening on" lines. The log is a file, so the refusals
            // tests provoke do not read like failures in CI output.
            .arg("--log-level=info")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nsqd log"))
            .spawn()
            .expect("start nsqd");
        let bound = wait_listening(&log, &mut child, "nsqd", &["TCP", "HTTP", "HTTPS"]);
        Nsqd {
            child,
            tcp: bound[0],
            http: bound[1],
            https: bound[2],
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

    /// Terminates nsqd and hands back its data folder, for a restart on the same data.
    pub fn into_data(mut self) -> tempfile::TempDir {
        self.terminate();
        std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp dir"))
    }
}

impl Drop for Nsqd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running stock nsqlookupd.
pub struct Lookupd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// Holds its log.
    dir: tempfile::TempDir,
}

impl Lookupd {
    pub fn start() -> Lookupd {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("nsqlookupd.log");
        let mut child = Command::new(tool("nsqlookupd"))
            .arg("--tcp-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .arg("--broadcast-address=127.0.0.1")
            .arg("--log-level=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nsqlookupd log"))
            .spawn()
            .expect("start nsqlookupd");
        let bound = wait_listening(&log, &mut child, "nsqlookupd", &["TCP", "HTTP"]);
        Lookupd {
            child,
            tcp: bound[0],
            http: bound[1],
            dir,
        }
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

/// A running stock nsqadmin reading from `lookupd`.
pub struct Nsqadmin {
    child: Child,
    pub http: SocketAddr,
    /// Holds its log.
    dir: tempfile::TempDir,
}

impl Nsqadmin {
    pub fn start(lookupd: &Lookupd) -> Nsqadmin {
        Nsqadmin::start_with(lookupd, &[])
    }

    /// With `extra` arguments.
    pub fn start_with(lookupd: &Lookupd, extra: &[&str]) -> Nsqadmin {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("nsqadmin.log");
        let mut child = Command::new(tool("nsqadmin"))
            .arg("--http-address=127.0.0.1:0")
            .arg(format!("--lookupd-http-address={}", lookupd.http))
            .arg("--log-level=info")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nsqadmin log"))
            .spawn()
            .expect("start nsqadmin");
        let bound = wait_listening(&log, &mut child, "nsqadmin", &["HTTP"]);
        Nsqadmin {
            child,
            http: bound[0],
            dir,
        }
    }
}

impl Drop for Nsqadmin {
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
    /// The `[client]` listener.
    pub addr: SocketAddr,
    /// Every NSQ listener, in config order: `[client]`, each `[[nodes]]`, `[producer_pool]`.
    pub nsq: Vec<SocketAddr>,
    /// The HTTP listeners by front: `nsqd`, `nsqlookupd`, `nsqadmin`, and `nsqd-plain`,
    /// `nsqlookupd-plain` for the plain ones.
    pub http: BTreeMap<String, SocketAddr>,
    pub config: PathBuf,
    log: PathBuf,
}

impl Gate {
    /// nsqgate in front of `nsqd`, verifying it as 127.0.0.1 against the test CA; no identity
    /// needed.
    pub fn start(pki: &Pki, nsqd: &Nsqd) -> Gate {
        Gate::start_with(pki, nsqd, "127.0.0.1", "ca.pem", ANONYMOUS)
    }

    /// nsqgate in front of `nsqd`, verifying it as `server_name` against `ca`, with
    /// `require_tls`, `[limits] max_msg_size` = [`MAX_MSG_SIZE`] and then `extra`.
    pub fn start_with(pki: &Pki, nsqd: &Nsqd, server_name: &str, ca: &str, extra: &str) -> Gate {
        GateConfig::new(nsqd.tcp)
            .verify_upstream_as(server_name, ca)
            .client("require_tls = true")
            .table(&format!("[limits]\nmax_msg_size = {MAX_MSG_SIZE}\n{extra}"))
            .start(pki)
    }

    /// nsqgate with a config written out in full.
    pub fn start_config(pki: &Pki, config: &str) -> Gate {
        Gate::start_config_env(pki, config, &[])
    }

    /// As [`Gate::start_config`], with `env` (e.g. `NSQGATE_<SECTION>__<KEY>` overrides) set.
    pub fn start_config_env(pki: &Pki, config: &str, env: &[(&str, &str)]) -> Gate {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let name = format!("gate-{}", STARTED.fetch_add(1, Ordering::Relaxed));
        let path = pki.path(&format!("{name}.toml"));
        // A config may carry a secret (upstream.auth_secret): nsqgate refuses it readable by others.
        write_secret(&path, config.as_bytes());
        let log = pki.path(&format!("{name}.log"));
        let ready = pki.path(&format!("{name}.ready"));
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
        // nsqgate says when every listener is bound and where; probing with a connection
        // instead would take a slot of a test's low connection cap.
        let bound = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_ready(&ready, &mut child)
        })) {
            Ok(bound) => bound,
            Err(e) => {
                eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
                std::panic::resume_unwind(e);
            }
        };
        Gate {
            child,
            addr: bound.nsq[0],
            nsq: bound.nsq,
            http: bound.http,
            config: path,
            log,
        }
    }

    /// The address of one HTTP listener (`"nsqd"`, `"nsqd-plain"`, `"nsqlookupd"`...).
    pub fn http(&self, front: &str) -> SocketAddr {
        *self
            .http
            .get(front)
            .unwrap_or_else(|| panic!("nsqgate has no {front} HTTP listener: {:?}", self.http))
    }

    /// Waits (up to 5 s) for an audit event `pred` accepts; `what` names it in the failure.
    pub fn wait_audit(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(event) = self.audit_events().into_iter().find(|e| pred(e)) {
                return event;
            }
            if Instant::now() > deadline {
                let events: Vec<String> = self
                    .audit_events()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                panic!("no audit event for {what}; events:\n{}", events.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything nsqgate logged so far (operational lines and audit JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's raw bytes, for checks that must see bytes that are not UTF-8.
    pub fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.log).expect("nsqgate's log")
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

/// What nsqgate's ready file says it bound.
pub struct Bound {
    pub nsq: Vec<SocketAddr>,
    pub http: BTreeMap<String, SocketAddr>,
}

/// Waits for nsqgate's `--ready-file` (written whole once every listener is bound).
pub fn wait_ready(ready: &Path, child: &mut Child) -> Bound {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            return parse_ready(&text);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nsqgate exited before it was ready: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "nsqgate was not ready within {START_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `{"nsq": ["ADDR", ...], "http": {"FRONT": "ADDR", ...}}`.
fn parse_ready(text: &str) -> Bound {
    let ready: serde_json::Value = serde_json::from_str(text).expect("ready file JSON");
    let address = |value: &serde_json::Value| -> SocketAddr {
        value
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ready file {text}: {value} is not an address"))
    };
    let nsq: Vec<SocketAddr> = ready["nsq"]
        .as_array()
        .unwrap_or_else(|| panic!("ready file {text} lists no NSQ listeners"))
        .iter()
        .map(address)
        .collect();
    assert!(!nsq.is_empty(), "ready file {text} lists no NSQ listener");
    let http = ready["http"]
        .as_object()
        .map(|fronts| {
            fronts
                .iter()
                .map(|(name, addr)| (name.clone(), address(addr)))
                .collect()
        })
        .unwrap_or_default();
    Bound { nsq, http }
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
