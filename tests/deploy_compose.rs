//! The docker-compose stack, checked by reading it (no Docker engine here): its services,
//! ports and volumes agree with the nsqgate and Prometheus configs it mounts (and that
//! Prometheus config passes `promtool check config`), and each of issue 14's roles is wired
//! end to end: the signed topic's key is made by the `certs` job and every nsqgate in front of
//! the dev nsqd carries the same `[integrity]` rules; the `auth-service` profile's nsqd asks the
//! compose nsqgate's auth service (guarded registration: tests/registry_guard.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod deploy_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{nsqgate, prometheus};
use deploy_support::{dev_certs, read, repo, yaml_documents};

/// The dev API key of policies/dev.toml (public, development only).
const DEV_KEY: &str = "nsqk_demo_only_not_secret_0000000000000000000000";

/// A YAML sequence of strings (empty when absent).
fn strings(value: &serde_json::Value) -> Vec<String> {
    (value
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter())
    .map(|v| v.as_str().unwrap().to_owned())
    .collect()
}

/// `host:container` or `ip:host:container` → the container port.
fn container_port(mapping: &str) -> u16 {
    mapping.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_compose_stack_agrees_with_the_configs_it_mounts() {
    let compose = &yaml_documents(&repo("docker-compose.yml"))[0];
    let services = compose["services"].as_object().unwrap();
    for name in [
        "certs",
        "nsqd",
        "nsqlookupd",
        "nsqadmin",
        "nsqgate",
        "prometheus",
    ] {
        assert!(services.contains_key(name), "no {name} service");
    }
    let strings = |value: &serde_json::Value| -> Vec<String> {
        (value
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
    };
    let declared = compose["volumes"].as_object().unwrap();
    for (name, service) in services {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if let Some(local) = source.strip_prefix("./") {
                assert!(repo(local).exists(), "{name} mounts missing {source}");
            } else {
                assert!(
                    declared.contains_key(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
    }

    // nsqgate: its config, policies and certs where its command looks; every listener the
    // config binds is published.
    let gate = &services["nsqgate"];
    let volumes = strings(&gate["volumes"]);
    assert!(volumes.contains(&"./deploy/proxy.compose.toml:/etc/nsqgate/proxy.toml:ro".into()));
    assert!(volumes.contains(&"./policies:/etc/nsqgate/policies:ro".into()));
    assert!(strings(&gate["command"])
        .join(" ")
        .contains("--config /etc/nsqgate/proxy.toml"));
    let config: toml::Table = read("deploy/proxy.compose.toml").parse().unwrap();
    let published: Vec<u16> = strings(&gate["ports"])
        .iter()
        .map(|p| container_port(p))
        .collect();
    let mut listens = vec![config["client"]["listen"].as_str().unwrap().to_owned()];
    for front in config["http"].as_table().unwrap().values() {
        for key in ["listen", "plain_listen"] {
            if let Some(address) = front.get(key).and_then(|v| v.as_str()) {
                listens.push(address.to_owned());
            }
        }
    }
    let admin = config["admin"]["listen"].as_str().unwrap().to_owned();
    listens.push(admin.clone());
    for listen in &listens {
        let port = container_port(listen);
        assert!(
            published.contains(&port),
            "{listen} is not published: {published:?}"
        );
    }
    // The admin listener needs no credential: published on the host's loopback only.
    let admin_port = container_port(&admin);
    assert!(strings(&gate["ports"]).contains(&format!("127.0.0.1:{admin_port}:{admin_port}")));

    // Prometheus reads the checked config and scrapes the admin listener by service name.
    let prom = &services["prometheus"];
    let config_file = strings(&prom["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .unwrap();
    assert!(strings(&prom["volumes"]).contains(&format!(
        "./deploy/prometheus/prometheus.yml:{config_file}:ro"
    )));
    let scrape = &yaml_documents(&repo("deploy/prometheus/prometheus.yml"))[0];
    let targets = strings(&scrape["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, vec![format!("nsqgate:{admin_port}")]);
    let checked = Command::new(prometheus::tool("promtool"))
        .args(["check", "config"])
        .arg(repo("deploy/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // nsqd requires TLS on HTTP too: nsqadmin, sent to its HTTPS port, needs the CA, mounted.
    let nsqd = strings(&services["nsqd"]["command"]);
    assert!(nsqd.contains(&"--tls-required=true".into()), "{nsqd:?}");
    let nsqadmin = &services["nsqadmin"];
    let ca = strings(&nsqadmin["command"])
        .iter()
        .find_map(|a| {
            a.strip_prefix("--http-client-tls-root-ca-file=")
                .map(str::to_owned)
        })
        .expect("nsqadmin has no CA for nsqd's HTTPS port");
    let ca_dir = Path::new(&ca)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        strings(&nsqadmin["volumes"])
            .iter()
            .any(|v| v.split(':').nth(1) == Some(&ca_dir)),
        "nsqadmin does not mount {ca_dir}"
    );
}

#[test]
fn every_nsqgate_in_front_of_the_dev_nsqd_signs_the_same_topic_with_the_key_the_certs_job_makes() {
    let compose = &yaml_documents(&repo("docker-compose.yml"))[0];
    let services = compose["services"].as_object().unwrap();
    let certs_job = strings(&services["certs"]["command"]).join(" ");
    let main: toml::Table = read("deploy/proxy.compose.toml").parse().unwrap();
    let integrity = main["integrity"].as_table().unwrap();

    // The main gate and both cluster replicas: the same keys and rules (README, "Message
    // integrity", step 3), with the certs volume where the key file is named.
    for (service, file) in [
        ("nsqgate", "deploy/proxy.compose.toml"),
        ("replica-1", "deploy/proxy.cluster.toml"),
        ("replica-2", "deploy/proxy.cluster.toml"),
    ] {
        let volumes = strings(&services[service]["volumes"]);
        assert!(
            volumes.contains(&format!("./{file}:/etc/nsqgate/proxy.toml:ro")),
            "{service}: {volumes:?}"
        );
        assert!(volumes.contains(&"certs:/certs:ro".into()), "{service}");
        let config: toml::Table = read(file).parse().unwrap();
        assert_eq!(config["integrity"].as_table(), Some(integrity), "{file}");
    }

    // Each key file is written by the certs job, once, and made private there.
    let keys = integrity["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["nsqd"]);
    for key in keys {
        let file = key["file"].as_str().unwrap();
        let name = file
            .strip_prefix("/certs/")
            .expect("a key file in the certs volume");
        assert!(
            certs_job.contains(&format!("if [ ! -s {file} ]"))
                && certs_job.contains(&format!("| base64 > {file}")),
            "the certs job does not make {file}: {certs_job}"
        );
        let extension = Path::new(name).extension().unwrap().to_str().unwrap();
        assert!(
            certs_job.contains(&format!("chmod 0600 /certs/*.key /certs/*.{extension}")),
            "{certs_job}"
        );
        let path = certs.join(name);
        std::fs::write(&path, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Both configs load with those files (check-config reads the keys), and the dev key may
    // publish and read the signed topics and read the quarantine topic.
    std::os::unix::fs::symlink(repo("policies"), dir.path().join("policies")).unwrap();
    for file in ["deploy/proxy.compose.toml", "deploy/proxy.cluster.toml"] {
        let text = read(file).replace("\"/certs/", &format!("\"{}/", certs.display()));
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = nsqgate(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{file}: {out}{err}");
    }
    let config = dir.path().join("proxy.toml");
    // A key file others can read is refused, by name (README, "Message integrity", step 1).
    let key = certs.join(
        keys[0]["file"]
            .as_str()
            .unwrap()
            .trim_start_matches("/certs/"),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = nsqgate(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let named = format!(
        "{}: mode 0644 lets group or others read this secret",
        key.display()
    );
    assert!(err.contains(&named), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let explain = |what: &[&str]| {
        let mut args = vec!["policy", "explain", "--config", config.to_str().unwrap()];
        args.extend(["--api-key", DEV_KEY]);
        args.extend(what);
        let (code, out, err) = nsqgate(&args);
        assert_eq!(code, 0, "{what:?}: {out}{err}");
    };
    let quarantine = integrity["quarantine_topic"].as_str().unwrap();
    for rule in integrity["topics"].as_array().unwrap() {
        for topic in rule["topics"].as_array().unwrap() {
            let topic = topic.as_str().unwrap();
            explain(&["--publish", topic]);
            explain(&["--subscribe", topic, "app"]);
        }
        let own = rule.get("quarantine_topic").and_then(|q| q.as_str());
        explain(&["--subscribe", own.unwrap_or(quarantine), "investigate"]);
    }
}

#[test]
fn the_auth_service_profiles_nsqd_asks_the_compose_nsqgate_and_is_held_to_tls() {
    let compose = &yaml_documents(&repo("docker-compose.yml"))[0];
    let services = compose["services"].as_object().unwrap();
    let config: toml::Table = read("deploy/proxy.compose.toml").parse().unwrap();
    let listen = config["auth_service"]["listen"].as_str().unwrap();
    let port = container_port(listen);

    let nsqd = &services["nsqd-authed"];
    assert_eq!(strings(&nsqd["profiles"]), ["auth-service"]);
    let args = strings(&nsqd["command"]);
    // nsqd asks the compose nsqgate (by service name) on the port its config binds.
    assert!(
        args.contains(&format!("--auth-http-address=nsqgate:{port}")),
        "{args:?}"
    );
    // The secret travels in AUTH: nsqd requires TLS, with the dev certificate mounted.
    assert!(args.contains(&"--tls-required=true".into()), "{args:?}");
    assert!(
        args.contains(&"--tls-cert=/certs/nsqd.pem".into()),
        "{args:?}"
    );
    assert!(strings(&nsqd["volumes"]).contains(&"certs:/certs:ro".into()));
    assert!(nsqd["depends_on"]["nsqgate"].is_object(), "{nsqd}");
    // Anyone who reaches the auth service can test secrets: not published on the host.
    let published: Vec<u16> = strings(&services["nsqgate"]["ports"])
        .iter()
        .map(|p| container_port(p))
        .collect();
    assert!(!published.contains(&port), "{published:?}");
    // nsqd's own port is published, for clients that connect to nsqd directly.
    let nsqd_tcp = args
        .iter()
        .find_map(|a| a.strip_prefix("--tcp-address="))
        .map(container_port)
        .unwrap();
    assert!(
        strings(&nsqd["ports"])
            .iter()
            .any(|p| container_port(p) == nsqd_tcp),
        "{nsqd}"
    );
}
