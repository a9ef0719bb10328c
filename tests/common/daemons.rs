//! Stock NSQ daemons (nsqd, nsqlookupd, nsqadmin) on port 0: each is started with its log in
//! a file, and the harness reads the addresses it bound from its "listening on" lines.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Pki;

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
pub(super) const START_LIMIT: Duration = Duration::from_secs(30);

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
