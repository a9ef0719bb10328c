use crate::config::{Config, ConfigError};

const BASE: &str = r#"
[client]
listen = "127.0.0.1:4150"
tls_cert = "gate.pem"
tls_key = "gate.key"

[upstream]
nsqd_tcp_address = "127.0.0.1:5150"
tls_server_name = "localhost"
tls_ca = "ca.pem"
"#;

/// 32 bytes of 0x01, base64.
const KEY_B64: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn load(integrity: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    for name in ["gate.pem", "gate.key", "ca.pem"] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    std::fs::write(dir.path().join("k1.b64"), format!("{KEY_B64}\n")).unwrap();
    std::fs::write(dir.path().join("short.b64"), "AQEBAQ==").unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, format!("{BASE}{integrity}")).unwrap();
    Config::load(&file)
}

fn refusal(integrity: &str) -> String {
    load(integrity).unwrap_err().to_string()
}

const K1: &str = "[[integrity.keys]]\nid = \"k1\"\nfile = \"k1.b64\"\n";

#[test]
fn a_rule_with_a_key_from_a_file_signs_its_topics() {
    let text = format!(
        "[integrity]\nquarantine_topic = \"q\"\n{K1}\
         [[integrity.topics]]\ntopics = [\"orders.*\"]\nsigning_key = \"k1\"\n"
    );
    let config = load(&text).unwrap();
    assert!(config.integrity.signs("orders.eu"));
    assert!(!config.integrity.signs("q"));
    assert!(config.files.iter().any(|f| f.key == "integrity.keys"));
}

#[test]
fn no_section_signs_nothing() {
    assert!(load("").unwrap().integrity.is_empty());
}

#[test]
fn refusals_name_what_is_wrong() {
    let rule = "[[integrity.topics]]\ntopics = [\"orders\"]\nsigning_key = \"k1\"\n";
    let cases = [
        (format!("[integrity]\n{K1}{rule}"), "set quarantine_topic"),
        (
            format!("[integrity]\nquarantine_topic = \"orders\"\n{K1}{rule}"),
            "is itself signed",
        ),
        (
            format!(
                "[integrity]\nquarantine_topic = \"q\"\n{K1}{}",
                rule.replace("k1", "k9")
            ),
            "not among [[integrity.keys]]",
        ),
        (
            "[integrity]\n[[integrity.keys]]\nid = \"s\"\nfile = \"short.b64\"\n".to_owned(),
            "at least 32 are needed",
        ),
        (
            "[integrity]\n[[integrity.keys]]\nid = \"e\"\nenv = \"NSQGATE_TEST_UNSET_KEY\"\n"
                .to_owned(),
            "NSQGATE_TEST_UNSET_KEY is not set",
        ),
        (
            "[integrity]\n[[integrity.keys]]\nid = \"both\"\nfile = \"k1.b64\"\nenv = \"X\"\n"
                .to_owned(),
            "exactly one of file or env",
        ),
        (format!("[integrity]\n{K1}{K1}"), "configured twice"),
        (
            "[integrity]\n[[integrity.keys]]\nid = \"bad id\"\nfile = \"k1.b64\"\n".to_owned(),
            "must be 1 to 32 characters",
        ),
    ];
    for (text, expected) in cases {
        let error = refusal(&text);
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
        assert!(!error.contains(KEY_B64), "the secret is never in an error");
    }
}
