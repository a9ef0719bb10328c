//! Guarded registration's harness: nsqgate started from a registration-only config (no
//! `[client]`, so `common::Gate`, which waits for NSQ listeners, does not fit), and nsqlookupd's
//! HTTP answers read directly. Every wait has a generous deadline and fails with the logs.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{write_secret, Pki};

/// Far above what registration takes on a loaded machine; nsqd tries at start and then
/// every 15 s, so a retry fits too.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(40);

/// An nsqgate process running only `[registry.*]` roles.
pub struct RegistryGate {
    child: Child,
    /// The role's bound address (`sidecar` or `guard` from the ready file).
    pub addr: SocketAddr,
    log: PathBuf,
}

impl RegistryGate {
    /// Starts nsqgate with `config` and waits for `role`'s address in its ready file.
    pub fn start(pki: &Pki, config: &str, role: &str) -> RegistryGate {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let name = format!("registry-{}", STARTED.fetch_add(1, Ordering::Relaxed));
        let path = pki.path(&format!("{name}.toml"));
        write_secret(&path, config.as_bytes());
        let log = pki.path(&format!("{name}.log"));
        let ready = pki.path(&format!("{name}.ready"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
            .args(["run", "--config"])
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .env("NSQGATE_LOG", "nsqgate=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start nsqgate");
        let deadline = Instant::now() + SETTLE_LIMIT;
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nsqgate ({role}) exited before it was ready: {status}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nsqgate ({role}) not ready");
            std::thread::sleep(Duration::from_millis(20));
        };
        let ready: serde_json::Value = serde_json::from_str(&text).expect("ready JSON");
        let addr = ready["registry"][role]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ready file names no {role}: {text}"));
        RegistryGate { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit events so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["target"] == "audit")
            .collect()
    }

    /// Waits for an audit event `pred` accepts.
    pub fn wait_audit(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        while !self.audit_events().iter().any(&pred) {
            assert!(
                Instant::now() < deadline,
                "no audit event for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a log line containing `text`.
    pub fn wait_log(&self, what: &str, text: &str) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{what}: no {text:?} in log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RegistryGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- nsqgate log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// An HTTP/1.0 request; the status code and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

/// nsqlookupd's `/nodes`: each producer's `(broadcast_address, tcp_port, http_port)`.
pub fn nodes(lookupd_http: SocketAddr) -> Vec<(String, u64, u64)> {
    let (status, body) = http(lookupd_http, "GET", "/nodes");
    assert_eq!(status, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).expect("/nodes JSON");
    nodes["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| {
            (
                p["broadcast_address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["tcp_port"].as_u64().unwrap_or(0),
                p["http_port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// nsqlookupd's `/lookup?topic=`: the producers' broadcast addresses (none when it does not
/// know the topic).
pub fn lookup(lookupd_http: SocketAddr, topic: &str) -> Vec<String> {
    let (status, body) = http(lookupd_http, "GET", &format!("/lookup?topic={topic}"));
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("/lookup JSON");
    answer["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| {
            p["broadcast_address"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// nsqlookupd's `/topics`: every topic some producer registered.
pub fn topics(lookupd_http: SocketAddr) -> Vec<String> {
    let (status, body) = http(lookupd_http, "GET", "/topics");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("/topics JSON");
    answer["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// Polls `check` until it is true or [`SETTLE_LIMIT`] passes; false then.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE_LIMIT;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
