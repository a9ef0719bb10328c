//! File modes of what nsqgate loads: a private key or secret that group or others can read,
//! or any file that carries a decision (config, policy, CA, CRL, key) that they can write,
//! is refused at start-up unless the operator says otherwise. Only metadata is read here.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::raw::{RawConfig, RawJwt};
use super::Locator;

/// Group and others may read: bits that expose a secret.
const GO_READ: u32 = 0o044;
/// Group and others may write: bits that let someone else change a decision.
const GO_WRITE: u32 = 0o022;

/// What a loaded file holds, and so which of its mode bits are dangerous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A private key or shared secret: nobody but the owner may read or write it.
    Secret,
    /// Trust or policy (config, policy, CA, CRL, certificate, public key): nobody but the
    /// owner may write it.
    Decision,
}

/// One file (or folder) the configuration names, with the key that names it.
#[derive(Clone, Debug)]
pub struct NamedFile {
    pub path: PathBuf,
    pub key: String,
    pub holds: Holds,
}

/// A file whose mode lets group or others read a secret or change a decision.
#[derive(Clone, Debug)]
pub struct Insecure {
    pub file: NamedFile,
    pub mode: u32,
}

impl fmt::Display for Insecure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, fix) = match self.file.holds {
            Holds::Secret if self.mode & GO_READ != 0 => ("read this secret", "chmod 600"),
            Holds::Secret => ("write this secret", "chmod 600"),
            Holds::Decision => ("write this file", "chmod go-w"),
        };
        write!(
            f,
            "{}: mode {:04o} lets group or others {what} (`{}`); {fix} it, or pass \
             --allow-insecure-permissions",
            self.file.path.display(),
            self.mode & 0o7777,
            self.file.key,
        )
    }
}

/// Every file the raw configuration names (resolved against the config's folder), with what
/// it holds. The config file itself is a secret when it carries `upstream.auth_secret`.
pub(super) fn named_files(raw: &RawConfig, at: &Locator<'_>) -> Vec<NamedFile> {
    let mut files = Vec::new();
    let mut add = |key: &str, path: &Path, holds: Holds| {
        files.push(NamedFile {
            path: at.resolve(path),
            key: key.to_owned(),
            holds,
        });
    };
    let config_holds = if raw
        .upstream
        .auth_secret
        .as_deref()
        .is_some_and(|s| !s.is_empty())
        && at.text.contains("auth_secret")
    {
        Holds::Secret
    } else {
        Holds::Decision
    };
    add("--config", at.file, config_holds);
    let client = &raw.client;
    add("client.tls_cert", &client.tls_cert, Holds::Decision);
    add("client.tls_key", &client.tls_key, Holds::Secret);
    if let Some(ca) = &client.tls_client_ca {
        add("client.tls_client_ca", ca, Holds::Decision);
    }
    for crl in &client.tls_client_crls {
        add("client.tls_client_crls", crl, Holds::Decision);
    }
    add("auth.policy_dir", &raw.auth.policy_dir, Holds::Decision);
    for (key, path, holds) in optional_tls_files(raw) {
        if let Some(path) = path {
            add(key, path, holds);
        }
    }
    for key in raw.integrity.iter().flat_map(|i| &i.keys) {
        if let Some(file) = &key.file {
            add("integrity.keys", file, Holds::Secret);
        }
    }
    if let Some(jwt) = &raw.auth.jwt {
        for (key, path, holds) in jwt_files(jwt) {
            add(key, path, holds);
        }
    }
    files
}

/// The key, secret, JWKS and CA files of `[auth.jwt]`.
fn jwt_files(jwt: &RawJwt) -> Vec<(&'static str, &Path, Holds)> {
    let mut files = Vec::new();
    for key in &jwt.keys {
        if let Some(file) = &key.file {
            files.push(("auth.jwt.keys", file.as_path(), Holds::Decision));
        }
        if let Some(secret) = &key.secret_file {
            files.push(("auth.jwt.keys", secret.as_path(), Holds::Secret));
        }
    }
    if let Some(jwks) = &jwt.jwks_file {
        files.push(("auth.jwt.jwks_file", jwks.as_path(), Holds::Decision));
    }
    if let Some(ca) = &jwt.jwks_ca {
        files.push(("auth.jwt.jwks_ca", ca.as_path(), Holds::Decision));
    }
    files
}

/// The optional TLS files of `[upstream]`, `[cluster]` and `[admin]`, with what each holds.
fn optional_tls_files(raw: &RawConfig) -> Vec<(&'static str, Option<&PathBuf>, Holds)> {
    let up = &raw.upstream;
    let mut files = vec![
        ("upstream.tls_ca", up.tls_ca.as_ref(), Holds::Decision),
        ("upstream.tls_cert", up.tls_cert.as_ref(), Holds::Decision),
        ("upstream.tls_key", up.tls_key.as_ref(), Holds::Secret),
    ];
    if let Some(cluster) = &raw.cluster {
        files.extend([
            ("cluster.tls_ca", cluster.tls_ca.as_ref(), Holds::Decision),
            (
                "cluster.tls_cert",
                cluster.tls_cert.as_ref(),
                Holds::Decision,
            ),
            ("cluster.tls_key", cluster.tls_key.as_ref(), Holds::Secret),
        ]);
    }
    if let Some(admin) = &raw.admin {
        files.extend([
            ("admin.tls_cert", admin.tls_cert.as_ref(), Holds::Decision),
            ("admin.tls_key", admin.tls_key.as_ref(), Holds::Secret),
            (
                "admin.tls_client_ca",
                admin.tls_client_ca.as_ref(),
                Holds::Decision,
            ),
        ]);
    }
    if let Some(service) = &raw.auth_service {
        files.extend([
            (
                "auth_service.tls_cert",
                service.tls_cert.as_ref(),
                Holds::Decision,
            ),
            (
                "auth_service.tls_key",
                service.tls_key.as_ref(),
                Holds::Secret,
            ),
        ]);
    }
    files
}

/// The named files (and each policy file in the policy folder) whose mode is too open.
/// Files that cannot be read are left to the loader, which names them already.
pub fn insecure(files: &[NamedFile]) -> Vec<Insecure> {
    let mut found = Vec::new();
    for file in files {
        check(file, &mut found);
        if file.key == "auth.policy_dir" {
            for path in policy_files(&file.path) {
                let policy = NamedFile {
                    path,
                    key: "auth.policy_dir".into(),
                    holds: Holds::Decision,
                };
                check(&policy, &mut found);
            }
        }
    }
    found
}

fn check(file: &NamedFile, found: &mut Vec<Insecure>) {
    let Ok(meta) = std::fs::metadata(&file.path) else {
        return;
    };
    let mode = meta.permissions().mode();
    let bad = match file.holds {
        Holds::Secret => GO_READ | GO_WRITE,
        Holds::Decision => GO_WRITE,
    };
    if mode & bad != 0 {
        found.push(Insecure {
            file: file.clone(),
            mode,
        });
    }
}

/// The `*.toml` files the policy loader reads from `dir`.
fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests;
