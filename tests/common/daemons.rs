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
    try_wait_listening(log, child, what, protocols)
        .unwrap_or_else(|text| panic!("{what} exited before listening; its log:\n{text}"))
}

/// As [`wait_listening`], but a child that exits first hands back its log instead of failing.
fn try_wait_listening(
    log: &Path,
    child: &mut Child,
    what: &str,
    protocols: &[&str],
) -> Result<Vec<SocketAddr>, String> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found: Vec<Option<SocketAddr>> = protocols
            .iter()
            .map(|protocol| listening_address(&text, protocol))
            .collect();
        if let Some(addresses) = found.iter().copied().collect::<Option<Vec<_>>>() {
            return Ok(addresses);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("({status})\n{text}"));
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
    /// Its arguments other than addresses and data folder, for [`Nsqd::restart`].
    args: Vec<String>,
}

/// What a SIGKILLed nsqd leaves for its restart: its data folder, arguments and addresses.
pub struct Killed {
    data: tempfile::TempDir,
    args: Vec<String>,
    addresses: [SocketAddr; 3],
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
        let mut args = vec![
            format!("--tls-cert={}", pki.path(&format!("{cert}.pem")).display()),
            format!("--tls-key={}", pki.path(&format!("{cert}.key")).display()),
            "--tls-required=tcp-https".to_owned(),
            // Info: the level of its "listening on" lines. The log is a file, so the refusals
            // tests provoke do not read like failures in CI output.
            "--log-level=info".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Nsqd::launch(args, data, [any; 3])
            .unwrap_or_else(|failed| panic!("nsqd exited before listening {}", failed.0))
    }

    /// Starts nsqd on `addresses` (port 0: any); on failure, its log and the data folder back.
    fn launch(
        args: Vec<String>,
        data: tempfile::TempDir,
        addresses: [SocketAddr; 3],
    ) -> Result<Nsqd, Box<(String, Killed)>> {
        let log = data.path().join("nsqd.log");
        let mut child = Command::new(tool("nsqd"))
            .arg(format!("--tcp-address={}", addresses[0]))
            .arg(format!("--http-address={}", addresses[1]))
            .arg(format!("--https-address={}", addresses[2]))
            .arg(format!("--data-path={}", data.path().display()))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("nsqd log"))
            .spawn()
            .expect("start nsqd");
        match try_wait_listening(&log, &mut child, "nsqd", &["TCP", "HTTP", "HTTPS"]) {
            Ok(bound) => Ok(Nsqd {
                child,
                tcp: bound[0],
                http: bound[1],
                https: bound[2],
                data,
                args,
            }),
            Err(text) => Err(Box::new((
                text,
                Killed {
                    data,
                    args,
                    addresses,
                },
            ))),
        }
    }

    /// SIGKILL, as a crash: nothing is flushed or synced by nsqd on its way out. What is left
    /// for [`Nsqd::restart`].
    pub fn kill_keeping_data(mut self) -> Killed {
        self.kill();
        Killed {
            data: std::mem::replace(&mut self.data, tempfile::tempdir().expect("temp dir")),
            args: std::mem::take(&mut self.args),
            addresses: [self.tcp, self.http, self.https],
        }
    }

    /// nsqd again on a killed one's data, arguments and addresses (nsqgate's config names
    /// them). The killed process's listening sockets closed with it and nsqd binds with
    /// SO_REUSEADDR, so connections it left in TIME_WAIT do not block the bind; only another
    /// process given one of these ports in between could, which the kernel's port allocation
    /// makes rare: the bind is retried for a few seconds, then the test fails with nsqd's log.
    pub fn restart(killed: Killed) -> Nsqd {
        let deadline = Instant::now() + Duration::from_secs(5);
        let Killed {
            mut data,
            mut args,
            addresses,
        } = killed;
        loop {
            match Nsqd::launch(args, data, addresses) {
                Ok(nsqd) => return nsqd,
                Err(failed) => {
                    let (text, back) = *failed;
                    assert!(
                        text.contains("address already in use") && Instant::now() < deadline,
                        "nsqd did not restart on {addresses:?}: {text}"
                    );
                    (data, args) = (back.data, back.args);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`...) to nsqd.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} nsqd");
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
