//! What `deploy/` and `docker-compose.yml` ship is checked here, so it cannot rot: the systemd
//! unit passes `systemd-analyze verify` and its command lines work with the real binary (the
//! ExecStartPre check, the ExecStart run, the ExecReload signal); the Kubernetes manifests pass
//! `kubernetes-validate --strict` (schemas inside the PyPI package, installed into
//! tests/clients/.venv by scripts/install-clients) and the configs they embed pass
//! `nsqgate check-config`. The compose stack is checked in tests/deploy_compose.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod deploy_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{nsqgate, wait_ready};
use deploy_support::{dev_certs, read, repo, venv_program, write_public, yaml_documents};

// === systemd ===

/// The unit with its binary path pointing at the binary under test.
fn unit_for_test(dir: &Path) -> (PathBuf, String) {
    let unit = read("deploy/systemd/nsqgate.service");
    let local = unit.replace("/usr/local/bin/nsqgate", env!("CARGO_BIN_EXE_nsqgate"));
    let path = dir.join("nsqgate.service");
    write_public(&path, &local);
    (path, unit)
}

/// The value of `key=` in the unit (the last one, as systemd reads a single-valued key).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let (path, unit) = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"): any word from
    // it about the unit is a defect.
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("nsqgate.service"), "{said}");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("LimitNOFILE", "1048576"),
        ("User", "nsqgate"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_value(&unit, key), value, "{key}");
    }
}

#[test]
fn the_systemd_units_command_lines_run_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (_, unit) = unit_for_test(dir.path());
    // A config where the unit expects /etc/nsqgate/proxy.toml: the sidecar example's.
    dev_certs(dir.path(), &["localhost"]);
    let config = dir.path().join("proxy.toml");
    write_public(&config, &read("examples/sidecar/proxy.toml"));
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    write_public(
        &dir.path().join("policies/sidecar.toml"),
        &read("examples/sidecar/policies/sidecar.toml"),
    );
    let args = |key: &str| -> Vec<String> {
        let line = unit_value(&unit, key);
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/nsqgate"), "{key}={line}");
        words
            .map(|w| w.replace("/etc/nsqgate/proxy.toml", config.to_str().unwrap()))
            .collect()
    };

    let check = args("ExecStartPre");
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    let (code, out, err) = nsqgate(&check);
    assert_eq!(code, 0, "ExecStartPre: {out}{err}");

    let log = dir.path().join("run.log");
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nsqgate"))
        .args(args("ExecStart"))
        .arg("--ready-file")
        .arg(&ready)
        .env_remove("NSQGATE_CONFIG")
        .env("NSQGATE_CLIENT__LISTEN", "127.0.0.1:0")
        .env("NSQGATE_ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_ready(&ready, &mut child);

    // ExecReload, with $MAINPID as systemd would fill it in.
    let reload = unit_value(&unit, "ExecReload").replace("$MAINPID", &child.id().to_string());
    let mut words = reload.split_whitespace();
    let status = Command::new(words.next().unwrap())
        .args(words)
        .status()
        .unwrap();
    assert!(status.success(), "ExecReload: {reload}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("SIGHUP: reloading")
    {
        assert!(
            Instant::now() < deadline,
            "no reload after ExecReload: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // KillSignal=SIGTERM: nsqgate drains and exits 0, well within TimeoutStopSec.
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(25);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "nsqgate did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    // --log-format json, as the unit asks: every line is a JSON object (journald keeps them).
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "not JSON: {line}"
        );
    }
}

// === Kubernetes ===

#[test]
fn the_kubernetes_manifests_validate_and_their_configs_load() {
    let files = ["deploy/k8s/gateway.yaml", "deploy/k8s/sidecar.yaml"];
    let out = Command::new(venv_program("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .args(files.iter().map(|f| repo(f)))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate: {said}");
    assert!(!said.contains("ERROR"), "{said}");

    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["localhost", "nsqd.nsq.svc"]);
    let mut kinds = Vec::new();
    for file in files {
        let docs = yaml_documents(&repo(file));
        let policy = docs.iter().find_map(|d| d["data"]["policy.toml"].as_str());
        if let Some(policy) = policy {
            std::fs::create_dir_all(dir.path().join("policies")).unwrap();
            write_public(&dir.path().join("policies/policy.toml"), policy);
        }
        for doc in &docs {
            kinds.push(doc["kind"].as_str().unwrap().to_owned());
            check_pod(file, doc);
        }
        for doc in &docs {
            let Some(config) = doc["data"]["proxy.toml"].as_str() else {
                continue;
            };
            // The mounts' paths, pointed at the dev PKI and policy made here.
            let config = config
                .replace(
                    "/etc/nsqgate/tls/nsqgate.",
                    &format!("{}/nsqgate.", certs.display()),
                )
                .replace(
                    "/etc/nsqgate/tls/ca.pem",
                    &format!("{}/ca.pem", certs.display()),
                )
                .replace(
                    "/etc/nsqgate/policies",
                    &format!("{}/policies", dir.path().display()),
                );
            let path = dir.path().join("proxy.toml");
            write_public(&path, &config);
            let (code, out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{file}: {out}{err}");
        }
    }
    for kind in [
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

/// Every nsqgate container: probes on the admin listener's /healthz and /readyz, non-root,
/// read-only root filesystem, no privilege escalation, its config from a mounted ConfigMap.
fn check_pod(file: &str, doc: &serde_json::Value) {
    let pod = &doc["spec"]["template"]["spec"];
    let Some(containers) = pod["containers"].as_array() else {
        return;
    };
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
    for container in containers {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{file}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{file}");
        if !container["image"].as_str().unwrap().starts_with("nsqgate") {
            continue;
        }
        let admin = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap_or_else(|| panic!("{file}: no admin port"));
        assert_eq!(admin["containerPort"], 9150, "{file}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "admin", "{file}");
        }
    }
}
