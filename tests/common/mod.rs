//! Test harness: real nsqd, nsqlookupd and nsqadmin (built by scripts/install-nsq) and the real
//! nsqgate binary, with a fresh dev PKI per test. Every process binds port 0 and the harness
//! reads what it bound (the NSQ tools' "listening on" log lines, nsqgate's `--ready-file`), so
//! no port is ever picked here and handed to a child. Missing tools fail loudly, never skip.
//!
//! - `daemons`: nsqd, nsqlookupd and nsqadmin, and the addresses they say they bound.
//! - `gate`: the nsqgate binary and its ready file.
//! - `programs`: client programs and stock tools run to completion.
//! - `wire`: the NSQ bytes, written from the protocol description (not nsqgate's codec).
//! - `nsqclient`: a raw NSQ client over TCP/TLS that speaks `wire`.
//! - `gate_config`: [`GateConfig`], an nsqgate config built by section.
//! - `prom`: the admin listener's answers, and a Prometheus text-format parser.
//! - `prometheus`: promtool and a real Prometheus server (Debian's `prometheus` package).
//! - `redis`: a real redis-server (Debian's package) on a unix socket, for `[cluster]`.
//! - `redis_cluster`: three real redis-server nodes joined into a Redis Cluster.
#![allow(dead_code)]

pub mod daemons;
pub mod gate;
pub mod gate_config;
pub mod nsqclient;
pub mod programs;
pub mod prom;
pub mod prometheus;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod wire;

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use daemons::{
    http_get, refusing_port, tool, tools_bin, wait_listening, Lookupd, Nsqadmin, Nsqd,
};
#[allow(unused_imports)]
pub use gate::{wait_ready, Bound, Gate};
#[allow(unused_imports)]
pub use gate_config::GateConfig;
#[allow(unused_imports)]
pub use programs::{clients_dir, nsqgate, run_client, run_tool, wait_output};

use std::io::Write;
use std::path::{Path, PathBuf};

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

    pub fn issue_client(&self, name: &str, subject: &ClientSubject) -> Pem {
        let pem = self.ca.issue_client(subject).expect("client cert");
        self.write(name, &pem);
        pem
    }

    /// A client certificate whose identity is the SPIFFE ID `spiffe://nsqgate.test/{name}`.
    pub fn issue_spiffe_client(&self, name: &str) -> Pem {
        let subject = ClientSubject {
            common_name: name.into(),
            uris: vec![format!("spiffe://nsqgate.test/{name}")],
            dns_names: Vec::new(),
        };
        self.issue_client(name, &subject)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
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

/// The SHA-256 of an API key as 64 lowercase hex characters, the form `[api_keys.*] sha256`
/// holds: computed here, not with nsqgate's own `apikey::hash_hex`, so a test catches a change
/// in how nsqgate hashes keys.
pub fn key_sha256(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A policy's `[api_keys.NAME]` entry for `key` with `roles`. The SHA-256 is taken here with
/// the `sha2` crate, not with nsqgate's own hashing, so a wrong hash in nsqgate would show.
pub fn api_key_entry(name: &str, key: &str, roles: &[&str]) -> String {
    let hex = key_sha256(key.as_bytes());
    let roles: Vec<String> = roles.iter().map(|role| format!("\"{role}\"")).collect();
    format!(
        "[api_keys.{name}]\nsha256 = \"{hex}\"\nroles = [{}]\n",
        roles.join(", ")
    )
}

impl Pki {
    /// AUTH with `key` on `gate` over TLS trusting this PKI's CA: the client when accepted,
    /// the error frame's text when refused.
    pub async fn try_auth(&self, gate: &Gate, key: &str) -> Result<nsqclient::RawClient, String> {
        let connector = nsqclient::tls_connector(&self.path("ca.pem"), None);
        nsqclient::RawClient::try_authenticated(gate.addr, &connector, key).await
    }
}

impl Pki {
    /// Writes the policy directory `policy`: a role `writer` that may publish to `topics`, and
    /// one new API key `name` holding it. Returns the key.
    pub fn write_publisher_policy(&self, topics: &str, name: &str) -> String {
        let key = nsqgate::auth::apikey::generate();
        let policy = format!(
            "[roles.writer]\nallow = [{{ action = \"publish\", topics = [\"{topics}\"] }}]\n{}",
            api_key_entry(name, &key, &["writer"])
        );
        self.write_policy("policy", "main.toml", &policy);
        key
    }
}

/// `nsqgate revoke --api-key-name NAME --config CONFIG` (it must succeed), then waits up to
/// `within` until every replica refuses `key`'s AUTH as a revoked credential is refused.
pub async fn revoke_api_key_everywhere(
    pki: &Pki,
    config: &Path,
    name: &str,
    key: &str,
    replicas: &[Gate],
    within: std::time::Duration,
) {
    let config = config.to_str().expect("a UTF-8 path");
    let (code, out, err) = nsqgate(&["revoke", "--api-key-name", name, "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    for gate in replicas {
        let deadline = std::time::Instant::now() + within;
        loop {
            match pki.try_auth(gate, key).await {
                // What a revoked credential is told (the reason is in nsqgate's log only).
                Err(text) if text == "E_AUTH_FAILED AUTH failed" => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "not revoked: {:?}",
                    other.err()
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
