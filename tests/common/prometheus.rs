//! Prometheus's own tools against nsqgate: `promtool check metrics` on an exposition, and a
//! real Prometheus server scraping the admin listener, queried through its HTTP API. Both come
//! from Debian's `prometheus` package, which scripts/test installs; missing, they fail loudly.
//! Also curl over TLS with a client certificate, for the admin listener's TLS.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus tool on PATH (`promtool`, `prometheus`); panics with the fix when missing.
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: it comes with Debian's `prometheus` package \
             (scripts/test installs it: apt-get install -y prometheus)"
        )
    })
}

/// What `promtool check metrics` said about an exposition.
pub struct Checked {
    pub status: std::process::ExitStatus,
    /// Its stdout and stderr: every problem it found, one per line.
    pub report: String,
}

/// Pipes `exposition` through `promtool check metrics`.
pub fn check_metrics(promtool: &Path, exposition: &str) -> Checked {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("promtool output");
    let report = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    Checked { status, report }
}

/// A Prometheus server scraping one target every second, with its data in a temp folder.
pub struct Prometheus {
    child: Child,
    pub web: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Prometheus cannot listen on port 0 and say which port it got: a free port is found by
    /// binding 127.0.0.1:0 and letting it go, and another is tried if Prometheus then loses
    /// it to someone else (it exits at once, saying so).
    pub fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: nsqgate\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        let binary = tool("prometheus");
        for attempt in 0..5 {
            let web = free_port();
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={web}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log"))
                .spawn()
                .expect("start prometheus");
            let mut child = child;
            if wait_ready(&mut child, web, &log) {
                return Prometheus {
                    child,
                    web,
                    log,
                    _dir: dir,
                };
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                said.contains("address already in use"),
                "prometheus did not start:\n{said}"
            );
        }
        panic!("prometheus found no free port in 5 tries");
    }

    /// Queries `expr` through `/api/v1/query` until it returns series (up to 30 s).
    pub fn query_until_found(&self, expr: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = format!("/api/v1/query?query={}", encode(expr));
        loop {
            if let Some((200, body)) = http(self.web, &path) {
                let reply: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
                assert_eq!(reply["status"], "success", "{body}");
                if let Some(series) = reply["data"]["result"].as_array().filter(|r| !r.is_empty()) {
                    return series.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never returned {expr}; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once `/-/ready` answers; false when the process exited first.
fn wait_ready(child: &mut Child, web: SocketAddr, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if http(web, "/-/ready").is_some_and(|(status, _)| status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "prometheus not ready within 60 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn free_port() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    probe.local_addr().expect("bound address")
}

/// Percent-encodes a query expression (everything but unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET that tolerates a server not up yet: None when it cannot connect.
fn http(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(super::prom::get(addr, path))
}

/// `GET path` over TLS with curl, trusting `ca` and presenting `cert` (certificate, key)
/// when given: (status, body); status 0 when no HTTP answer came (handshake refused).
pub fn curl_tls(
    addr: SocketAddr,
    path: &str,
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca);
    if let Some((cert, key)) = cert {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("run curl (scripts/test installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}
