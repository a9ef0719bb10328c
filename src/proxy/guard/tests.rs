//! The guard's verdicts without sockets: a `Shared` core built from a config in a temp folder
//! (its certificates from the dev CA; nothing connects to nsqd), a policy from text, and
//! commands as the decoder hands them over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::{Guard, Verdict};
use crate::auth::apikey;
use crate::certs::DevCa;
use crate::config::Config;
use crate::nsq::{Command, DecodedCommand, Frame, FrameType};
use crate::policy::Policy;
use crate::shared::Shared;

const POLICY: &str = r#"
[roles.publisher]
allow = [
  { action = "publish", topics = ["allowed"] },
  { action = "subscribe", topics = ["allowed"], channels = ["ch"] },
]
rate = { messages_per_sec = 1, burst_messages = 2 }

[api_keys.producer]
sha256 = "HASH"
roles = ["publisher"]
"#;

struct Fixture {
    shared: Arc<Shared>,
    key: String,
    /// Reloads the policy.
    policy: watch::Sender<Arc<Policy>>,
    _dir: tempfile::TempDir,
}

/// A core whose policy lets one API key publish to `allowed` (2 messages of burst, reject
/// mode) and subscribe to `allowed`/`ch`, and nothing else; at most 3 messages per MPUB.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("guard test CA").unwrap();
    let server = ca.issue_server("gate", &["127.0.0.1".to_owned()]).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.pem", &ca.pem().cert);
    write("gate.pem", &server.cert);
    write("gate.key", &server.key);
    let key = apikey::generate();
    let policy_text = POLICY.replace("HASH", &apikey::hash_hex(key.as_bytes()));
    let config = r#"
[client]
listen = "127.0.0.1:1"
tls_cert = "gate.pem"
tls_key = "gate.key"

[upstream]
nsqd_tcp_address = "127.0.0.1:2"
tls_server_name = "127.0.0.1"
tls_ca = "ca.pem"

[rate_limits]
on_limit = "reject"

[limits]
max_mpub_messages = 3
"#;
    write("proxy.toml", config);
    let config = Config::load(&dir.path().join("proxy.toml")).unwrap();
    let policy = Policy::from_sources(&[(PathBuf::from("guard.toml"), policy_text)]).unwrap();
    let (tx, rx) = watch::channel(Arc::new(policy));
    let shared = Arc::new(Shared::new(Arc::new(config), rx).unwrap());
    Fixture {
        shared,
        key,
        policy: tx,
        _dir: dir,
    }
}

fn guard(fixture: &Fixture) -> Guard {
    let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let permit = fixture.shared.conns.admit().unwrap();
    Guard::new(fixture.shared.clone(), peer, None, permit)
}

fn decoded(command: Command) -> DecodedCommand {
    DecodedCommand {
        command,
        raw: Bytes::new(),
    }
}

fn auth(secret: &str) -> DecodedCommand {
    decoded(Command::Auth {
        secret: Bytes::copy_from_slice(secret.as_bytes()),
    })
}

fn publish(kind: &str, topic: &str) -> DecodedCommand {
    let topic: std::sync::Arc<str> = topic.into();
    let body = Bytes::from_static(b"m");
    decoded(match kind {
        "MPUB" => Command::Mpub {
            topic,
            messages: vec![body.clone(), body].into(),
        },
        "DPUB" => Command::Dpub {
            topic,
            defer_ms: 100,
            body,
        },
        _ => Command::Pub { topic, body },
    })
}

/// The local reply's "CODE text" and whether it is fatal; panics on Forward or Drop.
fn reply(verdict: Verdict) -> (String, bool) {
    let (frame, fatal) = match verdict {
        Verdict::Reply(frame) => (frame, false),
        Verdict::Refuse(refusal) => (refusal.frame().cloned().expect("told"), true),
        Verdict::Forward | Verdict::Drop => panic!("expected a local reply"),
    };
    let mut buf = bytes::BytesMut::from(&frame[..]);
    let frame: Frame = crate::nsq::decode_frame(&mut buf, 1 << 20)
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&frame.data).into_owned();
    match frame.frame_type {
        FrameType::Error => (text, fatal),
        _ => (format!("response {text}"), fatal),
    }
}

fn authed(fixture: &Fixture) -> Guard {
    let mut guard = guard(fixture);
    let (text, fatal) = reply(guard.screen(&auth(&fixture.key)));
    assert!(text.starts_with("response {"), "{text}");
    assert!(text.contains("\"identity\":\"producer\""), "{text}");
    assert!(!fatal);
    guard
}

#[test]
fn commands_before_auth_are_refused_and_a_bad_secret_fails() {
    let fixture = fixture();
    let mut guard = guard(&fixture);
    assert!(guard.awaiting_identity());
    for kind in ["PUB", "MPUB", "DPUB"] {
        let (text, fatal) = reply(guard.screen(&publish(kind, "allowed")));
        assert_eq!(text, format!("E_AUTH_FIRST AUTH required before {kind}"));
        assert!(fatal);
    }
    let (text, fatal) = reply(guard.screen(&auth("nsqk_not-a-key")));
    assert_eq!(text, "E_AUTH_FAILED AUTH failed");
    assert!(fatal);
    // AUTH once per connection, as nsqd.
    let (text, _) = reply(guard.screen(&auth(&fixture.key)));
    assert_eq!(text, "E_INVALID AUTH already set");
}

#[test]
fn publishes_are_forwarded_where_allowed_and_unauthorized_elsewhere() {
    let fixture = fixture();
    let mut guard = authed(&fixture);
    assert!(!guard.awaiting_identity());
    for kind in ["PUB", "MPUB", "DPUB"] {
        assert!(matches!(
            guard.screen(&publish(kind, "allowed")),
            Verdict::Forward
        ));
        let (text, fatal) = reply(guard.screen(&publish(kind, "denied")));
        assert_eq!(
            text,
            format!("E_UNAUTHORIZED AUTH failed for {kind} on \"denied\" \"\"")
        );
        assert!(fatal);
        // A cached decision answers the same.
        let (again, _) = reply(guard.screen(&publish(kind, "denied")));
        assert_eq!(again, text);
    }
}

#[test]
fn state_rules_and_sizes_are_answered_locally() {
    let fixture = fixture();
    let mut guard = authed(&fixture);
    let (text, fatal) = reply(guard.screen(&decoded(Command::Identify {
        body: Bytes::from_static(b"{}"),
    })));
    assert_eq!(text, "E_INVALID cannot IDENTIFY again");
    assert!(fatal);
    let (text, _) = reply(guard.screen(&decoded(Command::Rdy { count: 1 })));
    assert_eq!(text, "E_INVALID cannot RDY in current state");
    let four = decoded(Command::Mpub {
        topic: "allowed".into(),
        messages: vec![Bytes::from_static(b"m"); 4].into(),
    });
    let (text, _) = reply(guard.screen(&four));
    assert_eq!(text, "E_BAD_BODY MPUB invalid message count 4");

    let sub = |topic: &str, channel: &str| {
        decoded(Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        })
    };
    let (text, _) = reply(guard.screen(&sub("allowed", "other")));
    assert_eq!(
        text,
        "E_UNAUTHORIZED AUTH failed for SUB on \"allowed\" \"other\""
    );
    assert!(matches!(
        guard.screen(&sub("allowed", "ch")),
        Verdict::Forward
    ));
    let (text, _) = reply(guard.screen(&sub("allowed", "ch")));
    assert_eq!(text, "E_INVALID cannot SUB in current state");
    assert!(matches!(
        guard.screen(&decoded(Command::Rdy { count: 1 })),
        Verdict::Forward
    ));
}

#[tokio::test]
async fn over_the_rate_each_publish_fails_with_its_own_code() {
    for (kind, code) in [
        ("PUB", "E_PUB_FAILED"),
        ("MPUB", "E_MPUB_FAILED"),
        ("DPUB", "E_DPUB_FAILED"),
    ] {
        // A fresh core each time: a full bucket of 2 messages.
        let fixture = fixture();
        let mut guard = authed(&fixture);
        let command = publish(kind, "allowed");
        let mut refusal = None;
        for _ in 0..3 {
            if let Some(verdict) = guard.admit(&command, Instant::now()).await {
                refusal = Some(reply(verdict));
                break;
            }
        }
        let (text, fatal) = refusal.unwrap_or_else(|| panic!("{kind}: never refused"));
        assert!(
            text.starts_with(&format!("{code} {kind} failed: rate limit exceeded")),
            "{text}"
        );
        assert!(fatal, "fatal, as in nsqd");
    }
}

/// The kind of ending a refusal makes; panics unless the verdict is a refusal.
fn kind(verdict: Verdict) -> crate::error::Kind {
    use crate::error::Classify;
    match verdict {
        Verdict::Refuse(refusal) => refusal.ending().kind,
        _ => panic!("expected a refusal"),
    }
}

#[tokio::test]
async fn each_refusal_names_its_kind_of_ending() {
    use crate::error::Kind;
    let fixture = fixture();
    let mut stranger = guard(&fixture);
    let pub_allowed = publish("PUB", "allowed");
    assert_eq!(kind(stranger.screen(&pub_allowed)), Kind::Identity);
    assert_eq!(kind(stranger.screen(&auth("nsqk_bad"))), Kind::Identity);
    let mut guard = authed(&fixture);
    assert_eq!(kind(guard.screen(&publish("PUB", "denied"))), Kind::Policy);
    let five = decoded(Command::Mpub {
        topic: "allowed".into(),
        messages: vec![Bytes::from_static(b"m"); 5].into(),
    });
    assert_eq!(kind(guard.screen(&five)), Kind::ClientProtocol);
    let mut limited = None;
    for _ in 0..3 {
        limited = guard.admit(&pub_allowed, Instant::now()).await;
        if limited.is_some() {
            break;
        }
    }
    assert_eq!(kind(limited.expect("over the rate")), Kind::Limit);
}

#[tokio::test]
async fn a_policy_reload_that_lifts_a_roles_quota_reaches_an_open_connection() {
    let fixture = fixture();
    let mut guard = authed(&fixture);
    let command = publish("PUB", "allowed");
    for _ in 0..2 {
        assert!(matches!(guard.screen(&command), Verdict::Forward));
        assert!(guard.admit(&command, Instant::now()).await.is_none());
    }
    // The role's burst of 2 (1/s) is spent. The reloaded role sets no quota, so the default
    // (50,000/s) applies: the same bucket, not refilled at once (this take switches its
    // rate and fails), then refilled at the new rate.
    let lifted = POLICY
        .replace("rate = { messages_per_sec = 1, burst_messages = 2 }\n", "")
        .replace("HASH", &apikey::hash_hex(fixture.key.as_bytes()));
    let policy = Policy::from_sources(&[(PathBuf::from("guard.toml"), lifted)]).unwrap();
    fixture
        .policy
        .send_replace(Arc::new(policy.with_version(1)));
    assert!(matches!(guard.screen(&command), Verdict::Forward));
    assert!(guard.admit(&command, Instant::now()).await.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let verdict = guard.admit(&command, Instant::now()).await;
    assert!(
        verdict.is_none(),
        "the connection kept the old quota: {:?}",
        verdict.map(reply)
    );
}
