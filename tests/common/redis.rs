//! A real redis-server (Debian's package) for the cluster tests, on a unix socket in its own
//! temp folder and no TCP port (`--port 0`), so there is no port to race for; a restart binds
//! the same path again. Missing redis-server fails loudly, never skips.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::START_LIMIT;

pub struct Redis {
    child: Child,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

/// The redis-server binary on PATH (or /usr/bin).
fn redis_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "redis-server is missing: install Debian's redis-server package \
             (apt-get install -y redis-server; scripts/test does)"
        )
    })
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let socket = dir.path().join("redis.sock");
        let child = spawn(&dir, &socket);
        let mut redis = Redis { child, dir, socket };
        redis.wait_answering();
        redis
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
        self.child = spawn(&self.dir, &self.socket);
        self.wait_answering();
    }

    /// One command (inline form) and the server's raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write to redis");
        let mut reply = vec![0u8; 64 * 1024];
        let n = stream.read(&mut reply).expect("redis reply");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    fn wait_answering(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(mut stream) = UnixStream::connect(&self.socket) {
                let mut reply = [0u8; 16];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream
                        .read(&mut reply)
                        .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {} within {START_LIMIT:?}: {}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

fn spawn(dir: &tempfile::TempDir, socket: &std::path::Path) -> Child {
    Command::new(redis_server())
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
