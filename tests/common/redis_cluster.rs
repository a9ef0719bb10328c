//! A real Redis Cluster of three redis-server masters (Debian's package, `--cluster-enabled
//! yes`), joined with `redis-cli --cluster create`. A cluster node announces its TCP port to
//! the others and cannot listen on port 0, and its bus listens on port + 10000: the harness
//! asks the kernel for a port whose bus port is free too, and starts the node again on
//! another if redis-server exits because either was taken meanwhile. Each node also has a
//! unix socket, for the harness's own commands. Missing tools fail loudly, never skip.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::START_LIMIT;
use super::redis::{answers_on_socket_or_exits, command_on_socket, tool};

pub struct RedisCluster {
    nodes: Vec<Node>,
}

struct Node {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl RedisCluster {
    /// Three masters sharing the 16384 slots, every slot served.
    pub fn start() -> RedisCluster {
        let nodes: Vec<Node> = (0..3).map(|_| Node::start()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new(tool("redis-cli"))
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let cluster = RedisCluster { nodes };
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// The `redis://127.0.0.1:PORT` of each node.
    pub fn urls(&self) -> Vec<String> {
        (self.nodes.iter())
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// One command (inline form) on node `index`, and its raw reply.
    pub fn command(&self, index: usize, line: &str) -> String {
        self.nodes[index].command(line)
    }

    /// Waits until every node says `cluster_state:ok` (the slots are agreed on).
    fn wait_ok(&self) {
        let deadline = Instant::now() + START_LIMIT * 2;
        for node in &self.nodes {
            while !node.command("CLUSTER INFO").contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster never became ok"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("redis temp dir");
        for _attempt in 0..5 {
            let port = free_port_pair();
            let mut child = spawn(dir.path(), port);
            if answers_on_socket_or_exits(&mut child, &dir.path().join("redis.sock")) {
                return Node { child, dir, port };
            }
            let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
            eprintln!("redis-server could not listen on {port}: {log}");
            let _ = std::fs::remove_file(dir.path().join("nodes.conf"));
        }
        panic!("no free port pair for a Redis Cluster node in 5 attempts");
    }

    fn command(&self, line: &str) -> String {
        command_on_socket(&self.dir.path().join("redis.sock"), line)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that is free now, with its cluster bus port (+10000) free too.
fn free_port_pair() -> u16 {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe");
        let port = probe.local_addr().expect("probe address").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn spawn(dir: &Path, port: u16) -> Child {
    Command::new(tool("redis-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocketperm",
            "700",
        ])
        .arg("--cluster-config-file")
        .arg(dir.join("nodes.conf"))
        .arg("--unixsocket")
        .arg(dir.join("redis.sock"))
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}
