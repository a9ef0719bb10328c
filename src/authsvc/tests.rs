//! The request nsqd makes, parsed as rules; the answer it gets for good and bad secrets.

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};

use super::answer::answer;
use super::query::{parse, AuthQuery, QueryError};
use crate::auth::{AuthError, Method as AuthMethod, Principal, Proof};
use crate::metrics::authsvc::Outcome;
use crate::policy::Policy;

const MAX: usize = 1024;

fn get(query: &str) -> Result<AuthQuery, QueryError> {
    parse(&Method::GET, "/auth", Some(query), MAX)
}

#[test]
fn the_request_nsqd_makes_is_read_whole() {
    // As Go's url.Values.Encode writes it: sorted names, `+` for a space, %XX otherwise.
    let asked = get("common_name=client+one&remote_ip=127.0.0.1&secret=nsqk_a%2Bb&tls=true");
    assert_eq!(
        asked,
        Ok(AuthQuery {
            secret: "nsqk_a+b".into(),
            remote_ip: "127.0.0.1".into(),
            tls: true,
            common_name: "client one".into(),
        })
    );
}

#[test]
fn malformed_requests_are_refused_with_a_status_nsqd_treats_as_failure() {
    for (query, error) in [
        ("remote_ip=1.2.3.4&tls=false", QueryError::MissingSecret),
        ("secret=&tls=false", QueryError::MissingSecret),
        ("secret=a&secret=b", QueryError::Repeated("secret")),
        ("secret=a&tls=yes", QueryError::BadTls),
        ("secret=%zz", QueryError::BadEncoding("secret")),
        ("secret=%+1", QueryError::BadEncoding("secret")),
        ("secret=%ff", QueryError::BadEncoding("secret")),
        ("secret=%4", QueryError::BadEncoding("secret")),
    ] {
        assert_eq!(get(query), Err(error.clone()), "{query}");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }
    let long = format!("secret={}", "a".repeat(MAX));
    assert_eq!(get(&long), Err(QueryError::TooLong(MAX)));
    let other_path = parse(&Method::GET, "/ping", Some("secret=a"), MAX);
    assert_eq!(other_path, Err(QueryError::NotFound));
    let post = parse(&Method::POST, "/auth", Some("secret=a"), MAX);
    assert_eq!(post, Err(QueryError::MethodNotAllowed));
    assert_eq!(
        get("secret=a&extra=1&extra=2").map(|q| q.secret),
        Ok("a".into())
    );
}

const POLICY: &str = r#"
wildcards = "segment"
[roles.writer]
allow = [{ action = "publish", topics = ["orders.*"] }]
[identities]
alice = ["writer"]
"#;

fn policy() -> Policy {
    match Policy::from_sources(&[("p.toml".into(), POLICY.to_owned())]) {
        Ok(policy) => policy,
        Err(e) => panic!("{e}"),
    }
}

fn principal(identity: &str, expires_at: Option<SystemTime>) -> Principal {
    Principal {
        identity: identity.into(),
        method: AuthMethod::Jwt,
        claimed_roles: Vec::new(),
        expires_at,
        proof: Proof::SelfContained,
        token_id: None,
    }
}

const TTL: Duration = Duration::from_secs(60);

#[test]
fn a_known_subject_gets_its_grants_for_the_configured_ttl() {
    let now = SystemTime::now();
    let given = answer(&Ok(principal("alice", None)), &policy(), TTL, now);
    assert_eq!(given.outcome, Outcome::Granted);
    let json = serde_json::to_value(&given.reply).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "ttl": 60,
            "identity": "alice",
            "identity_url": "",
            "authorizations": [{
                "topic": r"^orders\.[0-9A-Za-z_\-]*$",
                "channels": ["^$"],
                "permissions": ["publish"],
            }],
        })
    );
}

#[test]
fn a_token_answer_never_outlives_the_token() {
    let now = SystemTime::now();
    let soon = Some(now + Duration::from_secs(7));
    let given = answer(&Ok(principal("alice", soon)), &policy(), TTL, now);
    assert_eq!(given.reply.ttl, 7);
    let nearly_gone = Some(now + Duration::from_millis(300));
    let given = answer(&Ok(principal("alice", nearly_gone)), &policy(), TTL, now);
    assert_eq!(given.reply.ttl, 1, "nsqd refuses a ttl of 0");
}

#[test]
fn unknown_secrets_and_subjects_without_grants_get_no_authorizations() {
    let now = SystemTime::now();
    let refused = answer(&Err(AuthError::UnknownApiKey), &policy(), TTL, now);
    assert_eq!(refused.outcome, Outcome::Refused);
    assert!(refused.reply.authorizations.is_empty());
    assert_eq!(refused.reply.ttl, 60);
    assert_eq!(refused.refusal.as_deref(), Some("unknown API key"));
    let nobody = answer(&Ok(principal("mallory", None)), &policy(), TTL, now);
    assert_eq!(nobody.outcome, Outcome::NoGrants);
    assert!(nobody.reply.authorizations.is_empty());
}
