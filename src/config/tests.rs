use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for name in ["gate.pem", "gate.key", "ca.pem"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        Fixture { dir }
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        let file = self.dir.path().join("proxy.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(&file)
    }
}

const GOOD: &str = r#"
[client]
listen = "127.0.0.1:4150"
tls_cert = "gate.pem"
tls_key = "gate.key"

[upstream]
nsqd_tcp_address = "127.0.0.1:5150"
tls_server_name = "localhost"
tls_ca = "ca.pem"
"#;

#[test]
fn good_config_resolves_paths_and_defaults() {
    let fx = Fixture::new();
    let config = fx.load(GOOD).unwrap();
    assert!(config.client.require_tls);
    assert_eq!(config.client.tls_min_version, TlsVersion::V1_2);
    assert_eq!(config.client.tls_cert, fx.dir.path().join("gate.pem"));
    let tls = config.upstream.tls.unwrap();
    assert_eq!(tls.server_name.to_str(), "localhost");
    assert_eq!(config.limits.max_msg_size, 1024 * 1024);
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let fx = Fixture::new();
    let text = GOOD.replace(
        "tls_key = \"gate.key\"",
        "tls_key = \"gate.key\"\nrequre_tls = false",
    );
    let err = fx.load(&text).unwrap_err();
    assert_eq!(err.key(), Some("client.requre_tls"));
    let msg = err.to_string();
    assert!(msg.contains("line 6"), "{msg}");
    assert!(msg.contains("proxy.toml"), "{msg}");
}

#[test]
fn missing_file_is_named() {
    let fx = Fixture::new();
    let err = fx.load(&GOOD.replace("ca.pem", "nope.pem")).unwrap_err();
    assert_eq!(err.key(), Some("upstream.tls_ca"));
    assert!(err.to_string().contains("line 10"), "{err}");
}

#[test]
fn upstream_tls_needs_a_ca_and_a_name() {
    let fx = Fixture::new();
    let err = fx
        .load(&GOOD.replace("tls_ca = \"ca.pem\"", ""))
        .unwrap_err();
    assert_eq!(err.key(), Some("upstream.tls_ca"));
    let err = fx
        .load(&GOOD.replace("tls_server_name = \"localhost\"", ""))
        .unwrap_err();
    assert_eq!(err.key(), Some("upstream.tls_server_name"));
}

#[test]
fn plaintext_upstream_only_when_explicit() {
    let fx = Fixture::new();
    let text = GOOD.replace("tls_ca = \"ca.pem\"", "tls = false");
    let config = fx.load(&text).unwrap();
    assert!(config.upstream.tls.is_none());
}

#[test]
fn bad_values_are_rejected() {
    let fx = Fixture::new();
    let err = fx
        .load(&GOOD.replace("127.0.0.1:4150", "localhost"))
        .unwrap_err();
    assert_eq!(err.key(), Some("client.listen"));
    let err = fx.load(&format!("{GOOD}\n[client]\n")).unwrap_err();
    assert!(err.to_string().contains("proxy.toml"), "{err}");
    let err = fx
        .load(&format!("{GOOD}\n[limits]\nmax_msg_size = 0\n"))
        .unwrap_err();
    assert_eq!(err.key(), Some("limits.max_msg_size"));
    assert!(err.to_string().contains("line 13"), "{err}");
    let err = fx
        .load(&format!("{GOOD}\n[limits]\nmax_msg_size = \"big\"\n"))
        .unwrap_err();
    assert_eq!(err.key(), Some("limits.max_msg_size"));
}

#[test]
fn opening_keys_are_validated_by_name() {
    let fx = Fixture::new();
    let config = fx.load(GOOD).unwrap();
    assert_eq!(config.limits.max_auth_size, 16 * 1024);
    assert_eq!(config.max_unauthenticated_memory, 64 * 1024 * 1024);
    assert!(!config.upstream.forward_client_metadata);
    let options = format!(
        "{GOOD}forward_client_metadata = true\n[upstream.nsqd_options]\nmax_heartbeat_interval_ms = 120000\n"
    );
    let config = fx.load(&options).unwrap();
    assert!(config.upstream.forward_client_metadata);
    assert_eq!(
        config.upstream.nsqd_options.max_heartbeat_interval_ms,
        Some(120_000)
    );
    for (extra, key) in [
        ("[limits]\nmax_auth_size = 0\n", "limits.max_auth_size"),
        (
            "[limits]\nmax_unauthenticated_memory = 100\n",
            "limits.max_unauthenticated_memory",
        ),
        (
            "[upstream.nsqd_options]\nmin_output_buffer_timeout_ms = 0\n",
            "upstream.nsqd_options.min_output_buffer_timeout_ms",
        ),
        (
            "[upstream.nsqd_options]\nmin_output_buffer_timeout_ms = 50\nmax_output_buffer_timeout_ms = 10\n",
            "upstream.nsqd_options.min_output_buffer_timeout_ms",
        ),
    ] {
        let err = fx.load(&format!("{GOOD}{extra}")).unwrap_err();
        assert_eq!(err.key(), Some(key), "{err}");
    }
}

#[test]
fn caps_and_the_identity_rate_are_on_by_default_and_zero_switches_a_cap_off() {
    let fx = Fixture::new();
    let config = fx.load(GOOD).unwrap();
    let caps = &config.connections;
    let defaults = crate::limit::conn::cap_defaults(crate::limit::conn::descriptor_limit());
    assert_eq!(caps.max_total, Some(defaults.max_total));
    assert_eq!(caps.max_per_ip, Some(defaults.max_per_ip));
    assert_eq!(caps.max_per_identity, Some(defaults.max_per_identity));
    assert_eq!(caps.max_per_nsqd, Some(defaults.max_per_nsqd));
    assert!(config
        .rates
        .identity
        .is_some_and(|q| q.messages_per_sec.is_some()));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let off = format!(
        "{GOOD}\n[connections]\nmax_per_ip = 0\nmax_total = 7\n\n[rate_limits]\nidentity = {{}}\n"
    );
    let config = fx.load(&off).unwrap();
    assert_eq!(config.connections.max_per_ip, None);
    assert_eq!(config.connections.max_total, Some(7));
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("`connections.max_per_ip` = 0"));
}

#[test]
fn upstream_pool_bounds_default_and_are_refused_by_key_and_line() {
    let fx = Fixture::new();
    let front = "\n[http.nsqd]\nlisten = \"127.0.0.1:4152\"\nupstream = \"127.0.0.1:5152\"\n";
    let config = fx.load(&format!("{GOOD}{front}")).unwrap();
    let http = config.http.unwrap();
    assert_eq!(http.upstream_max_idle, 16);
    assert_eq!(
        http.upstream_idle_timeout,
        std::time::Duration::from_secs(30)
    );
    for (line, key) in [
        ("upstream_max_idle = 1025", "http.upstream_max_idle"),
        ("upstream_max_idle = -1", "http.upstream_max_idle"),
        (
            "upstream_idle_timeout_ms = 0",
            "http.upstream_idle_timeout_ms",
        ),
    ] {
        let err = fx
            .load(&format!("{GOOD}\n[http]\n{line}\n{front}"))
            .unwrap_err();
        assert_eq!(err.key(), Some(key), "{line}: {err}");
        assert!(err.to_string().contains("line 13"), "{line}: {err}");
    }
    let off = fx
        .load(&format!("{GOOD}\n[http]\nupstream_max_idle = 0\n{front}"))
        .unwrap();
    assert_eq!(off.http.unwrap().upstream_max_idle, 0);
}
