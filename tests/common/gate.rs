//! The real nsqgate binary: started with a config written for the test, ready once its
//! `--ready-file` names every listener it bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::daemons::START_LIMIT;
use super::{write_secret, GateConfig, Nsqd, Pki, ANONYMOUS, MAX_MSG_SIZE};

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
    /// The admin listener, when `[admin]` is configured.
    pub admin: Option<SocketAddr>,
    /// The auth service nsqd asks, when `[auth_service]` is configured.
    pub auth_service: Option<SocketAddr>,
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
            admin: bound.admin,
            auth_service: bound.auth_service,
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

    /// The admin listener's address (the config must have `[admin]`).
    pub fn admin(&self) -> SocketAddr {
        self.admin
            .unwrap_or_else(|| panic!("nsqgate has no admin listener (no [admin] in its config)"))
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

    /// Waits (up to 30 s: the child writes its log on its own time) for a log line holding
    /// every one of `parts`, and returns it.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}:\n{log}"
            );
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
    pub admin: Option<SocketAddr>,
    pub auth_service: Option<SocketAddr>,
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

/// `{"nsq": ["ADDR", ...], "http": {"FRONT": "ADDR", ...}, "admin": "ADDR"}`.
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
    let admin = ready.get("admin").map(address);
    let auth_service = ready.get("auth_service").map(address);
    Bound {
        nsq,
        http,
        admin,
        auth_service,
    }
}
