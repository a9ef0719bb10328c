use std::time::{Duration, SystemTime};

use super::*;
use crate::auth::Proof;

fn principal(identity: &str, method: Method, jti: Option<&str>) -> Principal {
    Principal {
        identity: identity.to_owned(),
        method,
        claimed_roles: Vec::new(),
        expires_at: None,
        proof: Proof::SelfContained,
        token_id: jti.map(str::to_owned),
    }
}

#[test]
fn members_round_trip_and_unknown_kinds_are_refused() {
    for target in [
        Target::ApiKey("ingest".into()),
        Target::Identity("svc:a".into()),
        Target::TokenId("abc-1".into()),
    ] {
        assert_eq!(Target::from_member(&target.member()), Ok(target));
    }
    assert!(Target::from_member("user:x").is_err());
    assert!(Target::from_member("identity:").is_err());
    assert!(Target::from_member("no separator").is_err());
}

#[test]
fn an_api_key_revocation_matches_only_that_key_and_jti_only_that_token() {
    let key = Target::ApiKey("ingest".into());
    assert!(key.matches(&principal("ingest", Method::ApiKey, None)));
    // A certificate or token naming the same identity is not that API key.
    assert!(!key.matches(&principal("ingest", Method::Jwt, None)));
    let identity = Target::Identity("ingest".into());
    assert!(identity.matches(&principal("ingest", Method::Jwt, None)));
    let jti = Target::TokenId("t1".into());
    assert!(jti.matches(&principal("bob", Method::Jwt, Some("t1"))));
    assert!(!jti.matches(&principal("bob", Method::Jwt, Some("t2"))));
    assert!(!jti.matches(&principal("bob", Method::Jwt, None)));
}

#[test]
fn an_ended_revocation_no_longer_matches() {
    let now = SystemTime::now();
    let entries = vec![
        (
            "identity:a".to_owned(),
            unix_millis(now + Duration::from_secs(60)),
        ),
        (
            "identity:b".to_owned(),
            unix_millis(now - Duration::from_secs(1)),
        ),
        ("bogus".to_owned(), 1.0),
        ("identity:c".to_owned(), f64::NAN),
    ];
    let (revoked, unrecognized) = Revoked::from_scores(&entries);
    assert_eq!(unrecognized.len(), 1);
    assert!(revoked
        .matching(&principal("a", Method::Jwt, None), now)
        .is_some());
    assert!(revoked
        .matching(&principal("b", Method::Jwt, None), now)
        .is_none());
    assert!(revoked
        .matching(&principal("c", Method::Jwt, None), now)
        .is_none());
    assert_eq!(revoked.active(now), 1);
}
