//! What the reload watches, and how it tells a change: the SHA-256 of every file the
//! configuration names (the config itself, TLS files, JWT keys, each policy file), grouped by
//! the part of nsqgate that reads it. The same digests go to the audit log, so a change made
//! behind nsqgate's back shows there. Reads files; small ones, a few times a second at most.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::config::perms::NamedFile;
use crate::config::Config;

/// The part of nsqgate a file belongs to, and so what a change to it reloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The config file, and the JWT key files whose bytes the config carries.
    Config,
    /// The client leg's certificate, key, client CA and CRLs (NSQ and HTTPS listeners).
    ClientTls,
    /// The CA and client certificate nsqgate verifies nsqd with.
    UpstreamTls,
    /// The policy folder's files.
    Policy,
    /// The admin listener's certificate, key and client CA.
    AdminTls,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::Config,
        Part::ClientTls,
        Part::UpstreamTls,
        Part::Policy,
        Part::AdminTls,
    ];

    /// The name logs and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Config => "config",
            Part::ClientTls => "client_tls",
            Part::UpstreamTls => "upstream_tls",
            Part::Policy => "policy",
            Part::AdminTls => "admin_tls",
        }
    }
}

/// One watched file and its content's digest (None: missing or unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    pub part: Part,
    pub path: PathBuf,
    pub sha256: Option<String>,
    /// Recorded in the audit log: the config file and policy files (never a key's digest).
    pub audited: bool,
}

/// Every watched file's digest, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests(pub Vec<FileDigest>);

impl Digests {
    pub fn of(config: &Config) -> Digests {
        let mut files = Vec::new();
        for named in &config.files {
            let part = part_of(named);
            if part == Part::Policy && named.path.is_dir() {
                for path in policy_files(&named.path) {
                    files.push(digest(part, path, true));
                }
            } else {
                let audited = named.key == "--config";
                files.push(digest(part, named.path.clone(), audited));
            }
        }
        files.sort_by(|a, b| (a.part, &a.path).cmp(&(b.part, &b.path)));
        files.dedup_by(|a, b| a.part == b.part && a.path == b.path);
        Digests(files)
    }

    /// The parts with a file added, removed or changed between `self` and `now`.
    pub fn changed_parts(&self, now: &Digests) -> Vec<Part> {
        let mut parts = Vec::new();
        for part in Part::ALL {
            let of = |d: &Digests| -> Vec<FileDigest> {
                d.0.iter().filter(|f| f.part == part).cloned().collect()
            };
            if of(self) != of(now) {
                parts.push(part);
            }
        }
        parts
    }

    /// The config file and the policy files: what the audit log records at each load.
    pub fn audited(&self) -> impl Iterator<Item = &FileDigest> {
        self.0.iter().filter(|f| f.audited)
    }
}

pub(super) fn part_of(named: &NamedFile) -> Part {
    let key = named.key.as_str();
    if key == "auth.policy_dir" {
        Part::Policy
    } else if key.starts_with("client.") {
        Part::ClientTls
    } else if key.starts_with("upstream.") {
        Part::UpstreamTls
    } else if key.starts_with("admin.") {
        Part::AdminTls
    } else {
        Part::Config
    }
}

fn digest(part: Part, path: PathBuf, audited: bool) -> FileDigest {
    let sha256 = std::fs::read(&path)
        .ok()
        .map(|bytes| hex(&Sha256::digest(bytes)));
    FileDigest {
        part,
        path,
        sha256,
        audited,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `*.toml` files the policy loader reads from `dir`, sorted.
fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths
}
