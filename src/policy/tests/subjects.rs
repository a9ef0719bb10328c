//! What the policy says about a subject beyond one check: its roles, whether it may
//! subscribe somewhere, whether it is allowed everywhere; plus bookkeeping (version, files).

use super::{load, policy, subject};
use crate::policy::Action::{self, Admin, Publish, Subscribe};
use crate::policy::{Policy, Subject};

#[test]
fn roles_are_resolved_sorted_and_unknown_claims_reported() {
    let policy = policy();
    let claimed: Vec<String> = ["writer", "reader", "ghost", "ghost", "admin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let alice = subject("alice", &claimed);
    assert_eq!(policy.roles_of(&alice), ["reader", "writer"]);
    assert_eq!(policy.unknown_claimed_roles(&alice), ["admin", "ghost"]);
    assert_eq!(
        policy.roles_of(&subject("carol", &[])),
        ["auditor", "reader"]
    );
    assert!(policy.roles_of(&subject("nobody", &[])).is_empty());
}

#[test]
fn version_and_files_are_kept() {
    let policy = policy().with_version(7);
    assert_eq!(policy.version(), 7);
    let files: Vec<String> = policy
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(files, ["policies/writer.toml", "policies/z-audit.toml"]);
}

#[test]
fn action_round_trips_through_text() {
    for action in Action::ALL {
        assert_eq!(action.to_string().parse::<Action>().ok(), Some(action));
    }
    assert!("Publish".parse::<Action>().is_err());
}

#[test]
fn may_subscribe_somewhere_finds_channel_restricted_consumers() {
    let policy = Policy::from_sources(&[(
        "p.toml".into(),
        r#"
[roles.billing]
allow = [{ action = "subscribe", topics = ["orders"], channels = ["billing"] }]
deny = [{ action = "subscribe", topics = ["orders.secret"] }]
[roles.trial]
allow = [{ action = "subscribe", topics = ["trial"], channels = ["*"], audit = true }]
[identities]
alice = ["billing", "trial"]
"#
        .to_owned(),
    )])
    .unwrap();
    let alice = Subject {
        identity: "alice",
        claimed_roles: &[],
    };
    let bob = Subject {
        identity: "bob",
        claimed_roles: &[],
    };
    assert!(policy.may_subscribe_somewhere(&alice, "orders"));
    assert!(!policy.may_subscribe_somewhere(&alice, "payments"));
    assert!(!policy.may_subscribe_somewhere(&bob, "orders"));
    // An audit-only allow does not count.
    assert!(!policy.may_subscribe_somewhere(&alice, "trial"));
}

#[test]
fn everywhere_is_decided_from_the_rules_not_by_probing_names() {
    let policy = load(
        r#"
[roles.probes]
allow = [{ action = "admin", topics = ["*_*", "*0*"] }]
[roles.durable]
allow = [{ action = "admin", topics = ["**"] }]
[roles.ops]
allow = [
  { action = "admin", topics = ["**", "**#ephemeral"] },
  { action = "subscribe", topics = ["**", "**#ephemeral"], channels = ["**"] },
]
[roles.reader]
allow = [{ action = "subscribe", topics = ["**"], channels = ["**", "**#ephemeral"] }]
[roles.reader-eph]
allow = [{ action = "subscribe", topics = ["**#ephemeral"], channels = ["**#ephemeral", "**"] }]
[roles.fenced]
deny = [{ action = "admin", topics = ["secret.**"] }]
[roles.trial]
allow = [{ action = "admin", topics = ["**", "**#ephemeral"], audit = true }]
"#,
    );
    let everywhere = |roles: &[&str], action| {
        let claimed: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        policy.allows_everywhere(&subject("x", &claimed), action)
    };
    assert!(
        !everywhere(&["probes"], Admin),
        "two probe-like patterns are not everything"
    );
    assert!(
        !everywhere(&["durable"], Admin),
        "ephemeral topics are topics too"
    );
    assert!(everywhere(&["ops"], Admin));
    assert!(everywhere(&["probes", "ops"], Admin));
    assert!(
        !everywhere(&["ops", "fenced"], Admin),
        "a deny narrows everything"
    );
    assert!(!everywhere(&["trial"], Admin), "audit rules never grant");
    assert!(
        !everywhere(&["ops"], Subscribe),
        "channels must cover everything too"
    );
    assert!(!everywhere(&["reader"], Subscribe));
    assert!(everywhere(&["reader", "reader-eph"], Subscribe));
    assert!(!everywhere(&["ops"], Publish));
}
