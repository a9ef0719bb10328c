//! What tests/deploy.rs and tests/deploy_compose.rs share: paths in the repository, the
//! client venv's PyYAML and programs, a dev PKI.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{clients_dir, nsqgate};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A program of the venv scripts/install-clients makes; a clear failure when it is missing.
pub fn venv_program(name: &str) -> PathBuf {
    let path = clients_dir().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-clients (it installs kubernetes-validate and \
         PyYAML from tests/clients/requirements.txt)",
        path.display()
    );
    path
}

/// A YAML file (every document in it) as JSON, read by PyYAML from the venv.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(venv_program("python"))
        .args([
            "-c",
            "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyYAML could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A dev PKI in `dir/certs` for `hosts`, and a copy of the policies folder beside it.
pub fn dev_certs(dir: &Path, hosts: &[&str]) -> PathBuf {
    let certs = dir.join("certs");
    let mut args = vec!["certs", "dev", "--out", certs.to_str().unwrap()];
    for host in hosts {
        args.extend(["--host", host]);
    }
    let (code, out, err) = nsqgate(&args);
    assert_eq!(code, 0, "{out}{err}");
    certs
}

pub fn write_public(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}
