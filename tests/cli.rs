//! The command line: check-config exit codes and messages, dev certificates, API keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::nsqgate;

#[test]
fn certs_dev_then_check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (code, out, err) = nsqgate(&[
        "certs",
        "dev",
        "--out",
        certs.to_str().unwrap(),
        "--host",
        "localhost",
    ]);
    assert_eq!(code, 0, "{err}");
    for name in ["ca", "nsqgate", "nsqd", "client"] {
        assert!(certs.join(format!("{name}.pem")).is_file(), "{out}");
        assert!(certs.join(format!("{name}.key")).is_file());
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), "[roles.r]\n").unwrap();
    let good = r#"
[client]
listen = "127.0.0.1:4150"
tls_cert = "certs/nsqgate.pem"
tls_key = "certs/nsqgate.key"

[upstream]
nsqd_tcp_address = "127.0.0.1:4151"
tls_server_name = "localhost"
tls_ca = "certs/ca.pem"
"#;
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, good).unwrap();
    let (code, out, err) = nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::write(
        &file,
        good.replace(
            "tls_server_name = \"localhost\"\n",
            "tls_server_nme = \"localhost\"\n",
        ),
    )
    .unwrap();
    let (code, _, err) = nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("proxy.toml: line 9: `upstream.tls_server_nme`: unknown key"),
        "{err}"
    );

    let (code, _, err) = nsqgate(&["check-config", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/proxy.toml"), "{err}");

    // The example shipped with the project documents keys that really exist.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example"))
            .unwrap();
    std::fs::write(&file, example).unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let (code, out, err) = nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "proxy.toml.example does not check out: {out}{err}");
}

#[test]
fn keys_new_prints_a_fresh_key_and_its_policy_entry() {
    let (code, first, _) = nsqgate(&["keys", "new", "--identity", "billing", "--role", "writer"]);
    assert_eq!(code, 0);
    let (_, second, _) = nsqgate(&["keys", "new", "--identity", "billing"]);
    let key = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("nsqk_"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(key(&first), key(&second));
    let hash = common::key_sha256(key(&first).as_bytes());
    assert!(first.contains(&format!("sha256 = \"{hash}\"")), "{first}");
    assert!(
        first.contains("[api_keys.\"billing\"]") && first.contains("roles = [\"writer\"]"),
        "{first}"
    );
}

#[test]
fn the_docker_compose_config_checks_out() {
    // No Docker engine here: check what can be checked. deploy/proxy.compose.toml names the
    // certs volume (/certs) by absolute path; point it at dev certs made here instead.
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (code, _, err) = nsqgate(&[
        "certs",
        "dev",
        "--out",
        certs.to_str().unwrap(),
        "--host",
        "nsqd",
    ]);
    assert_eq!(code, 0, "{err}");
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/deploy/proxy.compose.toml")).unwrap();
    // The integrity key the compose certs job writes beside them (a test key, 0600 as the
    // job leaves it).
    let config: toml::Table = text.parse().unwrap();
    for key in config["integrity"]["keys"].as_array().unwrap() {
        let name = key["file"]
            .as_str()
            .unwrap()
            .strip_prefix("/certs/")
            .unwrap();
        let path = certs.join(name);
        std::fs::write(&path, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").unwrap();
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
        std::fs::set_permissions(&path, private).unwrap();
    }
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        text.replace("\"/certs/", &format!("\"{}/", certs.display())),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("{root}/policies"), dir.path().join("policies")).unwrap();
    let (code, out, err) = nsqgate(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // The compose file mounts that config and the policies where nsqgate looks for them.
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    assert!(compose.contains("./deploy/proxy.compose.toml:/etc/nsqgate/proxy.toml:ro"));
    assert!(compose.contains("./policies:/etc/nsqgate/policies:ro"));
}
