//! A real redis-server (Debian's package) for the cluster tests, on a unix socket in its own
//! temp folder and no TCP port (`--port 0`), so there is no port to race for; a restart binds
//! the same path again. Missing redis-server fails loudly, never skips.
//!
//! With TLS ([`Redis::start_tls`]) it also listens on a TLS port. redis-server cannot pick
//! one itself (`--tls-port 0` turns TLS off), so the harness asks the kernel for a free port
//! and hands it over; if another process takes it first, redis-server exits saying it could
//! not listen, and the start is tried again on a new port. The unix socket stays plain text,
//! for the harness's own commands.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::START_LIMIT;

pub struct Redis {
    child: Child,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The TLS listener's arguments, kept for a restart.
    tls: Vec<String>,
    /// The TLS port, when started with [`Redis::start_tls`].
    pub tls_port: Option<u16>,
}

/// The files a TLS redis-server is started with.
pub struct RedisTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// Client certificates must chain to this CA (`tls-auth-clients yes`).
    pub client_ca: &'a Path,
}

/// A program of Debian's redis-server package (`redis-server`, `redis-cli`) on PATH (or
/// /usr/bin).
pub(super) fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} is missing: install Debian's redis-server package \
             (apt-get install -y redis-server; scripts/test does)"
        )
    })
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let socket = dir.path().join("redis.sock");
        let child = spawn(&dir, &socket, &[]);
        let mut redis = Redis {
            child,
            dir,
            socket,
            tls: Vec::new(),
            tls_port: None,
        };
        redis.wait_answering();
        redis
    }

    /// Also listens for TLS on 127.0.0.1, requiring a client certificate.
    pub fn start_tls(files: &RedisTls<'_>) -> Redis {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let socket = dir.path().join("redis.sock");
        for _attempt in 0..5 {
            let port = free_port();
            let tls = vec![
                "--tls-port".to_owned(),
                port.to_string(),
                "--bind".to_owned(),
                "127.0.0.1".to_owned(),
                "--tls-cert-file".to_owned(),
                files.cert.display().to_string(),
                "--tls-key-file".to_owned(),
                files.key.display().to_string(),
                "--tls-ca-cert-file".to_owned(),
                files.client_ca.display().to_string(),
                "--tls-auth-clients".to_owned(),
                "yes".to_owned(),
            ];
            let mut child = spawn(&dir, &socket, &tls);
            if answers_on_socket_or_exits(&mut child, &socket) {
                return Redis {
                    child,
                    dir,
                    socket,
                    tls,
                    tls_port: Some(port),
                };
            }
            // The port was taken between the probe and redis-server's bind: try another.
            eprintln!("redis-server could not listen on {port}: {}", log(&dir));
            let _ = std::fs::remove_file(&socket);
        }
        panic!("redis-server found no free TLS port in 5 attempts");
    }

    /// `rediss://127.0.0.1:PORT` for a TLS redis-server.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The URL nsqgate and `nsqgate revoke` are given.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// SIGKILL: gone at once, as a crashed server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same socket (with nothing kept: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        self.child = spawn(&self.dir, &self.socket, &self.tls);
        self.wait_answering();
    }

    /// One command (inline form) and the server's raw reply.
    pub fn command(&self, line: &str) -> String {
        command_on_socket(&self.socket, line)
    }

    fn wait_answering(&mut self) {
        if !answers_on_socket_or_exits(&mut self.child, &self.socket) {
            panic!("redis-server exited: {}", self.log());
        }
    }

    fn log(&self) -> String {
        log(&self.dir)
    }
}

fn log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
}

/// One command (inline form) on the unix socket of a server started here, and its raw reply.
pub(super) fn command_on_socket(socket: &Path, line: &str) -> String {
    try_command_on_socket(socket, line).expect("a command to redis")
}

/// [`command_on_socket`], its failure returned: a server that is changing roles may drop
/// its clients (seen: a connection reset while a sentinel demoted the old master).
pub(super) fn try_command_on_socket(socket: &Path, line: &str) -> std::io::Result<String> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    try_exchange(stream, line)
}

/// Writes `line` (inline form) and returns the raw reply (one read: replies here are small).
pub(super) fn exchange(stream: impl Read + Write, line: &str) -> String {
    try_exchange(stream, line).expect("a reply from redis")
}

fn try_exchange(mut stream: impl Read + Write, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = vec![0u8; 64 * 1024];
    let n = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

/// True once redis-server answers PING on `socket`; false if it exited first.
pub(super) fn answers_on_socket_or_exits(child: &mut Child, socket: &Path) -> bool {
    let what = socket.display().to_string();
    answers_or_exits(child, &what, || UnixStream::connect(socket))
}

/// True once a stream from `connect` (a new one each try) answers PING; false if `child`
/// exited first. `what` names the address for the failure message.
pub(super) fn answers_or_exits<S: Read + Write>(
    child: &mut Child,
    what: &str,
    connect: impl Fn() -> std::io::Result<S>,
) -> bool {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Ok(mut stream) = connect() {
            let mut reply = [0u8; 16];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream
                    .read(&mut reply)
                    .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
            {
                return true;
            }
        }
        if let Ok(Some(_status)) = child.try_wait() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer on {what} within {START_LIMIT:?}",
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port no one listens on now (the kernel's pick for a socket closed at once).
pub(super) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

fn spawn(dir: &tempfile::TempDir, socket: &Path, extra: &[String]) -> Child {
    Command::new(tool("redis-server"))
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocketperm",
            "700",
        ])
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
