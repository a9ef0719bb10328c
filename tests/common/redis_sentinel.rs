//! A real Redis Sentinel set-up (Debian's redis-server): a master, a replica of it
//! (`--replicaof`) and one sentinel (`redis-server sentinel.conf --sentinel`) that monitors the
//! master under [`MASTER`]. Sentinels and replicas announce TCP addresses, so each server
//! listens on a TCP port: the harness asks the kernel for a free one and starts the server
//! again on another if it exits because the port was taken meanwhile. The data servers also
//! have a unix socket, for the harness's own commands. Missing tools fail loudly, never skip.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::START_LIMIT;
use super::redis::{
    answers_or_exits, command_on_socket, exchange, free_port, tool, try_command_on_socket,
};

/// The master's name in the sentinel's configuration.
pub const MASTER: &str = "nsqgate-test";
/// How long a manual failover may show no new master before it is asked for again.
const RETRY_FAILOVER: Duration = Duration::from_secs(8);

pub struct RedisSentinel {
    /// Index 0 starts as the master, 1 as its replica.
    pub servers: Vec<Server>,
    sentinel: Server,
}

pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl RedisSentinel {
    /// The master and its replica in sync, and a sentinel that knows both.
    pub fn start() -> RedisSentinel {
        let master = Server::start(|port, dir| data_server(port, dir, &[]));
        let replicaof = [
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port.to_string(),
        ];
        let replica = Server::start(|port, dir| data_server(port, dir, &replicaof));
        let master_port = master.port;
        let sentinel = Server::start(|port, dir| sentinel(port, dir, master_port));
        let set = RedisSentinel {
            servers: vec![master, replica],
            sentinel,
        };
        set.wait(&format!("the replica on {master_port}'s sentinel"), || {
            set.sentinel_command(&format!("SENTINEL REPLICAS {MASTER}"))
                .contains(&set.servers[1].port.to_string())
                && set.servers[1]
                    .command("INFO replication")
                    .contains("master_link_status:up")
        });
        set
    }

    /// The sentinel's address, as `host:port`.
    pub fn sentinel_address(&self) -> String {
        format!("127.0.0.1:{}", self.sentinel.port)
    }

    /// The port of the server the sentinel names as master now.
    pub fn master_port(&self) -> u16 {
        let reply = self.sentinel_command(&format!("SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER}"));
        (reply.lines())
            .filter_map(|line| line.parse::<u16>().ok())
            .next()
            .unwrap_or_else(|| panic!("no master address in {reply:?}"))
    }

    /// The data server listening on `port`.
    pub fn server(&self, port: u16) -> &Server {
        (self.servers.iter())
            .find(|server| server.port == port)
            .unwrap_or_else(|| panic!("no server on {port}"))
    }

    pub fn server_mut(&mut self, port: u16) -> &mut Server {
        (self.servers.iter_mut())
            .find(|server| server.port == port)
            .unwrap_or_else(|| panic!("no server on {port}"))
    }

    /// `SENTINEL FAILOVER`, then waits until the sentinel names the other server, that
    /// server says it is a master, and the old master says it is its replica (the sentinel
    /// turns it into one some seconds later; until then it still takes writes, which a
    /// client that never looked for the new master would not notice). Returns the new
    /// master's port.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let reply = self.sentinel_command(&format!("SENTINEL FAILOVER {MASTER}"));
        assert!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        // A manual failover the sentinel aborts (no replica it judges good yet, on a loaded
        // machine) is not retried by the sentinel: ask again while the master is unchanged.
        let mut asked = Instant::now();
        self.wait("the sentinel naming a new master", || {
            if self.master_port() != old {
                return true;
            }
            if asked.elapsed() > RETRY_FAILOVER {
                let _ = self.sentinel_command(&format!("SENTINEL FAILOVER {MASTER}"));
                asked = Instant::now();
            }
            false
        });
        // The old master is demoted once the sentinel's next INFO round reaches it.
        self.wait("the old master's demotion", || {
            let now = self.master_port();
            // Asked again on a dropped connection: a demoted server may drop its clients.
            let role = |port, role| {
                let asked = self.server(port).try_command("ROLE");
                asked.is_ok_and(|reply| reply.contains(role))
            };
            role(now, "master") && role(old, "slave")
        });
        self.master_port()
    }

    /// One command (inline form) to the sentinel, and its raw reply.
    pub fn sentinel_command(&self, line: &str) -> String {
        let stream = TcpStream::connect(("127.0.0.1", self.sentinel.port)).expect("sentinel");
        exchange(stream, line)
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_LIMIT;
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Server {
    /// A server started by `spawn(port, dir)` on a free port; tried again on another port if
    /// it exits (the port was taken).
    fn start(spawn: impl Fn(u16, &Path) -> Child) -> Server {
        let dir = tempfile::tempdir().expect("redis temp dir");
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = spawn(port, dir.path());
            let connect = || -> std::io::Result<TcpStream> {
                let stream = TcpStream::connect(("127.0.0.1", port))?;
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                Ok(stream)
            };
            if answers_or_exits(&mut child, &format!("port {port}"), connect) {
                return Server { child, dir, port };
            }
            let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
            eprintln!("redis-server could not listen on {port}: {log}");
        }
        panic!("no free port for redis-server in 5 attempts");
    }

    /// One command (inline form) on this data server's unix socket, and its raw reply.
    pub fn command(&self, line: &str) -> String {
        command_on_socket(&self.dir.path().join("redis.sock"), line)
    }

    /// [`Server::command`], its failure returned.
    pub fn try_command(&self, line: &str) -> std::io::Result<String> {
        try_command_on_socket(&self.dir.path().join("redis.sock"), line)
    }

    /// SIGKILL: gone at once, as a crashed server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn data_server(port: u16, dir: &Path, extra: &[String]) -> Child {
    let mut child = Command::new(tool("redis-server"));
    child
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocketperm",
            "700",
        ])
        .arg("--unixsocket")
        .arg(dir.join("redis.sock"))
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(extra);
    spawn(child)
}

/// A sentinel: its configuration file must be writable (it records what it learns there).
fn sentinel(port: u16, dir: &Path, master_port: u16) -> Child {
    let conf = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
         sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 10000\n\
         sentinel parallel-syncs {MASTER} 1\n",
        dir = dir.display(),
        log = dir.join("redis.log").display(),
    );
    std::fs::write(&conf, text).expect("write sentinel.conf");
    let mut child = Command::new(tool("redis-server"));
    child.arg(&conf).arg("--sentinel");
    spawn(child)
}

fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}
