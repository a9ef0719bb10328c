//! Reloading the config file: JWT settings and keys, limits and other run-time keys apply to
//! what starts after the reload (a changed `audience` among them); keys only a restart can
//! change are named in the log; a broken file changes nothing; the audit log records the
//! config's SHA-256. JWT requirements (kid, exp, the secret file's format). Real nsqd and the
//! real nsqgate binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::nsqclient::{assert_error, assert_ok, tls_connector, RawClient};
use common::wire::Command;
use common::{write_secret, Gate, GateConfig, Nsqd, Pki};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest as _, Sha256};

const RELOAD: &str = "policy_reload_ms = 100";
const SECRET: &[u8] = b"reload-config-hs256-secret-0123456789abcdef";
const POLICY: &str = "[roles.writer]\nallow = [{ action = \"publish\", topics = [\"**\"] }]\n\n[identities]\nalice = [\"writer\"]\n";

/// An HS256 token for alice with `aud` and `kid` in its header (None: no kid).
fn token(aud: &str, kid: Option<&str>, exp: Option<u64>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({ "sub": "alice", "aud": aud });
    if let Some(exp) = exp {
        claims["exp"] = (now + exp).into();
    }
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// The AUTH reply's frame for `secret` on a fresh connection: OK (true) or refused.
async fn auth_ok(gate: &Gate, pki: &Pki, secret: &str) -> (bool, RawClient) {
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let (mut client, _) = RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
    let reply = client.auth(secret).await;
    let ok = reply.is_some_and(|f| f.error_code().is_none());
    (ok, client)
}

/// Rewrites the running gate's config file (owner-only, as nsqgate requires) with `edit`.
fn edit_config(gate: &Gate, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(&gate.config).unwrap();
    let next = edit(&text);
    assert_ne!(text, next, "the edit changed nothing");
    write_secret(&gate.config, next.as_bytes());
}

/// Waits (up to 10 s) until `count` log lines hold every one of `parts`.
fn wait_log(gate: &Gate, parts: &[&str], count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let matching = || {
        gate.log()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .count()
    };
    while matching() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} log lines with {parts:?}:\n{}",
            gate.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn jwt_gate(pki: &Pki, nsqd: &Nsqd) -> Gate {
    write_secret(&pki.path("hs.secret"), &[SECRET, b"\n"].concat());
    pki.write_policy("jwt-policy", "p.toml", POLICY);
    GateConfig::new(nsqd.tcp)
        .policy("jwt-policy")
        .auth(RELOAD)
        .table("[auth.jwt]\naudience = \"first\"\nkeys = [{ algorithm = \"HS256\", secret_file = \"hs.secret\" }]")
        .start(pki)
}

#[tokio::test]
async fn a_changed_audience_applies_without_a_restart() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = jwt_gate(&pki, &nsqd);
    // One key per algorithm: tokens need no kid (an empty one is no kid either). The secret
    // file's trailing newline is not part of the secret.
    let (ok, mut open) = auth_ok(&gate, &pki, &token("first", None, Some(600))).await;
    assert!(ok, "{}", gate.log());
    assert!(
        auth_ok(&gate, &pki, &token("first", Some(""), Some(600)))
            .await
            .0
    );
    assert!(
        !auth_ok(&gate, &pki, &token("second", None, Some(600)))
            .await
            .0
    );

    edit_config(&gate, |text| text.replace("\"first\"", "\"second\""));
    wait_log(&gate, &["what=\"config\"", "reloaded"], 1);
    assert!(
        auth_ok(&gate, &pki, &token("second", None, Some(600)))
            .await
            .0
    );
    assert!(
        !auth_ok(&gate, &pki, &token("first", None, Some(600)))
            .await
            .0
    );
    // The connection authenticated before the reload goes on.
    open.send(&Command::Pub {
        topic: "aud".into(),
        body: b"still here".to_vec().into(),
    })
    .await;
    assert_ok(open.read_frame().await, "PUB after the reload");
}

#[tokio::test]
async fn jwt_tokens_need_exp_and_a_known_kid() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    let gate = jwt_gate(&pki, &nsqd);
    assert!(
        !auth_ok(&gate, &pki, &token("first", None, None)).await.0,
        "no exp"
    );
    assert!(
        !auth_ok(&gate, &pki, &token("first", Some("other"), Some(600)))
            .await
            .0
    );
    let reason = |needle: &'static str| {
        move |e: &serde_json::Value| e["reason"].as_str().is_some_and(|r| r.contains(needle))
    };
    gate.wait_audit("no exp", reason("missing required claim: exp"));
    gate.wait_audit("an unknown kid", reason("unknown key id: other"));
}

#[tokio::test]
async fn limits_apply_on_reload_listen_needs_a_restart_and_a_broken_file_changes_nothing() {
    let pki = Pki::new();
    let nsqd = Nsqd::start(&pki);
    // nsqd takes 1 MiB messages: a refusal of 2,000 bytes is nsqgate's own limit.
    let gate = GateConfig::anonymous(nsqd.tcp)
        .auth(RELOAD)
        .table("[limits]\nmax_msg_size = 1024")
        .start(&pki);
    let connector = tls_connector(&pki.path("ca.pem"), None);
    let big = vec![b'x'; 2000];
    let publish_big = || async {
        let (mut client, _) =
            RawClient::upgraded(gate.addr, &connector, serde_json::json!({})).await;
        client
            .send(&Command::Pub {
                topic: "sizes".into(),
                body: big.clone().into(),
            })
            .await;
        client.read_frame().await
    };
    assert_error(
        publish_big().await,
        "E_BAD_MESSAGE",
        "2,000 bytes over 1,024",
    );

    edit_config(&gate, |text| {
        text.replace("max_msg_size = 1024", "max_msg_size = 4096")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
    });
    wait_log(&gate, &["what=\"config\"", "reloaded"], 1);
    wait_log(&gate, &["needs restart", "client.listen"], 1);
    assert_ok(publish_big().await, "2,000 bytes under 4,096");
    let text = std::fs::read(&gate.config).unwrap();
    let sha = format!("{:x}", Sha256::digest(&text));
    let path = gate.config.display().to_string();
    gate.wait_audit("the reloaded config's digest", |e| {
        e["action"] == "load"
            && e["outcome"] == "reload"
            && e["file"] == path.as_str()
            && e["sha256"] == sha.as_str()
    });

    // Not TOML: refused, counted, and the limit in force stays.
    edit_config(&gate, |text| {
        text.replace("max_msg_size = 4096", "max_msg_size = [4096")
    });
    wait_log(&gate, &["what=\"config\"", "failures=1"], 1);
    assert_ok(publish_big().await, "the last good limit stays");
    assert_eq!(nsqd.message_count("sizes"), 2);
}
